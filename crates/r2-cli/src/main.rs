//! `r2`: route queries to the best (LLM, output-token budget) pair with R2-Router.
//!
//! Architecture invariant: this crate is glue. It defines the command line, finds files, reads
//! input and prints output; routing is `r2-core` and checkpoint formats are `r2-checkpoints`.

mod embed;
mod eval;
mod load;
mod output;
mod route;
mod serve;
mod text;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    /// Serve an OpenAI-compatible routing gateway: POST /v1/chat/completions with model
    /// "r2-router", POST /v1/route, GET /v1/models, /healthz, /metrics.
    Serve(Box<serve::ServeArgs>),
}

/// Where the router and the model pool come from.
#[derive(Args, Debug, Clone)]
pub struct RouterArgs {
    /// Folder with the converted router (router.safetensors) [default: $R2_CHECKPOINTS, else
    /// ./checkpoints if it holds one, else the released checkpoints, fetched, checked and
    /// converted on first use into the user's cache folder ($R2_CHECKPOINTS_URL overrides the
    /// download base, R2_OFFLINE=1 forbids downloading)]
    #[arg(long, alias = "checkpoint-dir", value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,

    /// Model pool config (JSON, upstream's config.json format) [default: $R2_CONFIG, else the
    /// built-in config/r2.json]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Route(args) => route::run(*args),
        Command::Embed(args) => embed::run(args),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(*args),
        Command::Serve(args) => serve::run(*args),
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
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
