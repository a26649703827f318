//! `r2 convert`: upstream's release (a folder or a Hub repository) → `router.safetensors` and
//! its pool `config.json`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args};
use r2_router::RouterSource;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").required(true).args(["from", "hf_repo"])))]
pub struct ConvertArgs {
    /// Upstream folder: config.json and checkpoints/<model>_ridge_alpha10.0/*.joblib (checked
    /// against its SHA256SUMS when it has one)
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,

    /// Hugging Face repository in upstream's layout, e.g. JiaqiXue/R2-Router
    #[arg(long, value_name = "REPO[@REVISION]")]
    hf_repo: Option<r2_router::RepoRef>,

    /// Folder to write router.safetensors and config.json into (created if needed); a router
    /// already there is replaced only once the new one has been read and checked in full
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let source = match (args.from, args.hf_repo) {
        (Some(dir), _) => RouterSource::Dir(dir),
        (None, Some(repo)) => RouterSource::Hub(repo),
        (None, None) => unreachable!("clap requires --from or --hf-repo"),
    };
    let started = std::time::Instant::now();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let converted = crate::text::runtime()?
        .block_on(r2_router::source::convert(&source, &args.out, progress))
        .with_context(|| format!("converting {source}"))?;
    let file = &converted.file;
    let heads = file.models.len() * (file.budgets.len() + 2);
    for model in &converted.skipped {
        eprintln!("skipped {model}: its checkpoint folder holds no limited_score_predictors.joblib (as upstream does)");
    }
    eprintln!(
        "wrote {} and {}: {} models × {} heads ({heads} in all) over {}-d embeddings, budgets \
         {:?}, in {:.0?}",
        converted.router_path.display(),
        converted.pool_path.display(),
        file.models.len(),
        file.budgets.len() + 2,
        file.dim,
        file.budgets,
        started.elapsed()
    );
    Ok(())
}
