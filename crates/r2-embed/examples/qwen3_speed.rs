//! Speed and memory of the in-process Qwen3 embedder on a network of Qwen3-0.6B's exact shape with
//! random bfloat16 weights (nothing is downloaded). Used by `tools/bench-embed-vs-torch.sh`.
//!
//! - `qwen3_speed write DIR`: writes `config.json` (Qwen3-0.6B's), `tokenizer.json` (the tiny
//!   fixture's byte-level BPE, ids < 512) and a 1.2 GB `model.safetensors` (bfloat16, uniform in
//!   ±0.035, norms at 1) into `DIR`.
//! - `qwen3_speed run DIR [REPS]`: loads `DIR`, then times one text of 32 tokens and a batch of 8
//!   texts of 64 tokens, `REPS` times each (default 5) after one warm-up, and prints one JSON
//!   object a line: the load, each case (median seconds, tokens/s) and the memory (`VmHWM`,
//!   `VmRSS` in KiB) after loading and at the end.
//! - `qwen3_speed once DIR`: loads `DIR` and embeds one text of 28 tokens (for timing the whole
//!   process from outside).
//!
//! Run with `cargo run --release -p r2-embed --features local --example qwen3_speed -- …`.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use r2_embed::{Embedder, LocalQwen3Embedder};

/// Qwen3-0.6B's `config.json` (as published).
const QWEN3_0_6B_CONFIG: &str = r#"{
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["write", dir] => write(Path::new(dir)),
        ["run", dir] => run(Path::new(dir), 5),
        ["run", dir, reps] => run(Path::new(dir), reps.parse()?),
        ["once", dir] => once(Path::new(dir)),
        _ => Err("usage: qwen3_speed write DIR | run DIR [REPS] | once DIR".into()),
    }
}

fn write(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), QWEN3_0_6B_CONFIG)?;
    std::fs::copy(
        r2_fixtures::tiny_qwen3_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )?;
    write_weights(&dir.join("model.safetensors"))?;
    Ok(())
}

/// Writes `model.safetensors` with Qwen3-0.6B's tensors: bfloat16, uniform in ±0.035 (standard
/// deviation 0.02, the config's initializer_range), norms at 1.
fn write_weights(path: &Path) -> std::io::Result<()> {
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

    let mut header = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut offset = 0usize;
    for (name, shape) in &tensors {
        let bytes = shape.iter().product::<usize>() * 2;
        header.push_str(&format!(
            r#","{name}":{{"dtype":"BF16","shape":{shape:?},"data_offsets":[{offset},{}]}}"#,
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

/// `VmHWM` and `VmRSS` in KiB from `/proc/self/status` (0 where unavailable).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A text of exactly `tokens` tokens, cut from English prose starting at `offset`.
fn text_of(embedder: &LocalQwen3Embedder, tokens: usize, offset: usize) -> Result<String, String> {
    const PROSE: &str = "The quick brown fox jumps over the lazy dog while the committee \
        reviews quarterly results, discusses routing budgets for language models, and asks \
        which answer is cheap enough yet still correct. ";
    let mut text = String::new();
    for c in PROSE.chars().cycle().skip(offset).take(100 * tokens) {
        text.push(c);
        let n = embedder.token_ids(&text).map_err(|e| e.to_string())?.len();
        if n == tokens {
            return Ok(text);
        }
    }
    Err(format!("no text of exactly {tokens} tokens"))
}

fn load(dir: &Path) -> Result<(LocalQwen3Embedder, f64), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let embedder = LocalQwen3Embedder::from_dir(dir)?;
    Ok((embedder, started.elapsed().as_secs_f64()))
}

fn run(dir: &Path, reps: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (embedder, load_s) = load(dir)?;
    let (hwm, rss) = memory_kib();
    println!(r#"{{"what":"load","seconds":{load_s:.4},"hwm_kib":{hwm},"rss_kib":{rss}}}"#);
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let one = vec![text_of(&embedder, 32, 0)?];
    let eight = (0..8)
        .map(|i| text_of(&embedder, 64, 7 * i))
        .collect::<Result<Vec<_>, _>>()?;
    for (name, texts, tokens) in [("1x32", &one, 32), ("8x64", &eight, 8 * 64)] {
        rt.block_on(embedder.embed(texts))?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let started = Instant::now();
            rt.block_on(embedder.embed(texts))?;
            times.push(started.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            r#"{{"what":"{name}","median_seconds":{median:.4},"tokens_per_second":{:.1},"min_seconds":{:.4},"max_seconds":{:.4}}}"#,
            tokens as f64 / median,
            times[0],
            times[times.len() - 1]
        );
    }
    let (hwm, rss) = memory_kib();
    println!(r#"{{"what":"end","hwm_kib":{hwm},"rss_kib":{rss}}}"#);
    Ok(())
}

fn once(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let (embedder, load_s) = load(dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let text = vec![text_of(&embedder, 28, 0)?];
    let started = Instant::now();
    let v = rt.block_on(embedder.embed(&text))?;
    let (hwm, rss) = memory_kib();
    println!(
        r#"{{"what":"once","load_seconds":{load_s:.4},"embed_seconds":{:.4},"dim":{},"hwm_kib":{hwm},"rss_kib":{rss}}}"#,
        started.elapsed().as_secs_f64(),
        v[0].len()
    );
    Ok(())
}
