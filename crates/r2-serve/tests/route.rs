//! `POST /v1/route`: the decisions of `r2 route --json` for the golden inputs, single and batch,
//! from embeddings and from text, and its errors.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{json, Value};

/// The golden decisions by (id, λ as written).
fn golden_decisions() -> HashMap<(u64, String), Value> {
    r2_fixtures::golden_jsonl("route-expected.jsonl")
        .into_iter()
        .map(|g| {
            let key = (g["id"].as_u64().unwrap(), g["lambda"].to_string());
            (key, g)
        })
        .collect()
}

/// Checks a decision against upstream's: the choice is acceptable, and where it is upstream's
/// choice the rounded numbers are upstream's; the keys are those of `r2 route --json`.
fn check(ours: &Value, golden: &Value) {
    let acceptable = golden["acceptable"].as_array().unwrap();
    assert!(
        acceptable
            .iter()
            .any(|pair| pair[0] == ours["model"] && pair[1] == ours["budget"]),
        "{ours} vs {golden}"
    );
    if ours["model"] == golden["model"] && ours["budget"] == golden["budget"] {
        for key in [
            "openrouter_id",
            "predicted_quality",
            "predicted_cost_usd",
            "risk",
        ] {
            assert_eq!(ours[key], golden[key], "{key}: {ours} vs {golden}");
        }
    }
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test]
async fn single_embeddings_get_upstreams_decisions() {
    let gateway = Gateway::start(Setup::without_provider()).await;
    let golden = golden_decisions();
    let inputs = r2_fixtures::golden_inputs();
    for lambda in ["0.0", "0.99", "0.99999", "1.0"] {
        for g in inputs.iter().step_by(3) {
            let body = json!({
                "id": g.id,
                "embedding": g.embedding,
                "input_tokens": g.input_tokens,
                "lambda": lambda.parse::<f64>().unwrap(),
            });
            let response = gateway.post("/v1/route", &body).await;
            assert_eq!(response.status(), 200);
            let ours: Value = response.json().await.unwrap();
            assert_eq!(
                keys(&ours),
                [
                    "id",
                    "model",
                    "openrouter_id",
                    "budget",
                    "predicted_quality",
                    "predicted_cost_usd",
                    "risk"
                ]
            );
            assert_eq!(ours["id"], g.id);
            check(&ours, &golden[&(g.id, lambda.to_owned())]);
            // The very object `r2 route --json` prints for this line.
            let r2 = gateway.state.r2();
            let params = r2_core::RouteParams::new(lambda.parse().unwrap());
            let decision = r2.route(&g.embedding, g.input_tokens, &params).unwrap();
            let id = json!(g.id);
            let cli = r2.report().decision(&decision, Some(&id), None, false);
            assert_eq!(ours, serde_json::to_value(cli).unwrap());
        }
    }
}

#[tokio::test]
async fn embeddings_batch_gets_upstreams_decisions_in_input_order() {
    let gateway = Gateway::start(Setup::without_provider()).await;
    let golden = golden_decisions();
    let inputs = r2_fixtures::golden_inputs();
    let mut lambdas: Vec<String> = golden.keys().map(|(_, l)| l.clone()).collect();
    lambdas.sort();
    lambdas.dedup();
    assert_eq!(lambdas.len(), 9);
    for lambda in lambdas {
        let body = json!({
            "embeddings": inputs.iter().map(|g| &g.embedding).collect::<Vec<_>>(),
            "input_tokens": inputs.iter().map(|g| g.input_tokens).collect::<Vec<_>>(),
            "lambda": lambda.parse::<f64>().unwrap(),
        });
        let response = gateway.post("/v1/route", &body).await;
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        let decisions = answer["decisions"].as_array().unwrap();
        assert_eq!(decisions.len(), inputs.len());
        for (ours, g) in decisions.iter().zip(&inputs) {
            check(ours, &golden[&(g.id, lambda.clone())]);
        }
    }
}

#[tokio::test]
async fn query_is_embedded_routed_with_its_estimated_tokens_and_echoed() {
    let gateway = Gateway::start(Setup::without_provider()).await;
    let golden = golden_decisions();
    // The golden inputs 0, 4, 8, … have 1 input token, the estimate for `query<id>`.
    for id in [0, 4, 8, 12] {
        let response = gateway
            .post(
                "/v1/route",
                &json!({"query": format!("query{id}"), "lambda": 0.999}),
            )
            .await;
        assert_eq!(response.status(), 200);
        let ours: Value = response.json().await.unwrap();
        assert_eq!(ours["query"], format!("query{id}"));
        assert!(ours.get("id").is_none());
        check(&ours, &golden[&(id, "0.999".to_owned())]);
    }
}

#[tokio::test]
async fn queries_batch_is_embedded_in_one_call_and_routed_in_order() {
    let gateway = Gateway::start(Setup::without_provider()).await;
    let golden = golden_decisions();
    let ids = [16u64, 20, 24, 28, 32];
    let before = sample(&metrics(&gateway).await, "r2_embed_seconds_count");

    let response = gateway
        .post(
            "/v1/route",
            &json!({"queries": ids.iter().map(|id| format!("query{id}")).collect::<Vec<_>>()}),
        )
        .await;

    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let decisions = answer["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), ids.len());
    for (ours, id) in decisions.iter().zip(ids) {
        assert_eq!(ours["query"], format!("query{id}"));
        check(ours, &golden[&(id, "0.99999".to_owned())]);
    }
    let after = sample(&metrics(&gateway).await, "r2_embed_seconds_count");
    assert_eq!(after - before, 1.0, "one embedding call for the batch");
}

#[tokio::test]
async fn verbose_lists_every_option_ranked_and_filters_apply() {
    let gateway = Gateway::start(Setup::without_provider()).await;
    let g = &r2_fixtures::golden_inputs()[5];
    let body = json!({
        "embedding": g.embedding,
        "verbose": true,
        "models": ["GLM-4.5-Air", "gemma-3-4b-it"],
        "max_cost": 0.001,
    });

    let response = gateway.post("/v1/route", &body).await;

    assert_eq!(response.status(), 200);
    let ours: Value = response.json().await.unwrap();
    let options = ours["all_options"].as_array().unwrap();
    assert!(!options.is_empty());
    assert_eq!(options[0]["model"], ours["model"]);
    assert_eq!(options[0]["budget"], ours["budget"]);
    for pair in options.windows(2) {
        assert!(pair[0]["risk"].as_f64() >= pair[1]["risk"].as_f64());
    }
    for option in options {
        assert!(["GLM-4.5-Air", "gemma-3-4b-it"].contains(&option["model"].as_str().unwrap()));
        assert!(option["predicted_cost_usd"].as_f64().unwrap() <= 0.001);
    }
}

#[tokio::test]
async fn with_a_provider_only_available_models_are_default_candidates() {
    let gateway = Gateway::start(Setup::default()).await;
    let pool = r2_fixtures::upstream_pool();
    let inputs = r2_fixtures::golden_inputs();
    let body = json!({
        "embeddings": inputs.iter().map(|g| &g.embedding).collect::<Vec<_>>(),
        "lambda": 1.0,
    });

    let response = gateway.post("/v1/route", &body).await;

    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    for d in answer["decisions"].as_array().unwrap() {
        let model = pool.model(d["model"].as_str().unwrap()).unwrap();
        assert!(model.available, "{} is not available", model.name);
    }
}

#[tokio::test]
async fn bad_values_are_422_with_the_core_errors_message() {
    let gateway = Gateway::start(Setup::without_provider()).await;
    let g = &r2_fixtures::golden_inputs()[0];
    let cases = [
        (
            json!({"embedding": [0.1, 0.2]}),
            "dimension_mismatch",
            "expects 1024",
        ),
        (
            json!({"embeddings": [g.embedding, [0.5]]}),
            "dimension_mismatch",
            "query 1",
        ),
        (
            json!({"embedding": g.embedding, "lambda": 2}),
            "invalid_lambda",
            "[0, 1]",
        ),
        (
            json!({"embedding": g.embedding, "models": ["gpt-4o"]}),
            "unknown_model",
            "gpt-4o",
        ),
        (
            json!({"embedding": g.embedding, "max_cost": 1e-12}),
            "nothing_within_max_cost",
            "cheapest",
        ),
        (
            json!({"embedding": g.embedding, "max_cost": -1}),
            "invalid_max_cost",
            "-1",
        ),
    ];
    for (body, code, fragment) in cases {
        let response = gateway.post("/v1/route", &body).await;
        let error = error_body(response, 422, code).await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{code}: {message}");
    }
}

#[tokio::test]
async fn ambiguous_or_missing_input_is_400() {
    let gateway = Gateway::start(Setup::without_provider()).await;
    for body in [
        json!({}),
        json!({"query": "query0", "embedding": [0.0]}),
        json!({"queries": ["query0"], "id": 3}),
        json!({"queries": ["query0", "query1"], "input_tokens": [1]}),
    ] {
        let response = gateway.post("/v1/route", &body).await;
        error_body(response, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn empty_batch_has_no_decisions() {
    let gateway = Gateway::start(Setup::without_provider()).await;

    let response = gateway.post("/v1/route", &json!({"embeddings": []})).await;

    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer, json!({"decisions": []}));
}

#[tokio::test]
async fn base64_embeddings_route_like_the_same_float32_values_as_numbers() {
    let gateway = Gateway::start(Setup::without_provider()).await;
    let inputs = r2_fixtures::golden_inputs();
    let float32: Vec<Vec<f32>> = inputs
        .iter()
        .map(|g| g.embedding.iter().map(|&v| v as f32).collect())
        .collect();
    let as_numbers: Vec<Vec<f64>> = float32
        .iter()
        .map(|v| v.iter().map(|&x| f64::from(x)).collect())
        .collect();
    let as_base64: Vec<String> = float32
        .iter()
        .map(|v| r2_router::vector::to_base64_f32(v))
        .collect();
    for (i, g) in inputs.iter().enumerate() {
        let numbers =
            json!({"embedding": as_numbers[i], "input_tokens": g.input_tokens, "id": g.id});
        let base64 = json!({"embedding": as_base64[i], "input_tokens": g.input_tokens, "id": g.id});
        let want: Value = gateway
            .post("/v1/route", &numbers)
            .await
            .json()
            .await
            .unwrap();
        let response = gateway.post("/v1/route", &base64).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap(), want);
    }
    // A batch of base64 strings.
    let body = json!({"embeddings": as_base64, "input_tokens": inputs.iter().map(|g| g.input_tokens).collect::<Vec<_>>()});
    let numbers = json!({"embeddings": as_numbers, "input_tokens": inputs.iter().map(|g| g.input_tokens).collect::<Vec<_>>()});
    let want: Value = gateway
        .post("/v1/route", &numbers)
        .await
        .json()
        .await
        .unwrap();
    let got: Value = gateway.post("/v1/route", &body).await.json().await.unwrap();
    assert_eq!(got, want);
    // Not float32 values: 422 naming the problem.
    let response = gateway
        .post("/v1/route", &json!({"embedding": "AAA"}))
        .await;
    let body = error_body(response, 422, "invalid_body").await;
    assert!(body.to_string().contains("float32"), "{body}");
    let response = gateway
        .post("/v1/route", &json!({"embedding": [1, "x"]}))
        .await;
    let body = error_body(response, 422, "invalid_body").await;
    assert!(
        body.to_string().contains("value 2 is not a number"),
        "{body}"
    );
}
