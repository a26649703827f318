//! Conversion of the upstream release (`config.json` + `checkpoints/*/*.joblib`) to a router file.

use std::path::Path;

use crate::joblib::{self, RidgeHead};
use crate::{Error, PoolConfig, Result, RouterFile, StoredModel};

/// The joblib files of one upstream model folder.
const LIMITED_FILE: &str = "limited_score_predictors.joblib";
const UNLIMITED_SCORE_FILE: &str = "unlimited_score_predictor.joblib";
const UNLIMITED_TOKEN_FILE: &str = "unlimited_token_predictor.joblib";

/// Reads an upstream release folder (holding `config.json` and `checkpoints/`) into a router file.
///
/// Models come in the config's order; each model's `checkpoint_dir` names its folder under
/// `checkpoints/` (default: `<name>_ridge_alpha10.0`). The limited heads are keyed `"<budget>_score"`
/// and are stored by ascending budget. Weights are copied bit for bit.
pub fn read_upstream(from: &Path) -> Result<RouterFile> {
    let config_path = from.join("config.json");
    let pool = PoolConfig::from_file(&config_path)?;
    let mut budgets: Option<Vec<u32>> = None;
    let mut models = Vec::with_capacity(pool.models.len());
    for model in &pool.models {
        let folder = model
            .checkpoint_dir
            .clone()
            .unwrap_or_else(|| format!("{}_ridge_alpha10.0", model.name));
        let dir = from.join("checkpoints").join(folder);
        let limited_path = dir.join(LIMITED_FILE);
        let limited = joblib::read_ridge_dict(&limited_path)?;
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
        let score = joblib::read_ridge(&dir.join(UNLIMITED_SCORE_FILE))?;
        let tokens = joblib::read_ridge(&dir.join(UNLIMITED_TOKEN_FILE))?;
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
    Ok(RouterFile {
        dim: pool.embedding_dim,
        budgets: budgets.unwrap_or_default(),
        embedding_model: Some(pool.embedding_model.clone()),
        source: Some(format!(
            "converted from upstream R2-Router joblib files in {}",
            from.display()
        )),
        models,
    })
}

/// Converts an upstream release folder and writes `<out>/router.safetensors`; returns what was
/// written. The written file is read back and checked before this returns.
pub fn convert_upstream(from: &Path, out: &Path) -> Result<RouterFile> {
    let router = read_upstream(from)?;
    let path = out.join(crate::ROUTER_FILE);
    router.write(&path)?;
    let back = RouterFile::read(&path)?;
    if back != router {
        return Err(Error::Safetensors {
            path,
            message: "the file read back differs from what was written".into(),
        });
    }
    Ok(router)
}
