//! The in-process embedder's bounded queue, over HTTP: when more `{"query"}` requests arrive than
//! the queue holds while the model runs, the extra ones get 429 with `Retry-After` at once, the
//! others are answered, and the gateway serves normally afterwards.

mod common;

use common::{error_body, Gateway, Setup};
use r2_router::r2_embed::BatchOptions;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_embedding_queue_is_429_with_retry_after_and_the_rest_are_answered() {
    let router = tempfile::tempdir().unwrap();
    let config = r2_fixtures::write_tiny_router(router.path());
    let mut setup = Setup::without_provider();
    setup.router = Some((router.path().to_path_buf(), config));
    setup.embed_model = Some((
        r2_fixtures::tiny_qwen3_dir(),
        BatchOptions {
            max_batch_tokens: 8192,
            max_queued: 1,
        },
    ));
    let gateway = Gateway::start(setup).await;
    // Close to the tiny model's 512 positions, so that each forward pass takes a while.
    let long_query = "route this question to a model ".repeat(26);
    let requests = 24;
    let responses = futures_util::future::join_all((0..requests).map(|i| {
        let body = json!({"query": format!("{i} {long_query}")});
        let (client, url) = (gateway.client.clone(), gateway.url("/v1/route"));
        async move { client.post(url).json(&body).send().await.unwrap() }
    }))
    .await;

    let (mut answered, mut refused) = (0, 0);
    for response in responses {
        match response.status().as_u16() {
            200 => answered += 1,
            429 => {
                let retry_after = response.headers().get("retry-after").cloned();
                assert_eq!(retry_after.unwrap(), "1");
                error_body(response, 429, "server_overloaded").await;
                refused += 1;
            }
            status => panic!("status {status}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(answered + refused, requests);
    // The first call is always taken (nothing waited); calls that arrived while the queue held
    // its one text were refused.
    assert!(answered >= 1, "{answered} answered");
    assert!(refused >= 1, "no request was refused ({answered} answered)");

    let after = gateway
        .client
        .post(gateway.url("/v1/route"))
        .json(&json!({"query": "and now a short one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
}
