//! Sending: the one retry loop every call goes through, the POST, and reading a whole answer.

use r2_http::{BoxFuture, RateLimits, RetryPolicy, StopReason};
use reqwest::header;
use serde::Serialize;

use crate::{Error, LlmClient, Result};

/// Why one attempt failed, and whether trying again may help.
pub(crate) type Failure = r2_http::Failure<Error>;

impl LlmClient {
    /// The retry policy of [`crate::LlmOptions`]: 429 (honouring `Retry-After` up to
    /// `max_retry_after`), 5xx and connection errors.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.options.max_retries,
            initial_backoff: self.options.initial_backoff,
            max_backoff: RetryPolicy::DEFAULT_MAX_BACKOFF,
            rate_limits: RateLimits::Honour {
                max_wait: self.options.max_retry_after,
            },
        }
    }

    /// Runs `attempt` (given `ctx` and the attempt's number) under the retry policy: the loop of
    /// every call. A retried error that is given up on says how many attempts were made, and why
    /// no more were.
    pub(crate) async fn with_retries<C: ?Sized, T>(
        &self,
        ctx: &mut C,
        attempt: impl for<'c> FnMut(&'c mut C, u32) -> BoxFuture<'c, std::result::Result<T, Failure>>,
    ) -> Result<T> {
        self.retry_policy()
            .run(ctx, attempt)
            .await
            .map_err(|stopped| match stopped.reason {
                StopReason::Final => stopped.error,
                StopReason::OutOfRetries => gave_up(stopped.error, stopped.attempts, None),
                // The error names the wait itself (its `retry_after`).
                StopReason::WaitTooLong { limit } => gave_up(
                    stopped.error,
                    stopped.attempts,
                    Some(format!(
                        "not waited for: longer than max_retry_after, {limit:?}"
                    )),
                ),
            })
    }

    /// A plain request, retried: `body` is sent and the body of a successful answer `parse`d.
    pub(crate) async fn post_with_retries<T>(
        &self,
        body: &(impl Serialize + Sync),
        parse: fn(&Self, &[u8]) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let mut body = body;
        self.with_retries(&mut body, |body, _| {
            let body = *body;
            Box::pin(async move { parse(self, &self.post_once(body).await?) })
        })
        .await
    }

    /// The POST of `body`, with the key when there is one.
    fn post(&self, body: &impl Serialize) -> reqwest::RequestBuilder {
        let builder = self.http.post(&self.url).json(body);
        match &self.authorization {
            Some(value) => builder.header(header::AUTHORIZATION, value.clone()),
            None => builder,
        }
    }

    /// Sends one plain request and returns the body of a successful answer.
    pub(crate) async fn post_once(
        &self,
        body: &(impl Serialize + Sync),
    ) -> std::result::Result<Vec<u8>, Failure> {
        let response = self
            .post(body)
            .timeout(self.options.timeout)
            .send()
            .await
            .map_err(|e| self.transport_failure(&e))?;
        let response = self.check_status(response).await?;
        // The request's timeout covers the body too.
        r2_http::read_limited(response, self.options.max_answer_bytes)
            .await
            .map_err(|e| self.body_failure(e))
    }

    /// Sends a streaming request and waits (at most the timeout) for a successful status; the
    /// body is left to the caller, which reads it chunk by chunk.
    pub(crate) async fn open_stream(
        &self,
        body: &(impl Serialize + Sync),
    ) -> std::result::Result<reqwest::Response, Failure> {
        let response =
            match tokio::time::timeout(self.options.timeout, self.post(body).send()).await {
                Err(_) => return Err(Failure::Final(self.timeout_error())),
                Ok(Err(e)) => return Err(self.transport_failure(&e)),
                Ok(Ok(response)) => response,
            };
        self.check_status(response).await
    }

    /// The whole body of a successful answer to a stream request (a provider that answers in one
    /// piece), within the timeout and [`crate::LlmOptions::max_answer_bytes`].
    pub(crate) async fn read_answer(
        &self,
        response: reqwest::Response,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let limit = self.options.max_answer_bytes;
        match tokio::time::timeout(self.options.timeout, r2_http::read_limited(response, limit))
            .await
        {
            Err(_) => Err(Failure::Final(self.timeout_error())),
            Ok(read) => read.map_err(|e| self.body_failure(e)),
        }
    }
}

/// The `Content-Type` of an answer.
pub(crate) fn content_type(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Whether a content type is JSON (a provider that answered a stream request in one piece).
pub(crate) fn is_json_type(content_type: &str) -> bool {
    content_type.trim_start().starts_with("application/json")
}

/// Records in a retried error how many attempts were made, and why no more were.
fn gave_up(error: Error, attempts: u32, note: Option<String>) -> Error {
    let with_note = |text: String| match &note {
        Some(note) => format!("{text} ({note})"),
        None => text,
    };
    match error {
        Error::RateLimited {
            url,
            retry_after,
            message,
            ..
        } => Error::RateLimited {
            url,
            attempts,
            retry_after,
            message: with_note(message),
        },
        Error::Server {
            url,
            status,
            retry_after,
            message,
            ..
        } => Error::Server {
            url,
            status,
            attempts,
            retry_after,
            message: with_note(message),
        },
        Error::Unreachable { url, reason, .. } => Error::Unreachable {
            url,
            attempts,
            reason: with_note(reason),
        },
        Error::StreamInterrupted {
            url,
            received_chars,
            partial,
            reason,
        } if attempts > 1 => Error::StreamInterrupted {
            url,
            received_chars,
            partial,
            reason: with_note(format!("{reason}; gave up after {attempts} attempts")),
        },
        other => other,
    }
}
