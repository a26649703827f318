use std::time::Duration;

/// The result type of `r2-llm`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong when calling the LLM API.
///
/// Each variant says what happened, at which URL, and what to do about it. No variant ever holds
/// the API key: text that comes from the provider (error messages, body excerpts) has any
/// occurrence of the key replaced by `***` before it is stored here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API base is not a usable URL.
    #[error(
        "`{url}` is not a usable LLM API base URL: {reason} \
         (expected e.g. https://openrouter.ai/api/v1)"
    )]
    InvalidUrl { url: String, reason: String },

    /// The API key cannot be sent in an HTTP header (it holds control characters or non-ASCII).
    #[error("the API key cannot be sent in an HTTP header: {reason}; check the key (OPENROUTER_API_KEY)")]
    InvalidApiKey { reason: String },

    /// A request that this client refuses to send (see [`LlmClient::complete_raw`](crate::LlmClient::complete_raw)).
    #[error("invalid chat request: {reason}")]
    InvalidRequest { reason: String },

    /// The provider rejected the key (HTTP 401 or 403), or none was given and one is needed.
    #[error(
        "the LLM API at {url} answered HTTP {status}: {message}. {}",
        unauthorized_hint(*key_given)
    )]
    Unauthorized {
        url: String,
        status: u16,
        message: String,
        /// Whether the request carried an API key.
        key_given: bool,
    },

    /// The account has no credits left (HTTP 402).
    #[error(
        "the LLM API at {url} answered HTTP 402 (out of credits): {message}. \
         Add credits to the account of the API key, or use a cheaper or free model"
    )]
    PaymentRequired { url: String, message: String },

    /// The provider kept answering HTTP 429, or asked to wait longer than
    /// [`LlmOptions::max_retry_after`](crate::LlmOptions::max_retry_after).
    #[error(
        "the LLM API at {url} is rate-limiting requests (HTTP 429, gave up after {attempts} \
         attempt{}{}): {message}. Wait and try again later, send fewer requests at once, or \
         raise max_retries / max_retry_after",
        plural(*attempts),
        wait_note(*retry_after)
    )]
    RateLimited {
        url: String,
        attempts: u32,
        /// The wait the provider asked for in its last `Retry-After` header, if any.
        retry_after: Option<Duration>,
        message: String,
    },

    /// The provider kept answering HTTP 5xx.
    #[error(
        "the LLM API at {url} answered HTTP {status} (server error, gave up after {attempts} \
         attempt{}{}): {message}. The provider or model is having trouble: try again later or \
         pick another model",
        plural(*attempts),
        wait_note(*retry_after)
    )]
    Server {
        url: String,
        status: u16,
        attempts: u32,
        /// The wait the provider asked for in its last `Retry-After` header, if any.
        retry_after: Option<Duration>,
        message: String,
    },

    /// Any other error status (a 4xx such as 400 or 404), or an error reported inside an answer
    /// or an event stream; `message` is the provider's own (`error.message`).
    #[error("the LLM API at {url} answered HTTP {status}: {message}. {}", status_hint(*status))]
    Status {
        url: String,
        status: u16,
        message: String,
    },

    /// No answer (or, when streaming, no next piece of the answer) within the timeout.
    #[error(
        "the LLM API at {url} did not answer within {timeout:?}; the model may be slow or \
         overloaded: raise the timeout or try again"
    )]
    Timeout { url: String, timeout: Duration },

    /// The provider could not be reached (DNS, refused or reset connection, TLS), even after
    /// retrying.
    #[error(
        "cannot reach the LLM API at {url} (gave up after {attempts} attempt{}): {reason}. \
         Check the network and the API base URL",
        plural(*attempts)
    )]
    Unreachable {
        url: String,
        attempts: u32,
        reason: String,
    },

    /// The answer is not OpenAI chat-completions JSON (or SSE) of the expected shape.
    #[error(
        "malformed answer from the LLM API at {url}: {reason}. Is this an OpenAI-compatible \
         chat-completions API?"
    )]
    Malformed { url: String, reason: String },

    /// The answer has an empty `choices` list: the provider generated nothing.
    #[error(
        "the LLM API at {url} answered without any choice (empty `choices`); the provider \
         generated nothing: try again or pick another model"
    )]
    NoChoices { url: String },

    /// An event stream ended (or its connection dropped, or it stalled past the timeout) before
    /// `data: [DONE]` and before any `finish_reason`. The text received so far is in `partial`.
    #[error(
        "the answer stream from {url} stopped after {received_chars} characters: {reason}. \
         The answer is incomplete (the partial text is kept in the error); try again"
    )]
    StreamInterrupted {
        url: String,
        /// Characters (Unicode scalar values) of `partial`.
        received_chars: usize,
        /// The text delivered before the stream stopped.
        partial: String,
        reason: String,
    },

    /// The provider sent more than this client accepts: a whole answer larger than
    /// [`LlmOptions::max_answer_bytes`](crate::LlmOptions::max_answer_bytes), or a line or event
    /// of a stream larger than [`LlmOptions::max_event_bytes`](crate::LlmOptions::max_event_bytes).
    /// Reading stopped as soon as the limit was passed (nothing more was buffered); not retried.
    #[error(
        "the LLM API at {url} sent {what} larger than the limit of {limit} bytes \
         (LlmOptions::{}); reading stopped there. Is this an OpenAI-compatible chat-completions \
         API? If answers this large are expected, raise the limit",
        limit_option(what)
    )]
    TooLarge {
        url: String,
        /// What was too large: `an answer`, `a stream line` or `a stream event`.
        what: &'static str,
        /// The limit, in bytes.
        limit: usize,
    },

    /// A raw stream ([`LlmClient::complete_raw_stream`](crate::LlmClient::complete_raw_stream))
    /// whose connection failed, or that stalled past the timeout, after `received_bytes` bytes
    /// had been passed on.
    #[error(
        "the raw answer stream from {url} stopped after {received_bytes} bytes: {reason}. \
         The answer is incomplete; try again"
    )]
    RawStreamInterrupted {
        url: String,
        received_bytes: usize,
        reason: String,
    },
}

impl Error {
    /// Whether trying the same request again later may succeed (rate limits, server errors,
    /// timeouts, connection problems, interrupted streams).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Server { .. }
                | Error::Timeout { .. }
                | Error::Unreachable { .. }
                | Error::StreamInterrupted { .. }
                | Error::RawStreamInterrupted { .. }
        )
    }

    /// Whether another model of the pool may answer where this call failed: the provider could
    /// not be reached or did not answer in time, kept failing (5xx after the retry policy) or
    /// rate-limiting (429 after `Retry-After`), generated nothing, a stream broke, or the
    /// provider says the model is unknown or unavailable (404, or a 400 that says so). Not the
    /// request's own faults (400, 401, 402, 413, 422, a too-long context): they would fail on
    /// any model.
    pub fn another_model_may_answer(&self) -> bool {
        match self {
            Error::RateLimited { .. }
            | Error::Server { .. }
            | Error::Timeout { .. }
            | Error::Unreachable { .. }
            | Error::NoChoices { .. }
            | Error::StreamInterrupted { .. }
            | Error::RawStreamInterrupted { .. } => true,
            Error::Status {
                status, message, ..
            } => match status {
                404 | 410 => true,
                400 | 422 => model_unavailable(message),
                _ => false,
            },
            _ => false,
        }
    }

    /// The text received before a stream was interrupted, if this is
    /// [`Error::StreamInterrupted`].
    pub fn partial_text(&self) -> Option<&str> {
        match self {
            Error::StreamInterrupted { partial, .. } => Some(partial),
            _ => None,
        }
    }
}

/// The class of each error, as `r2-serve` answers it: the provider's failures (its 5xx, its
/// rejection of the gateway's own key or account, an answer that is not chat completions, a
/// connection that cannot be made or breaks) are [`UpstreamFailure`](r2_core::ErrorClass) (502);
/// only a provider's 400 and 422 say the request itself is wrong.
impl r2_core::Classify for Error {
    fn class(&self) -> r2_core::ErrorClass {
        use r2_core::ErrorClass::{
            Internal, InvalidInput, RateLimited, UpstreamFailure, UpstreamTimeout,
        };
        match self {
            // The base URL and the key are the caller's settings.
            Error::InvalidUrl { .. } | Error::InvalidApiKey { .. } => InvalidInput,
            // A body this client refuses to send: the caller's program is wrong.
            Error::InvalidRequest { .. } => Internal,
            Error::Status {
                status: 400 | 422, ..
            } => InvalidInput,
            Error::Status { .. }
            | Error::Unauthorized { .. }
            | Error::PaymentRequired { .. }
            | Error::Server { .. }
            | Error::Unreachable { .. }
            | Error::Malformed { .. }
            | Error::NoChoices { .. }
            | Error::TooLarge { .. }
            | Error::StreamInterrupted { .. }
            | Error::RawStreamInterrupted { .. } => UpstreamFailure,
            Error::RateLimited { .. } => RateLimited,
            Error::Timeout { .. } => UpstreamTimeout,
        }
    }

    /// What a gateway's client is told: what the provider did, with the provider's own message,
    /// without the operator's URL or command-line hints.
    fn client_message(&self) -> String {
        match self {
            Error::Timeout { timeout, .. } => {
                format!("the provider did not answer within {timeout:?}")
            }
            Error::RateLimited {
                attempts, message, ..
            } => format!(
                "the provider is rate-limiting requests (HTTP 429{}): {message}",
                attempts_note(*attempts)
            ),
            Error::Server {
                status,
                attempts,
                message,
                ..
            } => format!(
                "the provider answered HTTP {status}{}: {message}",
                attempts_note(*attempts)
            ),
            Error::Status {
                status: status @ (400 | 422),
                message,
                ..
            } => format!("the provider rejected the request (HTTP {status}): {message}"),
            Error::Status {
                status, message, ..
            } => format!("the provider answered HTTP {status}: {message}"),
            Error::Unauthorized { status, .. } => format!(
                "the provider rejected this gateway's own API key (HTTP {status}); the \
                 gateway's operator must fix it"
            ),
            Error::PaymentRequired { message, .. } => {
                format!("the provider's account is out of credits (HTTP 402): {message}")
            }
            Error::Unreachable {
                attempts, reason, ..
            } => format!(
                "cannot reach the provider{}: {reason}",
                attempts_note(*attempts)
            ),
            Error::Malformed { reason, .. } => {
                format!("malformed answer from the provider: {reason}")
            }
            Error::NoChoices { .. } => "the provider answered without any choice".to_owned(),
            Error::TooLarge { what, limit, .. } => format!(
                "the provider sent {what} larger than this gateway's limit of {limit} bytes"
            ),
            Error::StreamInterrupted { reason, .. }
            | Error::RawStreamInterrupted { reason, .. } => {
                format!("the provider's answer stream stopped early: {reason}")
            }
            Error::InvalidUrl { .. }
            | Error::InvalidApiKey { .. }
            | Error::InvalidRequest { .. } => {
                "the request to the provider could not be made (see the server's log)".to_owned()
            }
        }
    }
}

/// `, after N attempts` when more than one attempt was made.
fn attempts_note(attempts: u32) -> String {
    match attempts {
        0 | 1 => String::new(),
        n => format!(", after {n} attempts"),
    }
}

fn unauthorized_hint(key_given: bool) -> &'static str {
    if key_given {
        "The API key was rejected: check the key (OPENROUTER_API_KEY)"
    } else {
        "No API key was given: give one (e.g. set OPENROUTER_API_KEY)"
    }
}

fn status_hint(status: u16) -> &'static str {
    if status < 400 {
        "The provider reported this error inside its answer: try again or pick another model"
    } else {
        "Check the request (model id, parameters) against the provider's documentation"
    }
}

/// The option of [`crate::LlmOptions`] that sets the limit of [`Error::TooLarge`] for `what`.
fn limit_option(what: &str) -> &'static str {
    if what.starts_with("a stream") {
        "max_event_bytes"
    } else {
        "max_answer_bytes"
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn wait_note(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!("; it asked to wait {wait:?}"),
        None => String::new(),
    }
}

/// Whether a provider's 400 message says the model (not the request) is the problem: OpenRouter's
/// "is not a valid model ID", "No endpoints found", an unknown or unavailable model.
fn model_unavailable(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    if message.contains("context") || message.contains("too long") || message.contains("maximum") {
        return false;
    }
    message.contains("model")
        && [
            "not a valid model",
            "no endpoints",
            "not found",
            "unknown",
            "unavailable",
            "not available",
            "does not exist",
            "not supported",
            "deprecated",
        ]
        .iter()
        .any(|phrase| message.contains(phrase))
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2_core::{Classify, ErrorClass};

    #[test]
    fn classes_follow_the_statuses_the_gateway_answers() {
        let url = || "http://provider/v1/chat/completions".to_owned();
        let status = |status| Error::Status {
            url: url(),
            status,
            message: "no".into(),
        };
        let cases = [
            (status(400), ErrorClass::InvalidInput),
            (status(422), ErrorClass::InvalidInput),
            (status(404), ErrorClass::UpstreamFailure),
            (status(200), ErrorClass::UpstreamFailure),
            (
                Error::Unauthorized {
                    url: url(),
                    status: 401,
                    message: "bad key".into(),
                    key_given: true,
                },
                ErrorClass::UpstreamFailure,
            ),
            (
                Error::RateLimited {
                    url: url(),
                    attempts: 4,
                    retry_after: None,
                    message: "slow down".into(),
                },
                ErrorClass::RateLimited,
            ),
            (
                Error::Timeout {
                    url: url(),
                    timeout: Duration::from_secs(1),
                },
                ErrorClass::UpstreamTimeout,
            ),
            (
                Error::InvalidRequest { reason: "x".into() },
                ErrorClass::Internal,
            ),
        ];
        for (error, class) in cases {
            assert_eq!(error.class(), class, "{error:?}");
            let message = error.client_message();
            assert!(!message.contains("http://provider"), "{message}");
            assert!(!message.contains("--llm-api-key"), "{message}");
        }
        let error = Error::Server {
            url: url(),
            status: 503,
            attempts: 4,
            retry_after: None,
            message: "overloaded".into(),
        };
        assert_eq!(
            error.client_message(),
            "the provider answered HTTP 503, after 4 attempts: overloaded"
        );
    }
}
