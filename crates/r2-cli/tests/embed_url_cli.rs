//! `r2 route --file --embed-url` end to end against an OpenAI-compatible embeddings server
//! started inside the test that serves the golden embeddings.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use r2_core::estimate_input_tokens;
use serde_json::Value;

mod common;

use common::{failed, ok, r2};

#[test]
fn an_unreachable_embeddings_server_says_how_to_start_one() {
    // Nothing listens there.
    let err = failed(
        r2().args(["route", "--query", "hello", "--embed-url"])
            .arg(r2_fixtures::hub::closed_endpoint())
            .arg("--checkpoints")
            .arg(r2_fixtures::converted_router_dir())
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("vllm serve Qwen/Qwen3-0.6B --runner pooling"),
        "{err}"
    );
}

#[test]
fn route_file_through_an_embeddings_server_makes_the_golden_decisions() {
    let inputs = r2_fixtures::golden_inputs();
    let mut table = HashMap::new();
    let mut by_tokens: HashMap<u64, Vec<(u64, String)>> = HashMap::new();
    for g in &inputs {
        // 2500 input tokens cannot come from upstream's word estimate; those go through
        // --input-tokens.
        let text = if g.input_tokens == 2500 {
            format!("query{}", g.id)
        } else {
            r2_fixtures::text_with_estimate(g.id, g.input_tokens)
        };
        assert!(g.input_tokens == 2500 || estimate_input_tokens(&text) == g.input_tokens);
        table.insert(text.clone(), g.embedding.clone());
        by_tokens
            .entry(if g.input_tokens == 2500 { 2500 } else { 0 })
            .or_default()
            .push((g.id, text));
    }
    let addr = r2_fixtures::start_embeddings_server(table);
    let golden: Vec<Value> = r2_fixtures::golden_jsonl("route-expected.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for lambda in [0.0, 0.5, 0.99999, 1.0] {
        for (group, queries) in &by_tokens {
            let file = dir.path().join(format!("queries-{group}.txt"));
            let body: String = queries.iter().map(|(_, t)| format!("{t}\n")).collect();
            std::fs::write(&file, body).unwrap();
            let mut cmd = r2();
            cmd.args(["route", "--json", "--embed-batch-size", "7", "--lambda"])
                .arg(lambda.to_string())
                .arg("--file")
                .arg(&file)
                .arg("--embed-url")
                .arg(format!("http://{addr}"))
                .arg("--checkpoints")
                .arg(r2_fixtures::converted_router_dir())
                .arg("--config")
                .arg(r2_fixtures::upstream_dir().join("config.json"));
            if *group == 2500 {
                cmd.args(["--input-tokens", "2500"]);
            }
            let out = ok(cmd.output().unwrap());
            assert_eq!(out.lines().count(), queries.len());
            for (line, (id, text)) in out.lines().zip(queries) {
                let ours: Value = serde_json::from_str(line).unwrap();
                assert_eq!(ours["query"], text.as_str());
                let g = golden
                    .iter()
                    .find(|g| g["id"] == *id && g["lambda"].as_f64() == Some(lambda))
                    .unwrap();
                let acceptable = g["acceptable"].as_array().unwrap();
                assert!(
                    acceptable
                        .iter()
                        .any(|p| p[0] == ours["model"] && p[1] == ours["budget"]),
                    "id {id} λ {lambda}: {line}"
                );
                if ours["model"] == g["model"] && ours["budget"] == g["budget"] {
                    for key in ["predicted_quality", "predicted_cost_usd", "risk"] {
                        assert_eq!(ours[key], g[key], "id {id} λ {lambda} {key}");
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * 40);
}

#[test]
fn progress_shows_on_a_terminal_and_not_in_a_pipe() {
    let inputs = r2_fixtures::golden_inputs();
    let table: HashMap<String, Vec<f64>> = inputs
        .iter()
        .map(|g| (format!("query{}", g.id), g.embedding.clone()))
        .collect();
    let addr = r2_fixtures::start_embeddings_server(table);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queries.txt");
    let body: String = inputs.iter().map(|g| format!("query{}\n", g.id)).collect();
    std::fs::write(&file, body).unwrap();
    let args = format!(
        "{} route --json --embed-batch-size 8 --file {} --embed-url http://{addr} --checkpoints {} \
         --config {}",
        env!("CARGO_BIN_EXE_r2"),
        file.display(),
        r2_fixtures::converted_router_dir().display(),
        r2_fixtures::upstream_dir().join("config.json").display()
    );
    // `script` runs the command on a pseudo-terminal, as a user at a shell would.
    let on_terminal = Command::new("script")
        .args(["-qec", &args, "/dev/null"])
        .stdin(Stdio::null())
        .output();
    let Ok(on_terminal) = on_terminal else {
        eprintln!("`script` (util-linux) is not installed; skipping the terminal half");
        return;
    };
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(shown.contains("40 queries routed"), "{shown}");

    let piped = r2()
        .args(["route", "--json", "--embed-batch-size", "8", "--file"])
        .arg(&file)
        .arg("--embed-url")
        .arg(format!("http://{addr}"))
        .arg("--checkpoints")
        .arg(r2_fixtures::converted_router_dir())
        .arg("--config")
        .arg(r2_fixtures::upstream_dir().join("config.json"))
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&piped.stdout).lines().count(), 40);
}

#[test]
fn embed_takes_whatever_dimension_the_server_gives() {
    // The built-in pool says 1024-d; this server's model gives 6-d vectors. `r2 embed` routes
    // nothing, so it embeds; `r2 route` with the same server says what is wrong.
    let vector = vec![0.5, -0.25, 0.125, 1.0, 0.0, -1.0];
    let addr =
        r2_fixtures::start_embeddings_server(HashMap::from([("hello".to_owned(), vector.clone())]));
    let out = ok(r2()
        .args(["embed", "--query", "hello", "--embed-url"])
        .arg(format!("http://{addr}"))
        .output()
        .unwrap());
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let got: Vec<f64> = v["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(got, vector);
    let err = failed(
        r2().args(["route", "--query", "hello", "--embed-url"])
            .arg(format!("http://{addr}"))
            .arg("--checkpoints")
            .arg(r2_fixtures::converted_router_dir())
            .output()
            .unwrap(),
    );
    assert!(err.contains("6") && err.contains("1024"), "{err}");
}
