//! `POST /v1/chat/completions`: route (model `r2-router`) or pass on (a pool model), then forward
//! to the provider.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use r2_core::{Budget, Decision};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{body_bytes, parse_json, set_header, sse, ApiError, AppState, ROUTER_MODEL};

/// The fields of a chat request the gateway reads; everything else is passed on untouched.
#[derive(Deserialize)]
struct ChatHead {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    r2: Option<Overrides>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

/// Per-request routing overrides: the body's `r2` object.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Overrides {
    #[serde(default)]
    pub lambda: Option<f64>,
    #[serde(default)]
    pub max_cost: Option<f64>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(body, &state)?;
    let value = parse_json::<Value>(&bytes)?;
    let head = ChatHead::deserialize(&value).map_err(|e| ApiError::InvalidBody(e.to_string()))?;
    let Value::Object(mut forward) = value else {
        return Err(ApiError::InvalidBody(
            "a chat request is a JSON object".to_owned(),
        ));
    };
    forward.remove("r2");
    let stream = head.stream == Some(true);

    if head.model == ROUTER_MODEL {
        let llm = state.r2().llm().ok_or(ApiError::NoProvider)?;
        let params = routing_params(&state, head.r2.unwrap_or_default())?;
        let query = last_user_text(&head.messages).ok_or_else(|| {
            ApiError::InvalidRequest(
                "no user message with text to route on: the last message with role `user` must \
                 have text content"
                    .to_owned(),
            )
        })?;
        let decision = route_text(&state, query, &params).await?;
        let choice = decision.choice;
        let entry = state.r2().pool_model(choice.model);
        forward.insert("model".into(), Value::String(entry.openrouter_id.clone()));
        if let Budget::Tokens(budget) = choice.budget {
            let system = serde_json::json!({
                "role": "system",
                "content": r2_llm::budget_system_prompt(budget),
            });
            if let Some(Value::Array(messages)) = forward.get_mut("messages") {
                messages.insert(0, system);
            }
        }
        let name = entry.name.clone();
        let mut response = forward_request(&state, llm, forward, stream, Some(&name)).await?;
        decision_headers(&state, &decision, &mut response);
        Ok(response)
    } else if let Some(index) = state.pool_index(&head.model) {
        let llm = state.r2().llm().ok_or(ApiError::NoProvider)?;
        let entry = state.r2().pool_model(index);
        forward.insert("model".into(), Value::String(entry.openrouter_id.clone()));
        let name = entry.name.clone();
        let mut response = forward_request(&state, llm, forward, stream, None).await?;
        set_header(&mut response, "x-r2-model", &name);
        Ok(response)
    } else {
        Err(ApiError::ModelNotFound { model: head.model })
    }
}

/// The default parameters with the request's overrides, checked.
pub(crate) fn routing_params(
    state: &AppState,
    overrides: Overrides,
) -> Result<r2_core::RouteParams, ApiError> {
    let router = state.r2().router();
    let mut params = state.default_params().clone();
    if let Some(lambda) = overrides.lambda {
        params.lambda = lambda;
    }
    if let Some(models) = overrides.models {
        params.candidates = Some(router.model_mask(&models)?);
    }
    if let Some(max_cost) = overrides.max_cost {
        params = params.with_max_cost(max_cost);
    }
    router.check_params(&params)?;
    Ok(params)
}

/// The text of the last `user` message: its string content, or the `text` parts of a content
/// array joined by newlines. `None` when there is no such message or it has no text.
fn last_user_text(messages: &[ChatMessage]) -> Option<String> {
    let message = messages.iter().rev().find(|m| m.role == "user")?;
    let text = match &message.content {
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

/// Embeds `query` and routes it with upstream's input-token estimate; counts and times both.
async fn route_text(
    state: &AppState,
    query: String,
    params: &r2_core::RouteParams,
) -> Result<Decision, ApiError> {
    let input_tokens = r2_core::estimate_input_tokens(&query);
    let started = Instant::now();
    let embedded = state.r2().embedder().await?.embed(&[query]).await;
    state.metrics().embed_took(started.elapsed());
    let embedding: Vec<f64> = embedded?
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect();
    let started = Instant::now();
    let decision = state.r2().route(&embedding, input_tokens, params);
    state.metrics().route_took(started.elapsed());
    let decision = decision?;
    state.metrics().decision(&decision);
    Ok(decision)
}

/// Sends `body` to the provider and answers with its answer: JSON with `model` set to `rename`
/// (when routed), or the provider's stream passed through.
async fn forward_request(
    state: &AppState,
    llm: &r2_llm::LlmClient,
    body: Map<String, Value>,
    stream: bool,
    rename: Option<&str>,
) -> Result<Response, ApiError> {
    let body = Value::Object(body);
    let started = Instant::now();
    if stream {
        // Checked up to the first event, so that a provider answering HTML or broken JSON is a
        // 502 here as it is without streaming, not a 200 with a broken stream.
        let raw = llm.complete_raw_stream_checked(&body).await;
        state.metrics().provider_took(started.elapsed());
        let raw = raw.map_err(|e| state.provider_failed(e))?;
        let content_type = raw.content_type().unwrap_or("text/event-stream").to_owned();
        let body = Body::from_stream(sse::pass_through(
            raw,
            rename.map(str::to_owned),
            state.clone(),
            llm.url().to_owned(),
            llm.options().max_event_bytes,
        ));
        let mut response = body.into_response();
        set_header(&mut response, header::CONTENT_TYPE.as_str(), &content_type);
        set_header(&mut response, header::CACHE_CONTROL.as_str(), "no-cache");
        return Ok(response);
    }
    let answer = llm.complete_raw(&body).await;
    state.metrics().provider_took(started.elapsed());
    let mut answer = answer.map_err(|e| state.provider_failed(e))?;
    if let (Some(name), Some(object)) = (rename, answer.as_object_mut()) {
        object.insert("model".into(), Value::String(name.to_owned()));
    }
    Ok(axum::Json(answer).into_response())
}

/// The `x-r2-*` headers of a routed answer (values rounded as `r2 route --json` prints them).
fn decision_headers(state: &AppState, decision: &Decision, response: &mut Response) {
    let report = state.r2().report();
    let choice = report.option(&decision.choice);
    set_header(response, "x-r2-model", choice.model);
    set_header(response, "x-r2-budget", &choice.budget.to_string());
    set_header(
        response,
        "x-r2-predicted-quality",
        &choice.predicted_quality.to_string(),
    );
    set_header(
        response,
        "x-r2-predicted-cost-usd",
        &choice.predicted_cost_usd.to_string(),
    );
}
