//! A network of Qwen3-0.6B's exact shape (hidden 1024, 28 layers, 16 heads, 8 KV heads, head_dim
//! 128, intermediate 3072, vocab 151936) with random bfloat16 weights, for benchmarks of the
//! in-process embedder without downloading the real model: the same work per token, meaningless
//! vectors. The tokenizer is the tiny fixture's (ids below 512, within the vocabulary).

use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `config.json`, `tokenizer.json` (the tiny fixture's) and `model.safetensors` (random,
/// deterministic, 1.2 GB) into `dir`, which must exist.
pub fn write_random_qwen3_0_6b_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("config.json"), QWEN3_0_6B_CONFIG)?;
    std::fs::copy(
        crate::tiny_qwen3_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )?;
    write_random_qwen3_0_6b(&dir.join("model.safetensors"))
}

/// Qwen3-0.6B's `config.json` (as published), with `vocab_size` and the shapes that matter.
pub const QWEN3_0_6B_CONFIG: &str = r#"{
  "architectures": ["Qwen3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 1024,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "max_position_embeddings": 40960,
  "max_window_layers": 28,
  "model_type": "qwen3",
  "num_attention_heads": 16,
  "num_hidden_layers": 28,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": null,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;

/// Writes `model.safetensors` with Qwen3-0.6B's tensors: bfloat16, uniform in ±0.035 (standard
/// deviation 0.02, the config's initializer_range), norms at 1.
pub fn write_random_qwen3_0_6b(path: &Path) -> std::io::Result<()> {
    let (vocab, h, inter, layers, nh, nkv, d) = (151_936, 1024, 3072, 28, 16, 8, 128);
    let mut tensors: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![vocab, h])];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        tensors.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![nh * d, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![nkv * d, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![nkv * d, h]),
            (format!("{p}.self_attn.q_norm.weight"), vec![d]),
            (format!("{p}.self_attn.k_norm.weight"), vec![d]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, nh * d]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![inter, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![inter, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, inter]),
        ]);
    }
    tensors.push(("model.norm.weight".into(), vec![h]));

    let mut header = String::from("{");
    let mut offset = 0usize;
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let bytes = shape.iter().product::<usize>() * 2;
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""{name}":{{"dtype":"BF16","shape":{shape:?},"data_offsets":[{offset},{}]}}"#,
            offset + bytes
        ));
        offset += bytes;
    }
    header.push('}');
    let padded = header.len().next_multiple_of(8);
    header.extend(std::iter::repeat_n(' ', padded - header.len()));

    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = Vec::with_capacity(1 << 20);
    for (name, shape) in &tensors {
        let n: usize = shape.iter().product();
        let is_norm = name.ends_with("norm.weight");
        for _ in 0..n {
            let value = if is_norm {
                1.0f32
            } else {
                // xorshift64*, then a uniform value in [-0.035, 0.035).
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
                (r as f32 / (1u64 << 24) as f32 - 0.5) * 0.07
            };
            buf.extend_from_slice(&((value.to_bits() >> 16) as u16).to_le_bytes());
            if buf.len() >= 1 << 20 {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
    }
    out.write_all(&buf)?;
    out.flush()
}
