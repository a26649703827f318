//! Chat requests as every front-end handles them: the text a conversation is routed on, the
//! prompt's billed input tokens, the fallback chain along the ranked options, and spend against a
//! reference model.
//!
//! Conversations: routing on the **first** user message ([`RouteOn::First`], the default) puts
//! every turn of a conversation on the same model and budget, on any replica, with no shared
//! state: the first message does not change as the conversation grows. Content arrays route on
//! their `text` parts; a conversation whose last message is a tool result still routes.
//!
//! Fallback: when the chosen option's call fails in a way another model may fix
//! ([`r2_llm::Error::another_model_may_answer`]), the next-best option of the ranked list with a
//! **different model** is tried (with its own budget prompt), up to [`FallbackPolicy::fallbacks`]
//! more, all within [`FallbackPolicy::deadline`].

use std::future::Future;
use std::time::{Duration, Instant};

use r2_core::{Budget, Decision, RouteOption};
use serde_json::Value;

use crate::{Error, R2Router, Result};

/// The default number of other models tried after the first choice fails.
pub const DEFAULT_FALLBACKS: usize = 2;

/// The default time all attempts of one request may take together.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

/// Which user message of a conversation is routed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteOn {
    /// The first user message: every turn of a conversation goes to the same option.
    #[default]
    First,
    /// The last user message: each turn routed on its own.
    Last,
}

impl std::str::FromStr for RouteOn {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "first" => Ok(RouteOn::First),
            "last" => Ok(RouteOn::Last),
            other => Err(format!("`{other}` is not first or last")),
        }
    }
}

impl std::fmt::Display for RouteOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RouteOn::First => "first",
            RouteOn::Last => "last",
        })
    }
}

/// The text of a message's `content`: a string, or the `text` parts of a content array joined by
/// newlines (images and other parts skipped). `None` without text.
pub fn content_text(content: &Value) -> Option<String> {
    let text = match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// The text a conversation (`messages` of a chat request) is routed on: the first or the last
/// message with role `user` that has text. `None` when there is none.
pub fn routing_text(messages: &[Value], route_on: RouteOn) -> Option<String> {
    let user = |m: &&Value| m.get("role").and_then(Value::as_str) == Some("user");
    let text = |m: &Value| m.get("content").and_then(content_text);
    match route_on {
        RouteOn::First => messages.iter().filter(user).find_map(text),
        RouteOn::Last => messages.iter().rev().filter(user).find_map(text),
    }
}

/// The messages whose input tokens a routing decision counts: with [`RouteOn::First`], those up to
/// and including the first user message with text (the first turn's prompt, the same on every
/// later turn, so the decision cannot drift as the conversation grows); with [`RouteOn::Last`],
/// all of them (the whole prompt, as it is billed).
pub fn routing_prompt(messages: &[Value], route_on: RouteOn) -> &[Value] {
    match route_on {
        RouteOn::Last => messages,
        RouteOn::First => {
            let first = messages.iter().position(|m| {
                m.get("role").and_then(Value::as_str) == Some("user")
                    && m.get("content").and_then(content_text).is_some()
            });
            &messages[..first.map_or(messages.len(), |i| i + 1)]
        }
    }
}

/// Upstream's input-token estimate over the whole prompt, as it is billed: the text of every
/// message (system, user, assistant, tool) plus the arguments of assistant tool calls.
pub fn prompt_tokens(messages: &[Value]) -> u64 {
    let mut all = String::new();
    for message in messages {
        if let Some(text) = message.get("content").and_then(content_text) {
            all.push_str(&text);
            all.push('\n');
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                if let Some(args) = call["function"]["arguments"].as_str() {
                    all.push_str(args);
                    all.push('\n');
                }
            }
        }
    }
    r2_core::estimate_input_tokens(&all)
}

/// How far a request may fall back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackPolicy {
    /// Other models tried after the first choice (0: none).
    pub fallbacks: usize,
    /// The time all attempts may take together.
    pub deadline: Duration,
}

impl Default for FallbackPolicy {
    fn default() -> Self {
        Self {
            fallbacks: DEFAULT_FALLBACKS,
            deadline: DEFAULT_DEADLINE,
        }
    }
}

/// The options to try, in order: the decision's choice, then for each other model its best
/// option in the ranked list, up to `fallbacks` of them (fewer when the list is not ranked or
/// has fewer models).
pub fn fallback_chain(decision: &Decision, fallbacks: usize) -> Vec<RouteOption> {
    let mut chain = vec![decision.choice];
    for option in &decision.ranked {
        if chain.len() > fallbacks {
            break;
        }
        if chain.iter().all(|tried| tried.model != option.model) {
            chain.push(*option);
        }
    }
    chain
}

/// One option tried.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The pool model.
    pub model: String,
    pub budget: Budget,
    /// Why it failed; `None` for the one that answered.
    pub error: Option<String>,
    /// How long it took.
    pub took: Duration,
}

/// What answered after [`R2Router::with_fallback`]: the value, the option that gave it, and every
/// attempt (the last one is the answer).
#[derive(Debug)]
pub struct Fallen<T> {
    pub value: T,
    pub option: RouteOption,
    pub attempts: Vec<Attempt>,
}

impl<T> Fallen<T> {
    /// The first choice's model, when another one answered.
    pub fn fallback_from(&self) -> Option<&str> {
        (self.attempts.len() > 1).then(|| self.attempts[0].model.as_str())
    }
}

/// Every attempt failed (or the deadline passed): the last error and the attempts.
#[derive(Debug)]
pub struct FallbackFailure {
    pub error: Error,
    pub attempts: Vec<Attempt>,
}

impl R2Router {
    /// Calls `call` with each option of `chain` in turn until one answers, moving on only when
    /// the error says another model may answer ([`r2_llm::Error::another_model_may_answer`]; the
    /// calls' own retry policy has already run) and only within the policy's deadline. Each
    /// failure is logged with the model that failed and the one tried next.
    pub async fn with_fallback<T, F, Fut>(
        &self,
        chain: &[RouteOption],
        policy: FallbackPolicy,
        mut call: F,
    ) -> std::result::Result<Fallen<T>, FallbackFailure>
    where
        F: FnMut(RouteOption) -> Fut,
        Fut: Future<Output = std::result::Result<T, Error>>,
    {
        self.with_fallback_lending(
            chain,
            policy,
            (),
            |option, ()| {
                let call = call(option);
                async move { (call.await, ()) }
            },
            |()| true,
        )
        .await
    }

    /// [`R2Router::with_fallback`] for calls that borrow something mutably (a streaming sink):
    /// `state` is handed to each call and handed back with its outcome; no other model is tried
    /// once `may_go_on(&state)` says no (part of a stream was delivered).
    pub(crate) async fn with_fallback_lending<S, T, F, Fut>(
        &self,
        chain: &[RouteOption],
        policy: FallbackPolicy,
        mut state: S,
        mut call: F,
        may_go_on: impl Fn(&S) -> bool,
    ) -> std::result::Result<Fallen<T>, FallbackFailure>
    where
        F: FnMut(RouteOption, S) -> Fut,
        Fut: Future<Output = (std::result::Result<T, Error>, S)>,
    {
        let started = Instant::now();
        let mut attempts = Vec::new();
        let limit = chain.len().min(policy.fallbacks + 1);
        for (i, option) in chain.iter().take(limit).enumerate() {
            let model = self.model_name(option.model).to_owned();
            let attempt_started = Instant::now();
            let left = policy.deadline.saturating_sub(started.elapsed());
            let outcome = match tokio::time::timeout(left, call(*option, state)).await {
                Ok((outcome, back)) => {
                    state = back;
                    outcome
                }
                Err(_) => {
                    let error = Error::Deadline {
                        deadline: policy.deadline,
                        attempts: i + 1,
                    };
                    attempts.push(Attempt {
                        model,
                        budget: option.budget,
                        error: Some(error.to_string()),
                        took: attempt_started.elapsed(),
                    });
                    return Err(FallbackFailure { error, attempts });
                }
            };
            let took = attempt_started.elapsed();
            match outcome {
                Ok(value) => {
                    attempts.push(Attempt {
                        model,
                        budget: option.budget,
                        error: None,
                        took,
                    });
                    return Ok(Fallen {
                        value,
                        option: *option,
                        attempts,
                    });
                }
                Err(error) => {
                    attempts.push(Attempt {
                        model: model.clone(),
                        budget: option.budget,
                        error: Some(r2_http::error_chain(&error)),
                        took,
                    });
                    let next = chain.get(i + 1).filter(|_| i + 1 < limit);
                    let may = may_go_on(&state)
                        && matches!(&error, Error::Llm(e) if e.another_model_may_answer());
                    match next {
                        Some(next) if may && started.elapsed() < policy.deadline => {
                            tracing::warn!(
                                model = %model,
                                budget = %option.budget,
                                next = %self.model_name(next.model),
                                error = %r2_http::error_chain(&error),
                                "the provider failed; falling back to the next-best model"
                            );
                        }
                        _ => return Err(FallbackFailure { error, attempts }),
                    }
                }
            }
        }
        // Only an empty chain gets here (every attempt returns): nothing to call.
        Err(FallbackFailure {
            error: Error::Core(r2_core::Error::NoCandidates),
            attempts,
        })
    }

    /// The pool model spend is compared against: `name` (a pool name or provider id), else the
    /// available model with the highest output price (then input price; the first in pool
    /// order on a tie), or the dearest of all when none is marked available.
    pub fn reference_model(&self, name: Option<&str>) -> Result<usize> {
        if let Some(name) = name {
            return self
                .pool()
                .models
                .iter()
                .position(|m| m.name == name || m.openrouter_id == name)
                .and_then(|i| self.router().model_index(&self.pool().models[i].name))
                .ok_or_else(|| {
                    Error::Core(r2_core::Error::UnknownModel {
                        name: name.to_owned(),
                        known: self
                            .router()
                            .models()
                            .iter()
                            .map(|m| m.name.clone())
                            .collect(),
                    })
                });
        }
        let dearest = |only_available: bool| {
            let mut best: Option<(usize, f64, f64)> = None;
            for i in 0..self.router().models().len() {
                let entry = self.pool_model(i);
                if only_available && !entry.available {
                    continue;
                }
                let key = (
                    entry.output_price_per_million,
                    entry.input_price_per_million,
                );
                if best.is_none_or(|(_, o, p)| key > (o, p)) {
                    best = Some((i, key.0, key.1));
                }
            }
            best.map(|(i, _, _)| i)
        };
        dearest(true)
            .or_else(|| dearest(false))
            .ok_or(Error::NothingAvailable)
    }

    /// What a query would have cost on model `model` without a budget: its input tokens at the
    /// model's input price plus its predicted unlimited output tokens at the output price.
    pub fn reference_cost(
        &self,
        embedding: &[f64],
        input_tokens: u64,
        model: usize,
    ) -> Result<f64> {
        Ok(self
            .router()
            .unlimited_option(embedding, input_tokens, model, 0.0)?
            .cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversations_route_on_their_first_or_last_user_text() {
        let messages = vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}),
            json!({"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "image_url"}, {"type": "text", "text": "part"}]}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}),
            json!({"role": "tool", "tool_call_id": "c", "content": "42"}),
            json!({"role": "user", "content": "second"}),
            json!({"role": "tool", "tool_call_id": "d", "content": "43"}),
        ];
        assert_eq!(
            routing_text(&messages, RouteOn::First).as_deref(),
            Some("first\npart")
        );
        assert_eq!(
            routing_text(&messages, RouteOn::Last).as_deref(),
            Some("second")
        );
        assert_eq!(routing_text(&messages[..2], RouteOn::First), None);
        assert_eq!(routing_prompt(&messages, RouteOn::First), &messages[..3]);
        assert_eq!(routing_prompt(&messages, RouteOn::Last), &messages[..]);
        let all = "be brief\nfirst\npart\n{\"a\": 1}\n42\nsecond\n43\n";
        assert_eq!(
            prompt_tokens(&messages),
            r2_core::estimate_input_tokens(all)
        );
        assert_eq!("first".parse::<RouteOn>(), Ok(RouteOn::First));
        assert!("middle".parse::<RouteOn>().is_err());
    }

    fn option(model: usize, risk: f64) -> RouteOption {
        RouteOption {
            model,
            budget: Budget::Tokens(10),
            quality: 0.5,
            output_tokens: 10.0,
            cost: 0.0,
            risk,
        }
    }

    #[test]
    fn the_chain_takes_the_best_option_of_each_other_model() {
        let decision = Decision {
            choice: option(2, 0.9),
            ranked: vec![
                option(2, 0.9),
                option(2, 0.8),
                option(0, 0.7),
                option(2, 0.6),
                option(0, 0.5),
                option(1, 0.4),
                option(3, 0.3),
            ],
        };
        let models = |n| {
            fallback_chain(&decision, n)
                .iter()
                .map(|o| (o.model, o.risk))
                .collect::<Vec<_>>()
        };
        assert_eq!(models(0), [(2, 0.9)]);
        assert_eq!(models(2), [(2, 0.9), (0, 0.7), (1, 0.4)]);
        assert_eq!(models(9), [(2, 0.9), (0, 0.7), (1, 0.4), (3, 0.3)]);
    }
}
