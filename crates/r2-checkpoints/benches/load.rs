//! Loading and validating the converted router (187 heads × 1024 float32), and the conversion
//! from upstream joblib files. Needs `shared/` (see `R2_SHARED_DIR`).

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    let dir = r2_fixtures::converted_router_dir();
    let pool = r2_fixtures::upstream_pool();
    c.bench_function("load_router", |b| {
        b.iter(|| r2_checkpoints::load_router(&dir, &pool).unwrap())
    });
    let upstream = r2_fixtures::upstream_dir();
    let mut group = c.benchmark_group("convert");
    group.sample_size(10);
    group.bench_function("read_upstream_33_joblib_files", |b| {
        b.iter(|| r2_checkpoints::read_upstream(&upstream).unwrap())
    });
    group.finish();
}

criterion_group!(load, benches);
criterion_main!(load);
