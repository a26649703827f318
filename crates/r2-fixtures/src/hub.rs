//! A Hugging Face Hub stand-in on 127.0.0.1, speaking the part of the Hub protocol hf-hub 0.4 uses.
//!
//! - `GET {endpoint}/api/models/{repo}/revision/{revision}`: the repository listing
//!   (`{"sha", "siblings": [{"rfilename"}]}`), what `ApiRepo::info` reads.
//! - `GET {endpoint}/{repo}/resolve/{revision}/{file}` with `Range: bytes=0-0` for the metadata
//!   (answered with `x-repo-commit`, `etag` and `content-range: bytes 0-0/{size}`), then ranged
//!   `GET`s for the content. Like the real Hub for large (LFS) files, a file marked `redirected`
//!   is answered with a 302 to another host (`localhost` instead of `127.0.0.1`) carrying
//!   `x-linked-etag`; hf-hub then reads the size from the redirect target.
//!
//! Revisions are `main`, the repository's commit, and any name added to [`HubRepo::revisions`].
//! Every requested path is logged, so tests can check what went over the network.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;

/// The commit every [`HubRepo`] has unless told otherwise.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One repository of the stand-in Hub.
#[derive(Debug, Clone)]
pub struct HubRepo {
    /// Relative path → content.
    pub files: HashMap<String, Vec<u8>>,
    /// Files answered with a redirect to `/cdn/{etag}` on another host, like LFS files.
    pub redirected: HashSet<String>,
    /// The commit the repository is at (`x-repo-commit`, the listing's `sha`).
    pub commit: String,
    /// Revision names besides `main` and the commit itself that resolve to it (tags, branches).
    pub revisions: HashSet<String>,
}

impl Default for HubRepo {
    fn default() -> Self {
        Self {
            files: HashMap::new(),
            redirected: HashSet::new(),
            commit: COMMIT.to_owned(),
            revisions: HashSet::new(),
        }
    }
}

impl HubRepo {
    /// A repository holding every file below `root`, with their paths relative to it.
    pub fn from_dir(root: &std::path::Path) -> Self {
        let mut repo = Self::default();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("a readable directory entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let relative = path
                        .strip_prefix(root)
                        .expect("below the root")
                        .to_string_lossy()
                        .replace('\\', "/");
                    let bytes = std::fs::read(&path)
                        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                    repo.files.insert(relative, bytes);
                }
            }
        }
        repo
    }

    fn resolves(&self, revision: &str) -> bool {
        revision == "main" || revision == self.commit || self.revisions.contains(revision)
    }
}

struct Hub {
    port: u16,
    repos: HashMap<String, HubRepo>,
    blobs: HashMap<String, Vec<u8>>,
    log: Arc<Mutex<Vec<String>>>,
}

/// A running stand-in Hub (it lives for the rest of the test process).
#[derive(Clone)]
pub struct HubServer {
    /// `http://127.0.0.1:{port}`, the value for `HF_ENDPOINT`.
    pub endpoint: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl HubServer {
    /// Starts a Hub serving `repos` (repository id → repository).
    pub fn start(repos: HashMap<String, HubRepo>) -> Self {
        let blobs = repos
            .values()
            .flat_map(|r| r.files.values())
            .map(|bytes| (etag(bytes), bytes.clone()))
            .collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        // Redirects name the port, which is known once the server is bound: the handler finds
        // the hub in a cell filled right after (before any request can be sent).
        let cell: Arc<OnceLock<Arc<Hub>>> = Arc::new(OnceLock::new());
        let handler_cell = cell.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let hub = handler_cell.get().expect("the hub is set up").clone();
            async move { serve(hub, uri, headers).await }
        });
        let addr = crate::spawn_server(app);
        let hub = Hub {
            port: addr.port(),
            repos,
            blobs,
            log: log.clone(),
        };
        if cell.set(Arc::new(hub)).is_err() {
            unreachable!("the cell is set once");
        }
        Self {
            endpoint: format!("http://127.0.0.1:{}", addr.port()),
            log,
        }
    }

    /// Every path requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Forgets the requests logged so far.
    pub fn clear_requests(&self) {
        self.log.lock().unwrap().clear();
    }
}

/// Points this process's Hugging Face variables at `endpoint` and the cache under `hf_home`,
/// offline or not, and clears `HF_HUB_CACHE`, `HF_TOKEN` and r2's own `R2_CHECKPOINTS` and
/// `R2_CONFIG`. The environment is process-wide: callers hold a lock across the code that reads it.
pub fn set_hub_env(endpoint: &str, hf_home: &std::path::Path, offline: bool) {
    std::env::set_var("HF_ENDPOINT", endpoint);
    std::env::set_var("HF_HOME", hf_home);
    for key in ["HF_HUB_CACHE", "HF_TOKEN", "R2_CHECKPOINTS", "R2_CONFIG"] {
        std::env::remove_var(key);
    }
    if offline {
        std::env::set_var("HF_HUB_OFFLINE", "1");
    } else {
        std::env::remove_var("HF_HUB_OFFLINE");
    }
}

/// An `http://` endpoint on 127.0.0.1 where nothing listens (a server that is down).
pub fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("a bound address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// FNV-1a, as a stand-in for the Hub's sha256 etags.
pub fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

async fn serve(hub: Arc<Hub>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    hub.log.lock().unwrap().push(path.clone());
    if let Some(tag) = path.strip_prefix("/cdn/") {
        return match hub.blobs.get(tag) {
            Some(bytes) => ranged(bytes, &headers, Response::builder()),
            None => not_found("Entry not found"),
        };
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        return listing(&hub, rest);
    }
    let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return not_found("Repository not found");
    };
    let Some((revision, file)) = rest.split_once('/') else {
        return not_found("Entry not found");
    };
    let revision = revision.replace("%2F", "/");
    let Some(repo) = hub.repos.get(repo).filter(|r| r.resolves(&revision)) else {
        return not_found("Repository not found");
    };
    let Some(bytes) = repo.files.get(file) else {
        return not_found("Entry not found");
    };
    let tag = etag(bytes);
    let builder = Response::builder().header("x-repo-commit", repo.commit.as_str());
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
            .expect("a valid response");
    }
    ranged(
        bytes,
        &headers,
        builder.header(header::ETAG, format!("\"{tag}\"")),
    )
}

/// `GET /api/models/{owner}/{name}/revision/{revision}`.
fn listing(hub: &Hub, rest: &str) -> Response {
    let Some((repo, revision)) = rest.split_once("/revision/") else {
        return not_found("Repository not found");
    };
    let revision = revision.replace("%2F", "/");
    let Some(repo) = hub.repos.get(repo).filter(|r| r.resolves(&revision)) else {
        return not_found("Repository not found");
    };
    let mut names: Vec<&String> = repo.files.keys().collect();
    names.sort();
    let siblings: Vec<serde_json::Value> = names
        .into_iter()
        .map(|name| serde_json::json!({ "rfilename": name }))
        .collect();
    let body = serde_json::json!({ "sha": repo.commit, "siblings": siblings });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
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
                .expect("a valid response")
        }
        _ => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, len)
            .body(Body::from(bytes.to_vec()))
            .expect("a valid response"),
    }
}

fn not_found(message: &'static str) -> Response {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(
            "x-error-code",
            if message.starts_with("Repository") {
                "RepoNotFound"
            } else {
                "EntryNotFound"
            },
        )
        .body(Body::from(message))
        .expect("a valid response")
}
