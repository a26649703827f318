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
  convert-checkpoints --from DIR --out DIR
      Convert the upstream R2-Router release (DIR holds config.json and checkpoints/) into
      DIR/router.safetensors, the router file r2 loads. Weights are copied bit for bit.
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

fn convert_checkpoints(args: &[String]) -> Result<()> {
    let mut from = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let value = |it: &mut std::slice::Iter<String>| {
            it.next()
                .map(PathBuf::from)
                .with_context(|| format!("{arg} needs a folder"))
        };
        match arg.as_str() {
            "--from" => from = Some(value(&mut it)?),
            "--out" => out = Some(value(&mut it)?),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let (Some(from), Some(out)) = (from, out) else {
        bail!("convert-checkpoints needs --from DIR and --out DIR\n\n{USAGE}");
    };
    let started = std::time::Instant::now();
    let router = r2_checkpoints::convert_upstream(&from, &out)
        .with_context(|| format!("converting {}", from.display()))?;
    let heads = router.models.len() * (router.budgets.len() + 2);
    eprintln!(
        "wrote {}: {} models × {} heads ({} in all) over {}-d embeddings, budgets {:?}, in {:.0?}",
        out.join(r2_checkpoints::ROUTER_FILE).display(),
        router.models.len(),
        router.budgets.len() + 2,
        heads,
        router.dim,
        router.budgets,
        started.elapsed()
    );
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
