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
    r2_fixtures::qwen3::write_random_qwen3_0_6b_dir(dir.path()).expect("writes the model");
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
