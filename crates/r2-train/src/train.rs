//! Fitting a router: per model one ridge head per limited budget on the score, one on the
//! unlimited score and one on the unlimited output tokens, all over the same training queries, so
//! one factored Gram matrix serves every head.

use r2_checkpoints::{RouterFile, StoredModel};

use crate::data::Dataset;
use crate::ridge::{RidgeError, RidgeFit, RidgeSystem};

/// How to fit.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Ridge regularisation strength (scikit-learn's `alpha`).
    pub alpha: f64,
    /// Threads for the large matrix products.
    pub threads: usize,
    /// The embedding model, recorded in the router file.
    pub embedding_model: Option<String>,
    /// Provenance, recorded in the router file.
    pub source: Option<String>,
}

/// A fitted router.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The router file, float32 weights as stored.
    pub file: RouterFile,
    /// The float64 fit, heads in router order (model-major; per model budgets ascending, unlimited
    /// score, unlimited tokens).
    pub fit: RidgeFit,
    /// Number of training queries.
    pub samples: usize,
}

/// The head targets of `data`, head-major, in router order.
pub fn targets(data: &Dataset) -> Vec<f64> {
    let n = data.queries.len();
    let b = data.budgets.len();
    let heads = data.models.len() * (b + 2);
    let mut y = Vec::with_capacity(heads * n);
    for m in 0..data.models.len() {
        for slot in 0..=b {
            y.extend((0..n).map(|q| data.scores[data.cell(q, m, slot)]));
        }
        y.extend((0..n).map(|q| data.tokens[data.cell(q, m, b)]));
    }
    y
}

/// Fits every head of every model of `data` (whose embeddings it takes over).
pub fn train(mut data: Dataset, options: &TrainOptions) -> Result<Trained, RidgeError> {
    let n = data.queries.len();
    let dim = data.dim;
    let y = targets(&data);
    let heads = data.models.len() * (data.budgets.len() + 2);
    let x = std::mem::take(&mut data.embeddings);
    let system = RidgeSystem::new(x, n, dim, options.alpha, options.threads)?;
    let fit = system.solve(&y, heads)?;
    drop(system);
    let rows = data.budgets.len() + 2;
    let models = data
        .models
        .iter()
        .enumerate()
        .map(|(m, name)| StoredModel {
            name: name.clone(),
            coef: fit.coef[m * rows * dim..(m + 1) * rows * dim]
                .iter()
                .map(|&w| w as f32)
                .collect(),
            intercept: fit.intercept[m * rows..(m + 1) * rows]
                .iter()
                .map(|&b| b as f32)
                .collect(),
        })
        .collect();
    Ok(Trained {
        file: RouterFile {
            dim,
            budgets: data.budgets.clone(),
            embedding_model: options.embedding_model.clone(),
            source: options.source.clone(),
            models,
        },
        fit,
        samples: n,
    })
}
