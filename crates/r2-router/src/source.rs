//! Where a router comes from: a folder (r2's `router.safetensors`, or upstream's `config.json` +
//! `checkpoints/*.joblib` read in memory), a Hugging Face Hub repository holding either, or the
//! released checkpoints fetched on first use.
//!
//! The pool: `--config` / `$R2_CONFIG` when given; else a pool `config.json` that the router
//! folder holds (upstream's own, or the one `convert` writes beside `router.safetensors`); else
//! the built-in pool.

use std::path::{Path, PathBuf};

use r2_checkpoints::{Layout, Loaded, PoolChoice, PoolConfig};
use r2_hub::{HubSettings, RepoRef};

use crate::{fetch, Error, FetchOptions, Result, BUILTIN_CONFIG};

/// The file names a router repository on the Hub may hold that r2 reads.
pub const POOL_FILE: &str = "config.json";
const SUMS_FILE: &str = "SHA256SUMS";

/// A folder or a Hub repository holding a router in either layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterSource {
    /// A local folder (or a `router.safetensors` file).
    Dir(PathBuf),
    /// `owner/name[@revision]` on the Hugging Face Hub.
    Hub(RepoRef),
}

impl std::fmt::Display for RouterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouterSource::Dir(dir) => write!(f, "{}", dir.display()),
            RouterSource::Hub(repo) => write!(f, "{repo} (Hugging Face Hub)"),
        }
    }
}

/// The explicit pool: `config`, else `$R2_CONFIG`.
pub fn explicit_pool(config: Option<&Path>) -> Result<Option<PoolConfig>> {
    let path = config
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("R2_CONFIG").map(PathBuf::from));
    Ok(match path {
        Some(path) => Some(PoolConfig::from_file(&path)?),
        None => None,
    })
}

/// The built-in pool ([`BUILTIN_CONFIG`]).
pub fn builtin_pool() -> Result<PoolConfig> {
    Ok(PoolConfig::from_json(
        BUILTIN_CONFIG,
        Path::new("<built-in config/r2.json>"),
    )?)
}

/// The local folder of `source`: the folder itself, or the Hub snapshot (downloaded on first
/// use, from the cache afterwards).
pub async fn local_dir(source: &RouterSource, progress: bool) -> Result<PathBuf> {
    match source {
        RouterSource::Dir(dir) => Ok(dir.clone()),
        RouterSource::Hub(repo) => hub_snapshot(repo, progress).await,
    }
}

/// Whether a file of a Hub repository is one r2 reads from a router repository.
fn wanted(file: &str) -> bool {
    file == POOL_FILE
        || file == SUMS_FILE
        || file == r2_checkpoints::ROUTER_FILE
        || (file.starts_with("checkpoints/") && file.ends_with(".joblib"))
}

/// Whether a repository's file list holds a router in one of the two layouts.
fn has_layout(files: &[String]) -> bool {
    files.iter().any(|f| f == r2_checkpoints::ROUTER_FILE)
        || (files.iter().any(|f| f == POOL_FILE)
            && files
                .iter()
                .any(|f| f.starts_with("checkpoints/") && f.ends_with(".joblib")))
}

async fn hub_snapshot(repo: &RepoRef, progress: bool) -> Result<PathBuf> {
    let settings = HubSettings::from_env()?;
    // List first, so a repository of another kind is named before anything is downloaded.
    let snapshot = r2_hub::snapshot(repo, &settings, wanted, progress).await?;
    if !has_layout(&snapshot.files) {
        return Err(Error::NoRouterInRepo {
            repo: repo.to_string(),
            found: snapshot.files.iter().take(30).cloned().collect(),
            total: snapshot.files.len(),
        });
    }
    tracing::debug!(repo = %repo, commit = %snapshot.commit, dir = %snapshot.dir.display(), "router repository ready");
    Ok(snapshot.dir)
}

/// Reads the router in `dir` (either layout, nothing written) and the pool it routes over:
/// `explicit` when given; else an upstream folder's own `config.json`, or the pool `config.json`
/// beside a router file; else the built-in pool.
pub fn load_dir(dir: &Path, explicit: Option<PoolConfig>) -> Result<Loaded> {
    if let Some(pool) = explicit {
        return Ok(r2_checkpoints::load_any(dir, PoolChoice::Given(&pool))?);
    }
    let fallback = match r2_checkpoints::detect_layout(dir)? {
        Layout::Router { file } => {
            let beside = file
                .parent()
                .map(|p| p.join(POOL_FILE))
                .filter(|p| p.is_file());
            match beside {
                Some(path) => PoolConfig::from_file(&path)?,
                None => builtin_pool()?,
            }
        }
        Layout::Upstream { .. } => builtin_pool()?,
    };
    Ok(r2_checkpoints::load_any(
        dir,
        PoolChoice::FolderOr(&fallback),
    )?)
}

/// The router of the options: `source` when given (a folder or a Hub repository), else
/// `$R2_CHECKPOINTS`, else `./checkpoints` when it holds a router, else the released checkpoints
/// from the cache (fetched on first use).
pub async fn load(
    source: Option<&RouterSource>,
    config: Option<&Path>,
    progress: bool,
) -> Result<Loaded> {
    let explicit = explicit_pool(config)?;
    let dir = match source {
        Some(source) => local_dir(source, progress).await?,
        None => default_dir(progress).await?,
    };
    load_dir(&dir, explicit)
}

async fn default_dir(progress: bool) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("R2_CHECKPOINTS") {
        return Ok(PathBuf::from(dir));
    }
    let local = PathBuf::from("checkpoints");
    if local.join(r2_checkpoints::ROUTER_FILE).is_file() {
        return Ok(local);
    }
    let mut options = FetchOptions::from_env()?;
    options.progress = progress;
    Ok(fetch::ensure_upstream_router(&options).await?)
}

/// What [`convert`] wrote.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The router file written.
    pub router_path: PathBuf,
    /// The pool config written beside it (upstream's `config.json`).
    pub pool_path: PathBuf,
    /// What the router file holds.
    pub file: r2_checkpoints::RouterFile,
    /// Upstream models skipped because their folder holds no checkpoint.
    pub skipped: Vec<String>,
}

/// Converts an upstream release (a folder, or a Hub repository in upstream's layout) into
/// `out/router.safetensors`, and writes the pool beside it as `out/config.json`, so that
/// `out` loads with the right pool. Everything is read and checked before anything is written;
/// both files are written atomically.
pub async fn convert(source: &RouterSource, out: &Path, progress: bool) -> Result<Converted> {
    let dir = local_dir(source, progress).await?;
    let dir = match r2_checkpoints::detect_layout(&dir)? {
        Layout::Upstream { dir } => dir,
        Layout::Router { file } => {
            return Err(Error::AlreadyConverted {
                from: source.to_string(),
                file,
            })
        }
    };
    let folder = r2_checkpoints::convert_upstream_folder(&dir, out)?;
    let pool_path = out.join(POOL_FILE);
    folder.pool.write(&pool_path)?;
    Ok(Converted {
        router_path: out.join(r2_checkpoints::ROUTER_FILE),
        pool_path,
        file: folder.router,
        skipped: folder.skipped,
    })
}
