//! Speed and memory of the in-process Qwen3 embedder on a network of Qwen3-0.6B's exact shape with
//! random bfloat16 weights (nothing is downloaded). Used by `tools/bench-embed-vs-torch.sh`.
//!
//! - `qwen3_speed write DIR`: writes `config.json` (Qwen3-0.6B's), `tokenizer.json` (the tiny
//!   fixture's byte-level BPE, ids < 512) and a 1.2 GB `model.safetensors` (bfloat16, uniform in
//!   ±0.035, norms at 1) into `DIR` ([`r2_fixtures::qwen3`], as `random_qwen3` does).
//! - `qwen3_speed run DIR [REPS]`: loads `DIR`, then times one text of 32 tokens and a batch of 8
//!   texts of 64 tokens, `REPS` times each (default 5) after one warm-up, and prints one JSON
//!   object a line: the load, each case (median seconds, tokens/s, and per CPU-second of the
//!   process, which a busy machine disturbs less) and the memory (`VmHWM`,
//!   `VmRSS` in KiB) after loading and at the end. `QWEN3_SPEED_ONLY=1x32` (or `8x64`) times
//!   that case alone, e.g. under a profiler.
//! - `qwen3_speed once DIR`: loads `DIR` and embeds one text of 28 tokens (for timing the whole
//!   process from outside).
//!
//! Run with `cargo run --release -p r2-embed --features local --example qwen3_speed -- …`.

use std::path::Path;
use std::time::Instant;

use r2_embed::{Embedder, LocalQwen3Embedder};

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
    Ok(r2_fixtures::qwen3::write_random_qwen3_0_6b_dir(dir)?)
}

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

/// CPU time of this process so far, all threads (a steadier measure than wall time on a shared
/// machine: tokens per CPU-second × cores is the idle machine's throughput at perfect scaling).
fn process_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
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
    let only = std::env::var("QWEN3_SPEED_ONLY").ok();
    for (name, texts, tokens) in [("1x32", &one, 32), ("8x64", &eight, 8 * 64)] {
        if only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        rt.block_on(embedder.embed(texts))?;
        let mut times = Vec::with_capacity(reps);
        let mut cpu_times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let (started, cpu_started) = (Instant::now(), process_cpu_seconds());
            rt.block_on(embedder.embed(texts))?;
            times.push(started.elapsed().as_secs_f64());
            cpu_times.push(process_cpu_seconds() - cpu_started);
        }
        times.sort_by(f64::total_cmp);
        cpu_times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let cpu = cpu_times[cpu_times.len() / 2];
        println!(
            r#"{{"what":"{name}","median_seconds":{median:.4},"tokens_per_second":{:.1},"min_seconds":{:.4},"max_seconds":{:.4},"median_cpu_seconds":{cpu:.4},"tokens_per_cpu_second":{:.1}}}"#,
            tokens as f64 / median,
            times[0],
            times[times.len() - 1],
            tokens as f64 / cpu,
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
