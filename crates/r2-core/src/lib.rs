//! The routing core of r2, a Rust implementation of R2-Router.
//!
//! R2-Router predicts, for every (LLM, output-token budget) pair, how good the answer to a query
//! will be, and picks the pair that maximises `risk = (1 − λ)·quality − λ·cost`. Each model has one
//! Ridge quality head per budget, one quality head without a budget ("unlimited") and one head that
//! predicts the output tokens of the unlimited answer. All heads of all models are stacked in one
//! matrix, so one query costs one matrix–vector product and a batch one matrix–matrix product.
//!
//! Architecture invariant: `r2-core` does no I/O and knows nothing of HTTP, candle or JSON (its
//! [`IoError`] only describes a failed file operation of the crates that do I/O).
//! It has no async and no global state; it cannot fail except on bad shapes or bad values, and then
//! returns an [`Error`] instead of panicking. Loading checkpoints lives in `r2-checkpoints`.
//!
//! # Example
//!
//! ```
//! use r2_core::{Budget, ModelHeads, RouteParams, Router};
//!
//! // Two models over 2-d embeddings and one limited budget of 100 tokens. Each model has
//! // budgets + 2 heads: quality at 100 tokens, unlimited quality, unlimited output tokens.
//! let strong = ModelHeads {
//!     name: "strong".into(),
//!     input_price_per_million: 1.0,
//!     output_price_per_million: 10.0,
//!     coef: vec![0.5, 0.0, 0.6, 0.0, 0.0, 0.0],
//!     intercept: vec![0.3, 0.35, 800.0],
//! };
//! let weak = ModelHeads {
//!     name: "weak".into(),
//!     input_price_per_million: 0.1,
//!     output_price_per_million: 0.1,
//!     coef: vec![0.1, 0.0, 0.1, 0.0, 0.0, 0.0],
//!     intercept: vec![0.2, 0.25, 300.0],
//! };
//! let router = Router::new(2, vec![100], vec![strong, weak])?;
//!
//! // λ = 0: quality only; the strong model without a budget predicts 0.35 + 0.6 = 0.95.
//! let decision = router.route(&[1.0, 0.0], 50, &RouteParams::new(0.0))?;
//! assert_eq!(router.models()[decision.choice.model].name, "strong");
//! assert_eq!(decision.choice.budget, Budget::Unlimited);
//!
//! // λ = 1: cost only; the weak model at 100 tokens is the cheapest option.
//! let decision = router.route(&[1.0, 0.0], 50, &RouteParams::new(1.0))?;
//! assert_eq!(router.models()[decision.choice.model].name, "weak");
//! assert_eq!(decision.choice.budget, Budget::Tokens(100));
//! # Ok::<(), r2_core::Error>(())
//! ```

mod budget;
mod class;
mod error;
mod kernel;
mod router;

pub use budget::Budget;
pub use class::{Classify, ErrorClass, IoError};
pub use error::{Error, Result};
pub use router::{
    BudgetGrid, BudgetPoint, Decision, HeadKind, ModelHeads, ModelInfo, ModelMask, RouteOption,
    RouteParams, Router,
};

/// The token budgets of the released R2-Router checkpoints, ascending.
pub const UPSTREAM_BUDGETS: [u32; 15] = [
    10, 20, 30, 40, 50, 80, 100, 150, 200, 300, 500, 800, 1200, 2000, 4000,
];

/// Upstream's estimate of a query's input tokens: `max(1, int(len(text.split()) * 1.3))`.
///
/// Words are split as Python's `str.split()` does: on runs of Unicode whitespace, including the
/// ASCII separators `\x1c`–`\x1f` that Rust's `char::is_whitespace` leaves out.
pub fn estimate_input_tokens(text: &str) -> u64 {
    let words = text
        .split(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
        .filter(|w| !w.is_empty())
        .count();
    // Python multiplies in float64 and truncates toward zero; so does this cast.
    ((words as f64 * 1.3) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_tokens_split_like_python() {
        assert_eq!(estimate_input_tokens(""), 1);
        assert_eq!(estimate_input_tokens("   "), 1);
        assert_eq!(estimate_input_tokens("a b c d e f g h i j"), 13);
        assert_eq!(estimate_input_tokens("tabs\tand\nnewlines  here"), 5);
        assert_eq!(estimate_input_tokens("a\x1fb"), 2);
    }
}
