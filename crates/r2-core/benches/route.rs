//! Routing speed on the released R2-Router heads (11 models × 17 heads over 1024-d embeddings).
//!
//! Needs `shared/` (see `R2_SHARED_DIR`): the upstream checkpoints are converted on first use.
//! Run with `cargo bench -p r2-core`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use r2_core::{RouteParams, Router};

fn golden_batch(n: usize, dim: usize) -> (Vec<f64>, Vec<u64>) {
    let inputs = r2_fixtures::golden_inputs();
    let mut embeddings = Vec::with_capacity(n * dim);
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let g = &inputs[i % inputs.len()];
        embeddings.extend_from_slice(&g.embedding);
        tokens.push(g.input_tokens + i as u64 % 50);
    }
    (embeddings, tokens)
}

fn route_one(c: &mut Criterion, router: &Router) {
    let inputs = r2_fixtures::golden_inputs();
    let mut group = c.benchmark_group("route_one");
    for lambda in [0.0, 0.99999] {
        let params = RouteParams::new(lambda);
        group.bench_with_input(BenchmarkId::new("lambda", lambda), &params, |b, params| {
            let mut i = 0;
            b.iter(|| {
                let g = &inputs[i % inputs.len()];
                i += 1;
                router.route(&g.embedding, g.input_tokens, params).unwrap()
            })
        });
    }
    let ranked = RouteParams::new(0.99999).with_ranked(true);
    group.bench_function("ranked_176_options", |b| {
        b.iter(|| router.route(&inputs[0].embedding, 10, &ranked).unwrap())
    });
    group.finish();
}

fn route_batch(c: &mut Criterion, router: &Router) {
    const N: usize = 4096;
    let (embeddings, tokens) = golden_batch(N, router.dim());
    let mut group = c.benchmark_group("route_batch_4096");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(20);
    for lambda in [0.0, 0.99999] {
        let params = RouteParams::new(lambda);
        for threads in [1, 2] {
            let id = BenchmarkId::new(format!("lambda_{lambda}"), format!("{threads}_threads"));
            group.bench_function(id, |b| {
                b.iter(|| {
                    router
                        .route_batch_parallel(&embeddings, &tokens, &params, threads)
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let router = r2_fixtures::upstream_router();
    route_one(c, &router);
    route_batch(c, &router);
}

criterion_group!(route, benches);
criterion_main!(route);
