//! Loading a router from either layout: an r2 router folder or an upstream R2-Router folder.

use std::path::{Path, PathBuf};

use crate::integrity::Verified;
use crate::{read_upstream_folder, Error, PoolConfig, Result, RouterFile, ROUTER_FILE};

/// How many entries of a folder [`Error::NoRouterLayout`] lists.
const LISTED_ENTRIES: usize = 20;

/// The two folder layouts r2 reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// An r2 router file: `<dir>/router.safetensors`, or a path that is itself a file.
    Router {
        /// The router file.
        file: PathBuf,
    },
    /// An upstream R2-Router folder: `config.json` and `checkpoints/<model>_ridge_alpha10.0/`.
    Upstream {
        /// The folder holding `config.json`.
        dir: PathBuf,
    },
}

/// Which layout `dir` holds.
///
/// A path that is a file, or a folder holding `router.safetensors`, is [`Layout::Router`] (also
/// when the folder holds an upstream layout too: the converted file wins); a folder holding
/// `config.json` and a `checkpoints/` folder is [`Layout::Upstream`]. A path that does not exist
/// is [`Error::RouterNotFound`]; a folder holding neither layout is [`Error::NoRouterLayout`],
/// which lists what the folder holds.
pub fn detect_layout(dir: &Path) -> Result<Layout> {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::RouterNotFound {
                path: dir.join(ROUTER_FILE),
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(Error::io(dir, "cannot read the router folder", e)),
    };
    if meta.is_file() {
        return Ok(Layout::Router {
            file: dir.to_path_buf(),
        });
    }
    let file = dir.join(ROUTER_FILE);
    if file.is_file() {
        return Ok(Layout::Router { file });
    }
    if dir.join("config.json").is_file() && dir.join("checkpoints").is_dir() {
        return Ok(Layout::Upstream {
            dir: dir.to_path_buf(),
        });
    }
    let mut entries: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, "cannot list the router folder", e))?
        .filter_map(|entry| entry.ok())
        .map(|entry| {
            let mut name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() {
                name.push('/');
            }
            name
        })
        .collect();
    entries.sort();
    let more = entries.len().saturating_sub(LISTED_ENTRIES);
    entries.truncate(LISTED_ENTRIES);
    Err(Error::NoRouterLayout {
        dir: dir.to_path_buf(),
        found: entries,
        more,
    })
}

/// Which model pool [`load_any`] builds the router with.
#[derive(Debug, Clone, Copy)]
pub enum PoolChoice<'a> {
    /// This pool, whatever the layout (e.g. one the user named). For an upstream folder its
    /// models must be among the folder's loaded models; the folder's `config.json` still says
    /// where the checkpoints are.
    Given(&'a PoolConfig),
    /// An upstream folder's own `config.json` (keeping only the models that were loaded); for a
    /// router file, which holds no prices, this pool.
    FolderOr(&'a PoolConfig),
}

/// What [`load_any`] loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The router, with the models, order and prices of [`Loaded::pool`].
    pub router: r2_core::Router,
    /// The pool the router was built with.
    pub pool: PoolConfig,
    /// Which layout was read.
    pub layout: Layout,
    /// Upstream models skipped because their `limited_score_predictors.joblib` does not exist
    /// (always empty for a router file).
    pub skipped: Vec<String>,
    /// What an upstream folder's files were checked against (nothing for a router file, whose
    /// loader checks its container, metadata, shapes and finiteness).
    pub verified: Verified,
}

/// Loads a router from `dir` in either layout, in memory: nothing is written.
///
/// A router file is read and checked as [`RouterFile::read`] does. An upstream folder is read as
/// [`read_upstream_folder`] reads it (skipping models without a limited file, checking hashes
/// against its `SHA256SUMS` and, when its `config.json` is the pinned release's, against
/// [`crate::release::FILES`]) and converted in memory. The pool is chosen by `pool`; see
/// [`PoolChoice`].
pub fn load_any(dir: &Path, pool: PoolChoice<'_>) -> Result<Loaded> {
    let layout = detect_layout(dir)?;
    match &layout {
        Layout::Router { file } => {
            let pool = match pool {
                PoolChoice::Given(pool) | PoolChoice::FolderOr(pool) => pool.clone(),
            };
            let router = RouterFile::read(file)?.into_router(&pool, file)?;
            Ok(Loaded {
                router,
                pool,
                layout,
                skipped: Vec::new(),
                verified: Verified::default(),
            })
        }
        Layout::Upstream { dir } => {
            let folder = read_upstream_folder(dir)?;
            let pool = match pool {
                PoolChoice::Given(pool) => pool.clone(),
                PoolChoice::FolderOr(_) => folder.pool,
            };
            let router = folder.router.into_router(&pool, dir)?;
            Ok(Loaded {
                router,
                pool,
                layout,
                skipped: folder.skipped,
                verified: folder.verified,
            })
        }
    }
}
