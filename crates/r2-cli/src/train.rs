//! `r2 train`: fit a router for a model pool from scored answers (closed-form Ridge, like
//! scikit-learn), written as the same `router.safetensors` the converter makes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use r2_router::r2_checkpoints::{PoolConfig, ROUTER_FILE};
use r2_train::{LoadOptions, SplitFilter, TrainOptions};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training data (queries with "split": "test" are left out)
    #[command(flatten)]
    data: crate::data_args::DataArgs,

    /// Model pool config (JSON, upstream's config.json format): the models to fit, in pool order
    #[arg(long, visible_alias = "config", value_name = "FILE")]
    pool: PathBuf,

    /// Folder to write router.safetensors into (created if needed)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Ridge regularisation strength (scikit-learn's alpha)
    #[arg(long, default_value_t = 10.0, value_name = "F")]
    alpha: f64,

    /// Limited budgets to fit a head for, comma-separated [default: every limited budget in the
    /// data]
    #[arg(long, value_delimiter = ',', value_name = "B1,B2")]
    budgets: Vec<u32>,

    /// Threads for the matrix products [default: all cores]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    let say = |what: String| {
        if progress {
            eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
        }
    };
    if !(args.alpha.is_finite() && args.alpha >= 0.0) {
        bail!("--alpha must be a finite number ≥ 0, got {}", args.alpha);
    }
    let budgets = parse_budgets(&args.budgets)?;
    let pool = PoolConfig::from_file(&args.pool).context("loading the pool config")?;
    let models: Vec<String> = pool.models.iter().map(|m| m.name.clone()).collect();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    say(format!("reading {}", args.data.label()));
    let pool_label = args.pool.display().to_string();
    let data = args.data.load(&LoadOptions {
        models: &models,
        models_source: &pool_label,
        budgets: budgets.as_deref(),
        split: SplitFilter::Train,
        embeddings: None,
        dim: Some(pool.embedding_dim),
    })?;
    let (n, dim, budget_list) = (data.queries.len(), data.dim, data.budgets.clone());
    let heads = models.len() * (budget_list.len() + 2);
    say(format!(
        "{n} training queries × {} models × {} budgets (+ unlimited), {dim}-d embeddings: \
         fitting {heads} heads",
        models.len(),
        budget_list.len()
    ));
    let trained = r2_train::train(
        data,
        &TrainOptions {
            alpha: args.alpha,
            threads,
            embedding_model: Some(pool.embedding_model.clone()),
            source: Some(format!(
                "r2 train: {n} queries of {}, alpha {}",
                args.data.label(),
                args.alpha
            )),
        },
    )
    .context("fitting the heads")?;
    // Everything is checked before anything is written: the router must load with this pool.
    let path = args.out.join(ROUTER_FILE);
    trained
        .file
        .clone()
        .into_router(&pool, &path)
        .context("the fitted router does not load")?;
    trained.file.write(&path)?;
    eprintln!(
        "wrote {}: {} models × {heads_per} heads ({heads} in all) over {dim}-d embeddings, budgets \
         {budget_list:?}, from {n} queries (alpha {}), in {:.1?}",
        path.display(),
        models.len(),
        args.alpha,
        started.elapsed(),
        heads_per = budget_list.len() + 2,
    );
    Ok(())
}

/// `--budgets`: positive, sorted, without repeats; `None` when not given.
fn parse_budgets(budgets: &[u32]) -> Result<Option<Vec<u32>>> {
    if budgets.is_empty() {
        return Ok(None);
    }
    if budgets.contains(&0) {
        bail!("--budgets: a budget is a positive number of tokens");
    }
    let mut sorted = budgets.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    Ok(Some(sorted))
}
