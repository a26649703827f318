//! Decisions and answers in upstream's JSON shape, shared by the command line and the server.

use r2_core::{Budget, Decision, RouteOption, Router};
use serde::Serialize;

/// Rounds like Python's `round(x, digits)`: to the nearest decimal with `digits` places, ties to
/// even on the exact binary value, returned as the nearest float64.
///
/// Upstream rounds the numbers it reports (quality to 4 places, cost and risk to 8); r2 chooses on
/// unrounded values and rounds only what it prints.
pub fn round_like_python(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    // Rust's fixed-precision formatting is exact and rounds ties to even, like CPython's `round`.
    format!("{x:.digits$}").parse().unwrap_or(x)
}

/// An option with upstream's keys and rounding.
#[derive(Serialize)]
pub struct OptionJson<'a> {
    pub model: &'a str,
    pub openrouter_id: &'a str,
    pub budget: Budget,
    pub predicted_quality: f64,
    pub predicted_output_tokens: serde_json::Value,
    pub predicted_cost_usd: f64,
    pub risk: f64,
}

/// A decision with upstream's keys and rounding; `id` and `query` are echoed from the input.
#[derive(Serialize)]
pub struct DecisionJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<&'a str>,
    pub model: &'a str,
    pub openrouter_id: &'a str,
    pub budget: Budget,
    pub predicted_quality: f64,
    pub predicted_cost_usd: f64,
    pub risk: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_options: Option<Vec<OptionJson<'a>>>,
}

/// Upstream's answer object, plus the USD cost of the call.
#[derive(Serialize)]
pub struct GenerationJson<'a> {
    pub query: &'a str,
    pub model: &'a str,
    pub openrouter_id: &'a str,
    pub budget: Budget,
    pub predicted_quality: f64,
    pub risk: f64,
    pub response: &'a str,
    pub usage: r2_llm::Usage,
    pub cost_usd: f64,
    /// What answered when the choice failed and another model did (r2's own key, absent
    /// otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackJson<'a>>,
}

/// The option that answered after a fallback, and every attempt.
#[derive(Serialize)]
pub struct FallbackJson<'a> {
    pub model: &'a str,
    pub openrouter_id: &'a str,
    pub budget: Budget,
    pub attempts: Vec<AttemptJson<'a>>,
}

/// One option tried: its model and budget, and why it failed (`null` for the one that answered).
#[derive(Serialize)]
pub struct AttemptJson<'a> {
    pub model: &'a str,
    pub budget: Budget,
    pub error: Option<&'a str>,
}

/// Decisions and answers as upstream prints them: its keys, its rounding (quality 4 decimals, cost
/// and risk 8), names and OpenRouter ids from the pool. Made by [`crate::R2Router::report`].
pub struct Report<'a> {
    router: &'a Router,
    openrouter_ids: Vec<&'a str>,
}

impl<'a> Report<'a> {
    pub(crate) fn new(router: &'a Router, openrouter_ids: Vec<&'a str>) -> Self {
        Self {
            router,
            openrouter_ids,
        }
    }

    fn model(&self, index: usize) -> &'a str {
        &self.router.models()[index].name
    }

    /// The name of model `index`.
    pub fn model_name(&self, index: usize) -> &'a str {
        self.model(index)
    }

    /// upstream's `route_and_generate` output object, with the cost of the call added.
    pub fn generation(&self, answer: &'a crate::Answer, query: &'a str) -> GenerationJson<'a> {
        let (d, g) = (&answer.decision, &answer.generation);
        let c = self.option(&d.choice);
        let fallback = (answer.attempts.len() > 1).then(|| {
            let a = self.option(&answer.answered);
            FallbackJson {
                model: a.model,
                openrouter_id: a.openrouter_id,
                budget: a.budget,
                attempts: answer
                    .attempts
                    .iter()
                    .map(|t| AttemptJson {
                        model: &t.model,
                        budget: t.budget,
                        error: t.error.as_deref(),
                    })
                    .collect(),
            }
        });
        GenerationJson {
            query,
            model: c.model,
            openrouter_id: c.openrouter_id,
            budget: c.budget,
            predicted_quality: c.predicted_quality,
            risk: c.risk,
            response: &g.text,
            usage: g.usage,
            cost_usd: g.cost_usd,
            fallback,
        }
    }

    /// Upstream's view of an option, rounded as upstream rounds it.
    pub fn option(&self, o: &RouteOption) -> OptionJson<'a> {
        let output_tokens = match o.budget {
            Budget::Tokens(n) => serde_json::Value::from(n),
            Budget::Unlimited => serde_json::Value::from(round_like_python(o.output_tokens, 1)),
        };
        OptionJson {
            model: self.model(o.model),
            openrouter_id: self.openrouter_ids[o.model],
            budget: o.budget,
            predicted_quality: round_like_python(o.quality, 4),
            predicted_output_tokens: output_tokens,
            predicted_cost_usd: round_like_python(o.cost, 8),
            risk: round_like_python(o.risk, 8),
        }
    }

    /// Upstream's decision object; `all_options` only when `verbose`.
    pub fn decision(
        &self,
        d: &Decision,
        id: Option<&'a serde_json::Value>,
        query: Option<&'a str>,
        verbose: bool,
    ) -> DecisionJson<'a> {
        let c = self.option(&d.choice);
        DecisionJson {
            id,
            query,
            model: c.model,
            openrouter_id: c.openrouter_id,
            budget: c.budget,
            predicted_quality: c.predicted_quality,
            predicted_cost_usd: c.predicted_cost_usd,
            risk: c.risk,
            all_options: verbose.then(|| self.ranked(d)),
        }
    }

    /// The ranked options in upstream's order: by risk rounded to 8 decimals, highest first, and
    /// options of equal rounded risk in pool order (models in pool order, budgets ascending, then
    /// unlimited), as Python's stable `sorted(all_options, key=lambda x: -x["risk"])` leaves them.
    pub fn ranked(&self, d: &Decision) -> Vec<OptionJson<'a>> {
        let mut ranked: Vec<(&RouteOption, OptionJson<'a>)> =
            d.ranked.iter().map(|o| (o, self.option(o))).collect();
        let pool_order = |o: &RouteOption| {
            let budget = match o.budget {
                Budget::Tokens(n) => u64::from(n),
                Budget::Unlimited => u64::MAX,
            };
            (o.model, budget)
        };
        ranked.sort_by(|(a, ja), (b, jb)| {
            jb.risk
                .total_cmp(&ja.risk)
                .then_with(|| pool_order(a).cmp(&pool_order(b)))
        });
        ranked.into_iter().map(|(_, j)| j).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_python_on_ties_and_binary_near_ties() {
        // Values and expectations from CPython 3.11.
        assert_eq!(round_like_python(0.25, 1), 0.2);
        assert_eq!(round_like_python(0.35, 1), 0.3);
        assert_eq!(round_like_python(2.5, 0), 2.0);
        assert_eq!(round_like_python(0.001953125, 8), 0.00195312);
        assert_eq!(round_like_python(0.125, 2), 0.12);
        assert_eq!(round_like_python(-0.000000015, 8), -0.00000001);
        assert_eq!(round_like_python(0.80406049123, 8), 0.80406049);
    }
}
