//! The shared routing flow: a `RouteRequest` resolved once by `plan`, then `route_embeddings` and
//! `route_texts` with the batch strategy, the observer, and `routed_body`. Decisions must be those
//! of the core on the same inputs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use r2_core::{Budget, Decision, RouteParams};
use r2_router::{
    Error, Observer, Options, R2Router, RouteRequest, DEFAULT_INPUT_TOKENS, PARALLEL_THRESHOLD,
};

fn options(llm: bool) -> Options {
    let table: HashMap<String, Vec<f64>> = r2_fixtures::golden_inputs()
        .into_iter()
        .map(|g| (format!("query{}", g.id), g.embedding))
        .collect();
    Options {
        checkpoints: Some(r2_fixtures::converted_router_dir()),
        config: Some(r2_fixtures::upstream_dir().join("config.json")),
        embed_url: Some(format!(
            "http://{}",
            r2_fixtures::start_embeddings_server(table)
        )),
        // A provider nothing is sent to: only the default candidates depend on it.
        llm_api_base: llm.then(|| "http://127.0.0.1:9/api/v1".to_owned()),
        ..Options::default()
    }
}

#[derive(Default)]
struct Counts {
    embedded: Mutex<Vec<usize>>,
    routed: Mutex<Vec<usize>>,
    decided: Mutex<usize>,
}

impl Observer for Counts {
    fn embedded(&self, texts: usize, _: Duration) {
        self.embedded.lock().unwrap().push(texts);
    }
    fn routed(&self, queries: usize, _: Duration) {
        self.routed.lock().unwrap().push(queries);
    }
    fn decided(&self, _: &Decision) {
        *self.decided.lock().unwrap() += 1;
    }
}

#[tokio::test]
async fn a_request_is_resolved_and_checked_once() {
    let r2 = R2Router::load(options(true)).await.unwrap();
    let default = r2.plan(&RouteRequest::default()).unwrap();
    assert_eq!(default.params, r2.default_params().unwrap());
    // With a provider, the default candidates are the `available` models; all_models lifts it.
    let available: Vec<&str> = r2
        .pool()
        .models
        .iter()
        .filter(|m| m.available)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(r2.candidates(&default), available);
    let all = r2
        .plan(&RouteRequest {
            all_models: true,
            ..RouteRequest::default()
        })
        .unwrap();
    assert_eq!(r2.candidates(&all).len(), 11);
    let picked = r2
        .plan(&RouteRequest {
            models: Some(vec!["gemma-3-4b-it".into(), "GLM-4.5-Air".into()]),
            lambda: Some(0.5),
            max_cost: Some(0.01),
            ranked: true,
            interpolate: 2,
            input_tokens: Some(7),
            ..RouteRequest::default()
        })
        .unwrap();
    assert_eq!(r2.candidates(&picked), ["GLM-4.5-Air", "gemma-3-4b-it"]);
    assert_eq!(picked.params.lambda, 0.5);
    assert_eq!(picked.params.max_cost, Some(0.01));
    assert!(picked.params.ranked);
    assert_eq!((picked.interpolate, picked.input_tokens), (2, Some(7)));
    assert_eq!(picked.text_tokens("a b c"), 7);
    assert_eq!(picked.embedding_tokens(Some(3)), 3);
    assert_eq!(default.embedding_tokens(None), DEFAULT_INPUT_TOKENS);
    assert_eq!(default.text_tokens("a b c d e f g h i j"), 13);
    // Bad values are refused here, before anything is routed.
    for bad in [
        RouteRequest {
            lambda: Some(-0.1),
            ..RouteRequest::default()
        },
        RouteRequest {
            max_cost: Some(f64::NAN),
            ..RouteRequest::default()
        },
        RouteRequest {
            models: Some(vec!["GPT-9".into()]),
            ..RouteRequest::default()
        },
    ] {
        assert!(matches!(r2.plan(&bad), Err(Error::Core(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn batches_route_as_the_core_does_on_one_or_two_threads() {
    let counts = Arc::new(Counts::default());
    let r2 = R2Router::load(options(false))
        .await
        .unwrap()
        .with_observer(counts.clone());
    let inputs = r2_fixtures::golden_inputs();
    // More queries than the parallel threshold: the golden embeddings, repeated.
    let n = PARALLEL_THRESHOLD + 40;
    let values: Vec<f64> = (0..n)
        .flat_map(|i| inputs[i % inputs.len()].embedding.clone())
        .collect();
    let tokens: Vec<u64> = (0..n)
        .map(|i| inputs[i % inputs.len()].input_tokens)
        .collect();
    for (lambda, threads) in [(0.0, 1), (0.99999, 2), (1.0, 2)] {
        let plan = r2
            .plan(&RouteRequest {
                lambda: Some(lambda),
                ..RouteRequest::default()
            })
            .unwrap()
            .with_threads(threads);
        let routed = r2.route_embeddings(&values, &tokens, &plan);
        assert!(routed.failed.is_none());
        let params = RouteParams::new(lambda);
        for (q, d) in routed.decisions.iter().enumerate() {
            let x = &values[q * 1024..(q + 1) * 1024];
            assert_eq!(
                *d,
                r2.router().route(x, tokens[q], &params).unwrap(),
                "query {q}"
            );
        }
    }
    assert_eq!(*counts.routed.lock().unwrap(), [n, n, n]);
    assert_eq!(*counts.decided.lock().unwrap(), 3 * n);

    // Interpolated budgets take the exact path, query by query, with the extra budgets.
    let plan = r2
        .plan(&RouteRequest {
            lambda: Some(0.999),
            interpolate: 3,
            ..RouteRequest::default()
        })
        .unwrap();
    let routed = r2.route_embeddings(&values[..40 * 1024], &tokens[..40], &plan);
    for (q, d) in routed.decisions.iter().enumerate() {
        let x = &values[q * 1024..(q + 1) * 1024];
        let want = r2
            .router()
            .route_interpolated(x, tokens[q], &plan.params, 3)
            .unwrap();
        assert_eq!(*d, want);
    }
}

#[tokio::test]
async fn a_query_that_cannot_be_routed_keeps_the_decisions_before_it() {
    let r2 = R2Router::load(options(false)).await.unwrap();
    let inputs = r2_fixtures::golden_inputs();
    let mut values: Vec<f64> = inputs[..5]
        .iter()
        .flat_map(|g| g.embedding.clone())
        .collect();
    values[3 * 1024..4 * 1024].fill(1e308);
    for interpolate in [0, 2] {
        let plan = r2
            .plan(&RouteRequest {
                interpolate,
                ..RouteRequest::default()
            })
            .unwrap();
        let routed = r2.route_embeddings(&values, &[10; 5], &plan);
        assert_eq!(routed.decisions.len(), 3, "interpolate {interpolate}");
        match routed.failed {
            Some(Error::Core(e)) => assert_eq!(r2_router::query_of(&e), Some(3), "{e}"),
            other => panic!("expected a core error about query 3, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn texts_are_embedded_and_routed_with_upstreams_estimate() {
    let counts = Arc::new(Counts::default());
    let r2 = R2Router::load(options(false))
        .await
        .unwrap()
        .with_observer(counts.clone());
    let inputs = r2_fixtures::golden_inputs();
    let texts: Vec<String> = inputs.iter().map(|g| format!("query{}", g.id)).collect();
    let plan = r2.plan(&RouteRequest::default()).unwrap();
    let routed = r2.route_texts(&texts, &plan).await.unwrap();
    assert_eq!(routed.decisions.len(), inputs.len());
    for (g, d) in inputs.iter().zip(&routed.decisions) {
        // One word: upstream's estimate is 1 token.
        let want = r2.router().route(&g.embedding, 1, &plan.params).unwrap();
        assert_eq!(*d, want);
    }
    assert_eq!(*counts.embedded.lock().unwrap(), [inputs.len()]);
    // An embedding failure fails the call.
    let err = r2
        .route_texts(&["not a golden query".to_owned()], &plan)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Embed(_)), "{err:?}");
}

#[tokio::test]
async fn routed_bodies_carry_the_provider_id_and_the_budget_prompt_first() {
    let r2 = R2Router::load(options(false)).await.unwrap();
    let body = serde_json::json!({
        "model": "r2-router",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function"}],
    });
    let serde_json::Value::Object(body) = body else {
        unreachable!()
    };
    let decision = r2
        .route(
            &r2_fixtures::golden_inputs()[0].embedding,
            1,
            &RouteParams::new(0.0),
        )
        .unwrap();
    for budget in [Budget::Tokens(200), Budget::Unlimited] {
        let mut choice = decision.choice;
        choice.budget = budget;
        let routed = r2.routed_body(body.clone(), &choice);
        let entry = r2.pool_model(choice.model);
        assert_eq!(routed["model"], entry.openrouter_id.as_str());
        assert_eq!(routed["tools"], body["tools"]);
        let messages = routed["messages"].as_array().unwrap();
        // The same first message as a request the library builds itself.
        let tokens = match budget {
            Budget::Tokens(n) => Some(n),
            Budget::Unlimited => None,
        };
        let own = r2_llm::ChatRequest::routed(&entry.openrouter_id, "hi", tokens, 0.7);
        let own = serde_json::to_value(&own).unwrap();
        assert_eq!(messages[..], own["messages"].as_array().unwrap()[..]);
    }
}
