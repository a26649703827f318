//! Loading and validating the converted router (187 heads × 1024 float32), and the conversion
//! from upstream joblib files. Needs `shared/` (see `R2_SHARED_DIR`).

use criterion::{criterion_group, criterion_main, Criterion};
use r2_checkpoints::PoolChoice;

fn benches(c: &mut Criterion) {
    let dir = r2_fixtures::converted_router_dir();
    let pool = r2_fixtures::upstream_pool();
    c.bench_function("load_router", |b| {
        b.iter(|| r2_checkpoints::load_router(&dir, &pool).unwrap())
    });
    let upstream = r2_fixtures::upstream_dir();
    let mut group = c.benchmark_group("convert");
    group.sample_size(10);
    // The shared folder has SHA256SUMS and the release's config.json: every file is hashed.
    group.bench_function("read_upstream_33_joblib_files", |b| {
        b.iter(|| r2_checkpoints::read_upstream(&upstream).unwrap())
    });
    // The same files in a folder that claims nothing (no SHA256SUMS, another config.json): no
    // hashing, so the difference is the cost of the checks.
    let unchecked = tempfile::tempdir().unwrap();
    copy_unclaimed(&upstream, unchecked.path());
    group.bench_function("read_upstream_33_joblib_files_unchecked", |b| {
        b.iter(|| r2_checkpoints::read_upstream(unchecked.path()).unwrap())
    });
    group.bench_function("load_any_upstream_folder", |b| {
        b.iter(|| r2_checkpoints::load_any(&upstream, PoolChoice::FolderOr(&pool)).unwrap())
    });
    group.finish();
}

/// Copies `from` into `to` without `SHA256SUMS` and with a config.json that is not the release's.
fn copy_unclaimed(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_unclaimed(&entry.path(), &target);
        } else if entry.file_name() == "config.json" {
            let mut text = std::fs::read_to_string(entry.path()).unwrap();
            text.push('\n');
            std::fs::write(&target, text).unwrap();
        } else if entry.file_name() != "SHA256SUMS" {
            std::fs::write(&target, std::fs::read(entry.path()).unwrap()).unwrap();
        }
    }
}

criterion_group!(load, benches);
criterion_main!(load);
