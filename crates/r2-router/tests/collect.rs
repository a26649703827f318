//! `r2_router::collect` against loopback OpenAI-protocol servers: a provider whose answers depend
//! on model and budget, a judge that grades deterministically or answers garbage, and an
//! embeddings server.

use std::collections::HashSet;
use std::path::Path;

use r2_router::collect::{self, Clients, CollectConfig, CollectError, JudgePrompt, Record};
use r2_router::r2_core::Budget;
use r2_router::r2_llm::{ChatRequest, LlmClient, LlmOptions};

use r2_fixtures::collect::*;

fn pool() -> r2_router::r2_checkpoints::PoolConfig {
    r2_router::r2_checkpoints::PoolConfig::from_json(POOL, Path::new("pool.json")).unwrap()
}

fn settings(budgets: Vec<Budget>) -> CollectConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queries.jsonl");
    std::fs::write(&path, queries_jsonl()).unwrap();
    CollectConfig {
        queries: collect::read_queries(&path).unwrap(),
        pool: pool(),
        budgets,
        judge_model: "judge/model".into(),
        judge_prompt: JudgePrompt::default(),
        temperature: r2_router::DEFAULT_TEMPERATURE,
        concurrency: 3,
        max_spend: None,
        judge_prices: None,
        force: false,
    }
}

fn budgets() -> Vec<Budget> {
    vec![Budget::Tokens(10), Budget::Tokens(100), Budget::Unlimited]
}

fn client(base: &str) -> LlmClient {
    LlmClient::new(base, None, LlmOptions::default()).unwrap()
}

async fn run(
    config: &CollectConfig,
    dir: &Path,
    provider: &str,
    judge: &str,
    embed: &str,
) -> Result<collect::Summary, CollectError> {
    run_with(config, dir, provider, LlmOptions::default(), judge, embed).await
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn queries_are_text_lines_or_jsonl_with_unique_ids() {
    let text = collect::parse_queries("first\n\n  \nsecond\n", Path::new("q.txt")).unwrap();
    let ids: Vec<_> = text
        .iter()
        .map(|q| (q.id.as_str(), q.query.as_str()))
        .collect();
    assert_eq!(ids, [("1", "first"), ("4", "second")]);

    let jsonl = collect::parse_queries(
        "{\"query\": \"a\", \"reference\": \"r\"}\n{\"id\": 7, \"query\": \"b\", \"split\": \"test\"}\n",
        Path::new("q.jsonl"),
    )
    .unwrap();
    assert_eq!(jsonl[0].id, "1");
    assert_eq!(jsonl[0].reference.as_deref(), Some("r"));
    assert_eq!(jsonl[1].id, "7");
    assert_eq!(jsonl[1].split.as_deref(), Some("test"));

    let duplicate = collect::parse_queries(
        "{\"id\": \"x\", \"query\": \"a\"}\n{\"query\": \"b\"}\n{\"id\": \"x\", \"query\": \"c\"}\n",
        Path::new("q.jsonl"),
    )
    .unwrap_err()
    .to_string();
    assert!(duplicate.contains("q.jsonl: line 3"), "{duplicate}");
    assert!(duplicate.contains("already used on line 1"), "{duplicate}");

    // A text line that collides with an explicit id is impossible (the format is per file), but a
    // JSONL id equal to another line's number is a duplicate too.
    let collide = collect::parse_queries(
        "{\"id\": 2, \"query\": \"a\"}\n{\"query\": \"b\"}\n",
        Path::new("q.jsonl"),
    )
    .unwrap_err();
    assert!(matches!(
        collide,
        CollectError::DuplicateId {
            first: 1,
            line: 2,
            ..
        }
    ));

    let bad = collect::parse_queries(
        "{\"query\": \"a\"}\n{\"qery\": \"b\"}\n",
        Path::new("q.jsonl"),
    )
    .unwrap_err()
    .to_string();
    assert!(bad.starts_with("q.jsonl: line 2"), "{bad}");
    let split = collect::parse_queries("{\"query\": \"a\", \"split\": \"dev\"}\n", Path::new("q"))
        .unwrap_err()
        .to_string();
    assert!(split.contains("`split` must be"), "{split}");
    assert!(collect::parse_queries("\n\n", Path::new("q")).is_err());
}

#[test]
fn judge_prompts_are_checked_and_rendered() {
    let default = JudgePrompt::default();
    let text = default.render("Q?", None, "A.");
    assert!(text.contains("Q?") && text.contains("A.") && text.contains(collect::NO_REFERENCE));
    assert!(
        text.contains("{\"score\""),
        "the JSON example stays literal: {text}"
    );
    assert_eq!(default.sha256().len(), 64);

    let custom = JudgePrompt::new(
        "Q: {query} R: {reference} A: {response} {\"score\": 1}",
        "p.txt",
    )
    .unwrap();
    assert_eq!(
        custom.render("q", Some("r"), "a"),
        "Q: q R: r A: a {\"score\": 1}"
    );

    let unknown = JudgePrompt::new("{query} {answer} {response}", "p.txt")
        .unwrap_err()
        .to_string();
    assert!(
        unknown.starts_with("p.txt: unknown placeholder {answer}"),
        "{unknown}"
    );
    let missing = JudgePrompt::new("grade {query}", "p.txt")
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no {response} placeholder"), "{missing}");
}

#[test]
fn scores_are_parsed_from_judge_replies() {
    assert_eq!(collect::parse_score("{\"score\": 0.5}"), Some(0.5));
    assert_eq!(
        collect::parse_score("{\"correctness_score\": 1}"),
        Some(1.0)
    );
    assert_eq!(
        collect::parse_score("Sure: {\"score\": 0, \"reason\": \"x\"} done"),
        Some(0.0)
    );
    assert_eq!(collect::parse_score("{\"score\": 1.5}"), None);
    assert_eq!(collect::parse_score("{\"score\": \"high\"}"), None);
    assert_eq!(collect::parse_score("it is good"), None);
    assert_eq!(collect::parse_score("{\"reason\": \"no score\"}"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_routings_request_graded_and_recorded_once() {
    let (provider, state) = start_provider();
    let (judge, judged) = start_judge(Judge::Grade);
    let embed = start_embedder();
    let dir = tempfile::tempdir().unwrap();
    let config = settings(budgets());

    let summary = run(&config, dir.path(), &provider, &judge, &embed)
        .await
        .unwrap();
    assert_eq!(summary.progress.recorded, 6 * 2 * 3);
    assert_eq!(summary.progress.failed, 0);
    assert_eq!(summary.generation_calls, 36);
    assert_eq!(summary.judge_calls, 36);

    // Exactly the requests routing sends.
    let bodies = state.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 36);
    let mut expected: Vec<String> = Vec::new();
    for (_, text) in queries() {
        for id in ["lab/alpha", "lab/beta"] {
            for budget in [Some(10), Some(100), None] {
                let request =
                    ChatRequest::routed(id, &text, budget, r2_router::DEFAULT_TEMPERATURE);
                expected.push(serde_json::to_value(&request).unwrap().to_string());
            }
        }
    }
    let mut seen: Vec<String> = bodies.iter().map(|b| b.to_string()).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);

    // The judge was asked for JSON, with the query, the reference and the answer.
    let judged = judged.lock().unwrap().clone();
    assert_eq!(judged.len(), 36);
    assert!(judged
        .iter()
        .all(|b| b["response_format"]["type"] == "json_object"));
    assert!(judged.iter().all(|b| b["model"] == "judge/model"));
    let first = judged
        .iter()
        .map(|b| b["messages"][0]["content"].as_str().unwrap())
        .find(|p| p.contains("What is 1 plus 1?"))
        .unwrap();
    assert!(
        first.contains("Reference answer (may be absent):\n2\n"),
        "{first}"
    );

    let records: Vec<Record> = lines(&dir.path().join(collect::RECORDS_FILE))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(records.len(), 36);
    let keys: HashSet<_> = records
        .iter()
        .map(|r| (&r.query_id, &r.model, r.budget))
        .collect();
    assert_eq!(keys.len(), 36);
    for r in &records {
        let id = if r.model == "alpha" {
            "lab/alpha"
        } else {
            "lab/beta"
        };
        let budget = match r.budget {
            Budget::Tokens(n) => Some(u64::from(n)),
            Budget::Unlimited => None,
        };
        let (text, tokens) = answer_of(id, budget);
        assert_eq!(r.response, text);
        assert_eq!(r.output_tokens, tokens);
        assert_eq!(r.score, score_of(tokens));
        let (input, output) = if r.model == "alpha" {
            (1.0, 10.0)
        } else {
            (0.5, 2.0)
        };
        assert_eq!(
            r.cost_usd,
            20.0 * input / 1e6 + tokens as f64 * output / 1e6
        );
        let want_split = if r.query_id == "q5" || r.query_id == "q6" {
            "test"
        } else {
            "train"
        };
        assert_eq!(r.split.as_deref(), Some(want_split));
        assert_eq!(r.judge["model"], "judge/model");
    }

    let embeddings = lines(&dir.path().join(collect::EMBEDDINGS_FILE));
    assert_eq!(embeddings.len(), 6);
    assert_eq!(embeddings[0]["query_id"], "q1");
    assert_eq!(embeddings[0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(embeddings[0]["input_tokens"], 6); // "What is 1 plus 1?": 5 words × 1.3

    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(collect::MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["judge_model"], "judge/model");
    assert_eq!(
        manifest["budgets"],
        serde_json::json!([10, 100, "unlimited"])
    );
    assert_eq!(manifest["models"][0]["openrouter_id"], "lab/alpha");
    assert_eq!(
        manifest["judge_prompt_sha256"],
        JudgePrompt::default().sha256()
    );

    // A rerun sends nothing; a torn last line is dropped and its key redone.
    let records_path = dir.path().join(collect::RECORDS_FILE);
    let mut text = std::fs::read_to_string(&records_path).unwrap();
    let last_start = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    text.truncate(last_start + 20);
    std::fs::write(&records_path, &text).unwrap();
    let again = run(&config, dir.path(), &provider, &judge, &embed)
        .await
        .unwrap();
    assert_eq!(again.skipped, 35);
    assert_eq!(again.progress.recorded, 1);
    assert_eq!(state.bodies.lock().unwrap().len(), 37);
    assert_eq!(lines(&records_path).len(), 36);
    assert_eq!(lines(&dir.path().join(collect::EMBEDDINGS_FILE)).len(), 6);
    let done = run(&config, dir.path(), &provider, &judge, &embed)
        .await
        .unwrap();
    assert_eq!((done.skipped, done.progress.total), (36, 0));

    // A bad line before the last is an error naming it.
    let mut broken = std::fs::read_to_string(&records_path).unwrap();
    broken.insert_str(0, "not json\n");
    std::fs::write(&records_path, &broken).unwrap();
    let error = run(&config, dir.path(), &provider, &judge, &embed)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("records.jsonl: line 1"), "{error}");
    std::fs::write(&records_path, &broken["not json\n".len()..]).unwrap();

    // Other budgets into the same folder: refused unless forced.
    let other = settings(vec![Budget::Tokens(10), Budget::Unlimited]);
    let error = run(&other, dir.path(), &provider, &judge, &embed)
        .await
        .unwrap_err();
    assert!(
        matches!(error, CollectError::ManifestMismatch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("the budgets differs"), "{error}");
    let forced = CollectConfig {
        force: true,
        ..other
    };
    let summary = run(&forced, dir.path(), &provider, &judge, &embed)
        .await
        .unwrap();
    assert_eq!(summary.progress.total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_without_a_score_is_retried_then_a_failure() {
    use std::sync::atomic::Ordering;
    let (provider, provider_state) = start_provider();
    let (judge, judged) = start_judge(Judge::Garbage);
    let embed = start_embedder();
    let dir = tempfile::tempdir().unwrap();
    let mut config = settings(vec![Budget::Tokens(10), Budget::Unlimited]);
    config.queries.truncate(2);
    let summary = run(&config, dir.path(), &provider, &judge, &embed)
        .await
        .unwrap();
    assert_eq!(summary.progress.recorded, 0);
    assert_eq!(summary.progress.failed, 8);
    assert_eq!(
        judged.lock().unwrap().len(),
        8 * (1 + collect::JUDGE_RETRIES as usize)
    );
    assert!(
        summary.progress.spend_usd > 0.0,
        "the answers were paid for"
    );
    let failures = lines(&dir.path().join(collect::FAILURES_FILE));
    assert_eq!(failures.len(), 8);
    assert_eq!(failures[0]["stage"], "judge");
    let error = failures[0]["error"].as_str().unwrap();
    assert!(
        error.contains("after 3 judge calls") && error.contains("no JSON object with a `score`"),
        "{error}"
    );
    assert!(failures[0]["response"]
        .as_str()
        .unwrap()
        .starts_with("answer of"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join(collect::RECORDS_FILE)).unwrap(),
        ""
    );
    // The answers were kept; a dry run now counts only their grades.
    assert_eq!(lines(&dir.path().join(collect::ANSWERS_FILE)).len(), 8);
    assert_eq!(provider_state.calls.load(Ordering::SeqCst), 8);
    let estimate = collect::estimate(&config, dir.path()).unwrap();
    assert_eq!(
        (
            estimate.generations,
            estimate.regrades,
            estimate.judge_calls
        ),
        (0, 8, 8)
    );
    assert_eq!(estimate.generation_usd, 0.0);
    // The next run retries every failure, grading the kept answers without asking for them
    // again; the failures file then reports that run's, and no answer is left ungraded.
    let (good_judge, _) = start_judge(Judge::Grade);
    let retried = run(&config, dir.path(), &provider, &good_judge, &embed)
        .await
        .unwrap();
    assert_eq!((retried.skipped, retried.progress.recorded), (0, 8));
    assert_eq!((retried.generation_calls, retried.judge_calls), (0, 8));
    assert_eq!(provider_state.calls.load(Ordering::SeqCst), 8);
    assert_eq!(retried.progress.spend_usd, 0.0, "nothing new was paid for");
    assert!(lines(&dir.path().join(collect::FAILURES_FILE)).is_empty());
    assert!(lines(&dir.path().join(collect::ANSWERS_FILE)).is_empty());
    let records = lines(&dir.path().join(collect::RECORDS_FILE));
    assert_eq!(records.len(), 8);
    for r in &records {
        let tokens = r["output_tokens"].as_u64().unwrap();
        assert_eq!(r["score"].as_f64().unwrap(), score_of(tokens));
        assert!(r["cost_usd"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spend_cap_stops_starting_calls() {
    let (provider, state) = start_provider();
    let (judge, _) = start_judge(Judge::Grade);
    let embed = start_embedder();
    let dir = tempfile::tempdir().unwrap();
    let mut config = settings(budgets());
    config.concurrency = 1;
    config.max_spend = Some(1e-9);
    let summary = run(&config, dir.path(), &provider, &judge, &embed)
        .await
        .unwrap();
    assert!(summary.stopped_by_spend);
    assert_eq!(summary.progress.recorded, 1);
    assert_eq!(summary.not_started, 35);
    assert_eq!(state.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judge_counts_towards_the_spend_and_the_cap_when_its_prices_are_known() {
    let (provider, state) = start_provider();
    let (judge, _) = start_judge(Judge::Grade);
    let embed = start_embedder();
    let dir = tempfile::tempdir().unwrap();
    let mut config = settings(vec![Budget::Tokens(10), Budget::Unlimited]);
    config.queries.truncate(2);
    config.judge_prices = Some(r2_router::r2_llm::Prices {
        input_per_million: 1.0,
        output_per_million: 2.0,
    });
    let summary = run(&config, dir.path(), &provider, &judge, &embed)
        .await
        .unwrap();
    // The judge answers with usage 100 prompt and 10 completion tokens.
    let per_grade = (100.0 * 1.0 + 10.0 * 2.0) / 1e6;
    let answers: f64 = lines(&dir.path().join(collect::RECORDS_FILE))
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    let p = &summary.progress;
    assert_eq!(p.recorded, 8);
    assert!((p.judge_spend_usd - 8.0 * per_grade).abs() < 1e-15, "{p:?}");
    assert!(
        (p.spend_usd - answers - 8.0 * per_grade).abs() < 1e-15,
        "{p:?}"
    );

    // A cap the first answer alone stays under but its grade reaches stops the run there.
    let other = tempfile::tempdir().unwrap();
    config.concurrency = 1;
    let first_answer = lines(&dir.path().join(collect::RECORDS_FILE))
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    config.max_spend = Some(first_answer + per_grade / 2.0);
    let before = state.calls.load(std::sync::atomic::Ordering::SeqCst);
    let capped = run(&config, other.path(), &provider, &judge, &embed)
        .await
        .unwrap();
    assert!(capped.stopped_by_spend);
    assert_eq!((capped.progress.recorded, capped.not_started), (1, 7));
    assert_eq!(
        state.calls.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );
}

#[test]
fn the_estimate_counts_calls_and_assumes_unlimited_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = settings(budgets());
    config.queries.truncate(1);
    let estimate = collect::estimate(&config, dir.path()).unwrap();
    assert_eq!(
        (estimate.generations, estimate.judge_calls, estimate.done),
        (6, 6, 0)
    );
    // "What is 1 plus 1?" is 6 input tokens; limited budgets add 20 for the budget prompt.
    let alpha =
        (26.0 * 1.0 + 10.0 * 10.0) + (26.0 * 1.0 + 100.0 * 10.0) + (6.0 * 1.0 + 500.0 * 10.0);
    let beta = (26.0 * 0.5 + 10.0 * 2.0) + (26.0 * 0.5 + 100.0 * 2.0) + (6.0 * 0.5 + 500.0 * 2.0);
    assert!((estimate.generation_usd - (alpha + beta) / 1e6).abs() < 1e-15);
    assert_eq!(estimate.judge_usd, None, "the judge's prices are unknown");
    assert_eq!(collect::judge_prices(&config.pool, "judge/model"), None);
    // A pool model as the judge: its prices; the prompt's words plus the answer's tokens in.
    config.judge_prices = collect::judge_prices(&config.pool, "lab/beta");
    assert_eq!(
        config.judge_prices,
        Some(r2_router::r2_llm::Prices {
            input_per_million: 0.5,
            output_per_million: 2.0
        })
    );
    let judge_usd = collect::estimate(&config, dir.path())
        .unwrap()
        .judge_usd
        .unwrap();
    let prompt = r2_router::r2_core::estimate_input_tokens(&JudgePrompt::default().render(
        "What is 1 plus 1?",
        Some("2"),
        "",
    )) as f64;
    let answers = 2.0 * (10.0 + 100.0 + 500.0);
    let replies = 6.0 * collect::ASSUMED_JUDGE_REPLY_TOKENS as f64;
    let want = ((6.0 * prompt + answers) * 0.5 + replies * 2.0) / 1e6;
    assert!((judge_usd - want).abs() < 1e-15, "{judge_usd} vs {want}");
    assert!(
        !dir.path().join(collect::MANIFEST_FILE).exists(),
        "an estimate writes nothing"
    );
}

/// A provider that fails the first request of every key, with 429 (`Retry-After: 0`) or 500 in
/// turn, and answers its retry as [`start_provider`] does: bursts the chat client's retry policy
/// must absorb.
fn start_flaky_provider() -> (String, std::sync::Arc<ProviderState>) {
    use axum::response::IntoResponse;
    use std::sync::atomic::Ordering;
    let state = std::sync::Arc::new(ProviderState::default());
    let shared = state.clone();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let state = shared.clone();
            let seen = seen.clone();
            async move {
                let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
                let first_time = seen.lock().unwrap().insert(body.to_string());
                if first_time && n % 2 == 0 {
                    let error = serde_json::json!({"error": {"message": "slow down", "code": 429}});
                    return (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "0")],
                        axum::Json(error),
                    )
                        .into_response();
                }
                if first_time {
                    let error = serde_json::json!({"error": {"message": "overloaded", "code": 500}});
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(error))
                        .into_response();
                }
                state.bodies.lock().unwrap().push(body.clone());
                let model = body["model"].as_str().unwrap().to_owned();
                let (text, tokens) = answer_of(&model, budget_of(&body));
                axum::Json(serde_json::json!({
                    "id": "gen", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": 20 + tokens},
                }))
                .into_response()
            }
        }),
    );
    let addr = r2_fixtures::spawn_server(app);
    (format!("http://{addr}/v1"), state)
}

/// [`run`] with a generation client of these options; progress must count up one by one.
async fn run_with(
    config: &CollectConfig,
    dir: &Path,
    provider: &str,
    options: LlmOptions,
    judge: &str,
    embed: &str,
) -> Result<collect::Summary, CollectError> {
    let embed_options = r2_router::Options {
        embed_url: Some(embed.to_owned()),
        ..r2_router::Options::default()
    };
    let embedder = r2_router::make_embedder(&embed_options, &config.pool, Some(4))
        .await
        .unwrap();
    let generation = LlmClient::new(provider, None, options).unwrap();
    let judge = client(judge);
    let mut progress = Vec::new();
    let summary = collect::collect(
        config,
        dir,
        Clients {
            generation: &generation,
            judge: &judge,
            embedder: Some(embedder.as_ref()),
        },
        &mut |p| progress.push(p.finished),
    )
    .await?;
    assert_eq!(progress, (1..=progress.len()).collect::<Vec<_>>());
    Ok(summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_429_and_500_are_retried_and_every_answer_is_recorded() {
    let (provider, state) = start_flaky_provider();
    let (judge, _) = start_judge(Judge::Grade);
    let embed = start_embedder();
    let dir = tempfile::tempdir().unwrap();
    let config = settings(budgets());
    let options = LlmOptions {
        initial_backoff: std::time::Duration::from_millis(1),
        max_retries: 5,
        ..LlmOptions::default()
    };
    let summary = run_with(&config, dir.path(), &provider, options, &judge, &embed)
        .await
        .unwrap();
    assert_eq!(summary.progress.recorded, 36);
    assert_eq!(summary.progress.failed, 0);
    let records = lines(&dir.path().join("records.jsonl"));
    assert_eq!(records.len(), 36);
    // Every key failed once, then was answered once.
    assert_eq!(state.bodies.lock().unwrap().len(), 36);
    assert_eq!(state.calls.load(std::sync::atomic::Ordering::SeqCst), 72);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_provider_call_times_out_into_a_failure_and_the_run_ends() {
    let (provider, state) = start_provider();
    // The first 4 calls answer; the rest hang for minutes.
    state
        .slow_after
        .store(4, std::sync::atomic::Ordering::SeqCst);
    let (judge, _) = start_judge(Judge::Grade);
    let embed = start_embedder();
    let dir = tempfile::tempdir().unwrap();
    let mut config = settings(vec![Budget::Tokens(10)]);
    config.concurrency = 4;
    let options = LlmOptions {
        timeout: std::time::Duration::from_millis(300),
        max_retries: 0,
        ..LlmOptions::default()
    };
    let summary = run_with(&config, dir.path(), &provider, options, &judge, &embed)
        .await
        .unwrap();
    // 6 queries × 2 models × 1 budget = 12 keys: 4 answered, the others timed out.
    assert_eq!(summary.progress.recorded + summary.progress.failed, 12);
    assert_eq!(summary.progress.recorded, 4);
    let failures = lines(&dir.path().join("failures.jsonl"));
    assert_eq!(failures.len(), 8);
    assert!(
        failures
            .iter()
            .all(|f| f["error"].as_str().unwrap().contains("longer than")
                || f["error"].as_str().unwrap().contains("time")),
        "{failures:?}"
    );
}
