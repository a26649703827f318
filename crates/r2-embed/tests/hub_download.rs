//! `LocalQwen3Embedder::from_hub` against a Hugging Face Hub stand-in on 127.0.0.1.
//!
//! The server speaks the part of the Hub protocol hf-hub 0.4 uses: `GET
//! {endpoint}/{repo}/resolve/{revision}/{file}` with `Range: bytes=0-0` for the metadata (answered
//! with `x-repo-commit`, `etag` and `content-range: bytes 0-0/{size}`), then ranged `GET`s for the
//! content. Like the real Hub for large (LFS) files, `model.safetensors` is answered with a 302 to
//! another host (`localhost` instead of `127.0.0.1`) carrying `x-linked-etag`; hf-hub then reads
//! the size from the redirect target.
//!
//! The `HF_*` variables are process-wide, so every test holds `ENV_LOCK` while it runs.

#![cfg(feature = "local")]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use r2_embed::{Embedder, Error, LocalQwen3Embedder};
use serde_json::Value;

static ENV_LOCK: Mutex<()> = Mutex::new(());

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

fn lock_env() -> MutexGuard<'static, ()> {
    ENV_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Points the Hub variables at `endpoint` and `hf_home`, offline or not; clears the others.
fn set_env(endpoint: &str, hf_home: &Path, offline: bool) {
    std::env::set_var("HF_ENDPOINT", endpoint);
    std::env::set_var("HF_HOME", hf_home);
    for key in ["HF_HUB_CACHE", "HF_TOKEN"] {
        std::env::remove_var(key);
    }
    if offline {
        std::env::set_var("HF_HUB_OFFLINE", "1");
    } else {
        std::env::remove_var("HF_HUB_OFFLINE");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(r2_fixtures::tiny_qwen3_dir().join(name)).unwrap()
}

fn texts() -> Vec<String> {
    let path = r2_fixtures::tiny_qwen3_dir().join("reference.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// FNV-1a, as a stand-in for the Hub's sha256 etags.
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[derive(Default)]
struct HubRepo {
    files: HashMap<String, Vec<u8>>,
    /// Files answered with a redirect to `/cdn/{etag}` on another host, like LFS files.
    redirected: HashSet<String>,
}

struct Hub {
    port: u16,
    repos: HashMap<String, HubRepo>,
    blobs: HashMap<String, Vec<u8>>,
    log: Mutex<Vec<String>>,
}

/// A running stand-in Hub.
struct Server {
    endpoint: String,
    hub: Arc<Hub>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(repos: HashMap<String, HubRepo>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let blobs = repos
            .values()
            .flat_map(|r| r.files.values())
            .map(|bytes| (etag(bytes), bytes.clone()))
            .collect();
        let hub = Arc::new(Hub {
            port,
            repos,
            blobs,
            log: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().fallback(serve).with_state(hub.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            hub,
            task,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.hub.log.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn serve(State(hub): State<Arc<Hub>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    hub.log.lock().unwrap().push(path.clone());
    if let Some(tag) = path.strip_prefix("/cdn/") {
        return match hub.blobs.get(tag) {
            Some(bytes) => ranged(bytes, &headers, Response::builder()),
            None => not_found(),
        };
    }
    let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return not_found();
    };
    let Some((revision, file)) = rest.split_once('/') else {
        return not_found();
    };
    let (Some(repo), "main") = (hub.repos.get(repo), revision) else {
        return not_found();
    };
    let Some(bytes) = repo.files.get(file) else {
        return not_found();
    };
    let tag = etag(bytes);
    let builder = Response::builder().header("x-repo-commit", COMMIT);
    if repo.redirected.contains(file) {
        return builder
            .status(StatusCode::FOUND)
            .header(
                header::LOCATION,
                format!("http://localhost:{}/cdn/{tag}", hub.port),
            )
            .header("x-linked-etag", format!("\"{tag}\""))
            .header("x-linked-size", bytes.len())
            .body(Body::empty())
            .unwrap();
    }
    ranged(
        bytes,
        &headers,
        builder.header(header::ETAG, format!("\"{tag}\"")),
    )
}

/// The whole file, or the part a `Range: bytes=a-b` asks for (206 with `content-range`).
fn ranged(bytes: &[u8], headers: &HeaderMap, builder: axum::http::response::Builder) -> Response {
    let len = bytes.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    match range {
        Some((start, stop)) if start < len => {
            let stop = stop.min(len - 1);
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{stop}/{len}"))
                .header(header::CONTENT_LENGTH, stop + 1 - start)
                .body(Body::from(bytes[start..=stop].to_vec()))
                .unwrap()
        }
        _ => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, len)
            .body(Body::from(bytes.to_vec()))
            .unwrap(),
    }
}

fn not_found() -> Response {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header("x-error-code", "EntryNotFound")
        .body(Body::from("Entry not found"))
        .unwrap()
}

/// The tiny fixture as a Hub repository (`model.safetensors` behind a redirect).
fn tiny_repo() -> HubRepo {
    let mut repo = HubRepo::default();
    for name in FILES {
        repo.files.insert(name.to_owned(), fixture(name));
    }
    repo.redirected.insert("model.safetensors".to_owned());
    repo
}

/// The fixture's weights split into two shards and an index, without `model.safetensors`.
fn sharded_repo() -> HubRepo {
    let bytes = fixture("model.safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let shard_names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut repo = HubRepo::default();
    let mut weight_map = serde_json::Map::new();
    for (part, shard) in [(first, shard_names[0]), (second, shard_names[1])] {
        let mut head = serde_json::Map::new();
        let mut body = Vec::new();
        for name in part {
            let info = &header[name.as_str()];
            let off: Vec<usize> = info["data_offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let start = body.len();
            body.extend_from_slice(&data[off[0]..off[1]]);
            head.insert(
                (*name).clone(),
                serde_json::json!({"dtype": info["dtype"], "shape": info["shape"],
                                   "data_offsets": [start, body.len()]}),
            );
            weight_map.insert((*name).clone(), shard.into());
        }
        let head = serde_json::to_vec(&Value::Object(head)).unwrap();
        let mut file = (head.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&head);
        file.extend_from_slice(&body);
        repo.files.insert(shard.to_owned(), file);
        repo.redirected.insert(shard.to_owned());
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    repo.files.insert(
        "model.safetensors.index.json".to_owned(),
        index.to_string().into_bytes(),
    );
    for name in ["config.json", "tokenizer.json"] {
        repo.files.insert(name.to_owned(), fixture(name));
    }
    repo
}

async fn reference_vectors() -> Vec<Vec<f32>> {
    let local = LocalQwen3Embedder::from_dir(&r2_fixtures::tiny_qwen3_dir()).unwrap();
    local.embed(&texts()).await.unwrap()
}

fn snapshot_dir(hf_home: &Path, repo_folder: &str) -> PathBuf {
    hf_home
        .join("hub")
        .join(repo_folder)
        .join("snapshots")
        .join(COMMIT)
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn first_load_downloads_then_the_cache_serves_offline() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let reference = reference_vectors().await;
        let server = Server::start(HashMap::from([("tiny/qwen3".to_owned(), tiny_repo())])).await;
        set_env(&server.endpoint, hf_home.path(), false);

        let e = LocalQwen3Embedder::from_hub("tiny/qwen3", true)
            .await
            .unwrap();
        assert_eq!(e.model_name(), "tiny/qwen3");
        assert_eq!(e.dim(), 64);
        assert_eq!(e.embed(&texts()).await.unwrap(), reference);

        // The files are in the cache under HF_HOME, in huggingface_hub's layout.
        let repo_dir = hf_home.path().join("hub").join("models--tiny--qwen3");
        assert_eq!(
            std::fs::read_to_string(repo_dir.join("refs").join("main")).unwrap(),
            COMMIT
        );
        for name in FILES {
            let cached = snapshot_dir(hf_home.path(), "models--tiny--qwen3").join(name);
            assert_eq!(std::fs::read(&cached).unwrap(), fixture(name), "{name}");
        }
        let requests = server.requests();
        for name in FILES {
            let path = format!("/tiny/qwen3/resolve/main/{name}");
            assert!(requests.contains(&path), "{path} in {requests:?}");
        }
        assert!(
            requests.iter().any(|r| r.starts_with("/cdn/")),
            "the redirect was followed: {requests:?}"
        );
        server.stop().await;

        // Cached files are used without the network, even without HF_HUB_OFFLINE.
        set_env(&closed_port_endpoint(), hf_home.path(), false);
        let e = LocalQwen3Embedder::from_hub("tiny/qwen3", false)
            .await
            .unwrap();
        assert_eq!(e.embed(&texts()).await.unwrap(), reference);

        set_env(&closed_port_endpoint(), hf_home.path(), true);
        let e = LocalQwen3Embedder::from_hub("tiny/qwen3", false)
            .await
            .unwrap();
        assert_eq!(e.embed(&texts()).await.unwrap(), reference);
    });
}

#[test]
fn offline_with_an_empty_cache_says_what_to_do() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    set_env(&closed_port_endpoint(), hf_home.path(), true);
    let err = runtime()
        .block_on(LocalQwen3Embedder::from_hub("tiny/qwen3", false))
        .unwrap_err();
    let msg = err.to_string();
    match &err {
        Error::Download { repo, file, .. } => {
            assert_eq!(repo, "tiny/qwen3");
            assert_eq!(file, "config.json");
        }
        other => panic!("expected Error::Download, got {other:?}"),
    }
    let cache = hf_home.path().join("hub").display().to_string();
    for needle in [
        "tiny/qwen3",
        "HF_HUB_OFFLINE",
        "huggingface-cli download tiny/qwen3",
        cache.as_str(),
        "--embedding-model-dir",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in: {msg}");
    }
}

#[test]
fn unreachable_hub_with_an_empty_cache_says_what_to_do() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    let endpoint = closed_port_endpoint();
    set_env(&endpoint, hf_home.path(), false);
    let err = runtime()
        .block_on(LocalQwen3Embedder::from_hub("tiny/qwen3", false))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Download { .. }), "{err:?}");
    for needle in [
        "tiny/qwen3",
        "config.json",
        endpoint.as_str(),
        "huggingface-cli download",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in: {msg}");
    }
}

#[test]
fn a_file_missing_on_the_hub_is_named() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let mut repo = tiny_repo();
        repo.files.remove("tokenizer.json");
        let server = Server::start(HashMap::from([("tiny/no-tokenizer".to_owned(), repo)])).await;
        set_env(&server.endpoint, hf_home.path(), false);
        let err = LocalQwen3Embedder::from_hub("tiny/no-tokenizer", false)
            .await
            .unwrap_err();
        let msg = err.to_string();
        match &err {
            Error::Download { repo, file, .. } => {
                assert_eq!(repo, "tiny/no-tokenizer");
                assert_eq!(file, "tokenizer.json");
            }
            other => panic!("expected Error::Download, got {other:?}"),
        }
        assert!(
            msg.contains("tokenizer.json") && msg.contains("404"),
            "{msg}"
        );

        // A repository without weights names model.safetensors and its sharded alternative.
        let mut repo = tiny_repo();
        repo.files.remove("model.safetensors");
        let server2 = Server::start(HashMap::from([("tiny/no-weights".to_owned(), repo)])).await;
        set_env(&server2.endpoint, hf_home.path(), false);
        let err = LocalQwen3Embedder::from_hub("tiny/no-weights", false)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, Error::Download { file, .. } if file == "model.safetensors"),
            "{err:?}"
        );
        assert!(msg.contains("model.safetensors.index.json"), "{msg}");
        server2.stop().await;
        set_env(&server.endpoint, hf_home.path(), false);

        // An unknown repository fails on its first file.
        let err = LocalQwen3Embedder::from_hub("tiny/nothing-here", false)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Download { file, .. } if file == "config.json"),
            "{err:?}"
        );
        server.stop().await;
    });
}

#[test]
fn a_sharded_repository_downloads_every_shard() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let reference = reference_vectors().await;
        let server =
            Server::start(HashMap::from([("tiny/sharded".to_owned(), sharded_repo())])).await;
        set_env(&server.endpoint, hf_home.path(), false);
        let e = LocalQwen3Embedder::from_hub("tiny/sharded", false)
            .await
            .unwrap();
        assert_eq!(e.embed(&texts()).await.unwrap(), reference);
        server.stop().await;

        // And the shards are found in the cache offline.
        set_env(&closed_port_endpoint(), hf_home.path(), true);
        let e = LocalQwen3Embedder::from_hub("tiny/sharded", false)
            .await
            .unwrap();
        assert_eq!(e.embed(&texts()).await.unwrap(), reference);
        let snapshot = snapshot_dir(hf_home.path(), "models--tiny--sharded");
        assert!(snapshot.join("model-00002-of-00002.safetensors").is_file());
        assert!(!snapshot.join("model.safetensors").exists());
    });
}

#[test]
fn an_invalid_repository_id_is_rejected() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    set_env(&closed_port_endpoint(), hf_home.path(), false);
    for repo in ["", "a/b/c", "../x", "a b"] {
        let err = runtime()
            .block_on(LocalQwen3Embedder::from_hub(repo, false))
            .unwrap_err();
        assert!(matches!(err, Error::Download { .. }), "{repo:?}: {err:?}");
    }
}
