//! Training and evaluating R2-Router routers.
//!
//! - [`data`]: the JSONL training/evaluation format and its reader (errors name file and line).
//! - [`ridge`]: closed-form ridge regression with intercept, as scikit-learn's `Ridge` computes it.
//! - [`train()`]: per model one head per limited budget, one on the unlimited score, one on the
//!   unlimited output tokens; the result is the same safetensors router file the converter writes.
//! - [`eval`] and [`metrics`]: deferral curves, AUDC, QNC and peak quality for the R2 router, the
//!   router with interpolated budgets, a point-based router, the two oracles (unlimited answers
//!   only; every budget) and each single model.
//! - [`paper`]: the paper's AUDC, QNC and peak, as upstream's `compare_methods.py` computes them
//!   (the λ-points themselves, cost normalised by one global range over every router curve).
//! - [`experiment`]: the paper's protocol: per seed a random train/test split, train, evaluate;
//!   mean ± std over the seeds.
//! - [`plot`]: the curves as SVG.
//! - [`synth`]: a deterministic generator of data with known structure.
//!
//! Architecture invariant: the numerics ([`ridge`], [`metrics`], [`paper`], [`eval`],
//! [`experiment`]) are pure functions of
//! their inputs; files are read in [`data`] and written by [`plot`], [`synth`] and the caller
//! (the router file via `r2_checkpoints::RouterFile::write`). Routing decisions come from
//! `r2-core` and nowhere else.

pub mod data;
pub mod eval;
pub mod experiment;
pub mod metrics;
pub mod paper;
pub mod plot;
pub mod ridge;
pub mod synth;
mod train;

pub use data::{load, Dataset, LoadOptions, SplitFilter};
pub use eval::{evaluate, EvalOptions, EvalReport};
pub use experiment::{run_experiment, ExperimentOptions, ExperimentReport};
pub use train::{targets, train, TrainOptions, Trained};
