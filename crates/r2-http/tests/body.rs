//! The body readers and the client against a real server on 127.0.0.1.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::routing::get;
use r2_http::{read_limited, read_prefix, Error};

fn server() -> String {
    let app =
        axum::Router::new()
            .route("/small", get(|| async { "0123456789" }))
            .route(
                "/chunked",
                get(|| async {
                    let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 1000]));
                    Body::from_stream(futures_util::stream::iter(chunks))
                }),
            )
            .route(
                "/agent",
                get(|headers: HeaderMap| async move {
                    headers["user-agent"].to_str().unwrap().to_owned()
                }),
            );
    format!("http://{}", r2_fixtures::spawn_server(app))
}

async fn get_response(url: &str) -> reqwest::Response {
    let client = r2_http::client(Some(Duration::from_secs(10)), None).unwrap();
    client.get(url).send().await.unwrap()
}

#[tokio::test]
async fn a_body_within_the_limit_is_read_whole() {
    let base = server();
    let body = read_limited(get_response(&format!("{base}/small")).await, 10)
        .await
        .unwrap();
    assert_eq!(body, b"0123456789");
    let body = read_limited(get_response(&format!("{base}/chunked")).await, 10_000)
        .await
        .unwrap();
    assert_eq!(body.len(), 10_000);
}

#[tokio::test]
async fn a_body_over_the_limit_fails_by_its_length_or_as_it_arrives() {
    let base = server();
    let err = read_limited(get_response(&format!("{base}/small")).await, 9)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 9 }), "{err:?}");
    let err = read_limited(get_response(&format!("{base}/chunked")).await, 9_999)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 9_999 }), "{err:?}");
    assert_eq!(
        r2_core::Classify::class(&err),
        r2_core::ErrorClass::UpstreamFailure
    );
}

#[tokio::test]
async fn a_prefix_is_at_most_its_length() {
    let base = server();
    let prefix = read_prefix(get_response(&format!("{base}/chunked")).await, 2_500).await;
    assert_eq!(prefix.len(), 2_500);
    let whole = read_prefix(get_response(&format!("{base}/small")).await, 2_500).await;
    assert_eq!(whole, b"0123456789");
}

#[tokio::test]
async fn requests_carry_r2s_user_agent() {
    let base = server();
    let agent = get_response(&format!("{base}/agent"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(agent, r2_http::USER_AGENT);
    assert!(agent.starts_with("r2/"), "{agent}");
}
