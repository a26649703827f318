//! `POST /v1/chat/completions`: route (model `r2-router`) or pass on (a pool model), then forward
//! to the provider.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use r2_router::r2_core::Decision;
use r2_router::{r2_llm, Observer, RouteRequest};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    body_bytes, parse_json, set_header, sse, ApiError, AppState, DecisionNote, ROUTER_MODEL,
};

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
struct Overrides {
    #[serde(default)]
    lambda: Option<f64>,
    #[serde(default)]
    max_cost: Option<f64>,
    #[serde(default)]
    models: Option<Vec<String>>,
}

impl Overrides {
    /// The routing request these overrides make (the router's defaults for the rest).
    fn request(self) -> RouteRequest {
        RouteRequest {
            lambda: self.lambda,
            models: self.models,
            max_cost: self.max_cost,
            ..RouteRequest::default()
        }
    }
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(body, &state)?;
    let value = parse_json::<Value>(&bytes)?;
    let head = ChatHead::deserialize(&value).map_err(ApiError::invalid_body)?;
    let Value::Object(mut forward) = value else {
        return Err(ApiError::invalid_body("a chat request is a JSON object"));
    };
    forward.remove("r2");
    let stream = head.stream == Some(true);

    if head.model == ROUTER_MODEL {
        let llm = state.r2().llm().ok_or_else(ApiError::no_provider)?;
        let plan = state.r2().plan(&head.r2.unwrap_or_default().request())?;
        let query = last_user_text(&head.messages).ok_or_else(|| {
            ApiError::invalid_request(
                "no user message with text to route on: the last message with role `user` must \
                 have text content",
            )
        })?;
        let decision = state.route_query(query, &plan).await?;
        let forward = state.r2().routed_body(forward, &decision.choice);
        let name = state.r2().model_name(decision.choice.model).to_owned();
        let answer = forward_request(&state, llm, forward, stream, Some(&name)).await;
        let answer = answer.map(|mut response| {
            decision_headers(&state, &decision, &mut response);
            response
        });
        Ok(DecisionNote::routed(state.r2(), &decision).on(answer))
    } else if let Some(index) = state.pool_index(&head.model) {
        let llm = state.r2().llm().ok_or_else(ApiError::no_provider)?;
        let entry = state.r2().pool_model(index);
        forward.insert("model".into(), Value::String(entry.openrouter_id.clone()));
        let name = entry.name.clone();
        let answer = forward_request(&state, llm, forward, stream, None).await;
        let answer = answer.map(|mut response| {
            set_header(&mut response, "x-r2-model", &name);
            response
        });
        Ok(DecisionNote::unrouted(name).on(answer))
    } else {
        Err(ApiError::model_not_found(&head.model))
    }
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

/// Sends `body` to the provider and answers with its answer: JSON with `model` set to `rename`
/// (when routed), or the provider's stream passed through. The call is timed as the router
/// times its own generations ([`Observer::generated`]).
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
        state.metrics().generated(started.elapsed());
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
    state.metrics().generated(started.elapsed());
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
