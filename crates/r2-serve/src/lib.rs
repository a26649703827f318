//! `r2 serve`: an OpenAI-compatible routing gateway. Applications keep their OpenAI client and
//! point its base URL at this server; each chat request naming the model `r2-router` is routed to
//! the best (LLM, output-token budget) pair for its last user message and forwarded to the
//! provider with R2-Router's budget prompt.
//!
//! Endpoints:
//!
//! - `POST /v1/chat/completions`: `model: "r2-router"` embeds the last user message, routes it
//!   (λ, candidates and cost cap overridable per request in an `r2` object of the body) and
//!   forwards the request with the budget system message first, the chosen model's provider id,
//!   and every other field of the client's as it is. The answer comes back with `model` set to the
//!   chosen pool model and the headers `x-r2-model`, `x-r2-budget`, `x-r2-predicted-quality`,
//!   `x-r2-predicted-cost-usd`. `"stream": true` passes the provider's server-sent events through
//!   as they arrive (complete lines are passed on at once; `model` is rewritten in each `data:`
//!   chunk that has one; a provider that ignores `"stream": true` and answers JSON is passed
//!   through unchanged). A request naming a pool model (by name or provider id) is forwarded
//!   unrouted: only `model` is replaced by the provider id and the `r2` object removed; the answer
//!   comes back as the provider sent it, with `x-r2-model`. Any other model is 404
//!   `model_not_found`.
//! - `POST /v1/route`: the decision object of `r2 route --json` for `{"query"}` or
//!   `{"embedding"}`, or `{"decisions": [...]}` for `{"queries": [...]}` / `{"embeddings": [...]}`.
//! - `GET /v1/models`, `GET /metrics` (Prometheus text format, through `prometheus-client`).
//! - `GET /healthz` (liveness: the process answers) and `GET /readyz` (readiness: the embedding
//!   backend embeds a one-word text, [`READY_PROBE`], within [`READY_TIMEOUT`]; else 503).
//!
//! Everything is loaded before the server listens ([`AppState::new`] makes the embedder at once).
//! With a client key ([`ServeOptions::api_key`]) every endpoint but `/healthz` and `/readyz`
//! needs `Authorization: Bearer <key>`. Errors are OpenAI-shaped
//! (`{"error": {"message", "type", "code"}}`) and get their status in one place, [`ApiError`]:
//! from the class of the library error ([`r2_router::r2_core::Classify`]) or the gateway's own
//! condition. A request body may start with a UTF-8 byte-order mark, which is ignored.
//!
//! Routing goes through [`r2_router`] only: a request's parameters become a
//! [`r2_router::RouteRequest`], checked once by [`R2Router::plan`]; texts are routed with
//! [`R2Router::route_texts`], embeddings with [`R2Router::route_embeddings`], and the routed chat
//! request is [`R2Router::routed_body`]. The metrics observe the router
//! ([`r2_router::Observer`]). Logs are `tracing` events (the binary installs the subscriber):
//! one per request, written by a middleware from what the handlers put in the response's
//! extensions — answers of 500 and more at `error` level, the others at `debug`.
//!
//! Limits, so that slow, idle or hostile clients cannot take the server down ([`ServeOptions`];
//! the defaults are the `DEFAULT_*` constants):
//!
//! - at most [`ServeOptions::max_connections`] open connections (default 256, well below the
//!   usual soft limit of 1024 file descriptors: a routed chat request also holds one connection
//!   to the provider and one to the embedding server); past it, new connections wait in the
//!   listen backlog until a slot frees up;
//! - a request head must arrive within [`ServeOptions::header_timeout`] (10 s; from the
//!   connection's start for the first request, from its first byte for later ones); a keep-alive
//!   connection may wait [`ServeOptions::idle_timeout`] (30 s) for its next request; a client
//!   that takes no byte of its answer for [`ServeOptions::send_timeout`] (30 s) loses the
//!   connection. Each of these closes the connection without an answer;
//! - a body must arrive whole within [`ServeOptions::body_timeout`] (30 s), else 408 and the
//!   connection is closed; a `Content-Length` above [`ServeOptions::body_limit`] (1 MiB) is 413
//!   at once, before any of the body is read (a longer body without one is 413 as soon as it
//!   passes the limit);
//! - a request on `/v1/*` takes a slot of [`ServeOptions::max_concurrency`] (512) only once its
//!   body has been read, and holds it until its answer has been sent; with every slot taken it
//!   is 429 at once;
//! - on shutdown the server stops accepting, lets the requests in flight finish for at most
//!   [`ServeOptions::drain_timeout`] (30 s), then closes the rest and returns;
//! - the provider's answers are bounded by `r2_llm` (1 MiB per line or event of a stream, 64 MiB
//!   for a whole answer), and a streamed answer is checked to begin with a valid event before
//!   the 200 head is sent, so a provider that answers HTML or broken JSON is 502 whether the
//!   request streams or not.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let r2 = r2_router::R2Router::load(r2_router::Options {
//!     llm_api_base: Some("https://openrouter.ai/api/v1".into()),
//!     embed_url: Some("http://localhost:8000".into()),
//!     ..Default::default()
//! })
//! .await?;
//! let state = r2_serve::AppState::new(r2, r2_serve::ServeOptions::default()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! r2_serve::serve(listener, state, r2_serve::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! Architecture invariant: this crate is the HTTP face of `r2-router`; it owns the wire formats,
//! authentication, limits and metrics of the gateway, and no routing arithmetic, model code or
//! command line.

mod chat;
mod conn;
mod error;
mod metrics;
mod ready;
mod route;
mod sse;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use r2_router::r2_core::{Decision, RouteParams};
use r2_router::{r2_llm, FallbackPolicy, R2Router, RouteOn, RoutePlan, RouteRequest};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

pub use error::ApiError;
pub use metrics::Metrics;
pub use ready::{READY_PROBE, READY_TIMEOUT};

/// The model name that asks for routing.
pub const ROUTER_MODEL: &str = "r2-router";

/// The default body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default limit of requests in flight on `/v1/*`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 512;

/// The default limit of open connections: 256, so that with a connection to the provider and one
/// to the embedding server per request the process stays below the usual soft limit of 1024
/// file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The default time allowed for a request head: 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time allowed for a whole request body: 30 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a keep-alive connection may wait for its next request: 30 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a client may take no byte of its answer: 30 s.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time the requests in flight get to finish after a shutdown signal: 30 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable the command line reads the client key from.
pub const API_KEY_ENV: &str = "R2_SERVER_API_KEY";

/// Settings of the gateway itself (the router, embedder and provider are an [`R2Router`]; the
/// provider timeout is its `llm_options.timeout`).
#[derive(Clone)]
pub struct ServeOptions {
    /// The key clients must send as `Authorization: Bearer <key>` on every endpoint but
    /// `/healthz` and `/readyz`; `None` (or blank) lets everyone in. Never printed (`Debug` shows
    /// `***`).
    pub api_key: Option<String>,
    /// The largest request body accepted, in bytes (default [`DEFAULT_BODY_LIMIT`]); larger ones
    /// get 413.
    pub body_limit: usize,
    /// Requests in flight on `/v1/*` at most (default [`DEFAULT_MAX_CONCURRENCY`]); one more gets
    /// 429 at once instead of waiting. A request takes its slot once its body has been read; a
    /// streamed answer holds it until it ends. (A connection has at most one request in flight,
    /// so this limit matters only below [`ServeOptions::max_connections`].)
    pub max_concurrency: usize,
    /// Open connections at most (default [`DEFAULT_MAX_CONNECTIONS`]; zero is taken as one).
    /// Further connections wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Time allowed for a request head (default [`DEFAULT_HEADER_TIMEOUT`]): from the
    /// connection's start for its first request, from the first byte for later ones. Past it the
    /// connection is closed.
    pub header_timeout: Duration,
    /// Time allowed for a whole request body, from the end of its head (default
    /// [`DEFAULT_BODY_TIMEOUT`]). Past it the answer is 408 and the connection is closed.
    pub body_timeout: Duration,
    /// Time a keep-alive connection may wait for the first byte of its next request (default
    /// [`DEFAULT_IDLE_TIMEOUT`]). Past it the connection is closed.
    pub idle_timeout: Duration,
    /// Time a client may take no byte of its answer (default [`DEFAULT_SEND_TIMEOUT`]). Past it
    /// the connection is closed (and a streamed answer's slot given back).
    pub send_timeout: Duration,
    /// Time the requests in flight get to finish after the shutdown signal (default
    /// [`DEFAULT_DRAIN_TIMEOUT`]); then the remaining connections are closed and
    /// [`serve`] returns.
    pub drain_timeout: Duration,
    /// Which user message a conversation is routed on (default [`RouteOn::First`]: every turn
    /// lands on the same model and budget); a request's `r2.route_on` overrides it.
    pub route_on: RouteOn,
    /// Other models tried when the chosen one fails, and the deadline of all attempts.
    pub fallback: FallbackPolicy,
    /// The pool model spend is compared against (name or provider id); default: the available
    /// model with the highest output price.
    pub reference_model: Option<String>,
    /// Put the routed text in the access log (default: never).
    pub log_prompts: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            api_key: None,
            body_limit: DEFAULT_BODY_LIMIT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            route_on: RouteOn::default(),
            fallback: FallbackPolicy::default(),
            reference_model: None,
            log_prompts: false,
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("body_limit", &self.body_limit)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("send_timeout", &self.send_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("route_on", &self.route_on)
            .field("fallback", &self.fallback)
            .field("reference_model", &self.reference_model)
            .field("log_prompts", &self.log_prompts)
            .finish()
    }
}

/// Everything the handlers share: the loaded router, the options, the concurrency limit and the
/// metrics. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    r2: R2Router,
    options: ServeOptions,
    /// A request without overrides: λ and the default candidates (with a provider, the pool's
    /// `available` models).
    default_plan: RoutePlan,
    /// Pool model names and provider ids → the router's model index.
    models: HashMap<String, usize>,
    /// The body of `GET /v1/models`.
    models_json: Bytes,
    limit: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    ready: ready::Readiness,
    /// The router's index of the reference model.
    reference: usize,
}

impl AppState {
    /// Makes the embedder now (so that a listening server is a ready one) and works out the
    /// default routing parameters. The router's observer becomes the server's [`Metrics`].
    pub async fn new(r2: R2Router, mut options: ServeOptions) -> Result<Self, r2_router::Error> {
        r2.embedder().await?;
        let default_plan = r2.plan(&RouteRequest::default())?;
        let metrics = Arc::new(Metrics::new(r2.router()));
        let r2 = r2.with_observer(metrics.clone());
        options.api_key = options.api_key.filter(|key| !key.trim().is_empty());
        options.max_concurrency = options.max_concurrency.max(1);
        options.max_connections = options.max_connections.max(1);
        let router = r2.router();
        let mut models = HashMap::new();
        for index in 0..router.models().len() {
            let entry = r2.pool_model(index);
            models.insert(entry.openrouter_id.clone(), index);
        }
        // Names win over provider ids when the two collide.
        for index in 0..router.models().len() {
            models.insert(r2.model_name(index).to_owned(), index);
        }
        let models_json = Bytes::from(models_list(&r2).to_string());
        let reference = r2.reference_model(options.reference_model.as_deref())?;
        Ok(Self {
            inner: Arc::new(Inner {
                limit: Arc::new(Semaphore::new(options.max_concurrency)),
                r2,
                options,
                default_plan,
                models,
                models_json,
                metrics,
                ready: ready::Readiness::default(),
                reference,
            }),
        })
    }

    /// The loaded router.
    pub fn r2(&self) -> &R2Router {
        &self.inner.r2
    }

    /// The gateway's settings.
    pub fn options(&self) -> &ServeOptions {
        &self.inner.options
    }

    /// Whether clients need a key.
    pub fn auth_enabled(&self) -> bool {
        self.inner.options.api_key.is_some()
    }

    /// The parameters a request routes with unless it overrides them.
    pub fn default_params(&self) -> &RouteParams {
        &self.inner.default_plan.params
    }

    /// The names of the models requests are routed to by default, in pool order.
    pub fn default_candidates(&self) -> Vec<&str> {
        self.inner.r2.candidates(&self.inner.default_plan)
    }

    /// The metrics served on `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The router's index of the reference model of spend accounting.
    pub fn reference_model(&self) -> usize {
        self.inner.reference
    }

    /// The router's model index of a pool model named by name or provider id.
    fn pool_index(&self, model: &str) -> Option<usize> {
        self.inner.models.get(model).copied()
    }

    /// Counts a failed provider call and turns it into the client's error.
    fn provider_failed(&self, error: r2_llm::Error) -> ApiError {
        let (kind, _) = error::provider_failure(&error);
        self.inner.metrics.provider_error(kind);
        ApiError::from(error)
    }

    /// Embeds `query` and routes it with `plan` (upstream's input-token estimate unless the plan
    /// fixes the count).
    async fn route_query(&self, query: String, plan: &RoutePlan) -> Result<Decision, ApiError> {
        let routed = self.r2().route_texts(&[query], plan).await?;
        routed
            .into_result()?
            .pop()
            .ok_or_else(|| ApiError::internal("the router gave no decision for one query"))
    }
}

/// `GET /v1/models`: `r2-router` and every pool model, in OpenAI's list shape.
fn models_list(r2: &R2Router) -> serde_json::Value {
    let mut data = vec![serde_json::json!({
        "id": ROUTER_MODEL,
        "object": "model",
        "created": 0,
        "owned_by": "r2",
    })];
    for model in &r2.pool().models {
        let owner = model
            .openrouter_id
            .split_once('/')
            .map_or("r2", |(owner, _)| owner);
        data.push(serde_json::json!({
            "id": model.name,
            "object": "model",
            "created": 0,
            "owned_by": owner,
            "openrouter_id": model.openrouter_id,
            "available": model.available,
        }));
    }
    serde_json::json!({"object": "list", "data": data})
}

/// The gateway's routes, middleware and state.
///
/// Middleware, outermost first: the body limit, request counting (`r2_requests_total`) and
/// logging, the client key (all but `/healthz` and `/readyz`), then on `/v1/*` only: reading the
/// whole body (body timeout, `Content-Length` checked first), the concurrency limit.
pub fn router(state: AppState) -> axum::Router {
    let limited = axum::Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/route", post(route::handle))
        .route("/v1/models", get(models))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_concurrency,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), read_body));
    let protected = limited
        .route("/metrics", get(metrics_text))
        .route("/v1/r2/stats", get(stats))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_key));
    let body_limit = state.inner.options.body_limit;
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .method_not_allowed_fallback(method_not_allowed)
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), log_requests))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves `state` on `listener` (HTTP/1.1, `TCP_NODELAY`) with the connection limits and
/// timeouts of its [`ServeOptions`], until `shutdown` resolves; then stops accepting connections,
/// closes idle ones, and returns once the requests in flight (streams included) have been
/// answered, or after [`ServeOptions::drain_timeout`], closing what is left.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let options = state.options().clone();
    conn::serve(listener, router(state), &options, shutdown).await
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Small endpoints

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

/// Whether the embedding backend answers: 200 `{"status":"ready"}`, else 503 with the reason.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.inner.ready.check(state.r2()).await {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#,
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

async fn models(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.inner.models_json.clone(),
    )
        .into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.inner.metrics.render(),
    )
        .into_response()
}

async fn stats(State(state): State<AppState>) -> Response {
    let reference = state.r2().model_name(state.inner.reference);
    axum::Json(state.inner.metrics.stats(reference)).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// The body of a request, or 413 / 400 when it could not be read.
fn body_bytes(body: Result<Bytes, BytesRejection>, state: &AppState) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(state.inner.options.body_limit)
        } else {
            ApiError::invalid_request(rejection.body_text())
        }
    })
}

/// JSON of type `T`: broken JSON is [`ApiError::invalid_json`] (400), JSON of the wrong shape
/// [`ApiError::invalid_body`] (422). A UTF-8 byte-order mark before the JSON is ignored.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            // A shape error can come before a syntax error further on: broken JSON is named as
            // such whatever its shape.
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::invalid_body(e),
                Err(syntax) => ApiError::invalid_json(syntax),
            }
        }
        _ => ApiError::invalid_json(e),
    })
}

// ---------------------------------------------------------------------------------------------
// Middleware

/// The `endpoint` label of a path: the endpoints by name, anything else as `other`.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/route" => "/v1/route",
        "/v1/models" => "/v1/models",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/v1/r2/stats" => "/v1/r2/stats",
        _ => "other",
    }
}

/// What a request's access-log line says beyond its status: put into the response's extensions
/// by the handlers, read by [`log_requests`].
#[derive(Debug, Clone, Default)]
struct Note {
    /// The pool model that answered (or, when every attempt failed, the first choice).
    model: String,
    /// The budget (`unlimited` or a number of tokens); none for an unrouted request.
    budget: Option<String>,
    /// Each option tried: `model@budget: ok` or `model@budget: error`.
    attempts: Vec<String>,
    embed_ms: u64,
    route_ms: u64,
    provider_ms: u64,
    /// The provider's token counts and their cost (unknown for a stream when the head is sent:
    /// the line the stream writes when it ends has them).
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    cost_usd: Option<f64>,
    /// The routed text, only with [`ServeOptions::log_prompts`].
    prompt: Option<String>,
    /// The request id of a chat request, for the line its stream writes when it ends.
    request_id: String,
}

impl Note {
    /// A routing decision (`/v1/route`).
    fn routed(r2: &R2Router, decision: &Decision) -> Self {
        Self {
            model: r2.model_name(decision.choice.model).to_owned(),
            budget: Some(decision.choice.budget.to_string()),
            ..Self::default()
        }
    }

    /// The answer, or the error's, with this note for the log line.
    fn on(self, answer: Result<Response, ApiError>) -> Response {
        let mut response = answer.unwrap_or_else(IntoResponse::into_response);
        response.extensions_mut().insert(self);
        response
    }
}

/// The request id of a chat request, for the line its stream writes when it ends.
#[derive(Debug, Clone)]
struct RequestId(String);

/// The request id: the client's `x-request-id` when it is short and printable, else a new one
/// (process start time and a counter, in hex).
fn request_id(request: &Request) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let given = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
    match given {
        Some(id) => id.to_owned(),
        None => {
            let epoch = EPOCH.get_or_init(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            });
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{epoch:x}-{n:x}")
        }
    }
}

/// Counts every request (`r2_requests_total`) and writes its access-log line once its head is
/// ready (target `r2_serve::access`; one JSON object with `--log-format json`): request id,
/// status, model and budget, the attempts, tokens, cost, and embed/route/provider/total
/// milliseconds — never a key, and the prompt only with [`ServeOptions::log_prompts`]. Answers of
/// 500 and more at `error` level with the whole error (which no client sees), chat and route
/// requests at `info`, the others at `debug`. The response carries `x-request-id`. A streamed
/// chat answer's tokens and cost are not known yet then: its stream writes them in a second line,
/// `r2 serve: stream ended`, with the same request id, when it ends (or the client leaves).
async fn log_requests(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let endpoint = endpoint_label(request.uri().path());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let id = request_id(&request);
    if endpoint == "/v1/chat/completions" {
        request.extensions_mut().insert(RequestId(id.clone()));
    }
    let mut response = next.run(request).await;
    set_header(&mut response, "x-request-id", &id);
    let status = response.status().as_u16();
    state.inner.metrics.request(endpoint, status);
    let total_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let note = response.extensions().get::<Note>();
    let model = note.map(|d| d.model.as_str());
    let budget = note.and_then(|d| d.budget.as_deref());
    let attempts = note
        .filter(|n| !n.attempts.is_empty())
        .map(|n| n.attempts.join(" | "));
    let attempt_count = note.map_or(0, |n| n.attempts.len());
    let (embed_ms, route_ms, provider_ms) =
        note.map_or((0, 0, 0), |n| (n.embed_ms, n.route_ms, n.provider_ms));
    let prompt_tokens = note.and_then(|n| n.prompt_tokens);
    let completion_tokens = note.and_then(|n| n.completion_tokens);
    let cost_usd = note.and_then(|n| n.cost_usd);
    let prompt = note.and_then(|n| n.prompt.as_deref());
    let error = response
        .extensions()
        .get::<error::ErrorNote>()
        .map(|note| note.0.as_str());
    // One event, at a level known when it is written.
    macro_rules! log {
        ($level:expr) => {
            tracing::event!(
                target: "r2_serve::access",
                $level,
                request_id = %id,
                status,
                method = %method,
                path = %path,
                model,
                budget,
                attempts = attempt_count,
                attempt_log = attempts,
                prompt_tokens,
                completion_tokens,
                cost_usd,
                embed_ms,
                route_ms,
                provider_ms,
                total_ms,
                prompt,
                error,
                "r2 serve: {status} {method} {path}"
            )
        };
    }
    if status >= 500 {
        log!(tracing::Level::ERROR);
    } else if matches!(endpoint, "/v1/chat/completions" | "/v1/route") {
        log!(tracing::Level::INFO);
    } else {
        log!(tracing::Level::DEBUG);
    }
    response
}

async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.inner.options.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        match given {
            None => {
                return ApiError::unauthorized(
                    "this server needs an API key: send `Authorization: Bearer <key>`",
                )
                .into_response()
            }
            Some(given) if !constant_time_eq(given.as_bytes(), key.as_bytes()) => {
                return ApiError::unauthorized("the API key is not valid for this server")
                    .into_response()
            }
            Some(_) => {}
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `given` equals `expected`, in a time that depends on the length of `expected` only:
/// every byte of `expected` is compared, whatever `given` holds.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, &e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= usize::from(std::hint::black_box(g ^ e));
    }
    std::hint::black_box(diff) == 0
}

/// Reads the whole body before the request goes on (so that a slow body holds no slot of the
/// concurrency limit): a `Content-Length` over the body limit is 413 at once, a body that grows
/// past it is 413 as soon as it does, one that does not arrive within the body timeout is 408;
/// all three close the connection.
async fn read_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let options = &state.inner.options;
    let limit = options.body_limit;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return closing(ApiError::body_too_large(limit));
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(options.body_timeout, collect_body(body, limit)).await {
        Err(_) => closing(ApiError::body_timeout(options.body_timeout)),
        Ok(Err(error)) => closing(error),
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// The whole body, or 413 as soon as it is longer than `limit`.
async fn collect_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    // Most bodies come in one chunk, which is kept as it is; more are joined at the end.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut length = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::invalid_request(format!("the request body could not be read: {e}"))
        })?;
        length += chunk.len();
        if length > limit {
            return Err(ApiError::body_too_large(limit));
        }
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// The error's answer with `Connection: close`: the rest of the body is not read.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn limit_concurrency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(permit) = Arc::clone(&state.inner.limit).try_acquire_owned() else {
        return ApiError::overloaded(state.inner.options.max_concurrency).into_response();
    };
    let response = next.run(request).await;
    // The slot is given back when the body has been sent (or dropped), so a stream holds it.
    response.map(|body| Body::new(Holding::new(body, permit)))
}

/// A response body that holds something (a slot of the concurrency limit, the connection's count
/// of requests in flight) until it is dropped.
pub(crate) struct Holding<T> {
    body: Body,
    _held: T,
}

impl<T> Holding<T> {
    pub(crate) fn new(body: Body, held: T) -> Self {
        Self { body, _held: held }
    }
}

impl<T: Send + Unpin + 'static> http_body::Body for Holding<T> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Sets a response header from text that is known to be a valid header value.
fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_keys() {
        assert!(constant_time_eq(b"secret-key", b"secret-key"));
        assert!(!constant_time_eq(b"secret-kez", b"secret-key"));
        assert!(!constant_time_eq(b"secret", b"secret-key"));
        assert!(!constant_time_eq(b"secret-key-and-more", b"secret-key"));
        assert!(!constant_time_eq(b"", b"secret-key"));
    }

    #[test]
    fn bearer_tokens_are_read_with_any_case_of_the_scheme() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn serve_options_debug_hides_the_key() {
        let options = ServeOptions {
            api_key: Some("client-secret".into()),
            ..ServeOptions::default()
        };
        assert!(!format!("{options:?}").contains("client-secret"));
    }
}
