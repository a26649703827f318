//! Routes the golden embeddings in a loop, for profilers (`valgrind --tool=callgrind`, `perf`).
//! `cargo run --release -p r2-core --example profile_route -- one|batch ITER [LAMBDA] [THREADS]`
use r2_core::{RouteParams, Router};

/// CPU time of the whole process so far (ns), from /proc (robust to a shared, oversubscribed machine).
fn cpu_ns(threads: usize) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let mut ns = ticks * 1e7;
    // Finer: the sum of every thread's schedstat run time.
    // (Exited threads leave /proc/self/task, so several threads are counted in ticks.)
    if threads > 1 {
        return ns;
    }
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        let mut sum = 0.0;
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            sum += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        if sum > 0.0 {
            ns = sum;
        }
    }
    ns
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("one");
    let iters: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(1000);
    let lambda: f64 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(0.99999);
    let threads: usize = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(1);
    let router: Router = r2_fixtures::upstream_router();
    let inputs = r2_fixtures::golden_inputs();
    let params = RouteParams::new(lambda);
    let start = std::time::Instant::now();
    let cpu0 = cpu_ns(threads);
    let mut sink = 0usize;
    match mode {
        "batch" => {
            let n = 4096;
            let mut xs = Vec::with_capacity(n * router.dim());
            let mut ts = Vec::with_capacity(n);
            for i in 0..n {
                let g = &inputs[i % inputs.len()];
                xs.extend_from_slice(&g.embedding);
                ts.push(g.input_tokens + i as u64 % 50);
            }
            for _ in 0..iters {
                let d = router
                    .route_batch_parallel(&xs, &ts, &params, threads)
                    .unwrap();
                sink += d[0].choice.model;
            }
            let per = start.elapsed().as_secs_f64() / iters as f64;
            let cpu = (cpu_ns(threads) - cpu0) / 1e9 / iters as f64;
            println!(
                "batch: {:.2} ms wall, {:.0} q/s wall; {:.2} ms CPU ({:.0} q/s per CPU-second) ({sink})",
                per * 1e3,
                n as f64 / per,
                cpu * 1e3,
                n as f64 / cpu
            );
        }
        _ => {
            for i in 0..iters {
                let g = &inputs[i % inputs.len()];
                sink += router
                    .route(&g.embedding, g.input_tokens, &params)
                    .unwrap()
                    .choice
                    .model;
            }
            let per = start.elapsed().as_secs_f64() / iters as f64;
            let cpu = (cpu_ns(threads) - cpu0) / 1e9 / iters as f64;
            println!(
                "one: {:.2} µs wall, {:.2} µs CPU ({sink})",
                per * 1e6,
                cpu * 1e6
            );
        }
    }
}
