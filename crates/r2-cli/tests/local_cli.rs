//! `r2 route --query/--file` and `r2 embed` end to end with the in-process embedder: the tiny
//! Qwen3 fixture and a synthetic 64-d router written through `r2-checkpoints` inside the test.

#![cfg(feature = "local")]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use r2_core::{estimate_input_tokens, Budget, RouteParams, Router};
use serde_json::Value;

mod common;

use common::{failed, ok, r2};

/// The non-empty texts of the tiny fixture and their reference embeddings.
fn reference_cases() -> Vec<(String, Vec<f64>)> {
    let path = r2_fixtures::tiny_qwen3_dir().join("reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["text"].as_str().unwrap().is_empty())
        .map(|c| {
            let e = c["embedding"].as_array().unwrap();
            (
                c["text"].as_str().unwrap().to_owned(),
                e.iter().map(|v| v.as_f64().unwrap()).collect(),
            )
        })
        .collect()
}

/// The synthetic router over the tiny model's 64-d embeddings ([`r2_fixtures::write_tiny_router`]).
struct Synthetic {
    _dir: tempfile::TempDir,
    checkpoints: PathBuf,
    config: PathBuf,
    router: Router,
}

fn synthetic_router() -> Synthetic {
    let dir = tempfile::tempdir().unwrap();
    let config = r2_fixtures::write_tiny_router(dir.path());
    let pool = r2_checkpoints::PoolConfig::from_file(&config).unwrap();
    let router = r2_checkpoints::load_router(dir.path(), &pool).unwrap();
    Synthetic {
        checkpoints: dir.path().to_path_buf(),
        config,
        router,
        _dir: dir,
    }
}

/// The decision computed directly from the reference embedding, and whether it is clear: its
/// margin over the runner-up is more than twice what the embedding tolerance of the parity test
/// (1e-4 per value, so ‖Δx‖ ≤ 8e-4 in 64 dimensions) can move any risk.
fn expected(router: &Router, text: &str, embedding: &[f64], lambda: f64) -> (String, Budget, bool) {
    let d = router
        .route(
            embedding,
            estimate_input_tokens(text),
            &RouteParams::new(lambda).with_ranked(true),
        )
        .unwrap();
    let norm = |h: usize| {
        let (w, _) = router.head_weights(h).unwrap();
        w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt()
    };
    let per_model = router.budgets().len() + 2;
    let (mut quality, mut tokens) = (0.0f64, 0.0f64);
    for h in 0..router.head_count() {
        if h % per_model == per_model - 1 {
            tokens = tokens.max(norm(h));
        } else {
            quality = quality.max(norm(h));
        }
    }
    let max_price = router
        .models()
        .iter()
        .map(|m| m.output_price_per_million / 1e6)
        .fold(0.0, f64::max);
    let dx = 1e-4 * 8.0;
    let bound = (1.0 - lambda) * quality * dx + lambda * max_price * tokens * dx;
    let margin = d.ranked[0].risk - d.ranked[1].risk;
    (
        router.models()[d.choice.model].name.clone(),
        d.choice.budget,
        margin > 2.0 * bound,
    )
}

fn budget_of(v: &Value) -> Budget {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn route_query_with_the_in_process_model_makes_the_reference_decision() {
    let s = synthetic_router();
    let tiny = r2_fixtures::tiny_qwen3_dir();
    let mut compared = 0;
    for lambda in [0.0, 0.5, 0.999] {
        for (text, embedding) in reference_cases() {
            let out = ok(r2()
                .args(["route", "--json", "--query", &text, "--lambda"])
                .arg(lambda.to_string())
                .arg("--embedding-model-dir")
                .arg(&tiny)
                .arg("--checkpoints")
                .arg(&s.checkpoints)
                .arg("--config")
                .arg(&s.config)
                .output()
                .unwrap());
            let got: Value = serde_json::from_str(out.trim()).unwrap();
            assert_eq!(got["query"], text.as_str());
            let (model, budget, clear) = expected(&s.router, &text, &embedding, lambda);
            if !clear {
                continue;
            }
            assert_eq!(got["model"], model.as_str(), "{text:?} at λ {lambda}");
            assert_eq!(budget_of(&got["budget"]), budget, "{text:?} at λ {lambda}");
            compared += 1;
        }
    }
    assert!(compared >= 30, "only {compared} clear decisions compared");
}

#[test]
fn route_file_equals_route_query_line_by_line_and_embed_output_routes_the_same() {
    let s = synthetic_router();
    let tiny = r2_fixtures::tiny_qwen3_dir();
    let texts: Vec<String> = reference_cases().into_iter().map(|(t, _)| t).collect();
    // A file holds one query a line, trimmed as upstream trims it: keep the texts that survive.
    let lines: Vec<&String> = texts
        .iter()
        .filter(|t| !t.contains('\n') && t.trim() == t.as_str())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queries.txt");
    let body: String = lines.iter().map(|t| format!("{t}\n\n")).collect();
    std::fs::write(&file, body).unwrap();
    let common = |cmd: &mut Command| {
        cmd.arg("--embedding-model-dir")
            .arg(&tiny)
            .arg("--checkpoints")
            .arg(&s.checkpoints)
            .arg("--config")
            .arg(&s.config);
    };
    let mut cmd = r2();
    cmd.args(["route", "--json", "--embed-batch-size", "5", "--file"])
        .arg(&file);
    common(&mut cmd);
    let from_file = ok(cmd.output().unwrap());
    assert_eq!(from_file.lines().count(), lines.len());
    for (line, text) in from_file.lines().zip(&lines) {
        let mut cmd = r2();
        cmd.args(["route", "--json", "--query", text.as_str()]);
        common(&mut cmd);
        let one = ok(cmd.output().unwrap());
        // A batch gives the same vectors as one text at a time (to float32 rounding: the matrix
        // products of a batch sum in another order), so the same decision and, to the last
        // printed digit, the same numbers.
        let (a, b): (Value, Value) = (
            serde_json::from_str(line).unwrap(),
            serde_json::from_str(one.trim()).unwrap(),
        );
        for key in ["query", "model", "openrouter_id", "budget"] {
            assert_eq!(a[key], b[key], "{text:?}: {key}");
        }
        for key in ["predicted_quality", "predicted_cost_usd", "risk"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!((x - y).abs() <= 2e-4, "{text:?}: {key} {x} vs {y}");
        }
    }

    // `r2 embed --file` output, routed with --embeddings, gives the same lines.
    let embedded = ok(r2()
        .args(["embed", "--file"])
        .arg(&file)
        .arg("--embedding-model-dir")
        .arg(&tiny)
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap());
    let reference: HashMap<String, Vec<f64>> = reference_cases().into_iter().collect();
    for line in embedded.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let ours: Vec<f64> = v["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want = &reference[v["query"].as_str().unwrap()];
        let worst = ours
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-4, "{}: max abs difference {worst}", v["query"]);
    }
    let embeddings_file = dir.path().join("embeddings.jsonl");
    std::fs::write(&embeddings_file, &embedded).unwrap();
    let mut cmd = r2();
    cmd.args(["route", "--json", "--embeddings"])
        .arg(&embeddings_file)
        .args(["--input-tokens", "0"]);
    common(&mut cmd);
    let routed = ok(cmd.output().unwrap());
    let mut cmd = r2();
    cmd.args(["route", "--json", "--input-tokens", "0", "--file"])
        .arg(&file);
    common(&mut cmd);
    assert_eq!(routed, ok(cmd.output().unwrap()));
}

#[test]
fn in_process_embedding_errors_are_clear() {
    let s = synthetic_router();
    let tiny = r2_fixtures::tiny_qwen3_dir();
    let err = failed(
        r2().args(["route", "--query", "", "--embedding-model-dir"])
            .arg(&tiny)
            .arg("--checkpoints")
            .arg(&s.checkpoints)
            .arg("--config")
            .arg(&s.config)
            .output()
            .unwrap(),
    );
    assert!(err.contains("--query is empty"), "{err}");

    // The tiny model gives 64-d vectors; the released router expects 1024-d ones.
    let err = failed(
        r2().args(["route", "--query", "hello", "--embedding-model-dir"])
            .arg(&tiny)
            .arg("--checkpoints")
            .arg(r2_fixtures::converted_router_dir())
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("gives 64-d vectors but the router expects 1024-d"),
        "{err}"
    );

    let err = failed(
        r2().args([
            "embed",
            "--query",
            "hi",
            "--embedding-model-dir",
            "/nonexistent/model",
        ])
        .output()
        .unwrap(),
    );
    assert!(err.contains("/nonexistent/model"), "{err}");

    // Nothing cached and offline: the command line names its flags for the other ways.
    let home = tempfile::tempdir().unwrap();
    let err = failed(
        r2().args(["embed", "--query", "hi"])
            .env("HF_HOME", home.path())
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("HF_HUB_OFFLINE")
            && err.contains("--embedding-model-dir")
            && err.contains("--embed-url"),
        "{err}"
    );
}

#[test]
fn embed_uses_whatever_model_it_is_given() {
    // The built-in pool says 1024-d; the tiny model gives 64-d vectors, and `r2 embed` routes
    // nothing, so it embeds.
    let out = ok(r2()
        .args(["embed", "--query", "hello world", "--embedding-model-dir"])
        .arg(r2_fixtures::tiny_qwen3_dir())
        .output()
        .unwrap());
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["query"], "hello world");
    assert_eq!(v["embedding"].as_array().unwrap().len(), 64);
}
