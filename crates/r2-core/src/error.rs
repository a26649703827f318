use crate::{Budget, HeadKind};

/// The result type of every fallible function in `r2-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong when building a router or routing a query.
///
/// The core cannot fail except on bad shapes or bad values: every variant names the value that was
/// wrong, where it was (model, head, query index, position) and, where it helps, what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A router needs at least one model.
    #[error("the model pool is empty: a router needs at least one model")]
    EmptyPool,

    /// The embedding dimension must be positive.
    #[error("embedding dimension must be at least 1, got 0")]
    ZeroDimension,

    /// Budgets must be positive and strictly ascending.
    #[error("token budgets must be positive and strictly ascending, got {got:?}")]
    InvalidBudgets { got: Vec<u32> },

    /// Two models in the pool share a name.
    #[error("model `{name}` appears twice in the pool: model names must be unique")]
    DuplicateModel { name: String },

    /// A model's head weights do not have the shape the router expects.
    #[error("model `{model}`: {what} has {got} values, expected {expected}")]
    HeadShape {
        model: String,
        what: &'static str,
        expected: usize,
        got: usize,
    },

    /// A weight, intercept or price is NaN or infinite.
    #[error("model `{model}`: {what} is not finite ({value})")]
    NonFiniteParameter {
        model: String,
        what: String,
        value: f64,
    },

    /// A price is negative.
    #[error("model `{model}`: {what} must be ≥ 0, got {value}")]
    NegativePrice {
        model: String,
        what: &'static str,
        value: f64,
    },

    /// An embedding has the wrong number of values.
    #[error("query {query}: embedding has {got} values, the router expects {expected}")]
    DimensionMismatch {
        query: usize,
        expected: usize,
        got: usize,
    },

    /// A batch buffer is not a whole number of embeddings, or its token list has another length.
    #[error(
        "batch shape: {values} embedding values and {input_tokens} input-token counts do not \
         make whole {dim}-dimensional embeddings, one count each"
    )]
    BatchShape {
        values: usize,
        input_tokens: usize,
        dim: usize,
    },

    /// An embedding holds NaN or an infinity.
    #[error("query {query}: embedding value {position} is not finite ({value})")]
    NonFiniteEmbedding {
        query: usize,
        position: usize,
        value: f64,
    },

    /// A head's output is NaN or infinite for this embedding (its values are far outside what the
    /// heads were trained on, e.g. not a unit-norm embedding).
    #[error(
        "query {query}: the {head} head of model `{model}` predicts {value} for this embedding: \
         its values are far outside what the router was trained on (a unit-norm embedding of the \
         router's embedding model is expected)"
    )]
    NonFinitePrediction {
        query: usize,
        model: String,
        head: HeadKind,
        value: f64,
    },

    /// λ must lie in [0, 1].
    #[error("lambda must be a number in [0, 1], got {got}")]
    InvalidLambda { got: f64 },

    /// The maximum cost must be a finite, non-negative number of USD.
    #[error("max cost must be a finite number of USD ≥ 0, got {got}")]
    InvalidMaxCost { got: f64 },

    /// A model name is not in the pool.
    #[error("unknown model `{name}`; the pool has: {}", known.join(", "))]
    UnknownModel { name: String, known: Vec<String> },

    /// The candidate filter leaves no model to route to.
    #[error("no candidate models: the model filter selects none of the pool")]
    NoCandidates,

    /// Every option costs more than the caller's maximum.
    #[error(
        "query {query}: no (model, budget) option costs at most {max_cost} USD; the cheapest \
         is {cheapest_model} at budget {cheapest_budget} for {cheapest_cost} USD: raise the \
         maximum cost or lower the input tokens"
    )]
    NothingWithinMaxCost {
        query: usize,
        max_cost: f64,
        cheapest_model: String,
        cheapest_budget: Budget,
        cheapest_cost: f64,
    },
}

impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        use crate::ErrorClass::{Internal, InvalidInput};
        match self {
            // A router that cannot be built is a checkpoint problem of whoever built it.
            Error::EmptyPool
            | Error::ZeroDimension
            | Error::InvalidBudgets { .. }
            | Error::DuplicateModel { .. }
            | Error::HeadShape { .. }
            | Error::NonFiniteParameter { .. }
            | Error::NegativePrice { .. } => Internal,
            Error::DimensionMismatch { .. }
            | Error::BatchShape { .. }
            | Error::NonFiniteEmbedding { .. }
            | Error::NonFinitePrediction { .. }
            | Error::InvalidLambda { .. }
            | Error::InvalidMaxCost { .. }
            | Error::UnknownModel { .. }
            | Error::NoCandidates
            | Error::NothingWithinMaxCost { .. } => InvalidInput,
        }
    }
}
