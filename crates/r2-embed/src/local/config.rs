//! `config.json` of a Qwen3 checkpoint: the fields the forward pass needs, checked.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Error, Result};

/// The shape and constants of a Qwen3 network, as read from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Qwen3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub attention_bias: bool,
}

impl Qwen3Config {
    /// Reads and checks `path`; every error names the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Model {
            path: path.to_path_buf(),
            reason: format!("cannot read the model config: {e}"),
        })?;
        Self::from_json(path, &text)
    }

    /// Parses and checks the text of a `config.json`; `path` is only used in errors.
    pub fn from_json(path: &Path, text: &str) -> Result<Self> {
        let fail = |reason: String| Error::Model {
            path: path.to_path_buf(),
            reason,
        };
        let value: Value =
            serde_json::from_str(text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| fail("expected a JSON object".to_owned()))?;
        let fields = Fields {
            path: path.to_path_buf(),
            obj,
        };

        if let Some(model_type) = fields.opt_str("model_type")? {
            if model_type != "qwen3" {
                return Err(fail(format!(
                    "model_type is \"{model_type}\", but only Qwen3 checkpoints (\"qwen3\") are \
                     supported"
                )));
            }
        }
        if let Some(act) = fields.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(fail(format!(
                    "hidden_act is \"{act}\", but Qwen3 uses \"silu\""
                )));
            }
        }
        if fields.opt_bool("use_sliding_window")? == Some(true) {
            return Err(fail(
                "use_sliding_window is true: sliding-window attention is not supported".to_owned(),
            ));
        }
        if let Some(scaling) = obj.get("rope_scaling") {
            if !scaling.is_null() && !is_default_rope(scaling) {
                return Err(fail(format!(
                    "rope_scaling is {scaling}: only the default rotary embedding is supported"
                )));
            }
        }
        let rope_parameters = obj.get("rope_parameters").filter(|v| !v.is_null());
        if let Some(params) = rope_parameters {
            if !is_default_rope(params) {
                return Err(fail(format!(
                    "rope_parameters is {params}: only the default rotary embedding is supported"
                )));
            }
        }

        let hidden_size = fields.usize("hidden_size")?;
        let num_attention_heads = fields.usize("num_attention_heads")?;
        let num_key_value_heads = fields
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        let head_dim = match fields.opt_usize("head_dim")? {
            Some(d) => d,
            None => hidden_size / num_attention_heads,
        };
        // Transformers 5 moved rope_theta into rope_parameters; 10000 is its default for Qwen3.
        let rope_theta = match fields.opt_f64("rope_theta")? {
            Some(theta) => theta,
            None => match rope_parameters.and_then(|p| p.get("rope_theta")) {
                Some(v) => v.as_f64().ok_or_else(|| {
                    fail(format!(
                        "rope_parameters.rope_theta is {v}, expected a number"
                    ))
                })?,
                None => 10_000.0,
            },
        };
        let config = Self {
            vocab_size: fields.usize("vocab_size")?,
            hidden_size,
            intermediate_size: fields.usize("intermediate_size")?,
            num_hidden_layers: fields.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: fields
                .opt_usize("max_position_embeddings")?
                .unwrap_or(32_768),
            rms_norm_eps: fields.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            attention_bias: fields.opt_bool("attention_bias")?.unwrap_or(false),
        };
        config.check().map_err(fail)?;
        Ok(config)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.head_dim == 0 || self.head_dim % 2 == 1 {
            return Err(format!(
                "head_dim is {}: it must be a positive even number (the rotary embedding rotates \
                 pairs)",
                self.head_dim
            ));
        }
        if self.group_size() * self.num_key_value_heads != self.num_attention_heads {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "rms_norm_eps is {}: it must be a positive number",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!(
                "rope_theta is {}: it must be a positive number",
                self.rope_theta
            ));
        }
        if self.vocab_size > u32::MAX as usize {
            return Err(format!(
                "vocab_size {} does not fit token ids",
                self.vocab_size
            ));
        }
        Ok(())
    }

    /// Heads of queries per head of keys and values.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// A short description of the shape, for error messages.
    pub fn describe(&self) -> String {
        format!(
            "vocab_size {}, hidden_size {}, intermediate_size {}, num_attention_heads {}, \
             num_key_value_heads {}, head_dim {}",
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim
        )
    }
}

fn is_default_rope(v: &Value) -> bool {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str);
    matches!(kind, None | Some("default"))
}

struct Fields<'a> {
    path: PathBuf,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn fail(&self, reason: String) -> Error {
        Error::Model {
            path: self.path.clone(),
            reason,
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.fail(format!("field `{key}` is missing")))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(self.fail(format!("field `{key}` is {v}, expected a positive integer"))),
            },
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.fail(format!("field `{key}` is {v}, expected a number"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.fail(format!("field `{key}` is {v}, expected true or false"))),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.fail(format!("field `{key}` is {v}, expected a string"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Qwen3Config> {
        Qwen3Config::from_json(Path::new("dir/config.json"), text)
    }

    #[test]
    fn defaults_follow_transformers() {
        let c = parse(
            r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2}"#,
        )
        .unwrap();
        assert_eq!(c.num_key_value_heads, 2);
        assert_eq!(c.head_dim, 4);
        assert_eq!(c.rope_theta, 10_000.0);
        assert_eq!(c.rms_norm_eps, 1e-6);
        assert!(!c.attention_bias);
    }

    #[test]
    fn rope_theta_from_rope_parameters() {
        let c = parse(
            r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2,
                "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0}}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 5000.0);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = parse(r#"{"vocab_size": 10}"#).unwrap_err().to_string();
        assert!(
            e.contains("dir/config.json") && e.contains("hidden_size"),
            "{e}"
        );
        let e = parse(
            r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2,
                "head_dim": 4}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
        let e = parse(r#"{"model_type": "llama"}"#).unwrap_err().to_string();
        assert!(e.contains("llama"), "{e}");
        let e = parse(
            r#"{"vocab_size": 10, "hidden_size": -8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("hidden_size") && e.contains("-8"), "{e}");
    }
}
