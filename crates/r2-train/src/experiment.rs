//! The paper's protocol in one call: for each seed a random train/test split of the queries, a
//! router trained on the train part ([`crate::train()`], the code of `r2 train`, in memory), an
//! evaluation on the test part ([`crate::evaluate`]), then per method the mean ± standard deviation
//! over the seeds of the paper's AUDC, QNC and peak ([`crate::paper`]) and of r2's envelope AUDC.
//!
//! # The split
//!
//! As upstream's `DatasetManager` (`main/shared/dataset_manager.py`): a random permutation of the
//! queries, the first `⌊n·(1 − test_fraction)⌋` of it for training and the rest for testing. The
//! permutation is a Fisher–Yates shuffle driven by SplitMix64 ([`crate::synth::Rng`]) seeded from
//! the seed, so a seed always gives the same split of the same data (numpy's PCG64 permutation is
//! not reproduced: the split is r2's own). Both parts keep the data's query order. A query's
//! `split` field is ignored.
//!
//! # Mean and standard deviation
//!
//! Over the seeds; the standard deviation is the population one (divided by the number of seeds,
//! numpy's `np.std` default, `ddof = 0`).

use std::path::Path;

use r2_checkpoints::PoolConfig;
use serde::Serialize;

use crate::data::Dataset;
use crate::eval::{BestSingle, CurveKind, EvalError, EvalOptions};
use crate::ridge::RidgeError;
use crate::synth::Rng;
use crate::train::{train, TrainOptions};

/// What can go wrong in an experiment.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("{0}")]
    Invalid(String),
    #[error("seed {seed}: training: {source}")]
    Train { seed: u64, source: RidgeError },
    #[error("seed {seed}: the trained router does not load: {source}")]
    Router {
        seed: u64,
        source: r2_checkpoints::Error,
    },
    #[error("seed {seed}: evaluating: {source}")]
    Eval { seed: u64, source: EvalError },
}

impl r2_core::Classify for ExperimentError {
    fn class(&self) -> r2_core::ErrorClass {
        match self {
            ExperimentError::Invalid(_) => r2_core::ErrorClass::InvalidInput,
            ExperimentError::Train { source, .. } => source.class(),
            ExperimentError::Router { source, .. } => source.class(),
            ExperimentError::Eval { source, .. } => source.class(),
        }
    }
}

/// Default number of seeds.
pub const DEFAULT_SEEDS: usize = 5;
/// Default share of the queries held out for testing (upstream's `train_ratio = 0.8`).
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

/// How to run an experiment.
#[derive(Debug, Clone)]
pub struct ExperimentOptions {
    /// One run per seed, in this order.
    pub seeds: Vec<u64>,
    /// Share of the queries in each run's test part, in (0, 1).
    pub test_fraction: f64,
    /// Ridge regularisation strength (scikit-learn's `alpha`).
    pub alpha: f64,
    /// How each run is evaluated (λ grid, interpolation, QNC target); its `threads` also train.
    pub eval: EvalOptions,
}

impl Default for ExperimentOptions {
    fn default() -> Self {
        Self {
            seeds: (0..DEFAULT_SEEDS as u64).collect(),
            test_fraction: DEFAULT_TEST_FRACTION,
            alpha: 10.0,
            eval: EvalOptions::default(),
        }
    }
}

/// One method's numbers in one run.
#[derive(Debug, Clone, Serialize)]
pub struct MethodNumbers {
    pub name: String,
    pub kind: CurveKind,
    /// The paper's AUDC (global cost normalisation, compare_methods.py).
    pub paper_audc: f64,
    /// The paper's QNC (global cost normalisation; 1.0 when the target is not reached).
    pub paper_qnc: f64,
    /// The highest quality of the routed points.
    pub peak: f64,
    /// r2's envelope AUDC (the deferral curve's mean quality over its own cost range).
    pub audc: f64,
    /// r2's envelope QNC (relative to the best single model's cost; `null`: not reached).
    pub qnc: Option<f64>,
}

/// One seed's run.
#[derive(Debug, Clone, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    pub train_queries: usize,
    pub test_queries: usize,
    /// The best single model of the test part (the paper's QNC target is its quality × rate).
    pub best_single: BestSingle,
    /// The global cost range of the paper's normalisation `[min, max]`, mean USD per query.
    pub paper_cost_range: [f64; 2],
    pub lambda_grid: String,
    /// Every router curve of the evaluation (single models left out), in report order.
    pub methods: Vec<MethodNumbers>,
}

/// Mean and (population) standard deviation over the seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    /// Of `values` (NaN for none).
    pub fn of(values: &[f64]) -> MeanStd {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        MeanStd {
            mean,
            std: var.sqrt(),
        }
    }
}

/// One method over every seed.
#[derive(Debug, Clone, Serialize)]
pub struct MethodSummary {
    pub name: String,
    pub kind: CurveKind,
    pub paper_audc: MeanStd,
    pub paper_qnc: MeanStd,
    pub peak: MeanStd,
    /// r2's envelope AUDC.
    pub audc: MeanStd,
}

/// The whole experiment.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentReport {
    pub data: String,
    pub queries: usize,
    pub models: Vec<String>,
    pub budgets: Vec<u32>,
    pub seeds: Vec<u64>,
    pub test_fraction: f64,
    pub alpha: f64,
    pub interpolate: u32,
    pub qnc_target: f64,
    /// How the standard deviations are computed.
    pub std: String,
    /// Where the paper's formulas come from.
    pub paper_source: String,
    pub runs: Vec<SeedRun>,
    /// Per method (in the runs' order), mean ± std over the seeds.
    pub summary: Vec<MethodSummary>,
}

/// The train and test query indices of `n` queries for `seed`: a seeded permutation, the first
/// `⌊n·(1 − test_fraction)⌋` for training, the rest for testing, each part in ascending order.
pub fn split(
    n: usize,
    seed: u64,
    test_fraction: f64,
) -> Result<(Vec<usize>, Vec<usize>), ExperimentError> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(ExperimentError::Invalid(format!(
            "the test fraction must be between 0 and 1 (exclusive), got {test_fraction}"
        )));
    }
    let train_count = (n as f64 * (1.0 - test_fraction)) as usize;
    if train_count == 0 || train_count >= n {
        return Err(ExperimentError::Invalid(format!(
            "{n} queries with test fraction {test_fraction} leave {train_count} for training and \
             {} for testing: both need at least one (use more queries or another \
             --test-fraction)",
            n.saturating_sub(train_count)
        )));
    }
    let mut rng = Rng::new(seed ^ 0x5B11_7000_0000_0001);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    let mut train_part = order[..train_count].to_vec();
    let mut test_part = order[train_count..].to_vec();
    train_part.sort_unstable();
    test_part.sort_unstable();
    Ok((train_part, test_part))
}

/// Runs the experiment on `data` (every query; its `split` fields are ignored) for the models and
/// prices of `pool`. `on_seed` is told each run as it finishes.
pub fn run_experiment(
    data: &Dataset,
    pool: &PoolConfig,
    options: &ExperimentOptions,
    on_seed: &mut dyn FnMut(&SeedRun),
) -> Result<ExperimentReport, ExperimentError> {
    if options.seeds.is_empty() {
        return Err(ExperimentError::Invalid(
            "no seed to run: give at least one".into(),
        ));
    }
    if !(options.alpha.is_finite() && options.alpha >= 0.0) {
        return Err(ExperimentError::Invalid(format!(
            "alpha must be a finite number ≥ 0, got {}",
            options.alpha
        )));
    }
    let n = data.queries.len();
    let mut runs = Vec::with_capacity(options.seeds.len());
    for &seed in &options.seeds {
        let (train_idx, test_idx) = split(n, seed, options.test_fraction)?;
        let subset = |idx: &[usize], part: &str| {
            data.subset(
                idx,
                format!(
                    "seed {seed}: {part} part, {} of {n} queries (test fraction {})",
                    idx.len(),
                    options.test_fraction
                ),
            )
            .ok_or_else(|| ExperimentError::Invalid("split index out of range".into()))
        };
        let train_data = subset(&train_idx, "train")?;
        let test_data = subset(&test_idx, "test")?;
        let trained = train(
            train_data,
            &TrainOptions {
                alpha: options.alpha,
                threads: options.eval.threads,
                embedding_model: Some(pool.embedding_model.clone()),
                source: None,
            },
        )
        .map_err(|source| ExperimentError::Train { seed, source })?;
        let label = format!("(router trained in memory for seed {seed})");
        let router = trained
            .file
            .into_router(pool, Path::new(&label))
            .map_err(|source| ExperimentError::Router { seed, source })?;
        let report = crate::evaluate(&router, &test_data, &options.eval)
            .map_err(|source| ExperimentError::Eval { seed, source })?;
        let methods = report
            .curves
            .iter()
            .filter(|c| c.kind != CurveKind::Single)
            .map(|c| MethodNumbers {
                name: c.name.clone(),
                kind: c.kind,
                paper_audc: c.paper_audc.unwrap_or(f64::NAN),
                paper_qnc: c.paper_qnc.unwrap_or(f64::NAN),
                peak: c.peak_quality,
                audc: c.audc,
                qnc: c.qnc,
            })
            .collect();
        let run = SeedRun {
            seed,
            train_queries: train_idx.len(),
            test_queries: test_idx.len(),
            best_single: report.best_single.clone(),
            paper_cost_range: report.paper.cost_range,
            lambda_grid: report.lambda_grid.clone(),
            methods,
        };
        on_seed(&run);
        runs.push(run);
    }
    let summary = summarise(&runs);
    Ok(ExperimentReport {
        data: data.path.display().to_string(),
        queries: n,
        models: data.models.clone(),
        budgets: data.budgets.clone(),
        seeds: options.seeds.clone(),
        test_fraction: options.test_fraction,
        alpha: options.alpha,
        interpolate: options.eval.interpolate,
        qnc_target: options.eval.qnc_target,
        std: "population standard deviation over the seeds (divided by their number; numpy's \
              np.std, ddof = 0)"
            .into(),
        paper_source: crate::paper::SOURCE.into(),
        runs,
        summary,
    })
}

/// Mean ± std per method over `runs` (each run lists the same methods in the same order).
pub fn summarise(runs: &[SeedRun]) -> Vec<MethodSummary> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let of = |f: fn(&MethodNumbers) -> f64| {
                let values: Vec<f64> = runs.iter().map(|r| f(&r.methods[i])).collect();
                MeanStd::of(&values)
            };
            MethodSummary {
                name: m.name.clone(),
                kind: m.kind,
                paper_audc: of(|m| m.paper_audc),
                paper_qnc: of(|m| m.paper_qnc),
                peak: of(|m| m.peak),
                audc: of(|m| m.audc),
            }
        })
        .collect()
}

impl ExperimentReport {
    /// The summary as a text table, laid out like the paper's tables: a row per method, AUDC ↑,
    /// QNC ↓ and peak ↑ as mean ± std.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let budgets = match (self.budgets.first(), self.budgets.last()) {
            (Some(a), Some(z)) => format!("{} budgets {a}…{z} + unlimited", self.budgets.len()),
            _ => "unlimited only".into(),
        };
        let seeds = match self.seeds.as_slice() {
            [one] => format!("1 seed ({one})"),
            s => format!(
                "{} seeds ({})",
                s.len(),
                s.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            ),
        };
        let _ = writeln!(
            out,
            "{}: {} queries, {} models, {budgets}",
            self.data,
            self.queries,
            self.models.len()
        );
        let (train_q, test_q) = self
            .runs
            .first()
            .map_or((0, 0), |r| (r.train_queries, r.test_queries));
        let _ = writeln!(
            out,
            "{seeds}: per seed a random split ({train_q} train / {test_q} test queries, test \
             fraction {}), Ridge alpha {}, trained and evaluated",
            self.test_fraction, self.alpha
        );
        let _ = writeln!(
            out,
            "paper metrics (compare_methods.py: cost normalised by one global range per seed), QNC \
             target {} × best single model's quality; mean ± std over the seeds",
            self.qnc_target
        );
        let _ = writeln!(out);
        let width = self
            .summary
            .iter()
            .map(|m| m.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let cell = |m: MeanStd| format!("{:.4} ± {:.4}", m.mean, m.std);
        let _ = writeln!(
            out,
            "{:<width$}  {:<15}  {:<15}  {:<15}  r2 AUDC ↑",
            "method", "AUDC ↑", "QNC ↓", "peak ↑"
        );
        for m in &self.summary {
            let _ = writeln!(
                out,
                "{:<width$}  {:<15}  {:<15}  {:<15}  {}",
                m.name,
                cell(m.paper_audc),
                cell(m.paper_qnc),
                cell(m.peak),
                cell(m.audc)
            );
        }
        let _ = writeln!(
            out,
            "\nAUDC: trapezoid of the λ-points sorted by cost over the globally normalised cost; \
             QNC: globally normalised cost of the cheapest point reaching the target quality (1 \
             if none does); peak: highest quality; r2 AUDC: r2's envelope AUDC (mean quality of \
             the deferral curve over its own cost range). std: population (ddof = 0)."
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_seeded_partitions() {
        let (a, b) = split(10, 3, 0.2).unwrap();
        assert_eq!((a.len(), b.len()), (8, 2));
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(split(10, 3, 0.2).unwrap(), (a.clone(), b.clone()));
        assert_ne!(split(1000, 3, 0.2).unwrap(), split(1000, 4, 0.2).unwrap());
        assert!(split(10, 3, 0.0).is_err());
        assert!(split(10, 3, 1.0).is_err());
        assert!(split(1, 3, 0.5).is_err());
        let m = MeanStd::of(&[1.0, 3.0]);
        assert_eq!((m.mean, m.std), (2.0, 1.0));
    }
}
