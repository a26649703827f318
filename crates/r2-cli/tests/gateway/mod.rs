//! Loopback pieces for the tests that run `r2 serve` as processes behind real clients
//! (`scale_out.rs`: HAProxy in front of replicas; `openai_client.rs`: the official `openai`
//! Python client): a chat provider, an embeddings server, `r2 serve` replicas, and the external
//! tools those tests need.
//!
//! - [`Provider`]: an OpenAI-protocol chat server on `POST /{tag}/v1/chat/completions`, so that
//!   each replica can be given its own API base (`http://<addr>/<tag>/v1`) and the provider knows
//!   which replica is calling. It records every request, counts the requests in flight per tag,
//!   answers after a fixed delay with `Answer from <model>.` (the provider id it was sent) and
//!   `usage`, as JSON or as OpenAI-shaped server-sent events, and answers a request with `tools`
//!   (unless `tool_choice` is `none`) with a call of the chosen tool. A test can hold the answers
//!   to one replica ([`Provider::hold`]) to have requests in flight there when it stops it.
//! - [`start_embedder`]: an embeddings server giving each text one of the 40 golden embeddings,
//!   chosen by a hash of the text (so every text embeds, the same text always the same way, and
//!   different texts route to different pool models as real queries do).
//! - [`Serve`]: `r2 serve` on port 0, its address read from its first log line, killed on drop.
//! - [`tool`]: an external program from an environment variable or a default path; missing, the
//!   test is skipped loudly, or fails when `R2_REQUIRE_TOOLS=1` (CI).

#![allow(dead_code)] // Each test file uses a part.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The environment variable that makes missing external tools a failure instead of a skip.
pub const REQUIRE_TOOLS_ENV: &str = "R2_REQUIRE_TOOLS";

/// The program named by `$env`, else `default` when it exists. When neither is there: with
/// `R2_REQUIRE_TOOLS=1` a panic saying what to install; otherwise `None` after a loud line on
/// stderr (the caller returns: the test is skipped).
pub fn tool(env: &str, default: Option<&str>, what: &str) -> Option<PathBuf> {
    let path = match std::env::var_os(env) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            assert!(path.exists(), "${env} = {} does not exist", path.display());
            Some(path)
        }
        _ => default.map(PathBuf::from).filter(|p| p.exists()),
    };
    if path.is_none() {
        let required = std::env::var(REQUIRE_TOOLS_ENV).is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{what} is required ({REQUIRE_TOOLS_ENV}=1) but not found: set {env} (see .ci/run)"
        );
        // Straight to the process's stderr (not `eprintln!`, which the test harness captures),
        // so that the skip shows in the output of a passing run.
        let _ = writeln!(
            std::io::stderr(),
            "\n==================================================================\n\
             skipped: set {env} (see .ci/run) to run this test ({what} not found)\n\
             =================================================================="
        );
    }
    path
}

// ---------------------------------------------------------------------------------------------
// The provider

/// A chat request as the provider saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The first path segment: which `r2 serve` sent it.
    pub tag: String,
    pub body: Value,
}

struct ProviderState {
    delay: Duration,
    seen: Mutex<Vec<Seen>>,
    in_flight: Mutex<HashMap<String, usize>>,
    /// Tags whose requests are held (not answered) until released.
    held: tokio::sync::watch::Sender<HashSet<String>>,
}

/// The loopback chat provider (see the module's documentation).
#[derive(Clone)]
pub struct Provider {
    pub addr: SocketAddr,
    state: Arc<ProviderState>,
}

impl Provider {
    /// Starts the provider on a free port of 127.0.0.1; every answer comes after `delay`.
    pub fn start(delay: Duration) -> Self {
        let state = Arc::new(ProviderState {
            delay,
            seen: Mutex::default(),
            in_flight: Mutex::default(),
            held: tokio::sync::watch::channel(HashSet::new()).0,
        });
        let app = axum::Router::new()
            .route("/{tag}/v1/chat/completions", axum::routing::post(chat))
            .with_state(state.clone());
        let addr = r2_fixtures::spawn_server(app);
        Self { addr, state }
    }

    /// The API base for the replica called `tag`.
    pub fn base(&self, tag: &str) -> String {
        format!("http://{}/{tag}/v1", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// From now on, requests from `tag` are not answered until [`Provider::release`] (each
    /// still waits its delay first).
    pub fn hold(&self, tag: &str) {
        self.state.held.send_modify(|held| {
            held.insert(tag.to_owned());
        });
    }

    /// Answers the held requests from `tag`, and the next ones at once.
    pub fn release(&self, tag: &str) {
        self.state.held.send_modify(|held| {
            held.remove(tag);
        });
    }

    /// Requests from `tag` that have arrived and not been answered (or dropped) yet.
    pub fn in_flight(&self, tag: &str) -> usize {
        self.state
            .in_flight
            .lock()
            .unwrap()
            .get(tag)
            .copied()
            .unwrap_or(0)
    }
}

/// Counts a request in flight for its tag until dropped (also when the caller hangs up).
struct InFlight(Arc<ProviderState>, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.0.in_flight.lock().unwrap().get_mut(&self.1) {
            *n -= 1;
        }
    }
}

async fn chat(
    State(state): State<Arc<ProviderState>>,
    Path(tag): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    state.seen.lock().unwrap().push(Seen {
        tag: tag.clone(),
        body: body.clone(),
    });
    *state
        .in_flight
        .lock()
        .unwrap()
        .entry(tag.clone())
        .or_default() += 1;
    let _in_flight = InFlight(state.clone(), tag);
    tokio::time::sleep(state.delay).await;
    let mut held = state.held.subscribe();
    let _ = held.wait_for(|held| !held.contains(&_in_flight.1)).await;
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let usage = json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17});
    let call = tool_call(&body, &model);
    let stream = body["stream"] == true;
    if !stream {
        let (message, finish) = match &call {
            Some((name, arguments)) => (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }]}),
                "tool_calls",
            ),
            None => (
                json!({"role": "assistant", "content": format!("Answer from {model}.")}),
                "stop",
            ),
        };
        return Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        let chunk = json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        format!("data: {chunk}\n\n")
    };
    let mut events = String::new();
    let finish = match &call {
        Some((name, arguments)) => {
            events.push_str(&chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "index": 0, "id": "call_1", "type": "function",
                    "function": {"name": name, "arguments": ""},
                }]}),
                Value::Null,
            ));
            // The arguments in pieces, as OpenAI sends them.
            let chars: Vec<char> = arguments.chars().collect();
            for piece in chars.chunks(7) {
                let piece: String = piece.iter().collect();
                events.push_str(&chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
            "tool_calls"
        }
        None => {
            events.push_str(&chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            for piece in format!("Answer from {model}.").split_inclusive(' ') {
                events.push_str(&chunk(json!({"content": piece}), Value::Null));
            }
            "stop"
        }
    };
    events.push_str(&chunk(json!({}), json!(finish)));
    if body["stream_options"]["include_usage"] == true {
        let last = json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [], "usage": usage,
        });
        events.push_str(&format!("data: {last}\n\n"));
    }
    events.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], events).into_response()
}

/// The tool a request with `tools` asks to be called (the one `tool_choice` names, else the
/// first), and its arguments: every required parameter set to `"<parameter> from <model>"`.
/// `None` without tools or with `tool_choice: "none"`.
fn tool_call(body: &Value, model: &str) -> Option<(String, String)> {
    let tools = body["tools"].as_array().filter(|t| !t.is_empty())?;
    if body["tool_choice"] == "none" {
        return None;
    }
    let name = body["tool_choice"]["function"]["name"]
        .as_str()
        .or_else(|| tools[0]["function"]["name"].as_str())?;
    let tool = tools
        .iter()
        .find(|t| t["function"]["name"] == name)
        .unwrap_or(&tools[0]);
    let mut arguments = serde_json::Map::new();
    for parameter in tool["function"]["parameters"]["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        arguments.insert(parameter.into(), json!(format!("{parameter} from {model}")));
    }
    Some((name.to_owned(), Value::Object(arguments).to_string()))
}

// ---------------------------------------------------------------------------------------------
// The embeddings server

/// FNV-1a, 64 bits: a hash that is the same in every process and on every machine.
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An embeddings server on 127.0.0.1 (`POST /v1/embeddings`) that gives each text the golden
/// embedding number `fnv1a(text) % 40` (1024-d).
pub fn start_embedder() -> SocketAddr {
    let golden: Arc<Vec<Vec<f64>>> = Arc::new(
        r2_fixtures::golden_inputs()
            .into_iter()
            .map(|g| g.embedding)
            .collect(),
    );
    let app = axum::Router::new().route(
        "/v1/embeddings",
        axum::routing::post(move |Json(body): Json<Value>| {
            let golden = golden.clone();
            async move {
                let data: Vec<Value> = body["input"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(index, text)| {
                        let text = text.as_str().unwrap_or_default();
                        let pick = (fnv1a(text) % golden.len() as u64) as usize;
                        json!({"object": "embedding", "index": index, "embedding": golden[pick]})
                    })
                    .collect();
                Json(json!({"object": "list", "data": data, "model": body["model"]}))
            }
        }),
    );
    r2_fixtures::spawn_server(app)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process killed (SIGKILL) and reaped when dropped, so that a failing test leaves none
/// behind.
pub struct Guard(pub Child);

impl Guard {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Waits at most `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM to process `pid` (there is no `libc` here; `kill(1)` is).
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// The lines a child writes to a pipe, collected by a thread as they come.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>, Arc<std::sync::atomic::AtomicBool>);

impl Lines {
    /// Collects the lines of `pipe` from now on.
    pub fn collect(pipe: impl std::io::Read + Send + 'static) -> Self {
        let lines = Self::default();
        let (sink, closed) = (lines.0.clone(), lines.1.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        lines
    }

    /// The lines so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Every line, once the pipe has closed (the process has exited), waiting at most `timeout`
    /// for that; then the lines so far.
    pub fn all_when_closed(&self, timeout: Duration) -> Vec<String> {
        let started = Instant::now();
        while !self.1.load(std::sync::atomic::Ordering::SeqCst) && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.all()
    }

    /// The first line that satisfies `want`, waiting at most `timeout` for it.
    pub fn wait_for(&self, timeout: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let started = Instant::now();
        loop {
            if let Some(line) = self.0.lock().unwrap().iter().find(|l| want(l)) {
                return Some(line.clone());
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `r2 serve` on 127.0.0.1, port 0, with the converted upstream router and pool.
pub struct Serve {
    pub process: Guard,
    pub addr: SocketAddr,
    pub log: Lines,
}

impl Serve {
    /// Starts `r2 serve` with provider base `llm_api_base` and the embeddings server `embed`
    /// (no client key), plus `extra` flags; returns once it listens.
    pub fn start(llm_api_base: &str, embed: SocketAddr, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_r2"))
            .env_remove("R2_CHECKPOINTS")
            .env_remove("R2_CONFIG")
            .env_remove("R2_SERVER_API_KEY")
            .env_remove("OPENROUTER_API_KEY")
            .env("HF_HUB_OFFLINE", "1")
            .arg("serve")
            .arg("--checkpoints")
            .arg(r2_fixtures::converted_router_dir())
            .arg("--config")
            .arg(r2_fixtures::upstream_dir().join("config.json"))
            .args(["--embed-url", &format!("http://{embed}")])
            .args(["--llm-api-base", llm_api_base])
            .args(["--llm-api-key", "sk-loopback"])
            .args(["--port", "0", "--provider-retries", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the r2 binary starts");
        let log = Lines::collect(child.stderr.take().unwrap());
        let process = Guard(child);
        let line = log
            .wait_for(Duration::from_secs(60), |l| l.contains("listening on"))
            .unwrap_or_else(|| {
                panic!(
                    "r2 serve did not listen within 60 s; its log:\n{}",
                    log.all().join("\n")
                )
            });
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Self { process, addr, log }
    }
}

/// The `q`-quantile (0..=1) of sorted `values`, by the nearest-rank method.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
