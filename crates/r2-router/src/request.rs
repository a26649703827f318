//! The routing flow every front-end shares: a [`RouteRequest`] (what a caller asks for) resolved
//! once into a [`RoutePlan`] (checked parameters), then embeddings or texts routed with the batch
//! strategy (threads, interpolated budgets, float32 → float64), and the routed chat request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use r2_core::{Budget, Decision, RouteOption, RouteParams};
use serde_json::{Map, Value};

use crate::{Error, R2Router, Result};

/// The input tokens of an embedding routed without its text and without a count (upstream's
/// `route(embedding, input_tokens=100)`).
pub const DEFAULT_INPUT_TOKENS: u64 = 100;

/// Batches smaller than this are routed on the calling thread: threads pay off on larger ones.
pub const PARALLEL_THRESHOLD: usize = 256;

/// What a caller asks for; every field has a default (the router's λ and candidates, trained
/// budgets only, upstream's input-token estimate).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteRequest {
    /// λ in [0, 1]. Default: the router's ([`R2Router::lambda`]).
    pub lambda: Option<f64>,
    /// Only these pool models. Default: the router's default candidates.
    pub models: Option<Vec<String>>,
    /// Drop options predicted to cost more than this many USD.
    pub max_cost: Option<f64>,
    /// Every pool model, also those not `available` on the API (ignored with `models`).
    pub all_models: bool,
    /// Also rank every option (`Decision::ranked`).
    pub ranked: bool,
    /// Interpolated budgets between adjacent trained ones (0: trained budgets only).
    pub interpolate: u32,
    /// The input tokens of every query. Default: upstream's estimate for a text; the count given
    /// with an embedding, else [`DEFAULT_INPUT_TOKENS`].
    pub input_tokens: Option<u64>,
}

/// A checked [`RouteRequest`]: made by [`R2Router::plan`], used by the routing calls.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePlan {
    /// The core's parameters (λ, candidates, cost cap, ranking).
    pub params: RouteParams,
    /// Interpolated budgets between adjacent trained ones.
    pub interpolate: u32,
    /// The input tokens of every query, when the request fixed them.
    pub input_tokens: Option<u64>,
    /// Threads for batches of at least [`PARALLEL_THRESHOLD`] queries.
    pub threads: usize,
}

impl RoutePlan {
    /// The input tokens of a text: the request's count, else upstream's estimate.
    pub fn text_tokens(&self, text: &str) -> u64 {
        self.input_tokens
            .unwrap_or_else(|| r2_core::estimate_input_tokens(text))
    }

    /// The input tokens of an embedding that came with `given` (or none): that count, else the
    /// request's, else [`DEFAULT_INPUT_TOKENS`].
    pub fn embedding_tokens(&self, given: Option<u64>) -> u64 {
        given.or(self.input_tokens).unwrap_or(DEFAULT_INPUT_TOKENS)
    }

    /// Sets the number of threads for large batches (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }
}

/// The decisions of a batch: one per query up to the first query that could not be routed, and
/// that query's error (which names it).
#[derive(Debug)]
pub struct Routed {
    pub decisions: Vec<Decision>,
    pub failed: Option<Error>,
}

impl Routed {
    /// All the decisions, or the error of the first query that could not be routed.
    pub fn into_result(self) -> Result<Vec<Decision>> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.decisions),
        }
    }
}

/// Told what the router does, for metrics and logs; every method has an empty default.
pub trait Observer: Send + Sync {
    /// `texts` texts were embedded in `took`.
    fn embedded(&self, _texts: usize, _took: Duration) {}
    /// `queries` queries were routed in `took`.
    fn routed(&self, _queries: usize, _took: Duration) {}
    /// A decision was made.
    fn decided(&self, _decision: &Decision) {}
    /// The provider answered (or failed) in `took`.
    fn generated(&self, _took: Duration) {}
}

/// The observer of a router that has none.
pub(crate) struct Silent;

impl Observer for Silent {}

pub(crate) fn silent() -> Arc<dyn Observer> {
    Arc::new(Silent)
}

impl R2Router {
    /// Resolves `request` against this router's defaults and checks it (λ in [0, 1], known
    /// models, a usable cost cap) before anything is routed.
    pub fn plan(&self, request: &RouteRequest) -> Result<RoutePlan> {
        let router = self.router();
        let mut params = self.default_params()?.with_ranked(request.ranked);
        if let Some(lambda) = request.lambda {
            params.lambda = lambda;
        }
        match &request.models {
            Some(models) => params.candidates = Some(router.model_mask(models)?),
            None if request.all_models => params.candidates = None,
            None => {}
        }
        if let Some(max) = request.max_cost {
            params = params.with_max_cost(max);
        }
        router.check_params(&params)?;
        Ok(RoutePlan {
            params,
            interpolate: request.interpolate,
            input_tokens: request.input_tokens,
            threads: self.threads,
        })
    }

    /// The names of the models `plan` routes to, in pool order.
    pub fn candidates(&self, plan: &RoutePlan) -> Vec<&str> {
        let router = self.router();
        (0..router.models().len())
            .filter(|&i| {
                plan.params
                    .candidates
                    .as_ref()
                    .is_none_or(|c| c.contains(i))
            })
            .map(|i| self.model_name(i))
            .collect()
    }

    /// Routes embeddings held back to back (`input_tokens.len()` of them, each
    /// [`r2_core::Router::dim`] long) with `plan`: the screened batch path (on `plan.threads`
    /// threads from [`PARALLEL_THRESHOLD`] queries), or with interpolated budgets the exact path
    /// query by query. On a query that cannot be routed, the decisions before it are kept.
    pub fn route_embeddings(
        &self,
        embeddings: &[f64],
        input_tokens: &[u64],
        plan: &RoutePlan,
    ) -> Routed {
        let started = Instant::now();
        let routed = self.route_batch(embeddings, input_tokens, plan);
        self.observer
            .routed(routed.decisions.len(), started.elapsed());
        for decision in &routed.decisions {
            self.observer.decided(decision);
        }
        routed
    }

    fn route_batch(&self, embeddings: &[f64], input_tokens: &[u64], plan: &RoutePlan) -> Routed {
        let router = self.router();
        let dim = router.dim();
        if plan.interpolate > 0 {
            let mut decisions = Vec::with_capacity(input_tokens.len());
            for (q, (x, &t)) in embeddings.chunks(dim).zip(input_tokens).enumerate() {
                match router.route_interpolated(x, t, &plan.params, plan.interpolate) {
                    Ok(d) => decisions.push(d),
                    Err(e) => {
                        return Routed {
                            decisions,
                            failed: Some(Error::Core(renumber(e, q))),
                        }
                    }
                }
            }
            return Routed {
                decisions,
                failed: None,
            };
        }
        let threads = if input_tokens.len() >= PARALLEL_THRESHOLD {
            plan.threads
        } else {
            1
        };
        let route = |n: usize| {
            router.route_batch_parallel(
                &embeddings[..(n * dim).min(embeddings.len())],
                &input_tokens[..n],
                &plan.params,
                threads,
            )
        };
        match route(input_tokens.len()) {
            Ok(decisions) => Routed {
                decisions,
                failed: None,
            },
            Err(e) => {
                // The batch names the first query that failed; the ones before it route.
                let decisions = query_of(&e).and_then(|q| route(q).ok()).unwrap_or_default();
                Routed {
                    decisions,
                    failed: Some(Error::Core(e)),
                }
            }
        }
    }

    /// Embeds `texts` (one request or forward pass per `embed_batch_size` texts) and routes them
    /// with `plan`, each with [`RoutePlan::text_tokens`]. An embedding failure fails the whole
    /// call; a query that cannot be routed keeps the decisions before it.
    pub async fn route_texts(&self, texts: &[String], plan: &RoutePlan) -> Result<Routed> {
        let embeddings = self.embed(texts).await?;
        let tokens: Vec<u64> = texts.iter().map(|t| plan.text_tokens(t)).collect();
        Ok(self.route_embeddings(&embeddings, &tokens, plan))
    }

    /// The embeddings of `texts`, back to back, as the float64 values routing takes.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<f64>> {
        let started = Instant::now();
        let vectors = self.embedder().await?.embed(texts).await;
        self.observer.embedded(texts.len(), started.elapsed());
        Ok(vectors?
            .iter()
            .flat_map(|v| v.iter().map(|&x| f64::from(x)))
            .collect())
    }

    /// A chat request body (any OpenAI-compatible fields) as routing sends it: `model` the
    /// chosen model's provider id, and for a limited budget the budget system message first —
    /// the same message [`r2_llm::ChatRequest::routed`] starts with. Everything else is kept.
    pub fn routed_body(
        &self,
        mut body: Map<String, Value>,
        choice: &RouteOption,
    ) -> Map<String, Value> {
        let entry = self.pool_model(choice.model);
        body.insert("model".into(), Value::String(entry.openrouter_id.clone()));
        if let Budget::Tokens(budget) = choice.budget {
            let system = r2_llm::Message::system(r2_llm::budget_system_prompt(budget));
            if let (Some(Value::Array(messages)), Ok(system)) =
                (body.get_mut("messages"), serde_json::to_value(system))
            {
                messages.insert(0, system);
            }
        }
        body
    }
}

/// The query index a core error is about, if any.
pub fn query_of(e: &r2_core::Error) -> Option<usize> {
    match e {
        r2_core::Error::DimensionMismatch { query, .. }
        | r2_core::Error::NonFiniteEmbedding { query, .. }
        | r2_core::Error::NonFinitePrediction { query, .. }
        | r2_core::Error::NothingWithinMaxCost { query, .. } => Some(*query),
        _ => None,
    }
}

/// A single-query core error (which says query 0) renumbered as query `q` of a batch.
fn renumber(e: r2_core::Error, q: usize) -> r2_core::Error {
    use r2_core::Error as E;
    match e {
        E::DimensionMismatch { expected, got, .. } => E::DimensionMismatch {
            query: q,
            expected,
            got,
        },
        E::NonFiniteEmbedding {
            position, value, ..
        } => E::NonFiniteEmbedding {
            query: q,
            position,
            value,
        },
        E::NonFinitePrediction {
            model, head, value, ..
        } => E::NonFinitePrediction {
            query: q,
            model,
            head,
            value,
        },
        E::NothingWithinMaxCost {
            max_cost,
            cheapest_model,
            cheapest_budget,
            cheapest_cost,
            ..
        } => E::NothingWithinMaxCost {
            query: q,
            max_cost,
            cheapest_model,
            cheapest_budget,
            cheapest_cost,
        },
        other => other,
    }
}
