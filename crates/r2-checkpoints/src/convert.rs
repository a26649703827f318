//! Conversion of the upstream release (`config.json` + `checkpoints/*/*.joblib`) to a router file.

use std::path::{Path, PathBuf};

use crate::integrity::{Integrity, Verified};
use crate::joblib::{self, JoblibError, JoblibErrorKind, RidgeHead};
use crate::{Error, PoolConfig, Result, RouterFile, StoredModel};

/// The joblib files of one upstream model folder.
pub(crate) const LIMITED_FILE: &str = "limited_score_predictors.joblib";
const UNLIMITED_SCORE_FILE: &str = "unlimited_score_predictor.joblib";
const UNLIMITED_TOKEN_FILE: &str = "unlimited_token_predictor.joblib";

/// An upstream release folder read into memory by [`read_upstream_folder`].
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamFolder {
    /// The heads of the loaded models, in config order.
    pub router: RouterFile,
    /// The folder's `config.json`, keeping only the loaded models (in config order).
    pub pool: PoolConfig,
    /// Models of `config.json` that were skipped because their `limited_score_predictors.joblib`
    /// does not exist (as upstream's `R2Router.from_pretrained` skips them), in config order.
    pub skipped: Vec<String>,
    /// What the files were checked against.
    pub verified: Verified,
}

/// Reads an upstream release folder (holding `config.json` and `checkpoints/`) into a router file.
///
/// The same as [`read_upstream_folder`], returning only the router file.
pub fn read_upstream(from: &Path) -> Result<RouterFile> {
    read_upstream_folder(from).map(|folder| folder.router)
}

/// Reads an upstream release folder (holding `config.json` and `checkpoints/`) into memory,
/// writing nothing.
///
/// Models come in the config's order; each model's `checkpoint_dir` names its folder under
/// `checkpoints/` (default: `<name>_ridge_alpha10.0`). As upstream's `R2Router.from_pretrained`
/// does, a model whose `limited_score_predictors.joblib` does not exist is skipped (logged as a
/// warning and listed in [`UpstreamFolder::skipped`]); when no model is left this is
/// [`Error::NoCheckpoints`]. A model whose limited file exists but whose
/// `unlimited_score_predictor.joblib` or `unlimited_token_predictor.joblib` is missing is an error
/// naming that file. The limited heads are keyed `"<budget>_score"` and are stored by ascending
/// budget. Weights are copied bit for bit; a NaN or infinite weight is a joblib error naming the
/// file, the attribute, the element and its byte offset.
///
/// Hashes (see the crate docs): when the folder holds a `SHA256SUMS`, every file read must be
/// listed there and match; when its `config.json` is the one of the pinned release
/// ([`crate::release`]), every file read must match the release's pinned sha256. A file either
/// list names is never skipped: if it is missing, that is an error.
pub fn read_upstream_folder(from: &Path) -> Result<UpstreamFolder> {
    let config_path = from.join("config.json");
    let config_bytes = std::fs::read(&config_path)
        .map_err(|e| Error::io(&config_path, "cannot read pool config", e))?;
    let mut integrity = Integrity::for_folder(from, &config_path, &config_bytes)?;
    let config_text = String::from_utf8(config_bytes).map_err(|e| {
        Error::io(
            &config_path,
            "cannot read pool config",
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let mut pool = PoolConfig::from_json(&config_text, &config_path)?;
    let checkpoints = from.join("checkpoints");

    let mut budgets: Option<Vec<u32>> = None;
    let mut models = Vec::with_capacity(pool.models.len());
    let mut skipped = Vec::new();
    let mut looked_for = Vec::new();
    for model in &pool.models {
        let folder = model
            .checkpoint_dir
            .clone()
            .unwrap_or_else(|| format!("{}_ridge_alpha10.0", model.name));
        let dir = checkpoints.join(&folder);
        let relative = |file: &str| format!("checkpoints/{folder}/{file}");
        let limited_path = dir.join(LIMITED_FILE);
        looked_for.push(limited_path.clone());
        let limited_bytes = match joblib::read_file(&limited_path) {
            Ok(bytes) => bytes,
            Err(e) if is_not_found(&e) => {
                if let Some(list) = integrity.listed_by(&relative(LIMITED_FILE)) {
                    return Err(listed_but_missing(&limited_path, &list));
                }
                tracing::warn!(
                    model = %model.name,
                    path = %limited_path.display(),
                    "skipping model: its limited_score_predictors.joblib does not exist \
                     (upstream R2-Router skips such models too)"
                );
                skipped.push(model.name.clone());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        integrity.check(&relative(LIMITED_FILE), &limited_path, &limited_bytes)?;
        let limited = joblib::parse_ridge_dict(&limited_bytes, &limited_path)?;
        let mut by_budget = Vec::with_capacity(limited.len());
        for (key, head) in limited {
            let budget = key
                .strip_suffix("_score")
                .and_then(|b| b.parse::<u32>().ok())
                .filter(|&b| b > 0)
                .ok_or_else(|| Error::Upstream {
                    path: limited_path.clone(),
                    message: format!("key `{key}` is not of the form `<budget>_score`"),
                })?;
            by_budget.push((budget, head));
        }
        by_budget.sort_by_key(|(b, _)| *b);
        let these: Vec<u32> = by_budget.iter().map(|(b, _)| *b).collect();
        if these.windows(2).any(|w| w[0] == w[1]) || these.is_empty() {
            return Err(Error::Upstream {
                path: limited_path,
                message: format!("budgets {these:?} are empty or repeat a budget"),
            });
        }
        match &budgets {
            None => budgets = Some(these),
            Some(first) if *first != these => {
                return Err(Error::Upstream {
                    path: limited_path,
                    message: format!(
                        "budgets {these:?} differ from the first model's {first:?}: every model \
                         needs the same budgets"
                    ),
                })
            }
            Some(_) => {}
        }
        let mut single = |file: &str| -> Result<RidgeHead> {
            let path = dir.join(file);
            let bytes = match joblib::read_file(&path) {
                Err(e) if is_not_found(&e) => match integrity.listed_by(&relative(file)) {
                    Some(list) => return Err(listed_but_missing(&path, &list)),
                    None => return Err(e.into()),
                },
                other => other?,
            };
            integrity.check(&relative(file), &path, &bytes)?;
            Ok(joblib::parse_ridge(&bytes, &path)?)
        };
        let score = single(UNLIMITED_SCORE_FILE)?;
        let tokens = single(UNLIMITED_TOKEN_FILE)?;
        let heads: Vec<RidgeHead> = by_budget
            .into_iter()
            .map(|(_, h)| h)
            .chain([score, tokens])
            .collect();
        if let Some(bad) = heads.iter().find(|h| h.coef.len() != pool.embedding_dim) {
            return Err(Error::Upstream {
                path: dir,
                message: format!(
                    "a head has {} weights but config.json says embedding_dim {}",
                    bad.coef.len(),
                    pool.embedding_dim
                ),
            });
        }
        models.push(StoredModel {
            name: model.name.clone(),
            coef: heads.iter().flat_map(|h| h.coef.iter().copied()).collect(),
            intercept: heads.iter().map(|h| h.intercept).collect(),
        });
    }
    if models.is_empty() {
        return Err(Error::NoCheckpoints {
            dir: checkpoints,
            looked_for,
        });
    }
    pool.models.retain(|m| !skipped.contains(&m.name));
    let verified = integrity.verified();
    tracing::debug!(
        folder = %from.display(),
        models = models.len(),
        skipped = skipped.len(),
        sha256sums = verified.sha256sums,
        release = verified.release,
        "read upstream R2-Router folder"
    );
    Ok(UpstreamFolder {
        router: RouterFile {
            dim: pool.embedding_dim,
            budgets: budgets.unwrap_or_default(),
            embedding_model: Some(pool.embedding_model.clone()),
            source: Some(format!(
                "converted from upstream R2-Router joblib files in {}",
                from.display()
            )),
            models,
        },
        pool,
        skipped,
        verified,
    })
}

fn is_not_found(e: &JoblibError) -> bool {
    matches!(&e.kind, JoblibErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound)
}

/// A missing file that a manifest lists: not a model to skip but an incomplete folder.
fn listed_but_missing(path: &Path, list: &str) -> Error {
    let message = format!(
        "it does not exist, but {list} lists it: the folder is incomplete; restore the file (a \
         model whose limited_score_predictors.joblib is missing is skipped only when no checksum \
         list names it)"
    );
    Error::Joblib(JoblibError {
        path: path.to_path_buf(),
        offset: 0,
        kind: JoblibErrorKind::Io(std::io::Error::new(std::io::ErrorKind::NotFound, message)),
    })
}

/// Converts an upstream release folder and writes `<out>/router.safetensors`; returns what was
/// written.
///
/// Nothing is written unless everything checks: the folder is read as [`read_upstream_folder`]
/// reads it (hashes, finiteness, shapes), the serialised router is parsed back with every check of
/// [`RouterFile::from_bytes`] and built into an `r2_core::Router` with the folder's pool, and the
/// temporary file is read back before it is renamed over `<out>/router.safetensors`. So a failed
/// conversion leaves a router already in `out` untouched, and no temporary file behind.
pub fn convert_upstream(from: &Path, out: &Path) -> Result<RouterFile> {
    convert_upstream_folder(from, out).map(|folder| folder.router)
}

/// [`convert_upstream`], returning everything read: the router file written, the folder's pool
/// (without skipped models, e.g. for [`PoolConfig::write`] beside the router), the skipped models
/// and what the files were checked against.
pub fn convert_upstream_folder(from: &Path, out: &Path) -> Result<UpstreamFolder> {
    let upstream = read_upstream_folder(from)?;
    let path = out.join(crate::ROUTER_FILE);
    let bytes = upstream.router.to_bytes()?;
    validate(&upstream, &bytes, from)?;
    crate::format::write_atomic(&path, &bytes, &crate::format::ROUTER_WRITE)?;
    Ok(upstream)
}

/// Every check a reader of the written file makes, on the bytes about to be written; errors name
/// the source folder `from`, since the data came from there.
pub(crate) fn validate(upstream: &UpstreamFolder, bytes: &[u8], from: &Path) -> Result<()> {
    let label: PathBuf = from.to_path_buf();
    let back = RouterFile::from_bytes(bytes, &label)?;
    if back != upstream.router {
        return Err(Error::Safetensors {
            path: label,
            message: "the serialised router parses back differently".into(),
        });
    }
    back.into_router(&upstream.pool, &label)?;
    Ok(())
}
