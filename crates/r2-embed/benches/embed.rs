//! Benchmarks of the in-process Qwen3 embedder (feature `local`).
//!
//! - `tiny-qwen3`: latency of one short text and of a batch of 8 with the tiny test fixture.
//! - `qwen3-0.6b-random`: forward throughput (tokens/s) of a network with Qwen3-0.6B's exact shape
//!   (hidden 1024, 28 layers, 16 heads, 8 KV heads, head_dim 128, intermediate 3072, vocab 151936)
//!   and random bfloat16 weights written to a temporary folder, so nothing is downloaded. One text
//!   of 32 tokens, and a batch of 8 texts of 64 tokens. Peak RSS (`VmHWM`) is printed to stderr
//!   after loading and after the run.
//!
//! Run with `cargo bench -p r2-embed --no-default-features --features local --bench embed`.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use r2_embed::{Embedder, LocalQwen3Embedder};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
}

/// `VmHWM` (peak resident set) and `VmRSS` from `/proc/self/status`, if available.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| l[key.len()..].trim().to_owned())
            .unwrap_or_else(|| "n/a".to_owned())
    };
    format!(
        "peak RSS (VmHWM) {}, RSS {}",
        field("VmHWM:"),
        field("VmRSS:")
    )
}

fn tiny(c: &mut Criterion) {
    let embedder = LocalQwen3Embedder::from_dir(&r2_fixtures::tiny_qwen3_dir())
        .expect("the tiny fixture loads");
    let rt = runtime();
    let one = vec!["What is the capital of France?".to_owned()];
    let eight: Vec<String> = [
        "Write a Python function to calculate factorial.",
        "Solve the equation: 2x + 5 = 13",
        "What is the capital of France?",
        "Explain the difference between TCP and UDP in two sentences.",
        "A common household pet, this animal is an anagram of act.",
        "Translate 'good morning' into German.",
        "List three prime numbers greater than 100.",
        "Summarize the plot of Hamlet in one line.",
    ]
    .map(String::from)
    .to_vec();

    let mut group = c.benchmark_group("tiny-qwen3");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("one short text", |b| {
        b.iter(|| rt.block_on(embedder.embed(&one)).expect("embeds"))
    });
    group.bench_function("batch of 8", |b| {
        b.iter(|| rt.block_on(embedder.embed(&eight)).expect("embeds"))
    });
    group.finish();
}

/// Qwen3-0.6B's `config.json` (as published), with `vocab_size` and the shapes that matter.
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

/// Writes `model.safetensors` with Qwen3-0.6B's tensors: bfloat16, uniform in ±0.035 (standard
/// deviation 0.02, the config's initializer_range), norms at 1.
fn write_random_qwen3_0_6b(path: &Path) -> std::io::Result<()> {
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

/// A text of exactly `tokens` tokens, cut from English prose starting at `offset`.
fn text_of(embedder: &LocalQwen3Embedder, tokens: usize, offset: usize) -> String {
    const PROSE: &str = "The quick brown fox jumps over the lazy dog while the committee \
        reviews quarterly results, discusses routing budgets for language models, and asks \
        which answer is cheap enough yet still correct. ";
    let mut text = String::new();
    for c in PROSE.chars().cycle().skip(offset) {
        text.push(c);
        let n = embedder.token_ids(&text).expect("tokenizes").len();
        if n == tokens {
            return text;
        }
        assert!(n < tokens, "overshot {tokens} tokens");
    }
    unreachable!()
}

fn qwen3_0_6b(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join("config.json"), QWEN3_0_6B_CONFIG).expect("writes config");
    std::fs::copy(
        r2_fixtures::tiny_qwen3_dir().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copies the tokenizer");
    write_random_qwen3_0_6b(&dir.path().join("model.safetensors")).expect("writes weights");
    eprintln!("qwen3-0.6b-random: before loading: {}", memory());
    let started = std::time::Instant::now();
    let embedder = LocalQwen3Embedder::from_dir(dir.path()).expect("the random model loads");
    eprintln!(
        "qwen3-0.6b-random: loaded in {:.1?}: {}",
        started.elapsed(),
        memory()
    );
    assert_eq!(embedder.dim(), 1024);

    let rt = runtime();
    let one = vec![text_of(&embedder, 32, 0)];
    let eight: Vec<String> = (0..8).map(|i| text_of(&embedder, 64, 7 * i)).collect();

    let mut group = c.benchmark_group("qwen3-0.6b-random");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(32));
    group.bench_function("1 x 32 tokens", |b| {
        b.iter(|| rt.block_on(embedder.embed(&one)).expect("embeds"))
    });
    group.throughput(Throughput::Elements(8 * 64));
    group.bench_function("8 x 64 tokens", |b| {
        b.iter(|| rt.block_on(embedder.embed(&eight)).expect("embeds"))
    });
    group.finish();
    eprintln!("qwen3-0.6b-random: after the run: {}", memory());
}

criterion_group!(benches, tiny, qwen3_0_6b);
criterion_main!(benches);
