//! `r2`: route queries to the best (LLM, output-token budget) pair with R2-Router.
//!
//! Architecture invariant: this crate is glue. It defines the command line, finds files, reads
//! input and prints output; routing is `r2-core` and checkpoint formats are `r2-checkpoints`.

mod collect;
mod convert;
mod data_args;
mod embed;
mod eval;
mod experiment;
mod input;
mod load;
mod logging;
mod output;
mod print;
mod route;
mod serve;
mod text;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "r2",
    version,
    about = "R2-Router: route each query to the (LLM, output-token budget) pair with the best \
             quality-cost trade-off",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Route queries (text, or embeddings as JSONL) to a model and a budget.
    Route(Box<route::RouteArgs>),
    /// Embed queries: JSONL of {"query", "embedding"}, usable as `r2 route --embeddings` input.
    Embed(embed::EmbedArgs),
    /// Train a router for a model pool from scored answers (JSONL), closed-form Ridge heads.
    Train(Box<train::TrainArgs>),
    /// Evaluate a router on scored test data: deferral curves, AUDC, QNC, peak quality.
    Eval(Box<eval::EvalArgs>),
    /// The paper's protocol: per seed a random train/test split, train, evaluate; mean ± std of
    /// AUDC, QNC and peak quality per method.
    Experiment(Box<experiment::ExperimentArgs>),
    /// Serve an OpenAI-compatible routing gateway: POST /v1/chat/completions with model
    /// "r2-router", POST /v1/route, GET /v1/models, /healthz, /metrics.
    Serve(Box<serve::ServeArgs>),
    /// Convert upstream's release (config.json + checkpoints/*.joblib, a folder or a Hugging
    /// Face repository) into router.safetensors and its pool config.json.
    Convert(convert::ConvertArgs),
    /// Collect training data: answer every query with every pool model at every budget, grade
    /// the answers with a judge model, and write `r2 train`'s records (resumable).
    Collect(Box<collect::CollectArgs>),
}

/// Where the router and the model pool come from.
#[derive(Args, Debug, Clone)]
pub struct RouterArgs {
    /// Folder with the router: router.safetensors, or upstream's layout (config.json +
    /// checkpoints/<model>_ridge_alpha10.0/*.joblib, read as it is) [default: $R2_CHECKPOINTS,
    /// else ./checkpoints if it holds a router, else the released checkpoints, fetched, checked
    /// and converted on first use into the user's cache folder ($R2_CHECKPOINTS_URL overrides
    /// the download base, R2_OFFLINE=1 forbids downloading)]
    #[arg(
        long,
        alias = "checkpoint-dir",
        value_name = "DIR",
        conflicts_with = "hf_repo"
    )]
    pub checkpoints: Option<PathBuf>,

    /// Hugging Face repository holding the router in either layout, e.g. JiaqiXue/R2-Router
    /// (downloaded into the Hugging Face cache on first use; HF_ENDPOINT, HF_HOME,
    /// HF_HUB_OFFLINE and HF_TOKEN apply)
    #[arg(long, value_name = "REPO[@REVISION]")]
    pub hf_repo: Option<r2_router::RepoRef>,

    /// Model pool config (JSON, upstream's config.json format) [default: $R2_CONFIG, else the
    /// router folder's config.json (an upstream folder's own), else the built-in config/r2.json]
    #[arg(long, alias = "pool", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl RouterArgs {
    /// What to tell a user whose router could not be loaded.
    pub const HINT: &'static str = "pass --checkpoints DIR (a folder with router.safetensors, or \
        upstream's config.json + checkpoints/) or --hf-repo REPO, or convert upstream's release \
        with `r2 convert --from DIR --out DIR`";
}

fn main() -> ExitCode {
    // `--lambda -0.1` is a value (and then a range error), not an unknown flag `-0`.
    let command = Cli::command().mut_subcommands(|c| c.allow_negative_numbers(true));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if !matches!(cli.command, Command::Serve(_)) {
        // `r2 serve` chooses its own format (--log-format).
        logging::init(logging::LogFormat::Text, false);
    }
    let result = match cli.command {
        Command::Route(args) => route::run(*args),
        Command::Embed(args) => embed::run(args),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(*args),
        Command::Experiment(args) => experiment::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Convert(args) => convert::run(args),
        Command::Collect(args) => collect::run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`r2 route … | head`) is not an error worth reporting.
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined with ": ", leaving out a cause whose text an earlier message
/// already holds (many errors print their source inside their own message).
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}
