//! An OpenAI-compatible chat-completions client for r2 (OpenRouter by default), with
//! R2-Router's way of asking for an output-token budget.
//!
//! R2-Router routes a query to a (model, budget) pair; this crate then calls that model. A limited
//! budget is enforced the way upstream does it, through a system prompt
//! ([`budget_system_prompt`]): the request is `{"model", "messages": [system, user],
//! "temperature": 0.7}` ([`ChatRequest::routed`]); an unlimited budget sends the user message
//! only. [`LlmClient::complete`] returns the answer at once; [`LlmClient::complete_streaming`]
//! hands each piece of text to a callback as it arrives (server-sent events). Both retry HTTP 429,
//! 5xx and connection errors with jittered exponential backoff, honour `Retry-After`, and fail
//! with a typed [`Error`] that says what happened, where, and what to do. For a gateway,
//! [`LlmClient::complete_raw`] forwards a client's own JSON body and returns the provider's JSON
//! answer, and [`LlmClient::complete_raw_stream`] returns a streamed answer's bytes as they arrive
//! ([`RawStream`]), undecoded; [`LlmClient::complete_raw_stream_checked`] first checks that the
//! answer starts with a valid event, so that a gateway can still answer an error status. The API
//! key ([`ApiKey`]) never appears in `Debug`, `Display` or any error: text from the provider has
//! it replaced by `***`, in any letter case.
//!
//! Answers are bounded, and never buffered past their limit: a streamed answer is read line by
//! line, and a line or an event's data longer than [`LlmOptions::max_event_bytes`] (default
//! [`DEFAULT_MAX_EVENT_BYTES`], 1 MiB) fails with [`Error::TooLarge`] as soon as the limit is
//! passed; an answer read whole (non-streamed, or a provider that answers a stream request in
//! one piece) may hold at most [`LlmOptions::max_answer_bytes`] (default
//! [`DEFAULT_MAX_ANSWER_BYTES`], 64 MiB; a larger `Content-Length` fails before the body is
//! read). Of an error answer's body only the first [`MAX_ERROR_BODY_BYTES`] (64 KiB) are read.
//!
//! ```no_run
//! use r2_llm::{ApiKey, ChatRequest, LlmClient, LlmOptions, Prices, OPENROUTER_API_BASE};
//! use std::io::Write;
//!
//! # async fn run() -> r2_llm::Result<()> {
//! let client = LlmClient::new(OPENROUTER_API_BASE, ApiKey::from_env(), LlmOptions::default())?;
//! let request = ChatRequest::routed("z-ai/glm-4.5-air", "What is 2 + 2?", Some(100), 0.7);
//!
//! // All at once:
//! let answer = client.complete(&request).await?;
//! println!("{}", answer.text);
//! if let Some(usage) = answer.usage {
//!     let prices = Prices { input_per_million: 0.2, output_per_million: 1.1 };
//!     println!("${:.6}", usage.cost_usd(prices));
//! }
//!
//! // Or piece by piece, printed as it comes:
//! let mut stdout = std::io::stdout();
//! let answer = client
//!     .complete_streaming(&request, &mut |delta| {
//!         let _ = stdout.write_all(delta.as_bytes());
//!         let _ = stdout.flush();
//!     })
//!     .await?;
//! println!();
//! # let _ = answer;
//! # Ok(())
//! # }
//! ```
//!
//! Architecture invariant: r2-llm talks to one OpenAI-compatible API and knows nothing of
//! routing, embeddings or files.

mod classify;
mod client;
mod error;
mod key;
mod passthrough;
mod sse;
mod stream;
mod transport;
mod types;

pub use client::{
    LlmClient, LlmOptions, DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_EVENT_BYTES, MAX_ERROR_BODY_BYTES,
    OPENROUTER_API_BASE,
};
pub use error::{Error, Result};
pub use key::{ApiKey, API_KEY_ENV};
pub use passthrough::RawStream;
pub use types::{
    budget_system_prompt, ChatRequest, Completion, Message, Prices, Usage, DEFAULT_TEMPERATURE,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send_sync<T: Send + Sync>(_: &T) {}
    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn client_errors_and_request_futures_can_cross_threads() {
        let client = LlmClient::openrouter(None, LlmOptions::default()).unwrap();
        is_send_sync(&client);
        let error = Error::NoChoices { url: String::new() };
        is_send_sync(&error);
        let request = ChatRequest::routed("m", "q", None, DEFAULT_TEMPERATURE);
        is_send(&client.complete(&request));
        let mut on_delta = |_: &str| {};
        is_send(&client.complete_streaming(&request, &mut on_delta));
        is_send(&client.complete_raw(&serde_json::Value::Null));
        is_send(&client.complete_raw_stream(&serde_json::Value::Null));
        is_send(&client.complete_raw_stream_checked(&serde_json::Value::Null));
    }
}
