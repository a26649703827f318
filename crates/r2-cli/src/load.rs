//! Finding and loading the pool config and the router.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use r2_checkpoints::PoolConfig;
use r2_core::Router;

use crate::RouterArgs;

/// The pool config compiled into the binary (the repository's `config/r2.json`).
const BUILTIN_CONFIG: &str = include_str!("../../../config/r2.json");

/// A loaded router with the pool it was built for.
pub struct Loaded {
    pub pool: PoolConfig,
    pub router: Router,
}

/// `--config`, else `$R2_CONFIG`, else the built-in pool.
pub fn pool(args: &RouterArgs) -> Result<PoolConfig> {
    let path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("R2_CONFIG").map(PathBuf::from));
    match path {
        Some(path) => PoolConfig::from_file(&path)
            .with_context(|| format!("loading the model pool config {}", path.display())),
        None => PoolConfig::from_json(BUILTIN_CONFIG, Path::new("<built-in config/r2.json>"))
            .context("the built-in pool config is broken"),
    }
}

/// `--checkpoints`, else `$R2_CHECKPOINTS`, else `./checkpoints`.
pub fn checkpoints_dir(args: &RouterArgs) -> PathBuf {
    args.checkpoints
        .clone()
        .or_else(|| std::env::var_os("R2_CHECKPOINTS").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("checkpoints"))
}

/// Loads the pool config and the router built for it.
pub fn router(args: &RouterArgs) -> Result<Loaded> {
    let pool = pool(args)?;
    let dir = checkpoints_dir(args);
    let router = r2_checkpoints::load_router(&dir, &pool).context("loading the router")?;
    Ok(Loaded { pool, router })
}
