//! Hostile and broken clients and providers, on raw sockets: half-sent heads, idle and
//! over-the-cap connections, stalled bodies, huge `Content-Length`s, clients that stop reading,
//! shutdown with a stalled body; providers that answer HTML, broken events or endless lines; byte
//! order marks and embeddings whose predictions are not finite.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::IntoResponse;
use common::*;
use futures_util::StreamExt;
use r2_serve::ServeOptions;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A gateway without a provider with these options.
async fn gateway(serve: ServeOptions) -> Gateway {
    Gateway::start(Setup {
        serve,
        ..Setup::without_provider()
    })
    .await
}

/// Reads until the server closes the connection (EOF or reset); `None` if it is still open after
/// `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status of a raw HTTP answer.
fn status_of(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

/// The JSON body of a raw HTTP answer (with `Content-Length`).
fn json_of(answer: &[u8]) -> Value {
    let text = String::from_utf8_lossy(answer);
    let (_, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no body: {text:?}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn has_header(answer: &[u8], name: &str, value: &str) -> bool {
    let text = String::from_utf8_lossy(answer).to_ascii_lowercase();
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    head.lines()
        .any(|line| line == format!("{name}: {value}").to_ascii_lowercase())
}

/// `GET /healthz` on a new connection with `Connection: close`; the status, or `None` when no
/// answer came within `limit`.
async fn healthz(addr: SocketAddr, limit: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: r2\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let answer = read_until_closed(&mut stream, limit).await?;
    Some(status_of(&answer))
}

/// A POST whose head declares a body of `length` bytes but which sends only `sent` of it.
async fn stalled_post(addr: SocketAddr, path: &str, length: u64, sent: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: r2\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n{sent}"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

fn golden_embedding(id: u64) -> Vec<f64> {
    r2_fixtures::golden_inputs()
        .into_iter()
        .find(|g| g.id == id)
        .unwrap()
        .embedding
}

// ---------------------------------------------------------------------------------------------
// Connections

#[tokio::test]
async fn half_sent_heads_are_closed_after_the_header_timeout_and_healthz_still_answers() {
    let gateway = gateway(ServeOptions {
        header_timeout: ms(300),
        max_connections: 8,
        ..ServeOptions::default()
    })
    .await;
    // More half-sent heads than the cap: the ones past it wait for a slot, then time out too.
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: r2\r\nX-Slow: ")
            .await
            .unwrap();
        sockets.push(stream);
    }

    for (i, stream) in sockets.iter_mut().enumerate() {
        let answer = read_until_closed(stream, Duration::from_secs(15)).await;
        let answer = answer.unwrap_or_else(|| panic!("half-sent head {i} was never closed"));
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    }
    assert_eq!(
        healthz(gateway.addr, Duration::from_secs(5)).await,
        Some(200)
    );
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_wait_for_a_slot() {
    let gateway = gateway(ServeOptions {
        header_timeout: Duration::from_secs(30),
        max_connections: 2,
        ..ServeOptions::default()
    })
    .await;
    let idle: Vec<TcpStream> =
        futures_util::future::join_all((0..2).map(|_| TcpStream::connect(gateway.addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    // Give the server time to accept both (it has nothing else to do).
    tokio::time::sleep(ms(200)).await;

    let check = tokio::spawn(healthz(gateway.addr, Duration::from_secs(20)));
    tokio::time::sleep(ms(500)).await;
    assert!(
        !check.is_finished(),
        "a third connection was served while the cap of two was taken"
    );
    drop(idle);
    let status = tokio::time::timeout(Duration::from_secs(10), check)
        .await
        .expect("no answer after the slots were freed")
        .unwrap();
    assert_eq!(status, Some(200));
}

#[tokio::test]
async fn idle_connections_over_the_cap_time_out_and_healthz_answers_once_slots_free_up() {
    let gateway = gateway(ServeOptions {
        header_timeout: ms(300),
        max_connections: 8,
        ..ServeOptions::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(TcpStream::connect(gateway.addr).await.unwrap());
    }

    assert_eq!(
        healthz(gateway.addr, Duration::from_secs(15)).await,
        Some(200)
    );
    for (i, stream) in idle.iter_mut().enumerate() {
        let answer = read_until_closed(stream, Duration::from_secs(15)).await;
        assert_eq!(answer.as_deref(), Some(&b""[..]), "idle connection {i}");
    }
}

#[tokio::test]
async fn keep_alive_connection_is_closed_after_the_idle_timeout() {
    let gateway = gateway(ServeOptions {
        idle_timeout: ms(300),
        ..ServeOptions::default()
    })
    .await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    for _ in 0..2 {
        // Two requests on the same connection: it stays open between them.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: r2\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(br#"{"status":"ok"}"#) {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("no answer")
                .unwrap();
            assert_ne!(n, 0, "closed before the answer");
            answer.extend_from_slice(&buf[..n]);
        }
        assert_eq!(status_of(&answer), 200);
    }

    let rest = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(
        rest.as_deref(),
        Some(&b""[..]),
        "the idle keep-alive connection stayed open"
    );
}

#[tokio::test]
async fn client_that_stops_reading_a_stream_loses_its_connection_and_slot() {
    let gateway = Gateway::start(Setup {
        serve: ServeOptions {
            max_concurrency: 1,
            send_timeout: ms(1000),
            ..ServeOptions::default()
        },
        provider_base: Some(start_provider(Provider::Endless)),
        ..Setup::default()
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(gateway.addr).await.unwrap();
    let body = json!({"model": "r2-router", "stream": true, "messages": [{"role": "user", "content": "query0"}]})
        .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: r2\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // This client never reads its answer. Once the stream has taken the only slot, other
    // requests are 429 until the send timeout gives it back.
    let route = json!({"embedding": golden_embedding(0)});
    let started = Instant::now();
    let mut statuses = Vec::new();
    loop {
        let status = gateway.post("/v1/route", &route).await.status().as_u16();
        statuses.push(status);
        if status == 200 && statuses.contains(&429) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the stalled stream kept its slot: {statuses:?}"
        );
        tokio::time::sleep(ms(50)).await;
    }
    drop(stream);
}

// ---------------------------------------------------------------------------------------------
// Bodies

#[tokio::test]
async fn stalled_bodies_take_no_concurrency_slot_and_get_408() {
    let gateway = gateway(ServeOptions {
        max_concurrency: 2,
        body_timeout: Duration::from_secs(2),
        ..ServeOptions::default()
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..5 {
        stalled.push(stalled_post(gateway.addr, "/v1/route", 100, "{").await);
    }
    // Let the server read all five heads.
    tokio::time::sleep(ms(300)).await;

    let response = gateway
        .post("/v1/route", &json!({"embedding": golden_embedding(3)}))
        .await;
    assert_eq!(response.status(), 200, "stalled bodies took the slots");

    for (i, stream) in stalled.iter_mut().enumerate() {
        let answer = read_until_closed(stream, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("stalled body {i}: the connection was not closed"));
        assert_eq!(
            status_of(&answer),
            408,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert!(has_header(&answer, "connection", "close"));
        let body = json_of(&answer);
        assert_eq!(body["error"]["code"], "body_timeout", "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    let metrics = metrics(&gateway).await;
    assert_eq!(
        sample(
            &metrics,
            "r2_requests_total{endpoint=\"/v1/route\",status=\"408\"}"
        ),
        5.0
    );
}

#[tokio::test]
async fn huge_content_length_is_413_at_once_and_the_connection_closed() {
    let gateway = gateway(ServeOptions::default()).await;
    let started = Instant::now();

    for path in ["/v1/route", "/v1/chat/completions"] {
        let mut stream = stalled_post(gateway.addr, path, 10_000_000_000, "{\"query\": ").await;
        let answer = read_until_closed(&mut stream, Duration::from_secs(10))
            .await
            .expect("the connection was not closed");
        assert_eq!(
            status_of(&answer),
            413,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(json_of(&answer)["error"]["code"], "body_too_large");
    }
    // Well under the 30 s body timeout: nothing waited for the body.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn stalled_body_does_not_hold_shutdown_past_the_drain_timeout() {
    let mut gateway = gateway(ServeOptions {
        drain_timeout: ms(300),
        ..ServeOptions::default()
    })
    .await;
    let mut stalled = stalled_post(gateway.addr, "/v1/route", 100, "{").await;
    tokio::time::sleep(ms(200)).await;

    gateway.shut_down();
    let task = gateway.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the server waited for the stalled body (its timeout is 30 s)")
        .unwrap()
        .unwrap();
    assert!(
        read_until_closed(&mut stalled, Duration::from_secs(5))
            .await
            .is_some(),
        "the stalled connection is still open"
    );
    assert!(
        TcpStream::connect(gateway.addr).await.is_err(),
        "still listening"
    );
}

#[tokio::test]
async fn body_with_a_byte_order_mark_is_accepted() {
    let gateway = Gateway::start(Setup::default()).await;
    let cases = [
        ("/v1/route", json!({"embedding": golden_embedding(5)})),
        ("/v1/route", json!({"query": "query5"})),
        ("/v1/chat/completions", chat("r2-router", "query5")),
    ];
    for (path, body) in cases {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(body.to_string().as_bytes());

        let response = gateway
            .client
            .post(gateway.url(path))
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await
            .unwrap();

        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "{path}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert!(answer["model"].is_string(), "{path}: {answer}");
    }
}

#[tokio::test]
async fn embedding_with_non_finite_predictions_is_422() {
    let gateway = gateway(ServeOptions::default()).await;
    let huge = vec![1e308; 1024];

    let single = gateway.post("/v1/route", &json!({"embedding": huge})).await;
    let error = error_body(single, 422, "non_finite_prediction").await;
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("unit-norm"), "{message}");
    assert_eq!(error["error"]["type"], "invalid_request_error");

    let batch = gateway
        .post(
            "/v1/route",
            &json!({"embeddings": [golden_embedding(1), huge]}),
        )
        .await;
    let error = error_body(batch, 422, "non_finite_prediction").await;
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("query 1"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Providers

#[derive(Clone, Copy)]
enum Provider {
    /// 200 with an HTML page, whatever was asked.
    Html,
    /// 200 `text/event-stream` whose first event is `data: {broken`; for a plain request, the
    /// same bytes.
    BrokenEvent,
    /// A valid first event, then a line without an end that grows past 1 MiB, then a stall.
    LongLine,
    /// Valid events, 1 KiB each, as fast as they are taken (at most 200k of them).
    Endless,
}

/// A chat-completions provider on 127.0.0.1 that misbehaves as `kind` says; its API base.
fn start_provider(kind: Provider) -> String {
    let app = axum::Router::new().route(
        "/api/v1/chat/completions",
        axum::routing::post(move || async move {
            let event = |content: &str| {
                let chunk = json!({"id": "gen-1", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": 0, "delta": {"content": content}}]});
                format!("data: {chunk}\n\n")
            };
            match kind {
                Provider::Html => (
                    [("content-type", "text/html")],
                    "<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n",
                )
                    .into_response(),
                Provider::BrokenEvent => {
                    ([("content-type", "text/event-stream")], "data: {broken\n\n").into_response()
                }
                Provider::LongLine => {
                    let first = futures_util::stream::iter([Bytes::from(event("Par"))]);
                    let line = futures_util::stream::iter(
                        std::iter::once(Bytes::from_static(b"data: {\"x\": \""))
                            .chain((0..48).map(|_| Bytes::from(vec![b'a'; 64 * 1024]))),
                    );
                    let body = first
                        .chain(line)
                        .chain(futures_util::stream::pending())
                        .map(Ok::<_, std::convert::Infallible>);
                    (
                        [("content-type", "text/event-stream")],
                        Body::from_stream(body),
                    )
                        .into_response()
                }
                Provider::Endless => {
                    let piece = Bytes::from(event(&"x".repeat(900)));
                    let body = futures_util::stream::iter(
                        (0..200_000).map(move |_| Ok::<_, std::convert::Infallible>(piece.clone())),
                    );
                    (
                        [("content-type", "text/event-stream")],
                        Body::from_stream(body),
                    )
                        .into_response()
                }
            }
        }),
    );
    format!("http://{}/api/v1", r2_fixtures::spawn_server(app))
}

#[tokio::test]
async fn provider_answering_html_is_502_with_and_without_streaming() {
    for provider in [Provider::Html, Provider::BrokenEvent] {
        let gateway = Gateway::start(Setup {
            provider_base: Some(start_provider(provider)),
            ..Setup::default()
        })
        .await;
        for stream in [false, true] {
            let mut body = chat("r2-router", "query2");
            body["stream"] = json!(stream);

            let response = gateway.post("/v1/chat/completions", &body).await;

            let error = error_body(response, 502, "provider_malformed_answer").await;
            assert_eq!(error["error"]["type"], "upstream_error");
        }
    }
}

#[tokio::test]
async fn streamed_line_past_the_limit_ends_the_stream_with_an_error_event() {
    let gateway = Gateway::start(Setup {
        provider_base: Some(start_provider(Provider::LongLine)),
        ..Setup::default()
    })
    .await;
    let mut body = chat("r2-router", "query4");
    body["stream"] = json!(true);

    let response = gateway.post("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the stream did not end")
        .unwrap();

    assert!(text.len() < 2 << 20, "{} bytes passed on", text.len());
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| l.starts_with("{\"error\""))
        .collect();
    assert_eq!(events.len(), 1, "{}", &text[..text.len().min(500)]);
    let error: Value = serde_json::from_str(events[0]).unwrap();
    assert_eq!(error["error"]["code"], "provider_answer_too_large");
    assert!(text.starts_with("data: {"), "{}", &text[..100]);
}
