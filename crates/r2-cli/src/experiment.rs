//! `r2 experiment`: the paper's protocol in one command. For each seed a seeded random split of
//! the queries, a router trained on the train part (as `r2 train`, in memory: nothing is written)
//! and evaluated on the test part (as `r2 eval`), then mean ± std of the paper's AUDC, QNC and peak
//! quality per method.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use r2_router::r2_checkpoints::PoolConfig;
use r2_train::experiment::{self, ExperimentOptions};
use r2_train::{EvalOptions, LoadOptions, SplitFilter};

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    #[command(flatten)]
    data: crate::data_args::DataArgs,

    /// Model pool config (JSON, upstream's config.json format): the models and their prices
    #[arg(long, visible_alias = "config", value_name = "FILE")]
    pool: PathBuf,

    /// Number of seeds (runs), each with its own random split
    #[arg(long, default_value_t = experiment::DEFAULT_SEEDS, value_name = "N")]
    seeds: usize,

    /// The first seed; the runs use seeds S, S+1, …, S+N−1
    #[arg(long, default_value_t = 0, value_name = "S")]
    first_seed: u64,

    /// Share of the queries held out for testing in each run
    #[arg(long, default_value_t = experiment::DEFAULT_TEST_FRACTION, value_name = "F")]
    test_fraction: f64,

    /// Ridge regularisation strength (scikit-learn's alpha)
    #[arg(long, default_value_t = 10.0, value_name = "A")]
    alpha: f64,

    /// Limited budgets to fit a head for, comma-separated [default: every limited budget in the
    /// data]
    #[arg(long, value_delimiter = ',', value_name = "B1,B2")]
    budgets: Vec<u32>,

    /// Also evaluate the router with K budgets interpolated between adjacent anchor budgets
    #[arg(long, default_value_t = 0, value_name = "K")]
    interpolate: u32,

    /// The paper's QNC looks for the best single model's quality times this (the paper's runs
    /// used 0.95)
    #[arg(long, default_value_t = r2_train::eval::DEFAULT_QNC_TARGET, value_name = "T")]
    qnc_target: f64,

    #[command(flatten)]
    grid: crate::eval::LambdaArgs,

    /// Print the per-seed numbers and the summary as JSON
    #[arg(long)]
    json: bool,

    /// Threads [default: all cores]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

pub fn run(args: ExperimentArgs) -> Result<()> {
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) {
        bail!(
            "--test-fraction must be between 0 and 1 (exclusive), got {}",
            args.test_fraction
        );
    }
    if !(args.alpha.is_finite() && args.alpha >= 0.0) {
        bail!("--alpha must be a finite number ≥ 0, got {}", args.alpha);
    }
    if !(args.qnc_target.is_finite() && args.qnc_target >= 0.0) {
        bail!(
            "--qnc-target must be a finite number ≥ 0 (e.g. 0.95), got {}",
            args.qnc_target
        );
    }
    if args.budgets.contains(&0) {
        bail!("--budgets: a budget is a positive number of tokens");
    }
    let budgets = (!args.budgets.is_empty()).then(|| {
        let mut b = args.budgets.clone();
        b.sort_unstable();
        b.dedup();
        b
    });
    let seeds: Vec<u64> = (0..args.seeds as u64)
        .map(|i| args.first_seed.checked_add(i))
        .collect::<Option<_>>()
        .context("--first-seed + --seeds overflows")?;
    let pool = PoolConfig::from_file(&args.pool).context("loading the pool config")?;
    let models: Vec<String> = pool.models.iter().map(|m| m.name.clone()).collect();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let pool_label = args.pool.display().to_string();
    let data = args.data.load(&LoadOptions {
        models: &models,
        models_source: &pool_label,
        budgets: budgets.as_deref(),
        split: SplitFilter::All,
        embeddings: None,
        dim: Some(pool.embedding_dim),
    })?;
    let total = seeds.len();
    let mut done = 0;
    let mut on_seed = |run: &experiment::SeedRun| {
        done += 1;
        if progress {
            let r2 = run.methods.first();
            eprintln!(
                "[{:>6.1}s] seed {} ({done}/{total}): {} train / {} test queries{}",
                started.elapsed().as_secs_f64(),
                run.seed,
                run.train_queries,
                run.test_queries,
                r2.map(|m| format!(
                    ", {}: paper AUDC {:.4}, QNC {:.4}",
                    m.name, m.paper_audc, m.paper_qnc
                ))
                .unwrap_or_default()
            );
        }
    };
    let report = experiment::run_experiment(
        &data,
        &pool,
        &ExperimentOptions {
            seeds,
            test_fraction: args.test_fraction,
            alpha: args.alpha,
            eval: EvalOptions {
                lambdas: args.grid.lambdas(),
                lambda_points: args.grid.lambda_points,
                interpolate: args.interpolate,
                threads,
                qnc_target: args.qnc_target,
            },
        },
        &mut on_seed,
    )?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    out.flush()?;
    Ok(())
}
