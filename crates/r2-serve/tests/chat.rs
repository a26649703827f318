//! `POST /v1/chat/completions`: routed (plain and streamed), overrides, unrouted forwards, and the
//! provider's failures.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use r2_core::{Budget, Decision, RouteParams};
use r2_fixtures::{ChatReply, ChatServerOptions, GoldenInput};
use serde_json::{json, Value};

/// The decision the library makes for a golden input sent as the text `query<id>` (whose
/// estimated input tokens are 1).
fn expected(gateway: &Gateway, g: &GoldenInput, params: &RouteParams) -> Decision {
    gateway.state.r2().route(&g.embedding, 1, params).unwrap()
}

fn golden(id: u64) -> GoldenInput {
    r2_fixtures::golden_inputs()
        .into_iter()
        .find(|g| g.id == id)
        .unwrap()
}

/// A golden input and λ whose decision, over the default candidates, has a limited budget (or,
/// with `unlimited`, none).
fn find_case(gateway: &Gateway, unlimited: bool) -> (GoldenInput, f64, Decision) {
    for lambda in [0.99999, 0.9999, 0.999, 0.99, 0.9, 0.5, 0.0] {
        for g in r2_fixtures::golden_inputs() {
            let mut params = gateway.state.default_params().clone();
            params.lambda = lambda;
            let d = expected(gateway, &g, &params);
            if (d.choice.budget == Budget::Unlimited) == unlimited {
                return (g, lambda, d);
            }
        }
    }
    panic!("no golden case with unlimited = {unlimited}");
}

#[tokio::test]
async fn routed_chat_puts_the_budget_prompt_first_calls_the_chosen_model_and_names_it() {
    let gateway = Gateway::start(Setup::default()).await;
    let (g, lambda, _) = find_case(&gateway, false);
    // Routed on the first user message (the embeddings server knows only `query<id>`), with the
    // whole prompt's input tokens.
    let messages = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": format!("query{}", g.id)},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "a follow-up question"},
    ]);
    let mut params = gateway.state.default_params().clone();
    params.lambda = lambda;
    let tokens = r2_router::chat::prompt_tokens(r2_router::chat::routing_prompt(
        messages.as_array().unwrap(),
        r2_router::RouteOn::First,
    ));
    let decision = gateway
        .state
        .r2()
        .route(&g.embedding, tokens, &params)
        .unwrap();
    let body = json!({
        "model": "r2-router",
        "messages": messages,
        "temperature": 0.2,
        "max_tokens": 77,
        "user": "u-1",
        "r2": {"lambda": lambda},
    });

    let response = gateway.post("/v1/chat/completions", &body).await;

    assert_eq!(response.status(), 200);
    let r2 = gateway.state.r2();
    let entry = r2.pool_model(decision.choice.model);
    let option = r2.report().option(&decision.choice);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("x-r2-model"), entry.name);
    assert_eq!(header("x-r2-budget"), decision.choice.budget.to_string());
    assert_eq!(
        header("x-r2-predicted-quality").parse::<f64>().unwrap(),
        option.predicted_quality
    );
    assert_eq!(
        header("x-r2-predicted-cost-usd").parse::<f64>().unwrap(),
        option.predicted_cost_usd
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["model"], entry.name.as_str());
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        format!("Answer from {}.", entry.openrouter_id)
    );

    let seen = gateway.provider_requests();
    assert_eq!(seen.len(), 1);
    let sent = &seen[0].body;
    assert_eq!(sent["model"], entry.openrouter_id.as_str());
    let Budget::Tokens(budget) = decision.choice.budget else {
        unreachable!()
    };
    let mut messages = vec![json!({
        "role": "system",
        "content": BUDGET_PROMPT.replace("{budget}", &budget.to_string()),
    })];
    messages.extend(body["messages"].as_array().unwrap().iter().cloned());
    assert_eq!(sent["messages"], Value::Array(messages));
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["max_tokens"], 77);
    assert_eq!(sent["user"], "u-1");
    assert!(sent.get("r2").is_none(), "the r2 object is not forwarded");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
}

#[tokio::test]
async fn routed_chat_with_an_unlimited_budget_adds_no_system_message() {
    let gateway = Gateway::start(Setup::default()).await;
    let (g, lambda, decision) = find_case(&gateway, true);
    let mut body = chat("r2-router", &format!("query{}", g.id));
    body["r2"] = json!({"lambda": lambda});

    let response = gateway.post("/v1/chat/completions", &body).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-r2-budget"], "unlimited");
    let seen = gateway.provider_requests();
    let entry = gateway.state.r2().pool_model(decision.choice.model);
    assert_eq!(seen[0].body["model"], entry.openrouter_id.as_str());
    assert_eq!(seen[0].body["messages"], body["messages"]);
}

#[tokio::test]
async fn routed_stream_reaches_the_client_piece_by_piece_with_the_model_renamed() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let gateway = Gateway::start(Setup {
        provider: Some((
            ChatReply::Ok,
            ChatServerOptions {
                gate: Some(gate.clone()),
                openai_chunks: true,
                ..ChatServerOptions::default()
            },
        )),
        ..Setup::default()
    })
    .await;
    let g = golden(7);
    let decision = expected(&gateway, &g, gateway.state.default_params());
    let entry = gateway.state.r2().pool_model(decision.choice.model).clone();
    let mut body = chat("r2-router", "query7");
    body["stream"] = json!(true);

    let response = gateway.post("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-r2-model"], entry.name.as_str());
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = response.bytes_stream();
    // The provider holds the rest of its answer until the gate opens: this first piece can only
    // have come through while the provider was still answering.
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the first piece did not arrive while the provider was still answering")
        .unwrap()
        .unwrap();
    let first = String::from_utf8(first.to_vec()).unwrap();
    assert!(first.starts_with("data: "), "{first}");
    assert!(!first.contains("[DONE]"), "{first}");
    gate.notify_one();
    let mut text = first;
    while let Some(piece) = stream.next().await {
        text.push_str(std::str::from_utf8(&piece.unwrap()).unwrap());
    }

    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let mut content = String::new();
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert_eq!(chunk["model"], entry.name.as_str(), "{data}");
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(piece);
        }
    }
    assert_eq!(content, format!("Answer from {}.", entry.openrouter_id));
    let seen = gateway.provider_requests();
    assert_eq!(seen[0].body["stream"], true);
    assert_eq!(seen[0].body["model"], entry.openrouter_id.as_str());
}

#[tokio::test]
async fn override_models_restricts_the_choice_to_those_models() {
    let gateway = Gateway::start(Setup::default()).await;
    let g = golden(3);
    let unrestricted = expected(&gateway, &g, gateway.state.default_params());
    let chosen = gateway.state.r2().model_name(unrestricted.choice.model);
    let others: Vec<String> = gateway
        .state
        .default_candidates()
        .into_iter()
        .filter(|m| *m != chosen)
        .map(str::to_owned)
        .collect();
    let mut body = chat("r2-router", "query3");
    body["r2"] = json!({"models": others});

    let response = gateway.post("/v1/chat/completions", &body).await;

    assert_eq!(response.status(), 200);
    let model = response.headers()["x-r2-model"].to_str().unwrap();
    assert_ne!(model, chosen);
    assert!(
        others.iter().any(|m| m == model),
        "{model} not in {others:?}"
    );
}

#[tokio::test]
async fn override_lambda_changes_the_choice() {
    let gateway = Gateway::start(Setup::default()).await;
    let g = golden(0);
    let params = |lambda: f64| {
        let mut p = gateway.state.default_params().clone();
        p.lambda = lambda;
        p
    };
    let (cheap, best) = (expected(&gateway, &g, &params(1.0)), {
        expected(&gateway, &g, &params(0.0))
    });
    assert_ne!(
        cheap.choice, best.choice,
        "λ makes no difference for query0"
    );
    let mut models = Vec::new();
    for lambda in [1.0, 0.0] {
        let mut body = chat("r2-router", "query0");
        body["r2"] = json!({"lambda": lambda});
        let response = gateway.post("/v1/chat/completions", &body).await;
        assert_eq!(response.status(), 200);
        let header = |n: &str| response.headers()[n].to_str().unwrap().to_owned();
        models.push((header("x-r2-model"), header("x-r2-budget")));
    }

    let name = |d: &Decision| gateway.state.r2().model_name(d.choice.model).to_owned();
    assert_eq!(
        models,
        [
            (name(&cheap), cheap.choice.budget.to_string()),
            (name(&best), best.choice.budget.to_string())
        ]
    );
}

#[tokio::test]
async fn override_max_cost_below_every_option_is_422() {
    let gateway = Gateway::start(Setup::default()).await;
    let mut body = chat("r2-router", "query0");
    body["r2"] = json!({"max_cost": 1e-12});

    let response = gateway.post("/v1/chat/completions", &body).await;

    let error = error_body(response, 422, "nothing_within_max_cost").await;
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the cheapest"));
    assert!(gateway.provider_requests().is_empty());
}

#[tokio::test]
async fn bad_overrides_are_422_naming_the_problem() {
    let gateway = Gateway::start(Setup::default()).await;
    for (r2, code) in [
        (json!({"lambda": 1.5}), "invalid_lambda"),
        (json!({"models": ["no-such-model"]}), "unknown_model"),
        (json!({"lamda": 0.5}), "invalid_body"),
        (json!({"lambda": "high"}), "invalid_body"),
    ] {
        let mut body = chat("r2-router", "query0");
        body["r2"] = r2.clone();
        let response = gateway.post("/v1/chat/completions", &body).await;
        error_body(response, 422, code).await;
    }
    assert!(gateway.provider_requests().is_empty());
}

#[tokio::test]
async fn pool_model_by_name_is_forwarded_unrouted_with_its_provider_id() {
    let gateway = Gateway::start(Setup::default()).await;
    let body = chat("GLM-4.5-Air", "query0");

    let response = gateway.post("/v1/chat/completions", &body).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-r2-model"], "GLM-4.5-Air");
    assert!(response.headers().get("x-r2-budget").is_none());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["model"], "z-ai/glm-4.5-air", "passed through as is");
    let seen = gateway.provider_requests();
    assert_eq!(seen[0].body["model"], "z-ai/glm-4.5-air");
    assert_eq!(seen[0].body["messages"], body["messages"]);
}

#[tokio::test]
async fn pool_model_by_provider_id_is_forwarded_unrouted() {
    let gateway = Gateway::start(Setup::default()).await;
    let body = chat("google/gemma-3-4b-it", "anything, not embedded");

    let response = gateway.post("/v1/chat/completions", &body).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-r2-model"], "gemma-3-4b-it");
    let seen = gateway.provider_requests();
    assert_eq!(seen[0].body, body);
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let gateway = Gateway::start(Setup::default()).await;

    let response = gateway
        .post("/v1/chat/completions", &chat("gpt-4o", "query0"))
        .await;

    error_body(response, 404, "model_not_found").await;
    assert!(gateway.provider_requests().is_empty());
}

#[tokio::test]
async fn routed_chat_without_a_user_message_is_400() {
    let gateway = Gateway::start(Setup::default()).await;
    let body = json!({"model": "r2-router", "messages": [{"role": "system", "content": "hi"}]});

    let response = gateway.post("/v1/chat/completions", &body).await;

    error_body(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn provider_500_is_502_and_counted() {
    let gateway = Gateway::start(Setup::reply(ChatReply::Status(500))).await;

    let response = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query0"))
        .await;

    // The first choice and its two fallbacks (the default), each failing.
    assert_eq!(response.headers().get("x-r2-attempts"), None);
    error_body(response, 502, "provider_error").await;
    let metrics = metrics(&gateway).await;
    assert_eq!(
        sample(&metrics, "r2_provider_errors_total{kind=\"server_error\"}"),
        3.0
    );
    assert_eq!(gateway.provider_requests().len(), 3);
}

#[tokio::test]
async fn provider_500_on_a_stream_is_502_before_any_event() {
    let gateway = Gateway::start(Setup::reply(ChatReply::Status(503))).await;
    let mut body = chat("r2-router", "query0");
    body["stream"] = json!(true);

    let response = gateway.post("/v1/chat/completions", &body).await;

    error_body(response, 502, "provider_error").await;
}

#[tokio::test]
async fn provider_timeout_is_504() {
    let gateway = Gateway::start(Setup {
        provider_timeout: Duration::from_millis(300),
        ..Setup::slow(Duration::from_secs(3))
    })
    .await;
    let started = std::time::Instant::now();

    let response = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query0"))
        .await;

    error_body(response, 504, "provider_timeout").await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn without_a_provider_chat_is_503_and_route_still_works() {
    let gateway = Gateway::start(Setup::without_provider()).await;

    let response = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query0"))
        .await;
    error_body(response, 503, "no_provider").await;

    let response = gateway.post("/v1/route", &json!({"query": "query0"})).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn provider_key_never_reaches_the_client() {
    // The failing provider echoes the Authorization header in its error message.
    let failing = Gateway::start(Setup::reply(ChatReply::Status(500))).await;
    let rejecting = Gateway::start(Setup::reply(ChatReply::Status(400))).await;
    let honest = Gateway::start(Setup::default()).await;
    let mut streamed = chat("r2-router", "query1");
    streamed["stream"] = json!(true);
    let requests = [
        (&failing, chat("r2-router", "query1")),
        (&failing, streamed.clone()),
        (&rejecting, chat("GLM-4.5-Air", "query1")),
        (&honest, chat("r2-router", "query1")),
        (&honest, streamed),
        (&honest, chat("gemma-3-4b-it", "query1")),
    ];
    let mut statuses = Vec::new();
    for (gateway, body) in requests {
        let response = gateway.post("/v1/chat/completions", &body).await;
        statuses.push(response.status().as_u16());
        for (name, value) in response.headers() {
            let value = value.to_str().unwrap_or_default();
            assert!(!value.contains("PROVIDER-SECRET"), "{name}: {value}");
        }
        let text = response.text().await.unwrap();
        assert!(!text.contains("PROVIDER-SECRET"), "{text}");
    }
    assert_eq!(statuses, [502, 502, 400, 200, 200, 200]);
    // The provider did see the key: the check above is not vacuous.
    assert!(failing.provider_requests()[0]
        .authorization
        .as_deref()
        .unwrap()
        .contains(PROVIDER_KEY));
    for gateway in [&failing, &honest] {
        let metrics = metrics(gateway).await;
        assert!(!metrics.contains("PROVIDER-SECRET"));
    }
}

#[tokio::test]
async fn provider_stalling_mid_stream_ends_the_stream_with_an_error_event() {
    // The gate never opens: after its first piece the provider goes quiet past the timeout.
    let gateway = Gateway::start(Setup {
        provider: Some((
            ChatReply::Ok,
            ChatServerOptions {
                gate: Some(Arc::new(tokio::sync::Notify::new())),
                openai_chunks: true,
                ..ChatServerOptions::default()
            },
        )),
        provider_timeout: Duration::from_millis(300),
        ..Setup::default()
    })
    .await;
    let mut body = chat("r2-router", "query9");
    body["stream"] = json!(true);

    let response = gateway.post("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();

    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    let error: Value = serde_json::from_str(events[1]).unwrap();
    assert_eq!(
        error["error"]["code"], "provider_stream_interrupted",
        "{text}"
    );
    let metrics = metrics(&gateway).await;
    assert_eq!(
        sample(
            &metrics,
            "r2_provider_errors_total{kind=\"stream_interrupted\"}"
        ),
        1.0
    );
}
