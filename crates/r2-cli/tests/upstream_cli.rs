//! Upstream's CLI as it is: `r2 route --checkpoint-dir <upstream r2_router folder>` and
//! `--hf-repo` (against the Hub stand-in of `r2_fixtures::hub`) make the converted router's
//! decisions; `r2 convert`; and the text route.py prints, byte for byte, with the expected text
//! written here from upstream's `print_human_readable` and its main loop (route.py at b0b2291)
//! and the golden decisions.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};

use r2_core::estimate_input_tokens;
use r2_fixtures::hub::{closed_endpoint, HubRepo, HubServer};
use serde_json::Value;

mod common;

use common::{failed, ok, r2};

const LAMBDAS: [&str; 9] = [
    "0", "0.5", "0.9", "0.99", "0.999", "0.9999", "0.99999", "0.999999", "1",
];

fn golden_input() -> String {
    r2_fixtures::golden_dir()
        .join("route-input.jsonl")
        .display()
        .to_string()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// `r2 route --embeddings <golden> --json --lambda λ` with the converted router and the upstream
/// pool: the reference output.
fn reference(lambda: &str) -> String {
    ok(run(r2()
        .args(["route", "--json", "--lambda", lambda, "--embeddings"])
        .arg(golden_input())
        .arg("--checkpoints")
        .arg(r2_fixtures::converted_router_dir())
        .arg("--config")
        .arg(r2_fixtures::upstream_dir().join("config.json"))))
}

#[test]
fn an_upstream_folder_routes_like_the_converted_router() {
    for lambda in LAMBDAS {
        let ours = ok(run(r2()
            .args(["route", "--json", "--lambda", lambda, "--embeddings"])
            .arg(golden_input())
            .arg("--checkpoint-dir")
            .arg(r2_fixtures::upstream_dir())));
        assert_eq!(ours, reference(lambda), "λ {lambda}");
        assert_eq!(ours.lines().count(), 40);
    }
}

fn upstream_hub() -> HubServer {
    let mut repo = HubRepo::from_dir(&r2_fixtures::upstream_dir());
    repo.files
        .insert(".gitattributes".into(), b"*.joblib filter=lfs".to_vec());
    HubServer::start(HashMap::from([("authors/R2-Router".to_owned(), repo)]))
}

fn with_hub<'a>(
    cmd: &'a mut Command,
    endpoint: &str,
    hf_home: &std::path::Path,
) -> &'a mut Command {
    cmd.env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
}

#[test]
fn hf_repo_routes_like_the_converted_router_and_needs_the_network_once() {
    let hub = upstream_hub();
    let hf_home = tempfile::tempdir().unwrap();
    for (i, lambda) in LAMBDAS.iter().enumerate() {
        // The first run downloads; later ones find the Hub down and use the cache.
        let endpoint = if i == 0 {
            hub.endpoint.clone()
        } else {
            closed_endpoint()
        };
        let ours = ok(run(with_hub(
            r2().args(["route", "--json", "--lambda", lambda, "--embeddings"])
                .arg(golden_input())
                .args(["--hf-repo", "authors/R2-Router"]),
            &endpoint,
            hf_home.path(),
        )));
        assert_eq!(ours, reference(lambda), "λ {lambda}");
    }
    let requests = hub.requests();
    assert!(
        !requests.iter().any(|r| r.contains(".gitattributes")),
        "{requests:?}"
    );

    // Offline with an empty cache: what is missing, where, and what to do.
    let empty = tempfile::tempdir().unwrap();
    let err = failed(run(with_hub(
        r2().args(["route", "--embeddings"])
            .arg(golden_input())
            .args(["--hf-repo", "authors/R2-Router@v1"]),
        &closed_endpoint(),
        empty.path(),
    )
    .env("HF_HUB_OFFLINE", "1")));
    let cache = empty.path().join("hub").display().to_string();
    for needle in [
        "authors/R2-Router@v1",
        cache.as_str(),
        "HF_HUB_OFFLINE",
        "--checkpoints",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    // --checkpoints and --hf-repo together are refused by the parser.
    let err = failed(run(r2().args([
        "route",
        "--embeddings",
        "-",
        "--hf-repo",
        "a/b",
        "--checkpoints",
        "x",
    ])));
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn convert_writes_a_router_and_pool_that_route_like_the_source() {
    let hub = upstream_hub();
    let hf_home = tempfile::tempdir().unwrap();
    let from_dir = tempfile::tempdir().unwrap();
    let from_hub = tempfile::tempdir().unwrap();
    ok(run(r2()
        .args(["convert", "--from"])
        .arg(r2_fixtures::upstream_dir())
        .arg("--out")
        .arg(from_dir.path())));
    ok(run(with_hub(
        r2().args(["convert", "--hf-repo", "authors/R2-Router", "--out"])
            .arg(from_hub.path()),
        &hub.endpoint,
        hf_home.path(),
    )));
    let reference_bytes =
        std::fs::read(r2_fixtures::converted_router_dir().join("router.safetensors")).unwrap();
    // From the same folder, the same bytes (the `source` metadata names the folder converted).
    assert_eq!(
        std::fs::read(from_dir.path().join("router.safetensors")).unwrap(),
        reference_bytes
    );
    for out in [from_dir.path(), from_hub.path()] {
        assert!(out.join("config.json").is_file());
        // No --config: the pool written beside the router is used.
        let ours = ok(run(r2()
            .args(["route", "--json", "--lambda", "0.99999", "--embeddings"])
            .arg(golden_input())
            .arg("--checkpoints")
            .arg(out)));
        assert_eq!(ours, reference("0.99999"));
    }
    let err = failed(run(r2().args(["convert", "--out", "x"])));
    assert!(err.contains("--from") && err.contains("--hf-repo"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// route.py's text, byte for byte

/// One golden line: its id, λ (as written), choice and, at λ = 0.99999, the ranked options as
/// route.py's `--verbose` prints them (the numbers as Python wrote them).
struct Golden {
    id: u64,
    lambda: String,
    model: String,
    budget: String,
    unique: bool,
    options: Vec<String>,
}

fn golden() -> Vec<Golden> {
    let text =
        std::fs::read_to_string(r2_fixtures::golden_dir().join("route-expected.jsonl")).unwrap();
    text.lines()
        .map(|raw| {
            let v: Value = serde_json::from_str(raw).unwrap();
            let budget = match &v["budget"] {
                Value::String(s) => s.clone(),
                n => n.to_string(),
            };
            Golden {
                id: v["id"].as_u64().unwrap(),
                lambda: raw_number(raw, "lambda").to_owned(),
                model: v["model"].as_str().unwrap().to_owned(),
                budget,
                unique: v["acceptable"].as_array().unwrap().len() == 1,
                options: raw_options(raw),
            }
        })
        .collect()
}

/// The raw text of a top-level number in a JSON line, as written.
fn raw_number<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(&format!("\"{key}\": ")).unwrap() + key.len() + 4;
    let end = line[start..].find([',', '}']).unwrap() + start;
    &line[start..end]
}

/// `all_options` entries `[model, budget, quality, tokens, cost, risk]` as route.py's verbose
/// lines: `- {model} @ {budget}: quality={q}, cost=${cost}, risk={risk}` (Python's `str` of a
/// float is the `repr` that `json.dumps` wrote).
fn raw_options(line: &str) -> Vec<String> {
    let Some(start) = line.find("\"all_options\": [") else {
        return Vec::new();
    };
    let rest = &line[start + "\"all_options\": [".len()..];
    let end = rest.find("]]").unwrap();
    rest[..end + 1]
        .split("], [")
        .map(|entry| {
            let entry = entry.trim_start_matches('[').trim_end_matches(']');
            let parts: Vec<&str> = entry.split(", ").collect();
            assert_eq!(parts.len(), 6, "{entry}");
            format!(
                "- {} @ {}: quality={}, cost=${}, risk={}",
                parts[0].trim_matches('"'),
                parts[1].trim_matches('"'),
                parts[2],
                parts[4],
                parts[5]
            )
        })
        .collect()
}

/// route.py's `print_human_readable(output, candidates, include_response=False)`.
fn human(candidates: &[String], model: &str, budget: &str) -> String {
    format!(
        "Candidate LLMs:\n{}\n\nSelected LLM: {model}\n\nSelected budget: {budget}\n",
        candidates.join(", ")
    )
}

fn pool_names() -> Vec<String> {
    r2_fixtures::upstream_pool()
        .models
        .into_iter()
        .map(|m| m.name)
        .collect()
}

/// Golden input lines whose decision at `lambda` is unique (any correct router prints it).
fn unique_at<'a>(golden: &'a [Golden], lambda: &str) -> Vec<&'a Golden> {
    golden
        .iter()
        .filter(|g| g.lambda == lambda && g.unique)
        .collect()
}

fn input_lines(ids: &[u64]) -> String {
    let text = std::fs::read_to_string(golden_input()).unwrap();
    text.lines()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            ids.contains(&v["id"].as_u64().unwrap())
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn route_stdin(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = r2()
        .arg("route")
        .arg("--checkpoint-dir")
        .arg(r2_fixtures::upstream_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.to_owned();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    ok(out)
}

#[test]
fn route_only_text_is_route_pys_byte_for_byte() {
    let golden = golden();
    let names = pool_names();
    for lambda in ["0.0", "0.99999", "1.0"] {
        let chosen = unique_at(&golden, lambda);
        assert!(chosen.len() >= 10, "λ {lambda}: {} unique", chosen.len());
        let ids: Vec<u64> = chosen.iter().map(|g| g.id).collect();
        let ours = route_stdin(
            &["--embeddings", "-", "--lambda", lambda],
            &input_lines(&ids),
        );
        // route.py: each query's block, and a blank line between queries.
        let expected: Vec<String> = chosen
            .iter()
            .map(|g| human(&names, &g.model, &g.budget))
            .collect();
        assert_eq!(ours, expected.join("\n"), "λ {lambda}");
    }
}

#[test]
fn verbose_text_is_route_pys_byte_for_byte() {
    let golden = golden();
    let names = pool_names();
    let chosen = unique_at(&golden, "0.99999");
    let ids: Vec<u64> = chosen.iter().map(|g| g.id).collect();
    let ours = route_stdin(
        &["--embeddings", "-", "--lambda", "0.99999", "--verbose"],
        &input_lines(&ids),
    );
    // from_pretrained(verbose=True) prints the loaded models first; then per query the block,
    // "\nAll options:" and every option ranked by (rounded) risk, a blank line between queries.
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    let mut expected = format!(
        "R2-Router loaded {} models: [{}]\n",
        names.len(),
        quoted.join(", ")
    );
    let blocks: Vec<String> = chosen
        .iter()
        .map(|g| {
            assert_eq!(g.options.len(), 176);
            format!(
                "{}\nAll options:\n{}\n",
                human(&names, &g.model, &g.budget),
                g.options.join("\n")
            )
        })
        .collect();
    expected.push_str(&blocks.join("\n"));
    assert_eq!(ours, expected);
}

#[test]
fn file_and_generation_text_is_route_pys_byte_for_byte() {
    let golden = golden();
    let inputs = r2_fixtures::golden_inputs();
    let names = pool_names();
    let mut table = HashMap::new();
    let mut texts = HashMap::new();
    for g in inputs.iter().filter(|g| g.input_tokens != 2500) {
        let text = r2_fixtures::text_with_estimate(g.id, g.input_tokens);
        assert_eq!(estimate_input_tokens(&text), g.input_tokens);
        table.insert(text.clone(), g.embedding.clone());
        texts.insert(g.id, text);
    }
    let embed = r2_fixtures::start_embeddings_server(table);
    let chosen: Vec<&Golden> = unique_at(&golden, "0.0")
        .into_iter()
        .filter(|g| texts.contains_key(&g.id))
        .collect();
    assert!(chosen.len() >= 5);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queries.txt");
    // A byte-order mark and blank lines, as files from editors have them.
    let body: String = chosen
        .iter()
        .map(|g| format!("{}\n\n", texts[&g.id]))
        .collect();
    std::fs::write(&file, format!("\u{feff}{body}")).unwrap();
    let ours = ok(run(r2()
        .args(["route", "--lambda", "0", "--embed-url"])
        .arg(format!("http://{embed}"))
        .arg("--file")
        .arg(&file)
        .arg("--checkpoint-dir")
        .arg(r2_fixtures::upstream_dir())));
    let expected: Vec<String> = chosen
        .iter()
        .map(|g| human(&names, &g.model, &g.budget))
        .collect();
    assert_eq!(ours, expected.join("\n"));

    // With generation (--all-models: route.py offers every model): the block, a blank line,
    // 40 dashes, "\nResponse:" and the answer; a blank line between queries.
    let (chat, _) = r2_fixtures::start_chat_server(r2_fixtures::ChatReply::Ok);
    let pool = r2_fixtures::upstream_pool();
    for stream in [false, true] {
        let mut cmd = r2();
        cmd.args(["route", "--lambda", "0", "--all-models", "--embed-url"])
            .arg(format!("http://{embed}"))
            .arg("--file")
            .arg(&file)
            .arg("--checkpoint-dir")
            .arg(r2_fixtures::upstream_dir())
            .arg("--llm-api-base")
            .arg(format!("http://{chat}/api/v1"))
            .env("OPENROUTER_API_KEY", "sk-test");
        if stream {
            cmd.arg("--stream");
        }
        let ours = ok(run(&mut cmd));
        let expected: Vec<String> = chosen
            .iter()
            .map(|g| {
                let id = &pool.model(&g.model).unwrap().openrouter_id;
                format!(
                    "{}\n{}\n\nResponse:\nAnswer from {id}.\n",
                    human(&names, &g.model, &g.budget),
                    "-".repeat(40)
                )
            })
            .collect();
        assert_eq!(ours, expected.join("\n"), "stream {stream}");
    }
}

#[test]
fn eval_reads_upstream_folders_and_hub_repositories_too() {
    // Three golden queries with labels for every model and budget of the released pool.
    let pool = r2_fixtures::upstream_pool();
    let mut budgets: Vec<String> = r2_fixtures::upstream_router()
        .budgets()
        .iter()
        .map(u32::to_string)
        .collect();
    budgets.push("\"unlimited\"".into());
    let dir = tempfile::tempdir().unwrap();
    let mut records = String::new();
    let mut embeddings = String::new();
    for (q, input) in r2_fixtures::golden_inputs().iter().take(3).enumerate() {
        let vector: Vec<String> = input.embedding.iter().map(|v| v.to_string()).collect();
        embeddings.push_str(&format!(
            "{{\"id\": \"q{q}\", \"embedding\": [{}]}}\n",
            vector.join(", ")
        ));
        for (m, model) in pool.models.iter().enumerate() {
            for (b, budget) in budgets.iter().enumerate() {
                let score = ((q + m + b) % 5) as f64 / 4.0;
                records.push_str(&format!(
                    "{{\"query_id\": \"q{q}\", \"model\": \"{}\", \"budget\": {budget}, \"score\": {score}, \"output_tokens\": {}}}\n",
                    model.name,
                    10 * (b + 1)
                ));
            }
        }
    }
    let data = dir.path().join("records.jsonl");
    let emb = dir.path().join("embeddings.jsonl");
    std::fs::write(&data, records).unwrap();
    std::fs::write(&emb, embeddings).unwrap();
    let eval = |cmd: &mut Command, source: &[std::ffi::OsString]| -> String {
        cmd.args(["eval", "--json", "--lambdas", "0,0.99999,1", "--data"])
            .arg(&data)
            .arg("--embeddings")
            .arg(&emb)
            .args(source);
        ok(run(cmd))
    };
    let reference = eval(
        &mut r2(),
        &[
            "--checkpoints".into(),
            r2_fixtures::converted_router_dir().into(),
            "--config".into(),
            r2_fixtures::upstream_dir().join("config.json").into(),
        ],
    );
    let from_folder = eval(
        &mut r2(),
        &[
            "--checkpoint-dir".into(),
            r2_fixtures::upstream_dir().into(),
        ],
    );
    assert_eq!(from_folder, reference);
    let hub = upstream_hub();
    let hf_home = tempfile::tempdir().unwrap();
    let from_hub = eval(
        with_hub(&mut r2(), &hub.endpoint, hf_home.path()),
        &["--hf-repo".into(), "authors/R2-Router".into()],
    );
    assert_eq!(from_hub, reference);
}

/// `r2 serve` with `source` (e.g. `--checkpoint-dir DIR`): the decision `/v1/route` gives for
/// every golden embedding at the default λ, as (model, budget) pairs.
fn serve_decisions(source: &[std::ffi::OsString], env: &[(&str, &std::ffi::OsStr)]) -> Vec<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let table: HashMap<String, Vec<f64>> = HashMap::from([("unused".to_owned(), vec![0.0; 1024])]);
    let embed = r2_fixtures::start_embeddings_server(table);
    let mut cmd = r2();
    cmd.args(["serve", "--port", "0", "--embed-url"])
        .arg(format!("http://{embed}"))
        .args(source)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let address = line
        .strip_prefix("r2 serve: listening on http://")
        .and_then(|rest| rest.split_once(' '))
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .0
        .to_owned();
    let mut decisions = Vec::new();
    for input in r2_fixtures::golden_inputs() {
        let body =
            serde_json::json!({"embedding": input.embedding, "input_tokens": input.input_tokens})
                .to_string();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "POST /v1/route HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (_, json) = response.split_once("\r\n\r\n").unwrap();
        let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {response}"));
        decisions.push(format!("{} @ {}", v["model"], v["budget"]));
    }
    let _ = child.kill();
    let _ = child.wait();
    decisions
}

#[test]
fn serve_reads_upstream_folders_and_hub_repositories_too() {
    let golden = golden();
    let expected: Vec<String> = r2_fixtures::golden_inputs()
        .iter()
        .map(|input| {
            let g = golden
                .iter()
                .find(|g| g.id == input.id && g.lambda == "0.99999")
                .unwrap();
            let budget = if g.budget == "unlimited" {
                "\"unlimited\"".to_owned()
            } else {
                g.budget.clone()
            };
            format!("\"{}\" @ {budget}", g.model)
        })
        .collect();
    let folder = serve_decisions(
        &[
            "--checkpoint-dir".into(),
            r2_fixtures::upstream_dir().into(),
        ],
        &[],
    );
    assert_eq!(folder, expected);
    let hub = upstream_hub();
    let hf_home = tempfile::tempdir().unwrap();
    let from_hub = serve_decisions(
        &["--hf-repo".into(), "authors/R2-Router".into()],
        &[
            ("HF_ENDPOINT", hub.endpoint.as_ref()),
            ("HF_HOME", hf_home.path().as_os_str()),
            ("HF_HUB_OFFLINE", "0".as_ref()),
        ],
    );
    assert_eq!(from_hub, expected);
}
