//! Query embeddings for r2.
//!
//! R2-Router's heads were trained on what `vllm serve Qwen/Qwen3-0.6B --runner pooling` returns from
//! `/v1/embeddings`: the final-norm hidden state of the last token, L2-normalised, 1024-d. This crate
//! has one small trait, [`Embedder`], and two backends behind features:
//!
//! - `http` (default): `VllmEmbedder`, a client of any OpenAI-compatible `/v1/embeddings` server.
//!   Answers are bounded by `VllmEmbedder::answer_limit(texts, dim)` bytes (1 MiB + texts × (dim ×
//!   64 + 1024)); past it the call fails with `Error::AnswerTooLarge` without reading the rest.
//! - `local`: `LocalQwen3Embedder`, Qwen3 run in-process with candle on the CPU; concurrent calls
//!   share forward passes (`BatchOptions`), and a full queue is `Error::Overloaded`.
//!
//! Architecture invariant: this crate turns texts into vectors and nothing else: it knows nothing of
//! routing, checkpoints of the router, or the command line. Backends return plain `Vec<f32>`s.

mod batch;
mod error;
#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "http")]
mod vllm;

pub use batch::{BatchOptions, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_QUEUED};
pub use error::{Error, Result};
#[cfg(feature = "local")]
pub use local::LocalQwen3Embedder;
#[cfg(feature = "http")]
pub use vllm::{VllmEmbedder, VllmOptions};

/// The embedding model R2-Router's checkpoints were trained on.
pub const QWEN3_0_6B: &str = "Qwen/Qwen3-0.6B";

/// Turns texts into embeddings.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// One embedding per text, in input order. Empty texts are an error ([`Error::EmptyText`]).
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;

    /// Length of the embeddings.
    fn dim(&self) -> usize;

    /// The name of the embedding model (e.g. `Qwen/Qwen3-0.6B`).
    fn model_name(&self) -> &str;
}

/// Rejects empty texts before any work is done.
pub fn check_texts(texts: &[String]) -> Result<()> {
    match texts.iter().position(|t| t.is_empty()) {
        Some(index) => Err(Error::EmptyText { index }),
        None => Ok(()),
    }
}

/// Checks the length and finiteness of embeddings from `source_name`.
pub fn check_embeddings(source_name: &str, embeddings: &[Vec<f32>], dim: usize) -> Result<()> {
    for (index, e) in embeddings.iter().enumerate() {
        if e.len() != dim {
            return Err(Error::WrongDimension {
                source_name: source_name.to_owned(),
                index,
                expected: dim,
                got: e.len(),
            });
        }
        if let Some(position) = e.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                source_name: source_name.to_owned(),
                index,
                position,
            });
        }
    }
    Ok(())
}
