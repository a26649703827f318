//! `LlmClient::complete` against a real HTTP server that speaks the OpenAI chat-completions
//! protocol.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use r2_llm::{
    budget_system_prompt, ApiKey, ChatRequest, Error, LlmClient, LlmOptions, Prices, Usage,
};
use serde_json::json;

const QUERY: &str = "What is the capital of France?";

/// A server that always answers `Paris` with 21 prompt and 3 completion tokens.
async fn honest() -> TestServer {
    TestServer::start(|_, _| Reply::json(chat_answer("Paris", 21, 3))).await
}

#[test]
fn budget_system_prompt_is_upstreams_sentence() {
    assert_eq!(
        budget_system_prompt(250),
        "You MUST respond in 250 tokens or fewer. Directly give the answer follow the format \
         WITHOUT ANY explanation."
    );
}

#[test]
fn default_options_match_the_documented_values() {
    let o = LlmOptions::default();
    assert_eq!(o.timeout, Duration::from_secs(60));
    assert_eq!(o.max_retries, 3);
    assert_eq!(o.initial_backoff, Duration::from_millis(500));
    assert_eq!(o.max_retry_after, Duration::from_secs(60));
}

#[tokio::test]
async fn limited_budget_sends_the_budget_prompt_then_the_query_and_returns_text_and_usage() {
    let server = honest().await;
    let client = server.client(options());

    let completion = client.complete(&routed(100)).await.unwrap();

    assert_eq!(completion.text, "Paris");
    assert_eq!(completion.model.as_deref(), Some(MODEL));
    assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    let usage = completion.usage.unwrap();
    assert_eq!(
        usage,
        Usage {
            prompt_tokens: 21,
            completion_tokens: 3
        }
    );
    let prices = Prices {
        input_per_million: 0.2,
        output_per_million: 1.1,
    };
    let cost = usage.cost_usd(prices);
    assert!(
        (cost - (21.0 * 0.2 + 3.0 * 1.1) / 1e6).abs() < 1e-18,
        "{cost}"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, API_PATH);
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(request.body["model"], MODEL);
    assert_eq!(request.body["temperature"], 0.7);
    let messages = request.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(
        messages[0]["content"].as_str().unwrap().as_bytes(),
        "You MUST respond in 100 tokens or fewer. Directly give the answer follow the format \
         WITHOUT ANY explanation."
            .as_bytes()
    );
    assert_eq!(messages[1], json!({"role": "user", "content": QUERY}));
    assert!(request.body.get("stream").is_none(), "{}", request.body);
    assert!(request.body.get("max_tokens").is_none(), "{}", request.body);
}

fn routed(budget: u32) -> ChatRequest {
    ChatRequest::routed(MODEL, QUERY, Some(budget), 0.7)
}

#[tokio::test]
async fn unlimited_budget_sends_only_the_user_message() {
    let server = honest().await;

    let completion = server
        .client(options())
        .complete(&ChatRequest::routed(MODEL, QUERY, None, 0.7))
        .await
        .unwrap();

    assert_eq!(completion.text, "Paris");
    let body = &server.requests()[0].body;
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": QUERY}])
    );
}

#[tokio::test]
async fn without_a_key_no_authorization_header_is_sent() {
    let server = honest().await;
    let client = LlmClient::new(&server.base, None, options()).unwrap();
    assert!(!client.has_key());

    client.complete(&routed(100)).await.unwrap();

    assert_eq!(server.requests()[0].header("authorization"), None);
}

#[tokio::test]
async fn api_base_with_trailing_slash_posts_to_chat_completions() {
    let server = honest().await;
    let client = LlmClient::new(&format!("{}/", server.base), None, options()).unwrap();
    assert_eq!(client.url(), format!("{}/chat/completions", server.base));

    client.complete(&routed(100)).await.unwrap();

    assert_eq!(server.requests()[0].path, API_PATH);
}

#[tokio::test]
async fn max_tokens_is_sent_only_when_set() {
    let server = honest().await;

    server
        .client(options())
        .complete(&routed(100).with_max_tokens(150))
        .await
        .unwrap();

    assert_eq!(server.requests()[0].body["max_tokens"], 150);
}

#[tokio::test]
async fn rate_limit_with_retry_after_waits_that_long_then_succeeds() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::raw(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error": {"message": "Rate limit exceeded", "code": 429}}"#,
        )
        .header("retry-after", "1"),
        _ => Reply::json(chat_answer("Paris", 21, 3)),
    })
    .await;

    let started = Instant::now();
    let completion = server
        .client(options())
        .complete(&routed(100))
        .await
        .unwrap();

    assert_eq!(completion.text, "Paris");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(started.elapsed() >= Duration::from_millis(950));
}

#[tokio::test]
async fn retry_after_longer_than_max_retry_after_gives_up_at_once_naming_the_wait() {
    let server = TestServer::start(|_, _| {
        Reply::raw(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error": {"message": "Rate limit exceeded: free-models-per-day"}}"#,
        )
        .header("retry-after", "3600")
    })
    .await;

    let started = Instant::now();
    let err = server
        .client(options())
        .complete(&routed(100))
        .await
        .unwrap_err();

    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.requests().len(), 1);
    match &err {
        Error::RateLimited {
            attempts,
            retry_after,
            message,
            ..
        } => {
            assert_eq!(*attempts, 1);
            assert_eq!(*retry_after, Some(Duration::from_secs(3600)));
            assert!(message.contains("free-models-per-day"), "{message}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("3600s"), "{text}");
    assert!(text.contains("max_retry_after"), "{text}");
    assert_no_key(&err);
}

#[tokio::test]
async fn rate_limit_that_persists_is_rate_limited_after_max_retries() {
    let server =
        TestServer::start(|_, _| Reply::raw(StatusCode::TOO_MANY_REQUESTS, "slow down")).await;
    let client = server.client(LlmOptions {
        max_retries: 2,
        ..options()
    });

    let err = client.complete(&routed(100)).await.unwrap_err();

    assert_eq!(server.requests().len(), 3);
    match &err {
        Error::RateLimited {
            attempts, message, ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(message, "slow down");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(err.is_transient());
    assert_no_key(&err);
}

#[tokio::test]
async fn server_error_then_success_is_retried_once() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::raw(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error": {"message": "Internal Server Error", "code": 500}}"#,
        ),
        _ => Reply::json(chat_answer("Paris", 21, 3)),
    })
    .await;

    let completion = server
        .client(options())
        .complete(&routed(100))
        .await
        .unwrap();

    assert_eq!(completion.text, "Paris");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test]
async fn server_error_that_persists_is_server_after_max_retries() {
    let server = TestServer::start(|_, _| {
        Reply::raw(
            StatusCode::BAD_GATEWAY,
            r#"{"error": {"message": "Provider returned error", "code": 502,
                "metadata": {"raw": "upstream overloaded", "provider_name": "Chutes"}}}"#,
        )
    })
    .await;
    let options = options();

    let err = server
        .client(options.clone())
        .complete(&routed(100))
        .await
        .unwrap_err();

    assert_eq!(server.requests().len(), options.max_retries as usize + 1);
    match &err {
        Error::Server {
            status,
            attempts,
            message,
            ..
        } => {
            assert_eq!(*status, 502);
            assert_eq!(*attempts, options.max_retries + 1);
            assert!(message.contains("Provider returned error"), "{message}");
            assert!(
                message.contains("Chutes said: upstream overloaded"),
                "{message}"
            );
        }
        other => panic!("expected Server, got {other:?}"),
    }
    assert_no_key(&err);
}

#[tokio::test]
async fn rejected_key_is_unauthorized_not_retried_and_never_shows_the_key() {
    // Like OpenAI's "Incorrect API key provided: sk-…": the provider echoes the key back.
    let server = TestServer::start(|_, _| {
        Reply::raw(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": format!("Incorrect API key provided: {KEY}"), "code": 401}})
                .to_string(),
        )
    })
    .await;

    let err = server
        .client(options())
        .complete(&routed(100))
        .await
        .unwrap_err();

    assert_eq!(server.requests().len(), 1);
    match &err {
        Error::Unauthorized {
            status, message, ..
        } => {
            assert_eq!(*status, 401);
            assert!(
                message.contains("Incorrect API key provided: ***"),
                "{message}"
            );
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("OPENROUTER_API_KEY"), "{text}");
    // The command line adds its flag (`--llm-api-key`) itself: see r2-cli's generate_cli tests.
    assert!(!text.contains("--llm-api-key"), "{text}");
    assert_no_key(&err);
}

#[tokio::test]
async fn forbidden_is_unauthorized_and_a_missing_key_is_named_as_such() {
    let server = TestServer::start(|_, _| Reply::raw(StatusCode::FORBIDDEN, "")).await;
    let client = LlmClient::new(&server.base, None, options()).unwrap();

    let err = client.complete(&routed(100)).await.unwrap_err();

    assert!(
        matches!(
            err,
            Error::Unauthorized {
                status: 403,
                key_given: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("No API key was given"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn payment_required_is_out_of_credits_and_not_retried() {
    let server = TestServer::start(|_, _| {
        Reply::raw(
            StatusCode::PAYMENT_REQUIRED,
            r#"{"error": {"message": "Insufficient credits", "code": 402}}"#,
        )
    })
    .await;

    let err = server
        .client(options())
        .complete(&routed(100))
        .await
        .unwrap_err();

    assert_eq!(server.requests().len(), 1);
    match &err {
        Error::PaymentRequired { message, .. } => {
            assert_eq!(message, "Insufficient credits")
        }
        other => panic!("expected PaymentRequired, got {other:?}"),
    }
    assert!(err.to_string().contains("out of credits"), "{err}");
    assert_no_key(&err);
}

#[tokio::test]
async fn other_client_error_is_status_with_the_providers_message_and_not_retried() {
    let server = TestServer::start(|_, _| {
        Reply::raw(
            StatusCode::BAD_REQUEST,
            r#"{"error": {"message": "bad model", "code": 400}}"#,
        )
    })
    .await;

    let err = server
        .client(options())
        .complete(&routed(100))
        .await
        .unwrap_err();

    assert_eq!(server.requests().len(), 1);
    match &err {
        Error::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(message, "bad model");
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert!(err.to_string().contains(&server.base), "{err}");
    assert_no_key(&err);
}

#[tokio::test]
async fn error_object_in_a_successful_answer_is_an_error() {
    let server = TestServer::start(|_, _| {
        Reply::json(json!({"error": {"message": "model is warming up", "code": "unavailable"}}))
    })
    .await;

    let err = server
        .client(options())
        .complete(&routed(100))
        .await
        .unwrap_err();

    match &err {
        Error::Status { message, .. } => {
            assert!(message.contains("model is warming up"), "{message}")
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert_no_key(&err);
}

#[tokio::test]
async fn body_that_is_not_json_is_malformed_with_an_excerpt() {
    let server = TestServer::start(|_, _| {
        Reply::raw(
            StatusCode::OK,
            r#"{"id": "gen-1", "choices": [{"message": {"#,
        )
    })
    .await;

    let err = server
        .client(options())
        .complete(&routed(100))
        .await
        .unwrap_err();

    assert_eq!(server.requests().len(), 1);
    match &err {
        Error::Malformed { reason, .. } => {
            assert!(reason.contains("not JSON"), "{reason}");
            assert!(reason.contains("gen-1"), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert_no_key(&err);
}

#[tokio::test]
async fn answer_of_the_wrong_shape_is_malformed() {
    let server = TestServer::start(|_, _| Reply::json(json!({"object": "chat.completion"}))).await;

    let err = server
        .client(options())
        .complete(&routed(100))
        .await
        .unwrap_err();

    match &err {
        Error::Malformed { reason, .. } => {
            assert!(reason.contains("missing field `choices`"), "{reason}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn empty_choices_is_no_choices() {
    let server = TestServer::start(|_, _| Reply::json(json!({"choices": []}))).await;

    let err = server
        .client(options())
        .complete(&routed(100))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::NoChoices { .. }), "{err:?}");
    assert_no_key(&err);
}

#[tokio::test]
async fn slow_server_times_out_quickly_without_retrying() {
    let server = TestServer::start(|_, _| {
        Reply::json(chat_answer("Paris", 21, 3)).after(Duration::from_secs(3))
    })
    .await;
    let timeout = Duration::from_millis(300);
    let client = server.client(LlmOptions {
        timeout,
        ..options()
    });

    let started = Instant::now();
    let err = client.complete(&routed(100)).await.unwrap_err();

    assert!(started.elapsed() < Duration::from_millis(1500));
    match &err {
        Error::Timeout { timeout: t, .. } => assert_eq!(*t, timeout),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
    assert_no_key(&err);
}

#[tokio::test]
async fn nothing_listening_is_unreachable_after_retries() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = LlmClient::new(
        &format!("http://127.0.0.1:{port}/api/v1"),
        Some(ApiKey::new(KEY)),
        LlmOptions {
            max_retries: 2,
            ..options()
        },
    )
    .unwrap();

    let err = client.complete(&routed(100)).await.unwrap_err();

    match &err {
        Error::Unreachable { attempts, .. } => assert_eq!(*attempts, 3),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_no_key(&err);
}

#[tokio::test]
async fn raw_body_is_forwarded_as_is_and_the_answer_returned_as_is() {
    let server = honest().await;
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": QUERY}],
        "top_p": 0.9,
        "seed": 7,
    });

    let answer = server.client(options()).complete_raw(&body).await.unwrap();

    assert_eq!(answer, chat_answer("Paris", 21, 3));
    assert_eq!(server.requests()[0].body, body);
    let streaming = json!({"model": MODEL, "messages": [], "stream": true});
    let err = server
        .client(options())
        .complete_raw(&streaming)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn client_and_key_debug_never_show_the_key() {
    let key = ApiKey::new(KEY);
    assert_eq!(format!("{key:?}"), "ApiKey(***)");
    assert_eq!(key.to_string(), "ApiKey(***)");
    let client = LlmClient::new("https://openrouter.ai/api/v1", Some(key), options()).unwrap();
    let debug = format!("{client:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(debug.contains("ApiKey(***)"), "{debug}");
    assert!(
        debug.contains("https://openrouter.ai/api/v1/chat/completions"),
        "{debug}"
    );
    let pretty = format!("{client:#?}");
    assert!(!pretty.contains(KEY), "{pretty}");
}

#[test]
fn key_with_a_newline_inside_is_invalid_api_key_without_showing_it() {
    let err = LlmClient::new(
        "https://openrouter.ai/api/v1",
        Some(ApiKey::new(format!("{KEY}\nX-Evil: 1"))),
        options(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidApiKey { .. }), "{err:?}");
    assert_no_key(&err);
}
