//! The server around the endpoints: models, health, authentication, limits, errors, metrics and
//! shutdown.

mod common;

use std::time::Duration;

use common::*;
use r2_serve::ServeOptions;
use serde_json::{json, Value};

fn with_key() -> Setup {
    Setup {
        serve: ServeOptions {
            api_key: Some(CLIENT_KEY.to_owned()),
            ..ServeOptions::default()
        },
        ..Setup::default()
    }
}

#[tokio::test]
async fn models_lists_r2_router_and_every_pool_model() {
    let gateway = Gateway::start(Setup::default()).await;

    let response = gateway.get("/v1/models").await;

    assert_eq!(response.status(), 200);
    let list: Value = response.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    let pool = r2_fixtures::upstream_pool();
    assert_eq!(data.len(), 1 + pool.models.len());
    assert_eq!(data[0]["id"], "r2-router");
    for (entry, model) in data[1..].iter().zip(&pool.models) {
        assert_eq!(entry["id"], model.name.as_str());
        assert_eq!(entry["object"], "model");
        assert_eq!(entry["openrouter_id"], model.openrouter_id.as_str());
        assert_eq!(
            entry["owned_by"],
            model.openrouter_id.split('/').next().unwrap()
        );
    }
    for entry in data {
        assert_eq!(entry["object"], "model");
        assert!(entry["owned_by"].is_string());
    }
}

#[tokio::test]
async fn healthz_is_ok() {
    let gateway = Gateway::start(Setup::default()).await;

    let response = gateway.get("/healthz").await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn readyz_is_ready_when_the_embedding_server_answers() {
    let gateway = Gateway::start(with_key()).await;
    let before = metrics_with_key(&gateway).await;

    // No key needed, as for /healthz.
    let response = gateway.get("/readyz").await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
    let after = metrics_with_key(&gateway).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        delta("r2_requests_total{endpoint=\"/readyz\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        delta("r2_embed_seconds_count"),
        0.0,
        "probes are not requests"
    );
}

#[tokio::test]
async fn readyz_is_503_when_the_embedding_server_is_down_and_healthz_stays_ok() {
    let gateway = Gateway::start(Setup {
        embed_url: Some(format!("http://{}", closed_port())),
        ..Setup::without_provider()
    })
    .await;
    let started = std::time::Instant::now();

    let response = gateway.get("/readyz").await;

    let error = error_body(response, 503, "not_ready").await;
    assert_eq!(error["error"]["type"], "server_error");
    assert!(
        started.elapsed() < r2_serve::READY_TIMEOUT + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("embedding"), "{message}");
    assert_eq!(gateway.get("/healthz").await.status(), 200);
    // Routing a text fails the same way the probe did.
    let response = gateway.post("/v1/route", &json!({"query": "query0"})).await;
    assert_eq!(response.status(), 502);
}

/// `GET /metrics` with the client key.
async fn metrics_with_key(gateway: &Gateway) -> String {
    let response = gateway
        .client
        .get(gateway.url("/metrics"))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn with_a_client_key_no_key_or_a_wrong_one_is_401_everywhere_but_healthz() {
    let gateway = Gateway::start(with_key()).await;
    for path in ["/v1/models", "/metrics", "/no/such/path"] {
        let response = gateway.get(path).await;
        assert_eq!(
            response.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer"
        );
        error_body(response, 401, "invalid_api_key").await;
        for wrong in [
            format!("Bearer {CLIENT_KEY}x"),
            format!("Bearer {}", &CLIENT_KEY[..CLIENT_KEY.len() - 1]),
            "Bearer ".to_owned(),
            format!("Basic {CLIENT_KEY}"),
        ] {
            let response = gateway
                .client
                .get(gateway.url(path))
                .header("authorization", wrong)
                .send()
                .await
                .unwrap();
            error_body(response, 401, "invalid_api_key").await;
        }
    }
    let response = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query0"))
        .await;
    error_body(response, 401, "invalid_api_key").await;
    assert!(gateway.provider_requests().is_empty());

    assert_eq!(gateway.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn with_a_client_key_the_right_key_gets_through() {
    let gateway = Gateway::start(with_key()).await;
    let bearer = format!("Bearer {CLIENT_KEY}");

    let models = gateway
        .client
        .get(gateway.url("/v1/models"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    let answer = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .header("authorization", &bearer)
        .json(&chat("r2-router", "query0"))
        .send()
        .await
        .unwrap();

    assert_eq!(models.status(), 200);
    assert_eq!(answer.status(), 200);
    // The client's key is the gateway's business: the provider gets the provider key.
    assert_eq!(
        gateway.provider_requests()[0].authorization.as_deref(),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
}

#[tokio::test]
async fn without_a_client_key_every_endpoint_is_open() {
    let gateway = Gateway::start(Setup::default()).await;
    assert!(!gateway.state.auth_enabled());

    for path in ["/v1/models", "/metrics", "/healthz"] {
        assert_eq!(gateway.get(path).await.status(), 200, "{path}");
    }
    let response = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query0"))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let gateway = Gateway::start(Setup {
        serve: ServeOptions {
            body_limit: 2048,
            ..ServeOptions::default()
        },
        ..Setup::default()
    })
    .await;
    let big = chat("r2-router", &"word ".repeat(1000));

    for path in ["/v1/chat/completions", "/v1/route"] {
        let response = gateway.post(path, &big).await;
        error_body(response, 413, "body_too_large").await;
    }
    assert!(gateway.provider_requests().is_empty());
    let small = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query0"))
        .await;
    assert_eq!(small.status(), 200);
}

#[tokio::test]
async fn malformed_json_is_400_with_the_openai_error_shape() {
    let gateway = Gateway::start(Setup::default()).await;
    for path in ["/v1/chat/completions", "/v1/route"] {
        for body in [
            "{\"model\": ",
            "not json",
            "{\"query\": \"a\"} trailing",
            "",
        ] {
            let response = gateway
                .client
                .post(gateway.url(path))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            error_body(response, 400, "invalid_json").await;
        }
    }
    assert!(gateway.provider_requests().is_empty());
}

#[tokio::test]
async fn wrong_types_are_422_with_the_openai_error_shape() {
    let gateway = Gateway::start(Setup::default()).await;
    let cases = [
        ("/v1/chat/completions", json!({"model": 7, "messages": []})),
        ("/v1/chat/completions", json!({"model": "r2-router"})),
        (
            "/v1/chat/completions",
            json!({"model": "r2-router", "messages": "hi"}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "r2-router", "messages": [], "stream": "yes"}),
        ),
        ("/v1/chat/completions", json!(["r2-router", []])),
        ("/v1/route", json!({"embedding": "0.1, 0.2"})),
        ("/v1/route", json!({"query": "query0", "lambda": "0.5"})),
        ("/v1/route", json!({"query": "query0", "verbose": 1})),
        ("/v1/route", json!({"query": "query0", "lamda": 0.5})),
        ("/v1/route", json!([1, 2])),
    ];
    for (path, body) in cases {
        let response = gateway.post(path, &body).await;
        let error = error_body(response, 422, "invalid_body").await;
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    }
    assert!(gateway.provider_requests().is_empty());
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405_with_the_openai_error_shape() {
    let gateway = Gateway::start(Setup::default()).await;

    error_body(gateway.get("/v1/nothing").await, 404, "not_found").await;
    error_body(gateway.get("/v1/route").await, 405, "method_not_allowed").await;
    error_body(
        gateway.post("/healthz", &json!({})).await,
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn saturated_server_answers_429_at_once() {
    let gateway = Gateway::start(Setup {
        serve: ServeOptions {
            max_concurrency: 1,
            ..ServeOptions::default()
        },
        ..Setup::slow(Duration::from_millis(800))
    })
    .await;
    let slow = {
        let (client, url) = (gateway.client.clone(), gateway.url("/v1/chat/completions"));
        tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&chat("r2-router", "query0"))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        })
    };
    gateway.wait_for_provider_requests(1).await;

    let started = std::time::Instant::now();
    let response = gateway.post("/v1/route", &json!({"query": "query0"})).await;
    assert_eq!(response.headers()["retry-after"], "1");
    error_body(response, 429, "server_overloaded").await;
    assert!(started.elapsed() < Duration::from_millis(500), "it queued");
    // Health and metrics stay reachable when the server is saturated.
    assert_eq!(gateway.get("/healthz").await.status(), 200);
    assert_eq!(gateway.get("/metrics").await.status(), 200);

    assert_eq!(slow.await.unwrap(), 200);
    let response = gateway.post("/v1/route", &json!({"query": "query0"})).await;
    assert_eq!(response.status(), 200, "the slot is given back");
}

#[tokio::test]
async fn metrics_count_requests_decisions_and_timings() {
    let gateway = Gateway::start(Setup::default()).await;
    let before = metrics(&gateway).await;
    let route_ok = "r2_requests_total{endpoint=\"/v1/route\",status=\"200\"}";
    let route_bad = "r2_requests_total{endpoint=\"/v1/route\",status=\"422\"}";
    let chat_ok = "r2_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}";
    let chat_404 = "r2_requests_total{endpoint=\"/v1/chat/completions\",status=\"404\"}";

    let decision: Value = gateway
        .post("/v1/route", &json!({"query": "query2"}))
        .await
        .json()
        .await
        .unwrap();
    gateway
        .post("/v1/route", &json!({"query": "query2", "lambda": 7}))
        .await;
    let routed = gateway
        .post("/v1/chat/completions", &chat("r2-router", "query2"))
        .await;
    assert_eq!(routed.status(), 200);
    gateway
        .post("/v1/chat/completions", &chat("nope", "query2"))
        .await;

    let after = metrics(&gateway).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta(route_ok), 1.0);
    assert_eq!(delta(route_bad), 1.0);
    assert_eq!(delta(chat_ok), 1.0);
    assert_eq!(delta(chat_404), 1.0);
    assert_eq!(
        delta("r2_requests_total{endpoint=\"/metrics\",status=\"200\"}"),
        1.0
    );
    // Both requests routed query2 with the default λ and candidates: the same decision, twice.
    let series = format!(
        "r2_decisions_total{{model=\"{}\",budget=\"{}\"}}",
        decision["model"].as_str().unwrap(),
        decision["budget"].to_string().trim_matches('"'),
    );
    assert_eq!(delta(&series), 2.0, "{series}");
    assert_eq!(delta("r2_embed_seconds_count"), 2.0);
    assert_eq!(delta("r2_route_seconds_count"), 2.0);
    assert_eq!(delta("r2_provider_seconds_count"), 1.0);
    assert_eq!(delta("r2_provider_seconds_bucket{le=\"+Inf\"}"), 1.0);
    assert!(after.contains("# TYPE r2_route_seconds histogram"));
    assert!(after.contains("# TYPE r2_requests_total counter"));
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let gateway = Gateway::start(Setup::default()).await;

    let response = gateway.get("/metrics").await;

    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(series.starts_with("r2_"), "{line}");
    }
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_then_stops() {
    let mut gateway = Gateway::start(Setup::slow(Duration::from_millis(600))).await;
    let in_flight = {
        let (client, url) = (gateway.client.clone(), gateway.url("/v1/chat/completions"));
        tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&chat("r2-router", "query0"))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        })
    };
    gateway.wait_for_provider_requests(1).await;

    gateway.shut_down();
    let task = gateway.task.take().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !task.is_finished(),
        "the server stopped with a request in flight"
    );

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert!(body["choices"][0]["message"]["content"].is_string());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server did not stop after its last request")
        .unwrap()
        .unwrap();
    let refused = reqwest::Client::new()
        .get(gateway.url("/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "the server still answers after stopping");
}
