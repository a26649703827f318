//! `r2 route --embeddings` end to end: the real binary on the converted upstream router and the
//! golden embeddings.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn r2() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r2"));
    cmd.env_remove("R2_CHECKPOINTS").env_remove("R2_CONFIG");
    cmd
}

fn golden_input() -> PathBuf {
    r2_fixtures::golden_dir().join("route-input.jsonl")
}

/// `r2 route` on the converted router with the upstream pool config, plus `args`.
fn route(args: &[&str], stdin: Option<&str>) -> Output {
    let checkpoints = r2_fixtures::converted_router_dir();
    let config = r2_fixtures::upstream_dir().join("config.json");
    let mut cmd = r2();
    cmd.arg("route")
        .arg("--checkpoints")
        .arg(&checkpoints)
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("r2 starts");
    let input = stdin.unwrap_or("").to_owned();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("r2 runs");
    writer.join().unwrap();
    out
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "r2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "r2 should have failed");
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Upstream's golden line without the keys `r2 route` does not print: what r2 prints when it makes
/// the same choice, byte for byte (Python's `json.dumps` layout and float format).
fn expected_line(golden_raw: &str) -> String {
    let v: Value = serde_json::from_str(golden_raw).unwrap();
    let without_lambda = golden_raw.replacen(
        &format!(
            "\"lambda\": {}, \"input_tokens\": {}, ",
            raw_number(golden_raw, "lambda"),
            v["input_tokens"]
        ),
        "",
        1,
    );
    let cut = without_lambda.find(", \"acceptable\": ").unwrap();
    format!("{}}}", &without_lambda[..cut])
}

/// The raw text of a top-level number in a JSON line, as written.
fn raw_number<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(&format!("\"{key}\": ")).unwrap() + key.len() + 4;
    let end = line[start..].find([',', '}']).unwrap() + start;
    &line[start..end]
}

fn golden_lines() -> Vec<(String, Value)> {
    std::fs::read_to_string(r2_fixtures::golden_dir().join("route-expected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| (l.to_owned(), serde_json::from_str(l).unwrap()))
        .collect()
}

fn in_acceptable(ours: &Value, golden: &Value) -> bool {
    golden["acceptable"]
        .as_array()
        .unwrap()
        .iter()
        .any(|pair| pair[0] == ours["model"] && pair[1] == ours["budget"])
}

#[test]
fn json_output_matches_upstream_for_every_golden_lambda() {
    let golden = golden_lines();
    let lambdas: Vec<&str> = {
        let mut l: Vec<&str> = Vec::new();
        for (raw, _) in &golden {
            let lambda = raw_number(raw, "lambda");
            if !l.contains(&lambda) {
                l.push(lambda);
            }
        }
        l
    };
    assert_eq!(lambdas.len(), 9);
    let input = golden_input();
    let mut identical = 0;
    for lambda in lambdas {
        let out = stdout(&route(
            &[
                "--embeddings",
                input.to_str().unwrap(),
                "--json",
                "--lambda",
                lambda,
            ],
            None,
        ));
        let lines: Vec<&str> = out.lines().collect();
        let expected: Vec<&(String, Value)> = golden
            .iter()
            .filter(|(raw, _)| raw_number(raw, "lambda") == lambda)
            .collect();
        assert_eq!(lines.len(), expected.len());
        for (line, (raw, g)) in lines.iter().zip(expected) {
            let ours: Value = serde_json::from_str(line).unwrap();
            assert_eq!(ours["id"], g["id"]);
            assert!(in_acceptable(&ours, g), "λ {lambda}: {line} vs {raw}");
            if ours["model"] == g["model"] && ours["budget"] == g["budget"] {
                assert_eq!(*line, expected_line(raw));
                identical += 1;
            }
        }
    }
    assert!(
        identical >= 350,
        "only {identical} of 360 lines equal upstream's choice"
    );
}

#[test]
fn default_lambda_comes_from_the_config_and_lambda_val_is_an_alias() {
    let input = golden_input();
    let input = input.to_str().unwrap();
    let default = stdout(&route(&["--embeddings", input, "--json"], None));
    let explicit = stdout(&route(
        &["--embeddings", input, "--json", "--lambda", "0.99999"],
        None,
    ));
    let alias = stdout(&route(
        &["--embeddings", input, "--json", "--lambda_val", "0.99999"],
        None,
    ));
    assert_eq!(default, explicit);
    assert_eq!(default, alias);
    let other = stdout(&route(
        &["--embeddings", input, "--json", "--lambda", "0"],
        None,
    ));
    assert_ne!(default, other);
}

#[test]
fn stdin_input_gives_the_same_decisions_as_a_file() {
    let input = golden_input();
    let text = std::fs::read_to_string(&input).unwrap();
    let from_file = stdout(&route(
        &["--embeddings", input.to_str().unwrap(), "--json"],
        None,
    ));
    let from_stdin = stdout(&route(&["--embeddings", "-", "--json"], Some(&text)));
    assert_eq!(from_file, from_stdin);
}

#[test]
fn human_output_has_upstream_sections() {
    let first_two: String = std::fs::read_to_string(golden_input())
        .unwrap()
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    let out = stdout(&route(
        &["--embeddings", "-", "--lambda", "0"],
        Some(&first_two),
    ));
    let golden = golden_lines();
    let pool = r2_fixtures::upstream_pool();
    let names: Vec<&str> = pool.models.iter().map(|m| m.name.as_str()).collect();
    let block = |g: &Value| {
        format!(
            "Candidate LLMs:\n{}\n\nSelected LLM: {}\n\nSelected budget: {}\n",
            names.join(", "),
            g["model"].as_str().unwrap(),
            match &g["budget"] {
                Value::String(s) => s.clone(),
                n => n.to_string(),
            }
        )
    };
    // Golden lines come in id order, nine λ each, λ = 0 first.
    assert_eq!(
        out,
        format!("{}\n{}", block(&golden[0].1), block(&golden[9].1))
    );

    let verbose = stdout(&route(
        &[
            "--embeddings",
            "-",
            "--verbose",
            "--models",
            "GLM-4.5-Air,gemma-3-4b-it",
        ],
        Some(&first_two),
    ));
    let (loaded, rest) = verbose.split_once('\n').unwrap();
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    assert_eq!(
        loaded,
        format!("R2-Router loaded 11 models: [{}]", quoted.join(", "))
    );
    assert!(rest.starts_with("Candidate LLMs:\nGLM-4.5-Air, gemma-3-4b-it\n\n"));
    assert!(verbose.contains("\nAll options:\n- "));
    let options = verbose.lines().filter(|l| l.starts_with("- ")).count();
    assert_eq!(options, 2 * 2 * 16);
    let sample = verbose.lines().find(|l| l.starts_with("- ")).unwrap();
    assert!(
        sample.contains(": quality=") && sample.contains(", cost=$") && sample.contains(", risk="),
        "{sample}"
    );
}

#[test]
fn verbose_json_ranks_every_option_like_upstream() {
    let golden = golden_lines();
    let with_options: Vec<&Value> = golden
        .iter()
        .map(|(_, g)| g)
        .filter(|g| g.get("all_options").is_some())
        .collect();
    let out = stdout(&route(
        &[
            "--embeddings",
            golden_input().to_str().unwrap(),
            "--json",
            "--verbose",
            "--lambda",
            "0.99999",
        ],
        None,
    ));
    for (line, g) in out.lines().zip(with_options) {
        let ours: Value = serde_json::from_str(line).unwrap();
        let options = ours["all_options"].as_array().unwrap();
        let theirs = g["all_options"].as_array().unwrap();
        assert_eq!(options.len(), 176);
        for (o, t) in options.iter().zip(theirs) {
            assert_eq!(o["risk"], t[5], "id {}", g["id"]);
            let keys: Vec<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "model",
                    "openrouter_id",
                    "budget",
                    "predicted_quality",
                    "predicted_output_tokens",
                    "predicted_cost_usd",
                    "risk"
                ]
            );
        }
    }
}

#[test]
fn model_filter_and_max_cost_restrict_the_choice() {
    let input = golden_input();
    let input = input.to_str().unwrap();
    let out = stdout(&route(
        &[
            "--embeddings",
            input,
            "--json",
            "--lambda",
            "0",
            "--models",
            "gemma-3-4b-it,Qwen3-0.6B",
        ],
        None,
    ));
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(
            v["model"] == "gemma-3-4b-it" || v["model"] == "Qwen3-0.6B",
            "{line}"
        );
    }
    let out = stdout(&route(
        &[
            "--embeddings",
            input,
            "--json",
            "--lambda",
            "0",
            "--max-cost",
            "0.0001",
        ],
        None,
    ));
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(
            v["predicted_cost_usd"].as_f64().unwrap() <= 0.0001,
            "{line}"
        );
    }
    let err = stderr(&route(&["--embeddings", input, "--models", "GPT-9"], None));
    assert!(
        err.contains("unknown model `GPT-9`") && err.contains("GLM-4.5-Air"),
        "{err}"
    );
    let err = stderr(&route(
        &["--embeddings", input, "--max-cost", "0.0000000001"],
        None,
    ));
    assert!(
        err.contains("line 1") && err.contains("raise the maximum cost"),
        "{err}"
    );
}

#[test]
fn missing_input_tokens_use_the_flag() {
    let first = std::fs::read_to_string(golden_input()).unwrap();
    let mut v: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("input_tokens");
    let line = format!("{v}\n");
    let with_1000 = stdout(&route(
        &[
            "--embeddings",
            "-",
            "--json",
            "--lambda",
            "1",
            "--input-tokens",
            "1000",
        ],
        Some(&line),
    ));
    let with_1 = stdout(&route(
        &[
            "--embeddings",
            "-",
            "--json",
            "--lambda",
            "1",
            "--input-tokens",
            "1",
        ],
        Some(&line),
    ));
    let cost = |s: &str| {
        serde_json::from_str::<Value>(s.trim()).unwrap()["predicted_cost_usd"]
            .as_f64()
            .unwrap()
    };
    assert!(cost(&with_1000) > cost(&with_1));
}

#[test]
fn bad_lines_are_reported_with_their_line_number() {
    let good = std::fs::read_to_string(golden_input()).unwrap();
    let good_line = good.lines().next().unwrap();
    let cases: Vec<(String, &str)> = vec![
        (format!("{good_line}\n\n{{not json\n"), "line 3"),
        (
            format!("{good_line}\n{{\"id\": 1, \"embedding\": [0.5, 0.5]}}\n"),
            "line 2: the embedding has 2 values, the router expects 1024",
        ),
        (
            "{\"id\": 1}\n".to_string(),
            "line 1, column 9: missing field `embedding`",
        ),
        (
            format!(
                "{good_line}\n{}\n",
                good_line.replace("\"input_tokens\": 1", "\"input_tokens\": -5")
            ),
            "line 2",
        ),
        (
            format!(
                "{}\n",
                good_line.replace("\"embedding\": [", "\"embedding\": [\"x\", ")
            ),
            "line 1",
        ),
    ];
    for (input, want) in cases {
        let out = route(&["--embeddings", "-", "--json"], Some(&input));
        let err = stderr(&out);
        assert!(err.contains(want), "want `{want}` in: {err}");
        assert!(err.contains("<stdin>"), "{err}");
    }
    // Lines before the bad one were routed and printed.
    let out = route(
        &["--embeddings", "-", "--json"],
        Some(&format!("{good_line}\n{{bad\n")),
    );
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn setup_errors_say_what_to_do() {
    let empty = tempfile::tempdir().unwrap();
    let out = r2()
        .args(["route", "--embeddings", "-", "--checkpoints"])
        .arg(empty.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("r2 convert --from"), "{err}");

    // Nothing in ./checkpoints, nothing cached and downloads forbidden: say how to get a router.
    let out = r2()
        .current_dir(empty.path())
        .env("XDG_CACHE_HOME", empty.path().join("cache"))
        .env("R2_OFFLINE", "1")
        .args(["route", "--embeddings", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("R2_OFFLINE") && err.contains("r2 convert --from"),
        "{err}"
    );

    let err = stderr(&route(&["--embeddings", "-", "--lambda", "1.5"], Some("")));
    assert!(
        err.contains("lambda must be a number in [0, 1], got 1.5"),
        "{err}"
    );
    let err = stderr(&route(&["--embeddings", "/nonexistent/file.jsonl"], None));
    assert!(err.contains("/nonexistent/file.jsonl"), "{err}");
    let out = r2()
        .args([
            "route",
            "--embeddings",
            "-",
            "--config",
            "/nonexistent/pool.json",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("/nonexistent/pool.json"), "{err}");
}

#[test]
fn environment_variables_locate_the_checkpoints_and_the_config() {
    let input = golden_input();
    let out = r2()
        .args(["route", "--json", "--embeddings"])
        .arg(&input)
        .env("R2_CHECKPOINTS", r2_fixtures::converted_router_dir())
        .env("R2_CONFIG", r2_fixtures::upstream_dir().join("config.json"))
        .output()
        .unwrap();
    let via_env = stdout(&out);
    let via_flags = stdout(&route(
        &["--embeddings", input.to_str().unwrap(), "--json"],
        None,
    ));
    assert_eq!(via_env, via_flags);
    assert!(Path::new(&r2_fixtures::converted_router_dir())
        .join("router.safetensors")
        .is_file());
}

#[test]
fn the_built_in_config_equals_the_upstream_pool() {
    // With no --config, r2 uses config/r2.json, which must make the same decisions as upstream's.
    let input = golden_input();
    let out = r2()
        .args(["route", "--json", "--lambda", "0.9", "--embeddings"])
        .arg(&input)
        .arg("--checkpoints")
        .arg(r2_fixtures::converted_router_dir())
        .output()
        .unwrap();
    let builtin = stdout(&out);
    let upstream = stdout(&route(
        &[
            "--embeddings",
            input.to_str().unwrap(),
            "--json",
            "--lambda",
            "0.9",
        ],
        None,
    ));
    assert_eq!(builtin, upstream);
}

#[test]
fn the_first_run_fetches_checks_and_caches_the_released_checkpoints() {
    let (mirror, log) = r2_fixtures::start_file_server(r2_fixtures::upstream_dir());
    let home = tempfile::tempdir().unwrap();
    let run = || {
        r2().current_dir(home.path())
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env("R2_CHECKPOINTS_URL", format!("http://{mirror}"))
            .args(["route", "--json", "--lambda", "0.5", "--embeddings"])
            .arg(golden_input())
            .output()
            .unwrap()
    };
    let first = stdout(&run());
    assert_eq!(
        log.lock().unwrap().len(),
        34,
        "config.json and 33 joblib files"
    );
    assert!(home
        .path()
        .join("cache/r2/checkpoints/b0b2291/router.safetensors")
        .is_file());
    // The same decisions as with a router converted by hand, and no download the second time.
    let by_hand = stdout(&route(
        &[
            "--embeddings",
            golden_input().to_str().unwrap(),
            "--json",
            "--lambda",
            "0.5",
        ],
        None,
    ));
    assert_eq!(first, by_hand);
    assert_eq!(stdout(&run()), first);
    assert_eq!(log.lock().unwrap().len(), 34);
}

#[test]
fn negative_numbers_reach_the_value_checks() {
    let input = golden_input();
    let input = input.to_str().unwrap();
    for (flag, value, needle) in [
        (
            "--lambda",
            "-0.1",
            "lambda must be a number in [0, 1], got -0.1",
        ),
        (
            "--max-cost",
            "-1",
            "max cost must be a finite number of USD ≥ 0, got -1",
        ),
        (
            "--input-tokens",
            "-3",
            "invalid value '-3' for '--input-tokens <N>'",
        ),
        (
            "--interpolate",
            "-2",
            "invalid value '-2' for '--interpolate <K>'",
        ),
    ] {
        let err = stderr(&route(&["--embeddings", input, flag, value], None));
        assert!(err.contains(needle), "{flag} {value}: {err}");
        assert!(
            !err.contains("unexpected argument"),
            "{flag} {value}: {err}"
        );
    }
}

#[test]
fn an_error_and_its_cause_are_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let err = stderr(&route(
        &["--embeddings", dir.path().to_str().unwrap()],
        None,
    ));
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn a_byte_order_mark_at_the_start_of_the_embeddings_is_ignored() {
    let text = std::fs::read_to_string(golden_input()).unwrap();
    let plain = stdout(&route(&["--embeddings", "-", "--json"], Some(&text)));
    let marked = stdout(&route(
        &["--embeddings", "-", "--json"],
        Some(&format!("\u{feff}{text}")),
    ));
    assert_eq!(plain, marked);
    // Not at the start of a later line: that line is named.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = format!("\u{feff}{}", lines[2]);
    let err = stderr(&route(&["--embeddings", "-"], Some(&lines.join("\n"))));
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn embeddings_whose_predictions_overflow_are_an_error_naming_the_line() {
    let text = std::fs::read_to_string(golden_input()).unwrap();
    let mut lines: Vec<String> = text.lines().take(3).map(str::to_owned).collect();
    let huge = vec!["1e308"; 1024].join(", ");
    lines[1] = format!("{{\"id\": 99, \"embedding\": [{huge}]}}");
    let out = route(&["--embeddings", "-", "--json"], Some(&lines.join("\n")));
    let err = stderr(&out);
    assert!(
        err.contains("<stdin>: line 2") && err.contains("predicts"),
        "{err}"
    );
    // The line before it was still routed and printed.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// The golden embeddings rounded to float32, with their ids and input tokens.
fn float32_inputs() -> Vec<(u64, Vec<f32>, u64)> {
    r2_fixtures::golden_inputs()
        .into_iter()
        .map(|g| {
            let values = g.embedding.iter().map(|&v| v as f32).collect();
            (g.id, values, g.input_tokens)
        })
        .collect()
}

/// `values` as a NumPy .npy float32 array [rows, dim] (format version 1.0).
fn npy_f32(rows: &[Vec<f32>]) -> Vec<u8> {
    let dim = rows[0].len();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {dim}), }}",
        rows.len()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for row in rows {
        for v in row {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

#[test]
fn base64_lines_and_npy_arrays_route_like_the_same_float32_values_in_json() {
    let inputs = float32_inputs();
    let dir = tempfile::tempdir().unwrap();
    // The reference: JSON numbers of the float32 values (exact in decimal as f64).
    let json: String = inputs
        .iter()
        .map(|(id, v, tokens)| {
            let values: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
            format!(
                "{}\n",
                serde_json::json!({"id": id, "embedding": values, "input_tokens": tokens})
            )
        })
        .collect();
    let want = stdout(&route(&["--embeddings", "-", "--json"], Some(&json)));
    assert_eq!(want.lines().count(), inputs.len());

    let base64: String = inputs
        .iter()
        .map(|(id, v, tokens)| {
            let text = r2_router::vector::to_base64_f32(v);
            format!(
                "{}\n",
                serde_json::json!({"id": id, "embedding": text, "input_tokens": tokens})
            )
        })
        .collect();
    assert_eq!(
        stdout(&route(&["--embeddings", "-", "--json"], Some(&base64))),
        want
    );

    let array = dir.path().join("embeddings.npy");
    let rows: Vec<Vec<f32>> = inputs.iter().map(|(_, v, _)| v.clone()).collect();
    std::fs::write(&array, npy_f32(&rows)).unwrap();
    let ids = dir.path().join("rows.jsonl");
    let side: String = inputs
        .iter()
        .map(|(id, _, tokens)| {
            format!(
                "{}\n",
                serde_json::json!({"id": id, "input_tokens": tokens})
            )
        })
        .collect();
    std::fs::write(&ids, side).unwrap();
    let (array_arg, ids_arg) = (array.to_str().unwrap(), ids.to_str().unwrap());
    assert_eq!(
        stdout(&route(
            &[
                "--embeddings",
                array_arg,
                "--embedding-ids",
                ids_arg,
                "--json"
            ],
            None
        )),
        want
    );

    // Without the rows file: no ids, 100 input tokens (upstream's default) unless --input-tokens.
    let plain = stdout(&route(&["--embeddings", array_arg, "--json"], None));
    assert_eq!(plain.lines().count(), inputs.len());
    assert!(plain.lines().all(|l| !l.contains("\"id\"")), "{plain}");

    // A rows file of the wrong length, a wrong dimension, ids with JSONL: errors that say so.
    std::fs::write(&ids, "a\nb\n").unwrap();
    let err = stderr(&route(
        &["--embeddings", array_arg, "--embedding-ids", ids_arg],
        None,
    ));
    assert!(err.contains("2 rows described, but the array has"), "{err}");
    let short = dir.path().join("short.npy");
    std::fs::write(&short, npy_f32(&[vec![0.5f32; 3]])).unwrap();
    let err = stderr(&route(&["--embeddings", short.to_str().unwrap()], None));
    assert!(
        err.contains("rows have 3 values, the router expects 1024"),
        "{err}"
    );
    let err = stderr(&route(
        &["--embeddings", "-", "--embedding-ids", ids_arg],
        Some(&json),
    ));
    assert!(err.contains("is for a .npy --embeddings array"), "{err}");

    // A base64 string that is not float32 values names the line.
    let bad = format!(
        "{}{}\n",
        json.lines().next().unwrap(),
        "\n{\"embedding\": \"AAA\"}"
    );
    let out = route(&["--embeddings", "-", "--json"], Some(&bad));
    let err = stderr(&out);
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}
