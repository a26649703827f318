//! r2's paper metrics against a direct numpy transcription of upstream's compare_methods.py
//! (`test_data/paper_metrics/fixture.json`, made by `tools/paper_metrics_fixture.py`): AUDC, QNC,
//! peak and the global cost range to 1e-12, on routed curves, ties, an unreachable target and an
//! empty cost range; and r2's two oracle curves against `calculate_oracle_unlimited` and
//! `calculate_oracle_all_limits` on the fixture's labels, point for point.

use std::path::{Path, PathBuf};

use r2_core::{ModelHeads, Router};
use r2_train::data::{Dataset, Query};
use r2_train::eval::CurveKind;
use r2_train::{paper, EvalOptions};
use serde_json::Value;

const TOLERANCE: f64 = 1e-12;

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/paper_metrics/fixture.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn points(curve: &Value) -> Vec<(f64, f64)> {
    floats(&curve["cost"])
        .into_iter()
        .zip(floats(&curve["quality"]))
        .collect()
}

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOLERANCE,
        "{what}: r2 {got:e}, compare_methods.py {want:e} (difference {:e})",
        (got - want).abs()
    );
}

#[test]
fn paper_metrics_match_compare_methods_py() {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let expected = &case["expected"];
        let curves: Vec<Vec<(f64, f64)>> = case["curves"]
            .as_array()
            .unwrap()
            .iter()
            .map(points)
            .collect();
        // The best single model: the highest unlimited mean quality.
        let best = floats(&case["single_qualities"])
            .into_iter()
            .fold(0.0, f64::max);
        close(
            &format!("{name}: best quality"),
            best,
            expected["best_quality"].as_f64().unwrap(),
        );
        let target = best * case["qnc_target"].as_f64().unwrap();
        close(
            &format!("{name}: target"),
            target,
            expected["target_quality"].as_f64().unwrap(),
        );
        let refs: Vec<&[(f64, f64)]> = curves.iter().map(Vec::as_slice).collect();
        let (range, numbers) = paper::paper_metrics(&refs, target);
        let want_range = floats(&expected["cost_range"]);
        close(&format!("{name}: range min"), range.0, want_range[0]);
        close(&format!("{name}: range max"), range.1, want_range[1]);
        for ((points, got), want) in curves
            .iter()
            .zip(&numbers)
            .zip(expected["curves"].as_array().unwrap())
        {
            let curve = format!("{name} / {}", want["name"].as_str().unwrap());
            close(
                &format!("{curve}: AUDC"),
                got.audc,
                want["audc"].as_f64().unwrap(),
            );
            close(
                &format!("{curve}: QNC"),
                got.qnc,
                want["qnc"].as_f64().unwrap(),
            );
            close(
                &format!("{curve}: peak"),
                got.peak,
                want["peak"].as_f64().unwrap(),
            );
            // The single-curve functions give the same numbers.
            assert_eq!(paper::audc(points, range), got.audc);
            assert_eq!(paper::qnc(points, target, range), got.qnc);
            assert_eq!(paper::peak(points), got.peak);
        }
    }
}

/// The fixture's labels as a dataset (input tokens 0, so cost = output tokens × size, as
/// upstream's) and a router with constant heads over them.
fn world(world: &Value) -> (Router, Dataset) {
    let budgets: Vec<u32> = world["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u32)
        .collect();
    let models: Vec<(String, f64)> = world["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["size"].as_f64().unwrap(),
            )
        })
        .collect();
    let labels = &world["labels"];
    let n = labels[&models[0].0]["scores"].as_array().unwrap().len();
    let slots = budgets.len() + 1;
    let (mut scores, mut tokens) = (Vec::new(), Vec::new());
    for q in 0..n {
        for (name, _) in &models {
            let s = floats(&labels[name]["scores"][q]);
            let t = floats(&labels[name]["tokens"][q]);
            assert_eq!((s.len(), t.len()), (slots, slots));
            scores.extend(s);
            tokens.extend(t);
        }
    }
    let data = Dataset {
        path: PathBuf::from("fixture.json"),
        models: models.iter().map(|m| m.0.clone()).collect(),
        budgets: budgets.clone(),
        queries: (0..n)
            .map(|q| Query {
                id: format!("q{q}"),
                line: q + 1,
                input_tokens: 0,
                split: None,
            })
            .collect(),
        dim: 1,
        embeddings: vec![0.0; n],
        scores,
        tokens,
        selection: "all queries".into(),
    };
    let heads = models
        .iter()
        .enumerate()
        .map(|(m, (name, size))| ModelHeads {
            name: name.clone(),
            input_price_per_million: 0.0,
            output_price_per_million: size * 1e6,
            coef: vec![0.0; budgets.len() + 2],
            intercept: (0..budgets.len() + 2)
                .map(|h| {
                    if h == budgets.len() + 1 {
                        300.0
                    } else {
                        0.1 * (m + h + 1) as f32
                    }
                })
                .collect(),
        })
        .collect();
    (Router::new(1, budgets, heads).unwrap(), data)
}

#[test]
fn oracle_curves_match_compare_methods_py() {
    let fixture = fixture();
    let case = &fixture["cases"][0];
    let (router, data) = world(&case["world"]);
    let lambdas = floats(&case["world"]["lambdas"]);
    let report = r2_train::evaluate(
        &router,
        &data,
        &EvalOptions {
            lambdas: Some(lambdas.clone()),
            threads: 2,
            ..EvalOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.lambdas, lambdas);
    let expected_curves = case["curves"].as_array().unwrap();
    for (kind, name) in [
        (CurveKind::OracleUnlimited, "oracle, unlimited only"),
        (CurveKind::Oracle, "oracle, all budgets"),
    ] {
        let want = expected_curves
            .iter()
            .find(|c| c["name"] == name)
            .map(points)
            .unwrap();
        let got = report.curve(kind).unwrap();
        assert_eq!(got.name, name);
        assert_eq!(got.points.len(), want.len());
        for (l, (p, w)) in got.points.iter().zip(&want).enumerate() {
            close(&format!("{name}, λ #{l}: cost"), p.cost, w.0);
            close(&format!("{name}, λ #{l}: quality"), p.quality, w.1);
        }
    }
    close(
        "best single model",
        report.best_single.quality,
        case["expected"]["best_quality"].as_f64().unwrap(),
    );

    // The report's paper numbers are `paper_metrics` over its router curves (not the singles).
    let routers: Vec<_> = report
        .curves
        .iter()
        .filter(|c| c.kind != CurveKind::Single)
        .collect();
    let xy: Vec<Vec<(f64, f64)>> = routers
        .iter()
        .map(|c| c.points.iter().map(|p| (p.cost, p.quality)).collect())
        .collect();
    let refs: Vec<&[(f64, f64)]> = xy.iter().map(Vec::as_slice).collect();
    let (range, numbers) = paper::paper_metrics(&refs, report.paper.target_quality);
    assert_eq!(report.paper.cost_range, [range.0, range.1]);
    assert_eq!(
        report.paper.range_of,
        routers.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
    );
    for (c, n) in routers.iter().zip(&numbers) {
        assert_eq!(c.paper_audc, Some(n.audc));
        assert_eq!(c.paper_qnc, Some(n.qnc));
        assert_eq!(c.peak_quality, n.peak);
    }
    for c in report.curves.iter().filter(|c| c.kind == CurveKind::Single) {
        assert_eq!((c.paper_audc, c.paper_qnc), (None, None));
    }
}
