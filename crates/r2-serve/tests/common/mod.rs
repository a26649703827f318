//! The gateway in-process on 127.0.0.1:0, with the golden embeddings served as `query<id>` and a
//! chat-completions provider, both started inside the test.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use r2_fixtures::{ChatReply, ChatServerOptions, SeenChat};
use r2_router::{Options, R2Router};
use r2_serve::{AppState, ServeOptions};
use serde_json::Value;

/// The provider key the gateway is started with: it must never reach a client.
pub const PROVIDER_KEY: &str = "sk-or-test-PROVIDER-SECRET-7777";

/// The key clients send when the gateway requires one.
pub const CLIENT_KEY: &str = "r2-client-key-0123456789";

pub const BUDGET_PROMPT: &str =
    "You MUST respond in {budget} tokens or fewer. Directly give the answer follow the format WITHOUT ANY explanation.";

/// One embeddings server for the whole test binary: the golden embeddings as `query<id>`, and
/// the text `/readyz` embeds.
pub fn embeddings() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let mut table: HashMap<String, Vec<f64>> = r2_fixtures::golden_inputs()
            .into_iter()
            .map(|g| (format!("query{}", g.id), g.embedding))
            .collect();
        let probe = table["query0"].clone();
        table.insert(r2_serve::READY_PROBE.to_owned(), probe);
        r2_fixtures::start_embeddings_server(table)
    })
}

/// An address on 127.0.0.1 where nothing listens (a port just given back by the kernel).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// How to start a gateway for one test.
pub struct Setup {
    /// `None`: no provider (route only).
    pub provider: Option<(ChatReply, ChatServerOptions)>,
    pub serve: ServeOptions,
    pub provider_timeout: Duration,
    /// The API base of a provider started by the test itself (instead of `provider`).
    pub provider_base: Option<String>,
    /// The embeddings server (default: [`embeddings`]).
    pub embed_url: Option<String>,
    /// An in-process Qwen3 model folder and its batching, instead of an embeddings server.
    pub embed_model: Option<(std::path::PathBuf, r2_router::r2_embed::BatchOptions)>,
    /// Another router: its checkpoints folder and pool config (default: the upstream router).
    pub router: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            provider: Some((
                ChatReply::Ok,
                ChatServerOptions {
                    openai_chunks: true,
                    ..ChatServerOptions::default()
                },
            )),
            serve: ServeOptions::default(),
            provider_timeout: Duration::from_secs(5),
            provider_base: None,
            embed_url: None,
            embed_model: None,
            router: None,
        }
    }
}

impl Setup {
    pub fn without_provider() -> Self {
        Self {
            provider: None,
            ..Self::default()
        }
    }

    pub fn reply(reply: ChatReply) -> Self {
        let mut setup = Self::default();
        setup.provider.as_mut().unwrap().0 = reply;
        setup
    }

    /// A provider that waits `delay` before answering.
    pub fn slow(delay: Duration) -> Self {
        let mut setup = Self::default();
        setup.provider.as_mut().unwrap().1.delay = delay;
        setup
    }
}

/// A running gateway.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub addr: SocketAddr,
    pub state: AppState,
    /// What the provider received.
    pub seen: Arc<Mutex<Vec<SeenChat>>>,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    pub async fn start(setup: Setup) -> Self {
        let (llm_api_base, seen) = match setup.provider {
            _ if setup.provider_base.is_some() => {
                (setup.provider_base, Arc::new(Mutex::new(Vec::new())))
            }
            Some((reply, options)) => {
                let (addr, seen) = r2_fixtures::start_chat_server_with(reply, options);
                (Some(format!("http://{addr}/api/v1")), seen)
            }
            None => (None, Arc::new(Mutex::new(Vec::new()))),
        };
        let (embedding_model_dir, embed_batching) = match setup.embed_model {
            Some((dir, batching)) => (Some(dir), batching),
            None => (None, r2_router::r2_embed::BatchOptions::default()),
        };
        let embed_url = match (&embedding_model_dir, setup.embed_url) {
            (Some(_), _) => None,
            (None, url) => Some(url.unwrap_or_else(|| format!("http://{}", embeddings()))),
        };
        let (checkpoints, config) = setup.router.unwrap_or_else(|| {
            (
                r2_fixtures::converted_router_dir(),
                r2_fixtures::upstream_dir().join("config.json"),
            )
        });
        let r2 = R2Router::load(Options {
            checkpoints: Some(checkpoints),
            config: Some(config),
            embed_url,
            embedding_model_dir,
            embed_batching,
            llm_api_key: llm_api_base
                .as_ref()
                .map(|_| r2_llm::ApiKey::new(PROVIDER_KEY)),
            llm_api_base,
            llm_options: Some(r2_llm::LlmOptions {
                timeout: setup.provider_timeout,
                max_retries: 0,
                ..r2_llm::LlmOptions::default()
            }),
            ..Options::default()
        })
        .await
        .unwrap();
        let state = AppState::new(r2, setup.serve).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(r2_serve::serve(listener, state.clone(), async move {
            let _ = stop.await;
        }));
        Self {
            base,
            addr,
            state,
            seen,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Starts a graceful shutdown.
    pub fn shut_down(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// The requests the provider received so far.
    pub fn provider_requests(&self) -> Vec<SeenChat> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until the provider has received `n` requests.
    pub async fn wait_for_provider_requests(&self, n: usize) {
        for _ in 0..500 {
            if self.seen.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the provider never received {n} requests");
    }
}

/// A chat request for `model` with one user message.
pub fn chat(model: &str, query: &str) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": query}],
    })
}

/// Checks the OpenAI error shape and returns the body.
pub async fn error_body(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let text = response.text().await.unwrap();
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    body
}

/// The value of one sample of the Prometheus text, 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

pub async fn metrics(gateway: &Gateway) -> String {
    let response = gateway.get("/metrics").await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}
