//! Evaluating a router on held-out data: deferral curves for the R2 router, the same router with
//! interpolated budgets, a point-based router, the oracle and every single model.
//!
//! For each λ of a grid every test query is routed with the router's *predictions*
//! ([`r2_core::Router::route_heads`], the same decisions as `r2 route`) and scored with the *true*
//! score and output tokens of the chosen (model, budget); the cost is
//! `input_tokens·input_price/1e6 + true output tokens·output_price/1e6` with the pool's prices. The
//! means over the queries give one point (cost, quality) per λ; [`crate::metrics`] turns the points
//! into the deferral curve, AUDC, QNC and peak quality (r2's envelope metrics), and
//! [`crate::paper`] computes the paper's AUDC and QNC on the same points, with cost normalised by
//! one global range over every router curve of the report.
//!
//! - **R2 router**: every (model, budget) option, anchors only.
//! - **R2 router, interpolated** (`interpolate = K > 0`): K extra budgets between adjacent anchors
//!   ([`r2_core::Router::budget_grid`]), their predicted quality interpolated linearly between the
//!   anchors' heads. An interpolated budget has no true label: it is scored with the true score and
//!   true output tokens interpolated linearly, with the same weight, between the two anchors' true
//!   labels of that query and model.
//! - **Point-based router** (CARROT-style): the same router restricted to its unlimited heads (per
//!   model the predicted quality and predicted output tokens without a budget), one option per
//!   model.
//! - **Oracle, unlimited only**: per query and λ, the model whose *unlimited* answer has the best
//!   true `(1 − λ)·score − λ·cost` (compare_methods.py's `calculate_oracle_unlimited`).
//! - **Oracle, all budgets**: per query and λ, the option (anchors) with the best *true*
//!   `(1 − λ)·score − λ·cost` (`calculate_oracle_all_limits`).
//! - **Single models**: every query to one model without a budget; one point.
//!
//! # The λ grid
//!
//! The decisions depend on λ only through the trade-off `r = λ/(1 − λ)` (USD of cost worth one unit
//! of quality, inverted). By default the grid is λ = 0, λ = 1 and `points − 2` values with `r`
//! log-spaced from `0.01 / C_hi` to `100 / C_lo`, where `C_lo` and `C_hi` are the mean over the test
//! queries of the cheapest and the most expensive option's true cost. At the low end no option's
//! cost is worth more than 0.01 of quality (quality-first); at the high end the cheapest option's
//! cost outweighs 100 units of quality (cost-first), so the grid spans the whole cost range
//! whatever the prices.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use r2_core::{Budget, BudgetGrid, ModelHeads, RouteParams, Router};
use serde::Serialize;

use crate::data::Dataset;
use crate::metrics::{self, Point};
use crate::paper;

/// Queries evaluated together by one worker; fixed, so the sums do not depend on the thread count.
const CHUNK: usize = 64;

/// Number of λ values of the default grid.
pub const DEFAULT_LAMBDA_POINTS: usize = 101;

/// What can go wrong when evaluating.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Core(#[from] r2_core::Error),
}

impl r2_core::Classify for EvalError {
    fn class(&self) -> r2_core::ErrorClass {
        match self {
            EvalError::Invalid(_) => r2_core::ErrorClass::InvalidInput,
            EvalError::Core(e) => e.class(),
        }
    }
}

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Explicit λ values (each in [0, 1]); `None`: the default grid of `lambda_points` values.
    pub lambdas: Option<Vec<f64>>,
    /// Size of the default grid (≥ 2).
    pub lambda_points: usize,
    /// Extra budgets between adjacent anchors for the interpolated router (0: no such curve).
    pub interpolate: u32,
    /// Worker threads.
    pub threads: usize,
    /// The paper's QNC target: the best single model's quality times this (compare_methods.py's
    /// `--target-accuracy-rate`; 1.0 there by default, 0.95 in the paper's runs).
    pub qnc_target: f64,
}

/// The default [`EvalOptions::qnc_target`].
pub const DEFAULT_QNC_TARGET: f64 = 1.0;

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            lambdas: None,
            lambda_points: DEFAULT_LAMBDA_POINTS,
            interpolate: 0,
            threads: 1,
            qnc_target: DEFAULT_QNC_TARGET,
        }
    }
}

/// What a curve is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CurveKind {
    Router,
    Interpolated,
    PointBased,
    /// The oracle over each model's unlimited answer only.
    OracleUnlimited,
    /// The oracle over every (model, budget) option.
    Oracle,
    Single,
}

/// One row of the report: a router's (or model's) points, curve and numbers.
#[derive(Debug, Clone, Serialize)]
pub struct CurveReport {
    pub name: String,
    pub kind: CurveKind,
    /// The model, for a single-model row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// r2's AUDC: the mean quality of the deferral curve over its own cost range.
    pub audc: f64,
    /// r2's QNC: least cost of the deferral curve reaching the best single model's quality, over
    /// that model's cost; `null` when the curve never reaches it.
    pub qnc: Option<f64>,
    /// The highest quality of the points (the same for r2's and the paper's metrics).
    pub peak_quality: f64,
    /// The paper's AUDC ([`crate::paper::audc`]: the points sorted by cost, trapezoid over the
    /// cost normalised by the report's global range, undivided); `null` for a single model.
    pub paper_audc: Option<f64>,
    /// The paper's QNC ([`crate::paper::qnc`]: the globally normalised cost of the cheapest point
    /// reaching the best single model's quality × the QNC target; 1.0 when none does); `null` for
    /// a single model.
    pub paper_qnc: Option<f64>,
    pub min_cost: f64,
    pub max_cost: f64,
    /// One point per λ (ascending), or the one point of a single model.
    pub points: Vec<Point>,
    /// The deferral curve's vertices `[cost, quality]`.
    pub curve: Vec<[f64; 2]>,
}

/// The best single model (highest mean quality; the cheaper one on a tie).
#[derive(Debug, Clone, Serialize)]
pub struct BestSingle {
    pub model: String,
    pub quality: f64,
    pub cost: f64,
}

/// How the paper's metrics of a report were computed.
#[derive(Debug, Clone, Serialize)]
pub struct PaperSummary {
    /// Where the formulas come from ([`crate::paper::SOURCE`]).
    pub source: String,
    /// The global cost range `[min, max]` (mean USD per query) every router's cost is normalised
    /// by: over every point of the curves in `range_of`.
    pub cost_range: [f64; 2],
    /// The curves (names) whose points make the global cost range: every router curve.
    pub range_of: Vec<String>,
    /// [`EvalOptions::qnc_target`].
    pub qnc_target: f64,
    /// The quality the paper's QNC looks for: best single model's quality × `qnc_target`.
    pub target_quality: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub data: String,
    pub selection: String,
    pub queries: usize,
    pub models: Vec<String>,
    pub budgets: Vec<u32>,
    pub interpolate: u32,
    /// Limited budgets per model of the interpolated router (anchors included); 0 without one.
    pub interpolated_budgets: usize,
    /// How the λ values were chosen.
    pub lambda_grid: String,
    pub lambdas: Vec<f64>,
    pub best_single: BestSingle,
    /// How the paper's numbers (`paper_audc`, `paper_qnc`) were computed.
    pub paper: PaperSummary,
    pub curves: Vec<CurveReport>,
}

impl EvalReport {
    /// The first curve of this kind.
    pub fn curve(&self, kind: CurveKind) -> Option<&CurveReport> {
        self.curves.iter().find(|c| c.kind == kind)
    }

    /// The report as a text table.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let budgets = match (self.budgets.first(), self.budgets.last()) {
            (Some(a), Some(z)) => format!("{} budgets {a}…{z} + unlimited", self.budgets.len()),
            _ => "unlimited only".into(),
        };
        let _ = writeln!(
            out,
            "{}: {} queries ({}), {} models, {budgets}",
            self.data,
            self.queries,
            self.selection,
            self.models.len()
        );
        let _ = writeln!(out, "λ grid: {}", self.lambda_grid);
        let _ = writeln!(
            out,
            "best single model: {} (quality {:.4}, cost ${:.4e} per query)",
            self.best_single.model, self.best_single.quality, self.best_single.cost
        );
        let _ = writeln!(
            out,
            "paper metrics: cost normalised by one global range [${:.4e}, ${:.4e}] per query \
             (all router curves); QNC target {} × {:.4} = {:.4}",
            self.paper.cost_range[0],
            self.paper.cost_range[1],
            self.paper.qnc_target,
            self.best_single.quality,
            self.paper.target_quality
        );
        let _ = writeln!(out);
        let width = self
            .curves
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let _ = writeln!(
            out,
            "{}",
            format!("{:<width$}  {:<15}  {:<15}", "", "r2 envelope", "paper").trim_end()
        );
        let _ = writeln!(
            out,
            "{:<width$}  {:>6}  {:>7}  {:>6}  {:>7}  {:>6}  {:>10}  {:>10}",
            "router", "AUDC", "QNC", "AUDC", "QNC", "peak", "min $/q", "max $/q"
        );
        for c in &self.curves {
            let qnc = match c.qnc {
                Some(v) => format!("{v:.4}"),
                None => "n/r".into(),
            };
            let paper = |v: Option<f64>| match v {
                Some(v) => format!("{v:.4}"),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:>6.4}  {:>7}  {:>6}  {:>7}  {:>6.4}  {:>10.3e}  {:>10.3e}",
                c.name,
                c.audc,
                qnc,
                paper(c.paper_audc),
                paper(c.paper_qnc),
                c.peak_quality,
                c.min_cost,
                c.max_cost
            );
        }
        let _ = writeln!(
            out,
            "\nr2 envelope: AUDC = mean quality of the deferral curve (upper concave envelope) over \
             its own cost range; QNC = least cost reaching the best single model's quality, \
             relative to that model's cost (n/r: not reached).\npaper (compare_methods.py): AUDC = \
             trapezoid of the λ-points sorted by cost over the globally normalised cost; QNC = \
             globally normalised cost of the cheapest point reaching the QNC target quality (1 if \
             none does).\npeak: highest quality; costs are mean USD per query."
        );
        out
    }
}

/// The point-based router: `router` restricted to its unlimited heads.
pub fn point_based(router: &Router) -> Result<Router, r2_core::Error> {
    let b = router.budgets().len();
    let per_model = b + 2;
    let heads = router
        .models()
        .iter()
        .enumerate()
        .map(|(m, info)| {
            let (wq, bq) = router.head_weights(m * per_model + b).expect("head exists");
            let (wt, bt) = router
                .head_weights(m * per_model + b + 1)
                .expect("head exists");
            ModelHeads {
                name: info.name.clone(),
                input_price_per_million: info.input_price_per_million,
                output_price_per_million: info.output_price_per_million,
                coef: wq.iter().chain(wt).copied().collect(),
                intercept: vec![bq, bt],
            }
        })
        .collect();
    Router::new(router.dim(), Vec::new(), heads)
}

/// The default λ grid (see the module docs) for `data`'s true costs.
pub fn default_lambdas(router: &Router, data: &Dataset, points: usize) -> (Vec<f64>, String) {
    let n = data.queries.len();
    let (mut lo, mut hi) = (0.0, 0.0);
    for q in 0..n {
        let (mut cheapest, mut dearest) = (f64::INFINITY, 0.0f64);
        for (m, info) in router.models().iter().enumerate() {
            let input = data.queries[q].input_tokens as f64 * info.input_price_per_million / 1e6;
            for slot in 0..data.slots() {
                let cost = input
                    + data.tokens[data.cell(q, m, slot)] * info.output_price_per_million / 1e6;
                cheapest = cheapest.min(cost);
                dearest = dearest.max(cost);
            }
        }
        lo += cheapest;
        hi += dearest;
    }
    let (mut lo, mut hi) = (lo / n as f64, hi / n as f64);
    if hi.is_nan() || hi <= 0.0 {
        hi = 1.0;
    }
    if lo.is_nan() || lo <= 0.0 {
        lo = hi * 1e-6;
    }
    let (r_lo, r_hi) = (0.01 / hi, 100.0 / lo);
    let inner = points.saturating_sub(2);
    let mut lambdas = vec![0.0];
    for i in 0..inner {
        let t = if inner == 1 {
            0.5
        } else {
            i as f64 / (inner - 1) as f64
        };
        let r = (r_lo.ln() + t * (r_hi.ln() - r_lo.ln())).exp();
        lambdas.push(r / (1.0 + r));
    }
    lambdas.push(1.0);
    lambdas.sort_by(f64::total_cmp);
    lambdas.dedup();
    let text = format!(
        "{} values: 0, 1 and {inner} with λ/(1−λ) log-spaced from {:.3e} to {:.3e} \
         (0.01 / mean dearest option cost {:.3e}, 100 / mean cheapest option cost {:.3e})",
        lambdas.len(),
        r_lo,
        r_hi,
        hi,
        lo
    );
    (lambdas, text)
}

/// Per chunk of queries and per λ: (cost sum, quality sum) of each routed curve.
type Sums = Vec<[f64; 2]>;

/// Evaluates `router` on `data` (its models and budgets must be the router's).
pub fn evaluate(
    router: &Router,
    data: &Dataset,
    options: &EvalOptions,
) -> Result<EvalReport, EvalError> {
    let names: Vec<&str> = router.models().iter().map(|m| m.name.as_str()).collect();
    if data
        .models
        .iter()
        .map(String::as_str)
        .ne(names.iter().copied())
    {
        return Err(EvalError::Invalid(format!(
            "the data's models {:?} are not the router's {names:?}",
            data.models
        )));
    }
    if data.budgets != router.budgets() {
        return Err(EvalError::Invalid(format!(
            "the data's budgets {:?} are not the router's {:?}",
            data.budgets,
            router.budgets()
        )));
    }
    if data.dim != router.dim() {
        return Err(EvalError::Invalid(format!(
            "the data's embeddings have {} values, the router expects {}",
            data.dim,
            router.dim()
        )));
    }
    let (lambdas, grid_text) = match &options.lambdas {
        Some(l) => {
            if l.is_empty() {
                return Err(EvalError::Invalid("no λ given".into()));
            }
            if let Some(bad) = l.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                return Err(EvalError::Invalid(format!(
                    "λ must be in [0, 1], got {bad}"
                )));
            }
            let mut l = l.clone();
            l.sort_by(f64::total_cmp);
            l.dedup();
            let text = format!("{} values given", l.len());
            (l, text)
        }
        None => {
            if options.lambda_points < 2 {
                return Err(EvalError::Invalid(
                    "the λ grid needs at least 2 points".into(),
                ));
            }
            default_lambdas(router, data, options.lambda_points)
        }
    };
    if !(options.qnc_target.is_finite() && options.qnc_target >= 0.0) {
        return Err(EvalError::Invalid(format!(
            "the QNC target must be a finite number ≥ 0 (a share of the best single model's \
             quality, e.g. 0.95), got {}",
            options.qnc_target
        )));
    }
    let params: Vec<RouteParams> = lambdas.iter().map(|&l| RouteParams::new(l)).collect();
    let pb = point_based(router)?;
    let anchors = router.budget_grid(0);
    let interp = (options.interpolate > 0).then(|| router.budget_grid(options.interpolate));
    // Curves routed per λ: R2, point-based, oracle, oracle unlimited-only, then R2 interpolated.
    let curves = if interp.is_some() { 5 } else { 4 };
    let n = data.queries.len();
    let chunks = n.div_ceil(CHUNK);
    let ctx = Context {
        router,
        pb: &pb,
        pb_grid: &pb.budget_grid(0),
        data,
        params: &params,
        anchors: &anchors,
        interp: interp.as_ref(),
        curves,
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Sums, EvalError>>>> =
        Mutex::new((0..chunks).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..options.threads.clamp(1, chunks.max(1)) {
            scope.spawn(|| loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= chunks {
                    break;
                }
                let sums = ctx.chunk(c * CHUNK..((c + 1) * CHUNK).min(n));
                results.lock().unwrap_or_else(|p| p.into_inner())[c] = Some(sums);
            });
        }
    });
    let mut total: Sums = vec![[0.0; 2]; curves * lambdas.len()];
    for sums in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let sums = sums.expect("every chunk ran")?;
        for (t, s) in total.iter_mut().zip(&sums) {
            t[0] += s[0];
            t[1] += s[1];
        }
    }

    // Single models: every query to the model without a budget. Summed per chunk, then the chunks
    // in order, as the routed curves are, so a router making one model's choices for every query
    // has exactly that model's numbers.
    let b = data.budgets.len();
    let singles: Vec<(f64, f64)> = router
        .models()
        .iter()
        .enumerate()
        .map(|(m, info)| {
            let (mut cost, mut quality) = (0.0, 0.0);
            for c in 0..chunks {
                let (mut chunk_cost, mut chunk_quality) = (0.0, 0.0);
                for q in c * CHUNK..((c + 1) * CHUNK).min(n) {
                    let cell = data.cell(q, m, b);
                    chunk_cost += true_cost(info, data.queries[q].input_tokens, data.tokens[cell]);
                    chunk_quality += data.scores[cell];
                }
                cost += chunk_cost;
                quality += chunk_quality;
            }
            (cost / n as f64, quality / n as f64)
        })
        .collect();
    let best = (0..singles.len())
        .reduce(|best, m| {
            let (a, b) = (singles[best], singles[m]);
            if b.1 > a.1 || (b.1 == a.1 && b.0 < a.0) {
                m
            } else {
                best
            }
        })
        .expect("at least one model");
    let best_single = BestSingle {
        model: names[best].to_owned(),
        quality: singles[best].1,
        cost: singles[best].0,
    };

    let row = |name: String, kind: CurveKind, model: Option<String>, points: Vec<Point>| {
        let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.cost, p.quality)).collect();
        let curve = metrics::deferral_curve(&xy);
        CurveReport {
            name,
            kind,
            model,
            audc: metrics::audc(&curve),
            qnc: metrics::qnc(&curve, best_single.quality, best_single.cost),
            peak_quality: metrics::peak_quality(&curve),
            paper_audc: None,
            paper_qnc: None,
            min_cost: xy.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
            max_cost: xy.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
            points,
            curve: curve.iter().map(|&(c, q)| [c, q]).collect(),
        }
    };
    let routed = |curve: usize| -> Vec<Point> {
        lambdas
            .iter()
            .enumerate()
            .map(|(l, &lambda)| {
                let s = total[curve * lambdas.len() + l];
                Point {
                    lambda: Some(lambda),
                    cost: s[0] / n as f64,
                    quality: s[1] / n as f64,
                }
            })
            .collect()
    };
    let mut rows = vec![row("R2 router".into(), CurveKind::Router, None, routed(0))];
    if let Some(grid) = &interp {
        rows.push(row(
            format!(
                "R2 router, interpolated (K={}, {} budgets)",
                grid.k(),
                grid.points().len()
            ),
            CurveKind::Interpolated,
            None,
            routed(4),
        ));
    }
    rows.push(row(
        "point-based (unlimited heads)".into(),
        CurveKind::PointBased,
        None,
        routed(1),
    ));
    rows.push(row(
        "oracle, unlimited only".into(),
        CurveKind::OracleUnlimited,
        None,
        routed(3),
    ));
    rows.push(row(
        "oracle, all budgets".into(),
        CurveKind::Oracle,
        None,
        routed(2),
    ));
    // The paper's metrics of every router curve, over one global cost range.
    let target_quality = best_single.quality * options.qnc_target;
    let xy: Vec<Vec<(f64, f64)>> = rows
        .iter()
        .map(|r| r.points.iter().map(|p| (p.cost, p.quality)).collect())
        .collect();
    let refs: Vec<&[(f64, f64)]> = xy.iter().map(Vec::as_slice).collect();
    let (cost_range, numbers) = paper::paper_metrics(&refs, target_quality);
    for (r, p) in rows.iter_mut().zip(&numbers) {
        r.paper_audc = Some(p.audc);
        r.paper_qnc = Some(p.qnc);
    }
    let paper_summary = PaperSummary {
        source: paper::SOURCE.to_owned(),
        cost_range: [cost_range.0, cost_range.1],
        range_of: rows.iter().map(|r| r.name.clone()).collect(),
        qnc_target: options.qnc_target,
        target_quality,
    };
    for (m, &(cost, quality)) in singles.iter().enumerate() {
        rows.push(row(
            format!("single: {}", names[m]),
            CurveKind::Single,
            Some(names[m].to_owned()),
            vec![Point {
                lambda: None,
                cost,
                quality,
            }],
        ));
    }
    Ok(EvalReport {
        data: data.path.display().to_string(),
        selection: data.selection.clone(),
        queries: n,
        models: data.models.clone(),
        budgets: data.budgets.clone(),
        interpolate: options.interpolate,
        interpolated_budgets: interp.as_ref().map_or(0, |g| g.points().len()),
        lambda_grid: grid_text,
        lambdas,
        best_single,
        paper: paper_summary,
        curves: rows,
    })
}

fn true_cost(info: &r2_core::ModelInfo, input_tokens: u64, output_tokens: f64) -> f64 {
    input_tokens as f64 * info.input_price_per_million / 1e6
        + output_tokens * info.output_price_per_million / 1e6
}

/// What every worker reads.
struct Context<'a> {
    router: &'a Router,
    pb: &'a Router,
    pb_grid: &'a BudgetGrid,
    data: &'a Dataset,
    params: &'a [RouteParams],
    anchors: &'a BudgetGrid,
    interp: Option<&'a BudgetGrid>,
    curves: usize,
}

impl Context<'_> {
    /// The sums of queries `range`, per curve and λ.
    fn chunk(&self, range: std::ops::Range<usize>) -> Result<Sums, EvalError> {
        let (router, data) = (self.router, self.data);
        let lambdas = self.params.len();
        let b = data.budgets.len();
        let per_model = b + 2;
        let models = router.models();
        let slots = data.slots();
        let mut sums: Sums = vec![[0.0; 2]; self.curves * lambdas];
        let mut pb_heads = vec![0.0; 2 * models.len()];
        for q in range {
            let heads = router
                .head_outputs(data.embedding(q))
                .map_err(|e| EvalError::Invalid(format!("query `{}`: {e}", data.queries[q].id)))?;
            for m in 0..models.len() {
                pb_heads[2 * m] = heads[m * per_model + b];
                pb_heads[2 * m + 1] = heads[m * per_model + b + 1];
            }
            let input_tokens = data.queries[q].input_tokens;
            let label = |m: usize| {
                let first = data.cell(q, m, 0);
                (
                    &data.scores[first..first + slots],
                    &data.tokens[first..first + slots],
                )
            };
            // The true (cost, quality) of model m at a budget of `grid`.
            let score = |grid: &BudgetGrid, m: usize, budget: Budget| -> (f64, f64) {
                let (s, t) = label(m);
                let (quality, tokens) = match budget {
                    Budget::Unlimited => (s[b], t[b]),
                    Budget::Tokens(tokens) => {
                        let p = grid.point(tokens).expect("the router chose a grid budget");
                        (p.interpolate(&s[..b]), p.interpolate(&t[..b]))
                    }
                };
                (true_cost(&models[m], input_tokens, tokens), quality)
            };
            for (l, params) in self.params.iter().enumerate() {
                let mut add = |curve: usize, (cost, quality): (f64, f64)| {
                    let s = &mut sums[curve * lambdas + l];
                    s[0] += cost;
                    s[1] += quality;
                };
                let d = router.route_heads(&heads, input_tokens, params, self.anchors)?;
                add(0, score(self.anchors, d.choice.model, d.choice.budget));
                let d = self
                    .pb
                    .route_heads(&pb_heads, input_tokens, params, self.pb_grid)?;
                add(1, score(self.anchors, d.choice.model, Budget::Unlimited));
                // Oracle: the best true risk, first in pool order (budgets ascending, then
                // unlimited) on a tie.
                let lambda = params.lambda;
                let mut best = (f64::NEG_INFINITY, 0.0, 0.0);
                for (m, info) in models.iter().enumerate() {
                    let (s, t) = label(m);
                    for slot in 0..slots {
                        let cost = true_cost(info, input_tokens, t[slot]);
                        let risk = (1.0 - lambda) * s[slot] - lambda * cost;
                        if risk > best.0 {
                            best = (risk, cost, s[slot]);
                        }
                    }
                }
                add(2, (best.1, best.2));
                // Oracle over the unlimited answers only, first in pool order on a tie.
                let mut best = (f64::NEG_INFINITY, 0.0, 0.0);
                for (m, info) in models.iter().enumerate() {
                    let (s, t) = label(m);
                    let cost = true_cost(info, input_tokens, t[b]);
                    let risk = (1.0 - lambda) * s[b] - lambda * cost;
                    if risk > best.0 {
                        best = (risk, cost, s[b]);
                    }
                }
                add(3, (best.1, best.2));
                if let Some(grid) = self.interp {
                    let d = router.route_heads(&heads, input_tokens, params, grid)?;
                    add(4, score(grid, d.choice.model, d.choice.budget));
                }
            }
        }
        Ok(sums)
    }
}
