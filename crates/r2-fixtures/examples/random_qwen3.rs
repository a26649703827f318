//! Writes a folder holding a network of Qwen3-0.6B's shape with random weights
//! ([`r2_fixtures::qwen3`]), for `r2 serve --embedding-model-dir DIR` in load benchmarks
//! (`tools/bench-embed-batching.sh`). Does nothing when `DIR/model.safetensors` exists.
//!
//!     cargo run --release -p r2-fixtures --example random_qwen3 -- DIR

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: random_qwen3 DIR");
        std::process::exit(2);
    };
    if dir.join("model.safetensors").is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    // Written under a temporary name and renamed, so an interrupted run leaves no half model.
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    r2_fixtures::qwen3::write_random_qwen3_0_6b_dir(&tmp)?;
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::rename(tmp.join(name), dir.join(name))?;
    }
    std::fs::remove_dir(&tmp)?;
    eprintln!("random_qwen3: wrote {}", dir.display());
    Ok(())
}
