//! `r2 route --llm-api-base`: route, then generate with the chosen model through an OpenAI-compatible
//! chat-completions server started inside the test (plain JSON and server-sent events), with the
//! golden embeddings served by an embeddings server in the test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const KEY: &str = "sk-or-test-SECRET-4242";

/// An embeddings server that knows the golden embeddings as `query<id>`.
fn embeddings() -> SocketAddr {
    let table: HashMap<String, Vec<f64>> = r2_fixtures::golden_inputs()
        .into_iter()
        .map(|g| (format!("query{}", g.id), g.embedding))
        .collect();
    r2_fixtures::start_embeddings_server(table)
}

fn r2(chat: SocketAddr, embed: SocketAddr) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r2"));
    cmd.env_remove("R2_CHECKPOINTS")
        .env_remove("R2_CONFIG")
        .env_remove("OPENROUTER_API_KEY")
        .stdin(Stdio::null())
        .arg("route")
        .arg("--checkpoints")
        .arg(r2_fixtures::converted_router_dir())
        .arg("--embed-url")
        .arg(format!("http://{embed}"))
        .arg("--llm-api-base")
        .arg(format!("http://{chat}/api/v1"));
    cmd
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "r2 failed: {stderr}");
    assert!(!stderr.contains(KEY), "the key leaked to stderr");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains(KEY), "the key leaked to stdout");
    stdout
}

fn pool() -> r2_checkpoints::PoolConfig {
    r2_fixtures::upstream_pool()
}

const BUDGET_PROMPT: &str =
    "You MUST respond in {budget} tokens or fewer. Directly give the answer follow the format WITHOUT ANY explanation.";

/// Checks the request the chat server saw for a decision.
fn check_request(seen: &r2_fixtures::SeenChat, decision: &Value, query: &str) {
    assert_eq!(seen.body["model"], decision["openrouter_id"]);
    assert_eq!(seen.body["temperature"], 0.7);
    let messages = seen.body["messages"].as_array().unwrap();
    match &decision["budget"] {
        Value::String(s) => {
            assert_eq!(s, "unlimited");
            assert_eq!(messages.len(), 1);
        }
        budget => {
            assert_eq!(messages.len(), 2);
            assert_eq!(messages[0]["role"], "system");
            assert_eq!(
                messages[0]["content"],
                BUDGET_PROMPT.replace("{budget}", &budget.to_string())
            );
        }
    }
    let user = messages.last().unwrap();
    assert_eq!(
        (user["role"].as_str(), user["content"].as_str()),
        (Some("user"), Some(query))
    );
}

#[test]
fn json_output_has_upstream_keys_the_answer_usage_and_cost() {
    let (chat, seen) = r2_fixtures::start_chat_server(r2_fixtures::ChatReply::Ok);
    let embed = embeddings();
    let mut queries = Vec::new();
    for lambda in ["0", "0.5", "0.99999"] {
        for id in [0, 5, 17] {
            let query = format!("query{id}");
            let out = ok(r2(chat, embed)
                .args([
                    "--json",
                    "--llm-api-key",
                    KEY,
                    "--lambda",
                    lambda,
                    "--query",
                    &query,
                ])
                .output()
                .unwrap());
            let v: Value = serde_json::from_str(out.trim()).unwrap();
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "query",
                    "model",
                    "openrouter_id",
                    "budget",
                    "predicted_quality",
                    "risk",
                    "response",
                    "usage",
                    "cost_usd"
                ]
            );
            assert_eq!(v["query"], query.as_str());
            assert_eq!(
                v["response"],
                format!("Answer from {}.", v["openrouter_id"].as_str().unwrap())
            );
            assert_eq!(
                v["usage"],
                json!({"prompt_tokens": 12, "completion_tokens": 5})
            );
            let model = pool().model(v["model"].as_str().unwrap()).unwrap().clone();
            let cost = 12.0 * model.input_price_per_million / 1e6
                + 5.0 * model.output_price_per_million / 1e6;
            assert!((v["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-15);
            // With an API, only models served there are candidates.
            assert!(
                model.available,
                "{} is not available on OpenRouter",
                model.name
            );
            queries.push((v, query));
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), queries.len());
    for (s, (decision, query)) in seen.iter().zip(&queries) {
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
        check_request(s, decision, query);
    }
}

#[test]
fn human_output_has_the_rule_and_the_response_and_streams_the_same_text() {
    let (chat, seen) = r2_fixtures::start_chat_server(r2_fixtures::ChatReply::Ok);
    let embed = embeddings();
    let available: Vec<String> = pool()
        .models
        .iter()
        .filter(|m| m.available)
        .map(|m| m.name.clone())
        .collect();
    let plain = ok(r2(chat, embed)
        .env("OPENROUTER_API_KEY", KEY)
        .args(["--query", "query3", "--lambda", "0.5"])
        .output()
        .unwrap());
    let streamed = ok(r2(chat, embed)
        .env("OPENROUTER_API_KEY", KEY)
        .args(["--query", "query3", "--lambda", "0.5", "--stream"])
        .output()
        .unwrap());
    assert_eq!(plain, streamed);
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines[0], "Candidate LLMs:");
    assert_eq!(lines[1], available.join(", "));
    assert!(lines[3].starts_with("Selected LLM: "));
    assert!(lines[5].starts_with("Selected budget: "));
    assert_eq!(lines[7], "-".repeat(40));
    assert_eq!(lines[9], "Response:");
    assert!(lines[10].starts_with("Answer from "), "{plain}");
    assert_eq!([lines[2], lines[4], lines[6], lines[8]], [""; 4]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body.get("stream"), None);
    assert_eq!(seen[1].body["stream"], true);
    // The key came from the environment.
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {KEY}"))));
}

#[test]
fn all_models_and_models_widen_or_narrow_the_candidates() {
    let (chat, _) = r2_fixtures::start_chat_server(r2_fixtures::ChatReply::Ok);
    let embed = embeddings();
    let unavailable: Vec<String> = pool()
        .models
        .iter()
        .filter(|m| !m.available)
        .map(|m| m.name.clone())
        .collect();
    // At the default λ most golden queries pick a self-hosted-only model (gemma-3-270m-it,
    // gemma-3-1b-it) when every model is a candidate; by default only served models are.
    let mut picked_unavailable = 0;
    for id in 0..8 {
        let query = format!("query{id}");
        let all = ok(r2(chat, embed)
            .args(["--json", "--all-models", "--query", &query])
            .output()
            .unwrap());
        let v: Value = serde_json::from_str(all.trim()).unwrap();
        if unavailable.iter().any(|m| v["model"] == m.as_str()) {
            picked_unavailable += 1;
        }
        let served = ok(r2(chat, embed)
            .args(["--json", "--query", &query])
            .output()
            .unwrap());
        let v: Value = serde_json::from_str(served.trim()).unwrap();
        assert!(
            !unavailable.iter().any(|m| v["model"] == m.as_str()),
            "{served}"
        );
    }
    assert!(
        picked_unavailable > 0,
        "no golden query picks a self-hosted model"
    );
    let only = ok(r2(chat, embed)
        .args([
            "--json",
            "--lambda",
            "0",
            "--models",
            "gemma-3-4b-it",
            "--query",
            "query0",
        ])
        .output()
        .unwrap());
    let v: Value = serde_json::from_str(only.trim()).unwrap();
    assert_eq!(v["model"], "gemma-3-4b-it");
}

#[test]
fn a_rejected_key_is_a_clear_error_that_does_not_show_the_key() {
    let (chat, seen) = r2_fixtures::start_chat_server(r2_fixtures::ChatReply::Unauthorized);
    let embed = embeddings();
    let out = r2(chat, embed)
        .args(["--llm-api-key", KEY, "--query", "query1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OPENROUTER_API_KEY"), "{stderr}");
    assert!(stderr.contains("--llm-api-key"), "{stderr}");
    assert!(stderr.contains("--query: line 1"), "{stderr}");
    assert!(!stderr.contains(KEY), "the key leaked: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(KEY));
    // A rejected key is not retried.
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn generating_needs_the_query_text() {
    let (chat, _) = r2_fixtures::start_chat_server(r2_fixtures::ChatReply::Ok);
    let embed = embeddings();
    let out = r2(chat, embed)
        .arg("--embeddings")
        .arg(r2_fixtures::golden_dir().join("route-input.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the query text"));
}

#[test]
fn a_failing_choice_falls_back_to_the_next_best_model() {
    let embed = embeddings();
    // Where the choice goes without failures.
    let (plain, _) = r2_fixtures::start_chat_server(r2_fixtures::ChatReply::Ok);
    let out = ok(r2(plain, embed)
        .args(["--query", "query0", "--json"])
        .env("OPENROUTER_API_KEY", KEY)
        .output()
        .unwrap());
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(first.get("fallback").is_none(), "{first}");
    let chosen = first["openrouter_id"].as_str().unwrap().to_owned();

    // A provider on which the chosen model is overloaded.
    let failing_chosen = || {
        r2_fixtures::start_chat_server_with(
            r2_fixtures::ChatReply::Ok,
            r2_fixtures::ChatServerOptions {
                failing: [(
                    chosen.clone(),
                    r2_fixtures::ModelFailure::Status(503, "overloaded"),
                )]
                .into_iter()
                .collect(),
                ..Default::default()
            },
        )
    };
    let (chat, seen) = failing_chosen();
    let out = r2(chat, embed)
        .args(["--query", "query0", "--json"])
        .env("OPENROUTER_API_KEY", KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = ok(out);
    let answer: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    // The decision as upstream prints it, and what answered.
    assert_eq!(answer["openrouter_id"], chosen.as_str());
    let fallback = &answer["fallback"];
    let answered = fallback["openrouter_id"].as_str().unwrap();
    assert_ne!(answered, chosen);
    assert_eq!(answer["response"], format!("Answer from {answered}."));
    let attempts = fallback["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("503"),
        "{answer}"
    );
    assert!(attempts[1]["error"].is_null());
    assert!(stderr.contains("answered by"), "{stderr}");
    // The retry policy first (5xx retried on the same model), then the next model.
    let seen = seen.lock().unwrap();
    let (last, before) = seen.split_last().unwrap();
    assert_eq!(last.body["model"], answered);
    assert!(!before.is_empty() && before.iter().all(|s| s.body["model"] == chosen.as_str()));

    // --fallbacks 0: the failure is the answer.
    drop(seen);
    let (chat, _) = failing_chosen();
    let out = r2(chat, embed)
        .args(["--query", "query0", "--json", "--fallbacks", "0"])
        .env("OPENROUTER_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = r2(plain, embed)
        .args(["--query", "query0", "--deadline", "0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--deadline must be"));
}
