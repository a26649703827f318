//! The one place where errors become HTTP answers: [`ApiError`] and its OpenAI-style JSON body
//! `{"error": {"message", "type", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Everything a request can fail with. The layers' errors are wrapped as they are (`#[from]`);
/// [`ApiError::parts`] alone decides the HTTP status, the OpenAI error `type` and `code`, and the
/// message the client sees.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error(transparent)]
    Router(#[from] r2_router::Error),
    #[error(transparent)]
    Core(#[from] r2_core::Error),
    #[error(transparent)]
    Embed(#[from] r2_embed::Error),
    #[error(transparent)]
    Llm(#[from] r2_llm::Error),
    /// The body is not JSON (a syntax error or a cut-off body).
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON of the wrong shape: a missing field, a wrong type, an unknown field.
    #[error("the request body does not have the expected fields and types: {0}")]
    InvalidBody(String),
    /// The request is well-formed but cannot be served as asked.
    #[error("{0}")]
    InvalidRequest(String),
    /// The body is larger than the server's limit.
    #[error("the request body is larger than this server's limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The body did not arrive whole within the server's body timeout; the connection is closed.
    #[error(
        "the request body did not arrive within {timeout:?} (this server's body timeout); the \
         connection is closed: send the whole body at once"
    )]
    BodyTimeout { timeout: std::time::Duration },
    /// A client key is required and the request has none, or another one.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The request names a model that is neither `r2-router` nor one of the pool.
    #[error(
        "the model `{model}` does not exist here: use `{router}` to route, or a pool model \
         (GET /v1/models lists them)",
        router = crate::ROUTER_MODEL
    )]
    ModelNotFound { model: String },
    /// No such endpoint.
    #[error("no endpoint {method} {path}: this server has POST /v1/chat/completions, POST /v1/route, GET /v1/models, GET /healthz and GET /metrics")]
    NotFound { method: String, path: String },
    /// The endpoint exists but not with this method.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// Every slot of the concurrency limit is taken.
    #[error("the server is at its limit of {limit} requests in flight: retry shortly")]
    Overloaded { limit: usize },
    /// Chat completions were asked for but the server has no provider.
    #[error(
        "this server has no LLM API to forward chat completions to (start it with \
         --llm-api-base); POST /v1/route works without one"
    )]
    NoProvider,
    /// A bug or a lost worker thread; the details go to the server's log only.
    #[error("internal error: {0}")]
    Internal(String),
}

const INVALID_REQUEST: &str = "invalid_request_error";
const UPSTREAM: &str = "upstream_error";
const SERVER: &str = "server_error";

/// Status, OpenAI error type, code and client-facing message.
type Parts = (StatusCode, &'static str, &'static str, String);

impl ApiError {
    /// The HTTP status, the OpenAI error `type`, the `code` and the message of this error.
    ///
    /// Messages about the provider and the embedding server are written for the gateway's
    /// clients: they say what failed and carry the provider's own message (from which r2-llm has
    /// removed the provider key), not the operator's URLs or command-line hints.
    pub fn parts(&self) -> Parts {
        match self {
            ApiError::Router(e) => router_parts(e),
            ApiError::Core(e) => core_parts(e),
            ApiError::Embed(e) => embed_parts(e),
            ApiError::Llm(e) => llm_parts(e),
            ApiError::InvalidJson(_) => (
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "invalid_json",
                self.to_string(),
            ),
            ApiError::InvalidBody(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                INVALID_REQUEST,
                "invalid_body",
                self.to_string(),
            ),
            ApiError::InvalidRequest(_) => (
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "invalid_request",
                self.to_string(),
            ),
            ApiError::BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID_REQUEST,
                "body_too_large",
                self.to_string(),
            ),
            ApiError::BodyTimeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                INVALID_REQUEST,
                "body_timeout",
                self.to_string(),
            ),
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
                self.to_string(),
            ),
            ApiError::ModelNotFound { .. } => (
                StatusCode::NOT_FOUND,
                INVALID_REQUEST,
                "model_not_found",
                self.to_string(),
            ),
            ApiError::NotFound { .. } => (
                StatusCode::NOT_FOUND,
                INVALID_REQUEST,
                "not_found",
                self.to_string(),
            ),
            ApiError::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                INVALID_REQUEST,
                "method_not_allowed",
                self.to_string(),
            ),
            ApiError::Overloaded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "server_overloaded",
                self.to_string(),
            ),
            ApiError::NoProvider => (
                StatusCode::SERVICE_UNAVAILABLE,
                SERVER,
                "no_provider",
                self.to_string(),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                SERVER,
                "internal_error",
                "internal error (see the server's log)".to_owned(),
            ),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The OpenAI-style body: `{"error": {"message", "type", "code"}}`.
    pub fn body(&self) -> Value {
        let (_, kind, code, message) = self.parts();
        json!({"error": {"message": message, "type": kind, "code": code}})
    }

    /// The `kind` label of `r2_provider_errors_total` when this is a provider error.
    pub fn provider_kind(&self) -> Option<&'static str> {
        match self {
            ApiError::Llm(e) | ApiError::Router(r2_router::Error::Llm(e)) => Some(llm_kind(e)),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, _, _) = self.parts();
        if status.is_server_error() {
            // The operator's log gets the whole story (URLs and hints; never the provider key,
            // which r2-llm keeps out of every error).
            eprintln!("r2 serve: {}: {self}", status.as_u16());
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Overloaded { .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

fn router_parts(e: &r2_router::Error) -> Parts {
    use r2_router::Error as E;
    match e {
        E::Core(e) => core_parts(e),
        E::Embed(e) => embed_parts(e),
        E::Llm(e) => llm_parts(e),
        E::NoLlmApi => ApiError::NoProvider.parts(),
        other => (
            StatusCode::INTERNAL_SERVER_ERROR,
            SERVER,
            "internal_error",
            other.to_string(),
        ),
    }
}

fn core_parts(e: &r2_core::Error) -> Parts {
    use r2_core::Error as E;
    let code = match e {
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
        // Errors of building a router cannot come from a request.
        _ => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                SERVER,
                "internal_error",
                e.to_string(),
            )
        }
    };
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        INVALID_REQUEST,
        code,
        e.to_string(),
    )
}

fn embed_parts(e: &r2_embed::Error) -> Parts {
    use r2_embed::Error as E;
    match e {
        E::EmptyText { .. } => (
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "empty_query",
            "the text to route is empty".to_owned(),
        ),
        E::TooLong { tokens, max, .. } => (
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "query_too_long",
            format!(
                "the text to route has {tokens} tokens, more than the {max} the embedding model \
                 accepts"
            ),
        ),
        E::Timeout { timeout, .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            UPSTREAM,
            "embedding_timeout",
            format!("the embedding server did not answer within {timeout:?}"),
        ),
        E::Status {
            status, message, ..
        } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "embedding_error",
            format!("the embedding server answered HTTP {status}: {message}"),
        ),
        E::Unreachable { .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "embedding_error",
            "cannot reach the embedding server".to_owned(),
        ),
        E::Malformed { reason, .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "embedding_error",
            format!("malformed answer from the embedding server: {reason}"),
        ),
        E::WrongDimension { expected, got, .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "embedding_error",
            format!("the embedding server gave a {got}-d vector, the router expects {expected}-d"),
        ),
        E::NonFinite { .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "embedding_error",
            "the embedding server gave a vector with a non-finite value".to_owned(),
        ),
        E::AnswerTooLarge { .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "embedding_error",
            "the embedding server's answer is larger than any answer to the request could be"
                .to_owned(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            SERVER,
            "embedding_error",
            "the embedder failed (see the server's log)".to_owned(),
        ),
    }
}

fn attempts_note(attempts: u32) -> String {
    match attempts {
        0 | 1 => String::new(),
        n => format!(", after {n} attempts"),
    }
}

fn llm_parts(e: &r2_llm::Error) -> Parts {
    use r2_llm::Error as E;
    match e {
        E::Timeout { timeout, .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            UPSTREAM,
            "provider_timeout",
            format!("the provider did not answer within {timeout:?}"),
        ),
        E::RateLimited {
            attempts, message, ..
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "provider_rate_limited",
            format!(
                "the provider is rate-limiting requests (HTTP 429{}): {message}",
                attempts_note(*attempts)
            ),
        ),
        E::Server {
            status,
            attempts,
            message,
            ..
        } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "provider_error",
            format!(
                "the provider answered HTTP {status}{}: {message}",
                attempts_note(*attempts)
            ),
        ),
        E::Status {
            status: status @ (400 | 422),
            message,
            ..
        } => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            INVALID_REQUEST,
            "provider_rejected_request",
            format!("the provider rejected the request (HTTP {status}): {message}"),
        ),
        E::Status {
            status, message, ..
        } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "provider_error",
            format!("the provider answered HTTP {status}: {message}"),
        ),
        E::Unauthorized { status, .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "provider_auth_failed",
            format!(
                "the provider rejected this gateway's own API key (HTTP {status}); the \
                 gateway's operator must fix it"
            ),
        ),
        E::PaymentRequired { message, .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "provider_payment_required",
            format!("the provider's account is out of credits (HTTP 402): {message}"),
        ),
        E::Unreachable {
            attempts, reason, ..
        } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "provider_unreachable",
            format!(
                "cannot reach the provider{}: {reason}",
                attempts_note(*attempts)
            ),
        ),
        E::Malformed { reason, .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "provider_malformed_answer",
            format!("malformed answer from the provider: {reason}"),
        ),
        E::NoChoices { .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "provider_no_choices",
            "the provider answered without any choice".to_owned(),
        ),
        E::TooLarge { what, limit, .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "provider_answer_too_large",
            format!("the provider sent {what} larger than this gateway's limit of {limit} bytes"),
        ),
        E::StreamInterrupted { reason, .. } | E::RawStreamInterrupted { reason, .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "provider_stream_interrupted",
            format!("the provider's answer stream stopped early: {reason}"),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            SERVER,
            "internal_error",
            "the request to the provider could not be made (see the server's log)".to_owned(),
        ),
    }
}

/// The `kind` label of a provider error in `r2_provider_errors_total`.
fn llm_kind(e: &r2_llm::Error) -> &'static str {
    use r2_llm::Error as E;
    match e {
        E::Timeout { .. } => "timeout",
        E::RateLimited { .. } => "rate_limited",
        E::Server { .. } => "server_error",
        E::Status { .. } => "status",
        E::Unauthorized { .. } => "unauthorized",
        E::PaymentRequired { .. } => "payment_required",
        E::Unreachable { .. } => "unreachable",
        E::Malformed { .. } | E::NoChoices { .. } => "malformed",
        E::TooLarge { .. } => "too_large",
        E::StreamInterrupted { .. } | E::RawStreamInterrupted { .. } => "stream_interrupted",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_openai_shape_and_its_status() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::InvalidJson("x".into()), 400, "invalid_json"),
            (ApiError::InvalidBody("x".into()), 422, "invalid_body"),
            (ApiError::BodyTooLarge { limit: 1 }, 413, "body_too_large"),
            (
                ApiError::BodyTimeout {
                    timeout: std::time::Duration::from_secs(1),
                },
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
                r2_embed::Error::AnswerTooLarge {
                    url: "http://provider/v1/embeddings".into(),
                    limit: 1024,
                    texts: 1,
                    dim: 8,
                }
                .into(),
                502,
                "embedding_error",
            ),
            (ApiError::Unauthorized("no"), 401, "invalid_api_key"),
            (
                ApiError::ModelNotFound { model: "m".into() },
                404,
                "model_not_found",
            ),
            (ApiError::Overloaded { limit: 1 }, 429, "server_overloaded"),
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
}
