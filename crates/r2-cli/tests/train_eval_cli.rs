//! `r2 train`, `r2 eval` and `r2 route --interpolate` end to end: the real binary on a small
//! generated dataset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use r2_train::synth::{self, SynthConfig, SynthFiles};

fn r2() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r2"));
    cmd.env_remove("R2_CHECKPOINTS").env_remove("R2_CONFIG");
    cmd
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "r2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn failed(out: Output) -> String {
    assert!(!out.status.success(), "r2 should have failed");
    String::from_utf8(out.stderr).unwrap()
}

fn generate(dir: &Path) -> SynthFiles {
    synth::write(
        &SynthConfig {
            queries: 400,
            models: 4,
            budgets: vec![20, 100, 500],
            dim: 8,
            seed: 5,
            test_fraction: 0.25,
            score_samples: 2,
            ..SynthConfig::default()
        },
        dir,
    )
    .unwrap()
}

fn train(files: &SynthFiles, out: &Path, extra: &[&str]) -> Output {
    r2().arg("train")
        .arg("--data")
        .arg(&files.records)
        .arg("--embeddings")
        .arg(files.embeddings.as_ref().unwrap())
        .arg("--pool")
        .arg(&files.pool)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn eval(files: &SynthFiles, checkpoints: &Path, extra: &[&str]) -> Output {
    r2().arg("eval")
        .arg("--data")
        .arg(&files.records)
        .arg("--embeddings")
        .arg(files.embeddings.as_ref().unwrap())
        .arg("--config")
        .arg(&files.pool)
        .arg("--checkpoints")
        .arg(checkpoints)
        .args(extra)
        .output()
        .unwrap()
}

fn route(files: &SynthFiles, checkpoints: &Path, extra: &[&str]) -> String {
    ok(r2()
        .arg("route")
        .arg("--embeddings")
        .arg(files.embeddings.as_ref().unwrap())
        .arg("--config")
        .arg(&files.pool)
        .arg("--checkpoints")
        .arg(checkpoints)
        .args(["--json"])
        .args(extra)
        .output()
        .unwrap())
}

#[test]
fn train_eval_and_route_with_interpolated_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(dir.path());
    let out: PathBuf = dir.path().join("router");
    ok(train(&files, &out, &["--alpha", "5"]));
    let file = r2_checkpoints::RouterFile::read(&out.join("router.safetensors")).unwrap();
    assert_eq!(file.budgets, vec![20, 100, 500]);
    assert_eq!(file.dim, 8);
    assert_eq!(file.models.len(), 4);
    assert_eq!(file.embedding_model.as_deref(), Some("synthetic-8"));

    // Training is deterministic, whatever the thread count.
    let again = dir.path().join("again");
    ok(train(&files, &again, &["--alpha", "5", "--threads", "1"]));
    assert_eq!(
        std::fs::read(out.join("router.safetensors")).unwrap(),
        std::fs::read(again.join("router.safetensors")).unwrap()
    );

    // Eval: JSON with every curve, and the plot.
    let plot = dir.path().join("curves.svg");
    let json = ok(eval(
        &files,
        &out,
        &[
            "--json",
            "--interpolate",
            "3",
            "--plot",
            plot.to_str().unwrap(),
        ],
    ));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(report["selection"].as_str().unwrap().contains("test"));
    assert_eq!(report["lambdas"].as_array().unwrap().len(), 101);
    let kinds: Vec<&str> = report["curves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "router",
            "interpolated",
            "point_based",
            "oracle_unlimited",
            "oracle",
            "single",
            "single",
            "single",
            "single"
        ]
    );
    for c in report["curves"].as_array().unwrap() {
        let audc = c["audc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&audc), "{c}");
        assert!(!c["curve"].as_array().unwrap().is_empty());
    }
    // The paper's numbers: on every router curve, over one global cost range; none for a single
    // model.
    let range = &report["paper"]["cost_range"];
    assert!(num(&range[0]) < num(&range[1]), "{range}");
    assert_eq!(num(&report["paper"]["qnc_target"]), 1.0);
    for c in report["curves"].as_array().unwrap() {
        if c["kind"] == "single" {
            assert!(c["paper_audc"].is_null() && c["paper_qnc"].is_null(), "{c}");
        } else {
            let (audc, qnc) = (num(&c["paper_audc"]), num(&c["paper_qnc"]));
            assert!(
                (0.0..=1.0).contains(&audc) && (0.0..=1.0).contains(&qnc),
                "{c}"
            );
        }
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("oracle"));

    // Text table.
    let text = ok(eval(&files, &out, &["--lambda-points", "11"]));
    assert!(text.contains("AUDC") && text.contains("point-based") && text.contains("oracle"));
    assert!(text.contains("11 values"), "{text}");
    assert!(
        text.contains("r2 envelope") && text.contains("paper") && text.contains("unlimited only"),
        "{text}"
    );
    // --qnc-target scales the paper's QNC target quality.
    let target = ok_json(eval(&files, &out, &["--json", "--qnc-target", "0.95"]));
    let best = num(&target["best_single"]["quality"]);
    assert_eq!(num(&target["paper"]["target_quality"]), best * 0.95);
    let err = failed(eval(&files, &out, &["--qnc-target", "-0.5"]));
    assert!(err.contains("QNC target"), "{err}");
    let text = ok(eval(
        &files,
        &out,
        &["--lambdas", "0,0.999,1", "--split", "all"],
    ));
    assert!(
        text.contains("3 values given") && text.contains("all queries"),
        "{text}"
    );

    // Route: K = 0 is the plain router, bit for bit; K > 0 can pick budgets between anchors.
    let plain = route(&files, &out, &["--lambda", "0.999"]);
    assert_eq!(
        plain,
        route(&files, &out, &["--lambda", "0.999", "--interpolate", "0"])
    );
    let mut between = 0;
    for lambda in ["0.99", "0.999", "0.9999"] {
        let interpolated = route(&files, &out, &["--lambda", lambda, "--interpolate", "7"]);
        assert_eq!(interpolated.lines().count(), 400);
        between += interpolated
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|d| {
                d["budget"]
                    .as_u64()
                    .is_some_and(|b| ![20, 100, 500].contains(&b))
            })
            .count();
    }
    assert!(between > 0, "no decision used an interpolated budget");
}

#[test]
fn budgets_subset_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(dir.path());
    let out = dir.path().join("two");
    let stderr = String::from_utf8(train(&files, &out, &["--budgets", "500,20"]).stderr).unwrap();
    assert!(stderr.contains("budgets [20, 500]"), "{stderr}");
    let file = r2_checkpoints::RouterFile::read(&out.join("router.safetensors")).unwrap();
    assert_eq!(file.budgets, vec![20, 500]);
    // Eval of that router ignores the data's budget 100.
    ok(eval(&files, &out, &["--lambda-points", "5"]));

    // A budget the data lacks: an error naming the first query's line, and nothing written.
    let none = dir.path().join("none");
    let err = failed(train(&files, &none, &["--budgets", "20,300"]));
    assert!(
        err.contains("line 1") && err.contains("at budget 300"),
        "{err}"
    );
    assert!(!none.exists());
}

#[test]
fn bad_data_is_an_error_with_its_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(dir.path());
    let text = std::fs::read_to_string(&files.records).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[41] = lines[41].replace("\"model\":\"large-a\"", "\"model\":\"gpt-9\"");
    lines[41] = lines[41].replace("\"model\":\"strong-brief\"", "\"model\":\"gpt-9\"");
    lines[41] = lines[41].replace("\"model\":\"strong-reasoner\"", "\"model\":\"gpt-9\"");
    lines[41] = lines[41].replace("\"model\":\"large-b\"", "\"model\":\"gpt-9\"");
    std::fs::write(&files.records, lines.join("\n")).unwrap();

    // An existing router in the output folder stays as it was.
    let out = dir.path().join("router");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("router.safetensors"), b"old").unwrap();
    let err = failed(train(&files, &out, &[]));
    assert!(
        err.contains("records.jsonl: line 42") && err.contains("unknown model `gpt-9`"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["router.safetensors"]);
    assert_eq!(
        std::fs::read(out.join("router.safetensors")).unwrap(),
        b"old"
    );

    // A pool whose embedding_dim differs from the data's.
    let files = generate(&dir.path().join("fresh"));
    let pool = std::fs::read_to_string(&files.pool)
        .unwrap()
        .replace("\"embedding_dim\": 8", "\"embedding_dim\": 9");
    let other = dir.path().join("pool9.json");
    std::fs::write(&other, pool).unwrap();
    let err = failed(
        r2().args(["train", "--data"])
            .arg(&files.records)
            .arg("--embeddings")
            .arg(files.embeddings.as_ref().unwrap())
            .arg("--pool")
            .arg(&other)
            .arg("--out")
            .arg(dir.path().join("x"))
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("embeddings.jsonl: line 1") && err.contains("embedding_dim is 9"),
        "{err}"
    );
    assert!(!dir.path().join("x").exists());
}

/// 300 queries, 16-d, the whole synthetic pool and the upstream budgets.
fn generate_experiment(dir: &Path) -> SynthFiles {
    synth::write(
        &SynthConfig {
            queries: 300,
            dim: 16,
            seed: 11,
            score_samples: 4,
            ..SynthConfig::default()
        },
        dir,
    )
    .unwrap()
}

fn experiment(files: &SynthFiles, extra: &[&str]) -> Output {
    r2().arg("experiment")
        .arg("--data")
        .arg(&files.records)
        .arg("--embeddings")
        .arg(files.embeddings.as_ref().unwrap())
        .arg("--pool")
        .arg(&files.pool)
        .args(extra)
        .output()
        .unwrap()
}

fn ok_json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn experiment_trains_and_evaluates_per_seed_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let files = generate_experiment(dir.path());
    let names = [
        "R2 router",
        "R2 router, interpolated",
        "point-based",
        "oracle, unlimited only",
        "oracle, all budgets",
    ];

    // The table: one row per method, mean ± std of AUDC, QNC, peak.
    let out = experiment(&files, &["--seeds", "3", "--interpolate", "2"]);
    assert!(
        out.stderr.is_empty(),
        "no progress when stderr is not a terminal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = ok(out);
    assert!(
        text.contains("3 seeds (0, 1, 2)") && text.contains("240 train / 60 test"),
        "{text}"
    );
    let header = text.lines().find(|l| l.starts_with("method")).unwrap();
    assert!(
        header.contains("AUDC") && header.contains("QNC") && header.contains("peak"),
        "{text}"
    );
    for name in names {
        let row = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"));
        assert_eq!(row.matches(" ± ").count(), 4, "{row}");
    }

    // JSON: the per-seed numbers, and a summary consistent with them.
    let args = ["--seeds", "3", "--interpolate", "2", "--qnc-target", "0.95"];
    let report = ok_json(experiment(&files, &[&args[..], &["--json"]].concat()));
    assert_eq!(report["seeds"], serde_json::json!([0, 1, 2]));
    assert_eq!(num(&report["qnc_target"]), 0.95);
    assert_eq!(report["queries"], 300);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let kinds = [
        "router",
        "interpolated",
        "point_based",
        "oracle_unlimited",
        "oracle",
    ];
    for run in runs {
        assert_eq!(run["train_queries"], 240);
        assert_eq!(run["test_queries"], 60);
        let methods = run["methods"].as_array().unwrap();
        let got: Vec<&str> = methods
            .iter()
            .map(|m| m["kind"].as_str().unwrap())
            .collect();
        assert_eq!(got, kinds);
        for (m, name) in methods.iter().zip(names) {
            assert!(m["name"].as_str().unwrap().starts_with(name), "{m}");
            for key in ["paper_audc", "paper_qnc", "peak", "audc"] {
                assert!((0.0..=1.0).contains(&num(&m[key])), "{key}: {m}");
            }
        }
    }
    // Different seeds split differently.
    assert_ne!(runs[0]["methods"], runs[1]["methods"]);
    let summary = report["summary"].as_array().unwrap();
    assert_eq!(summary.len(), kinds.len());
    for (i, s) in summary.iter().enumerate() {
        assert_eq!(s["kind"], kinds[i]);
        for key in ["paper_audc", "paper_qnc", "peak", "audc"] {
            let values: Vec<f64> = runs.iter().map(|r| num(&r["methods"][i][key])).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
            assert!((num(&s[key]["mean"]) - mean).abs() < 1e-12, "{key}: {s}");
            assert!(
                (num(&s[key]["std"]) - var.sqrt()).abs() < 1e-12,
                "{key}: {s}"
            );
        }
    }

    // The same seed gives the same numbers: alone, on another thread count, run again.
    let alone = ok_json(experiment(
        &files,
        &[
            "--interpolate",
            "2",
            "--qnc-target",
            "0.95",
            "--json",
            "--seeds",
            "1",
            "--first-seed",
            "1",
            "--threads",
            "1",
        ],
    ));
    assert_eq!(alone["runs"][0], runs[1]);
    assert_eq!(
        report,
        ok_json(experiment(&files, &[&args[..], &["--json"]].concat()))
    );

    // On generated data whose first model saturates with budget: the budget-aware router matches
    // the best single model's quality for far less than the point-based router (the paper's QNC)
    // and has the higher envelope AUDC. (The paper's AUDC integrates each curve over its own cost
    // range only, so a router whose quality-first point is cheap is not compared by it here.)
    let mean = |i: usize, key: &str| num(&summary[i][key]["mean"]);
    assert!(mean(0, "paper_qnc") < mean(2, "paper_qnc"), "{summary:?}");
    assert!(mean(0, "audc") > mean(2, "audc"), "{summary:?}");
    assert!(mean(4, "peak") > mean(0, "peak"), "{summary:?}");
    assert!(mean(3, "paper_audc") > mean(2, "paper_audc"), "{summary:?}");
}

#[test]
fn experiment_flag_errors() {
    let dir = tempfile::tempdir().unwrap();
    let files = generate_experiment(dir.path());
    let err = failed(experiment(&files, &["--seeds", "0"]));
    assert!(err.contains("--seeds must be at least 1"), "{err}");
    let err = failed(experiment(&files, &["--test-fraction", "1.5"]));
    assert!(
        err.contains("--test-fraction must be between 0 and 1"),
        "{err}"
    );
    let err = failed(experiment(&files, &["--qnc-target", "-1"]));
    assert!(err.contains("--qnc-target"), "{err}");
    let err = failed(experiment(&files, &["--budgets", "10,33"]));
    assert!(
        err.contains("line 1") && err.contains("at budget 33"),
        "{err}"
    );
}
