//! Where a router comes from: an upstream folder read in memory, a Hugging Face repository in
//! either layout (against the Hub stand-in of `r2_fixtures::hub`), and `convert`. Every source
//! must make the decisions of the converted router on all golden embeddings.
//!
//! `HF_*`, `R2_CHECKPOINTS` and `R2_CONFIG` are process-wide, so every test holds `ENV_LOCK`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use r2_core::RouteParams;
use r2_fixtures::hub::{closed_endpoint, set_hub_env, HubRepo, HubServer};
use r2_router::{Error, Options, RepoRef, RouterSource};

static ENV_LOCK: Mutex<()> = Mutex::new(());

fn lock_env() -> MutexGuard<'static, ()> {
    ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const LAMBDAS: [f64; 9] = [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999, 1.0];

/// Every golden embedding under every golden λ routes exactly as with the converted router and
/// the upstream pool (same choice, same bits).
fn assert_same_decisions(router: &r2_core::Router) {
    let reference = r2_fixtures::upstream_router();
    let names = |r: &r2_core::Router| -> Vec<String> {
        r.models().iter().map(|m| m.name.clone()).collect()
    };
    assert_eq!(names(router), names(&reference));
    for input in r2_fixtures::golden_inputs() {
        for lambda in LAMBDAS {
            let params = RouteParams::new(lambda);
            let ours = router
                .route(&input.embedding, input.input_tokens, &params)
                .unwrap();
            let theirs = reference
                .route(&input.embedding, input.input_tokens, &params)
                .unwrap();
            assert_eq!(ours, theirs, "id {} λ {lambda}", input.id);
        }
    }
}

fn upstream_repo() -> HubRepo {
    let mut repo = HubRepo::from_dir(&r2_fixtures::upstream_dir());
    for file in repo.files.keys() {
        if file.ends_with(".joblib") {
            repo.redirected.insert(file.clone());
        }
    }
    repo.files
        .insert("README.md".into(), b"# R2-Router".to_vec());
    repo
}

fn router_repo() -> HubRepo {
    let mut repo = HubRepo::default();
    let router = r2_fixtures::converted_router_dir().join(r2_checkpoints::ROUTER_FILE);
    repo.files.insert(
        r2_checkpoints::ROUTER_FILE.into(),
        std::fs::read(router).unwrap(),
    );
    repo.files.insert(
        "config.json".into(),
        std::fs::read(r2_fixtures::upstream_dir().join("config.json")).unwrap(),
    );
    repo
}

fn load(options: Options) -> Result<r2_router::Loaded, Error> {
    runtime().block_on(r2_router::load_router(&options))
}

#[test]
fn an_upstream_folder_loads_in_memory_with_its_own_pool() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    set_hub_env(&closed_endpoint(), hf_home.path(), true);
    // A copy, so the test can see that nothing is written next to the user's files.
    let copy = tempfile::tempdir().unwrap();
    r2_fixtures::copy_dir(&r2_fixtures::upstream_dir(), copy.path());
    let before = list(copy.path());
    let loaded = load(Options {
        checkpoints: Some(copy.path().to_path_buf()),
        ..Options::default()
    })
    .unwrap();
    assert_eq!(list(copy.path()), before, "nothing written");
    assert!(matches!(
        loaded.layout,
        r2_checkpoints::Layout::Upstream { .. }
    ));
    assert_eq!(loaded.pool.source, copy.path().join("config.json"));
    assert_same_decisions(&loaded.router);

    // --config wins over the folder's own config.
    let config = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(r2_fixtures::upstream_dir().join("config.json")).unwrap();
    std::fs::write(config.path(), text.replace("0.99999", "0.5")).unwrap();
    let loaded = load(Options {
        checkpoints: Some(copy.path().to_path_buf()),
        config: Some(config.path().to_path_buf()),
        ..Options::default()
    })
    .unwrap();
    assert_eq!(loaded.pool.source, config.path());
    assert_eq!(loaded.pool.default_lambda, 0.5);
}

#[test]
fn a_hub_repository_in_upstream_layout_loads_then_serves_from_the_cache() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    let server = HubServer::start(HashMap::from([(
        "authors/R2-Router".to_owned(),
        upstream_repo(),
    )]));
    set_hub_env(&server.endpoint, hf_home.path(), false);
    let repo: RepoRef = "authors/R2-Router".parse().unwrap();
    let options = Options {
        hf_repo: Some(repo.clone()),
        ..Options::default()
    };
    let loaded = load(options.clone()).unwrap();
    assert_same_decisions(&loaded.router);
    let requests = server.requests();
    assert!(requests.contains(&"/api/models/authors/R2-Router/revision/main".to_owned()));
    assert!(
        !requests.iter().any(|r| r.ends_with("README.md")),
        "only router files are downloaded: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.starts_with("/cdn/")),
        "LFS redirects followed"
    );

    // A second run needs no network: the Hub is down, then offline.
    set_hub_env(&closed_endpoint(), hf_home.path(), false);
    assert_same_decisions(&load(options.clone()).unwrap().router);
    set_hub_env(&closed_endpoint(), hf_home.path(), true);
    assert_same_decisions(&load(options.clone()).unwrap().router);

    // Offline with an empty cache: the repository, the cache and what to do.
    let empty = tempfile::tempdir().unwrap();
    set_hub_env(&closed_endpoint(), empty.path(), true);
    let err = load(options).unwrap_err();
    let message = err.to_string();
    let cache = empty.path().join("hub").display().to_string();
    for needle in [
        "authors/R2-Router",
        cache.as_str(),
        "HF_HUB_OFFLINE",
        "huggingface-cli download",
    ] {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

#[test]
fn a_hub_repository_with_a_router_file_and_its_pool_loads() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    let mut repo = router_repo();
    repo.revisions.insert("v2".into());
    let server = HubServer::start(HashMap::from([("team/my-router".to_owned(), repo)]));
    set_hub_env(&server.endpoint, hf_home.path(), false);
    let loaded = load(Options {
        hf_repo: Some("team/my-router@v2".parse().unwrap()),
        ..Options::default()
    })
    .unwrap();
    assert!(matches!(
        loaded.layout,
        r2_checkpoints::Layout::Router { .. }
    ));
    assert!(
        loaded.pool.source.ends_with("config.json"),
        "the repository's pool: {}",
        loaded.pool.source.display()
    );
    assert_same_decisions(&loaded.router);
}

#[test]
fn a_hub_repository_without_a_router_lists_what_it_holds() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    let mut repo = HubRepo::default();
    for file in ["README.md", "model.safetensors", "tokenizer.json"] {
        repo.files.insert(file.into(), b"x".to_vec());
    }
    let server = HubServer::start(HashMap::from([("Qwen/Qwen3-0.6B".to_owned(), repo)]));
    set_hub_env(&server.endpoint, hf_home.path(), false);
    let err = load(Options {
        hf_repo: Some("Qwen/Qwen3-0.6B".parse().unwrap()),
        ..Options::default()
    })
    .unwrap_err();
    assert!(matches!(err, Error::NoRouterInRepo { .. }), "{err:?}");
    let message = err.to_string();
    for needle in [
        "Qwen/Qwen3-0.6B",
        "README.md, model.safetensors, tokenizer.json",
        "router.safetensors",
        "checkpoints/",
    ] {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
    // Nothing was downloaded.
    assert_eq!(
        server.requests(),
        ["/api/models/Qwen/Qwen3-0.6B/revision/main"]
    );

    // A folder and a repository at once is a mistake, not a guess.
    let err = load(Options {
        checkpoints: Some(r2_fixtures::upstream_dir()),
        hf_repo: Some("a/b".parse().unwrap()),
        ..Options::default()
    })
    .unwrap_err();
    assert!(matches!(err, Error::ConflictingSources), "{err:?}");
}

#[test]
fn convert_writes_a_router_and_its_pool_that_load_like_the_source() {
    let _env = lock_env();
    let hf_home = tempfile::tempdir().unwrap();
    let server = HubServer::start(HashMap::from([(
        "authors/R2-Router".to_owned(),
        upstream_repo(),
    )]));
    set_hub_env(&server.endpoint, hf_home.path(), false);
    let rt = runtime();
    for source in [
        RouterSource::Dir(r2_fixtures::upstream_dir()),
        RouterSource::Hub("authors/R2-Router".parse().unwrap()),
    ] {
        let out = tempfile::tempdir().unwrap();
        let converted = rt
            .block_on(r2_router::source::convert(&source, out.path(), false))
            .unwrap();
        assert_eq!(converted.router_path, out.path().join("router.safetensors"));
        assert_eq!(converted.file.models.len(), 11);
        // The converted heads are those of the reference conversion; only the provenance
        // (`source` metadata: the folder converted) differs.
        let mut written = r2_checkpoints::RouterFile::read(&converted.router_path).unwrap();
        let mut reference = r2_checkpoints::RouterFile::read(
            &r2_fixtures::converted_router_dir().join("router.safetensors"),
        )
        .unwrap();
        assert!(written
            .source
            .as_ref()
            .is_some_and(|s| s.contains("converted")));
        written.source = None;
        reference.source = None;
        assert_eq!(written, reference, "{source}");
        let loaded = load(Options {
            checkpoints: Some(out.path().to_path_buf()),
            ..Options::default()
        })
        .unwrap();
        assert_eq!(loaded.pool.source, out.path().join("config.json"));
        assert_same_decisions(&loaded.router);

        // Converting a router file is refused.
        let err = rt
            .block_on(r2_router::source::convert(
                &RouterSource::Dir(out.path().to_path_buf()),
                out.path(),
                false,
            ))
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyConverted { .. }), "{err:?}");
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(list(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out.sort();
    out
}
