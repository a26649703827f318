//! Hostile providers: answers, stream lines and error bodies larger than the client's limits, a
//! stream request answered with something that is not a stream, and a provider that echoes the
//! key in another letter case. Each server is real (127.0.0.1) and sends the oversized part and
//! then stalls, so that a client which buffered everything would time out instead of failing with
//! `Error::TooLarge`.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use futures_util::StreamExt;
use r2_llm::{
    ChatRequest, Error, LlmOptions, RawStream, DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_EVENT_BYTES,
};
use serde_json::{json, Value};

/// A piece of `n` bytes of `a`.
fn filler(n: usize) -> String {
    "a".repeat(n)
}

/// `total` bytes of filler in 64 KiB pieces, sent at once, then a stall longer than any test.
fn oversized_then_stall(prefix: &str, total: usize) -> Vec<(Duration, String)> {
    let mut pieces = vec![(Duration::ZERO, prefix.to_owned())];
    let piece = 64 * 1024;
    for _ in 0..total.div_ceil(piece) {
        pieces.push((Duration::ZERO, filler(piece)));
    }
    pieces.push((Duration::from_secs(60), "\n\n".to_owned()));
    pieces
}

fn routed() -> ChatRequest {
    ChatRequest::routed(MODEL, "What is the capital of France?", Some(100), 0.7)
}

fn streaming_body() -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "stream": true,
    })
}

/// A timeout long enough that reaching it means the client waited for the whole body.
fn patient() -> LlmOptions {
    LlmOptions {
        timeout: Duration::from_secs(20),
        max_retries: 0,
        ..options()
    }
}

async fn drain(mut stream: RawStream) -> (Vec<u8>, Option<Error>) {
    let mut bytes = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(e) => {
                assert!(
                    stream.next().await.is_none(),
                    "the stream goes on after {e}"
                );
                return (bytes, Some(e));
            }
        }
    }
    (bytes, None)
}

fn assert_too_large(err: &Error, what: &str, limit: usize) {
    match err {
        Error::TooLarge {
            url,
            what: got,
            limit: got_limit,
        } => {
            assert_eq!(*got, what, "{err}");
            assert_eq!(*got_limit, limit, "{err}");
            assert!(url.ends_with(API_PATH), "{url}");
        }
        other => panic!("expected TooLarge ({what}), got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&limit.to_string()), "{text}");
    assert!(text.contains(API_PATH), "{text}");
    assert_no_key(err);
}

#[test]
fn default_limits_are_the_documented_values() {
    let o = LlmOptions::default();
    assert_eq!(o.max_event_bytes, 1024 * 1024);
    assert_eq!(o.max_answer_bytes, 64 * 1024 * 1024);
    assert_eq!(DEFAULT_MAX_EVENT_BYTES, o.max_event_bytes);
    assert_eq!(DEFAULT_MAX_ANSWER_BYTES, o.max_answer_bytes);
}

#[tokio::test]
async fn non_streamed_answer_over_the_limit_fails_as_soon_as_the_limit_is_passed() {
    let limit = 256 * 1024;
    let server = TestServer::start(move |_, _| {
        let mut reply = Reply::stream_timed(oversized_then_stall("{\"x\": \"", 3 << 20));
        reply.headers = vec![("content-type", "application/json".to_owned())];
        reply
    })
    .await;
    let client = server.client(LlmOptions {
        max_answer_bytes: limit,
        ..patient()
    });

    let err = client.complete(&routed()).await.unwrap_err();
    assert_too_large(&err, "an answer", limit);
    let err = client
        .complete_raw(&json!({"model": MODEL, "messages": []}))
        .await
        .unwrap_err();
    assert_too_large(&err, "an answer", limit);
    assert_eq!(server.requests().len(), 2, "TooLarge is not retried");
}

#[tokio::test]
async fn declared_content_length_over_the_limit_fails_before_the_body_is_read() {
    let server = TestServer::start(|_, _| {
        Reply::stream_timed(vec![
            (Duration::ZERO, "{".to_owned()),
            (Duration::from_secs(60), "}".to_owned()),
        ])
        .header("content-type", "application/json")
        .header("content-length", "10000000000")
    })
    .await;

    let err = server
        .client(patient())
        .complete(&routed())
        .await
        .unwrap_err();

    assert_too_large(&err, "an answer", DEFAULT_MAX_ANSWER_BYTES);
}

#[tokio::test]
async fn streamed_line_without_a_newline_over_the_real_limit_is_too_large() {
    let server = TestServer::start(|_, _| {
        Reply::stream_timed(oversized_then_stall(
            "data: {\"choices\": [{\"delta\": {\"content\": \"",
            DEFAULT_MAX_EVENT_BYTES + (3 << 20),
        ))
    })
    .await;
    let mut deltas = 0;

    let err = server
        .client(patient())
        .complete_streaming(&routed(), &mut |_| deltas += 1)
        .await
        .unwrap_err();

    assert_too_large(&err, "a stream line", DEFAULT_MAX_EVENT_BYTES);
    assert_eq!(deltas, 0);
}

#[tokio::test]
async fn streaming_request_answered_with_json_over_the_limit_is_too_large() {
    let limit = 128 * 1024;
    let server = TestServer::start(|_, _| {
        let mut reply = Reply::stream_timed(oversized_then_stall("{\"x\": \"", 1 << 20));
        reply.headers = vec![("content-type", "application/json".to_owned())];
        reply
    })
    .await;
    let client = server.client(LlmOptions {
        max_answer_bytes: limit,
        ..patient()
    });

    let err = client
        .complete_streaming(&routed(), &mut |_| {})
        .await
        .unwrap_err();
    assert_too_large(&err, "an answer", limit);
    let err = client
        .complete_raw_stream_checked(&streaming_body())
        .await
        .unwrap_err();
    assert_too_large(&err, "an answer", limit);
}

#[tokio::test]
async fn raw_stream_with_a_line_over_the_limit_ends_with_too_large() {
    let limit = 64 * 1024;
    let first = delta_event("Par");
    let server = TestServer::start({
        let first = first.clone();
        move |_, _| {
            let mut pieces = vec![(Duration::ZERO, first.clone())];
            pieces.extend(oversized_then_stall("data: {\"x\": \"", 1 << 20));
            Reply::stream_timed(pieces)
        }
    })
    .await;
    let client = server.client(LlmOptions {
        max_event_bytes: limit,
        ..patient()
    });

    for checked in [false, true] {
        let stream = if checked {
            client.complete_raw_stream_checked(&streaming_body()).await
        } else {
            client.complete_raw_stream(&streaming_body()).await
        }
        .unwrap();
        let (bytes, error) = drain(stream).await;
        // The complete first event went through; the oversized line did not.
        assert!(bytes.starts_with(first.as_bytes()), "checked: {checked}");
        assert!(
            bytes.len() <= first.len() + limit + 64 * 1024,
            "{}",
            bytes.len()
        );
        assert_too_large(&error.unwrap(), "a stream line", limit);
    }
}

#[tokio::test]
async fn huge_error_body_is_read_only_in_part() {
    let server = TestServer::start(|_, _| {
        let mut reply = Reply::stream_timed(oversized_then_stall(
            "{\"error\": {\"message\": \"",
            4 << 20,
        ));
        reply.status = StatusCode::INTERNAL_SERVER_ERROR;
        reply
    })
    .await;

    let err = server
        .client(patient())
        .complete(&routed())
        .await
        .unwrap_err();

    match &err {
        Error::Server {
            status, message, ..
        } => {
            assert_eq!(*status, 500);
            assert!(message.chars().count() <= 501, "{}", message.len());
        }
        other => panic!("expected Server, got {other:?}"),
    }
}

#[tokio::test]
async fn checked_stream_of_an_html_page_is_malformed_before_anything_is_returned() {
    let server = TestServer::start(|_, _| {
        Reply::stream_timed(vec![
            (
                Duration::ZERO,
                "<!DOCTYPE html>\n<html><body>Bad gateway</body></html>\n".to_owned(),
            ),
            (Duration::from_secs(60), String::new()),
        ])
        .header("content-type", "text/html")
    })
    .await;

    let err = server
        .client(patient())
        .complete_raw_stream_checked(&streaming_body())
        .await
        .unwrap_err();

    match &err {
        Error::Malformed { reason, .. } => assert!(reason.contains("DOCTYPE"), "{reason}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert_no_key(&err);
}

#[tokio::test]
async fn checked_stream_whose_first_event_is_not_json_is_malformed() {
    // A complete event while the provider stays connected, and one cut by the end of the body.
    for (body, then) in [
        ("data: {broken\n\n", Duration::from_secs(60)),
        ("data: {broken", Duration::ZERO),
    ] {
        let server = TestServer::start(move |_, _| {
            Reply::stream_timed(vec![
                (Duration::ZERO, body.to_owned()),
                (then, String::new()),
            ])
        })
        .await;

        let err = server
            .client(patient())
            .complete_raw_stream_checked(&streaming_body())
            .await
            .unwrap_err();

        match &err {
            Error::Malformed { reason, .. } => {
                assert!(reason.contains("not JSON"), "{body:?}: {reason}")
            }
            other => panic!("{body:?}: expected Malformed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn checked_stream_that_ends_before_any_event_is_malformed() {
    let server = TestServer::start(|_, _| {
        Reply::stream(
            vec![": OPENROUTER PROCESSING\n\n".to_owned()],
            Duration::ZERO,
        )
    })
    .await;

    let err = server
        .client(patient())
        .complete_raw_stream_checked(&streaming_body())
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn checked_stream_with_an_error_event_first_is_that_error_and_retried() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::stream(
            vec![
                "data: {\"error\": {\"message\": \"overloaded\", \"code\": 502}}\n\n".to_owned(),
                DONE.to_owned(),
            ],
            Duration::ZERO,
        ),
        _ => Reply::stream(
            vec!["data: {\"error\": {\"message\": \"bad model\", \"code\": 400}}\n\n".to_owned()],
            Duration::ZERO,
        ),
    })
    .await;

    let err = server
        .client(LlmOptions {
            max_retries: 1,
            ..options()
        })
        .complete_raw_stream_checked(&streaming_body())
        .await
        .unwrap_err();

    match &err {
        Error::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 400);
            assert!(message.contains("bad model"), "{message}");
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 2, "the 502 event was retried");
}

#[tokio::test]
async fn checked_stream_passes_comments_and_events_through_byte_for_byte() {
    let events = vec![
        ": OPENROUTER PROCESSING\r\n\r\n".to_owned(),
        "data:\n\n".to_owned(),
        "data: {\"choi".to_owned(),
        "ces\": []}\r\n\r\n".to_owned(),
        delta_event("Paris"),
        DONE.to_owned(),
    ];
    let server = TestServer::start({
        let events = events.clone();
        move |_, _| Reply::stream(events.clone(), Duration::from_millis(20))
    })
    .await;

    let stream = server
        .client(options())
        .complete_raw_stream_checked(&streaming_body())
        .await
        .unwrap();
    let (bytes, error) = drain(stream).await;

    assert!(error.is_none(), "{error:?}");
    assert_eq!(String::from_utf8(bytes).unwrap(), events.concat());
}

#[tokio::test]
async fn checked_stream_answered_with_valid_json_is_passed_through_as_is() {
    let answer = chat_answer("Paris", 21, 3).to_string();
    let server = TestServer::start({
        let answer = answer.clone();
        move |_, _| Reply::raw(StatusCode::OK, answer.clone())
    })
    .await;

    let stream = server
        .client(options())
        .complete_raw_stream_checked(&streaming_body())
        .await
        .unwrap();
    assert_eq!(stream.content_type(), Some("application/json"));
    let (bytes, error) = drain(stream).await;

    assert!(error.is_none(), "{error:?}");
    assert_eq!(String::from_utf8(bytes).unwrap(), answer);
}

#[tokio::test]
async fn key_echoed_in_another_letter_case_is_redacted() {
    let upper = KEY.to_uppercase();
    let mixed: String = KEY
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    assert_ne!(upper, KEY);
    let server = TestServer::start({
        let (upper, mixed) = (upper.clone(), mixed.clone());
        move |n, _| {
            let message = format!("bad key {upper} (was {mixed}) é {}", KEY.to_lowercase());
            match n {
                0 => Reply::raw(
                    StatusCode::UNAUTHORIZED,
                    json!({"error": {"message": message}}).to_string(),
                ),
                1 => Reply::raw(StatusCode::OK, format!("<html>{message}</html>")),
                _ => Reply::raw(
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"message": "rejected", "metadata": {"raw": format!("{}{message}", filler(400)), "provider_name": "p"}}}).to_string(),
                ),
            }
        }
    })
    .await;
    let client = server.client(patient());

    for _ in 0..3 {
        let err = client.complete(&routed()).await.unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            let lower = text.to_lowercase();
            assert!(!lower.contains(&KEY.to_lowercase()), "{text}");
            // Not even the start of the key survives a cut.
            assert!(!lower.contains("sk-or-v1-0123456789"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
    }
}
