//! Requests and answers of the chat-completions API, and R2-Router's budget prompt.

use serde::{Deserialize, Serialize};

/// The temperature R2-Router generates with.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;

/// The exact budget system prompt for a budget in tokens, as upstream R2-Router sends it.
///
/// ```
/// assert_eq!(
///     r2_llm::budget_system_prompt(100),
///     "You MUST respond in 100 tokens or fewer. Directly give the answer follow the format \
///      WITHOUT ANY explanation."
/// );
/// ```
pub fn budget_system_prompt(budget: u32) -> String {
    format!(
        "You MUST respond in {budget} tokens or fewer. Directly give the answer follow the format WITHOUT ANY explanation."
    )
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A chat request: what is sent as `{"model", "messages", "temperature", "max_tokens"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The provider's model id, e.g. `z-ai/glm-4.5-air` on OpenRouter.
    pub model: String,
    pub messages: Vec<Message>,
    pub temperature: f64,
    /// A hard cap on output tokens (`max_tokens`); R2-Router does not set one (the budget is
    /// asked for in the system prompt), so it is left out of the request when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl ChatRequest {
    /// A request built the R2 way: for a limited `budget` the [`budget_system_prompt`] followed by
    /// the query as the user message; for `None` (unlimited) the user message only.
    pub fn routed(model_id: &str, query: &str, budget: Option<u32>, temperature: f64) -> Self {
        let mut messages = Vec::with_capacity(2);
        if let Some(budget) = budget {
            messages.push(Message::system(budget_system_prompt(budget)));
        }
        messages.push(Message::user(query));
        Self {
            model: model_id.to_owned(),
            messages,
            temperature,
            max_tokens: None,
        }
    }

    /// The same request with a hard cap on output tokens.
    pub fn with_max_tokens(self, max_tokens: u32) -> Self {
        Self {
            max_tokens: Some(max_tokens),
            ..self
        }
    }
}

/// Tokens counted by the provider for one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// Prices in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Prices {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Usage {
    /// `prompt_tokens + completion_tokens`.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// The cost in USD: `prompt_tokens·input/1e6 + completion_tokens·output/1e6`, the cost model
    /// R2-Router routes with.
    pub fn cost_usd(&self, prices: Prices) -> f64 {
        self.prompt_tokens as f64 * prices.input_per_million / 1e6
            + self.completion_tokens as f64 * prices.output_per_million / 1e6
    }
}

/// A generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The text of the first choice (empty if the provider sent `content: null`).
    pub text: String,
    /// Token counts, when the provider reports them.
    pub usage: Option<Usage>,
    /// The model as the provider reports it (may differ from the requested id).
    pub model: Option<String>,
    /// Why generation stopped (`stop`, `length`, `content_filter`, …), when reported.
    pub finish_reason: Option<String>,
}
