//! `VllmEmbedder` against a real HTTP server that speaks the OpenAI embeddings protocol.

#![cfg(feature = "http")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use r2_embed::{Embedder, Error, VllmEmbedder, VllmOptions};
use serde_json::{json, Value};

const MODEL: &str = "Qwen/Qwen3-0.6B";
const DIM: usize = 8;

/// What the test server answers to one request.
struct Reply {
    status: StatusCode,
    body: String,
    delay: Duration,
}

impl Reply {
    fn json(value: Value) -> Self {
        Self::raw(StatusCode::OK, value.to_string())
    }

    fn raw(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn after(self, delay: Duration) -> Self {
        Self { delay, ..self }
    }
}

/// Decides the reply from the request's number (0 for the first) and its `input` texts.
type Behaviour = dyn Fn(usize, &[String]) -> Reply + Send + Sync;

/// One request the test server received.
#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    body: Value,
}

#[derive(Clone)]
struct ServerState {
    requests: Arc<Mutex<Vec<Recorded>>>,
    behaviour: Arc<Behaviour>,
}

/// An OpenAI-compatible embeddings server on 127.0.0.1 with per-test behaviour.
struct TestServer {
    base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl TestServer {
    async fn start(behaviour: impl Fn(usize, &[String]) -> Reply + Send + Sync + 'static) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = ServerState {
            requests: Arc::clone(&requests),
            behaviour: Arc::new(behaviour),
        };
        let app = Router::new().fallback(handle).with_state(state);
        let base = format!("http://{}", r2_fixtures::spawn_server(app));
        Self { base, requests }
    }

    /// A server that answers every request correctly with [`vector_for`] embeddings.
    async fn honest() -> Self {
        Self::start(|_, inputs| Reply::json(answer_for(inputs, DIM))).await
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The `input` texts of every request received, in order.
    fn inputs(&self) -> Vec<Vec<String>> {
        self.requests()
            .iter()
            .map(|r| serde_json::from_value(r.body["input"].clone()).unwrap())
            .collect()
    }

    fn embedder(&self, options: VllmOptions) -> VllmEmbedder {
        VllmEmbedder::new(&self.base, MODEL, options).unwrap()
    }
}

async fn handle(
    State(state): State<ServerState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let json = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let number = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(Recorded {
            path: path.clone(),
            body: json.clone(),
        });
        requests.len() - 1
    };
    if method != Method::POST || path != "/v1/embeddings" {
        return error_reply(StatusCode::NOT_FOUND, &format!("no route {method} {path}"));
    }
    let inputs = match serde_json::from_value::<Vec<String>>(json["input"].clone()) {
        Ok(inputs) if json["model"].is_string() => inputs,
        _ => return error_reply(StatusCode::BAD_REQUEST, "expected {model, input: [texts]}"),
    };
    let reply = (state.behaviour)(number, &inputs);
    tokio::time::sleep(reply.delay).await;
    (
        reply.status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response()
}

fn error_reply(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
    (status, axum::Json(body)).into_response()
}

/// A deterministic embedding of `text`: every value is exact in `f32` and survives JSON.
fn vector_for(text: &str, dim: usize) -> Vec<f32> {
    let mut hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (0..dim)
        .map(|_| {
            hash = hash
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (hash >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn item(index: usize, embedding: Value) -> Value {
    json!({"object": "embedding", "index": index, "embedding": embedding})
}

/// The OpenAI embeddings answer holding `data`.
fn answer(data: Vec<Value>) -> Value {
    let n = data.len();
    json!({
        "id": "embd-test",
        "object": "list",
        "created": 0,
        "model": MODEL,
        "data": data,
        "usage": {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0},
    })
}

/// The correct answer for `inputs`, in index order.
fn answer_for(inputs: &[String], dim: usize) -> Value {
    answer(
        inputs
            .iter()
            .enumerate()
            .map(|(i, t)| item(i, json!(vector_for(t, dim))))
            .collect(),
    )
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("query number {i}")).collect()
}

fn expected(texts: &[String]) -> Vec<Vec<f32>> {
    texts.iter().map(|t| vector_for(t, DIM)).collect()
}

/// Small dimension, fast retries, and a timeout that no healthy test request reaches.
fn options() -> VllmOptions {
    VllmOptions {
        dim: DIM,
        initial_backoff: Duration::from_millis(1),
        timeout: Duration::from_secs(5),
        ..VllmOptions::default()
    }
}

#[test]
fn default_options_match_the_documented_values() {
    let o = VllmOptions::default();
    assert_eq!(o.batch_size, 64);
    assert_eq!(o.timeout, Duration::from_secs(30));
    assert_eq!(o.max_retries, 3);
    assert_eq!(o.initial_backoff, Duration::from_millis(200));
    assert_eq!(o.dim, 1024);
}

#[tokio::test]
async fn round_trip_returns_each_texts_vector_in_input_order() {
    let server = TestServer::honest().await;
    let embedder = server.embedder(options());
    let texts: Vec<String> = [
        "What is 2 + 2?",
        "Write a haiku about rain.",
        "Explain lifetimes.",
    ]
    .map(String::from)
    .to_vec();

    let embeddings = embedder.embed(&texts).await.unwrap();

    assert_eq!(embeddings, expected(&texts));
    assert!(embeddings.iter().all(|e| e.len() == DIM));
    assert_eq!(embedder.dim(), DIM);
    assert_eq!(embedder.model_name(), MODEL);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/embeddings");
    assert_eq!(requests[0].body["model"], MODEL);
    assert_eq!(requests[0].body["input"], json!(texts));
}

#[tokio::test]
async fn base_url_with_trailing_slash_or_v1_still_posts_to_v1_embeddings() {
    let server = TestServer::honest().await;
    let suffixes = ["", "/", "/v1", "/v1/", "/v1/embeddings"];
    for suffix in suffixes {
        let base = format!("{}{suffix}", server.base);
        let embedder = VllmEmbedder::new(&base, MODEL, options()).unwrap();
        assert_eq!(
            embedder.url(),
            format!("{}/v1/embeddings", server.base),
            "{base}"
        );
        let texts = vec![format!("base {base}")];
        assert_eq!(embedder.embed(&texts).await.unwrap(), expected(&texts));
    }
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/v1/embeddings"; suffixes.len()]);
}

#[test]
fn base_url_that_is_not_http_is_rejected() {
    for base in [
        "localhost:8000",
        "ftp://localhost:8000",
        "not a url",
        "http://h:8000/?a=b",
        "",
    ] {
        match VllmEmbedder::new(base, MODEL, options()) {
            Err(Error::InvalidUrl { url, .. }) => assert_eq!(url, base),
            other => panic!("{base:?}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn out_of_order_indices_are_put_back_in_input_order() {
    let server = TestServer::start(|_, inputs| {
        let data = [2, 0, 3, 1]
            .into_iter()
            .map(|i| item(i, json!(vector_for(&inputs[i], DIM))))
            .collect();
        Reply::json(answer(data))
    })
    .await;
    let texts = texts(4);

    let embeddings = server.embedder(options()).embed(&texts).await.unwrap();

    assert_eq!(embeddings, expected(&texts));
}

#[tokio::test]
async fn long_inputs_are_sent_in_chunks_of_batch_size() {
    let server = TestServer::honest().await;
    let embedder = server.embedder(VllmOptions {
        batch_size: 64,
        ..options()
    });
    let texts = texts(150);

    let embeddings = embedder.embed(&texts).await.unwrap();

    assert_eq!(embeddings, expected(&texts));
    let inputs = server.inputs();
    let sizes: Vec<usize> = inputs.iter().map(Vec::len).collect();
    assert_eq!(sizes, [64, 64, 22]);
    assert_eq!(inputs.concat(), texts);
}

#[tokio::test]
async fn client_error_is_status_with_the_servers_message_and_not_retried() {
    let server = TestServer::start(|_, _| {
        Reply::raw(
            StatusCode::BAD_REQUEST,
            r#"{"error": {"message": "bad input", "type": "invalid_request_error"}}"#,
        )
    })
    .await;

    let err = server
        .embedder(options())
        .embed(&texts(2))
        .await
        .unwrap_err();

    match err {
        Error::Status {
            status, message, ..
        } => {
            assert_eq!(status, 400);
            assert!(message.contains("bad input"), "{message}");
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn error_message_is_taken_from_message_or_detail_or_the_body_text() {
    let long_body = "x".repeat(5000);
    let replies = [
        (
            StatusCode::NOT_FOUND,
            r#"{"object": "error", "message": "The model `m` does not exist.", "code": 404}"#
                .to_owned(),
            "The model `m` does not exist.",
        ),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"detail": [{"loc": ["body", "input"], "msg": "Field required"}]}"#.to_owned(),
            "Field required",
        ),
        (
            StatusCode::UNAUTHORIZED,
            "plain text: token rejected".to_owned(),
            "plain text: token rejected",
        ),
        (StatusCode::FORBIDDEN, String::new(), "Forbidden"),
        (StatusCode::PAYLOAD_TOO_LARGE, long_body, "xxxxxxxxxx"),
    ];
    let bodies: Vec<(StatusCode, String)> = replies
        .iter()
        .map(|(status, body, _)| (*status, body.clone()))
        .collect();
    let server = TestServer::start(move |n, _| {
        let (status, body) = &bodies[n];
        Reply::raw(*status, body.clone())
    })
    .await;
    let embedder = server.embedder(options());

    for (status, _, wanted) in replies {
        match embedder.embed(&texts(1)).await.unwrap_err() {
            Error::Status {
                status: got,
                message,
                ..
            } => {
                assert_eq!(got, status.as_u16());
                assert!(message.contains(wanted), "{status}: {message}");
                assert!(message.chars().count() <= 501, "{status}: {message}");
            }
            other => panic!("{status}: expected Status, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn server_errors_are_retried_until_the_server_recovers() {
    let server = TestServer::start(|n, inputs| {
        if n < 2 {
            Reply::raw(StatusCode::INTERNAL_SERVER_ERROR, "engine is warming up")
        } else {
            Reply::json(answer_for(inputs, DIM))
        }
    })
    .await;
    let texts = texts(3);

    let embeddings = server.embedder(options()).embed(&texts).await.unwrap();

    assert_eq!(embeddings, expected(&texts));
    assert_eq!(server.inputs(), vec![texts.clone(); 3]);
}

#[tokio::test]
async fn server_error_that_persists_is_status_after_max_retries() {
    let server = TestServer::start(|_, _| {
        Reply::raw(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"message": "CUDA out of memory"}"#,
        )
    })
    .await;
    let embedder = server.embedder(VllmOptions {
        max_retries: 2,
        ..options()
    });

    let err = embedder.embed(&texts(1)).await.unwrap_err();

    match err {
        Error::Status {
            status, message, ..
        } => {
            assert_eq!(status, 500);
            assert!(message.contains("CUDA out of memory"), "{message}");
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 3);
}

/// Embeds two texts against a server that always answers `body` with 200 and returns the reason
/// of the expected `Malformed` error; also checks that nothing was retried.
async fn malformed_reason(body: &'static str) -> String {
    let server = TestServer::start(move |_, _| Reply::raw(StatusCode::OK, body)).await;
    let err = server
        .embedder(options())
        .embed(&texts(2))
        .await
        .unwrap_err();
    assert_eq!(server.requests().len(), 1);
    match err {
        Error::Malformed { reason, .. } => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn truncated_json_is_malformed() {
    let reason = malformed_reason(r#"{"data": [{"index": 0, "embedding": [0.1,"#).await;
    assert!(reason.contains("EOF"), "{reason}");
}

#[tokio::test]
async fn body_that_is_not_json_is_malformed() {
    let reason = malformed_reason("<html>502 Bad Gateway</html>").await;
    assert!(reason.contains("<html>"), "{reason}");
}

#[tokio::test]
async fn answer_without_data_is_malformed() {
    let reason = malformed_reason(r#"{"object": "list", "model": "m", "usage": {}}"#).await;
    assert!(reason.contains("missing field `data`"), "{reason}");
}

#[tokio::test]
async fn duplicate_index_is_malformed() {
    let reason = malformed_reason(
        r#"{"data": [{"index": 0, "embedding": [0,0,0,0,0,0,0,0]},
                     {"index": 0, "embedding": [0,0,0,0,0,0,0,0]}]}"#,
    )
    .await;
    assert!(
        reason.contains("index 0 appears more than once"),
        "{reason}"
    );
}

#[tokio::test]
async fn missing_index_is_malformed() {
    let reason =
        malformed_reason(r#"{"data": [{"index": 0, "embedding": [0,0,0,0,0,0,0,0]}]}"#).await;
    assert!(reason.contains("no embedding with index 1"), "{reason}");
}

#[tokio::test]
async fn index_out_of_range_is_malformed() {
    let reason = malformed_reason(
        r#"{"data": [{"index": 0, "embedding": [0,0,0,0,0,0,0,0]},
                     {"index": 2, "embedding": [0,0,0,0,0,0,0,0]}]}"#,
    )
    .await;
    assert!(reason.contains("index 2 is out of range"), "{reason}");
}

#[tokio::test]
async fn string_inside_a_vector_is_malformed() {
    let reason = malformed_reason(
        r#"{"data": [{"index": 0, "embedding": [0,0,0,"NaN",0,0,0,0]},
                     {"index": 1, "embedding": [0,0,0,0,0,0,0,0]}]}"#,
    )
    .await;
    assert!(reason.contains("invalid type: string"), "{reason}");
}

#[tokio::test]
async fn wrong_dimension_names_the_index_in_the_whole_input() {
    let server = TestServer::start(|n, inputs| {
        let dim = if n == 1 { DIM - 1 } else { DIM };
        Reply::json(answer_for(inputs, dim))
    })
    .await;
    let embedder = server.embedder(VllmOptions {
        batch_size: 2,
        ..options()
    });

    let err = embedder.embed(&texts(3)).await.unwrap_err();

    match err {
        Error::WrongDimension {
            index,
            expected,
            got,
            ..
        } => assert_eq!((index, expected, got), (2, DIM, DIM - 1)),
        other => panic!("expected WrongDimension, got {other:?}"),
    }
}

#[tokio::test]
async fn value_beyond_f32_range_is_rejected() {
    let server = TestServer::start(|_, inputs| {
        let mut answer = answer_for(inputs, DIM);
        answer["data"][1]["embedding"][5] = json!(1e300);
        Reply::json(answer)
    })
    .await;

    let err = server
        .embedder(options())
        .embed(&texts(2))
        .await
        .unwrap_err();

    // The numbers are read correctly rounded (serde_json's `float_roundtrip`), so a value beyond
    // float32's range is refused while parsing instead of becoming an infinity.
    match err {
        Error::Malformed { reason, .. } => assert!(reason.contains("out of range"), "{reason}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn slow_server_times_out_without_retrying() {
    let server = TestServer::start(|_, inputs| {
        Reply::json(answer_for(inputs, DIM)).after(Duration::from_secs(2))
    })
    .await;
    let timeout = Duration::from_millis(300);
    let embedder = server.embedder(VllmOptions {
        timeout,
        ..options()
    });

    let started = Instant::now();
    let err = embedder.embed(&texts(1)).await.unwrap_err();

    assert!(started.elapsed() < Duration::from_millis(1500));
    match err {
        Error::Timeout { timeout: t, .. } => assert_eq!(t, timeout),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn nothing_listening_is_unreachable_with_how_to_start_vllm() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let embedder = VllmEmbedder::new(
        &format!("http://127.0.0.1:{port}"),
        MODEL,
        VllmOptions {
            max_retries: 1,
            ..options()
        },
    )
    .unwrap();

    let err = embedder.embed(&texts(1)).await.unwrap_err();

    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("vllm serve Qwen/Qwen3-0.6B --runner pooling"),
        "{message}"
    );
}

#[tokio::test]
async fn empty_text_is_rejected_before_any_request() {
    let server = TestServer::honest().await;
    let mut texts = texts(150);
    texts[100].clear();

    let err = server.embedder(options()).embed(&texts).await.unwrap_err();

    assert!(matches!(err, Error::EmptyText { index: 100 }), "{err:?}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn empty_input_gives_no_embeddings_and_sends_no_request() {
    let server = TestServer::honest().await;

    let embeddings = server.embedder(options()).embed(&[]).await.unwrap();

    assert!(embeddings.is_empty());
    assert!(server.requests().is_empty());
}

/// How the raw server of [`start_raw_server`] answers every request.
#[derive(Clone, Copy)]
enum Oversized {
    /// 200, chunked: `bytes` of a JSON answer that never ends, then a stall.
    Chunked { bytes: usize },
    /// 200 declaring `Content-Length: 10000000000`, a few bytes, then a stall.
    DeclaredLength,
    /// 500, chunked: `bytes` of an error message, then a stall.
    ErrorBody { bytes: usize },
}

/// An HTTP/1.1 server on a raw socket that answers with `answer`, sends its oversized body as
/// fast as the client reads it, and then holds the connection open for a minute: a client that
/// read the whole body would time out instead of failing with `AnswerTooLarge`.
async fn start_raw_server(answer: Oversized) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // The request: its head, then as many body bytes as it declares.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let body_start = loop {
                    let Ok(n @ 1..) = socket.read(&mut buf).await else {
                        return;
                    };
                    request.extend_from_slice(&buf[..n]);
                    if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..body_start]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while request.len() < body_start + length {
                    let Ok(n @ 1..) = socket.read(&mut buf).await else {
                        return;
                    };
                    request.extend_from_slice(&buf[..n]);
                }
                let (status, total, prefix) = match answer {
                    Oversized::Chunked { bytes } => (
                        "200 OK",
                        bytes,
                        r#"{"data": [{"index": 0, "embedding": [0.5"#,
                    ),
                    Oversized::DeclaredLength => ("200 OK", 0, r#"{"data": "#),
                    Oversized::ErrorBody { bytes } => (
                        "500 Internal Server Error",
                        bytes,
                        r#"{"error": {"message": ""#,
                    ),
                };
                let framing = match answer {
                    Oversized::DeclaredLength => "Content-Length: 10000000000",
                    _ => "Transfer-Encoding: chunked",
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
                );
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunked = !matches!(answer, Oversized::DeclaredLength);
                let send = |piece: &[u8]| {
                    let mut out = Vec::new();
                    if chunked {
                        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        out.extend_from_slice(piece);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.extend_from_slice(piece);
                    }
                    out
                };
                if socket.write_all(&send(prefix.as_bytes())).await.is_err() {
                    return;
                }
                let piece = ", 0.25".repeat(64 * 1024 / 6);
                let mut sent = 0;
                while sent < total {
                    if socket.write_all(&send(piece.as_bytes())).await.is_err() {
                        return;
                    }
                    sent += piece.len();
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    base
}

/// Timeouts long enough that reaching one means the client waited for the whole body.
fn patient() -> VllmOptions {
    VllmOptions {
        timeout: Duration::from_secs(20),
        max_retries: 0,
        ..options()
    }
}

#[test]
fn answer_limit_grows_with_the_batch_and_the_dimension() {
    assert_eq!(VllmEmbedder::answer_limit(0, 1024), 1024 * 1024);
    assert_eq!(
        VllmEmbedder::answer_limit(64, 1024),
        1024 * 1024 + 64 * (1024 * 64 + 1024)
    );
    assert!(VllmEmbedder::answer_limit(2, 8) > VllmEmbedder::answer_limit(1, 8));
    assert_eq!(VllmEmbedder::answer_limit(usize::MAX, 1024), usize::MAX);
}

#[tokio::test]
async fn answer_larger_than_the_batch_could_need_is_too_large_without_reading_it_all() {
    let base = start_raw_server(Oversized::Chunked { bytes: 6 << 20 }).await;
    let embedder = VllmEmbedder::new(&base, MODEL, patient()).unwrap();
    let limit = VllmEmbedder::answer_limit(3, DIM);

    let err = embedder.embed(&texts(3)).await.unwrap_err();

    match &err {
        Error::AnswerTooLarge {
            url,
            limit: got,
            texts,
            dim,
        } => {
            assert_eq!(url, &format!("{base}/v1/embeddings"));
            assert_eq!((*got, *texts, *dim), (limit, 3, DIM));
        }
        other => panic!("expected AnswerTooLarge, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&limit.to_string()), "{message}");
    assert!(message.contains(&base), "{message}");
}

#[tokio::test]
async fn declared_length_over_the_limit_is_too_large_before_the_body_is_read() {
    let base = start_raw_server(Oversized::DeclaredLength).await;
    let embedder = VllmEmbedder::new(&base, MODEL, patient()).unwrap();

    let err = embedder.embed(&texts(1)).await.unwrap_err();

    assert!(matches!(err, Error::AnswerTooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn huge_error_body_is_read_only_in_part() {
    let base = start_raw_server(Oversized::ErrorBody { bytes: 6 << 20 }).await;
    let embedder = VllmEmbedder::new(&base, MODEL, patient()).unwrap();

    let err = embedder.embed(&texts(1)).await.unwrap_err();

    match &err {
        Error::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 500);
            assert!(message.chars().count() <= 501, "{}", message.len());
        }
        other => panic!("expected Status 500, got {other:?}"),
    }
}

#[tokio::test]
async fn dimension_zero_takes_the_length_of_the_first_answer_and_holds_to_it() {
    // 3-d vectors for the first request, 5-d for later ones.
    let server =
        TestServer::start(|n, inputs| Reply::json(answer_for(inputs, if n == 0 { 3 } else { 5 })))
            .await;
    let embedder = server.embedder(VllmOptions {
        dim: 0,
        batch_size: 2,
        ..options()
    });
    assert_eq!(embedder.dim(), 0, "unknown before the first answer");
    let first = embedder.embed(&texts(2)).await.unwrap();
    assert!(first.iter().all(|v| v.len() == 3));
    assert_eq!(embedder.dim(), 3);
    let err = embedder.embed(&texts(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongDimension {
                expected: 3,
                got: 5,
                ..
            }
        ),
        "{err:?}"
    );
}
