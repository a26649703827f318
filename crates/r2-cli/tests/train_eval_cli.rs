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
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("oracle"));

    // Text table.
    let text = ok(eval(&files, &out, &["--lambda-points", "11"]));
    assert!(text.contains("AUDC") && text.contains("point-based") && text.contains("oracle"));
    assert!(text.contains("11 values"), "{text}");
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
