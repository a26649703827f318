//! Maintainer tasks, run as `cargo xtask <task>`.
//!
//! Architecture invariant: xtask is a plain binary with few dependencies; it never ships to users
//! and the product never depends on it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  convert-checkpoints (--from DIR | --hf-repo REPO) --out DIR
      An alias of `r2 convert`: the upstream R2-Router release (config.json and checkpoints/)
      into DIR/router.safetensors and DIR/config.json. Weights are copied bit for bit.
  gen-data --out DIR [--queries N] [--first-query I] [--models M] [--dim D] [--budgets B1,B2,...] [--seed S]
           [--test-fraction F] [--score-samples N] [--inline-embeddings]
      Generate synthetic training/evaluation data with known structure (r2_train::synth):
      DIR/records.jsonl, DIR/embeddings.jsonl and DIR/pool.json. Defaults: 1000 queries, the
      11 synthetic models, 64-d, the 15 upstream budgets, seed 42, 20% test queries. The seed
      fixes the world (directions, model affinities) and every query; --first-query I makes
      queries qI, qI+1, ... of the same world (e.g. a separate evaluation set).
";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("convert-checkpoints") => convert_checkpoints(&args[1..]),
        Some("gen-data") => gen_data(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

/// A thin alias of `r2 convert` (the user command): the arguments are passed on as they are.
fn convert_checkpoints(args: &[String]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "r2-cli",
            "--",
            "convert",
        ])
        .args(args)
        .status()
        .context("cannot run `cargo run -p r2-cli -- convert`")?;
    if !status.success() {
        bail!("r2 convert failed ({status})");
    }
    Ok(())
}

fn gen_data(args: &[String]) -> Result<()> {
    let mut config = r2_train::synth::SynthConfig::default();
    let mut out = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .map(String::as_str)
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--queries" => config.queries = value()?.parse().context("--queries")?,
            "--first-query" => config.first_query = value()?.parse().context("--first-query")?,
            "--models" => config.models = value()?.parse().context("--models")?,
            "--dim" => config.dim = value()?.parse().context("--dim")?,
            "--seed" => config.seed = value()?.parse().context("--seed")?,
            "--test-fraction" => {
                config.test_fraction = value()?.parse().context("--test-fraction")?
            }
            "--budgets" => {
                config.budgets = value()?
                    .split(',')
                    .map(|b| b.trim().parse::<u32>())
                    .collect::<Result<_, _>>()
                    .context("--budgets")?
            }
            "--inline-embeddings" => config.inline_embeddings = true,
            "--score-samples" => {
                config.score_samples = value()?.parse().context("--score-samples")?
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let Some(out) = out else {
        bail!("gen-data needs --out DIR\n\n{USAGE}");
    };
    let started = std::time::Instant::now();
    let files = r2_train::synth::write(&config, &out)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "wrote {} records ({} queries × {} models × {} budgets) to {}{}, pool {}, in {:.1?}",
        files.record_count,
        config.queries,
        config.models,
        config.budgets.len() + 1,
        files.records.display(),
        files
            .embeddings
            .as_ref()
            .map(|e| format!(", embeddings {}", e.display()))
            .unwrap_or_default(),
        files.pool.display(),
        started.elapsed()
    );
    Ok(())
}
