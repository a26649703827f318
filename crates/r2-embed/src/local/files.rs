//! The files of a checkpoint: `config.json`, `tokenizer.json` and the safetensors weights.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

pub(crate) const CONFIG: &str = "config.json";
pub(crate) const TOKENIZER: &str = "tokenizer.json";
pub(crate) const WEIGHTS: &str = "model.safetensors";
pub(crate) const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// What a model folder must hold, for error messages.
pub(crate) const FOLDER_CONTENTS: &str = "a Qwen3 model folder must contain config.json, \
    tokenizer.json and model.safetensors (or model.safetensors.index.json and its shards), e.g. \
    from `huggingface-cli download Qwen/Qwen3-0.6B --local-dir DIR`";

/// Paths of the files of one checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct ModelFiles {
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    /// `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    pub weights: Vec<PathBuf>,
}

impl ModelFiles {
    /// Finds the files in `dir`; a missing file is an [`Error::Model`] naming it.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let require = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Model {
                    path,
                    reason: format!("missing: {FOLDER_CONTENTS}"),
                })
            }
        };
        let config = require(CONFIG)?;
        let tokenizer = require(TOKENIZER)?;
        let single = dir.join(WEIGHTS);
        let index = dir.join(WEIGHTS_INDEX);
        let weights = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shard_names(&index)?
                .into_iter()
                .map(|name| {
                    let path = dir.join(&name);
                    if path.is_file() {
                        Ok(path)
                    } else {
                        Err(Error::Model {
                            path,
                            reason: format!("missing: the shard is named by {WEIGHTS_INDEX}"),
                        })
                    }
                })
                .collect::<Result<_>>()?
        } else {
            return Err(Error::Model {
                path: single,
                reason: format!("missing (and so is {WEIGHTS_INDEX}): {FOLDER_CONTENTS}"),
            });
        };
        Ok(Self {
            config,
            tokenizer,
            weights,
        })
    }
}

/// The shard files named by a `model.safetensors.index.json`, sorted and without duplicates.
///
/// Names must be relative paths inside the folder (no `..`, not absolute).
pub(crate) fn shard_names(index: &Path) -> Result<Vec<String>> {
    let fail = |reason: String| Error::Model {
        path: index.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| fail(format!("cannot read: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| fail("no `weight_map` object".to_owned()))?;
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            fail(format!(
                "weight_map[{tensor:?}] is {file}, expected a file name"
            ))
        })?;
        let safe = !file.is_empty()
            && Path::new(file)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(fail(format!(
                "weight_map[{tensor:?}] names {file:?}, which is not a file inside the model folder"
            )));
        }
        names.insert(file.to_owned());
    }
    if names.is_empty() {
        return Err(fail("`weight_map` is empty".to_owned()));
    }
    Ok(names.into_iter().collect())
}
