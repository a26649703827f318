//! A fake OpenAI-compatible provider, judge and embeddings server on 127.0.0.1 for load
//! benchmarks (`tools/bench-collect.sh`): chat answers after a fixed delay (judge requests, those
//! with `response_format`, get `{"score": 0.5}`), embeddings at once. Prints its port, then serves
//! until killed.
//!
//!     cargo run --release -p r2-fixtures --example fake_provider -- DELAY_MS

use std::time::Duration;

use axum::Json;
use serde_json::{json, Value};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let delay = Duration::from_millis(
        std::env::args()
            .nth(1)
            .and_then(|d| d.parse().ok())
            .unwrap_or(50),
    );
    let chat = move |Json(body): Json<Value>| async move {
        tokio::time::sleep(delay).await;
        let content = if body.get("response_format").is_some() {
            json!({"score": 0.5}).to_string()
        } else {
            "an answer".to_owned()
        };
        Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 10},
        }))
    };
    let embeddings = |Json(body): Json<Value>| async move {
        let data: Vec<Value> = body["input"]
            .as_array()
            .map(|inputs| {
                inputs
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        let seed = text.as_str().unwrap_or_default().len() as f64;
                        let embedding: Vec<f64> =
                            (0..8).map(|k| ((seed + k as f64) * 0.37).sin()).collect();
                        json!({"index": i, "embedding": embedding})
                    })
                    .collect()
            })
            .unwrap_or_default();
        Json(json!({"object": "list", "data": data, "model": body["model"]}))
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .route("/v1/embeddings", axum::routing::post(embeddings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port on 127.0.0.1");
    println!("{}", listener.local_addr().expect("a bound address").port());
    axum::serve(listener, app)
        .await
        .expect("the fake provider runs");
}
