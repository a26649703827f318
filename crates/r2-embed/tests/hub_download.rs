//! `LocalQwen3Embedder::from_hub` against the Hugging Face Hub stand-in of `r2_fixtures::hub` on
//! 127.0.0.1 (the Hub protocol hf-hub 0.4 speaks; `model.safetensors` behind an LFS-style
//! redirect to another host).
//!
//! The `HF_*` variables are process-wide, so every test holds `ENV_LOCK` while it runs.

#![cfg(feature = "local")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use r2_embed::{Embedder, Error, LocalQwen3Embedder};
use r2_fixtures::hub::{closed_endpoint, set_hub_env, HubRepo, HubServer, COMMIT};
use serde_json::Value;

static ENV_LOCK: Mutex<()> = Mutex::new(());

const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

fn lock_env() -> MutexGuard<'static, ()> {
    ENV_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

#[test]
fn first_load_downloads_then_the_cache_serves_offline() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let reference = reference_vectors().await;
        let server = HubServer::start(HashMap::from([("tiny/qwen3".to_owned(), tiny_repo())]));
        set_hub_env(&server.endpoint, hf_home.path(), false);

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

        // Cached files are used without the network, even without HF_HUB_OFFLINE.
        set_hub_env(&closed_endpoint(), hf_home.path(), false);
        let e = LocalQwen3Embedder::from_hub("tiny/qwen3", false)
            .await
            .unwrap();
        assert_eq!(e.embed(&texts()).await.unwrap(), reference);

        set_hub_env(&closed_endpoint(), hf_home.path(), true);
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
    set_hub_env(&closed_endpoint(), hf_home.path(), true);
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
        "config.json, tokenizer.json and model.safetensors",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in: {msg}");
    }
    // The command line adds its own flag (`--embedding-model-dir`): see r2-cli's local_cli tests.
    assert!(!msg.contains("--embedding-model-dir"), "{msg}");
}

#[test]
fn unreachable_hub_with_an_empty_cache_says_what_to_do() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    let endpoint = closed_endpoint();
    set_hub_env(&endpoint, hf_home.path(), false);
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
        let server = HubServer::start(HashMap::from([("tiny/no-tokenizer".to_owned(), repo)]));
        set_hub_env(&server.endpoint, hf_home.path(), false);
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
        let server2 = HubServer::start(HashMap::from([("tiny/no-weights".to_owned(), repo)]));
        set_hub_env(&server2.endpoint, hf_home.path(), false);
        let err = LocalQwen3Embedder::from_hub("tiny/no-weights", false)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, Error::Download { file, .. } if file == "model.safetensors"),
            "{err:?}"
        );
        assert!(msg.contains("model.safetensors.index.json"), "{msg}");
        set_hub_env(&server.endpoint, hf_home.path(), false);

        // An unknown repository fails on its first file.
        let err = LocalQwen3Embedder::from_hub("tiny/nothing-here", false)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Download { file, .. } if file == "config.json"),
            "{err:?}"
        );
    });
}

#[test]
fn a_sharded_repository_downloads_every_shard() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let reference = reference_vectors().await;
        let server = HubServer::start(HashMap::from([("tiny/sharded".to_owned(), sharded_repo())]));
        set_hub_env(&server.endpoint, hf_home.path(), false);
        let e = LocalQwen3Embedder::from_hub("tiny/sharded", false)
            .await
            .unwrap();
        assert_eq!(e.embed(&texts()).await.unwrap(), reference);

        // And the shards are found in the cache offline.
        set_hub_env(&closed_endpoint(), hf_home.path(), true);
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
    set_hub_env(&closed_endpoint(), hf_home.path(), false);
    for repo in ["", "a/b/c", "../x", "a b"] {
        let err = runtime()
            .block_on(LocalQwen3Embedder::from_hub(repo, false))
            .unwrap_err();
        assert!(matches!(err, Error::Download { .. }), "{repo:?}: {err:?}");
    }
}
