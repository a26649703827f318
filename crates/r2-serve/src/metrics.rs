//! Prometheus metrics through `prometheus-client` (text exposition format 0.0.4): a [`Registry`]
//! per server, no globals. Embedding, routing and provider timings and the decisions come from
//! the router through [`Observer`]; requests and provider errors from the gateway.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use r2_router::r2_core::{Budget, Decision, Router};
use r2_router::Observer;

/// The `Content-Type` of `GET /metrics`: `text/plain; version=0.0.4; charset=utf-8`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of `r2_embed_seconds`: an embeddings server or the in-process model.
const EMBED_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds (seconds) of `r2_route_seconds`: routing takes microseconds.
const ROUTE_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.1,
];
/// Upper bounds (seconds) of `r2_provider_seconds`: LLM calls take from a fraction of a second
/// to minutes.
const PROVIDER_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    model: String,
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    from: String,
    to: String,
}

/// Spend totals since the start, for `GET /v1/r2/stats`.
#[derive(Debug, Default)]
struct Totals {
    requests: u64,
    spend_usd: f64,
    reference_spend_usd: f64,
    /// Per pool model: answered requests and their spend.
    models: BTreeMap<String, (u64, f64)>,
}

/// Every metric of the server, in its own registry:
///
/// - `r2_requests_total{endpoint, status}` (counter): HTTP requests answered;
/// - `r2_embed_seconds`, `r2_route_seconds`, `r2_provider_seconds` (histograms): the time to
///   embed the texts of one request, to route its embeddings, of one provider call;
/// - `r2_decisions_total{model, budget}` (counter, every pair from the start): decisions;
/// - `r2_provider_errors_total{kind}` (counter): failed provider calls;
/// - `r2_fallbacks_total{from, to}` (counter): a failed option's model and the model tried next;
/// - `r2_spend_usd_total{model}` (counter): the actual cost of answered requests (`usage` × the
///   pool's prices), by the model that answered;
/// - `r2_reference_spend_usd_total` (counter): what the same routed requests would have cost on
///   the reference model (its predicted unlimited output tokens).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    embed: Histogram,
    route: Histogram,
    provider: Histogram,
    /// The counter of each (model, budget), model-major, budgets ascending then unlimited.
    decisions: Vec<Counter>,
    /// Slots per model in `decisions`.
    per_model: usize,
    budgets: Vec<u32>,
    provider_errors: Family<ErrorLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    spend: Family<ModelLabels, Counter<f64, AtomicU64>>,
    reference_spend: Counter<f64, AtomicU64>,
    totals: Mutex<Totals>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics for a server routing with `router`.
    pub fn new(router: &Router) -> Self {
        let mut registry = Registry::default();
        // The registry adds `_total` to counters and a full stop to every help text.
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "r2_requests",
            "HTTP requests answered, by endpoint and status",
            requests.clone(),
        );
        let embed = Histogram::new(EMBED_BUCKETS.iter().copied());
        registry.register(
            "r2_embed_seconds",
            "Time to embed the texts of one request",
            embed.clone(),
        );
        let route = Histogram::new(ROUTE_BUCKETS.iter().copied());
        registry.register(
            "r2_route_seconds",
            "Time to route the embeddings of one request",
            route.clone(),
        );
        let provider = Histogram::new(PROVIDER_BUCKETS.iter().copied());
        registry.register(
            "r2_provider_seconds",
            "Time of one provider call: the whole answer, or until the headers of a streamed one",
            provider.clone(),
        );
        let decision_family = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "r2_decisions",
            "Routing decisions, by chosen model and budget",
            decision_family.clone(),
        );
        let provider_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "r2_provider_errors",
            "Failed provider calls, by kind",
            provider_errors.clone(),
        );

        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "r2_fallbacks",
            "Provider calls that failed and moved on to another model, by from and to model",
            fallbacks.clone(),
        );
        let spend = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "r2_spend_usd",
            "Actual cost of answered requests in USD (usage times the pool's prices), by model",
            spend.clone(),
        );
        let reference_spend = Counter::<f64, AtomicU64>::default();
        registry.register(
            "r2_reference_spend_usd",
            "What the routed requests would have cost on the reference model, in USD",
            reference_spend.clone(),
        );

        let budgets = router.budgets().to_vec();
        let per_model = budgets.len() + 1;
        let mut decisions = Vec::with_capacity(router.models().len() * per_model);
        for model in router.models() {
            let each = budgets.iter().copied().map(Budget::Tokens);
            for budget in each.chain([Budget::Unlimited]) {
                let labels = DecisionLabels {
                    model: model.name.clone(),
                    budget: budget.to_string(),
                };
                decisions.push(decision_family.get_or_create_owned(&labels));
            }
        }
        Self {
            registry,
            requests,
            embed,
            route,
            provider,
            decisions,
            per_model,
            budgets,
            provider_errors,
            fallbacks,
            spend,
            reference_spend,
            totals: Mutex::new(Totals::default()),
        }
    }

    /// Counts a call to `from` that failed and moved on to `to`.
    pub fn fallback(&self, from: &str, to: &str) {
        let labels = FallbackLabels {
            from: from.to_owned(),
            to: to.to_owned(),
        };
        self.fallbacks.get_or_create(&labels).inc();
    }

    /// Adds an answered request: its model, actual cost and (for a routed one) what the
    /// reference model would have cost.
    pub fn spent(&self, model: &str, cost_usd: f64, reference_usd: Option<f64>) {
        let labels = ModelLabels {
            model: model.to_owned(),
        };
        self.spend.get_or_create(&labels).inc_by(cost_usd);
        if let Some(reference) = reference_usd {
            self.reference_spend.inc_by(reference);
        }
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        totals.requests += 1;
        totals.spend_usd += cost_usd;
        totals.reference_spend_usd += reference_usd.unwrap_or(cost_usd);
        let entry = totals.models.entry(model.to_owned()).or_default();
        entry.0 += 1;
        entry.1 += cost_usd;
    }

    /// The body of `GET /v1/r2/stats`: answered requests, spend, reference spend and what was
    /// saved against it, in total and per model. (An unrouted request counts its own cost as
    /// its reference.)
    pub fn stats(&self, reference_model: &str) -> serde_json::Value {
        let totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let models: serde_json::Map<String, serde_json::Value> = totals
            .models
            .iter()
            .map(|(name, (requests, spend))| {
                (
                    name.clone(),
                    serde_json::json!({"requests": requests, "spend_usd": spend}),
                )
            })
            .collect();
        serde_json::json!({
            "requests": totals.requests,
            "spend_usd": totals.spend_usd,
            "reference_model": reference_model,
            "reference_spend_usd": totals.reference_spend_usd,
            "saved_usd": totals.reference_spend_usd - totals.spend_usd,
            "models": models,
        })
    }

    /// Counts a request answered with `status` on `endpoint`.
    pub fn request(&self, endpoint: &'static str, status: u16) {
        let labels = RequestLabels { endpoint, status };
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts a failed provider call of this kind.
    pub fn provider_error(&self, kind: &'static str) {
        self.provider_errors
            .get_or_create(&ErrorLabels { kind })
            .inc();
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a `String` cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl Observer for Metrics {
    fn embedded(&self, _texts: usize, took: Duration) {
        self.embed.observe(took.as_secs_f64());
    }

    fn routed(&self, _queries: usize, took: Duration) {
        self.route.observe(took.as_secs_f64());
    }

    fn decided(&self, decision: &Decision) {
        let choice = &decision.choice;
        let budget = match choice.budget {
            Budget::Tokens(n) => match self.budgets.binary_search(&n) {
                Ok(i) => i,
                // An interpolated budget: not one of the counted pairs.
                Err(_) => return,
            },
            Budget::Unlimited => self.budgets.len(),
        };
        if let Some(counter) = self.decisions.get(choice.model * self.per_model + budget) {
            counter.inc();
        }
    }

    fn generated(&self, took: Duration) {
        self.provider.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        // One model (with a name to escape) over 1-d embeddings, budgets 10 and 100.
        let model = r2_router::r2_core::ModelHeads {
            name: "a\"b\\c\nd".into(),
            input_price_per_million: 1.0,
            output_price_per_million: 1.0,
            coef: vec![0.0; 4],
            intercept: vec![0.5, 0.5, 0.5, 100.0],
        };
        let router = Router::new(1, vec![10, 100], vec![model]).unwrap();
        Metrics::new(&router)
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let metrics = metrics();
        for took in [50, 500, 5000] {
            metrics.generated(Duration::from_millis(took));
        }
        let out = metrics.render();
        assert!(
            out.contains("# TYPE r2_provider_seconds histogram\n"),
            "{out}"
        );
        assert!(
            out.contains("r2_provider_seconds_bucket{le=\"0.1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("r2_provider_seconds_bucket{le=\"1\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("r2_provider_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("r2_provider_seconds_sum 5.55\n"), "{out}");
        assert!(out.contains("r2_provider_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped_and_every_pair_is_counted_from_zero() {
        let out = metrics().render();
        assert!(out.contains("# TYPE r2_decisions_total counter\n"), "{out}");
        for budget in ["10", "100", "unlimited"] {
            let series =
                format!("r2_decisions_total{{model=\"a\\\"b\\\\c\\nd\",budget=\"{budget}\"}} 0\n");
            assert!(out.contains(&series), "{series} in {out}");
        }
    }
}
