//! `POST /v1/route`: decisions as `r2 route --json` prints them, for text or embeddings, one or a
//! batch.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use r2_router::r2_core::{self, Decision};
use r2_router::vector::Vector;
use r2_router::{RoutePlan, RouteRequest, PARALLEL_THRESHOLD};
use serde::Deserialize;
use serde_json::Value;

use crate::{body_bytes, parse_json, ApiError, AppState, Note};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteBody {
    /// Echoed in the decision of a single query or embedding.
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    query: Option<String>,
    /// Numbers, or base64 of little-endian float32 values.
    #[serde(default)]
    embedding: Option<Vector>,
    #[serde(default)]
    queries: Option<Vec<String>>,
    #[serde(default)]
    embeddings: Option<Vec<Vector>>,
    #[serde(default)]
    lambda: Option<f64>,
    #[serde(default)]
    input_tokens: Option<InputTokens>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    max_cost: Option<f64>,
    #[serde(default)]
    verbose: bool,
}

/// One count for every query, or one count per query of a batch.
#[derive(Deserialize)]
#[serde(untagged)]
enum InputTokens {
    All(u64),
    Each(Vec<u64>),
}

enum Input {
    Query(String),
    Embedding(Vec<f64>),
    Queries(Vec<String>),
    Embeddings(Vec<Vec<f64>>),
}

/// The body, its embeddings' numbers parsed aside ([`r2_router::vector::from_slice_with`]); on any
/// error the plain path, so that errors are classified as for every other body.
fn read_body(bytes: &[u8]) -> Result<RouteBody, ApiError> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let fast = (|| {
        for (key, many) in [("embedding", false), ("embeddings", true)] {
            if r2_router::vector::field_start(text, key).is_some() {
                let (mut body, values) =
                    r2_router::vector::from_slice_with::<RouteBody>(text, key, many).ok()?;
                let mut values = values?;
                if many {
                    body.embeddings = Some(values.into_iter().map(Vector).collect());
                } else {
                    body.embedding = values.pop().map(Vector);
                }
                return Some(body);
            }
        }
        None
    })();
    match fast {
        Some(body) => Ok(body),
        None => parse_json(bytes),
    }
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(body, &state)?;
    let body = read_body(&bytes)?;
    let (all_tokens, each_tokens) = match body.input_tokens {
        None => (None, None),
        Some(InputTokens::All(n)) => (Some(n), None),
        Some(InputTokens::Each(each)) => (None, Some(each)),
    };
    let plan = state.r2().plan(&RouteRequest {
        lambda: body.lambda,
        models: body.models,
        max_cost: body.max_cost,
        ranked: body.verbose,
        input_tokens: all_tokens,
        ..RouteRequest::default()
    })?;
    let verbose = body.verbose;
    let input = match (body.query, body.embedding, body.queries, body.embeddings) {
        (Some(q), None, None, None) => Input::Query(q),
        (None, Some(e), None, None) => Input::Embedding(e.0),
        (None, None, Some(q), None) => Input::Queries(q),
        (None, None, None, Some(e)) => Input::Embeddings(e.into_iter().map(|v| v.0).collect()),
        _ => {
            return Err(ApiError::invalid_request(
                "give exactly one of `query`, `embedding`, `queries` and `embeddings`",
            ))
        }
    };
    let batch = matches!(input, Input::Queries(_) | Input::Embeddings(_));
    if batch && body.id.is_some() {
        return Err(ApiError::invalid_request(
            "`id` is echoed for a single `query` or `embedding`; a batch's decisions come back in \
             input order",
        ));
    }
    if !batch && each_tokens.is_some() {
        return Err(ApiError::invalid_request(
            "`input_tokens` of a single query is a number",
        ));
    }
    let report = state.r2().report();
    let id = body.id.as_ref();
    match input {
        Input::Query(query) => {
            let decision = state.route_query(query.clone(), &plan).await?;
            let response = json(&report.decision(&decision, id, Some(&query), verbose));
            Ok(Note::routed(state.r2(), &decision).on(Ok(response)))
        }
        Input::Embedding(embedding) => {
            check_dimensions(&state, std::slice::from_ref(&embedding))?;
            let tokens = [plan.embedding_tokens(None)];
            let decision = state
                .r2()
                .route_embeddings(&embedding, &tokens, &plan)
                .into_result()?
                .pop()
                .ok_or_else(|| ApiError::internal("the router gave no decision for one query"))?;
            let response = json(&report.decision(&decision, id, None, verbose));
            Ok(Note::routed(state.r2(), &decision).on(Ok(response)))
        }
        Input::Queries(queries) => {
            let tokens = batch_tokens(each_tokens, queries.len(), |i| {
                plan.text_tokens(&queries[i])
            })?;
            let embeddings = if queries.is_empty() {
                Vec::new()
            } else {
                state.r2().embed(&queries).await?
            };
            let decisions = route_batch(&state, embeddings, tokens, &plan).await?;
            let out: Vec<_> = decisions
                .iter()
                .zip(&queries)
                .map(|(d, q)| report.decision(d, None, Some(q), verbose))
                .collect();
            Ok(json(&serde_json::json!({ "decisions": out })))
        }
        Input::Embeddings(embeddings) => {
            let tokens = batch_tokens(each_tokens, embeddings.len(), |_| {
                plan.embedding_tokens(None)
            })?;
            check_dimensions(&state, &embeddings)?;
            let decisions = route_batch(&state, embeddings.concat(), tokens, &plan).await?;
            let out: Vec<_> = decisions
                .iter()
                .map(|d| report.decision(d, None, None, verbose))
                .collect();
            Ok(json(&serde_json::json!({ "decisions": out })))
        }
    }
}

fn json(value: &impl serde::Serialize) -> Response {
    axum::Json(value).into_response()
}

/// Each embedding has the router's dimension, else the error names the first that has not (the
/// router would see a buffer of the wrong length, not which embedding is wrong).
fn check_dimensions(state: &AppState, embeddings: &[Vec<f64>]) -> Result<(), ApiError> {
    let dim = state.r2().router().dim();
    match embeddings.iter().enumerate().find(|(_, e)| e.len() != dim) {
        Some((query, e)) => Err(r2_core::Error::DimensionMismatch {
            query,
            expected: dim,
            got: e.len(),
        }
        .into()),
        None => Ok(()),
    }
}

/// The input tokens of each of `n` queries: a list of `n`, or the default of each.
fn batch_tokens(
    each: Option<Vec<u64>>,
    n: usize,
    default: impl Fn(usize) -> u64,
) -> Result<Vec<u64>, ApiError> {
    match each {
        None => Ok((0..n).map(default).collect()),
        Some(each) if each.len() == n => Ok(each),
        Some(each) => Err(ApiError::invalid_request(format!(
            "`input_tokens` has {} counts for {n} queries",
            each.len()
        ))),
    }
}

/// Routes a batch of embeddings held back to back; from [`PARALLEL_THRESHOLD`] queries on a
/// blocking thread (the router then splits it over every core), so the server's threads stay free.
async fn route_batch(
    state: &AppState,
    embeddings: Vec<f64>,
    tokens: Vec<u64>,
    plan: &RoutePlan,
) -> Result<Vec<Decision>, ApiError> {
    if tokens.len() < PARALLEL_THRESHOLD {
        return Ok(state
            .r2()
            .route_embeddings(&embeddings, &tokens, plan)
            .into_result()?);
    }
    let (state, plan) = (state.clone(), plan.clone());
    let routed = tokio::task::spawn_blocking(move || {
        state
            .r2()
            .route_embeddings(&embeddings, &tokens, &plan)
            .into_result()
    })
    .await
    .map_err(|e| ApiError::internal(format!("the routing thread failed: {e}")))?;
    Ok(routed?)
}
