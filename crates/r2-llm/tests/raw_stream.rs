//! `LlmClient::complete_raw_stream`: a gateway's pass-through of a provider's server-sent events,
//! against a real HTTP server.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use futures_util::StreamExt;
use r2_llm::{Error, RawStream};
use serde_json::{json, Value};

fn streaming_body() -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "stream": true,
        "top_p": 0.5,
    })
}

/// Every chunk of the stream with when it arrived, and the error that ended it, if any.
async fn drain(mut stream: RawStream) -> (Vec<(Vec<u8>, Instant)>, Option<Error>) {
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => chunks.push((bytes.to_vec(), Instant::now())),
            Err(e) => {
                assert!(
                    stream.next().await.is_none(),
                    "the stream goes on after {e}"
                );
                return (chunks, Some(e));
            }
        }
    }
    (chunks, None)
}

#[tokio::test]
async fn body_is_forwarded_as_is_and_the_events_come_back_byte_for_byte_as_they_arrive() {
    let events = vec![
        delta_event("Par"),
        delta_event("is"),
        finish_event(),
        DONE.to_owned(),
    ];
    let server = TestServer::start({
        let events = events.clone();
        move |_, _| Reply::stream(events.clone(), Duration::from_millis(80))
    })
    .await;
    let body = streaming_body();

    let stream = server
        .client(options())
        .complete_raw_stream(&body)
        .await
        .unwrap();
    assert_eq!(stream.content_type(), Some("text/event-stream"));
    let (chunks, error) = drain(stream).await;

    assert!(error.is_none(), "{error:?}");
    let all: Vec<u8> = chunks.iter().flat_map(|(c, _)| c.clone()).collect();
    assert_eq!(String::from_utf8(all).unwrap(), events.concat());
    assert!(
        chunks[0].1 < server.last_write().unwrap(),
        "the first chunk was held back until the provider had finished"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body, body);
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn body_without_stream_true_is_refused_before_sending() {
    let server = TestServer::start(|_, _| Reply::json(chat_answer("x", 1, 1))).await;
    let body = json!({"model": MODEL, "messages": []});

    let err = server
        .client(options())
        .complete_raw_stream(&body)
        .await
        .unwrap_err();

    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn server_error_before_the_stream_is_retried_then_streams() {
    let server = TestServer::start(|n, _| match n {
        0 => Reply::raw(
            StatusCode::BAD_GATEWAY,
            r#"{"error": {"message": "try later"}}"#,
        ),
        _ => Reply::stream(vec![delta_event("ok"), DONE.to_owned()], Duration::ZERO),
    })
    .await;

    let stream = server
        .client(options())
        .complete_raw_stream(&streaming_body())
        .await
        .unwrap();
    let (chunks, error) = drain(stream).await;

    assert!(error.is_none(), "{error:?}");
    assert!(!chunks.is_empty());
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn rejected_key_is_unauthorized_without_the_key() {
    let server = TestServer::start(|_, _| {
        Reply::raw(
            StatusCode::UNAUTHORIZED,
            format!(r#"{{"error": {{"message": "bad key {KEY}"}}}}"#),
        )
    })
    .await;

    let err = server
        .client(options())
        .complete_raw_stream(&streaming_body())
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_no_key(&err);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn dropped_connection_mid_stream_ends_the_stream_with_raw_stream_interrupted() {
    let server = TestServer::start(|_, _| {
        Reply::stream(vec![delta_event("Par")], Duration::ZERO).then_abort()
    })
    .await;

    let stream = server
        .client(options())
        .complete_raw_stream(&streaming_body())
        .await
        .unwrap();
    let (chunks, error) = drain(stream).await;

    let received: usize = chunks.iter().map(|(c, _)| c.len()).sum();
    assert_eq!(received, delta_event("Par").len());
    match error {
        Some(Error::RawStreamInterrupted { received_bytes, .. }) => {
            assert_eq!(received_bytes, received)
        }
        other => panic!("expected RawStreamInterrupted, got {other:?}"),
    }
}

#[tokio::test]
async fn stalled_stream_times_out_before_and_after_the_first_byte() {
    let timeout = Duration::from_millis(200);
    let quick = r2_llm::LlmOptions {
        timeout,
        ..options()
    };
    let server = TestServer::start(|n, _| match n {
        0 => Reply::stream_timed(vec![(Duration::from_secs(2), DONE.to_owned())]),
        _ => Reply::stream_timed(vec![
            (Duration::ZERO, delta_event("Par")),
            (Duration::from_secs(2), DONE.to_owned()),
        ]),
    })
    .await;

    let started = Instant::now();
    let stream = server
        .client(quick.clone())
        .complete_raw_stream(&streaming_body())
        .await
        .unwrap();
    let (chunks, error) = drain(stream).await;
    assert!(chunks.is_empty());
    assert!(matches!(error, Some(Error::Timeout { .. })), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(1));

    let stream = server
        .client(quick)
        .complete_raw_stream(&streaming_body())
        .await
        .unwrap();
    let (chunks, error) = drain(stream).await;
    assert_eq!(chunks.len(), 1);
    assert!(
        matches!(error, Some(Error::RawStreamInterrupted { .. })),
        "{error:?}"
    );
}
