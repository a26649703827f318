//! [`BatchOptions`]: how the in-process embedder (feature `local`) batches concurrent calls. Not
//! behind the feature, so that front-ends can carry the settings whichever backends are built.

/// The default of [`BatchOptions::max_batch_tokens`].
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 8192;

/// The default of [`BatchOptions::max_queued`].
pub const DEFAULT_MAX_QUEUED: usize = 1024;

/// How the in-process embedder batches concurrent calls (see the documentation of module
/// `r2_embed::local`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Tokens per batch at most (default [`DEFAULT_MAX_BATCH_TOKENS`], 8192): a batch takes
    /// waiting calls while the sum of their token counts stays within it, and each forward pass
    /// holds at most this many tokens, padding included. A call or a text longer than this still
    /// runs, alone. 0 runs every call alone and every text of a call in its own forward pass.
    pub max_batch_tokens: usize,
    /// Texts waiting for a forward pass at most (default [`DEFAULT_MAX_QUEUED`], 1024); a call
    /// that would take the queue past it gets [`Error::Overloaded`](crate::Error::Overloaded),
    /// unless nothing waits.
    pub max_queued: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}
