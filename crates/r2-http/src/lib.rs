//! HTTP plumbing shared by r2's clients: the vLLM embeddings client (`r2-embed`), the
//! chat-completions client (`r2-llm`) and the first-run checkpoint fetch (`r2-router`).
//!
//! - [`RetryPolicy`]: the one rule of what is retried (5xx and connection errors; 429 when the
//!   server rate-limits, [`RateLimits::Honour`]; never timeouts or other 4xx), exponential backoff
//!   jittered by ±25% and capped, `Retry-After` in seconds or as an HTTP date with a cap, and
//!   [`RetryPolicy::run`], the loop every client retries with.
//! - [`read_limited`] / [`read_prefix`]: bodies read chunk by chunk, never buffered past a limit.
//! - [`endpoint_url`]: a base URL checked and joined with an endpoint's path.
//! - [`client`]: the reqwest client (rustls, user agent `r2/<version>`).
//! - [`error_chain`], [`source_chain`], [`truncate`], [`error_message`], [`excerpt`]: text for
//!   errors.
//!
//! Each client keeps its own error type and words its own messages; this crate's [`Error`] (a body
//! too large, a broken connection) is wrapped once by them. It never prints; retries are logged
//! with `tracing` at `debug`.
//!
//! Architecture invariant: r2-http knows HTTP and nothing of what is sent: no chat, embeddings,
//! checkpoints or routing, no API keys, no command line.

mod body;
mod retry;
mod text;
mod url;

use std::time::Duration;

use r2_core::{Classify, ErrorClass};

pub use body::{read_limited, read_prefix};
pub use retry::{
    backoff, parse_retry_after, BoxFuture, Failure, RateLimits, RetryPolicy, StopReason, Stopped,
};
pub use text::{
    error_chain, error_message, excerpt, json_message, json_text, source_chain, truncate,
};
pub use url::{endpoint_url, Endpoint, UrlProblem};

/// The `User-Agent` of every request r2 sends.
pub const USER_AGENT: &str = concat!("r2/", env!("CARGO_PKG_VERSION"));

/// What can go wrong while reading a body. Not `non_exhaustive`: every client words each case
/// itself, in its own error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is longer than the limit (by its `Content-Length`, or as it arrived); reading
    /// stopped there.
    #[error("the answer is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },

    /// The connection failed, or the request's timeout passed, before the body's end.
    #[error("reading the answer failed: {}", source_chain(.0))]
    Transport(#[source] reqwest::Error),
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::TooLarge { .. } => ErrorClass::UpstreamFailure,
            Error::Transport(e) if e.is_timeout() => ErrorClass::UpstreamTimeout,
            Error::Transport(_) => ErrorClass::UpstreamFailure,
        }
    }
}

/// A reqwest client with rustls and [`USER_AGENT`]. `timeout` bounds each whole request, from
/// connecting to the last byte of the body; `connect_timeout` only the connecting (for clients
/// that bound the rest themselves, e.g. each wait of a stream).
pub fn client(
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(USER_AGENT);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(timeout) = connect_timeout {
        builder = builder.connect_timeout(timeout);
    }
    builder.build()
}
