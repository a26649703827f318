//! How answers and failures become an [`Error`]: error statuses and their bodies, `error` objects
//! inside answers, broken connections; and keeping the key out of every text that is kept.

use std::time::Duration;

use serde_json::Value;

use crate::client::{MAX_ERROR_BODY_BYTES, MAX_MESSAGE_CHARS, MAX_SNIPPET_CHARS};
use crate::sse::TooLarge;
use crate::transport::Failure;
use crate::{Error, LlmClient};

impl LlmClient {
    /// Passes a successful answer through; turns an error answer into its [`Failure`].
    pub(crate) async fn check_status(
        &self,
        response: reqwest::Response,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = self.retry_policy().retry_after(response.headers());
        // The status alone decides what happens next, so an error body that cannot be read (in
        // time) is treated as empty.
        let body = tokio::time::timeout(
            self.options.timeout,
            r2_http::read_prefix(response, MAX_ERROR_BODY_BYTES),
        )
        .await
        .unwrap_or_default();
        let message = self.status_message(&body, status.canonical_reason());
        Err(self.classify(status.as_u16(), message, retry_after))
    }

    /// The error of an answer with `status` (or an `error` object with that code); whether it is
    /// retried is the retry policy's rule (429 and 5xx).
    fn classify(&self, status: u16, message: String, retry_after: Option<Duration>) -> Failure {
        let url = self.url.clone();
        let error = match status {
            401 | 403 => Error::Unauthorized {
                url,
                status,
                message,
                key_given: self.key.is_some(),
            },
            402 => Error::PaymentRequired { url, message },
            429 => Error::RateLimited {
                url,
                attempts: 1,
                retry_after,
                message,
            },
            500..=599 => Error::Server {
                url,
                status,
                attempts: 1,
                retry_after,
                message,
            },
            _ => Error::Status {
                url,
                status,
                message,
            },
        };
        self.retry_policy()
            .status_failure(status, retry_after, error)
    }

    /// The error of an `error` object inside a successful answer or a stream event: classified by
    /// its numeric `code` when that is an HTTP status, else [`Error::Status`] with `http_status`.
    pub(crate) fn in_band_error(&self, error: &Value, http_status: u16) -> Failure {
        let code = error.get("code");
        let status = code
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..=599).contains(c));
        let mut message = self.error_object_message(error);
        if status.is_none() {
            if let Some(code) = code.filter(|c| !c.is_null()) {
                let code = code
                    .as_str()
                    .map_or_else(|| code.to_string(), str::to_owned);
                message = format!("{message} (code {code})");
            }
        }
        let message = format!("error inside the answer: {message}");
        match status {
            Some(status) => self.classify(status, message, None),
            None => Failure::Final(Error::Status {
                url: self.url.clone(),
                status: http_status,
                message,
            }),
        }
    }

    /// Classifies an error of reqwest: timeouts are final, everything else is a connection error.
    pub(crate) fn transport_failure(&self, e: &reqwest::Error) -> Failure {
        Failure::of_transport(
            e,
            || self.timeout_error(),
            || Error::Unreachable {
                url: self.url.clone(),
                attempts: 1,
                reason: self.redact(r2_http::source_chain(e)),
            },
        )
    }

    /// A whole answer that could not be read: too large (final), or a broken connection.
    pub(crate) fn body_failure(&self, e: r2_http::Error) -> Failure {
        match e {
            r2_http::Error::TooLarge { limit } => {
                Failure::Final(self.too_large_error("an answer", limit))
            }
            r2_http::Error::Transport(e) => self.transport_failure(&e),
        }
    }

    pub(crate) fn malformed(&self, reason: String) -> Error {
        Error::Malformed {
            url: self.url.clone(),
            reason,
        }
    }

    pub(crate) fn too_large_error(&self, what: &'static str, limit: usize) -> Error {
        Error::TooLarge {
            url: self.url.clone(),
            what,
            limit,
        }
    }

    /// A stream line or event over [`crate::LlmOptions::max_event_bytes`].
    pub(crate) fn too_large(&self, e: TooLarge) -> Failure {
        Failure::Final(self.too_large_error(e.0, self.options.max_event_bytes))
    }

    pub(crate) fn timeout_error(&self) -> Error {
        Error::Timeout {
            url: self.url.clone(),
            timeout: self.options.timeout,
        }
    }

    /// The message of an error answer: `error.message` (with OpenRouter's `error.metadata.raw`),
    /// `error`, `message` or `detail` of a JSON body, else the body text, else the status's
    /// reason phrase; at most [`MAX_MESSAGE_CHARS`] characters, the key redacted.
    fn status_message(&self, body: &[u8], reason_phrase: Option<&str>) -> String {
        let message = r2_http::error_message(body, reason_phrase, |json| match json.get("error") {
            Some(error) if error.is_object() => Some(self.error_object_message(error)),
            _ => [json.get("error"), json.get("message"), json.get("detail")]
                .into_iter()
                .flatten()
                .find(|v| !v.is_null())
                .map(r2_http::json_text),
        });
        r2_http::truncate(self.redact(message).trim(), MAX_MESSAGE_CHARS)
    }

    /// `message` of an OpenAI/OpenRouter `error` object, with the upstream provider's own error
    /// (`metadata.raw`, `metadata.provider_name`) when OpenRouter passes one on.
    fn error_object_message(&self, error: &Value) -> String {
        let mut message = match error.get("message") {
            Some(m) if !m.is_null() => r2_http::json_text(m),
            _ => r2_http::json_text(error),
        };
        if let Some(raw) = error.pointer("/metadata/raw").filter(|r| !r.is_null()) {
            let provider = error
                .pointer("/metadata/provider_name")
                .and_then(Value::as_str)
                .unwrap_or("the provider");
            message = format!(
                "{message} ({provider} said: {})",
                r2_http::truncate(&self.redact(r2_http::json_text(raw)), MAX_MESSAGE_CHARS)
            );
        }
        r2_http::truncate(&self.redact(message), MAX_MESSAGE_CHARS)
    }

    /// The first characters of a body, the key redacted.
    pub(crate) fn excerpt(&self, body: &[u8]) -> String {
        // Read the key's length more bytes than are quoted, so that a key across the cut is
        // still whole when it is redacted.
        let key_len = self.key.as_ref().map_or(0, |k| k.secret().len());
        r2_http::excerpt(body, MAX_SNIPPET_CHARS, key_len, |head| self.redact(head))
    }

    /// `text` with every occurrence of the API key, in any letter case, replaced by `***`
    /// (providers may echo it, even upper-cased).
    pub(crate) fn redact(&self, text: String) -> String {
        match &self.key {
            Some(key) => redact_key(text, key.secret()),
            None => text,
        }
    }
}

/// `text` with every occurrence of `key`, compared without regard to ASCII letter case, replaced
/// by `***`. Keys are visible ASCII (they go into a header), so the byte offsets of the
/// lower-cased text are those of `text`.
fn redact_key(text: String, key: &str) -> String {
    if key.is_empty() || text.len() < key.len() {
        return text;
    }
    let lower = text.to_ascii_lowercase();
    let needle = key.to_ascii_lowercase();
    let mut out = String::new();
    let mut last = 0;
    for (start, _) in lower.match_indices(&needle) {
        if !text.is_char_boundary(start) || !text.is_char_boundary(start + needle.len()) {
            continue;
        }
        out.push_str(&text[last..start]);
        out.push_str("***");
        last = start + needle.len();
    }
    if last == 0 {
        return text;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_redacted_in_any_letter_case() {
        let key = "sk-or-v1-AbC123";
        for (text, expected) in [
            ("key sk-or-v1-AbC123 here", "key *** here"),
            ("SK-OR-V1-ABC123", "***"),
            ("sk-or-v1-abc123sk-or-v1-ABC123.", "******."),
            ("é sK-oR-v1-aBc123 ü", "é *** ü"),
            ("nothing to see", "nothing to see"),
            ("sk-or-v1-AbC12", "sk-or-v1-AbC12"),
            ("", ""),
        ] {
            assert_eq!(redact_key(text.to_owned(), key), expected, "{text}");
        }
        assert_eq!(redact_key("abc".to_owned(), ""), "abc");
    }
}
