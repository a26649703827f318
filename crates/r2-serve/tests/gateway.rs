//! The production gateway: fallback along the ranked options (a provider failing a chosen model,
//! a hung provider, streams dying before and after the first byte, client errors not retried),
//! conversations (routing on the first user message, content arrays, tool messages, fields
//! passed through), and spend against the reference model.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use r2_core::Decision;
use r2_fixtures::{ChatReply, ChatServerOptions, GoldenInput, ModelFailure, SeenChat};
use r2_serve::ServeOptions;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

fn golden(id: u64) -> GoldenInput {
    r2_fixtures::golden_inputs()
        .into_iter()
        .find(|g| g.id == id)
        .unwrap()
}

/// The ranked decision for the text `query<id>` sent alone (1 estimated input token).
fn decision(gateway: &Gateway, id: u64) -> Decision {
    let params = gateway.state.default_params().clone().with_ranked(true);
    gateway
        .state
        .r2()
        .route(&golden(id).embedding, 1, &params)
        .unwrap()
}

/// A gateway whose provider fails the models `failing` (provider ids of the pool models named);
/// returns it and what the provider saw.
async fn gateway_with(
    failing: &[(String, ModelFailure)],
    serve: ServeOptions,
    provider_timeout: Duration,
) -> (Gateway, Arc<Mutex<Vec<SeenChat>>>) {
    let options = ChatServerOptions {
        openai_chunks: true,
        failing: failing.iter().cloned().collect::<HashMap<_, _>>(),
        ..ChatServerOptions::default()
    };
    let (addr, seen) = r2_fixtures::start_chat_server_with(ChatReply::Ok, options);
    let gateway = Gateway::start(Setup {
        provider_base: Some(format!("http://{addr}/api/v1")),
        serve,
        provider_timeout,
        ..Setup::default()
    })
    .await;
    (gateway, seen)
}

/// The provider ids of the first `n` options of the fallback chain for `query<id>`.
async fn chain(id: u64, n: usize) -> Vec<(String, String)> {
    let probe = Gateway::start(Setup::default()).await;
    let d = decision(&probe, id);
    r2_router::chat::fallback_chain(&d, n - 1)
        .iter()
        .map(|o| {
            let entry = probe.state.r2().pool_model(o.model);
            (entry.name.clone(), entry.openrouter_id.clone())
        })
        .collect()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn failures_another_model_can_fix_fall_back_to_the_next_best_model() {
    let cases = [
        ModelFailure::Status(503, "upstream overloaded"),
        ModelFailure::Status(429, "rate limited"),
        ModelFailure::Status(404, "No endpoints found for this model"),
        ModelFailure::Status(400, "lab/x is not a valid model ID"),
        ModelFailure::DiesBeforeFirstByte,
    ];
    let options = chain(0, 3).await;
    let (first, second) = (&options[0], &options[1]);
    for failure in cases {
        for stream in [false, true] {
            let (gateway, seen) = gateway_with(
                &[(first.1.clone(), failure.clone())],
                ServeOptions::default(),
                Duration::from_secs(5),
            )
            .await;
            let mut body = chat("r2-router", "query0");
            body["stream"] = stream.into();
            let response = gateway.post("/v1/chat/completions", &body).await;
            assert_eq!(response.status(), 200, "{failure:?} stream {stream}");
            assert_eq!(header(&response, "x-r2-model").as_ref(), Some(&second.0));
            assert_eq!(header(&response, "x-r2-attempts").as_deref(), Some("2"));
            assert_eq!(
                header(&response, "x-r2-fallback-from").as_ref(),
                Some(&first.0)
            );
            let text = response.text().await.unwrap();
            assert!(text.contains(&format!("{}.", second.1)), "{text}");
            // The fallback got its own budget prompt and model.
            let sent = seen.lock().unwrap().clone();
            assert_eq!(sent.len(), 2);
            assert_eq!(sent[0].body["model"], first.1.as_str());
            assert_eq!(sent[1].body["model"], second.1.as_str());
            let metrics = metrics(&gateway).await;
            let series = format!(
                "r2_fallbacks_total{{from=\"{}\",to=\"{}\"}}",
                first.0, second.0
            );
            assert_eq!(sample(&metrics, &series), 1.0, "{metrics}");
        }
    }
}

#[tokio::test]
async fn the_first_choice_answering_is_one_attempt() {
    let (gateway, _) = gateway_with(&[], ServeOptions::default(), Duration::from_secs(5)).await;
    let response = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query0"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-r2-attempts").as_deref(), Some("1"));
    assert_eq!(header(&response, "x-r2-fallback-from"), None);
    assert!(header(&response, "x-request-id").is_some());
}

#[tokio::test]
async fn client_errors_are_not_tried_on_another_model() {
    let first = chain(0, 1).await.remove(0);
    for (status, message) in [
        (400, "This model's maximum context length is 8192 tokens"),
        (401, "bad key"),
        (402, "no credits"),
        (413, "too large"),
        (422, "bad field"),
    ] {
        let (gateway, seen) = gateway_with(
            &[(first.1.clone(), ModelFailure::Status(status, message))],
            ServeOptions::default(),
            Duration::from_secs(5),
        )
        .await;
        let response = gateway
            .post("/v1/chat/completions", &chat("r2-router", "query0"))
            .await;
        assert!(response.status().as_u16() >= 400, "{status}");
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "{status}: not retried elsewhere"
        );
    }
}

#[tokio::test]
async fn a_hung_provider_falls_back_after_the_timeout_and_the_deadline_bounds_all() {
    let options = chain(0, 3).await;
    let (gateway, _) = gateway_with(
        &[(options[0].1.clone(), ModelFailure::Hang)],
        ServeOptions::default(),
        Duration::from_millis(300),
    )
    .await;
    let response = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query0"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-r2-model").as_ref(),
        Some(&options[1].0)
    );

    // Every model hangs and the deadline is shorter than the timeouts: 504 within the deadline.
    let failing: Vec<_> = options
        .iter()
        .map(|(_, id)| (id.clone(), ModelFailure::Hang))
        .collect();
    let serve = ServeOptions {
        fallback: r2_router::FallbackPolicy {
            fallbacks: 2,
            deadline: Duration::from_millis(500),
        },
        ..ServeOptions::default()
    };
    let (gateway, seen) = gateway_with(&failing, serve, Duration::from_secs(30)).await;
    let started = std::time::Instant::now();
    let response = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query0"))
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    error_body(response, 504, "upstream_timeout").await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stream_that_dies_after_its_first_byte_is_not_retried() {
    let first = chain(0, 1).await.remove(0);
    let (gateway, seen) = gateway_with(
        &[(first.1.clone(), ModelFailure::DiesAfterFirstByte)],
        ServeOptions::default(),
        Duration::from_secs(5),
    )
    .await;
    let mut body = chat("r2-router", "query0");
    body["stream"] = true.into();
    let response = gateway.post("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-r2-model").as_ref(), Some(&first.0));
    let text = response.text().await.unwrap();
    assert!(text.contains("Partial"), "{text}");
    assert!(text.contains("\"error\""), "{text}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn fallbacks_zero_tries_only_the_choice() {
    let first = chain(0, 1).await.remove(0);
    let serve = ServeOptions {
        fallback: r2_router::FallbackPolicy {
            fallbacks: 0,
            ..Default::default()
        },
        ..ServeOptions::default()
    };
    let (gateway, seen) = gateway_with(
        &[(first.1.clone(), ModelFailure::Status(503, "down"))],
        serve,
        Duration::from_secs(5),
    )
    .await;
    let response = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query0"))
        .await;
    error_body(response, 502, "provider_error").await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A three-turn conversation whose first user message is `first` (content array with an image
/// on turn 3), ending with a tool result on the last turn.
fn turns(first: &str) -> Vec<Value> {
    let user = json!({"role": "user", "content": [
        {"type": "text", "text": first},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]});
    vec![
        json!([{"role": "user", "content": first}]),
        json!([
            {"role": "user", "content": first},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "tell me more"},
        ]),
        json!([
            {"role": "system", "content": "be brief"},
            user,
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ]),
    ]
}

#[tokio::test]
async fn every_turn_of_a_conversation_goes_to_the_same_model_and_fields_pass_through() {
    let (gateway, seen) = gateway_with(&[], ServeOptions::default(), Duration::from_secs(5)).await;
    let extra = json!({
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "n": 2,
        "logprobs": true,
        "stream_options": {"include_usage": true},
        "some_future_field": {"x": [1, 2]},
    });
    for id in [0, 5] {
        let mut models = Vec::new();
        for messages in turns(&format!("query{id}")) {
            let mut body = json!({"model": "r2-router", "messages": messages});
            for (k, v) in extra.as_object().unwrap() {
                if k != "stream_options" {
                    body[k] = v.clone();
                }
            }
            let response = gateway.post("/v1/chat/completions", &body).await;
            assert_eq!(response.status(), 200);
            models.push(header(&response, "x-r2-model").unwrap());
            let sent = seen.lock().unwrap().last().unwrap().body.clone();
            for k in [
                "tools",
                "tool_choice",
                "response_format",
                "n",
                "logprobs",
                "some_future_field",
            ] {
                assert_eq!(sent[k], extra[k], "{k}");
            }
            // The conversation as the client sent it, after the budget prompt (if any).
            let sent_messages = sent["messages"].as_array().unwrap();
            let original = body["messages"].as_array().unwrap();
            assert_eq!(
                &sent_messages[sent_messages.len() - original.len()..],
                &original[..]
            );
        }
        assert!(models.iter().all(|m| m == &models[0]), "{id}: {models:?}");
        let d = decision(&gateway, id);
        assert_eq!(models[0], gateway.state.r2().model_name(d.choice.model));
    }

    // Routing on the last message instead: `tell me more` is not a text the embeddings server
    // knows, so the request fails there; `r2.route_on` picks it per request.
    let mut body = json!({"model": "r2-router", "messages": turns("query0")[1]});
    body["r2"] = json!({"route_on": "last"});
    let response = gateway.post("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 502);
    body["r2"] = json!({"route_on": "first"});
    assert_eq!(
        gateway.post("/v1/chat/completions", &body).await.status(),
        200
    );
    body["r2"] = json!({"route_on": "middle"});
    assert_eq!(
        gateway.post("/v1/chat/completions", &body).await.status(),
        422
    );
}

#[tokio::test]
async fn spend_and_reference_spend_are_counted_from_usage_and_prices() {
    let (gateway, _) = gateway_with(&[], ServeOptions::default(), Duration::from_secs(5)).await;
    let r2 = gateway.state.r2();
    let reference = gateway.state.reference_model();
    // The default reference: the available model with the highest output price.
    let dearest = (0..r2.router().models().len())
        .filter(|&i| r2.pool_model(i).available)
        .max_by(|&a, &b| {
            r2.pool_model(a)
                .output_price_per_million
                .total_cmp(&r2.pool_model(b).output_price_per_million)
        })
        .unwrap();
    assert_eq!(
        r2.pool_model(reference).output_price_per_million,
        r2.pool_model(dearest).output_price_per_million
    );

    let mut spend = 0.0;
    let mut reference_spend = 0.0;
    for id in [0, 1, 2] {
        let response = gateway
            .post(
                "/v1/chat/completions",
                &chat("r2-router", &format!("query{id}")),
            )
            .await;
        assert_eq!(response.status(), 200);
        let model = r2.pool_model(decision(&gateway, id).choice.model);
        // The provider's usage: 12 prompt and 5 completion tokens.
        let want =
            (12.0 * model.input_price_per_million + 5.0 * model.output_price_per_million) / 1e6;
        let cost: f64 = header(&response, "x-r2-cost-usd").unwrap().parse().unwrap();
        assert!((cost - want).abs() < 1e-15, "{cost} vs {want}");
        spend += want;
        reference_spend += r2
            .reference_cost(&golden(id).embedding, 1, reference)
            .unwrap();
    }
    // A stream's cost comes from the usage chunk r2 asked for; the client did not ask for it,
    // so it does not see it.
    let mut body = chat("r2-router", "query3");
    body["stream"] = true.into();
    let response = gateway.post("/v1/chat/completions", &body).await;
    let text = response.text().await.unwrap();
    assert!(!text.contains("\"usage\""), "{text}");
    let model = r2.pool_model(decision(&gateway, 3).choice.model);
    spend += (12.0 * model.input_price_per_million + 5.0 * model.output_price_per_million) / 1e6;
    reference_spend += r2
        .reference_cost(&golden(3).embedding, 1, reference)
        .unwrap();
    // With include_usage the client gets it.
    body["stream_options"] = json!({"include_usage": true});
    let text = gateway
        .post("/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"usage\""), "{text}");
    spend += (12.0 * model.input_price_per_million + 5.0 * model.output_price_per_million) / 1e6;
    reference_spend += r2
        .reference_cost(&golden(3).embedding, 1, reference)
        .unwrap();

    let metrics = metrics(&gateway).await;
    let total: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("r2_spend_usd_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        (total - spend).abs() < 1e-12,
        "{total} vs {spend}\n{metrics}"
    );
    let reference_total = sample(&metrics, "r2_reference_spend_usd_total");
    assert!(
        (reference_total - reference_spend).abs() < 1e-12,
        "{metrics}"
    );

    let stats: Value = gateway.get("/v1/r2/stats").await.json().await.unwrap();
    assert_eq!(stats["requests"], 5);
    assert!(
        (stats["spend_usd"].as_f64().unwrap() - spend).abs() < 1e-12,
        "{stats}"
    );
    assert!(
        (stats["reference_spend_usd"].as_f64().unwrap() - reference_spend).abs() < 1e-12,
        "{stats}"
    );
    assert!(
        (stats["saved_usd"].as_f64().unwrap() - (reference_spend - spend)).abs() < 1e-12,
        "{stats}"
    );
    assert_eq!(stats["reference_model"], r2.model_name(reference));
    let per_model: u64 = stats["models"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(per_model, 5);
}

#[tokio::test]
async fn the_reference_model_can_be_named_and_an_unknown_one_is_refused() {
    let r2 = r2_router::R2Router::load(r2_router::Options {
        checkpoints: Some(r2_fixtures::converted_router_dir()),
        config: Some(r2_fixtures::upstream_dir().join("config.json")),
        embed_url: Some(format!("http://{}", embeddings())),
        ..r2_router::Options::default()
    })
    .await
    .unwrap();
    let name = r2.model_name(0).to_owned();
    assert_eq!(r2.reference_model(Some(&name)).unwrap(), 0);
    assert!(r2.reference_model(Some("no-such-model")).is_err());
    let serve = ServeOptions {
        reference_model: Some("no-such-model".into()),
        ..ServeOptions::default()
    };
    let Err(err) = r2_serve::AppState::new(r2, serve).await else {
        panic!("an unknown reference model was accepted");
    };
    assert!(err.to_string().contains("no-such-model"), "{err}");
}
