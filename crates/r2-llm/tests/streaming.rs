//! `LlmClient::complete_streaming` against a real HTTP server that streams server-sent events the
//! way OpenAI and OpenRouter do.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use r2_llm::{ChatRequest, Completion, Error, LlmClient, LlmOptions, Usage};
use serde_json::json;

const PIECES: [&str; 4] = ["The capital", " of France", " is", " Paris."];

fn request() -> ChatRequest {
    ChatRequest::routed(MODEL, "What is the capital of France?", Some(100), 0.7)
}

/// The whole event stream of a well-behaved provider answering [`PIECES`].
fn full_stream() -> Vec<String> {
    let mut events: Vec<String> = PIECES.iter().map(|p| delta_event(p)).collect();
    events.push(finish_event());
    events.push(usage_event(21, 6));
    events.push(DONE.to_owned());
    events
}

/// Streams `request()` and returns the result with every delta and when it arrived.
async fn stream(client: &LlmClient) -> (Result<Completion, Error>, Vec<(String, Instant)>) {
    let mut deltas = Vec::new();
    let result = client
        .complete_streaming(&request(), &mut |delta| {
            deltas.push((delta.to_owned(), Instant::now()))
        })
        .await;
    (result, deltas)
}

fn texts(deltas: &[(String, Instant)]) -> Vec<&str> {
    deltas.iter().map(|(d, _)| d.as_str()).collect()
}

#[tokio::test]
async fn deltas_arrive_in_order_as_sent_and_usage_comes_from_the_final_chunk() {
    let server =
        TestServer::start(|_, _| Reply::stream(full_stream(), Duration::from_millis(60))).await;

    let (result, deltas) = stream(&server.client(options())).await;
    let completion = result.unwrap();

    assert_eq!(texts(&deltas), PIECES);
    assert_eq!(completion.text, PIECES.concat());
    assert_eq!(
        completion.usage,
        Some(Usage {
            prompt_tokens: 21,
            completion_tokens: 6
        })
    );
    assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    assert_eq!(completion.model.as_deref(), Some(MODEL));
    // The first piece was handed over long before the server wrote its last event.
    let last_write = server.last_write().unwrap();
    assert!(deltas[0].1 < last_write, "first delta after the last write");

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let body = &requests[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["temperature"], 0.7);
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn events_split_mid_line_with_crlf_and_keepalive_comments_still_parse() {
    let pieces = ["Caf\u{e9}", " \u{1f600} ok", "\n\"quoted\""];
    let mut body = String::from(": OPENROUTER PROCESSING\r\n\r\n");
    for (i, piece) in pieces.iter().enumerate() {
        body.push_str(&delta_event(piece).replace("\n\n", "\r\n\r\n"));
        if i == 0 {
            body.push_str(": OPENROUTER PROCESSING\n\n");
        }
    }
    body.push_str(&finish_event());
    body.push_str(&usage_event(9, 4));
    body.push_str("data: [DONE]\r\n\r\n");
    // Cut between `\r` and `\n`, inside `data:`, inside the JSON, inside the multi-byte `é` and
    // emoji; between the cuts several events share one write.
    let mut cuts = vec![
        body.find("\r\n").unwrap() + 1,
        body.find("data:").unwrap() + 2,
        body.find('\u{e9}').unwrap() + 1,
        body.find('\u{1f600}').unwrap() + 1,
        body.find('\u{1f600}').unwrap() + 3,
        body.find("\"usage\"").unwrap() + 3,
    ];
    cuts.sort_unstable();
    let bytes = body.as_bytes();
    let mut writes = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        writes.push(bytes[start..cut].to_vec());
        start = cut;
    }
    let writes = Arc::new(writes);
    let server = TestServer::start({
        let writes = Arc::clone(&writes);
        move |_, _| Reply::stream_bytes(writes.as_ref().clone(), Duration::from_millis(15))
    })
    .await;

    let (result, deltas) = stream(&server.client(options())).await;
    let completion = result.unwrap();

    assert_eq!(texts(&deltas), pieces);
    assert_eq!(completion.text, pieces.concat());
    assert_eq!(
        completion.usage,
        Some(Usage {
            prompt_tokens: 9,
            completion_tokens: 4
        })
    );
}

#[tokio::test]
async fn stream_cut_after_two_events_is_stream_interrupted_with_the_partial_text() {
    let server = TestServer::start(|_, _| {
        Reply::stream(
            vec![delta_event(PIECES[0]), delta_event(PIECES[1])],
            Duration::from_millis(10),
        )
        .then_abort()
    })
    .await;

    let (result, deltas) = stream(&server.client(options())).await;
    let err = result.unwrap_err();

    assert_eq!(texts(&deltas), &PIECES[..2]);
    let partial = PIECES[..2].concat();
    match &err {
        Error::StreamInterrupted {
            received_chars,
            partial: got,
            reason,
            ..
        } => {
            assert_eq!(*received_chars, partial.chars().count());
            assert_eq!(got, &partial);
            assert!(reason.contains("connection failed"), "{reason}");
        }
        other => panic!("expected StreamInterrupted, got {other:?}"),
    }
    assert_eq!(err.partial_text(), Some(partial.as_str()));
    // Text was delivered, so the request is not sent again.
    assert_eq!(server.requests().len(), 1);
    assert_no_key(&err);
}

#[tokio::test]
async fn stream_that_ends_without_done_or_finish_reason_is_interrupted() {
    let server = TestServer::start(|_, _| {
        Reply::stream(
            vec![delta_event(PIECES[0]), delta_event(PIECES[1])],
            Duration::ZERO,
        )
    })
    .await;

    let (result, _) = stream(&server.client(options())).await;
    let err = result.unwrap_err();

    match &err {
        Error::StreamInterrupted {
            partial, reason, ..
        } => {
            assert_eq!(partial, &PIECES[..2].concat());
            assert!(reason.contains("[DONE]"), "{reason}");
        }
        other => panic!("expected StreamInterrupted, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn stream_with_a_finish_reason_but_no_done_is_complete() {
    let server = TestServer::start(|_, _| {
        Reply::stream(vec![delta_event("Paris"), finish_event()], Duration::ZERO)
    })
    .await;

    let (result, _) = stream(&server.client(options())).await;
    let completion = result.unwrap();

    assert_eq!(completion.text, "Paris");
    assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    assert_eq!(completion.usage, None);
}

#[tokio::test]
async fn error_event_inside_the_stream_is_status_with_its_message() {
    let error_event = format!(
        "data: {}\n\n",
        json!({
            "id": "gen-test-1",
            "object": "chat.completion.chunk",
            "error": {"code": "server_error", "message": "Provider disconnected unexpectedly"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        })
    );
    let server = TestServer::start(move |_, _| {
        Reply::stream(
            vec![delta_event(PIECES[0]), error_event.clone(), DONE.to_owned()],
            Duration::ZERO,
        )
    })
    .await;

    let (result, deltas) = stream(&server.client(options())).await;
    let err = result.unwrap_err();

    assert_eq!(texts(&deltas), [PIECES[0]]);
    match &err {
        Error::Status { message, .. } => assert!(
            message.contains("Provider disconnected unexpectedly"),
            "{message}"
        ),
        other => panic!("expected Status, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
    assert_no_key(&err);
}

#[tokio::test]
async fn server_error_before_any_text_is_retried() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::raw(StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        _ => Reply::stream(full_stream(), Duration::ZERO),
    })
    .await;

    let (result, deltas) = stream(&server.client(options())).await;

    assert_eq!(result.unwrap().text, PIECES.concat());
    assert_eq!(texts(&deltas), PIECES);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn connection_dropped_before_any_text_is_retried() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::stream(
            vec![": OPENROUTER PROCESSING\n\n".to_owned()],
            Duration::ZERO,
        )
        .then_abort(),
        _ => Reply::stream(full_stream(), Duration::ZERO),
    })
    .await;

    let (result, deltas) = stream(&server.client(options())).await;

    assert_eq!(result.unwrap().text, PIECES.concat());
    assert_eq!(texts(&deltas), PIECES, "no piece delivered twice");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn stream_that_stalls_after_some_text_is_interrupted_after_the_timeout() {
    let server = TestServer::start(|_, _| {
        let mut pieces: Vec<(Duration, String)> = vec![(Duration::ZERO, delta_event("Par"))];
        pieces.push((Duration::from_secs(5), delta_event("is")));
        Reply::stream_timed(pieces)
    })
    .await;
    let timeout = Duration::from_millis(300);
    let client = server.client(LlmOptions {
        timeout,
        ..options()
    });

    let started = Instant::now();
    let (result, _) = stream(&client).await;
    let err = result.unwrap_err();

    assert!(started.elapsed() < Duration::from_millis(2000));
    match &err {
        Error::StreamInterrupted {
            partial, reason, ..
        } => {
            assert_eq!(partial, "Par");
            assert!(reason.contains("300ms"), "{reason}");
        }
        other => panic!("expected StreamInterrupted, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn slow_first_byte_is_timeout() {
    let server = TestServer::start(|_, _| {
        Reply::stream(full_stream(), Duration::ZERO).after(Duration::from_secs(3))
    })
    .await;
    let client = server.client(LlmOptions {
        timeout: Duration::from_millis(300),
        ..options()
    });

    let started = Instant::now();
    let (result, deltas) = stream(&client).await;

    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(deltas.is_empty());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn provider_that_ignores_stream_true_and_answers_json_is_delivered_in_one_piece() {
    let server = TestServer::start(|_, _| Reply::json(chat_answer("Paris", 21, 3))).await;

    let (result, deltas) = stream(&server.client(options())).await;
    let completion = result.unwrap();

    assert_eq!(texts(&deltas), ["Paris"]);
    assert_eq!(completion.text, "Paris");
    assert_eq!(completion.usage.map(|u| u.completion_tokens), Some(3));
}

#[tokio::test]
async fn rejected_key_while_streaming_is_unauthorized_without_the_key() {
    let server = TestServer::start(|_, _| {
        Reply::raw(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": format!("No auth credentials found for {KEY}")}})
                .to_string(),
        )
    })
    .await;
    let client = server.client(options());

    let (result, deltas) = stream(&client).await;
    let err = result.unwrap_err();

    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(deltas.is_empty());
    assert_eq!(server.requests().len(), 1);
    assert_no_key(&err);
    let debug = format!("{client:?}");
    assert!(!debug.contains(KEY), "{debug}");
}

#[tokio::test]
async fn stream_event_that_is_not_json_is_malformed() {
    let server = TestServer::start(|_, _| {
        Reply::stream(
            vec![delta_event("Par"), "data: {\"choices\": [\n\n".to_owned()],
            Duration::ZERO,
        )
    })
    .await;

    let (result, _) = stream(&server.client(options())).await;
    let err = result.unwrap_err();

    match &err {
        Error::Malformed { reason, .. } => assert!(reason.contains("not JSON"), "{reason}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}
