//! `r2 eval`: deferral curves, AUDC, QNC and peak quality of a router on scored test data: r2's
//! envelope metrics and the paper's (compare_methods.py's global cost normalisation).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use r2_train::{EvalOptions, LoadOptions, SplitFilter};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    data: crate::data_args::DataArgs,

    #[command(flatten)]
    router: crate::RouterArgs,

    #[command(flatten)]
    grid: LambdaArgs,

    /// Also evaluate the router with K budgets interpolated between each pair of adjacent
    /// anchor budgets (predicted and true labels interpolated linearly)
    #[arg(long, default_value_t = 0, value_name = "K")]
    interpolate: u32,

    /// The paper's QNC looks for the best single model's quality times this (compare_methods.py's
    /// --target-accuracy-rate; the paper's runs used 0.95)
    #[arg(long, default_value_t = r2_train::eval::DEFAULT_QNC_TARGET, value_name = "T")]
    qnc_target: f64,

    /// Which queries to evaluate on
    #[arg(long, value_enum, default_value_t = SplitArg::Auto)]
    split: SplitArg,

    /// Print the report as JSON (points, curves and numbers of every router)
    #[arg(long)]
    json: bool,

    /// Also draw the deferral curves into this SVG file
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,

    /// Threads [default: all cores]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SplitArg {
    /// The "test" queries, or every query when no record has "split": "test"
    Auto,
    Test,
    Train,
    All,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let options = r2_router::Options {
        checkpoints: args.router.checkpoints.clone(),
        hf_repo: args.router.hf_repo.clone(),
        config: args.router.config.clone(),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..r2_router::Options::default()
    };
    let loaded = crate::text::runtime()?
        .block_on(r2_router::load_router(&options))
        .map_err(crate::load::with_hint)
        .context("loading the router")?;
    let (router, pool) = (loaded.router, loaded.pool);
    let models: Vec<String> = router.models().iter().map(|m| m.name.clone()).collect();
    let pool_label = pool.source.display().to_string();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let data = args.data.load(&LoadOptions {
        models: &models,
        models_source: &pool_label,
        budgets: Some(router.budgets()),
        split: match args.split {
            SplitArg::Auto => SplitFilter::TestOrAll,
            SplitArg::Test => SplitFilter::Test,
            SplitArg::Train => SplitFilter::Train,
            SplitArg::All => SplitFilter::All,
        },
        embeddings: None,
        dim: Some(router.dim()),
    })?;
    let report = r2_train::evaluate(
        &router,
        &data,
        &EvalOptions {
            lambdas: args.grid.lambdas(),
            lambda_points: args.grid.lambda_points,
            interpolate: args.interpolate,
            threads,
            qnc_target: args.qnc_target,
        },
    )?;
    if let Some(path) = &args.plot {
        r2_train::plot::plot_svg(&report, path).map_err(anyhow::Error::msg)?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.to_text())?;
        if let Some(path) = &args.plot {
            writeln!(out, "plot: {}", path.display())?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The λ grid of `r2 eval` and `r2 experiment`.
#[derive(Args, Debug, Clone)]
pub struct LambdaArgs {
    /// λ values to route with, comma-separated, each in [0, 1] [default: a grid of
    /// --lambda-points values spanning the whole cost range]
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "L1,L2",
        conflicts_with = "lambda_points"
    )]
    pub lambdas: Vec<f64>,

    /// Size of the default λ grid: 0, 1 and log-spaced trade-offs in between
    #[arg(long, default_value_t = r2_train::eval::DEFAULT_LAMBDA_POINTS, value_name = "N")]
    pub lambda_points: usize,
}

impl LambdaArgs {
    /// The explicit λ values, if any.
    pub fn lambdas(&self) -> Option<Vec<f64>> {
        (!self.lambdas.is_empty()).then(|| self.lambdas.clone())
    }
}
