//! The end-to-end library API: load, route, route_text, generate, route_and_generate, against an
//! embeddings server and a chat-completions server started inside the test.

use std::collections::HashMap;

use r2_core::{Budget, RouteParams};
use r2_router::{Error, Options, R2Router};

fn golden_embeddings_server() -> std::net::SocketAddr {
    let table: HashMap<String, Vec<f64>> = r2_fixtures::golden_inputs()
        .into_iter()
        .map(|g| (format!("query{}", g.id), g.embedding))
        .collect();
    r2_fixtures::start_embeddings_server(table)
}

fn options() -> Options {
    Options {
        checkpoints: Some(r2_fixtures::converted_router_dir()),
        config: Some(r2_fixtures::upstream_dir().join("config.json")),
        embed_url: Some(format!("http://{}", golden_embeddings_server())),
        ..Options::default()
    }
}

#[tokio::test]
async fn route_text_makes_the_decision_of_route_on_the_same_embedding() {
    let r2 = R2Router::load(options()).await.unwrap();
    assert!(!r2.can_generate());
    let params = r2.default_params().unwrap();
    assert_eq!(params.lambda, 0.99999);
    assert_eq!(
        params.candidates, None,
        "without an API every model is a candidate"
    );
    for g in r2_fixtures::golden_inputs().iter().take(8) {
        let query = format!("query{}", g.id);
        let from_text = r2.route_text(&query, &params).await.unwrap();
        let direct = r2
            .route(
                &g.embedding,
                r2_core::estimate_input_tokens(&query),
                &params,
            )
            .unwrap();
        assert_eq!(from_text, direct);
    }
    assert!(matches!(
        r2.generate("query0", 0, Budget::Tokens(10), 0.7, None)
            .await,
        Err(Error::NoLlmApi)
    ));
}

#[tokio::test]
async fn route_and_generate_calls_the_chosen_model_with_the_budget_prompt() {
    let (chat, seen) = r2_fixtures::start_chat_server(r2_fixtures::ChatReply::Ok);
    let r2 = R2Router::load(Options {
        llm_api_base: Some(format!("http://{chat}/api/v1")),
        llm_api_key: Some(r2_llm::ApiKey::new("sk-test")),
        ..options()
    })
    .await
    .unwrap();
    assert!(r2.can_generate());
    let params = r2.default_params().unwrap();
    let answer = r2.route_and_generate("query7", &params).await.unwrap();
    let model = r2.pool_model(answer.decision.choice.model);
    assert!(model.available, "{} is not served by the API", model.name);
    assert_eq!(
        answer.generation.text,
        format!("Answer from {}.", model.openrouter_id)
    );
    assert_eq!(answer.generation.usage.prompt_tokens, 12);
    let expected_cost =
        12.0 * model.input_price_per_million / 1e6 + 5.0 * model.output_price_per_million / 1e6;
    assert!((answer.generation.cost_usd - expected_cost).abs() < 1e-15);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["model"], model.openrouter_id.as_str());
    let messages = seen[0].body["messages"].as_array().unwrap();
    match answer.decision.choice.budget {
        Budget::Tokens(n) => assert_eq!(
            messages[0]["content"],
            r2_llm::budget_system_prompt(n).as_str()
        ),
        Budget::Unlimited => assert_eq!(messages.len(), 1),
    }

    // Streaming hands the text over piece by piece.
    let mut pieces = Vec::new();
    let mut on_delta = |d: &str| pieces.push(d.to_owned());
    let streamed = r2
        .generate("query7", 0, Budget::Unlimited, 0.7, Some(&mut on_delta))
        .await
        .unwrap();
    assert!(pieces.len() > 1);
    assert_eq!(pieces.concat(), streamed.text);
}

#[tokio::test]
async fn bad_options_are_errors_of_the_right_layer() {
    let err = R2Router::load(Options {
        lambda: Some(1.5),
        ..options()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Core(r2_core::Error::InvalidLambda { .. })),
        "{err:?}"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = R2Router::load(Options {
        checkpoints: Some(empty.path().to_path_buf()),
        ..options()
    })
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("router.safetensors") && message.contains("config.json"),
        "{err}"
    );
    let r2 = R2Router::load(options()).await.unwrap();
    let params =
        RouteParams::new(0.5).with_candidates(r2.router().model_mask(&["GLM-4.5-Air"]).unwrap());
    let d = r2.route_text("query3", &params).await.unwrap();
    assert_eq!(r2.model_name(d.choice.model), "GLM-4.5-Air");
    let err = r2
        .route_text("not a golden query", &params)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Embed(r2_embed::Error::Status { status: 400, .. })
        ),
        "{err:?}"
    );
}
