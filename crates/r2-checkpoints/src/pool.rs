//! The model pool config: which LLMs a router chooses between, their prices and OpenRouter ids.
//!
//! The format is upstream's `config.json`, so an upstream config can be used as it is:
//!
//! ```json
//! {
//!   "embedding_model": "Qwen/Qwen3-0.6B",
//!   "embedding_dim": 1024,
//!   "default_lambda": 0.99999,
//!   "models": {
//!     "GLM-4.5-Air": {
//!       "openrouter_id": "z-ai/glm-4.5-air",
//!       "input_price_per_million": 0.13,
//!       "output_price_per_million": 0.85,
//!       "available": true
//!     }
//!   }
//! }
//! ```
//!
//! Models are kept in file order, which is the pool order that breaks ties between equal risks.
//! Unknown keys (`router_name`, `token_limits`, `note`, …) are accepted and ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One model of the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolModel {
    /// The model's name (the key in `models`).
    #[serde(skip)]
    pub name: String,
    /// The model id on OpenRouter (or any OpenAI-compatible API).
    pub openrouter_id: String,
    /// USD per million input tokens.
    pub input_price_per_million: f64,
    /// USD per million output tokens.
    pub output_price_per_million: f64,
    /// Whether the model is served on OpenRouter (upstream routes to self-hosted models too).
    #[serde(default = "yes")]
    pub available: bool,
    /// Upstream's folder of this model's joblib files (only the converter reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<String>,
}

fn yes() -> bool {
    true
}

/// A model pool and the routing defaults that go with it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Where the config was read from (for error messages), or a label for built-in configs.
    pub source: PathBuf,
    /// The embedding model the router's heads were trained on.
    pub embedding_model: String,
    /// Length of the embeddings.
    pub embedding_dim: usize,
    /// λ used when the caller gives none.
    pub default_lambda: f64,
    /// The models, in pool order.
    pub models: Vec<PoolModel>,
}

#[derive(Deserialize)]
struct RawConfig {
    embedding_model: String,
    embedding_dim: usize,
    default_lambda: f64,
    models: Models,
}

/// The `models` object, read in file order straight into models, so a bad value is reported
/// with its line and column.
struct Models(Vec<PoolModel>);

impl<'de> Deserialize<'de> for Models {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Models;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object mapping model names to their settings")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Models, A::Error> {
                let mut models: Vec<PoolModel> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if models.iter().any(|m| m.name == name) {
                        return Err(serde::de::Error::custom(format!(
                            "model `{name}` is listed twice"
                        )));
                    }
                    let mut model: PoolModel = map.next_value().map_err(|e| {
                        serde::de::Error::custom(format!(
                            "model `{name}`: {}",
                            without_position(&e)
                        ))
                    })?;
                    model.name = name;
                    models.push(model);
                }
                Ok(Models(models))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A serde_json error message without its " at line L column C" tail.
pub(crate) fn without_position(e: &dyn std::fmt::Display) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_owned(),
        None => message,
    }
}

impl PoolConfig {
    /// Reads a pool config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, "cannot read pool config", e))?;
        Self::from_json(&text, path)
    }

    /// Parses a pool config; `source` names it in errors.
    pub fn from_json(text: &str, source: &Path) -> Result<Self> {
        // A byte-order mark (as some editors write) is not JSON; positions stay those of the file.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| Error::json(source, &e))?;
        let invalid = |message: String| Error::InvalidConfig {
            path: source.to_path_buf(),
            message,
        };
        if raw.embedding_dim == 0 {
            return Err(invalid("`embedding_dim` must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&raw.default_lambda) {
            return Err(invalid(format!(
                "`default_lambda` must be in [0, 1], got {}",
                raw.default_lambda
            )));
        }
        let models = raw.models.0;
        if models.is_empty() {
            return Err(invalid(
                "`models` is empty: the pool needs at least one model".into(),
            ));
        }
        for model in &models {
            let name = &model.name;
            for (what, price) in [
                ("input_price_per_million", model.input_price_per_million),
                ("output_price_per_million", model.output_price_per_million),
            ] {
                if !(price.is_finite() && price >= 0.0) {
                    return Err(invalid(format!(
                        "model `{name}`: `{what}` must be a finite number ≥ 0 (USD per million tokens), got {price}"
                    )));
                }
            }
        }
        Ok(Self {
            source: source.to_path_buf(),
            embedding_model: raw.embedding_model,
            embedding_dim: raw.embedding_dim,
            default_lambda: raw.default_lambda,
            models,
        })
    }

    /// The model called `name`.
    pub fn model(&self, name: &str) -> Option<&PoolModel> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The pool as a config file in upstream's `config.json` format (models in pool order), which
    /// [`PoolConfig::from_json`] reads back to the same pool. Keys r2 does not use (`note`,
    /// `token_limits`, …) are not kept.
    pub fn to_json(&self) -> String {
        let mut models = serde_json::Map::new();
        for model in &self.models {
            models.insert(
                model.name.clone(),
                serde_json::to_value(model).expect("a pool model serialises"),
            );
        }
        let config = serde_json::json!({
            "embedding_model": self.embedding_model,
            "embedding_dim": self.embedding_dim,
            "default_lambda": self.default_lambda,
            "models": models,
        });
        let mut text = serde_json::to_string_pretty(&config).expect("a pool config serialises");
        text.push('\n');
        text
    }

    /// Writes [`PoolConfig::to_json`] to `path` atomically (a temporary file in the same folder,
    /// read back, then renamed), so a failed write leaves the file already at `path` untouched.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::format::write_atomic(
            path,
            self.to_json().as_bytes(),
            &crate::format::WriteActions {
                write: "cannot write pool config",
                read_back: "cannot read back the pool config",
                rename: "cannot move pool config into place",
            },
        )
    }
}
