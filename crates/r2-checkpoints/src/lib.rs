//! Router checkpoints for r2: the safetensors router file, the model pool config, and an importer
//! for the upstream R2-Router release (scikit-learn `Ridge` objects pickled by joblib).
//!
//! Architecture invariant: this crate reads and writes files and parses JSON and pickles; it does
//! no networking and no routing arithmetic (that is `r2-core`). The pickle reader runs no code: it
//! understands only the opcodes and classes of joblib'd `Ridge` objects and rejects everything else.
//! It never prints; it logs through `tracing` (a warning per skipped upstream model).
//!
//! The layout of the router file is documented in [`format`](mod@format).
//!
//! # Two layouts
//!
//! [`load_any`] reads a router from either layout ([`detect_layout`] tells which a folder holds):
//!
//! - an r2 router folder: `router.safetensors` (or a path that is itself that file);
//! - an upstream R2-Router folder: `config.json` and `checkpoints/<model>_ridge_alpha10.0/` with
//!   `limited_score_predictors.joblib`, `unlimited_score_predictor.joblib` and
//!   `unlimited_token_predictor.joblib`. It is converted in memory (a few milliseconds for the 33
//!   files of the release); nothing is written.
//!
//! A router file holds no prices, so it is built with the caller's pool; an upstream folder brings
//! its own `config.json`, used unless the caller gives a pool ([`PoolChoice`]).
//!
//! # Upstream folders
//!
//! [`read_upstream_folder`] (and [`read_upstream`], [`convert_upstream`], [`load_any`]) follow
//! upstream's `R2Router.from_pretrained`: the models of `config.json` in order, skipping a model
//! whose `limited_score_predictors.joblib` does not exist (logged with `tracing::warn!` and listed
//! in [`UpstreamFolder::skipped`]), and failing with [`Error::NoCheckpoints`] when none is left. The
//! pool of an upstream folder is its `config.json` without the skipped models. Every weight must be
//! finite: a NaN or infinity is a [`joblib::JoblibError`] naming the file, the attribute, the
//! element and its byte offset.
//!
//! Hashes are checked for every file the loader reads (`config.json` and the three joblib files of
//! each loaded model):
//!
//! - when the folder holds a `SHA256SUMS` (`sha256sum`'s format, `<64 hex>  <relative path>` a
//!   line, `*` tolerated), each of those files must be listed there ([`Error::NotInSha256Sums`]
//!   otherwise) and match it ([`Error::Sha256Mismatch`]); files it lists that the loader does not
//!   read are ignored;
//! - when the folder's `config.json` has the sha256 of release `b0b2291`'s ([`release::FILES`]),
//!   the folder claims to be that release and each joblib file read must have the pinned sha256
//!   ([`Error::ReleaseMismatch`]). A folder with another `config.json` (other prices, say) and no
//!   `SHA256SUMS` makes no claim and is not checked.
//!
//! A file either list names is required: its absence is an error, not a skipped model.
//!
//! [`convert_upstream`] writes `router.safetensors` only after every check has passed: the folder
//! as above, the serialised file parsed back with all the checks of [`RouterFile::from_bytes`], the
//! core router built from it, and the temporary file read back; so a failed conversion never
//! replaces a router already in the output folder.
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use r2_checkpoints::{load_any, load_router, Layout, PoolChoice, PoolConfig};
//!
//! let pool = PoolConfig::from_file(Path::new("config/r2.json"))?;
//! let router = load_router(Path::new("checkpoints"), &pool)?;
//! println!("{} heads over {}-d embeddings", router.head_count(), router.dim());
//!
//! // Either layout: a router folder gets `pool`; an upstream folder brings its own config.json.
//! let loaded = load_any(Path::new("path/to/r2_router"), PoolChoice::FolderOr(&pool))?;
//! if let Layout::Upstream { dir } = &loaded.layout {
//!     println!("read upstream folder {} in memory", dir.display());
//! }
//! for model in &loaded.skipped {
//!     println!("skipped {model}: no limited_score_predictors.joblib");
//! }
//! println!("{} models, prices from {}", loaded.pool.models.len(), loaded.pool.source.display());
//! # Ok::<(), r2_checkpoints::Error>(())
//! ```

mod convert;
mod error;
pub mod format;
mod integrity;
pub mod joblib;
mod layout;
mod pickle;
mod pool;
pub mod release;

use std::path::Path;

pub use convert::{
    convert_upstream, convert_upstream_folder, read_upstream, read_upstream_folder, UpstreamFolder,
};
pub use error::{Error, Result};
pub use format::{RouterFile, StoredModel, FORMAT, FORMAT_VERSION, ROUTER_FILE};
pub use integrity::{Verified, SHA256SUMS};
pub use layout::{detect_layout, load_any, Layout, Loaded, PoolChoice};
pub use pool::{PoolConfig, PoolModel};

/// Loads `<dir>/router.safetensors` (or `dir` itself when it is a file) and builds the core router
/// for `pool`: the pool's models, in the pool's order, with the pool's prices.
pub fn load_router(dir: &Path, pool: &PoolConfig) -> Result<r2_core::Router> {
    let path = if dir.is_file() {
        dir.to_path_buf()
    } else {
        dir.join(ROUTER_FILE)
    };
    RouterFile::read(&path)?.into_router(pool, &path)
}
