use std::path::PathBuf;
use std::time::Duration;

/// The result type of `r2-embed`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong when embedding queries.
///
/// Each variant says what was wrong, where (URL, file, text index) and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
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
}
