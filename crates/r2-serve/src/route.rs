//! `POST /v1/route`: decisions as `r2 route --json` prints them, for text or embeddings, one or a
//! batch.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use r2_core::{Decision, RouteParams};
use serde::Deserialize;
use serde_json::Value;

use crate::chat::{routing_params, Overrides};
use crate::{body_bytes, parse_json, ApiError, AppState};

/// Input tokens of an embedding when the request gives none (as `r2 route --embeddings`).
const DEFAULT_EMBEDDING_TOKENS: u64 = 100;

/// Batches at least this large are routed on a blocking thread, split over every core.
const PARALLEL_BATCH: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRequest {
    /// Echoed in the decision of a single query or embedding.
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    embedding: Option<Vec<f64>>,
    #[serde(default)]
    queries: Option<Vec<String>>,
    #[serde(default)]
    embeddings: Option<Vec<Vec<f64>>>,
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

pub(crate) async fn handle(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(body, &state)?;
    let request: RouteRequest = parse_json(&bytes)?;
    let overrides = Overrides {
        lambda: request.lambda,
        max_cost: request.max_cost,
        models: request.models,
    };
    let params = routing_params(&state, overrides)?.with_ranked(request.verbose);
    let verbose = request.verbose;
    let input = match (
        request.query,
        request.embedding,
        request.queries,
        request.embeddings,
    ) {
        (Some(q), None, None, None) => Input::Query(q),
        (None, Some(e), None, None) => Input::Embedding(e),
        (None, None, Some(q), None) => Input::Queries(q),
        (None, None, None, Some(e)) => Input::Embeddings(e),
        _ => {
            return Err(ApiError::InvalidRequest(
                "give exactly one of `query`, `embedding`, `queries` and `embeddings`".to_owned(),
            ))
        }
    };
    let batch = matches!(input, Input::Queries(_) | Input::Embeddings(_));
    if batch && request.id.is_some() {
        return Err(ApiError::InvalidRequest(
            "`id` is echoed for a single `query` or `embedding`; a batch's decisions come back in \
             input order"
                .to_owned(),
        ));
    }
    let report = state.r2().report();
    let id = request.id.as_ref();
    match input {
        Input::Query(query) => {
            let tokens = single_tokens(request.input_tokens)?
                .unwrap_or_else(|| r2_core::estimate_input_tokens(&query));
            let embedding = embed(&state, std::slice::from_ref(&query))
                .await?
                .pop()
                .unwrap_or_default();
            let decision = route_batch(&state, embedding, vec![tokens], &params)
                .await?
                .pop()
                .ok_or_else(|| ApiError::Internal("no decision for one query".to_owned()))?;
            Ok(json(&report.decision(&decision, id, Some(&query), verbose)))
        }
        Input::Embedding(embedding) => {
            let tokens = single_tokens(request.input_tokens)?.unwrap_or(DEFAULT_EMBEDDING_TOKENS);
            let started = Instant::now();
            let decision = state.r2().route(&embedding, tokens, &params);
            state.metrics().route_took(started.elapsed());
            let decision = decision?;
            state.metrics().decision(&decision);
            Ok(json(&report.decision(&decision, id, None, verbose)))
        }
        Input::Queries(queries) => {
            let tokens = batch_tokens(request.input_tokens, queries.len(), |i| {
                r2_core::estimate_input_tokens(&queries[i])
            })?;
            let flat = if queries.is_empty() {
                Vec::new()
            } else {
                embed(&state, &queries).await?.concat()
            };
            let decisions = route_batch(&state, flat, tokens, &params).await?;
            let out: Vec<_> = decisions
                .iter()
                .zip(&queries)
                .map(|(d, q)| report.decision(d, None, Some(q), verbose))
                .collect();
            Ok(json(&serde_json::json!({ "decisions": out })))
        }
        Input::Embeddings(embeddings) => {
            let tokens = batch_tokens(request.input_tokens, embeddings.len(), |_| {
                DEFAULT_EMBEDDING_TOKENS
            })?;
            let dim = state.r2().router().dim();
            if let Some((query, e)) = embeddings.iter().enumerate().find(|(_, e)| e.len() != dim) {
                return Err(r2_core::Error::DimensionMismatch {
                    query,
                    expected: dim,
                    got: e.len(),
                }
                .into());
            }
            let decisions = route_batch(&state, embeddings.concat(), tokens, &params).await?;
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

/// The input tokens of a single query: a number, not a list.
fn single_tokens(tokens: Option<InputTokens>) -> Result<Option<u64>, ApiError> {
    match tokens {
        None => Ok(None),
        Some(InputTokens::All(n)) => Ok(Some(n)),
        Some(InputTokens::Each(_)) => Err(ApiError::InvalidRequest(
            "`input_tokens` of a single query is a number".to_owned(),
        )),
    }
}

/// The input tokens of each of `n` queries: one number for all, a list of `n`, or the default.
fn batch_tokens(
    tokens: Option<InputTokens>,
    n: usize,
    default: impl Fn(usize) -> u64,
) -> Result<Vec<u64>, ApiError> {
    match tokens {
        None => Ok((0..n).map(default).collect()),
        Some(InputTokens::All(t)) => Ok(vec![t; n]),
        Some(InputTokens::Each(each)) if each.len() == n => Ok(each),
        Some(InputTokens::Each(each)) => Err(ApiError::InvalidRequest(format!(
            "`input_tokens` has {} counts for {n} queries",
            each.len()
        ))),
    }
}

/// Embeds `texts` in one call to the embedder, timed.
async fn embed(state: &AppState, texts: &[String]) -> Result<Vec<Vec<f64>>, ApiError> {
    let started = Instant::now();
    let embedded = state.r2().embedder().await?.embed(texts).await;
    state.metrics().embed_took(started.elapsed());
    Ok(embedded?
        .into_iter()
        .map(|e| e.into_iter().map(f64::from).collect())
        .collect())
}

/// Routes embeddings held back to back, timed and counted; large batches on a blocking thread
/// over every core.
async fn route_batch(
    state: &AppState,
    flat: Vec<f64>,
    tokens: Vec<u64>,
    params: &RouteParams,
) -> Result<Vec<Decision>, ApiError> {
    let started = Instant::now();
    let decisions = if tokens.len() < PARALLEL_BATCH {
        state
            .r2()
            .router()
            .route_batch_parallel(&flat, &tokens, params, 1)
    } else {
        let (state, params) = (state.clone(), params.clone());
        tokio::task::spawn_blocking(move || {
            let threads = state.inner.threads;
            state
                .r2()
                .router()
                .route_batch_parallel(&flat, &tokens, &params, threads)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the routing thread failed: {e}")))?
    };
    state.metrics().route_took(started.elapsed());
    let decisions = decisions?;
    for decision in &decisions {
        state.metrics().decision(decision);
    }
    Ok(decisions)
}
