//! Fetching a checkpoint from the Hugging Face Hub into the local cache (hf-hub, tokio API).
//!
//! The cache layout and the environment (`HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`,
//! `HF_HUB_OFFLINE`, `HF_TOKEN`, read at each call) are those of `huggingface_hub` (Python), as
//! `r2-hub` reads them, so a model downloaded with `huggingface-cli download` is found and vice
//! versa.
//!
//! Files already in the cache are used without any network request, so a cached model also loads
//! without `HF_HUB_OFFLINE` when the network is down.

use std::path::PathBuf;

use hf_hub::api::tokio::{ApiError, ApiRepo};
use hf_hub::{Cache, CacheRepo};
use r2_hub::{error_chain as chain, status, HubSettings};

use super::files::{shard_names, ModelFiles, CONFIG, TOKENIZER, WEIGHTS, WEIGHTS_INDEX};
use crate::{Error, Result};

/// Where and how to fetch, from the environment.
struct Settings {
    repo: String,
    hub: HubSettings,
}

impl Settings {
    fn from_env(repo: &str) -> Result<Self> {
        if r2_hub::check_repo_id(repo).is_err() {
            return Err(Error::Download {
                repo: repo.to_owned(),
                file: CONFIG.to_owned(),
                reason: "not a Hugging Face repository id (expected e.g. Qwen/Qwen3-0.6B)"
                    .to_owned(),
            });
        }
        let hub = HubSettings::from_env().map_err(|_| Error::Download {
            repo: repo.to_owned(),
            file: CONFIG.to_owned(),
            reason: "cannot find the Hugging Face cache folder (no HOME): set HF_HOME".to_owned(),
        })?;
        Ok(Self {
            repo: repo.to_owned(),
            hub,
        })
    }

    /// The error for a file that is needed but neither cached nor downloadable.
    fn not_available(&self, file: &str, why: &str) -> Error {
        Error::Download {
            repo: self.repo.clone(),
            file: file.to_owned(),
            reason: format!(
                "{why}. Run once with network access (and without HF_HUB_OFFLINE), or download \
                 the model into the Hugging Face cache at {cache} with `huggingface-cli download \
                 {repo}` (set HF_HOME to use another cache), or load the model from a folder \
                 that holds config.json, tokenizer.json and model.safetensors",
                cache = self.hub.cache_dir.display(),
                repo = self.repo,
            ),
        }
    }
}

/// Makes sure `repo`'s files are in the cache (downloading what is missing unless offline) and
/// returns their paths.
pub(crate) async fn fetch(repo: &str, progress: bool) -> Result<ModelFiles> {
    let settings = Settings::from_env(repo)?;
    if settings.hub.offline {
        let cache = Cache::new(settings.hub.cache_dir.clone());
        return from_cache(&settings, &cache.model(repo.to_owned()));
    }
    let api = settings.hub.api(progress).map_err(|e| Error::Download {
        repo: repo.to_owned(),
        file: CONFIG.to_owned(),
        reason: format!("cannot set up the HTTP client: {}", chain(&e)),
    })?;
    let api_repo = api.model(repo.to_owned());

    let config = get(&settings, &api_repo, CONFIG).await?;
    let tokenizer = get(&settings, &api_repo, TOKENIZER).await?;
    let weights = match api_repo.get(WEIGHTS).await {
        Ok(path) => vec![path],
        Err(e) if status(&e) == Some(404) => {
            // Large checkpoints are sharded: the index names the shards.
            let index = match api_repo.get(WEIGHTS_INDEX).await {
                Ok(index) => index,
                Err(e) if status(&e) == Some(404) => {
                    return Err(Error::Download {
                        repo: repo.to_owned(),
                        file: WEIGHTS.to_owned(),
                        reason: format!(
                            "neither {} nor {} exists (HTTP 404): is {repo} a Qwen3 checkpoint \
                             in safetensors format?",
                            api_repo.url(WEIGHTS),
                            api_repo.url(WEIGHTS_INDEX)
                        ),
                    })
                }
                Err(e) => return Err(download_error(&settings, &api_repo, WEIGHTS_INDEX, &e)),
            };
            let mut shards = Vec::new();
            for name in shard_names(&index)? {
                shards.push(get(&settings, &api_repo, &name).await?);
            }
            shards
        }
        Err(e) => return Err(download_error(&settings, &api_repo, WEIGHTS, &e)),
    };
    Ok(ModelFiles {
        config,
        tokenizer,
        weights,
    })
}

/// The files from the cache alone (`HF_HUB_OFFLINE`).
fn from_cache(settings: &Settings, cache: &CacheRepo) -> Result<ModelFiles> {
    let get = |file: &str| {
        cache.get(file).ok_or_else(|| {
            settings.not_available(
                file,
                "HF_HUB_OFFLINE is set and the file is not in the cache",
            )
        })
    };
    let config = get(CONFIG)?;
    let tokenizer = get(TOKENIZER)?;
    let weights = if let Some(path) = cache.get(WEIGHTS) {
        vec![path]
    } else if let Some(index) = cache.get(WEIGHTS_INDEX) {
        shard_names(&index)?
            .iter()
            .map(|name| get(name))
            .collect::<Result<_>>()?
    } else {
        return Err(settings.not_available(
            WEIGHTS,
            "HF_HUB_OFFLINE is set and the weights (model.safetensors or \
             model.safetensors.index.json) are not in the cache",
        ));
    };
    Ok(ModelFiles {
        config,
        tokenizer,
        weights,
    })
}

/// One file: from the cache if there, else downloaded.
async fn get(settings: &Settings, api_repo: &ApiRepo, file: &str) -> Result<PathBuf> {
    api_repo
        .get(file)
        .await
        .map_err(|e| download_error(settings, api_repo, file, &e))
}

fn download_error(settings: &Settings, api_repo: &ApiRepo, file: &str, e: &ApiError) -> Error {
    let url = api_repo.url(file);
    let reason = match status(e) {
        Some(404) => format!(
            "{url} answered HTTP 404 (not found): check the repository id and that it holds \
             {file}"
        ),
        Some(code @ (401 | 403)) => format!(
            "{url} answered HTTP {code}: the repository needs authentication; set HF_TOKEN or run \
             `huggingface-cli login`"
        ),
        Some(code) => format!("{url} answered HTTP {code}: {}", chain(e)),
        None => {
            return settings.not_available(
                file,
                &format!(
                    "downloading {url} failed ({}); check the network and HF_ENDPOINT (it is {})",
                    chain(e),
                    settings.hub.endpoint
                ),
            )
        }
    };
    Error::Download {
        repo: settings.repo.clone(),
        file: file.to_owned(),
        reason,
    }
}
