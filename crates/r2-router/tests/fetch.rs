//! `r2_router::fetch` against a mirror of upstream's `r2_router/` folder served on 127.0.0.1.
//!
//! The mirror serves the files of `shared/upstream-r2-router` (read only) under
//! `/mirror/r2_router/`, records every request path, and can be told to corrupt, drop, fail once
//! or blow up one file. Every test caches into its own temporary folder; none reads or writes the
//! environment or the user's cache.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use r2_checkpoints::{RouterFile, ROUTER_FILE};
use r2_router::fetch::{
    cached_router_dir, ensure_upstream_router, FetchError, FetchOptions, MAX_FILE_BYTES,
    ROUTER_SOURCE, UPSTREAM_CONFIG_FILE, UPSTREAM_FILES,
};
use sha2::{Digest, Sha256};

const PREFIX: &str = "/mirror/r2_router/";
const CORRUPTED: &str = "checkpoints/GLM-4.5-Air_ridge_alpha10.0/unlimited_token_predictor.joblib";
const MISSING: &str =
    "checkpoints/Llama-3.1-70B-Instruct_ridge_alpha10.0/limited_score_predictors.joblib";

/// What the mirror does differently for one file.
#[derive(Clone, Copy, Default)]
enum Tweak {
    #[default]
    None,
    /// Serve the file with one byte flipped.
    Corrupt(&'static str),
    /// Answer 404.
    Missing(&'static str),
    /// Answer 503 to the first request, then serve the file.
    FailOnce(&'static str),
    /// Stream more than `MAX_FILE_BYTES`, without a Content-Length.
    Huge(&'static str),
}

struct Mirror {
    root: PathBuf,
    tweak: Tweak,
    failed_once: AtomicBool,
    log: Mutex<Vec<String>>,
}

struct Server {
    /// `http://127.0.0.1:<port>/mirror/r2_router/`
    base: String,
    mirror: Arc<Mirror>,
}

impl Server {
    async fn start(tweak: Tweak) -> Self {
        let mirror = Arc::new(Mirror {
            root: r2_fixtures::upstream_dir(),
            tweak,
            failed_once: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(mirror.clone());
        let port = r2_fixtures::spawn_server(app).port();
        Self {
            base: format!("http://127.0.0.1:{port}{PREFIX}"),
            mirror,
        }
    }

    /// The request paths so far, relative to the mirror's folder, sorted.
    fn requests(&self) -> Vec<String> {
        let mut log = self.mirror.log.lock().unwrap().clone();
        log.sort();
        log
    }

    fn clear_requests(&self) {
        self.mirror.log.lock().unwrap().clear();
    }
}

async fn serve(State(mirror): State<Arc<Mirror>>, uri: Uri) -> Response {
    let path = uri.path();
    let Some(file) = path.strip_prefix(PREFIX) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    mirror.log.lock().unwrap().push(file.to_owned());
    if file.is_empty() || file.split('/').any(|part| part.is_empty() || part == "..") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match mirror.tweak {
        Tweak::Missing(f) if f == file => return StatusCode::NOT_FOUND.into_response(),
        Tweak::FailOnce(f) if f == file && !mirror.failed_once.swap(true, Ordering::SeqCst) => {
            return StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Tweak::Huge(f) if f == file => {
            let chunks = (0..=MAX_FILE_BYTES / (1 << 20))
                .map(|_| Ok::<_, std::io::Error>(vec![0u8; 1 << 20]));
            return Body::from_stream(futures_util::stream::iter(chunks)).into_response();
        }
        _ => {}
    }
    let Ok(mut bytes) = std::fs::read(mirror.root.join(file)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if matches!(mirror.tweak, Tweak::Corrupt(f) if f == file) {
        corrupt(&mut bytes);
    }
    bytes.into_response()
}

fn corrupt(bytes: &mut [u8]) {
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn options(base_url: &str, cache: &Path) -> FetchOptions {
    FetchOptions {
        base_url: base_url.to_owned(),
        timeout: Duration::from_secs(10),
        ..FetchOptions::new(cache)
    }
}

/// Every upstream file's request path, sorted.
fn all_files() -> Vec<String> {
    let mut files: Vec<String> = UPSTREAM_FILES.iter().map(|(f, _)| f.to_string()).collect();
    files.sort();
    files
}

/// The names in a folder, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Checks that a failed fetch left nothing behind: no cached router, no temporary folder.
fn assert_nothing_cached(options: &FetchOptions) {
    assert!(
        !cached_router_dir(options).exists(),
        "something was cached at {}",
        cached_router_dir(options).display()
    );
    assert_eq!(
        entries(&options.cache_dir),
        Vec::<String>::new(),
        "left behind in the cache folder"
    );
}

fn assert_loads(dir: &Path) {
    let router = r2_checkpoints::load_router(dir, &r2_fixtures::upstream_pool())
        .unwrap_or_else(|e| panic!("the fetched router does not load: {e}"));
    assert_eq!(router.head_count(), 187);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_cache_fetches_every_file_once_and_converts_like_convert_upstream() {
    let server = Server::start(Tweak::None).await;
    let cache = tempfile::tempdir().unwrap();
    let options = options(&server.base, cache.path());

    let dir = ensure_upstream_router(&options).await.unwrap();

    assert_eq!(dir, cache.path().join("b0b2291"));
    assert_eq!(dir, cached_router_dir(&options));
    assert_eq!(server.requests(), all_files());
    assert_eq!(entries(cache.path()), ["b0b2291"]);
    assert_eq!(entries(&dir), [ROUTER_FILE, UPSTREAM_CONFIG_FILE]);
    assert_eq!(
        std::fs::read(dir.join(UPSTREAM_CONFIG_FILE)).unwrap(),
        std::fs::read(r2_fixtures::upstream_dir().join("config.json")).unwrap()
    );
    assert_loads(&dir);

    // Converted locally, the router differs only in the `source` metadata (which names the folder
    // converted from); with the fetched file's source the bytes are identical.
    let local = tempfile::tempdir().unwrap();
    r2_checkpoints::convert_upstream(&r2_fixtures::upstream_dir(), local.path()).unwrap();
    let fetched_bytes = std::fs::read(dir.join(ROUTER_FILE)).unwrap();
    let fetched = RouterFile::read(&dir.join(ROUTER_FILE)).unwrap();
    assert_eq!(fetched.source.as_deref(), Some(ROUTER_SOURCE));
    let mut converted = RouterFile::read(&local.path().join(ROUTER_FILE)).unwrap();
    converted.source = fetched.source.clone();
    assert_eq!(converted, fetched);
    assert!(converted.to_bytes().unwrap() == fetched_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_call_is_served_from_the_cache_without_requests() {
    let server = Server::start(Tweak::None).await;
    let cache = tempfile::tempdir().unwrap();
    let options = options(&server.base, cache.path());
    let first = ensure_upstream_router(&options).await.unwrap();
    server.clear_requests();

    let second = ensure_upstream_router(&options).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(server.requests(), Vec::<String>::new());

    // Cached means no network at all: neither offline mode nor a dead URL matters.
    let offline = FetchOptions {
        base_url: "http://127.0.0.1:9/nowhere/".to_owned(),
        offline: true,
        ..options.clone()
    };
    assert_eq!(ensure_upstream_router(&offline).await.unwrap(), first);
    assert_loads(&first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_file_is_rejected_naming_the_file_and_both_hashes() {
    let server = Server::start(Tweak::Corrupt(CORRUPTED)).await;
    let cache = tempfile::tempdir().unwrap();
    let options = options(&server.base, cache.path());

    let err = ensure_upstream_router(&options).await.unwrap_err();

    let expected = UPSTREAM_FILES
        .iter()
        .find(|(f, _)| *f == CORRUPTED)
        .unwrap()
        .1;
    let mut bytes = std::fs::read(r2_fixtures::upstream_dir().join(CORRUPTED)).unwrap();
    corrupt(&mut bytes);
    let actual = sha256_hex(&bytes);
    assert!(
        matches!(&err, FetchError::HashMismatch { file, expected: e, actual: a, .. }
            if file == CORRUPTED && e == expected && *a == actual),
        "{err:?}"
    );
    let message = err.to_string();
    for part in [CORRUPTED, expected, &actual, "nothing was cached"] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    assert_nothing_cached(&options);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_file_is_an_error_naming_the_url_and_caches_nothing() {
    let server = Server::start(Tweak::Missing(MISSING)).await;
    let cache = tempfile::tempdir().unwrap();
    let options = options(&server.base, cache.path());

    let err = ensure_upstream_router(&options).await.unwrap_err();

    let url = format!("{}{MISSING}", server.base);
    assert!(
        matches!(&err, FetchError::NotFound { url: u } if *u == url),
        "{err:?}"
    );
    let message = err.to_string();
    for part in [
        url.as_str(),
        "404",
        "may have moved",
        "R2_CHECKPOINTS_URL",
        "r2 convert --from",
    ] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    assert_nothing_cached(&options);
}

#[test]
fn pinned_table_equals_the_shared_sha256sums() {
    let path = r2_fixtures::upstream_dir().join("SHA256SUMS");
    let text = std::fs::read_to_string(&path).unwrap();
    let sums: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (hash, file) = line.split_once(' ').unwrap();
            let file = file.trim_start().trim_start_matches('*');
            (file.to_owned(), hash.to_owned())
        })
        .collect();
    let pinned: Vec<(String, String)> = UPSTREAM_FILES
        .iter()
        .map(|(f, h)| (f.to_string(), h.to_string()))
        .collect();
    assert_eq!(pinned, sums);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_url_without_a_trailing_slash_works() {
    let server = Server::start(Tweak::None).await;
    let cache = tempfile::tempdir().unwrap();
    let base = server.base.trim_end_matches('/');
    assert!(!base.ends_with('/'));
    let options = options(base, cache.path());

    let dir = ensure_upstream_router(&options).await.unwrap();

    assert_eq!(server.requests(), all_files());
    assert_loads(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_temp_folders_of_a_crashed_run_do_not_break_a_fetch() {
    let server = Server::start(Tweak::None).await;
    let cache = tempfile::tempdir().unwrap();
    let options = options(&server.base, cache.path());
    // Half-written folders under the names this process would pick first (a crashed run with the
    // same pid), which a new fetch must neither reuse nor read.
    let pid = std::process::id();
    let recent: Vec<PathBuf> = (0..64)
        .map(|n| cache.path().join(format!(".r2-fetch-b0b2291-{pid}-{n}")))
        .collect();
    for dir in &recent {
        std::fs::create_dir_all(dir.join("upstream")).unwrap();
        std::fs::write(dir.join(ROUTER_FILE), b"half a router").unwrap();
        std::fs::write(dir.join("upstream").join("config.json"), b"{").unwrap();
    }
    // And one from a run that crashed two days ago.
    let old = cache.path().join(".r2-fetch-b0b2291-4000000-0");
    std::fs::create_dir_all(old.join("upstream")).unwrap();
    std::fs::write(old.join(ROUTER_FILE), b"half a router").unwrap();
    std::fs::File::open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 24 * 3600))
        .unwrap();

    let dir = ensure_upstream_router(&options).await.unwrap();

    assert_eq!(dir, cached_router_dir(&options));
    assert_loads(&dir);
    assert!(!old.exists(), "the stale temporary folder was not removed");
    // Recent ones may belong to a fetch still running in another process: left alone.
    assert!(recent
        .iter()
        .all(|d| std::fs::read(d.join(ROUTER_FILE)).unwrap() == b"half a router"));
    assert_eq!(entries(cache.path()).len(), recent.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_without_a_cache_is_an_error_saying_how_to_get_the_router() {
    let server = Server::start(Tweak::None).await;
    let cache = tempfile::tempdir().unwrap();
    let options = FetchOptions {
        offline: true,
        ..options(&server.base, cache.path())
    };

    let err = ensure_upstream_router(&options).await.unwrap_err();

    assert!(matches!(err, FetchError::Offline { .. }), "{err:?}");
    let message = err.to_string();
    for part in ["R2_OFFLINE", "network access", "r2 convert --from"] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    assert_eq!(server.requests(), Vec::<String>::new());
    assert_nothing_cached(&options);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_retried() {
    let server = Server::start(Tweak::FailOnce(CORRUPTED)).await;
    let cache = tempfile::tempdir().unwrap();
    let options = options(&server.base, cache.path());

    let dir = ensure_upstream_router(&options).await.unwrap();

    assert_loads(&dir);
    let mut expected = all_files();
    expected.push(CORRUPTED.to_owned());
    expected.sort();
    assert_eq!(server.requests(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_file_is_rejected_while_it_streams_in() {
    let server = Server::start(Tweak::Huge(MISSING)).await;
    let cache = tempfile::tempdir().unwrap();
    let options = options(&server.base, cache.path());

    let err = ensure_upstream_router(&options).await.unwrap_err();

    assert!(
        matches!(&err, FetchError::TooLarge { url, .. } if url.ends_with(MISSING)),
        "{err:?}"
    );
    assert_nothing_cached(&options);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_cached_router_is_replaced() {
    let server = Server::start(Tweak::None).await;
    let cache = tempfile::tempdir().unwrap();
    let options = options(&server.base, cache.path());
    let target = cached_router_dir(&options);
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join(ROUTER_FILE), b"not a router").unwrap();

    let dir = ensure_upstream_router(&options).await.unwrap();

    assert_eq!(dir, target);
    assert_loads(&dir);
    assert_eq!(entries(cache.path()), ["b0b2291"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fetches_racing_for_one_cache_both_succeed() {
    let server = Server::start(Tweak::None).await;
    let cache = tempfile::tempdir().unwrap();
    let options = options(&server.base, cache.path());

    let (a, b) = tokio::join!(
        ensure_upstream_router(&options),
        ensure_upstream_router(&options)
    );

    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_loads(&a);
    assert_eq!(server.requests().len(), 2 * UPSTREAM_FILES.len());
    assert_eq!(entries(cache.path()), ["b0b2291"]);
}
