//! Router checkpoints for r2: the safetensors router file, the model pool config, and an importer
//! for the upstream R2-Router release (scikit-learn `Ridge` objects pickled by joblib).
//!
//! Architecture invariant: this crate reads and writes files and parses JSON and pickles; it does
//! no networking and no routing arithmetic (that is `r2-core`). The pickle reader runs no code: it
//! understands only the opcodes and classes of joblib'd `Ridge` objects and rejects everything else.
//!
//! The layout of the router file is documented in [`format`].
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use r2_checkpoints::{load_router, PoolConfig};
//!
//! let pool = PoolConfig::from_file(Path::new("config/r2.json"))?;
//! let router = load_router(Path::new("checkpoints"), &pool)?;
//! println!("{} heads over {}-d embeddings", router.head_count(), router.dim());
//! # Ok::<(), r2_checkpoints::Error>(())
//! ```

mod convert;
mod error;
pub mod format;
pub mod joblib;
mod pickle;
mod pool;

use std::path::Path;

pub use convert::{convert_upstream, read_upstream};
pub use error::{Error, Result};
pub use format::{RouterFile, StoredModel, FORMAT, FORMAT_VERSION, ROUTER_FILE};
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
