//! Routing semantics, the batch path's equality with the single-query path, and error handling,
//! on small synthetic routers.

use r2_core::{Budget, Error, HeadKind, ModelHeads, RouteParams, Router};

/// A small deterministic generator (xorshift64*), so the tests need no crates.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn symmetric(&mut self, scale: f64) -> f64 {
        (2.0 * self.next_f64() - 1.0) * scale
    }
}

/// A random router: `models` models over `dim`-d embeddings with the given budgets. Quality heads
/// centre near 0.5 and token heads near a few hundred tokens, like the released checkpoints.
fn random_router(rng: &mut Rng, dim: usize, budgets: &[u32], models: usize) -> Router {
    let per_model = budgets.len() + 2;
    let heads = (0..models)
        .map(|m| {
            let mut coef = Vec::with_capacity(per_model * dim);
            let mut intercept = Vec::with_capacity(per_model);
            for k in 0..per_model {
                let scale = if k == per_model - 1 { 300.0 } else { 0.4 };
                coef.extend((0..dim).map(|_| rng.symmetric(scale) as f32));
                let base = if k == per_model - 1 { 400.0 } else { 0.5 };
                intercept.push((base + rng.symmetric(scale / 2.0)) as f32);
            }
            ModelHeads {
                name: format!("model-{m}"),
                input_price_per_million: 0.01 + rng.next_f64(),
                output_price_per_million: 0.02 + 2.0 * rng.next_f64(),
                coef,
                intercept,
            }
        })
        .collect();
    Router::new(dim, budgets.to_vec(), heads).expect("valid random router")
}

fn unit_embedding(rng: &mut Rng, dim: usize) -> Vec<f64> {
    let v: Vec<f64> = (0..dim).map(|_| rng.symmetric(1.0) as f32 as f64).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| (x / norm) as f32 as f64).collect()
}

const LAMBDAS: [f64; 9] = [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999, 1.0];

#[test]
fn batch_decisions_equal_single_query_decisions_bit_for_bit() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let router = random_router(&mut rng, 64, &[10, 50, 200, 1000], 6);
    let n = 700; // more than one screening block
    let embeddings: Vec<f64> = (0..n).flat_map(|_| unit_embedding(&mut rng, 64)).collect();
    let tokens: Vec<u64> = (0..n).map(|i| (i as u64 * 37) % 3000).collect();
    let mask = router
        .model_mask(&["model-1", "model-3", "model-4"])
        .unwrap();
    for lambda in LAMBDAS {
        let variants = [
            RouteParams::new(lambda),
            RouteParams::new(lambda).with_candidates(mask.clone()),
            RouteParams::new(lambda).with_max_cost(0.0012),
            RouteParams::new(lambda).with_max_cost(0.004),
        ];
        for params in variants {
            let single: Vec<_> = embeddings
                .chunks(64)
                .zip(&tokens)
                .map(|(x, &t)| router.route(x, t, &params))
                .collect();
            let all_ok = single.iter().all(Result::is_ok);
            for threads in [1, 3] {
                let batch = router.route_batch_parallel(&embeddings, &tokens, &params, threads);
                if all_ok {
                    let batch = batch.unwrap();
                    for (i, (s, b)) in single.iter().zip(&batch).enumerate() {
                        assert_eq!(s.as_ref().unwrap(), b, "query {i}, λ {lambda}, {params:?}");
                    }
                } else {
                    // The batch stops at the first query that has no option, and names it.
                    let first = single.iter().position(Result::is_err).unwrap();
                    match batch.unwrap_err() {
                        Error::NothingWithinMaxCost { query, .. } => assert_eq!(query, first),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        }
    }
}

#[test]
fn the_decision_follows_upstream_formulas() {
    // One model, 2-d, budgets [10, 100]; heads: q10, q100, q_unlimited, tokens.
    let heads = ModelHeads {
        name: "m".into(),
        input_price_per_million: 2.0,
        output_price_per_million: 8.0,
        coef: vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 100.0, 0.0],
        intercept: vec![0.0, 0.25, 0.0, -50.0],
    };
    let router = Router::new(2, vec![10, 100], vec![heads]).unwrap();
    let x = [0.6, 1.2];
    let d = router
        .route(&x, 30, &RouteParams::new(0.25).with_ranked(true))
        .unwrap();
    let input_cost = 30.0 * 2.0 / 1e6;
    // q10 = 0.6; q100 = clip(1.45) = 1; q_unl = 0.9, tokens = max(0, 60 − 50) = 10.
    let expect = [
        (Budget::Tokens(10), 0.6, 10.0),
        (Budget::Tokens(100), 1.0, 100.0),
        (Budget::Unlimited, 0.9, 10.0),
    ];
    for (budget, quality, tokens) in expect {
        let o = d.ranked.iter().find(|o| o.budget == budget).unwrap();
        let cost = input_cost + tokens * 8.0 / 1e6;
        assert!((o.quality - quality).abs() < 1e-12, "{budget}: {o:?}");
        assert_eq!(o.output_tokens, tokens);
        assert!((o.cost - cost).abs() < 1e-18, "{budget}: {o:?}");
        assert!((o.risk - (0.75 * quality - 0.25 * cost)).abs() < 1e-12);
    }
    assert_eq!(d.choice.budget, Budget::Tokens(100));
    assert_eq!(d.ranked[0], d.choice);
    assert!(d.ranked.windows(2).all(|w| w[0].risk >= w[1].risk));

    // Negative predicted tokens cost nothing beyond the input.
    let d = router
        .route(&[0.1, 0.0], 0, &RouteParams::new(1.0).with_ranked(true))
        .unwrap();
    let unlimited = d
        .ranked
        .iter()
        .find(|o| o.budget == Budget::Unlimited)
        .unwrap();
    assert_eq!(unlimited.output_tokens, 0.0);
    assert_eq!(unlimited.cost, 0.0);
    assert_eq!(d.choice.budget, Budget::Unlimited);
}

#[test]
fn ties_go_to_the_first_option_in_pool_order() {
    let model = |name: &str| ModelHeads {
        name: name.into(),
        input_price_per_million: 1.0,
        output_price_per_million: 1.0,
        // Every quality head predicts 0.5, every token head 20: budgets 10 and 20 cost the same as
        // unlimited only at 20, so at λ = 0 all options tie.
        coef: vec![0.0; 4 * 3],
        intercept: vec![0.5, 0.5, 0.5, 20.0],
    };
    let router = Router::new(3, vec![10, 20], vec![model("a"), model("b")]).unwrap();
    let x = [0.0, 0.6, 0.8];
    let d = router.route(&x, 5, &RouteParams::new(0.0)).unwrap();
    assert_eq!((d.choice.model, d.choice.budget), (0, Budget::Tokens(10)));
    let batch = router
        .route_batch(&[x, x].concat(), &[5, 5], &RouteParams::new(0.0))
        .unwrap();
    assert!(batch.iter().all(|b| b.choice == d.choice));
    // With only the second model, its first budget wins.
    let only_b = RouteParams::new(0.0).with_candidates(router.model_mask(&["b"]).unwrap());
    let d = router.route(&x, 5, &only_b).unwrap();
    assert_eq!((d.choice.model, d.choice.budget), (1, Budget::Tokens(10)));
    // Ranked options keep pool order among equal risks.
    let d = router
        .route(&x, 5, &RouteParams::new(0.0).with_ranked(true))
        .unwrap();
    let order: Vec<_> = d.ranked.iter().map(|o| (o.model, o.budget)).collect();
    let u = Budget::Unlimited;
    let t = Budget::Tokens;
    assert_eq!(
        order,
        [
            (0, t(10)),
            (0, t(20)),
            (0, u),
            (1, t(10)),
            (1, t(20)),
            (1, u)
        ]
    );
}

#[test]
fn max_cost_drops_options_and_an_empty_set_is_an_error() {
    let mut rng = Rng(7);
    let router = random_router(&mut rng, 8, &[10, 100, 1000], 3);
    let x = unit_embedding(&mut rng, 8);
    let all = router
        .route(&x, 100, &RouteParams::new(0.0).with_ranked(true))
        .unwrap();
    let mut costs: Vec<f64> = all.ranked.iter().map(|o| o.cost).collect();
    costs.sort_by(f64::total_cmp);
    let cap = costs[costs.len() / 2];
    let capped = router
        .route(
            &x,
            100,
            &RouteParams::new(0.0).with_max_cost(cap).with_ranked(true),
        )
        .unwrap();
    assert!(capped.ranked.iter().all(|o| o.cost <= cap));
    assert_eq!(
        capped.ranked.len(),
        costs.iter().filter(|&&c| c <= cap).count()
    );
    assert!(capped.choice.cost <= cap);

    let err = router
        .route(
            &x,
            100,
            &RouteParams::new(0.0).with_max_cost(costs[0] / 2.0),
        )
        .unwrap_err();
    match err {
        Error::NothingWithinMaxCost { cheapest_cost, .. } => assert_eq!(cheapest_cost, costs[0]),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err_text(
        &router,
        &x,
        RouteParams::new(0.0).with_max_cost(costs[0] / 2.0)
    )
    .contains("raise the maximum cost"));
}

fn err_text(router: &Router, x: &[f64], params: RouteParams) -> String {
    router.route(x, 100, &params).unwrap_err().to_string()
}

#[test]
fn bad_input_is_a_typed_error_not_a_panic() {
    let mut rng = Rng(11);
    let router = random_router(&mut rng, 4, &[10, 20], 2);
    let ok = [0.5, 0.5, 0.5, 0.5];
    let p = RouteParams::new(0.5);
    assert!(matches!(
        router.route(&[1.0, 2.0], 1, &p),
        Err(Error::DimensionMismatch {
            expected: 4,
            got: 2,
            ..
        })
    ));
    assert!(matches!(
        router.route(&[0.5, f64::NAN, 0.5, 0.5], 1, &p),
        Err(Error::NonFiniteEmbedding { position: 1, .. })
    ));
    assert!(matches!(
        router.route(&[0.5, 0.5, f64::INFINITY, 0.5], 1, &p),
        Err(Error::NonFiniteEmbedding { position: 2, .. })
    ));
    for lambda in [-0.1, 1.0001, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            router.route(&ok, 1, &RouteParams::new(lambda)),
            Err(Error::InvalidLambda { .. })
        ));
    }
    for cap in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            router.route(&ok, 1, &p.clone().with_max_cost(cap)),
            Err(Error::InvalidMaxCost { .. })
        ));
    }
    let unknown = router.model_mask(&["model-0", "nope"]).unwrap_err();
    assert!(unknown.to_string().contains("`nope`") && unknown.to_string().contains("model-1"));
    let empty = router.model_mask::<&str>(&[]).unwrap();
    assert_eq!(
        router.route(&ok, 1, &p.clone().with_candidates(empty)),
        Err(Error::NoCandidates)
    );
    // A batch names the query that is wrong.
    let mut batch = [ok, ok, ok].concat();
    batch[9] = f64::NAN;
    assert!(matches!(
        router.route_batch(&batch, &[1, 1, 1], &p),
        Err(Error::NonFiniteEmbedding {
            query: 2,
            position: 1,
            ..
        })
    ));
    assert!(matches!(
        router.route_batch(&batch[..11], &[1, 1, 1], &p),
        Err(Error::BatchShape { .. })
    ));
    assert_eq!(router.route_batch(&[], &[], &p), Ok(vec![]));
}

#[test]
fn building_a_router_checks_shapes_values_and_names() {
    let model = |name: &str, coef: usize, intercept: usize| ModelHeads {
        name: name.into(),
        input_price_per_million: 1.0,
        output_price_per_million: 1.0,
        coef: vec![0.1; coef],
        intercept: vec![0.0; intercept],
    };
    assert_eq!(
        Router::new(2, vec![10], vec![]).unwrap_err(),
        Error::EmptyPool
    );
    assert_eq!(
        Router::new(0, vec![10], vec![model("a", 0, 3)]).unwrap_err(),
        Error::ZeroDimension
    );
    assert!(matches!(
        Router::new(2, vec![20, 10], vec![model("a", 6, 3)]),
        Err(Error::InvalidBudgets { .. })
    ));
    assert!(matches!(
        Router::new(2, vec![0, 10], vec![model("a", 8, 4)]),
        Err(Error::InvalidBudgets { .. })
    ));
    assert!(matches!(
        Router::new(2, vec![10], vec![model("a", 5, 3)]),
        Err(Error::HeadShape {
            what: "coef",
            expected: 6,
            got: 5,
            ..
        })
    ));
    assert!(matches!(
        Router::new(2, vec![10], vec![model("a", 6, 2)]),
        Err(Error::HeadShape {
            what: "intercept",
            ..
        })
    ));
    assert!(matches!(
        Router::new(2, vec![10], vec![model("a", 6, 3), model("a", 6, 3)]),
        Err(Error::DuplicateModel { .. })
    ));
    let mut nan = model("a", 6, 3);
    nan.coef[4] = f32::NAN;
    let err = Router::new(2, vec![10], vec![nan]).unwrap_err();
    assert!(err.to_string().contains("weight 0 of head 2"), "{err}");
    let mut negative = model("a", 6, 3);
    negative.output_price_per_million = -1.0;
    assert!(matches!(
        Router::new(2, vec![10], vec![negative]),
        Err(Error::NegativePrice { .. })
    ));
}

#[test]
fn heads_are_addressed_by_model_and_kind() {
    let mut rng = Rng(3);
    let router = random_router(&mut rng, 4, &[10, 20, 30], 2);
    assert_eq!(router.head_count(), 10);
    assert_eq!(router.option_count(), 8);
    assert_eq!(router.head(0), Some((0, HeadKind::Limited(10))));
    assert_eq!(router.head(3), Some((0, HeadKind::UnlimitedScore)));
    assert_eq!(router.head(4), Some((0, HeadKind::UnlimitedTokens)));
    assert_eq!(router.head(7), Some((1, HeadKind::Limited(30))));
    assert_eq!(router.head(10), None);
    let x = unit_embedding(&mut rng, 4);
    let outputs = router.head_outputs(&x).unwrap();
    for (h, &out) in outputs.iter().enumerate() {
        let (w, b) = router.head_weights(h).unwrap();
        let plain: f64 = w
            .iter()
            .zip(&x)
            .map(|(w, x)| f64::from(*w) * x)
            .sum::<f64>()
            + f64::from(b);
        assert!((out - plain).abs() <= 1e-9 * plain.abs().max(1.0));
    }
}

#[test]
fn embeddings_whose_heads_overflow_are_rejected_on_every_path() {
    let mut rng = Rng(23);
    let dim = 16;
    let router = random_router(&mut rng, dim, &[10, 20, 40], 3);
    let ok = unit_embedding(&mut rng, dim);
    for lambda in [0.0, 0.99999, 1.0] {
        let p = RouteParams::new(lambda);
        // The token heads' weights (~300) take these past f64::MAX.
        for huge in [1e308, -1e308, f64::MAX] {
            let x = vec![huge; dim];
            let single = router.route(&x, 100, &p);
            assert!(
                matches!(single, Err(Error::NonFinitePrediction { query: 0, .. })),
                "{huge:e} λ={lambda}: {single:?}"
            );
            let ranked = router.route(&x, 100, &p.clone().with_ranked(true));
            assert!(matches!(ranked, Err(Error::NonFinitePrediction { .. })));
            let interpolated = router.route_interpolated(&x, 100, &p, 2);
            assert!(matches!(
                interpolated,
                Err(Error::NonFinitePrediction { .. })
            ));
            // The batch names the query at fault; the queries around it are fine.
            let batch = [ok.clone(), ok.clone(), x.clone(), ok.clone()].concat();
            for threads in [1, 2] {
                let got = router.route_batch_parallel(&batch, &[100; 4], &p, threads);
                assert!(
                    matches!(got, Err(Error::NonFinitePrediction { query: 2, .. })),
                    "{huge:e} λ={lambda} threads={threads}: {got:?}"
                );
            }
        }
        let message = router
            .route(&vec![1e308; dim], 1, &p)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("query 0") && message.contains("model-"),
            "{message}"
        );
        // Large but finite head values still route, to the option the exact path picks: 3e38
        // overflows the float32 screen (which then steps aside) but not float64.
        for big in [1e20, 3e38, 1e200] {
            let big = vec![big; dim];
            let exact = router
                .route(&big, 100, &p.clone().with_ranked(true))
                .unwrap();
            assert_eq!(router.route(&big, 100, &p).unwrap().choice, exact.choice);
            let batch = router.route_batch(&big, &[100], &p).unwrap();
            assert_eq!(batch[0].choice, exact.choice);
        }
    }
}
