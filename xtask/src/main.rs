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
