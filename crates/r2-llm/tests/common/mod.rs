//! An OpenAI chat-completions server on 127.0.0.1 with per-test behaviour, shared by the tests.

#![allow(dead_code)] // each test binary uses part of it

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use r2_llm::{ApiKey, Error, LlmClient, LlmOptions};
use serde_json::{json, Value};

/// The key the tests use; it must never show up in any printout.
pub const KEY: &str = "sk-or-v1-0123456789abcdef-TEST-SECRET";
pub const MODEL: &str = "z-ai/glm-4.5-air";
pub const API_PATH: &str = "/api/v1/chat/completions";

/// What the test server answers to one request.
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: ReplyBody,
    pub delay: Duration,
}

pub enum ReplyBody {
    Full(String),
    /// Pieces written one after the other, each after its pause; then the body ends, or the
    /// connection is dropped when `abort` is set.
    Stream {
        pieces: Vec<(Duration, Vec<u8>)>,
        abort: bool,
    },
}

impl Reply {
    pub fn json(value: Value) -> Self {
        Self::raw(StatusCode::OK, value.to_string())
    }

    pub fn raw(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: ReplyBody::Full(body.into()),
            delay: Duration::ZERO,
        }
    }

    /// A `text/event-stream` answer written as `pieces`, `pause` apart.
    pub fn stream(pieces: Vec<String>, pause: Duration) -> Self {
        Self::stream_bytes(pieces.into_iter().map(String::into_bytes).collect(), pause)
    }

    /// Like [`Reply::stream`] with pieces of raw bytes (which may cut a UTF-8 character).
    pub fn stream_bytes(pieces: Vec<Vec<u8>>, pause: Duration) -> Self {
        Self::stream_timed_bytes(pieces.into_iter().map(|p| (pause, p)).collect())
    }

    /// A `text/event-stream` answer written as `pieces`, each after its own pause.
    pub fn stream_timed(pieces: Vec<(Duration, String)>) -> Self {
        Self::stream_timed_bytes(
            pieces
                .into_iter()
                .map(|(pause, p)| (pause, p.into_bytes()))
                .collect(),
        )
    }

    fn stream_timed_bytes(pieces: Vec<(Duration, Vec<u8>)>) -> Self {
        Self {
            status: StatusCode::OK,
            headers: vec![("content-type", "text/event-stream".to_owned())],
            body: ReplyBody::Stream {
                pieces,
                abort: false,
            },
            delay: Duration::ZERO,
        }
    }

    /// Drops the connection after the last piece instead of ending the body.
    pub fn then_abort(mut self) -> Self {
        if let ReplyBody::Stream { abort, .. } = &mut self.body {
            *abort = true;
        }
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn after(self, delay: Duration) -> Self {
        Self { delay, ..self }
    }
}

/// Decides the reply from the request's number (0 for the first) and its JSON body.
type Behaviour = dyn Fn(usize, &Value) -> Reply + Send + Sync;

/// One request the test server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

#[derive(Clone)]
struct ServerState {
    requests: Arc<Mutex<Vec<Recorded>>>,
    last_write: Arc<Mutex<Option<Instant>>>,
    behaviour: Arc<Behaviour>,
}

pub struct TestServer {
    /// The API base, like OpenRouter's: `http://127.0.0.1:PORT/api/v1`.
    pub base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    last_write: Arc<Mutex<Option<Instant>>>,
}

impl TestServer {
    pub async fn start(behaviour: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let last_write = Arc::new(Mutex::new(None));
        let state = ServerState {
            requests: Arc::clone(&requests),
            last_write: Arc::clone(&last_write),
            behaviour: Arc::new(behaviour),
        };
        let app = Router::new().fallback(handle).with_state(state);
        let base = format!("http://{}/api/v1", r2_fixtures::spawn_server(app));
        Self {
            base,
            requests,
            last_write,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// When the server handed the last piece of a streamed answer to the connection.
    pub fn last_write(&self) -> Option<Instant> {
        *self.last_write.lock().unwrap()
    }

    pub fn client(&self, options: LlmOptions) -> LlmClient {
        LlmClient::new(&self.base, Some(ApiKey::new(KEY)), options).unwrap()
    }
}

async fn handle(
    State(state): State<ServerState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let json = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let number = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(Recorded {
            path: path.clone(),
            headers,
            body: json.clone(),
            at: Instant::now(),
        });
        requests.len() - 1
    };
    if method != Method::POST || path != API_PATH {
        return error_reply(StatusCode::NOT_FOUND, &format!("no route {method} {path}"));
    }
    if !json["model"].is_string() || !json["messages"].is_array() {
        return error_reply(StatusCode::BAD_REQUEST, "expected {model, messages: [...]}");
    }
    let reply = (state.behaviour)(number, &json);
    tokio::time::sleep(reply.delay).await;
    let mut response = match reply.body {
        ReplyBody::Full(text) => Response::new(Body::from(text)),
        ReplyBody::Stream { pieces, abort } => {
            let last_write = Arc::clone(&state.last_write);
            let n = pieces.len();
            let stream = futures_util::stream::unfold(
                (pieces.into_iter().enumerate(), last_write, abort),
                move |(mut pieces, last_write, abort)| async move {
                    match pieces.next() {
                        Some((i, (pause, piece))) => {
                            tokio::time::sleep(pause).await;
                            if i + 1 == n {
                                *last_write.lock().unwrap() = Some(Instant::now());
                            }
                            Some((Ok(Bytes::from(piece)), (pieces, last_write, abort)))
                        }
                        None if abort => {
                            // Let hyper flush what was written before the connection drops.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Some((
                                Err(std::io::Error::other("test server drops the connection")),
                                (pieces, last_write, false),
                            ))
                        }
                        None => None,
                    }
                },
            );
            // After an error, end the stream so that hyper only sees it once.
            let stream = futures_util::StreamExt::take_while(stream, {
                let mut failed = false;
                move |item: &Result<Bytes, std::io::Error>| {
                    let go_on = !failed;
                    failed |= item.is_err();
                    std::future::ready(go_on)
                }
            });
            Response::new(Body::from_stream(stream))
        }
    };
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, header::HeaderValue::from_str(&value).unwrap());
    }
    response
}

fn error_reply(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "code": status.as_u16()}});
    (status, axum::Json(body)).into_response()
}

/// The OpenAI chat-completions answer with `content`.
pub fn chat_answer(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "id": "gen-test-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
}

/// One SSE event holding a `chat.completion.chunk` with `content` as its delta.
pub fn delta_event(content: &str) -> String {
    let chunk = json!({
        "id": "gen-test-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": null}],
    });
    format!("data: {chunk}\n\n")
}

/// The chunk that ends the choice.
pub fn finish_event() -> String {
    let chunk = json!({
        "id": "gen-test-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": null}, "finish_reason": "stop"}],
    });
    format!("data: {chunk}\n\n")
}

/// The final usage-only chunk sent for `"stream_options": {"include_usage": true}`.
pub fn usage_event(prompt_tokens: u64, completion_tokens: u64) -> String {
    let chunk = json!({
        "id": "gen-test-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    });
    format!("data: {chunk}\n\n")
}

pub const DONE: &str = "data: [DONE]\n\n";

/// Fast retries, and a timeout that no healthy test request reaches.
pub fn options() -> LlmOptions {
    LlmOptions {
        timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(1),
        ..LlmOptions::default()
    }
}

/// Checks that the key shows in neither the error's `Display` nor its `Debug`.
pub fn assert_no_key(err: &Error) {
    let display = err.to_string();
    let debug = format!("{err:?}");
    assert!(!display.contains(KEY), "key in Display: {display}");
    assert!(!debug.contains(KEY), "key in Debug: {debug}");
    assert!(!display.contains("TEST-SECRET"), "{display}");
}
