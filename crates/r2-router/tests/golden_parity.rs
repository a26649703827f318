//! Parity with the upstream Python router (numpy, scikit-learn 1.7.2) on `shared/golden`:
//! converted heads give upstream's raw predictions, and routing makes upstream's decisions.

use std::collections::HashMap;

use r2_core::{Budget, HeadKind, RouteOption, RouteParams, Router};
use r2_router::report::round_like_python;
use serde_json::Value;

fn budget_of(v: &Value) -> Budget {
    serde_json::from_value(v.clone()).expect("golden budget is an integer or \"unlimited\"")
}

fn embeddings_by_id() -> HashMap<u64, r2_fixtures::GoldenInput> {
    r2_fixtures::golden_inputs()
        .into_iter()
        .map(|g| (g.id, g))
        .collect()
}

#[test]
fn every_head_output_matches_upstream_within_1e_6() {
    let router = r2_fixtures::upstream_router();
    let golden: HashMap<String, HashMap<String, f64>> = serde_json::from_str(
        &std::fs::read_to_string(r2_fixtures::golden_dir().join("head-predictions.json")).unwrap(),
    )
    .unwrap();
    let inputs = embeddings_by_id();
    assert_eq!(golden.len(), 40);
    let mut worst = 0.0f64;
    let mut compared = 0;
    for (id, heads) in &golden {
        let input = &inputs[&id.parse::<u64>().unwrap()];
        let outputs = router.head_outputs(&input.embedding).unwrap();
        assert_eq!(heads.len(), router.head_count());
        for (h, &ours) in outputs.iter().enumerate() {
            let (m, kind) = router.head(h).unwrap();
            let model = &router.models()[m].name;
            let key = match kind {
                HeadKind::Limited(b) => format!("{model}/{b}"),
                HeadKind::UnlimitedScore => format!("{model}/unlimited_score"),
                HeadKind::UnlimitedTokens => format!("{model}/unlimited_tokens"),
            };
            let want = heads[&key];
            let error = (ours - want).abs() / want.abs().max(1.0);
            assert!(
                error <= 1e-6,
                "query {id}, head {key}: {ours} vs upstream {want}"
            );
            worst = worst.max(error);
            compared += 1;
        }
    }
    assert_eq!(compared, 40 * 187);
    eprintln!("{compared} head outputs, worst relative difference {worst:e}");
}

/// Checks one decision against a golden line: the choice is acceptable, and where it is upstream's
/// choice the rounded numbers are equal.
fn check_decision(router: &Router, line: &Value, choice: &RouteOption, path: &str) {
    let model = &router.models()[choice.model].name;
    let acceptable: Vec<(String, Budget)> = line["acceptable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_str().unwrap().to_owned(), budget_of(&pair[1])))
        .collect();
    let ours = (model.clone(), choice.budget);
    assert!(
        acceptable.contains(&ours),
        "{path}: id {} λ {}: chose {ours:?}, acceptable {acceptable:?}",
        line["id"],
        line["lambda"]
    );
    if *model == line["model"].as_str().unwrap() && choice.budget == budget_of(&line["budget"]) {
        for (name, ours, digits) in [
            ("predicted_quality", choice.quality, 4),
            ("predicted_cost_usd", choice.cost, 8),
            ("risk", choice.risk, 8),
        ] {
            assert_eq!(
                round_like_python(ours, digits),
                line[name].as_f64().unwrap(),
                "{path}: id {} λ {}: {name}",
                line["id"],
                line["lambda"]
            );
        }
    }
}

#[test]
fn every_golden_decision_is_made_by_the_single_and_the_batch_path() {
    let router = r2_fixtures::upstream_router();
    let inputs = embeddings_by_id();
    let expected = r2_fixtures::golden_jsonl("route-expected.jsonl");
    assert_eq!(expected.len(), 40 * 9);
    let mut by_lambda: HashMap<u64, Vec<&Value>> = HashMap::new();
    for line in &expected {
        let lambda = line["lambda"].as_f64().unwrap();
        by_lambda.entry(lambda.to_bits()).or_default().push(line);
        let input = &inputs[&line["id"].as_u64().unwrap()];
        assert_eq!(line["input_tokens"].as_u64().unwrap(), input.input_tokens);
        let d = router
            .route(
                &input.embedding,
                input.input_tokens,
                &RouteParams::new(lambda),
            )
            .unwrap();
        check_decision(&router, line, &d.choice, "single");
    }
    for (bits, lines) in by_lambda {
        let params = RouteParams::new(f64::from_bits(bits));
        let embeddings: Vec<f64> = lines
            .iter()
            .flat_map(|l| inputs[&l["id"].as_u64().unwrap()].embedding.clone())
            .collect();
        let tokens: Vec<u64> = lines
            .iter()
            .map(|l| l["input_tokens"].as_u64().unwrap())
            .collect();
        for threads in [1, 2] {
            let decisions = router
                .route_batch_parallel(&embeddings, &tokens, &params, threads)
                .unwrap();
            for (line, d) in lines.iter().zip(&decisions) {
                check_decision(&router, line, &d.choice, "batch");
            }
        }
    }
}

#[test]
fn ranked_options_match_upstream_all_options() {
    let router = r2_fixtures::upstream_router();
    let inputs = embeddings_by_id();
    let mut checked = 0;
    for line in r2_fixtures::golden_jsonl("route-expected.jsonl") {
        let Some(all) = line["all_options"].as_array() else {
            continue;
        };
        let input = &inputs[&line["id"].as_u64().unwrap()];
        let lambda = line["lambda"].as_f64().unwrap();
        let d = router
            .route(
                &input.embedding,
                input.input_tokens,
                &RouteParams::new(lambda).with_ranked(true),
            )
            .unwrap();
        assert_eq!(d.ranked.len(), all.len());
        assert_eq!(d.ranked.len(), 176);
        // Upstream sorts by rounded risk; r2 by unrounded risk. Both orders agree on rounded risks,
        // and each option's rounded numbers are upstream's.
        let upstream: HashMap<(String, Budget), &Value> = all
            .iter()
            .map(|o| ((o[0].as_str().unwrap().to_owned(), budget_of(&o[1])), o))
            .collect();
        for (ours, theirs) in d.ranked.iter().zip(all) {
            assert_eq!(round_like_python(ours.risk, 8), theirs[5].as_f64().unwrap());
            let key = (router.models()[ours.model].name.clone(), ours.budget);
            let o = upstream[&key];
            assert_eq!(
                round_like_python(ours.quality, 4),
                o[2].as_f64().unwrap(),
                "{key:?}"
            );
            let tokens = match ours.budget {
                Budget::Tokens(_) => ours.output_tokens,
                Budget::Unlimited => round_like_python(ours.output_tokens, 1),
            };
            assert_eq!(tokens, o[3].as_f64().unwrap(), "{key:?}");
            assert_eq!(
                round_like_python(ours.cost, 8),
                o[4].as_f64().unwrap(),
                "{key:?}"
            );
            assert_eq!(
                round_like_python(ours.risk, 8),
                o[5].as_f64().unwrap(),
                "{key:?}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 40);
}

#[test]
fn converted_weights_are_bit_identical_to_the_joblib_values() {
    let router = r2_fixtures::upstream_router();
    let pool = r2_fixtures::upstream_pool();
    for (m, model) in pool.models.iter().enumerate() {
        let dir = r2_fixtures::upstream_dir()
            .join("checkpoints")
            .join(model.checkpoint_dir.as_ref().unwrap());
        let limited =
            r2_checkpoints::joblib::read_ridge_dict(&dir.join("limited_score_predictors.joblib"))
                .unwrap();
        let score =
            r2_checkpoints::joblib::read_ridge(&dir.join("unlimited_score_predictor.joblib"))
                .unwrap();
        let tokens =
            r2_checkpoints::joblib::read_ridge(&dir.join("unlimited_token_predictor.joblib"))
                .unwrap();
        let heads: Vec<_> = limited
            .into_iter()
            .map(|(_, h)| h)
            .chain([score, tokens])
            .collect();
        for (k, head) in heads.iter().enumerate() {
            let (w, b) = router.head_weights(m * 17 + k).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(w), bits(&head.coef), "{} head {k}", model.name);
            assert_eq!(
                b.to_bits(),
                head.intercept.to_bits(),
                "{} head {k}",
                model.name
            );
        }
    }
}

#[test]
fn json_numbers_are_read_correctly_rounded_like_python() {
    // serde_json's default float parser is off by an ulp on about a tenth of these values; the
    // workspace enables `float_roundtrip`, and this checks every golden value against the
    // standard library's correctly rounded parser.
    let text =
        std::fs::read_to_string(r2_fixtures::golden_dir().join("route-input.jsonl")).unwrap();
    let mut checked = 0;
    for (line, input) in text.lines().zip(r2_fixtures::golden_inputs()) {
        let start = line.find("\"embedding\": [").unwrap() + "\"embedding\": [".len();
        let end = start + line[start..].find(']').unwrap();
        for (raw, parsed) in line[start..end].split(',').zip(&input.embedding) {
            let exact: f64 = raw.trim().parse().unwrap();
            assert_eq!(exact.to_bits(), parsed.to_bits(), "{raw}");
            checked += 1;
        }
    }
    assert_eq!(checked, 40 * 1024);
}
