//! `POST /v1/chat/completions`: route (model `r2-router`) or pass on (a pool model), then forward
//! to the provider.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use r2_router::r2_core::RouteOption;
use r2_router::r2_llm::{Prices, Usage};
use r2_router::{chat, r2_llm, Observer, RouteOn, RouteRequest};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    body_bytes, parse_json, set_header, sse, ApiError, AppState, Note, RequestId, ROUTER_MODEL,
};

/// The fields of a chat request the gateway reads; everything else is passed on untouched.
#[derive(Deserialize)]
struct ChatHead {
    model: String,
    messages: Vec<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    r2: Option<Overrides>,
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
    #[serde(default)]
    route_on: Option<RouteOn>,
}

impl Overrides {
    /// The routing request these overrides make (the router's defaults for the rest).
    fn request(&self) -> RouteRequest {
        RouteRequest {
            lambda: self.lambda,
            models: self.models.clone(),
            max_cost: self.max_cost,
            ..RouteRequest::default()
        }
    }
}

/// What the provider sent for one attempt.
enum Sent {
    Json(Value),
    Stream(r2_llm::RawStream),
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
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
    // For a stream's cost, the provider is asked for its usage chunk; the client sees it only
    // if it asked for it.
    let client_wants_usage = stream && include_usage(&forward);
    if stream {
        ask_for_usage(&mut forward);
    }
    let llm = state.r2().llm().ok_or_else(ApiError::no_provider)?;

    if head.model == ROUTER_MODEL {
        let overrides = head.r2.unwrap_or_default();
        let route_on = overrides.route_on.unwrap_or(state.options().route_on);
        let policy = state.options().fallback;
        let mut request = overrides.request();
        request.ranked = policy.fallbacks > 0;
        // The decision counts the first turn's prompt (routing on the first message: the same on
        // every turn) or the whole prompt (on the last); the reference cost, the whole prompt.
        let prompt_tokens = chat::prompt_tokens(&head.messages);
        let routing_tokens = chat::prompt_tokens(chat::routing_prompt(&head.messages, route_on));
        request.input_tokens = Some(routing_tokens);
        let plan = state.r2().plan(&request)?;
        let query = chat::routing_text(&head.messages, route_on).ok_or_else(|| {
            ApiError::invalid_request(format!(
                "no user message with text to route on: the {route_on} message with role `user` \
                 must have text content (a string, or `text` parts)"
            ))
        })?;
        let mut note = Note {
            request_id: request_id.0,
            ..Note::default()
        };
        let started = Instant::now();
        let embedding = state.r2().embed(std::slice::from_ref(&query)).await?;
        note.embed_ms = ms(started);
        let started = Instant::now();
        let decision = state
            .r2()
            .route_embeddings(&embedding, &[routing_tokens], &plan)
            .into_result()?
            .pop()
            .ok_or_else(|| ApiError::internal("the router gave no decision for one query"))?;
        note.route_ms = ms(started);
        let reference = state
            .r2()
            .reference_cost(&embedding, prompt_tokens, state.reference_model())
            .ok();
        if state.options().log_prompts {
            note.prompt = Some(query);
        }
        let chain = chat::fallback_chain(&decision, policy.fallbacks);
        let started = Instant::now();
        let fallen = state
            .r2()
            .with_fallback(&chain, policy, |option| {
                let body = state.r2().routed_body(forward.clone(), &option);
                let state = &state;
                async move {
                    send(state, llm, body, stream)
                        .await
                        .map_err(r2_router::Error::Llm)
                }
            })
            .await;
        note.provider_ms = ms(started);
        let attempts = match &fallen {
            Ok(f) => &f.attempts,
            Err(f) => &f.attempts,
        };
        for pair in attempts.windows(2) {
            state.metrics().fallback(&pair[0].model, &pair[1].model);
        }
        note.attempts = attempts
            .iter()
            .map(|a| match &a.error {
                None => format!("{}@{}: ok", a.model, a.budget),
                Some(e) => format!("{}@{}: {e}", a.model, a.budget),
            })
            .collect();
        let fallen = match fallen {
            Ok(fallen) => fallen,
            Err(failure) => {
                note.model = state.r2().model_name(decision.choice.model).to_owned();
                note.budget = Some(decision.choice.budget.to_string());
                let error = match failure.error {
                    r2_router::Error::Llm(e) => ApiError::from(e),
                    other => ApiError::from(other),
                };
                return Ok(note.on(Err(error)));
            }
        };
        let option = fallen.option;
        let name = state.r2().model_name(option.model).to_owned();
        note.model = name.clone();
        note.budget = Some(option.budget.to_string());
        let attempts = fallen.attempts.len();
        let from = fallen.fallback_from().map(str::to_owned);
        let mut response = respond(
            &state,
            fallen.value,
            option.model,
            Some(&name),
            client_wants_usage,
            reference,
            &mut note,
        );
        decision_headers(&state, &option, &mut response);
        set_header(&mut response, "x-r2-attempts", &attempts.to_string());
        if let Some(from) = from {
            set_header(&mut response, "x-r2-fallback-from", &from);
        }
        Ok(note.on(Ok(response)))
    } else if let Some(index) = state.pool_index(&head.model) {
        let entry = state.r2().pool_model(index);
        forward.insert("model".into(), Value::String(entry.openrouter_id.clone()));
        let name = entry.name.clone();
        let mut note = Note {
            model: name.clone(),
            request_id: request_id.0,
            ..Note::default()
        };
        let started = Instant::now();
        let sent = send(&state, llm, forward, stream).await;
        note.provider_ms = ms(started);
        let answer = sent.map_err(ApiError::from).map(|sent| {
            let mut response = respond(
                &state,
                sent,
                index,
                None,
                client_wants_usage,
                None,
                &mut note,
            );
            set_header(&mut response, "x-r2-model", &name);
            response
        });
        Ok(note.on(answer))
    } else {
        Err(ApiError::model_not_found(&head.model))
    }
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Whether the client's `stream_options.include_usage` is true.
fn include_usage(body: &Map<String, Value>) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// Sets `stream_options.include_usage`, keeping the client's other stream options.
fn ask_for_usage(body: &mut Map<String, Value>) {
    let options = body
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Some(options) = options.as_object_mut() {
        options.insert("include_usage".into(), Value::Bool(true));
    }
}

/// Sends `body` to the provider: the whole JSON answer, or a stream checked up to its first
/// event (so that a provider answering HTML or broken JSON fails here, before the client got a
/// byte, and another model can be tried). Timed as the router times its own generations.
async fn send(
    state: &AppState,
    llm: &r2_llm::LlmClient,
    body: Map<String, Value>,
    stream: bool,
) -> Result<Sent, r2_llm::Error> {
    let body = Value::Object(body);
    let started = Instant::now();
    let sent = if stream {
        llm.complete_raw_stream_checked(&body)
            .await
            .map(Sent::Stream)
    } else {
        llm.complete_raw(&body).await.map(Sent::Json)
    };
    state.metrics().generated(started.elapsed());
    if let Err(e) = &sent {
        let (kind, _) = crate::error::provider_failure(e);
        state.metrics().provider_error(kind);
    }
    sent
}

/// The client's answer: JSON with `model` set to `rename` (when routed) and `x-r2-cost-usd`, or
/// the provider's stream passed through (its cost counted, and its access-log line with tokens
/// and cost written under the note's request id, when it ends). Counts the spend of model `model`
/// against `reference`.
fn respond(
    state: &AppState,
    sent: Sent,
    model: usize,
    rename: Option<&str>,
    client_wants_usage: bool,
    reference: Option<f64>,
    note: &mut Note,
) -> Response {
    let entry = state.r2().pool_model(model);
    let prices = Prices {
        input_per_million: entry.input_price_per_million,
        output_per_million: entry.output_price_per_million,
    };
    let name = state.r2().model_name(model).to_owned();
    match sent {
        Sent::Json(mut answer) => {
            let usage: Usage = answer
                .get("usage")
                .and_then(|u| serde_json::from_value(u.clone()).ok())
                .unwrap_or_default();
            let cost = usage.cost_usd(prices);
            state.metrics().spent(&name, cost, reference);
            note.prompt_tokens = Some(usage.prompt_tokens);
            note.completion_tokens = Some(usage.completion_tokens);
            note.cost_usd = Some(cost);
            if let (Some(name), Some(object)) = (rename, answer.as_object_mut()) {
                object.insert("model".into(), Value::String(name.to_owned()));
            }
            let mut response = axum::Json(answer).into_response();
            set_header(&mut response, "x-r2-cost-usd", &cost.to_string());
            response
        }
        Sent::Stream(raw) => {
            let content_type = raw.content_type().unwrap_or("text/event-stream").to_owned();
            let llm = state.r2().llm().expect("a stream came from the provider");
            let metrics = state.clone();
            let request_id = note.request_id.clone();
            let on_end = move |usage: Option<Usage>| {
                let cost = usage.unwrap_or_default().cost_usd(prices);
                metrics.metrics().spent(&name, cost, reference);
                tracing::info!(
                    target: "r2_serve::access",
                    request_id = %request_id,
                    model = %name,
                    prompt_tokens = usage.map(|u| u.prompt_tokens),
                    completion_tokens = usage.map(|u| u.completion_tokens),
                    cost_usd = cost,
                    "r2 serve: stream ended"
                );
            };
            let body = Body::from_stream(sse::pass_through(
                raw,
                sse::Rewrite {
                    model: rename.map(str::to_owned),
                    strip_usage: !client_wants_usage,
                },
                state.clone(),
                llm.url().to_owned(),
                llm.options().max_event_bytes,
                Box::new(on_end),
            ));
            let mut response = body.into_response();
            set_header(&mut response, header::CONTENT_TYPE.as_str(), &content_type);
            set_header(&mut response, header::CACHE_CONTROL.as_str(), "no-cache");
            response
        }
    }
}

/// The `x-r2-*` headers of the option that answered (values rounded as `r2 route --json` prints
/// them).
fn decision_headers(state: &AppState, option: &RouteOption, response: &mut Response) {
    let report = state.r2().report();
    let choice = report.option(option);
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
