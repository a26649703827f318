//! On generated data with known structure (a strong model whose quality saturates at short
//! budgets), the budget-aware R2 router beats the point-based router, and the oracle beats both.
//! Also: evaluation routes exactly as `r2_core::Router::route` does.

use r2_checkpoints::PoolConfig;
use r2_core::{Budget, RouteParams};
use r2_train::eval::{point_based, CurveKind};
use r2_train::synth::{self, SynthConfig};
use r2_train::{EvalOptions, LoadOptions, SplitFilter, TrainOptions};

struct World {
    _dir: tempfile::TempDir,
    router: r2_core::Router,
    test: r2_train::Dataset,
}

fn world(seed: u64) -> World {
    let dir = tempfile::tempdir().unwrap();
    let files = synth::write(
        &SynthConfig {
            queries: 2000,
            budgets: vec![10, 20, 50, 100, 200, 500, 1000],
            dim: 32,
            seed,
            test_fraction: 0.3,
            score_samples: 4,
            ..SynthConfig::default()
        },
        dir.path(),
    )
    .unwrap();
    let pool = PoolConfig::from_file(&files.pool).unwrap();
    let models: Vec<String> = pool.models.iter().map(|m| m.name.clone()).collect();
    let load = |split| {
        r2_train::load(
            &files.records,
            &LoadOptions {
                models: &models,
                models_source: "pool.json",
                budgets: None,
                split,
                embeddings: files.embeddings.as_deref(),
                dim: Some(pool.embedding_dim),
            },
        )
        .unwrap()
    };
    let train = load(SplitFilter::Train);
    let test = load(SplitFilter::Test);
    assert!(train.queries.len() > 1200 && test.queries.len() > 450);
    let trained = r2_train::train(
        train,
        &TrainOptions {
            alpha: 10.0,
            threads: 2,
            embedding_model: None,
            source: None,
        },
    )
    .unwrap();
    let path = dir.path().join("router.safetensors");
    trained.file.write(&path).unwrap();
    let router = r2_checkpoints::load_router(&path, &pool).unwrap();
    World {
        _dir: dir,
        router,
        test,
    }
}

#[test]
fn r2_beats_point_based_and_the_oracle_beats_both() {
    for seed in [42, 4] {
        let w = world(seed);
        let report = r2_train::evaluate(
            &w.router,
            &w.test,
            &EvalOptions {
                interpolate: 2,
                threads: 2,
                ..EvalOptions::default()
            },
        )
        .unwrap();
        let audc = |kind| report.curve(kind).unwrap().audc;
        let (r2, pb, oracle) = (
            audc(CurveKind::Router),
            audc(CurveKind::PointBased),
            audc(CurveKind::Oracle),
        );
        eprintln!("seed {seed}:\n{}", report.to_text());
        assert!(
            r2 > pb + 0.01,
            "seed {seed}: R2 AUDC {r2} vs point-based {pb}"
        );
        assert!(
            oracle > r2 && oracle > pb,
            "seed {seed}: oracle AUDC {oracle}"
        );
        let r2_curve = report.curve(CurveKind::Router).unwrap();
        let pb_curve = report.curve(CurveKind::PointBased).unwrap();
        // Budgets reach far cheaper answers than any model's unbudgeted answer.
        assert!(r2_curve.min_cost < pb_curve.min_cost);
        assert_eq!(report.lambdas.len(), 101);
        assert_eq!(report.interpolated_budgets, 7 + 6 * 2);
        // Every single model is one point whose AUDC is its quality.
        let singles: Vec<_> = report
            .curves
            .iter()
            .filter(|c| c.kind == CurveKind::Single)
            .collect();
        assert_eq!(singles.len(), 11);
        for s in singles {
            assert_eq!(s.audc, s.points[0].quality);
        }
        // The best single model's QNC is 1, and the oracle gets there for a fraction of its cost.
        let best = report
            .curves
            .iter()
            .find(|c| c.model.as_deref() == Some(report.best_single.model.as_str()))
            .unwrap();
        assert_eq!(best.qnc, Some(1.0));
        assert!(report.curve(CurveKind::Oracle).unwrap().qnc.unwrap() < 0.2);
    }
}

#[test]
fn evaluation_routes_like_the_router_and_is_thread_count_independent() {
    let w = world(7);
    let data = &w.test;
    let router = &w.router;
    let b = router.budgets().len();
    let pb = point_based(router).unwrap();
    let grid = router.budget_grid(0);
    for q in (0..data.queries.len()).step_by(37) {
        let x = data.embedding(q);
        let heads = router.head_outputs(x).unwrap();
        let pb_heads = pb.head_outputs(x).unwrap();
        for m in 0..router.models().len() {
            assert_eq!(pb_heads[2 * m], heads[m * (b + 2) + b]);
            assert_eq!(pb_heads[2 * m + 1], heads[m * (b + 2) + b + 1]);
        }
        for lambda in [0.0, 0.5, 0.99, 0.999, 0.9999, 1.0] {
            let params = RouteParams::new(lambda);
            let t = data.queries[q].input_tokens;
            let via_heads = router.route_heads(&heads, t, &params, &grid).unwrap();
            assert_eq!(via_heads, router.route(x, t, &params).unwrap());
            assert_eq!(
                router.route_interpolated(x, t, &params, 0).unwrap(),
                via_heads
            );
            let pb_choice = pb.route(x, t, &params).unwrap().choice;
            assert_eq!(pb_choice.budget, Budget::Unlimited);
        }
    }
    let options = |threads| EvalOptions {
        lambda_points: 21,
        interpolate: 1,
        threads,
        ..EvalOptions::default()
    };
    let one = r2_train::evaluate(router, data, &options(1)).unwrap();
    let three = r2_train::evaluate(router, data, &options(3)).unwrap();
    assert_eq!(
        serde_json::to_string(&one).unwrap(),
        serde_json::to_string(&three).unwrap()
    );
    // Explicit λ values are sorted and deduplicated; λ outside [0, 1] is refused.
    let explicit = r2_train::evaluate(
        router,
        data,
        &EvalOptions {
            lambdas: Some(vec![1.0, 0.0, 0.5, 0.5]),
            ..EvalOptions::default()
        },
    )
    .unwrap();
    assert_eq!(explicit.lambdas, vec![0.0, 0.5, 1.0]);
    assert!(r2_train::evaluate(
        router,
        data,
        &EvalOptions {
            lambdas: Some(vec![1.5]),
            ..EvalOptions::default()
        },
    )
    .is_err());
}
