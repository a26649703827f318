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
//! - `GET /v1/models`, `GET /healthz`, `GET /metrics` (Prometheus text format).
//!
//! Everything is loaded before the server listens ([`AppState::new`] makes the embedder at once),
//! so a server that answers `/healthz` is ready. With a client key ([`ServeOptions::api_key`])
//! every endpoint but `/healthz` needs `Authorization: Bearer <key>`. Errors are OpenAI-shaped
//! (`{"error": {"message", "type", "code"}}`) and get their status in one place, [`ApiError`].
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
mod error;
mod metrics;
mod route;
mod sse;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use r2_core::RouteParams;
use r2_router::R2Router;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use error::ApiError;
pub use metrics::Metrics;

/// The model name that asks for routing.
pub const ROUTER_MODEL: &str = "r2-router";

/// The default body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default limit of requests in flight on `/v1/*`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 512;

/// The environment variable the command line reads the client key from.
pub const API_KEY_ENV: &str = "R2_SERVER_API_KEY";

/// Settings of the gateway itself (the router, embedder and provider are an [`R2Router`]; the
/// provider timeout is its `llm_options.timeout`).
#[derive(Clone)]
pub struct ServeOptions {
    /// The key clients must send as `Authorization: Bearer <key>` on every endpoint but
    /// `/healthz`; `None` (or blank) lets everyone in. Never printed (`Debug` shows `***`).
    pub api_key: Option<String>,
    /// The largest request body accepted, in bytes (default [`DEFAULT_BODY_LIMIT`]); larger ones
    /// get 413.
    pub body_limit: usize,
    /// Requests in flight on `/v1/*` at most (default [`DEFAULT_MAX_CONCURRENCY`]); one more gets
    /// 429 at once instead of waiting. A streamed answer holds its slot until it ends.
    pub max_concurrency: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            api_key: None,
            body_limit: DEFAULT_BODY_LIMIT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("body_limit", &self.body_limit)
            .field("max_concurrency", &self.max_concurrency)
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
    /// λ and the default candidates: with a provider, the pool's `available` models.
    params: RouteParams,
    /// Pool model names and provider ids → the router's model index.
    models: HashMap<String, usize>,
    /// The body of `GET /v1/models`.
    models_json: Bytes,
    limit: Arc<Semaphore>,
    metrics: Metrics,
    threads: usize,
}

impl AppState {
    /// Makes the embedder now (so that a listening server is a ready one) and works out the
    /// default routing parameters.
    pub async fn new(r2: R2Router, mut options: ServeOptions) -> Result<Self, r2_router::Error> {
        r2.embedder().await?;
        let params = r2.default_params()?;
        options.api_key = options.api_key.filter(|key| !key.trim().is_empty());
        options.max_concurrency = options.max_concurrency.max(1);
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
        let metrics = Metrics::new(router);
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Ok(Self {
            inner: Arc::new(Inner {
                limit: Arc::new(Semaphore::new(options.max_concurrency)),
                r2,
                options,
                params,
                models,
                models_json,
                metrics,
                threads,
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
        &self.inner.params
    }

    /// The names of the models requests are routed to by default, in pool order.
    pub fn default_candidates(&self) -> Vec<&str> {
        let router = self.inner.r2.router();
        (0..router.models().len())
            .filter(|&i| {
                self.inner
                    .params
                    .candidates
                    .as_ref()
                    .is_none_or(|c| c.contains(i))
            })
            .map(|i| self.inner.r2.model_name(i))
            .collect()
    }

    /// The metrics served on `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The router's model index of a pool model named by name or provider id.
    fn pool_index(&self, model: &str) -> Option<usize> {
        self.inner.models.get(model).copied()
    }

    /// Counts and logs a failed provider call, and turns it into the client's error.
    fn provider_failed(&self, error: r2_llm::Error) -> ApiError {
        let error = ApiError::from(error);
        if let Some(kind) = error.provider_kind() {
            self.inner.metrics.provider_error(kind);
        }
        error
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
/// Middleware, outermost first: the body limit, request counting (`r2_requests_total`), the
/// client key (all but `/healthz`), the concurrency limit (`/v1/*` only).
pub fn router(state: AppState) -> axum::Router {
    let limited = axum::Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/route", post(route::handle))
        .route("/v1/models", get(models))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_concurrency,
        ));
    let protected = limited
        .route("/metrics", get(metrics_text))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_key));
    let body_limit = state.inner.options.body_limit;
    axum::Router::new()
        .route("/healthz", get(healthz))
        .method_not_allowed_fallback(method_not_allowed)
        .merge(protected)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves; then stops accepting connections and
/// returns once the requests in flight (streams included) have been answered.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    // Streamed pieces go out at once, not after the previous one is acknowledged.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
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

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// The body of a request, or 413 / 400 when it could not be read.
fn body_bytes(body: Result<Bytes, BytesRejection>, state: &AppState) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge {
                limit: state.inner.options.body_limit,
            }
        } else {
            ApiError::InvalidRequest(rejection.body_text())
        }
    })
}

/// JSON of type `T`: broken JSON is [`ApiError::InvalidJson`] (400), JSON of the wrong shape
/// [`ApiError::InvalidBody`] (422).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            // A shape error can come before a syntax error further on: broken JSON is named as
            // such whatever its shape.
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::InvalidBody(e.to_string()),
                Err(syntax) => ApiError::InvalidJson(syntax.to_string()),
            }
        }
        _ => ApiError::InvalidJson(e.to_string()),
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
        "/metrics" => "/metrics",
        _ => "other",
    }
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let endpoint = endpoint_label(request.uri().path());
    let response = next.run(request).await;
    state
        .inner
        .metrics
        .request(endpoint, response.status().as_u16());
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
                return ApiError::Unauthorized(
                    "this server needs an API key: send `Authorization: Bearer <key>`",
                )
                .into_response()
            }
            Some(given) if !constant_time_eq(given.as_bytes(), key.as_bytes()) => {
                return ApiError::Unauthorized("the API key is not valid for this server")
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

async fn limit_concurrency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(permit) = Arc::clone(&state.inner.limit).try_acquire_owned() else {
        return ApiError::Overloaded {
            limit: state.inner.options.max_concurrency,
        }
        .into_response();
    };
    let response = next.run(request).await;
    // The slot is given back when the body has been sent (or dropped), so a stream holds it.
    response.map(|body| {
        Body::new(WithPermit {
            body,
            _permit: permit,
        })
    })
}

/// A response body that holds a slot of the concurrency limit until it is dropped.
struct WithPermit {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for WithPermit {
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
