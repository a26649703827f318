//! The router file: one safetensors file holding every head of every model.
//!
//! Layout of `router.safetensors`, format version 1:
//!
//! | tensor                     | dtype | shape          | rows                                                  |
//! |----------------------------|-------|----------------|-------------------------------------------------------|
//! | `models/<name>/coef`       | F32   | `[B + 2, dim]` | quality head of each budget (ascending), unlimited quality, unlimited output tokens |
//! | `models/<name>/intercept`  | F32   | `[B + 2]`      | the intercepts of the same rows                       |
//!
//! Metadata (`__metadata__`, all strings):
//!
//! | key              | value                                                           |
//! |------------------|-----------------------------------------------------------------|
//! | `format`         | `r2-router`                                                     |
//! | `format_version` | `1`                                                             |
//! | `embedding_dim`  | `dim`, e.g. `1024`                                              |
//! | `budgets`        | the `B` limited budgets, comma-separated and ascending          |
//! | `models`         | JSON array of the model names, in the order they were written   |
//! | `embedding_model`| the embedding model the heads were trained on (optional)        |
//! | `source`         | where the weights came from, free text (optional)               |
//!
//! The weights are the float32 values of the Ridge regressors, unchanged. Prices are not in the
//! file: they belong to the pool config, which users edit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use crate::{Error, PoolConfig, Result};

/// The file name of a router inside a checkpoint folder.
pub const ROUTER_FILE: &str = "router.safetensors";
/// The value of the `format` metadata key.
pub const FORMAT: &str = "r2-router";
/// The version of the layout this crate reads and writes.
pub const FORMAT_VERSION: &str = "1";

/// The heads of one model, as stored: `budgets + 2` rows of `dim` weights.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel {
    /// The model's name.
    pub name: String,
    /// Row-major `[budgets + 2, dim]`.
    pub coef: Vec<f32>,
    /// `budgets + 2` intercepts.
    pub intercept: Vec<f32>,
}

/// A whole router file in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterFile {
    /// Embedding length.
    pub dim: usize,
    /// The limited budgets, ascending.
    pub budgets: Vec<u32>,
    /// The embedding model the heads were trained on, if recorded.
    pub embedding_model: Option<String>,
    /// Free-text provenance, if recorded.
    pub source: Option<String>,
    /// The models, in file order.
    pub models: Vec<StoredModel>,
}

fn coef_name(model: &str) -> String {
    format!("models/{model}/coef")
}

fn intercept_name(model: &str) -> String {
    format!("models/{model}/intercept")
}

impl RouterFile {
    /// Reads and checks a router file: container, metadata, tensor names, dtypes, shapes and
    /// finiteness. Errors name the file and the tensor or key that is wrong.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::RouterNotFound {
                path: path.to_path_buf(),
                dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            },
            _ => Error::io(path, "cannot read router file", e),
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and checks a router file held in memory; `path` is used in errors only.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let container_error = |e: safetensors::SafeTensorError| Error::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(container_error)?;
        let tensors = SafeTensors::deserialize(bytes).map_err(container_error)?;
        let empty = HashMap::new();
        let meta = header.metadata().as_ref().unwrap_or(&empty);
        let get = |key: &'static str| {
            meta.get(key).ok_or_else(|| Error::Metadata {
                path: path.to_path_buf(),
                key,
                message: "missing; this file was not written by r2".into(),
            })
        };
        let bad = |key: &'static str, message: String| Error::Metadata {
            path: path.to_path_buf(),
            key,
            message,
        };
        let format = get("format")?;
        if format != FORMAT {
            return Err(bad("format", format!("is `{format}`, expected `{FORMAT}`")));
        }
        let version = get("format_version")?;
        if version != FORMAT_VERSION {
            return Err(bad(
                "format_version",
                format!("is `{version}`, this r2 reads version {FORMAT_VERSION}: convert the checkpoints again"),
            ));
        }
        let dim_text = get("embedding_dim")?;
        let dim: usize = dim_text.parse().ok().filter(|&d| d > 0).ok_or_else(|| {
            bad(
                "embedding_dim",
                format!("`{dim_text}` is not a positive integer"),
            )
        })?;
        let budgets_text = get("budgets")?;
        let budgets = parse_budgets(budgets_text).map_err(|m| bad("budgets", m))?;
        let names: Vec<String> = serde_json::from_str(get("models")?)
            .map_err(|e| bad("models", format!("not a JSON array of names: {e}")))?;
        if names.is_empty() {
            return Err(bad("models", "lists no model".into()));
        }

        let rows = budgets.len() + 2;
        let mut expected_names = std::collections::HashSet::new();
        let mut models = Vec::with_capacity(names.len());
        for name in names {
            if !expected_names.insert(coef_name(&name)) {
                return Err(bad("models", format!("lists `{name}` twice")));
            }
            expected_names.insert(intercept_name(&name));
            let coef = read_f32(&tensors, path, &coef_name(&name), &[rows, dim])?;
            let intercept = read_f32(&tensors, path, &intercept_name(&name), &[rows])?;
            models.push(StoredModel {
                name,
                coef,
                intercept,
            });
        }
        let mut stray: Vec<_> = tensors
            .names()
            .into_iter()
            .filter(|n| !expected_names.contains(*n))
            .collect();
        stray.sort();
        if let Some(tensor) = stray.first() {
            return Err(Error::UnexpectedTensor {
                path: path.to_path_buf(),
                tensor: tensor.to_string(),
            });
        }
        Ok(Self {
            dim,
            budgets,
            embedding_model: meta.get("embedding_model").cloned(),
            source: meta.get("source").cloned(),
            models,
        })
    }

    /// Serialises the router to safetensors bytes. The bytes depend only on the router: tensors and
    /// metadata keys are written in sorted order, so converting twice gives identical files.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let rows = self.budgets.len() + 2;
        let mut tensors: BTreeMap<String, (Vec<usize>, &[f32])> = BTreeMap::new();
        for model in &self.models {
            tensors.insert(coef_name(&model.name), (vec![rows, self.dim], &model.coef));
            tensors.insert(intercept_name(&model.name), (vec![rows], &model.intercept));
        }
        let mut meta = BTreeMap::new();
        meta.insert("format", FORMAT.to_owned());
        meta.insert("format_version", FORMAT_VERSION.to_owned());
        meta.insert("embedding_dim", self.dim.to_string());
        let budgets: Vec<String> = self.budgets.iter().map(u32::to_string).collect();
        meta.insert("budgets", budgets.join(","));
        let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        meta.insert(
            "models",
            serde_json::to_string(&names).expect("a list of strings serialises"),
        );
        if let Some(model) = &self.embedding_model {
            meta.insert("embedding_model", model.clone());
        }
        if let Some(source) = &self.source {
            meta.insert("source", source.clone());
        }
        // The safetensors layout: an 8-byte little-endian header length, a JSON header padded with
        // spaces to a multiple of 8, then the tensors' bytes at the offsets the header gives.
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".to_owned(), serde_json::json!(meta));
        let mut offset = 0usize;
        for (name, (shape, values)) in &tensors {
            let end = offset + 4 * values.len();
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut header = serde_json::to_vec(&header).expect("the header serialises");
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut bytes = Vec::with_capacity(8 + header.len() + offset);
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        for (_, values) in tensors.values() {
            bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
        Ok(bytes)
    }

    /// Writes the router to `path` atomically: a temporary file in the same folder, read back and
    /// compared, then a rename, so a failed write never leaves a half-written router behind and
    /// never replaces the file already at `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?, &ROUTER_WRITE)
    }

    /// Builds the core router for a pool: the pool's models in the pool's order, with its prices.
    pub fn into_router(self, pool: &PoolConfig, path: &Path) -> Result<r2_core::Router> {
        if pool.embedding_dim != self.dim {
            return Err(Error::DimensionMismatch {
                path: path.to_path_buf(),
                router: self.dim,
                config: pool.embedding_dim,
            });
        }
        let mut stored: HashMap<String, StoredModel> = self
            .models
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect();
        if let Some(twice) = pool
            .models
            .iter()
            .enumerate()
            .find(|(i, m)| pool.models[..*i].iter().any(|o| o.name == m.name))
        {
            return Err(Error::Core {
                path: path.to_path_buf(),
                source: r2_core::Error::DuplicateModel {
                    name: twice.1.name.clone(),
                },
            });
        }
        let mut heads = Vec::with_capacity(pool.models.len());
        for model in &pool.models {
            let Some(m) = stored.remove(&model.name) else {
                let mut available: Vec<String> = stored.keys().cloned().collect();
                available.extend(heads.iter().map(|h: &r2_core::ModelHeads| h.name.clone()));
                available.sort();
                return Err(Error::ModelNotInRouter {
                    path: path.to_path_buf(),
                    model: model.name.clone(),
                    available,
                });
            };
            heads.push(r2_core::ModelHeads {
                name: m.name,
                input_price_per_million: model.input_price_per_million,
                output_price_per_million: model.output_price_per_million,
                coef: m.coef,
                intercept: m.intercept,
            });
        }
        r2_core::Router::new(self.dim, self.budgets, heads).map_err(|source| Error::Core {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The actions [`write_atomic`] names in its errors.
pub(crate) struct WriteActions {
    pub write: &'static str,
    pub read_back: &'static str,
    pub rename: &'static str,
}

/// The actions of writing a router file.
pub(crate) const ROUTER_WRITE: WriteActions = WriteActions {
    write: "cannot write router file",
    read_back: "cannot read back the router file",
    rename: "cannot move router file into place",
};

/// Writes `bytes` to `path` through a temporary file in the same folder that is synced to the disk,
/// read back and compared before it is renamed into place (and the folder synced); on any failure
/// the temporary file is removed and `path` is untouched.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], actions: &WriteActions) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create folder", e))?;
    // A name unique to this process and call, so concurrent writers never share a temporary.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(ROUTER_FILE),
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let written = write_synced(&tmp, bytes)
        .map_err(|e| Error::io(&tmp, actions.write, e))
        .and_then(|()| match std::fs::read(&tmp) {
            Ok(back) if back == bytes => Ok(()),
            Ok(_) => Err(Error::io(
                &tmp,
                actions.read_back,
                std::io::Error::other(
                    "the file read back differs from what was written (is the disk full or \
                     failing?)",
                ),
            )),
            Err(e) => Err(Error::io(&tmp, actions.read_back, e)),
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, actions.rename, e)
    })?;
    // The new name reaches the disk with the folder's own metadata (best effort: some systems
    // cannot open a folder for syncing).
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to a new file at `path` and waits until they are on the disk, so a crash after
/// the rename cannot leave a router file with missing contents under the final name.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn parse_budgets(text: &str) -> std::result::Result<Vec<u32>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let budgets = text
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|&b| b > 0)
                .ok_or_else(|| format!("`{s}` is not a positive integer"))
        })
        .collect::<std::result::Result<Vec<u32>, String>>()?;
    if budgets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("`{text}` is not strictly ascending"));
    }
    Ok(budgets)
}

fn read_f32(tensors: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let view = tensors.tensor(name).map_err(|_| Error::MissingTensor {
        path: path.to_path_buf(),
        tensor: name.to_owned(),
    })?;
    if view.dtype() != Dtype::F32 {
        return Err(Error::TensorDtype {
            path: path.to_path_buf(),
            tensor: name.to_owned(),
            expected: "F32",
            got: format!("{:?}", view.dtype()),
        });
    }
    if view.shape() != shape {
        return Err(Error::TensorShape {
            path: path.to_path_buf(),
            tensor: name.to_owned(),
            expected: shape.to_vec(),
            got: view.shape().to_vec(),
        });
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite {
            path: path.to_path_buf(),
            tensor: name.to_owned(),
            index,
            value,
        });
    }
    Ok(values)
}
