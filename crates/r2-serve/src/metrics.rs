//! Prometheus metrics (text exposition format 0.0.4), hand-rolled: counters and histograms on
//! atomics, the few label sets that vary freely behind a mutex.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use r2_core::{Budget, Decision, Router};

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// A histogram of durations with fixed buckets.
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative), the last one for `+Inf`.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(bound) => format!("{bound}"),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Every metric of the server.
pub struct Metrics {
    /// (endpoint, status) → requests answered.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    embed: Histogram,
    route: Histogram,
    provider: Histogram,
    /// Decisions per (model, budget), model-major, budgets ascending then unlimited.
    decisions: Vec<AtomicU64>,
    /// The (model, budget) labels of `decisions`, in the same order.
    decision_labels: Vec<(String, String)>,
    /// Slots per model in `decisions`.
    per_model: usize,
    budgets: Vec<u32>,
    provider_errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Metrics for a server routing with `router`.
    pub fn new(router: &Router) -> Self {
        let budgets = router.budgets().to_vec();
        let per_model = budgets.len() + 1;
        let mut decision_labels = Vec::with_capacity(router.models().len() * per_model);
        for model in router.models() {
            for budget in budgets.iter().copied().map(Budget::Tokens) {
                decision_labels.push((model.name.clone(), budget.to_string()));
            }
            decision_labels.push((model.name.clone(), Budget::Unlimited.to_string()));
        }
        Self {
            requests: Mutex::new(BTreeMap::new()),
            embed: Histogram::new(EMBED_BUCKETS),
            route: Histogram::new(ROUTE_BUCKETS),
            provider: Histogram::new(PROVIDER_BUCKETS),
            decisions: decision_labels.iter().map(|_| AtomicU64::new(0)).collect(),
            decision_labels,
            per_model,
            budgets,
            provider_errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts a request answered with `status` on `endpoint`.
    pub fn request(&self, endpoint: &'static str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((endpoint, status)).or_default() += 1;
    }

    pub fn embed_took(&self, elapsed: Duration) {
        self.embed.observe(elapsed);
    }

    pub fn route_took(&self, elapsed: Duration) {
        self.route.observe(elapsed);
    }

    pub fn provider_took(&self, elapsed: Duration) {
        self.provider.observe(elapsed);
    }

    /// Counts a routing decision.
    pub fn decision(&self, decision: &Decision) {
        let choice = &decision.choice;
        let budget = match choice.budget {
            Budget::Tokens(n) => match self.budgets.binary_search(&n) {
                Ok(i) => i,
                Err(_) => return,
            },
            Budget::Unlimited => self.budgets.len(),
        };
        if let Some(slot) = self.decisions.get(choice.model * self.per_model + budget) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a failed provider call.
    pub fn provider_error(&self, kind: &'static str) {
        let mut errors = self
            .provider_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *errors.entry(kind).or_default() += 1;
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP r2_requests_total HTTP requests answered, by endpoint and status.\n");
        out.push_str("# TYPE r2_requests_total counter\n");
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((endpoint, status), n) in requests {
            let _ = writeln!(
                out,
                "r2_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
                escape(endpoint)
            );
        }
        self.embed.render(
            &mut out,
            "r2_embed_seconds",
            "Time to embed the texts of one request.",
        );
        self.route.render(
            &mut out,
            "r2_route_seconds",
            "Time to route the embeddings of one request.",
        );
        self.provider.render(
            &mut out,
            "r2_provider_seconds",
            "Time of one provider call: the whole answer, or until the headers of a streamed one.",
        );
        out.push_str("# HELP r2_decisions_total Routing decisions, by chosen model and budget.\n");
        out.push_str("# TYPE r2_decisions_total counter\n");
        for ((model, budget), n) in self.decision_labels.iter().zip(&self.decisions) {
            let _ = writeln!(
                out,
                "r2_decisions_total{{model=\"{}\",budget=\"{budget}\"}} {}",
                escape(model),
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP r2_provider_errors_total Failed provider calls, by kind.\n");
        out.push_str("# TYPE r2_provider_errors_total counter\n");
        let errors = self
            .provider_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (kind, n) in errors {
            let _ = writeln!(out, "r2_provider_errors_total{{kind=\"{kind}\"}} {n}");
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_sum 5.55\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
