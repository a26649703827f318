//! The one place where errors become HTTP answers: [`ApiError`] and its OpenAI-style JSON body
//! `{"error": {"message", "type", "code"}}`.
//!
//! In two steps, as text-embeddings-inference does: every library error knows its
//! [`ErrorClass`] (r2-core's [`Classify`]), and [`class_answer`] alone maps a class — with the
//! server it is about, the provider or the embedding server — to the HTTP status and the OpenAI
//! error `type` and `code`. A few finer codes that clients had before classes existed are kept
//! next to it: which value of a request was wrong (the core error's kind), which text could not
//! be embedded, how the provider failed (the `kind` label of `r2_provider_errors_total` too),
//! and the provider's own 400 or 422 passed on. The gateway's own conditions (limits,
//! authentication, unknown endpoints and models, broken bodies) are built by the constructors of
//! [`ApiError`].

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use r2_router::r2_core::{self, Classify, ErrorClass};
use r2_router::{r2_embed, r2_llm};
use serde_json::{json, Value};

/// The OpenAI error types.
const INVALID_REQUEST: &str = "invalid_request_error";
const AUTHENTICATION: &str = "authentication_error";
const RATE_LIMIT: &str = "rate_limit_error";
const UPSTREAM: &str = "upstream_error";
const SERVER: &str = "server_error";

/// An answer that is an error: its status, OpenAI error `type` and `code`, the message the
/// client sees and, for the log, the whole story when it says more.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    /// The error as the operator reads it (URLs and hints; never a key), when it is not
    /// `message`.
    detail: Option<String>,
    /// A header the answer carries.
    header: Header,
}

/// The headers an error answer may carry besides `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    None,
    /// `WWW-Authenticate: Bearer`.
    Authenticate,
    /// `Retry-After: 1`.
    RetryAfter,
}

/// What a request log line says about an error: put into the response's extensions by
/// [`ApiError::into_response`], read by the logging middleware.
#[derive(Debug, Clone)]
pub(crate) struct ErrorNote(pub(crate) String);

/// The server an error of the router is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// The chat-completions provider.
    Provider,
    /// The embedding server or the in-process embedder.
    Embedding,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code,
            message,
            detail: None,
            header: Header::None,
        }
    }

    /// The body is not JSON (a syntax error or a cut-off body): 400.
    pub fn invalid_json(reason: impl std::fmt::Display) -> Self {
        let message = format!("the request body is not valid JSON: {reason}");
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "invalid_json",
            message,
        )
    }

    /// The body is JSON of the wrong shape (a missing field, a wrong type, an unknown field): 422.
    pub fn invalid_body(reason: impl std::fmt::Display) -> Self {
        let message =
            format!("the request body does not have the expected fields and types: {reason}");
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        Self::new(status, INVALID_REQUEST, "invalid_body", message)
    }

    /// The request is well-formed but cannot be served as asked: 400.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        let status = StatusCode::BAD_REQUEST;
        Self::new(status, INVALID_REQUEST, "invalid_request", message.into())
    }

    /// The body is larger than the server's limit: 413.
    pub fn body_too_large(limit: usize) -> Self {
        let message =
            format!("the request body is larger than this server's limit of {limit} bytes");
        let status = StatusCode::PAYLOAD_TOO_LARGE;
        Self::new(status, INVALID_REQUEST, "body_too_large", message)
    }

    /// The body did not arrive whole within the body timeout (the connection is closed): 408.
    pub fn body_timeout(timeout: Duration) -> Self {
        let message = format!(
            "the request body did not arrive within {timeout:?} (this server's body timeout); \
             the connection is closed: send the whole body at once"
        );
        let status = StatusCode::REQUEST_TIMEOUT;
        Self::new(status, INVALID_REQUEST, "body_timeout", message)
    }

    /// A client key is required and the request has none, or another one: 401.
    pub fn unauthorized(message: &'static str) -> Self {
        let status = StatusCode::UNAUTHORIZED;
        let mut error = Self::new(status, AUTHENTICATION, "invalid_api_key", message.into());
        error.header = Header::Authenticate;
        error
    }

    /// The request names a model that is neither `r2-router` nor one of the pool: 404.
    pub fn model_not_found(model: &str) -> Self {
        let message = format!(
            "the model `{model}` does not exist here: use `{}` to route, or a pool model \
             (GET /v1/models lists them)",
            crate::ROUTER_MODEL
        );
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            "model_not_found",
            message,
        )
    }

    /// No such endpoint: 404.
    pub fn not_found(method: &str, path: &str) -> Self {
        let message = format!(
            "no endpoint {method} {path}: this server has POST /v1/chat/completions, POST \
             /v1/route, GET /v1/models, GET /healthz, GET /readyz and GET /metrics"
        );
        Self::new(StatusCode::NOT_FOUND, INVALID_REQUEST, "not_found", message)
    }

    /// The endpoint exists but not with this method: 405.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        let message = format!("{method} is not allowed on {path}");
        let status = StatusCode::METHOD_NOT_ALLOWED;
        Self::new(status, INVALID_REQUEST, "method_not_allowed", message)
    }

    /// Every slot of the concurrency limit is taken: 429, `Retry-After: 1`.
    pub fn overloaded(limit: usize) -> Self {
        let message =
            format!("the server is at its limit of {limit} requests in flight: retry shortly");
        let status = StatusCode::TOO_MANY_REQUESTS;
        let mut error = Self::new(status, RATE_LIMIT, "server_overloaded", message);
        error.header = Header::RetryAfter;
        error
    }

    /// Chat completions were asked for but the server has no provider: 503.
    pub fn no_provider() -> Self {
        let message = "this server has no LLM API to forward chat completions to (start it with \
                       --llm-api-base); POST /v1/route works without one";
        let status = StatusCode::SERVICE_UNAVAILABLE;
        Self::new(status, SERVER, "no_provider", message.to_owned())
    }

    /// The embedding backend does not answer (`GET /readyz`): 503.
    pub fn not_ready(reason: &str) -> Self {
        let message = format!("not ready: {reason}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER,
            "not_ready",
            message,
        )
    }

    /// A bug or a lost worker thread: 500; `detail` goes to the server's log only.
    pub fn internal(detail: impl Into<String>) -> Self {
        let message = "internal error (see the server's log)".to_owned();
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        let mut error = Self::new(status, SERVER, "internal_error", message);
        error.detail = Some(detail.into());
        error
    }

    /// The answer to an error of the router. The provider's and the embedder's errors are
    /// answered by their own class (which server failed matters to the answer); the router's
    /// others by the router's.
    fn routed(e: &r2_router::Error) -> Self {
        match e {
            r2_router::Error::Llm(e) => Self::provider(e),
            r2_router::Error::Embed(e) => {
                let answer = Self::classified(e, Some(Upstream::Embedding));
                match e {
                    r2_embed::Error::EmptyText { .. } => answer.with_code("empty_query"),
                    r2_embed::Error::TooLong { .. } => answer.with_code("query_too_long"),
                    _ => answer,
                }
            }
            r2_router::Error::Core(e) => {
                let answer = Self::classified(e, None);
                match core_code(e) {
                    Some(code) => answer.with_code(code),
                    None => answer,
                }
            }
            other => Self::classified(other, None),
        }
    }

    /// The answer to a failed provider call: by its class, with the finer code of how it failed,
    /// and the provider's own 400 or 422 passed on.
    fn provider(e: &r2_llm::Error) -> Self {
        let mut answer = Self::classified(e, Some(Upstream::Provider));
        match (e.class(), e) {
            (ErrorClass::InvalidInput, r2_llm::Error::Status { status, .. }) => {
                if let (400 | 422, Ok(status)) = (status, StatusCode::from_u16(*status)) {
                    answer.status = status;
                }
            }
            (ErrorClass::InvalidInput | ErrorClass::Internal, _) => {}
            _ => {
                if let Some(code) = provider_failure(e).1 {
                    answer.code = code;
                }
            }
        }
        answer
    }

    /// The answer to an error of class `e.class()` about `upstream`: [`class_answer`]'s status,
    /// type and code, the error's client message (a generic one for internal errors), and the
    /// whole error for the log.
    fn classified(e: &(impl Classify + ?Sized), upstream: Option<Upstream>) -> Self {
        let class = e.class();
        let (status, kind, code) = class_answer(class, upstream);
        let message = match (class, upstream) {
            // What went wrong is the operator's business; the log has it.
            (ErrorClass::Internal, Some(Upstream::Provider)) => {
                "the request to the provider could not be made (see the server's log)".to_owned()
            }
            (ErrorClass::Internal, Some(Upstream::Embedding)) => {
                "the embedder failed (see the server's log)".to_owned()
            }
            (ErrorClass::Internal, None) => "internal error (see the server's log)".to_owned(),
            _ => e.client_message(),
        };
        Self {
            status,
            kind,
            code,
            message,
            detail: Some(e.to_string()),
            header: match class {
                ErrorClass::Overloaded => Header::RetryAfter,
                _ => Header::None,
            },
        }
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// This error with `detail` for the server's log.
    pub(crate) fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The OpenAI error `type`.
    pub fn error_type(&self) -> &'static str {
        self.kind
    }

    /// The OpenAI error `code`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message the client sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error as the server's log tells it: the whole story (the operator's URLs and hints;
    /// never a key, which r2-llm keeps out of every error).
    pub fn detail(&self) -> &str {
        self.detail.as_deref().unwrap_or(&self.message)
    }

    /// The OpenAI-style body: `{"error": {"message", "type", "code"}}`.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "code": self.code}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for ApiError {}

impl From<r2_router::Error> for ApiError {
    fn from(e: r2_router::Error) -> Self {
        Self::routed(&e)
    }
}

impl From<r2_core::Error> for ApiError {
    fn from(e: r2_core::Error) -> Self {
        r2_router::Error::from(e).into()
    }
}

/// A failed call to the provider.
impl From<r2_llm::Error> for ApiError {
    fn from(e: r2_llm::Error) -> Self {
        Self::provider(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let header = match self.header {
            Header::None => None,
            Header::Authenticate => Some((header::WWW_AUTHENTICATE, "Bearer")),
            Header::RetryAfter => Some((header::RETRY_AFTER, "1")),
        };
        if let Some((name, value)) = header {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        // The request log line (see `log_requests`) tells the operator the whole story.
        let note = ErrorNote(self.detail.unwrap_or(self.message));
        response.extensions_mut().insert(note);
        response
    }
}

/// The status, the OpenAI error `type` and `code` of an error of class `class` about `upstream`
/// (`None`: about the request or the gateway itself). A server r2 depends on that fails is 502
/// (its timeout 504, the provider's rate limit 429, its rejection of the request 400) whatever
/// the class says of the server, since the gateway's client can do nothing about it.
fn class_answer(
    class: ErrorClass,
    upstream: Option<Upstream>,
) -> (StatusCode, &'static str, &'static str) {
    use ErrorClass::{
        Internal, InvalidInput, NotFound, Overloaded, RateLimited, Unavailable, UpstreamFailure,
        UpstreamTimeout,
    };
    use Upstream::{Embedding, Provider};
    match (class, upstream) {
        (InvalidInput, None) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            INVALID_REQUEST,
            "invalid_input",
        ),
        (InvalidInput, Some(Embedding)) => {
            (StatusCode::BAD_REQUEST, INVALID_REQUEST, "invalid_query")
        }
        (InvalidInput, Some(Provider)) => (
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "provider_rejected_request",
        ),
        (NotFound, None) => (StatusCode::NOT_FOUND, INVALID_REQUEST, "not_found"),
        (UpstreamTimeout, None) => (StatusCode::GATEWAY_TIMEOUT, UPSTREAM, "upstream_timeout"),
        (UpstreamTimeout, Some(Provider)) => {
            (StatusCode::GATEWAY_TIMEOUT, UPSTREAM, "provider_timeout")
        }
        (UpstreamTimeout, Some(Embedding)) => {
            (StatusCode::GATEWAY_TIMEOUT, UPSTREAM, "embedding_timeout")
        }
        (RateLimited, None) => (StatusCode::TOO_MANY_REQUESTS, RATE_LIMIT, "rate_limited"),
        (RateLimited, Some(Provider)) => (
            StatusCode::TOO_MANY_REQUESTS,
            RATE_LIMIT,
            "provider_rate_limited",
        ),
        // The gateway's own capacity (e.g. the in-process embedder's queue), whichever part.
        (Overloaded, _) => (
            StatusCode::TOO_MANY_REQUESTS,
            RATE_LIMIT,
            "server_overloaded",
        ),
        (UpstreamFailure, None) => (StatusCode::BAD_GATEWAY, UPSTREAM, "upstream_error"),
        (NotFound | UpstreamFailure | Unavailable, Some(Provider)) => {
            (StatusCode::BAD_GATEWAY, UPSTREAM, "provider_error")
        }
        (NotFound | UpstreamFailure | Unavailable | RateLimited, Some(Embedding)) => {
            (StatusCode::BAD_GATEWAY, UPSTREAM, "embedding_error")
        }
        (Unavailable, None) => (StatusCode::SERVICE_UNAVAILABLE, SERVER, "unavailable"),
        (Internal, Some(Embedding)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, SERVER, "embedding_error")
        }
        (Internal, None | Some(Provider)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, SERVER, "internal_error")
        }
    }
}

/// The code of a core error about a request's values: the variant's name.
fn core_code(e: &r2_core::Error) -> Option<&'static str> {
    use r2_core::Error as E;
    Some(match e {
        E::DimensionMismatch { .. } => "dimension_mismatch",
        E::BatchShape { .. } => "batch_shape",
        E::NonFiniteEmbedding { .. } => "non_finite_embedding",
        // An embedding far from the unit-norm vectors the heads were trained on.
        E::NonFinitePrediction { .. } => "non_finite_prediction",
        E::InvalidLambda { .. } => "invalid_lambda",
        E::InvalidMaxCost { .. } => "invalid_max_cost",
        E::UnknownModel { .. } => "unknown_model",
        E::NoCandidates => "no_candidates",
        E::NothingWithinMaxCost { .. } => "nothing_within_max_cost",
        // Any other (new) value error keeps its class's code.
        _ => return None,
    })
}

/// How a provider call failed: the `kind` label of `r2_provider_errors_total`, and the error
/// code when it is finer than the class's.
pub(crate) fn provider_failure(e: &r2_llm::Error) -> (&'static str, Option<&'static str>) {
    use r2_llm::Error as E;
    match e {
        E::Timeout { .. } => ("timeout", None),
        E::RateLimited { .. } => ("rate_limited", None),
        E::Server { .. } => ("server_error", None),
        E::Status { .. } => ("status", None),
        E::Unauthorized { .. } => ("unauthorized", Some("provider_auth_failed")),
        E::PaymentRequired { .. } => ("payment_required", Some("provider_payment_required")),
        E::Unreachable { .. } => ("unreachable", Some("provider_unreachable")),
        E::Malformed { .. } => ("malformed", Some("provider_malformed_answer")),
        E::NoChoices { .. } => ("malformed", Some("provider_no_choices")),
        E::TooLarge { .. } => ("too_large", Some("provider_answer_too_large")),
        E::StreamInterrupted { .. } | E::RawStreamInterrupted { .. } => {
            ("stream_interrupted", Some("provider_stream_interrupted"))
        }
        // Any other (new) failure: its class's status and code.
        _ => ("other", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_openai_shape_and_its_status() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::invalid_json("x"), 400, "invalid_json"),
            (ApiError::invalid_body("x"), 422, "invalid_body"),
            (ApiError::body_too_large(1), 413, "body_too_large"),
            (
                ApiError::body_timeout(std::time::Duration::from_secs(1)),
                408,
                "body_timeout",
            ),
            (
                r2_llm::Error::TooLarge {
                    url: "http://provider/v1/chat/completions".into(),
                    what: "a stream line",
                    limit: 1024,
                }
                .into(),
                502,
                "provider_answer_too_large",
            ),
            (
                r2_router::Error::from(r2_embed::Error::AnswerTooLarge {
                    url: "http://provider/v1/embeddings".into(),
                    limit: 1024,
                    texts: 1,
                    dim: 8,
                })
                .into(),
                502,
                "embedding_error",
            ),
            (ApiError::unauthorized("no"), 401, "invalid_api_key"),
            (ApiError::model_not_found("m"), 404, "model_not_found"),
            (ApiError::overloaded(1), 429, "server_overloaded"),
            (
                r2_router::Error::from(r2_embed::Error::Overloaded {
                    queued: 1024,
                    limit: 1024,
                })
                .into(),
                429,
                "server_overloaded",
            ),
            (
                r2_core::Error::InvalidLambda { got: 2.0 }.into(),
                422,
                "invalid_lambda",
            ),
            (
                r2_router::Error::Core(r2_core::Error::NoCandidates).into(),
                422,
                "no_candidates",
            ),
            (
                r2_llm::Error::Timeout {
                    url: "http://provider/v1/chat/completions".into(),
                    timeout: std::time::Duration::from_secs(1),
                }
                .into(),
                504,
                "provider_timeout",
            ),
            (
                r2_llm::Error::Server {
                    url: "http://provider/v1/chat/completions".into(),
                    status: 500,
                    attempts: 1,
                    retry_after: None,
                    message: "boom".into(),
                }
                .into(),
                502,
                "provider_error",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            let body = error.body();
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
            assert!(body["error"]["type"].is_string());
            assert!(
                !body.to_string().contains("http://provider"),
                "the provider URL is the operator's business: {body}"
            );
        }
    }

    #[test]
    fn every_class_has_an_answer_about_every_server() {
        use ErrorClass::*;
        for class in ErrorClass::ALL {
            for upstream in [None, Some(Upstream::Provider), Some(Upstream::Embedding)] {
                let (status, kind, code) = class_answer(class, upstream);
                assert!(!kind.is_empty() && !code.is_empty());
                match class {
                    InvalidInput => assert!(status.is_client_error()),
                    UpstreamTimeout => assert_eq!(status, StatusCode::GATEWAY_TIMEOUT),
                    Internal => assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR),
                    // r2's own capacity: clients back off and retry.
                    Overloaded => assert_eq!(status, StatusCode::TOO_MANY_REQUESTS),
                    // The provider's rate limit is passed on, so that clients back off.
                    RateLimited if upstream != Some(Upstream::Embedding) => {
                        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS)
                    }
                    // A server r2 depends on failing is not the client's doing.
                    _ if upstream.is_some() => assert_eq!(status, StatusCode::BAD_GATEWAY),
                    NotFound => assert_eq!(status, StatusCode::NOT_FOUND),
                    UpstreamFailure => assert_eq!(status, StatusCode::BAD_GATEWAY),
                    Unavailable => assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE),
                    RateLimited => unreachable!(),
                }
            }
        }
    }
}
