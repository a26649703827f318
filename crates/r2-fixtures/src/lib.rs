//! Test-only helpers shared by the integration tests of every crate.
//!
//! Architecture invariant: this crate is only ever a `dev-dependency`. It locates the read-only data
//! folder `shared/` (upstream checkpoints, golden decisions, the tiny Qwen3 fixture) and nothing else;
//! it never copies that data into the repository.

pub mod collect;
pub mod hub;
pub mod qwen3;

use std::path::{Path, PathBuf};

/// The environment variable that points at the shared data folder.
pub const SHARED_DIR_ENV: &str = "R2_SHARED_DIR";

/// The root of the cargo workspace (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/r2-fixtures sits two levels below the workspace root")
        .to_path_buf()
}

/// The shared data folder: `$R2_SHARED_DIR`, else `<workspace>/../shared`.
///
/// Panics with a message that says how to provide the folder when it does not exist: a test that
/// needs the data cannot do anything useful without it.
pub fn shared_dir() -> PathBuf {
    let dir = match std::env::var_os(SHARED_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("..").join("shared"),
    };
    assert!(
        dir.join("README.md").is_file(),
        "shared data folder not found at {}: set {SHARED_DIR_ENV} to the folder that holds \
         upstream-r2-router/, golden/ and fixtures/",
        dir.display()
    );
    dir
}

/// Copies the folder `from` (recursively) to `to`, every file writable (`shared/` is read-only),
/// for tests that damage or extend a copy.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            // shared/ is read-only; the copy must be writable.
            let mut perms = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).unwrap();
        }
    }
}

/// `shared/upstream-r2-router`: upstream `config.json`, `checkpoints/` and `SHA256SUMS`.
pub fn upstream_dir() -> PathBuf {
    shared_dir().join("upstream-r2-router")
}

/// `shared/golden`: decisions and head outputs of the upstream Python router.
pub fn golden_dir() -> PathBuf {
    shared_dir().join("golden")
}

/// `shared/fixtures/tiny-qwen3`: a tiny random Qwen3 checkpoint with reference embeddings.
pub fn tiny_qwen3_dir() -> PathBuf {
    shared_dir().join("fixtures").join("tiny-qwen3")
}

/// Every upstream joblib file, as paths relative to [`upstream_dir`], in a stable order.
pub fn upstream_joblib_files() -> Vec<PathBuf> {
    let root = upstream_dir().join("checkpoints");
    let mut files = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut inner: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|entry| entry.expect("readable directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "joblib"))
            .collect();
        inner.sort();
        files.extend(inner);
    }
    files
}

/// A folder holding `router.safetensors` converted from the upstream checkpoints in `shared/`.
///
/// The conversion runs once per test process into `target/r2-fixtures/router/` (the write is a
/// rename, so test processes converting at the same time never see half a file). The converted
/// weights never leave `target/`.
pub fn converted_router_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let out = workspace_root()
            .join("target")
            .join("r2-fixtures")
            .join("router");
        r2_checkpoints::convert_upstream(&upstream_dir(), &out)
            .unwrap_or_else(|e| panic!("converting the upstream checkpoints failed: {e}"));
        out
    })
    .clone()
}

/// The upstream pool config (`shared/upstream-r2-router/config.json`).
pub fn upstream_pool() -> r2_checkpoints::PoolConfig {
    r2_checkpoints::PoolConfig::from_file(&upstream_dir().join("config.json"))
        .unwrap_or_else(|e| panic!("reading the upstream config failed: {e}"))
}

/// The router converted from the upstream checkpoints, with the upstream pool and prices.
pub fn upstream_router() -> r2_core::Router {
    r2_checkpoints::load_router(&converted_router_dir(), &upstream_pool())
        .unwrap_or_else(|e| panic!("loading the converted router failed: {e}"))
}

/// Writes a synthetic router over the tiny Qwen3 fixture's 64-d embeddings into `dir`:
/// `router.safetensors` (three models, `alpha`, `beta` and `gamma`, budgets 10, 100 and 1000,
/// deterministic weights) and its pool config `pool.json` (output prices 15, 1.5 and 0.1 $/M).
/// Returns the path of `pool.json`.
pub fn write_tiny_router(dir: &Path) -> PathBuf {
    let budgets = vec![10, 100, 1000];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let models: Vec<r2_checkpoints::StoredModel> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|name| {
            let mut coef = Vec::new();
            let mut intercept = Vec::new();
            for k in 0..budgets.len() + 2 {
                let token_head = k == budgets.len() + 1;
                let scale = if token_head { 400.0 } else { 0.3 };
                coef.extend((0..64).map(|_| (next() * scale) as f32));
                intercept.push(if token_head { 500.0 } else { 0.5 } as f32);
            }
            r2_checkpoints::StoredModel {
                name: (*name).into(),
                coef,
                intercept,
            }
        })
        .collect();
    r2_checkpoints::RouterFile {
        dim: 64,
        budgets,
        embedding_model: Some("tiny/qwen3".into()),
        source: Some("synthetic test router".into()),
        models,
    }
    .write(&dir.join("router.safetensors"))
    .unwrap_or_else(|e| panic!("writing the tiny router failed: {e}"));
    let config = dir.join("pool.json");
    let pool = serde_json::json!({
        "embedding_model": "tiny/qwen3",
        "embedding_dim": 64,
        "default_lambda": 0.5,
        "models": {
            "alpha": {"openrouter_id": "a/alpha", "input_price_per_million": 3.0, "output_price_per_million": 15.0},
            "beta": {"openrouter_id": "b/beta", "input_price_per_million": 0.5, "output_price_per_million": 1.5},
            "gamma": {"openrouter_id": "c/gamma", "input_price_per_million": 0.05, "output_price_per_million": 0.1},
        }
    });
    std::fs::write(&config, pool.to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
    config
}

/// One line of `golden/route-input.jsonl`.
#[derive(Debug, Clone)]
pub struct GoldenInput {
    pub id: u64,
    pub embedding: Vec<f64>,
    pub input_tokens: u64,
}

/// The 40 golden embeddings, in file order.
pub fn golden_inputs() -> Vec<GoldenInput> {
    let path = golden_dir().join("route-input.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("golden input is JSON");
            GoldenInput {
                id: v["id"].as_u64().expect("golden id"),
                embedding: v["embedding"]
                    .as_array()
                    .expect("golden embedding")
                    .iter()
                    .map(|x| x.as_f64().expect("golden embedding value"))
                    .collect(),
                input_tokens: v["input_tokens"].as_u64().expect("golden input_tokens"),
            }
        })
        .collect()
}

/// A text whose upstream input-token estimate (`max(1, int(words × 1.3))`) is `tokens`:
/// `query<id>` and filler words (1, 13 and 100 are reachable; 2500 is not).
pub fn text_with_estimate(id: u64, tokens: u64) -> String {
    let words = (1..=10_000u64)
        .find(|&k| ((k as f64 * 1.3) as u64).max(1) == tokens)
        .unwrap_or_else(|| panic!("no word count has the estimate {tokens}"));
    let mut text = format!("query{id}");
    for _ in 1..words {
        text.push_str(" word");
    }
    text
}

/// Every line of a golden JSONL file, parsed.
pub fn golden_jsonl(name: &str) -> Vec<serde_json::Value> {
    let path = golden_dir().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("golden line is JSON"))
        .collect()
}

/// An OpenAI-compatible embeddings server on 127.0.0.1 (`POST /v1/embeddings`), on its own
/// thread for the rest of the test process: each input text must be one of `table`'s keys, whose
/// vector it answers with (in reverse order of `index`, as a server may); other texts get a 400.
pub fn start_embeddings_server(
    table: std::collections::HashMap<String, Vec<f64>>,
) -> std::net::SocketAddr {
    let table = std::sync::Arc::new(table);
    let app = axum::Router::new().route(
        "/v1/embeddings",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let table = table.clone();
            async move {
                let inputs = body["input"].as_array().cloned().unwrap_or_default();
                let mut data = Vec::new();
                for (index, text) in inputs.iter().enumerate().rev() {
                    match table.get(text.as_str().unwrap_or_default()) {
                        Some(e) => data.push(serde_json::json!({"object": "embedding", "index": index, "embedding": e})),
                        None => {
                            return (
                                axum::http::StatusCode::BAD_REQUEST,
                                axum::Json(serde_json::json!({"error": {"message": format!("unknown text {text}")}})),
                            )
                        }
                    }
                }
                (
                    axum::http::StatusCode::OK,
                    axum::Json(serde_json::json!({"object": "list", "data": data, "model": body["model"]})),
                )
            }
        }),
    );
    spawn_server(app)
}

/// A read-only HTTP file server on 127.0.0.1 for the files below `root` (`GET /<relative path>`),
/// on its own thread for the rest of the test process; every requested path is appended to the
/// returned log.
pub fn start_file_server(
    root: PathBuf,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = log.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let root = root.clone();
        let record = record.clone();
        async move {
            let path = uri.path().trim_start_matches('/').to_owned();
            record.lock().unwrap().push(path.clone());
            let safe = !path.split('/').any(|part| part == ".." || part.is_empty());
            match std::fs::read(root.join(&path)) {
                Ok(bytes) if safe => (axum::http::StatusCode::OK, bytes),
                _ => (axum::http::StatusCode::NOT_FOUND, b"Not Found".to_vec()),
            }
        }
    });
    let addr = spawn_server(app);
    (addr, log)
}

/// A chat request as [`start_chat_server`] saw it.
#[derive(Debug, Clone)]
pub struct SeenChat {
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

/// How [`start_chat_server`] answers.
#[derive(Clone, Copy)]
pub enum ChatReply {
    /// Answers `Answer from <model>.` with usage 12 prompt / 5 completion tokens, as JSON or as
    /// server-sent events (when the request asks for a stream).
    Ok,
    /// 401 with an OpenAI-style error body.
    Unauthorized,
    /// This status with an OpenAI-style error body whose message echoes the request's
    /// `Authorization` header, as a careless provider might (so tests can check it is redacted).
    Status(u16),
}

/// What [`start_chat_server_with`] does besides answering; the default is what
/// [`start_chat_server`] does.
#[derive(Clone, Default)]
pub struct ChatServerOptions {
    /// Wait this long before answering each request (a slow provider).
    pub delay: std::time::Duration,
    /// For streamed answers: after the first piece of text, wait until the gate is opened
    /// (`notify_one`) before sending the rest, so a test can see the first piece arrive while the
    /// provider has not finished.
    pub gate: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Stream chunks carry `id`, `object`, `created` and `model` as OpenAI's do (by default they
    /// hold `choices` only).
    pub openai_chunks: bool,
    /// Models (by the provider id in the request) that fail, and how.
    pub failing: std::collections::HashMap<String, ModelFailure>,
}

/// How a model of [`ChatServerOptions::failing`] fails.
#[derive(Clone, Debug)]
pub enum ModelFailure {
    /// This status with an OpenAI-style error body carrying this message.
    Status(u16, &'static str),
    /// Never answers.
    Hang,
    /// A stream whose connection breaks before its first byte (a JSON request: the same).
    DiesBeforeFirstByte,
    /// A stream whose connection breaks after its first piece of text.
    DiesAfterFirstByte,
}

/// An OpenAI-compatible chat-completions server on 127.0.0.1 (`POST /api/v1/chat/completions`, so
/// the API base is `http://<addr>/api/v1`), on its own thread; it records every request.
pub fn start_chat_server(
    reply: ChatReply,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<SeenChat>>>,
) {
    start_chat_server_with(reply, ChatServerOptions::default())
}

/// [`start_chat_server`] with a delay, a gate in streamed answers, or OpenAI-shaped chunks.
pub fn start_chat_server_with(
    reply: ChatReply,
    options: ChatServerOptions,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<SeenChat>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let handler = move |headers: axum::http::HeaderMap,
                        axum::Json(body): axum::Json<serde_json::Value>| {
        let record = record.clone();
        let options = options.clone();
        async move {
            use axum::response::IntoResponse;
            let authorization = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            record.lock().unwrap().push(SeenChat {
                authorization: authorization.clone(),
                body: body.clone(),
            });
            tokio::time::sleep(options.delay).await;
            let failure = body["model"]
                .as_str()
                .and_then(|m| options.failing.get(m))
                .cloned();
            // The first piece (if any), a pause so that it reaches the client, then a break.
            let broken = |first: Option<String>| {
                let pieces =
                    futures_util::stream::unfold((first, false), |(first, broke)| async move {
                        if let Some(piece) = first {
                            return Some((Ok(piece), (None, false)));
                        }
                        if broke {
                            return None;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        Some((
                            Err(std::io::Error::other("the provider's connection broke")),
                            (None, true),
                        ))
                    });
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(pieces),
                )
                    .into_response()
            };
            match failure {
                None => {}
                Some(ModelFailure::Status(status, message)) => {
                    let error = serde_json::json!({"error": {"message": message, "code": status}});
                    let status = axum::http::StatusCode::from_u16(status).unwrap();
                    return (status, axum::Json(error)).into_response();
                }
                Some(ModelFailure::Hang) => {
                    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                }
                Some(ModelFailure::DiesBeforeFirstByte) => return broken(None),
                Some(ModelFailure::DiesAfterFirstByte) => {
                    let first = serde_json::json!({"choices": [{"index": 0, "delta": {"content": "Partial "}}]});
                    return broken(Some(format!("data: {first}\n\n")));
                }
            }
            match reply {
                ChatReply::Ok => {}
                ChatReply::Unauthorized => {
                    let error = serde_json::json!({"error": {"message": "No auth credentials found", "code": 401}});
                    return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(error))
                        .into_response();
                }
                ChatReply::Status(status) => {
                    let message = format!(
                        "the provider failed (request had authorization {})",
                        authorization.unwrap_or_default()
                    );
                    let error = serde_json::json!({"error": {"message": message, "code": status}});
                    let status = axum::http::StatusCode::from_u16(status).unwrap();
                    return (status, axum::Json(error)).into_response();
                }
            }
            let text = format!("Answer from {}.", body["model"].as_str().unwrap());
            let usage = serde_json::json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17});
            if body["stream"] == true {
                let chunk = |mut chunk: serde_json::Value| {
                    if options.openai_chunks {
                        let mut full = serde_json::json!({
                            "id": "gen-1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                        });
                        full.as_object_mut()
                            .unwrap()
                            .append(chunk.as_object_mut().unwrap());
                        chunk = full;
                    }
                    format!("data: {chunk}\n\n")
                };
                let mut events = Vec::new();
                for piece in text.split_inclusive(' ') {
                    events.push(chunk(
                        serde_json::json!({"choices": [{"index": 0, "delta": {"content": piece}}]}),
                    ));
                }
                let mut rest = String::from(": OPENROUTER PROCESSING\n\n");
                rest.push_str(&chunk(serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})));
                rest.push_str(&chunk(serde_json::json!({"choices": [], "usage": usage})));
                rest.push_str("data: [DONE]\n\n");
                let Some(gate) = options.gate else {
                    events.push(rest);
                    return ([("content-type", "text/event-stream")], events.concat())
                        .into_response();
                };
                // The first piece now, the rest once the gate opens.
                let first = events.remove(0);
                events.push(rest);
                let (send, receive) = tokio::sync::mpsc::channel::<String>(4);
                tokio::spawn(async move {
                    if send.send(first).await.is_err() {
                        return;
                    }
                    gate.notified().await;
                    let _ = send.send(events.concat()).await;
                });
                let body = futures_util::stream::unfold(receive, |mut receive| async move {
                    let piece = receive.recv().await?;
                    Some((Ok::<_, std::convert::Infallible>(piece), receive))
                });
                return (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(body),
                )
                    .into_response();
            }
            axum::Json(serde_json::json!({
                "id": "gen-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            }))
            .into_response()
        }
    };
    let app = axum::Router::new().route("/api/v1/chat/completions", axum::routing::post(handler));
    let addr = spawn_server(app);
    (addr, seen)
}

/// Serves `app` on 127.0.0.1 (a free port) from its own thread and runtime for the rest of the
/// test process, and returns the address once it accepts connections.
pub fn spawn_server(app: axum::Router) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the test server");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a free port on 127.0.0.1");
            tx.send(listener.local_addr().expect("a bound address"))
                .expect("the test is waiting for the address");
            axum::serve(listener, app)
                .await
                .expect("the test server runs");
        });
    });
    rx.recv().expect("the test server started")
}
