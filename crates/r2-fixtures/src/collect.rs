//! Loopback servers for `r2 collect`'s tests: a provider whose answers and token counts depend on
//! model and budget, a judge that grades deterministically or answers garbage, an embeddings
//! server for the test queries, and the test pool.

/// The test pool: two models, 4-d embeddings.
pub const POOL: &str = r#"{
  "embedding_model": "test/embedder",
  "embedding_dim": 4,
  "default_lambda": 0.5,
  "models": {
    "alpha": {"openrouter_id": "lab/alpha", "input_price_per_million": 1.0, "output_price_per_million": 10.0},
    "beta": {"openrouter_id": "lab/beta", "input_price_per_million": 0.5, "output_price_per_million": 2.0}
  }
}"#;

/// The provider's answer for a model and budget: its text and completion tokens. Each model has a
/// natural answer length (alpha 120 tokens, beta 40) and writes `min(0.8 × budget, natural)`, so
/// quality saturates with budget as in the paper: past a few multiples of the natural length a
/// bigger budget buys nothing.
pub fn answer_of(model: &str, budget: Option<u64>) -> (String, u64) {
    let natural = if model == "lab/alpha" { 120 } else { 40 };
    let tokens = match budget {
        Some(b) => (b * 4 / 5).clamp(1, natural),
        None => natural,
    };
    (format!("answer of {model} in tokens={tokens}"), tokens)
}

/// The budget a routed request asks for, from its system message.
pub fn budget_of(body: &serde_json::Value) -> Option<u64> {
    let first = &body["messages"][0];
    if first["role"] != "system" {
        return None;
    }
    let text = first["content"].as_str().unwrap();
    let rest = text.strip_prefix("You MUST respond in ").unwrap();
    Some(rest.split(' ').next().unwrap().parse().unwrap())
}

/// What the judge gives an answer with `tokens=N` in it: rises with length and saturates.
pub fn score_of(tokens: u64) -> f64 {
    1.0 - (-(tokens as f64) / 30.0).exp()
}

#[derive(Default)]
pub struct ProviderState {
    /// Generation requests seen.
    pub calls: std::sync::atomic::AtomicUsize,
    /// From this many calls on, answer only after a long wait (0: never).
    pub slow_after: std::sync::atomic::AtomicUsize,
    /// Every request body, in arrival order.
    pub bodies: std::sync::Mutex<Vec<serde_json::Value>>,
}

/// An OpenAI-protocol provider at `http://<addr>/v1` whose answer and token count depend on the
/// model and the budget.
pub fn start_provider() -> (String, std::sync::Arc<ProviderState>) {
    use std::sync::atomic::Ordering;
    let state = std::sync::Arc::new(ProviderState::default());
    let shared = state.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let state = shared.clone();
            async move {
                let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
                state.bodies.lock().unwrap().push(body.clone());
                let slow = state.slow_after.load(Ordering::SeqCst);
                if slow > 0 && n > slow {
                    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                }
                let model = body["model"].as_str().unwrap().to_owned();
                let (text, tokens) = answer_of(&model, budget_of(&body));
                axum::Json(serde_json::json!({
                    "id": "gen", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": 20 + tokens},
                }))
            }
        }),
    );
    let addr = crate::spawn_server(app);
    (format!("http://{addr}/v1"), state)
}

/// An OpenAI-protocol judge at `http://<addr>/v1`: `Grade` grades `tokens=N` answers with
/// [`score_of`], `Garbage` answers prose without a score. Returns the request bodies it saw.
#[derive(Clone, Copy, PartialEq)]
pub enum Judge {
    Grade,
    Garbage,
}

pub fn start_judge(
    kind: Judge,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(body.clone());
                let prompt = body["messages"][0]["content"].as_str().unwrap().to_owned();
                let content = match kind {
                    Judge::Garbage => "I think it is quite good, really.".to_owned(),
                    Judge::Grade => {
                        let tokens: u64 = prompt
                            .split("tokens=")
                            .nth(1)
                            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        serde_json::json!({"score": score_of(tokens), "reason": "ok"}).to_string()
                    }
                };
                axum::Json(serde_json::json!({
                    "id": "judge", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                }))
            }
        }),
    );
    let addr = crate::spawn_server(app);
    (format!("http://{addr}/v1"), seen)
}

/// Test queries and their 4-d vectors, served by an embeddings server at `http://<addr>`.
pub fn queries() -> Vec<(String, String)> {
    (1..=6)
        .map(|i| (format!("q{i}"), format!("What is {i} plus {i}?")))
        .collect()
}

pub fn start_embedder() -> String {
    let table = queries()
        .into_iter()
        .enumerate()
        .map(|(i, (_, text))| {
            let x = i as f64;
            (text, vec![1.0, x, (x * 0.7).sin(), (x * 1.3).cos()])
        })
        .collect();
    let addr = crate::start_embeddings_server(table);
    format!("http://{addr}")
}

/// The queries as JSONL, `q1` … `q6`, the first with a reference, the last two `test`.
pub fn queries_jsonl() -> String {
    queries()
        .into_iter()
        .enumerate()
        .map(|(i, (id, text))| {
            let mut line = serde_json::json!({"id": id, "query": text});
            if i == 0 {
                line["reference"] = "2".into();
            }
            line["split"] = if i >= 4 { "test" } else { "train" }.into();
            line.to_string() + "\n"
        })
        .collect()
}
