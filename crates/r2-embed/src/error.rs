use std::path::PathBuf;
use std::time::Duration;

/// The result type of `r2-embed`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong when embedding queries.
///
/// Each variant says what was wrong, where (URL, file, text index) and, where it helps, what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A text to embed is empty: it has no last token to pool.
    #[error("text {index} is empty: an embedding needs at least one token")]
    EmptyText { index: usize },

    /// A text has more tokens than the model accepts; nothing is truncated silently.
    #[error("text {index} has {tokens} tokens, more than the {max} the model accepts (max_position_embeddings); shorten the text")]
    TooLong {
        index: usize,
        tokens: usize,
        max: usize,
    },

    /// The embedding server's address is not a usable URL.
    #[error("`{url}` is not a usable embeddings server URL: {reason} (expected e.g. http://localhost:8000)")]
    InvalidUrl { url: String, reason: String },

    /// The embedding server could not be reached.
    #[error(
        "cannot reach the embedding server at {url}: {reason}. Start one with \
         `vllm serve Qwen/Qwen3-0.6B --runner pooling --port 8000` and pass --embed-url \
         http://localhost:8000, or drop --embed-url to embed in-process"
    )]
    Unreachable { url: String, reason: String },

    /// The server answered with an error status.
    #[error("the embedding server at {url} answered HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },

    /// The server's answer is not the OpenAI embeddings shape.
    #[error("malformed answer from the embedding server at {url}: {reason}")]
    Malformed { url: String, reason: String },

    /// The server's answer is larger than any honest answer to the request could be: more than
    /// `limit` bytes (`VllmEmbedder::answer_limit(texts, dim)`: 64 bytes per value, 1 KiB per
    /// text, 1 MiB in all). Reading stopped as soon as the limit was passed; not retried.
    #[error(
        "the embedding server at {url} sent an answer larger than {limit} bytes for {texts} \
         texts of {dim} values (at most 64 bytes per value, 1 KiB per text and 1 MiB more are \
         accepted); reading stopped there. Is it an OpenAI-compatible embeddings server for a \
         {dim}-d model?"
    )]
    AnswerTooLarge {
        url: String,
        /// The limit, in bytes.
        limit: usize,
        /// Texts in the request.
        texts: usize,
        /// Values expected per embedding.
        dim: usize,
    },

    /// No answer within the timeout.
    #[error("the embedding server at {url} did not answer within {timeout:?}; raise the timeout or check the server")]
    Timeout { url: String, timeout: Duration },

    /// An embedding has another length than expected.
    #[error("{source_name}: embedding {index} has {got} values, expected {expected}")]
    WrongDimension {
        source_name: String,
        index: usize,
        expected: usize,
        got: usize,
    },

    /// An embedding holds NaN or an infinity.
    #[error("{source_name}: embedding {index} has a non-finite value at position {position}")]
    NonFinite {
        source_name: String,
        index: usize,
        position: usize,
    },

    /// A model file could not be read or is not what a Qwen3 checkpoint holds.
    #[error("{}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },

    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The model could not be fetched from the Hugging Face Hub.
    #[error("cannot fetch {repo}/{file} from the Hugging Face Hub: {reason}")]
    Download {
        repo: String,
        file: String,
        reason: String,
    },

    /// The in-process model's worker thread is gone (it panicked or was shut down).
    #[error("the embedding worker thread stopped: {0}")]
    Worker(String),

    /// The in-process model's queue is full: `queued` texts are waiting for a forward pass and
    /// the request would take the queue past `limit` (`BatchOptions::max_queued`). Nothing was
    /// done; retry shortly.
    #[error(
        "the in-process embedder is overloaded: {queued} texts are already waiting, the queue \
         holds at most {limit}; retry shortly"
    )]
    Overloaded {
        /// Texts waiting when the request arrived.
        queued: usize,
        /// The queue's limit, in texts.
        limit: usize,
    },
}

/// The class of each error, as `r2-serve` answers it: everything the embedding server does
/// wrong (an error status of any kind, no connection, an answer of the wrong shape, size,
/// dimension or values) is [`UpstreamFailure`](r2_core::ErrorClass) (502); the in-process model's
/// failures while embedding are internal.
impl r2_core::Classify for Error {
    fn class(&self) -> r2_core::ErrorClass {
        use r2_core::ErrorClass::{
            Internal, InvalidInput, Overloaded, Unavailable, UpstreamFailure, UpstreamTimeout,
        };
        match self {
            Error::EmptyText { .. } | Error::TooLong { .. } => InvalidInput,
            // The server's address is the caller's setting.
            Error::InvalidUrl { .. } => InvalidInput,
            Error::Unreachable { .. }
            | Error::Status { .. }
            | Error::Malformed { .. }
            | Error::AnswerTooLarge { .. }
            | Error::WrongDimension { .. }
            | Error::NonFinite { .. } => UpstreamFailure,
            Error::Timeout { .. } => UpstreamTimeout,
            // A model that is neither cached nor downloadable here (offline, the Hub unreachable,
            // no cache folder).
            Error::Download { .. } => Unavailable,
            // A model folder that does not hold a usable model, or a forward pass that failed;
            // the tokenizer failing on a text; the worker thread gone.
            Error::Model { .. } | Error::Tokenizer(_) | Error::Worker(_) => Internal,
            // The in-process model's own capacity, not a server r2 depends on.
            Error::Overloaded { .. } => Overloaded,
        }
    }

    /// What a gateway's client is told: what went wrong with its text or the embedding server,
    /// without the operator's URL, paths or command-line hints.
    fn client_message(&self) -> String {
        match self {
            Error::EmptyText { .. } => "the text to route is empty".to_owned(),
            Error::TooLong { tokens, max, .. } => format!(
                "the text to route has {tokens} tokens, more than the {max} the embedding model \
                 accepts"
            ),
            Error::Timeout { timeout, .. } => {
                format!("the embedding server did not answer within {timeout:?}")
            }
            Error::Status {
                status, message, ..
            } => format!("the embedding server answered HTTP {status}: {message}"),
            Error::Unreachable { .. } => "cannot reach the embedding server".to_owned(),
            Error::Malformed { reason, .. } => {
                format!("malformed answer from the embedding server: {reason}")
            }
            Error::WrongDimension { expected, got, .. } => format!(
                "the embedding server gave a {got}-d vector, the router expects {expected}-d"
            ),
            Error::NonFinite { .. } => {
                "the embedding server gave a vector with a non-finite value".to_owned()
            }
            Error::AnswerTooLarge { .. } => "the embedding server's answer is larger than any \
                                             answer to the request could be"
                .to_owned(),
            Error::Overloaded { .. } => {
                "the server is at its limit of texts waiting to be embedded: retry shortly"
                    .to_owned()
            }
            Error::InvalidUrl { .. }
            | Error::Model { .. }
            | Error::Tokenizer(_)
            | Error::Download { .. }
            | Error::Worker(_) => "the embedder failed (see the server's log)".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2_core::{Classify, ErrorClass};

    #[test]
    fn classes_follow_the_statuses_the_gateway_answers() {
        let url = || "http://127.0.0.1:8000/v1/embeddings".to_owned();
        let cases = [
            (Error::EmptyText { index: 0 }, ErrorClass::InvalidInput),
            (
                Error::Status {
                    url: url(),
                    status: 404,
                    message: "no model".into(),
                },
                ErrorClass::UpstreamFailure,
            ),
            (
                Error::Timeout {
                    url: url(),
                    timeout: Duration::from_secs(1),
                },
                ErrorClass::UpstreamTimeout,
            ),
            (
                Error::Unreachable {
                    url: url(),
                    reason: "refused".into(),
                },
                ErrorClass::UpstreamFailure,
            ),
            (Error::Worker("gone".into()), ErrorClass::Internal),
            (
                Error::Overloaded {
                    queued: 3,
                    limit: 4,
                },
                ErrorClass::Overloaded,
            ),
        ];
        for (error, class) in cases {
            assert_eq!(error.class(), class, "{error:?}");
            let message = error.client_message();
            assert!(!message.contains("127.0.0.1"), "{message}");
            assert!(!message.contains("--embed-url"), "{message}");
        }
    }
}
