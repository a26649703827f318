use serde::{Deserialize, Serialize};

use crate::{kernel, Budget, Error, Result};

mod grid;
pub use grid::{BudgetGrid, BudgetPoint};

/// Queries screened together in one float32 matrix product on the batch path (a few GEMM tiles,
/// so the head values are still in cache when the queries are decided).
const SCREEN_BLOCK: usize = 48;

/// One model of the pool with its prices and its Ridge heads, as handed to [`Router::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModelHeads {
    /// The model's name in the pool (unique).
    pub name: String,
    /// USD per million input tokens.
    pub input_price_per_million: f64,
    /// USD per million output tokens.
    pub output_price_per_million: f64,
    /// Row-major `[budgets + 2, dim]`: one quality head per budget (in the router's budget order),
    /// then the unlimited quality head, then the unlimited output-token head.
    pub coef: Vec<f32>,
    /// `budgets + 2` intercepts, in the same order as the rows of `coef`.
    pub intercept: Vec<f32>,
}

/// A model of a built router: its name and prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model's name in the pool.
    pub name: String,
    /// USD per million input tokens.
    pub input_price_per_million: f64,
    /// USD per million output tokens.
    pub output_price_per_million: f64,
}

/// Which prediction a head makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HeadKind {
    /// Quality when told to answer within this many tokens.
    Limited(u32),
    /// Quality without a budget prompt.
    UnlimitedScore,
    /// Output tokens without a budget prompt.
    UnlimitedTokens,
}

impl std::fmt::Display for HeadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadKind::Limited(budget) => write!(f, "budget-{budget} quality"),
            HeadKind::UnlimitedScore => f.write_str("unlimited quality"),
            HeadKind::UnlimitedTokens => f.write_str("unlimited output-token"),
        }
    }
}

/// A set of candidate models of one router, built by [`Router::model_mask`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMask(Vec<bool>);

impl ModelMask {
    /// Whether the model at `index` is a candidate.
    pub fn contains(&self, index: usize) -> bool {
        self.0.get(index).copied().unwrap_or(false)
    }
}

/// How to route: λ and the optional filters.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteParams {
    /// Cost–quality trade-off in [0, 1]: 0 maximises quality, 1 minimises cost.
    pub lambda: f64,
    /// Only these models are considered; `None` means the whole pool.
    pub candidates: Option<ModelMask>,
    /// Options whose predicted cost (USD) is above this are dropped.
    pub max_cost: Option<f64>,
    /// Also return every remaining option, ranked by risk (highest first).
    pub ranked: bool,
}

impl RouteParams {
    /// Route with `lambda` over the whole pool, without a cost cap or a ranking.
    pub fn new(lambda: f64) -> Self {
        Self {
            lambda,
            candidates: None,
            max_cost: None,
            ranked: false,
        }
    }

    /// Only consider the models in `mask`.
    pub fn with_candidates(mut self, mask: ModelMask) -> Self {
        self.candidates = Some(mask);
        self
    }

    /// Drop options whose predicted cost is above `usd`.
    pub fn with_max_cost(mut self, usd: f64) -> Self {
        self.max_cost = Some(usd);
        self
    }

    /// Also return every option, ranked by risk.
    pub fn with_ranked(mut self, ranked: bool) -> Self {
        self.ranked = ranked;
        self
    }
}

/// One (model, budget) pair with its predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RouteOption {
    /// Index of the model in [`Router::models`].
    pub model: usize,
    /// The output-token budget given to the model.
    pub budget: Budget,
    /// Predicted quality, clipped to [0, 1].
    pub quality: f64,
    /// Output tokens the cost assumes: the budget, or the predicted count when unlimited.
    pub output_tokens: f64,
    /// Predicted cost in USD.
    pub cost: f64,
    /// `(1 − λ)·quality − λ·cost`.
    pub risk: f64,
}

/// The routing decision for one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The option with the highest risk (the first in pool order on a tie).
    pub choice: RouteOption,
    /// Every option that passed the filters, by risk descending (pool order on ties); empty unless
    /// [`RouteParams::ranked`] was set.
    pub ranked: Vec<RouteOption>,
}

/// A router: every Ridge head of every model stacked in one matrix.
///
/// Head `m·(B + 2) + k` belongs to model `m`: `k < B` is the quality head of budget `k`, `k = B` the
/// unlimited quality head, `k = B + 1` the unlimited output-token head.
#[derive(Debug, Clone)]
pub struct Router {
    dim: usize,
    budgets: Vec<u32>,
    models: Vec<ModelInfo>,
    /// Row-major `[heads, dim]`: head `h` is `coef[h·dim .. (h + 1)·dim]`.
    coef: Vec<f32>,
    /// The same weights packed for the float32 screen kernels (`kernel::Packed`).
    packed: kernel::Packed,
    /// And in bfloat16, when the CPU has AVX-512 BF16 (then the screen uses these).
    bf16: Option<kernel::Bf16Screen>,
    intercept: Vec<f64>,
    /// The screen's error bound of every head.
    error_terms: ErrorTerms,
    /// `budget · output price / 1e6` of every (model, limited budget), model-major.
    limited_cost: Vec<f64>,
    /// Per head, its model's input price per token, and for a limited quality head the budget's
    /// output cost (0 for the unlimited heads): the screen's cost of the head's option.
    head_input_price: Vec<f64>,
    head_budget_cost: Vec<f64>,
}

/// Checked λ and max cost, shared by both routing paths.
struct Checked<'a> {
    lambda: f64,
    candidates: Option<&'a ModelMask>,
    max_cost: Option<f64>,
    ranked: bool,
}

impl Router {
    /// Builds a router from its models (in pool order, which breaks ties) and the limited budgets
    /// (strictly ascending) shared by every model.
    pub fn new(dim: usize, budgets: Vec<u32>, models: Vec<ModelHeads>) -> Result<Self> {
        if dim == 0 {
            return Err(Error::ZeroDimension);
        }
        if models.is_empty() {
            return Err(Error::EmptyPool);
        }
        if budgets.first() == Some(&0) || budgets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::InvalidBudgets { got: budgets });
        }
        let per_model = budgets.len() + 2;
        let mut coef = Vec::with_capacity(models.len() * per_model * dim);
        let mut intercept = Vec::with_capacity(models.len() * per_model);
        let mut infos: Vec<ModelInfo> = Vec::with_capacity(models.len());
        for model in models {
            if infos.iter().any(|m| m.name == model.name) {
                return Err(Error::DuplicateModel { name: model.name });
            }
            check_model(&model, dim, per_model)?;
            coef.extend_from_slice(&model.coef);
            intercept.extend(model.intercept.iter().map(|&b| f64::from(b)));
            infos.push(ModelInfo {
                name: model.name,
                input_price_per_million: model.input_price_per_million,
                output_price_per_million: model.output_price_per_million,
            });
        }
        let packed = kernel::Packed::new(&coef, dim);
        let bf16 = kernel::Bf16Screen::new(&coef, dim);
        let error_terms = ErrorTerms::new(&coef, &intercept, dim, bf16.as_ref().map(|b| b.error()));
        let limited_cost = infos
            .iter()
            .flat_map(|m| {
                budgets
                    .iter()
                    .map(move |&b| f64::from(b) * m.output_price_per_million / 1e6)
            })
            .collect::<Vec<f64>>();
        let b = budgets.len();
        let head_input_price = (0..intercept.len())
            .map(|h| infos[h / per_model].input_price_per_million / 1e6)
            .collect();
        let head_budget_cost = (0..intercept.len())
            .map(|h| match h % per_model {
                k if k < b => limited_cost[h / per_model * b + k],
                _ => 0.0,
            })
            .collect();
        Ok(Self {
            dim,
            budgets,
            models: infos,
            packed,
            bf16,
            coef,
            intercept,
            error_terms,
            limited_cost,
            head_input_price,
            head_budget_cost,
        })
    }

    /// Length of the embeddings this router takes.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The limited budgets, ascending.
    pub fn budgets(&self) -> &[u32] {
        &self.budgets
    }

    /// The models, in pool order.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Number of Ridge heads: models × (budgets + 2).
    pub fn head_count(&self) -> usize {
        self.intercept.len()
    }

    /// Number of (model, budget) options per query: models × (budgets + 1).
    pub fn option_count(&self) -> usize {
        self.models.len() * (self.budgets.len() + 1)
    }

    /// Index of a model by name.
    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// The model and kind of head `head`, or `None` past the last head.
    pub fn head(&self, head: usize) -> Option<(usize, HeadKind)> {
        let per_model = self.budgets.len() + 2;
        let model = head / per_model;
        if model >= self.models.len() {
            return None;
        }
        let k = head % per_model;
        let kind = match self.budgets.get(k) {
            Some(&b) => HeadKind::Limited(b),
            None if k == self.budgets.len() => HeadKind::UnlimitedScore,
            None => HeadKind::UnlimitedTokens,
        };
        Some((model, kind))
    }

    /// Weights and intercept of head `head` (see [`Router::head`]), or `None` past the last head.
    pub fn head_weights(&self, head: usize) -> Option<(&[f32], f32)> {
        let row = self.coef.get(head * self.dim..(head + 1) * self.dim)?;
        Some((row, self.intercept[head] as f32))
    }

    /// A candidate set holding the named models. Unknown names are an error that lists the pool.
    pub fn model_mask<S: AsRef<str>>(&self, names: &[S]) -> Result<ModelMask> {
        let mut mask = vec![false; self.models.len()];
        for name in names {
            let name = name.as_ref();
            let index = self.model_index(name).ok_or_else(|| Error::UnknownModel {
                name: name.to_owned(),
                known: self.models.iter().map(|m| m.name.clone()).collect(),
            })?;
            mask[index] = true;
        }
        Ok(ModelMask(mask))
    }

    /// Raw output `w·x + b` of every head for one embedding, in head order (unclipped).
    pub fn head_outputs(&self, embedding: &[f64]) -> Result<Vec<f64>> {
        self.check_embedding(0, embedding)?;
        Ok(self.exact_heads(embedding))
    }

    /// The unlimited option of model `model` for one embedding, evaluated exactly as routing
    /// evaluates it (float64 heads; predicted output tokens floored at 0): what the query would
    /// cost and score on that model without a budget. Used for "what would the reference model
    /// have cost" accounting.
    pub fn unlimited_option(
        &self,
        embedding: &[f64],
        input_tokens: u64,
        model: usize,
        lambda: f64,
    ) -> Result<RouteOption> {
        self.check_embedding(0, embedding)?;
        let per_model = self.budgets.len() + 2;
        if model >= self.models.len() {
            return Err(Error::UnknownModel {
                name: format!("#{model}"),
                known: self.models.iter().map(|m| m.name.clone()).collect(),
            });
        }
        let base = model * per_model;
        let head = |h: usize| {
            let w = &self.coef[h * self.dim..(h + 1) * self.dim];
            kernel::dot(w, embedding) + self.intercept[h]
        };
        let (q, t) = (head(base + per_model - 2), head(base + per_model - 1));
        if !q.is_finite() || !t.is_finite() {
            return Err(Error::NonFinitePrediction {
                query: 0,
                model: self.models[model].name.clone(),
                head: if q.is_finite() {
                    HeadKind::UnlimitedTokens
                } else {
                    HeadKind::UnlimitedScore
                },
                value: if q.is_finite() { t } else { q },
            });
        }
        Ok(self.option(model, self.budgets.len(), q, t, input_tokens, lambda))
    }

    /// Routes one embedding: the option with the highest risk.
    ///
    /// Every head is first evaluated in float32; options whose risk provably cannot reach the best
    /// are dropped and the rest are recomputed in float64, exactly as upstream computes them (see
    /// [`Router::route_batch_parallel`]). The result is that of evaluating every head in float64.
    pub fn route(
        &self,
        embedding: &[f64],
        input_tokens: u64,
        params: &RouteParams,
    ) -> Result<Decision> {
        let checked = self.checked(params)?;
        self.check_embedding(0, embedding)?;
        if checked.ranked {
            return self.route_exact(0, embedding, input_tokens, &checked);
        }
        // Screen (bfloat16 where the CPU has it, else float32), then settle the few options that
        // could still win in float64.
        let mut approx = vec![0.0f32; self.packed.padded_heads()];
        let norms = match &self.bf16 {
            Some(bf16) => bf16.gemv(embedding, &mut Vec::new(), &mut approx),
            None => {
                let x32: Vec<f32> = embedding.iter().map(|&v| v as f32).collect();
                self.packed.gemv(&x32, &mut approx);
                kernel::QueryNorms {
                    norm: kernel::norm(embedding),
                    rounding: 0.0,
                }
            }
        };
        let approx = &approx[..self.head_count()];
        match Screen::new(self).decide(approx, norms, embedding, input_tokens, &checked) {
            Some(choice) => Ok(Decision {
                choice,
                ranked: Vec::new(),
            }),
            None => self.route_exact(0, embedding, input_tokens, &checked),
        }
    }

    /// Routes a batch on the calling thread. `embeddings` holds `input_tokens.len()` embeddings
    /// back to back; the decisions come back in the same order and equal those of [`Router::route`].
    pub fn route_batch(
        &self,
        embeddings: &[f64],
        input_tokens: &[u64],
        params: &RouteParams,
    ) -> Result<Vec<Decision>> {
        self.route_batch_parallel(embeddings, input_tokens, params, 1)
    }

    /// Routes a batch split over `threads` scoped threads (0 and 1 mean the calling thread).
    ///
    /// The batch path multiplies all heads with a block of queries in float32, bounds the rounding
    /// error of every option, and recomputes in float64 only the options that could still win. The
    /// decisions are therefore exactly those of [`Router::route`], at a fraction of the work.
    pub fn route_batch_parallel(
        &self,
        embeddings: &[f64],
        input_tokens: &[u64],
        params: &RouteParams,
        threads: usize,
    ) -> Result<Vec<Decision>> {
        let checked = self.checked(params)?;
        let n = input_tokens.len();
        if embeddings.len() != n.saturating_mul(self.dim) {
            return Err(Error::BatchShape {
                values: embeddings.len(),
                input_tokens: n,
                dim: self.dim,
            });
        }
        if let [tokens] = input_tokens {
            // One query takes the single-query path: its GEMV reads the bfloat16 screen where
            // the CPU has one (half the bytes), instead of a tile of mostly zeros.
            return self.route(embeddings, *tokens, params).map(|d| vec![d]);
        }
        // Each thread checks its own queries as it routes them (`route_range`); the parts are
        // joined in order, so the error reported is still the first bad query's.
        let check_and_route = |first: usize, xs: &[f64], tokens: &[u64]| {
            self.route_range(first, xs, tokens, &checked)
        };
        let threads = threads.clamp(1, n.max(1));
        if threads == 1 {
            return check_and_route(0, embeddings, input_tokens);
        }
        let per_thread = n.div_ceil(threads);
        let mut parts = input_tokens
            .chunks(per_thread)
            .zip(embeddings.chunks(per_thread * self.dim))
            .enumerate();
        let Some((_, (first_tokens, first_xs))) = parts.next() else {
            return Ok(Vec::new());
        };
        // The calling thread routes the first part while the spawned threads route the others.
        let (first, rest): (_, Vec<Result<Vec<Decision>>>) = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .map(|(i, (tokens, xs))| {
                    let check_and_route = &check_and_route;
                    scope.spawn(move || check_and_route(i * per_thread, xs, tokens))
                })
                .collect();
            let first = check_and_route(0, first_xs, first_tokens);
            let rest = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect();
            (first, rest)
        });
        let mut decisions = first?;
        decisions.reserve_exact(n - decisions.len());
        for part in rest {
            decisions.extend(part?);
        }
        Ok(decisions)
    }

    /// Checks `params` against this router (λ in [0, 1], a usable cost cap, a candidate set of this
    /// router that is not empty) without routing anything.
    pub fn check_params(&self, params: &RouteParams) -> Result<()> {
        self.checked(params).map(|_| ())
    }

    fn checked<'a>(&self, params: &'a RouteParams) -> Result<Checked<'a>> {
        let lambda = params.lambda;
        if !(0.0..=1.0).contains(&lambda) {
            return Err(Error::InvalidLambda { got: lambda });
        }
        if let Some(max_cost) = params.max_cost {
            if !(max_cost.is_finite() && max_cost >= 0.0) {
                return Err(Error::InvalidMaxCost { got: max_cost });
            }
        }
        if let Some(mask) = &params.candidates {
            if mask.0.len() != self.models.len() || !mask.0.iter().any(|&c| c) {
                return Err(Error::NoCandidates);
            }
        }
        Ok(Checked {
            lambda,
            candidates: params.candidates.as_ref(),
            max_cost: params.max_cost,
            ranked: params.ranked,
        })
    }

    fn check_embedding(&self, query: usize, x: &[f64]) -> Result<()> {
        if x.len() != self.dim {
            return Err(Error::DimensionMismatch {
                query,
                expected: self.dim,
                got: x.len(),
            });
        }
        // A branch-free scan first (it vectorises); the position only when something is wrong.
        let all_finite = x
            .chunks(64)
            .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()));
        if all_finite {
            return Ok(());
        }
        if let Some((position, &value)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFiniteEmbedding {
                query,
                position,
                value,
            });
        }
        Ok(())
    }

    fn exact_heads(&self, x: &[f64]) -> Vec<f64> {
        self.coef
            .chunks_exact(self.dim)
            .zip(&self.intercept)
            .map(|(w, &b)| kernel::dot(w, x) + b)
            .collect()
    }

    /// Every head of every candidate model must give a finite value: a NaN would lose every
    /// comparison and an infinity would be clamped into a plausible quality.
    fn check_heads(&self, query: usize, heads: &[f64], checked: &Checked) -> Result<()> {
        let per_model = self.budgets.len() + 2;
        let bad = heads
            .iter()
            .enumerate()
            .find(|&(h, v)| !v.is_finite() && self.is_candidate(checked, h / per_model));
        match bad {
            None => Ok(()),
            Some((h, &value)) => {
                let (model, head) = self.head(h).expect("a head of this router");
                Err(Error::NonFinitePrediction {
                    query,
                    model: self.models[model].name.clone(),
                    head,
                    value,
                })
            }
        }
    }

    fn is_candidate(&self, checked: &Checked, model: usize) -> bool {
        checked.candidates.is_none_or(|mask| mask.contains(model))
    }

    /// The option of model `m`, slot `k` (`k < B`: budget `k`; `k = B`: unlimited) from the values
    /// of its quality head and (for unlimited) its token head. The arithmetic follows upstream's
    /// `R2Router.route` operation by operation, so equal inputs give equal bits.
    fn option(
        &self,
        m: usize,
        k: usize,
        quality_head: f64,
        token_head: f64,
        input_tokens: u64,
        lambda: f64,
    ) -> RouteOption {
        let model = &self.models[m];
        let input_cost = input_tokens as f64 * model.input_price_per_million / 1e6;
        let quality = quality_head.clamp(0.0, 1.0);
        let (budget, output_tokens, output_cost) = match self.budgets.get(k) {
            Some(&b) => (
                Budget::Tokens(b),
                f64::from(b),
                self.limited_cost[m * self.budgets.len() + k],
            ),
            None => {
                let tokens = if token_head > 0.0 { token_head } else { 0.0 };
                (
                    Budget::Unlimited,
                    tokens,
                    tokens * model.output_price_per_million / 1e6,
                )
            }
        };
        let cost = input_cost + output_cost;
        RouteOption {
            model: m,
            budget,
            quality,
            output_tokens,
            cost,
            risk: (1.0 - lambda) * quality - lambda * cost,
        }
    }

    /// The reference path: every head in float64, every option evaluated.
    fn route_exact(
        &self,
        query: usize,
        x: &[f64],
        input_tokens: u64,
        checked: &Checked,
    ) -> Result<Decision> {
        let heads = self.exact_heads(x);
        self.check_heads(query, &heads, checked)?;
        let per_model = self.budgets.len() + 2;
        let b = self.budgets.len();
        let options = (0..self.models.len())
            .filter(|&m| self.is_candidate(checked, m))
            .flat_map(|m| {
                let h = &heads[m * per_model..(m + 1) * per_model];
                (0..=b)
                    .map(move |k| self.option(m, k, h[k], h[b + 1], input_tokens, checked.lambda))
            });
        self.select(query, options, checked)
    }

    /// The decision among `options` (in pool order): the cost cap applied, the first maximum of
    /// risk chosen, and the ranking made when asked for.
    fn select(
        &self,
        query: usize,
        options: impl Iterator<Item = RouteOption>,
        checked: &Checked,
    ) -> Result<Decision> {
        let mut best: Option<RouteOption> = None;
        let mut cheapest: Option<RouteOption> = None;
        let mut ranked = Vec::new();
        for option in options {
            if cheapest.is_none_or(|c| option.cost < c.cost) {
                cheapest = Some(option);
            }
            if checked.max_cost.is_some_and(|max| option.cost > max) {
                continue;
            }
            if best.is_none_or(|best| option.risk > best.risk) {
                best = Some(option);
            }
            if checked.ranked {
                ranked.push(option);
            }
        }
        let Some(choice) = best else {
            // `check_params` guarantees at least one candidate, so only the cost cap empties the set.
            let cheapest = cheapest.expect("at least one candidate option");
            return Err(Error::NothingWithinMaxCost {
                query,
                max_cost: checked.max_cost.unwrap_or(f64::INFINITY),
                cheapest_model: self.models[cheapest.model].name.clone(),
                cheapest_budget: cheapest.budget,
                cheapest_cost: cheapest.cost,
            });
        };
        // A stable sort keeps pool order among equal risks.
        ranked.sort_by(|a, b| b.risk.total_cmp(&a.risk));
        Ok(Decision { choice, ranked })
    }

    /// Routes queries `first..first + input_tokens.len()` of a batch on this thread.
    /// Routes queries `first..` (checking each embedding first: an error names the first bad
    /// one, and nothing after it is routed).
    fn route_range(
        &self,
        first: usize,
        embeddings: &[f64],
        input_tokens: &[u64],
        checked: &Checked,
    ) -> Result<Vec<Decision>> {
        if checked.ranked {
            return embeddings
                .chunks_exact(self.dim)
                .zip(input_tokens)
                .enumerate()
                .map(|(i, (x, &t))| {
                    self.check_embedding(first + i, x)?;
                    self.route_exact(first + i, x, t, checked)
                })
                .collect();
        }
        let heads = self.head_count();
        let padded = self.packed.padded_heads();
        let mut screen = Screen::new(self);
        let mut decisions = Vec::with_capacity(input_tokens.len());
        let block = SCREEN_BLOCK.min(input_tokens.len());
        let mut approx = vec![0.0f32; block * padded];
        let mut norms = vec![kernel::QueryNorms::default(); block];
        let (mut scratch, mut scratch_bf16) = (Vec::new(), Vec::new());
        for (block, (xs, tokens)) in embeddings
            .chunks(SCREEN_BLOCK * self.dim)
            .zip(input_tokens.chunks(SCREEN_BLOCK))
            .enumerate()
        {
            let first = first + block * SCREEN_BLOCK;
            let approx = &mut approx[..tokens.len() * padded];
            let norms = &mut norms[..tokens.len()];
            // Row j of `approx` holds every head of query j (then the padding of the last panel).
            match &self.bf16 {
                Some(bf16) => {
                    let ahead = &embeddings
                        [((block + 1) * SCREEN_BLOCK * self.dim).min(embeddings.len())..];
                    bf16.gemm(xs, ahead, approx, norms, &mut scratch_bf16)
                }
                None => self.packed.gemm(xs, approx, norms, &mut scratch),
            }
            // A finite norm means every value is finite: only the others need the full check.
            for (i, (x, n)) in xs.chunks_exact(self.dim).zip(norms.iter()).enumerate() {
                if !n.norm.is_finite() {
                    self.check_embedding(first + i, x)?;
                }
            }
            for (j, (((x, &t), a), &norms)) in xs
                .chunks_exact(self.dim)
                .zip(tokens)
                .zip(approx.chunks_exact(padded))
                .zip(norms.iter())
                .enumerate()
            {
                let decision = match screen.decide(&a[..heads], norms, x, t, checked) {
                    Some(choice) => Decision {
                        choice,
                        ranked: Vec::new(),
                    },
                    None => self.route_exact(first + j, x, t, checked)?,
                };
                decisions.push(decision);
            }
        }
        Ok(decisions)
    }
}

fn check_model(model: &ModelHeads, dim: usize, per_model: usize) -> Result<()> {
    let name = || model.name.clone();
    if model.coef.len() != per_model * dim {
        return Err(Error::HeadShape {
            model: name(),
            what: "coef",
            expected: per_model * dim,
            got: model.coef.len(),
        });
    }
    if model.intercept.len() != per_model {
        return Err(Error::HeadShape {
            model: name(),
            what: "intercept",
            expected: per_model,
            got: model.intercept.len(),
        });
    }
    for (what, value) in [
        ("input price", model.input_price_per_million),
        ("output price", model.output_price_per_million),
    ] {
        if !value.is_finite() {
            return Err(Error::NonFiniteParameter {
                model: name(),
                what: what.to_owned(),
                value,
            });
        }
        if value < 0.0 {
            return Err(Error::NegativePrice {
                model: name(),
                what,
                value,
            });
        }
    }
    if let Some(i) = model.coef.iter().position(|w| !w.is_finite()) {
        return Err(Error::NonFiniteParameter {
            model: name(),
            what: format!("weight {} of head {}", i % dim, i / dim),
            value: f64::from(model.coef[i]),
        });
    }
    if let Some(i) = model.intercept.iter().position(|b| !b.is_finite()) {
        return Err(Error::NonFiniteParameter {
            model: name(),
            what: format!("intercept of head {i}"),
            value: f64::from(model.intercept[i]),
        });
    }
    Ok(())
}

/// An option as seen by the float32 screen: its risk and a bound on how far the exact risk can be.
#[derive(Clone, Copy)]
struct Screened {
    m: usize,
    k: usize,
    risk: f64,
    slack: f64,
    /// `Some(true)`: within the cost cap for sure; `Some(false)`: over it for sure; `None`: unsure.
    within_cap: Option<bool>,
}

/// How far the screen's value of each head can be from the exact float64 path's, as a linear form
/// of the query's norms: `per_norm[h]·‖x‖ + per_rounding[h]·‖x − xb‖ + constant[h]`.
///
/// For a float32 screen that is `γ·(‖w‖·‖x‖ + |b|)` (both paths' rounding, whatever the order of
/// the sums; `γ = γ₃₂ + γ₆₄` for sums of `dim + 2` terms, with a margin). For a bfloat16 one, with
/// `d = ‖w − wb‖` and `‖wb‖ ≤ ‖w‖ + d`: `γ·(‖wb‖·(‖x‖ + ‖x − xb‖) + |b|) + d·‖x‖ + ‖wb‖·‖x − xb‖`
/// (`kernel::bf16`).
#[derive(Debug, Clone)]
struct ErrorTerms {
    per_norm: Vec<f64>,
    per_rounding: Vec<f64>,
    constant: Vec<f64>,
}

impl ErrorTerms {
    /// The terms of row-major `[heads, dim]` weights; `bf16_error` is `‖w − wb‖` per head when the
    /// screen is bfloat16.
    fn new(coef: &[f32], intercept: &[f64], dim: usize, bf16_error: Option<&[f64]>) -> Self {
        let n = (dim + 2) as f64;
        let gamma = |unit: f64| n * unit / (1.0 - n * unit);
        let gamma = 1.01 * (gamma(f64::from(f32::EPSILON) / 2.0) + gamma(f64::EPSILON / 2.0));
        let heads = intercept.len();
        let mut terms = Self {
            per_norm: Vec::with_capacity(heads),
            per_rounding: Vec::with_capacity(heads),
            constant: Vec::with_capacity(heads),
        };
        for (h, (row, &b)) in coef.chunks_exact(dim).zip(intercept).enumerate() {
            let w_norm = row
                .iter()
                .map(|&w| f64::from(w) * f64::from(w))
                .sum::<f64>()
                .sqrt();
            let (per_norm, per_rounding, constant) = match bf16_error {
                None => (gamma * w_norm, 0.0, gamma * b.abs()),
                Some(error) => {
                    let d = error[h];
                    let wb_norm = w_norm + d;
                    (
                        gamma * wb_norm + d,
                        gamma * wb_norm + wb_norm,
                        gamma * b.abs() + 1e-30,
                    )
                }
            };
            terms.per_norm.push(per_norm);
            terms.per_rounding.push(per_rounding);
            terms.constant.push(constant);
        }
        terms
    }

    #[inline(always)]
    fn bound(&self, h: usize, x: kernel::QueryNorms) -> f64 {
        self.per_norm[h] * x.norm + self.per_rounding[h] * x.rounding + self.constant[h]
    }
}

/// Scratch space of the batch path, reused across the queries of one thread.
struct Screen<'r> {
    router: &'r Router,
    options: Vec<Screened>,
    exact: Vec<f64>,
    refined: Vec<bool>,
    /// The fast path's upper and lower risk bounds of every option, at its quality head.
    upper: Vec<f64>,
    lower: Vec<f64>,
    /// The fast path's options that may still win, by their quality head.
    marked: Vec<usize>,
}

impl<'r> Screen<'r> {
    fn new(router: &'r Router) -> Self {
        Self {
            router,
            options: Vec::with_capacity(router.option_count()),
            exact: vec![0.0; router.head_count()],
            refined: vec![false; router.head_count()],
            upper: vec![0.0; router.head_count()],
            lower: vec![0.0; router.head_count()],
            marked: Vec::with_capacity(router.head_count()),
        }
    }

    /// [`Screen::decide_general`], with the common case (no candidate set, no cost cap) on a
    /// faster path that gives the same decision. `norms` are those of `x` the screen returned.
    fn decide(
        &mut self,
        approx: &[f32],
        norms: kernel::QueryNorms,
        x: &[f64],
        input_tokens: u64,
        checked: &Checked,
    ) -> Option<RouteOption> {
        // The error bounds hold only for finite values; the exact path names what overflowed.
        let finite = approx.iter().fold(true, |ok, v| ok & v.is_finite());
        if !(finite && norms.norm.is_finite() && norms.rounding.is_finite()) {
            return None;
        }
        if checked.candidates.is_none() && checked.max_cost.is_none() {
            self.decide_all(approx, norms, x, input_tokens, checked.lambda)
        } else {
            self.decide_general(approx, norms, x, input_tokens, checked)
        }
    }

    /// The screen over every option of the pool without a cost cap: the same bounds and the same
    /// rule as [`Screen::decide_general`], computed in two flat passes (upper bounds and the best
    /// lower bound, then the few options whose upper bound reaches it) without per-option records.
    fn decide_all(
        &mut self,
        approx: &[f32],
        norms: kernel::QueryNorms,
        x: &[f64],
        input_tokens: u64,
        lambda: f64,
    ) -> Option<RouteOption> {
        let router = self.router;
        let b = router.budgets.len();
        let per_model = b + 2;
        let terms = &router.error_terms;
        let keep = 1.0 - lambda;
        let tokens = input_tokens as f64;
        // Every head's bounds as if it were the quality head of a limited budget, in one flat pass
        // (the unlimited options' heads are put right below).
        let flat = FlatBounds {
            approx,
            norms,
            tokens,
            lambda,
        };
        flat.run(router, &mut self.upper, &mut self.lower);
        // Unlimited: quality and predicted tokens (so the cost) are both approximate. The option
        // takes its quality head's place; the token head is no option.
        for (m, model) in router.models.iter().enumerate() {
            let (q, t) = (m * per_model + b, m * per_model + b + 1);
            let value = |h: usize| f64::from(approx[h]) + router.intercept[h];
            let error = |h: usize| terms.bound(h, norms);
            let input_cost = tokens * model.input_price_per_million / 1e6;
            let predicted = value(t).max(0.0);
            let cost = input_cost + predicted * model.output_price_per_million / 1e6;
            let cost_slack = model.output_price_per_million / 1e6 * error(t) + 1e-15 * cost;
            let risk = keep * value(q).clamp(0.0, 1.0) - lambda * cost;
            let slack = keep * error(q) + lambda * cost_slack + 1e-14 * (1.0 + risk.abs() + cost);
            (self.upper[q], self.lower[q]) = (risk + slack, risk - slack);
            (self.upper[t], self.lower[t]) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        }
        let floor = max(&self.lower);
        if !floor.is_finite() {
            return None;
        }

        // The options that may still win (by their quality head, in pool order); give up when
        // their heads are most of them. No two options share a head.
        self.marked.clear();
        for (h, &u) in self.upper.iter().enumerate() {
            if u >= floor {
                self.marked.push(h);
            }
        }
        let unlimited = self.marked.iter().filter(|&&h| h % per_model == b).count();
        if (self.marked.len() + unlimited) * 4 > router.head_count() {
            return None;
        }
        let dim = router.dim;
        let exact =
            |h: usize| kernel::dot(&router.coef[h * dim..(h + 1) * dim], x) + router.intercept[h];
        let mut best: Option<RouteOption> = None;
        for &h in &self.marked {
            let (m, k) = (h / per_model, h % per_model);
            let token_head = if k == b { exact(h + 1) } else { 0.0 };
            let opt = router.option(m, k, exact(h), token_head, input_tokens, lambda);
            if best.is_none_or(|best| opt.risk > best.risk) {
                best = Some(opt);
            }
        }
        best
    }

    /// The exact decision for one query from its float32 head values, or `None` when the screen
    /// cannot settle it cheaply (the caller then takes the exact path).
    ///
    /// Every head value `s` of the float32 product is within `E = γ·(‖w‖·‖x‖ + |b|)` of the exact
    /// float64 value, so each option's risk is known to within a slack. Let `L` be the best lower
    /// bound among options surely within the cost cap: an option whose upper bound is below `L` can
    /// neither win nor tie, and only the others are recomputed exactly.
    fn decide_general(
        &mut self,
        approx: &[f32],
        norms: kernel::QueryNorms,
        x: &[f64],
        input_tokens: u64,
        checked: &Checked,
    ) -> Option<RouteOption> {
        let router = self.router;
        let b = router.budgets.len();
        let per_model = b + 2;
        let lambda = checked.lambda;
        let head_error = |h: usize| router.error_terms.bound(h, norms);
        let value = |h: usize| f64::from(approx[h]) + router.intercept[h];
        let keep = 1.0 - lambda;
        // The last term of each slack covers the rounding of the risk formula on both paths.
        let rounding = |risk: f64, cost: f64| 1e-14 * (1.0 + risk.abs() + cost);

        self.options.clear();
        let mut floor = f64::NEG_INFINITY;
        for m in (0..router.models.len()).filter(|&m| router.is_candidate(checked, m)) {
            let model = &router.models[m];
            let base = m * per_model;
            let input_cost = input_tokens as f64 * model.input_price_per_million / 1e6;
            // Limited budgets: the cost is exact, only the quality is approximate.
            for k in 0..b {
                let cost = input_cost + router.limited_cost[m * b + k];
                if checked.max_cost.is_some_and(|max| cost > max) {
                    continue;
                }
                let h = base + k;
                let risk = keep * value(h).clamp(0.0, 1.0) - lambda * cost;
                let slack = keep * head_error(h) + rounding(risk, cost);
                floor = floor.max(risk - slack);
                self.options.push(Screened {
                    m,
                    k,
                    risk,
                    slack,
                    within_cap: Some(true),
                });
            }
            // Unlimited: quality and predicted tokens (so the cost) are both approximate.
            let (q, t) = (base + b, base + b + 1);
            let tokens = value(t).max(0.0);
            let cost = input_cost + tokens * model.output_price_per_million / 1e6;
            let cost_slack = model.output_price_per_million / 1e6 * head_error(t) + 1e-15 * cost;
            let risk = keep * value(q).clamp(0.0, 1.0) - lambda * cost;
            let slack = keep * head_error(q) + lambda * cost_slack + rounding(risk, cost);
            let within_cap = match checked.max_cost {
                None => Some(true),
                Some(max) if cost + cost_slack <= max => Some(true),
                Some(max) if cost - cost_slack > max => Some(false),
                Some(_) => None,
            };
            if within_cap == Some(true) {
                floor = floor.max(risk - slack);
            }
            if within_cap != Some(false) {
                self.options.push(Screened {
                    m,
                    k: b,
                    risk,
                    slack,
                    within_cap,
                });
            }
        }

        // Mark the heads of every option that may still win; give up when that is most of them.
        self.refined.iter_mut().for_each(|r| *r = false);
        self.marked.clear();
        let mut to_refine = 0;
        for s in self.options.iter().filter(|s| s.risk + s.slack >= floor) {
            let base = s.m * per_model;
            let heads: &[usize] = if s.k == b {
                &[base + b, base + b + 1]
            } else {
                &[base + s.k]
            };
            for &h in heads {
                if !self.refined[h] {
                    self.refined[h] = true;
                    to_refine += 1;
                }
            }
        }
        if to_refine * 4 > router.head_count() {
            return None;
        }
        let dim = router.dim;
        for (h, _) in self.refined.iter().enumerate().filter(|(_, &r)| r) {
            self.exact[h] =
                kernel::dot(&router.coef[h * dim..(h + 1) * dim], x) + router.intercept[h];
        }

        let mut best: Option<RouteOption> = None;
        for s in self.options.iter().filter(|s| s.risk + s.slack >= floor) {
            let base = s.m * per_model;
            let o = router.option(
                s.m,
                s.k,
                self.exact[base + s.k],
                self.exact[base + b + 1],
                input_tokens,
                lambda,
            );
            if s.within_cap != Some(true) && checked.max_cost.is_some_and(|max| o.cost > max) {
                continue;
            }
            if best.is_none_or(|best| o.risk > best.risk) {
                best = Some(o);
            }
        }
        best
    }
}

/// The screen's fast path's first pass: upper and lower risk bounds of every head of one query as
/// the quality head of a limited budget.
struct FlatBounds<'a> {
    approx: &'a [f32],
    norms: kernel::QueryNorms,
    tokens: f64,
    lambda: f64,
}

impl FlatBounds<'_> {
    /// Built for the widest vectors this CPU has (the same arithmetic, only more lanes at a time).
    fn run(&self, router: &Router, upper: &mut [f64], lower: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has just been checked for the feature this build requires.
                return unsafe { self.run_avx512(router, upper, lower) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: as above.
                return unsafe { self.run_avx2(router, upper, lower) };
            }
        }
        self.run_any(router, upper, lower)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, router: &Router, upper: &mut [f64], lower: &mut [f64]) {
        self.run_any(router, upper, lower)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, router: &Router, upper: &mut [f64], lower: &mut [f64]) {
        self.run_any(router, upper, lower)
    }

    #[inline(always)]
    fn run_any(&self, router: &Router, upper: &mut [f64], lower: &mut [f64]) {
        let (norms, tokens, lambda) = (self.norms, self.tokens, self.lambda);
        let keep = 1.0 - lambda;
        let terms = &router.error_terms;
        for (((((((u, l), &a), &icpt), &n), &r), &c), (&input_price, &budget_cost)) in upper
            .iter_mut()
            .zip(lower.iter_mut())
            .zip(self.approx)
            .zip(&router.intercept)
            .zip(&terms.per_norm)
            .zip(&terms.per_rounding)
            .zip(&terms.constant)
            .zip(router.head_input_price.iter().zip(&router.head_budget_cost))
        {
            let error = n * norms.norm + r * norms.rounding + c;
            let cost = tokens * input_price + budget_cost;
            let risk = keep * (f64::from(a) + icpt).clamp(0.0, 1.0) - lambda * cost;
            let slack = keep * error + 1e-14 * (1.0 + risk.abs() + cost);
            *u = risk + slack;
            *l = risk - slack;
        }
    }
}

/// The largest of `values` (finite, or −∞), with independent lanes rather than one chain.
fn max(values: &[f64]) -> f64 {
    const LANES: usize = 8;
    let mut lanes = [f64::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for i in 0..LANES {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router of `models` models with random heads (quality near 0.5, tokens near 400).
    fn random_router(seed: u64, dim: usize, budgets: &[u32], models: usize) -> Router {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let per_model = budgets.len() + 2;
        let heads = (0..models)
            .map(|m| {
                let scale = |k: usize| if k + 1 == per_model { 300.0 } else { 0.4 };
                let base = |k: usize| if k + 1 == per_model { 400.0 } else { 0.5 };
                ModelHeads {
                    name: format!("model-{m}"),
                    input_price_per_million: 0.5 + 0.4 * next(),
                    output_price_per_million: 2.0 + next(),
                    coef: (0..per_model * dim)
                        .map(|i| (next() * scale(i / dim)) as f32)
                        .collect(),
                    intercept: (0..per_model)
                        .map(|k| (base(k) + next() * scale(k) / 2.0) as f32)
                        .collect(),
                }
            })
            .collect();
        Router::new(dim, budgets.to_vec(), heads).unwrap()
    }

    /// Every build of the flat pass gives the portable build's bounds, bit for bit.
    #[test]
    fn the_flat_bounds_are_the_same_in_every_build() {
        let router = random_router(11, 24, &[10, 100, 1000, 5000], 7);
        let heads = router.head_count();
        let approx: Vec<f32> = (0..heads).map(|h| (h as f32 * 0.61).sin() * 0.9).collect();
        let flat = FlatBounds {
            approx: &approx,
            norms: kernel::QueryNorms {
                norm: 1.3,
                rounding: 0.004,
            },
            tokens: 321.0,
            lambda: 0.7,
        };
        let (mut upper, mut lower) = (vec![0.0; heads], vec![0.0; heads]);
        flat.run_any(&router, &mut upper, &mut lower);
        let mut builds: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            let (mut u, mut l) = (vec![0.0; heads], vec![0.0; heads]);
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { flat.run_avx2(&router, &mut u, &mut l) };
                builds.push(("avx2", u.clone(), l.clone()));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { flat.run_avx512(&router, &mut u, &mut l) };
                builds.push(("avx512", u, l));
            }
        }
        for (name, u, l) in builds {
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&u), bits(&upper), "{name}");
            assert_eq!(bits(&l), bits(&lower), "{name}");
        }
    }

    /// The batch path on every screen this CPU runs (the float32 kernels too, which the router
    /// does not choose where bfloat16 is available) gives the exact path's decisions.
    #[test]
    fn every_screen_gives_the_exact_decisions() {
        let dim = 40;
        let router = random_router(7, dim, &[10, 100, 1000], 5);
        let mut screens = vec![router.clone()];
        for isa in kernel::Isa::available() {
            let mut r = router.clone();
            r.packed = kernel::Packed::with_isa(&r.coef, dim, isa);
            r.bf16 = None;
            r.error_terms = ErrorTerms::new(&r.coef, &r.intercept, dim, None);
            screens.push(r);
        }
        let n = 61;
        let xs: Vec<f64> = (0..n * dim)
            .map(|i| f64::from(((i as f32) * 0.377).sin() / (dim as f32).sqrt()))
            .collect();
        let tokens: Vec<u64> = (0..n as u64).map(|i| i * 53 % 2000).collect();
        for lambda in [0.0, 0.5, 0.99, 0.99999, 1.0] {
            for params in [
                RouteParams::new(lambda),
                RouteParams::new(lambda).with_max_cost(0.003),
            ] {
                let checked = router.checked(&params).unwrap();
                let exact: Vec<_> = xs
                    .chunks_exact(dim)
                    .zip(&tokens)
                    .enumerate()
                    .map(|(i, (x, &t))| router.route_exact(i, x, t, &checked).unwrap())
                    .collect();
                for (s, screen) in screens.iter().enumerate() {
                    let batch = screen.route_batch(&xs, &tokens, &params).unwrap();
                    assert_eq!(batch, exact, "screen {s}, {params:?}");
                }
            }
        }
    }
}
