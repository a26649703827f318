//! The Hugging Face Hub for r2: the environment and cache `huggingface_hub` (Python) uses, and
//! whole-repository snapshots (what `snapshot_download` does), on top of `hf-hub`.
//!
//! Environment, read by [`HubSettings::from_env`]:
//!
//! - `HF_HUB_CACHE`, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else
//!   `~/.cache/huggingface/hub`: the cache folder (the layout `huggingface_hub` uses, so files
//!   downloaded by either are found by the other);
//! - `HF_ENDPOINT` (default `https://huggingface.co`): the Hub to download from;
//! - `HF_HUB_OFFLINE` (`1`, `true`, `yes` or `on`): never touch the network, use the cache only;
//! - `HF_TOKEN`: a token for private or gated repositories.
//!
//! [`snapshot`] lists a repository at a revision, downloads the files a caller wants that are not
//! cached yet, and returns the snapshot folder. When the Hub cannot be reached (or offline), a
//! snapshot already in the cache for that revision is used, so a second run needs no network.
//!
//! Architecture invariant: this crate knows the Hub and its cache, nothing of routing, models or
//! the command line. It never prints (hf-hub's own progress bars aside, when asked for); the
//! token never appears in an error or a log line.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), r2_hub::Error> {
//! let settings = r2_hub::HubSettings::from_env()?;
//! let repo: r2_hub::RepoRef = "JiaqiXue/R2-Router@main".parse()?;
//! let snapshot = r2_hub::snapshot(&repo, &settings, |file| file.ends_with(".joblib"), false).await?;
//! println!("{} files in {}", snapshot.files.len(), snapshot.dir.display());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use hf_hub::api::tokio::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

/// The Hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The result type of `r2-hub`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the Hub. Every variant names the repository and, where there is one,
/// the URL or cache folder, and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not a repository id (`owner/name`), or a bad revision.
    #[error("`{repo}` is not a Hugging Face repository ({reason}): expected owner/name or owner/name@revision, e.g. JiaqiXue/R2-Router")]
    InvalidRepo { repo: String, reason: &'static str },

    /// No cache folder could be determined.
    #[error("cannot find the Hugging Face cache folder (no HOME): set HF_HOME or HF_HUB_CACHE")]
    NoCacheDir,

    /// Offline (or the Hub unreachable) and the revision is not in the cache.
    #[error(
        "{repo}@{revision} is not in the Hugging Face cache at {} and {why}: run once with network \
         access (and without HF_HUB_OFFLINE), or download it with `huggingface-cli download {repo} \
         --revision {revision}` (HF_HOME chooses the cache)",
        cache.display()
    )]
    NotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
        why: String,
    },

    /// The Hub answered 404 for the repository or revision.
    #[error(
        "{url} answered HTTP 404: the Hub has no repository {repo} at revision {revision} (check \
         the id and revision; a private repository needs HF_TOKEN)"
    )]
    RepoNotFound {
        repo: String,
        revision: String,
        url: String,
    },

    /// The Hub refused access.
    #[error(
        "{url} answered HTTP {status}: {repo} needs authentication; set HF_TOKEN to a token that \
         can read it"
    )]
    Unauthorized {
        repo: String,
        url: String,
        status: u16,
    },

    /// Any other failed request (another status, a broken connection, a bad answer).
    #[error("{repo}: {url}: {reason}")]
    Request {
        repo: String,
        url: String,
        reason: String,
    },

    /// The repository changed on the Hub while its files were being downloaded.
    #[error("{repo} changed on the Hub while downloading {file} (commit {expected}, then {got}): run again")]
    Moved {
        repo: String,
        file: String,
        expected: String,
        got: String,
    },

    /// A file of the cache could not be read or written.
    #[error(transparent)]
    Io(#[from] r2_core::IoError),
}

/// A repository and a revision: `owner/name` or `owner/name@revision` (branch, tag or commit;
/// default `main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub id: String,
    pub revision: String,
}

impl std::str::FromStr for RepoRef {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let (id, revision) = match text.split_once('@') {
            Some((id, revision)) => (id, revision),
            None => (text, "main"),
        };
        let invalid = |reason| Error::InvalidRepo {
            repo: text.to_owned(),
            reason,
        };
        check_repo_id(id).map_err(invalid)?;
        if revision.is_empty()
            || revision.starts_with('/')
            || revision.split('/').any(|p| p.is_empty() || p == "..")
            || revision.chars().any(|c| c.is_whitespace() || c == '\\')
        {
            return Err(invalid(
                "the revision after `@` is not a branch, tag or commit",
            ));
        }
        Ok(Self {
            id: id.to_owned(),
            revision: revision.to_owned(),
        })
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.revision == "main" {
            f.write_str(&self.id)
        } else {
            write!(f, "{}@{}", self.id, self.revision)
        }
    }
}

/// Whether `id` is a Hub repository id (`name` or `owner/name`), and why not.
pub fn check_repo_id(id: &str) -> std::result::Result<(), &'static str> {
    if id.is_empty() {
        return Err("the id is empty");
    }
    if id.starts_with('/') || id.ends_with('/') || id.split('/').count() > 2 {
        return Err("an id has at most one `/`, between owner and name");
    }
    if id
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("an id part is empty, `.` or `..`");
    }
    if id.chars().any(|c| c.is_whitespace() || c == '\\') {
        return Err("an id has no spaces or backslashes");
    }
    Ok(())
}

/// Where and how to reach the Hub, as `huggingface_hub` reads it from the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// `HF_ENDPOINT` without a trailing `/`, else [`DEFAULT_ENDPOINT`].
    pub endpoint: String,
    /// The cache folder (see the crate docs).
    pub cache_dir: PathBuf,
    /// `HF_HUB_OFFLINE`.
    pub offline: bool,
    /// `HF_TOKEN`; never printed.
    pub token: Option<String>,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl HubSettings {
    /// The settings from the environment (read at each call).
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            endpoint: env("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
            cache_dir: cache_dir().ok_or(Error::NoCacheDir)?,
            offline: env("HF_HUB_OFFLINE").is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            }),
            token: env("HF_TOKEN"),
        })
    }

    /// An hf-hub client for these settings, caching in [`HubSettings::cache_dir`].
    pub fn api(&self, progress: bool) -> std::result::Result<Api, ApiError> {
        ApiBuilder::from_cache(Cache::new(self.cache_dir.clone()))
            .with_endpoint(self.endpoint.clone())
            .with_progress(progress)
            .with_token(self.token.clone())
            .build()
    }

    /// The cache folder of one repository (`models--owner--name`).
    pub fn repo_cache_dir(&self, id: &str) -> PathBuf {
        self.cache_dir
            .join(Repo::new(id.to_owned(), RepoType::Model).folder_name())
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// The cache folder, as `huggingface_hub` chooses it.
fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = env("HF_HUB_CACHE") {
        return Some(dir.into());
    }
    if let Some(home) = env("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    let cache = match env("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env("HOME").or_else(|| env("USERPROFILE"))?).join(".cache"),
    };
    Some(cache.join("huggingface").join("hub"))
}

/// The HTTP status of a failed hf-hub request, if the server answered.
pub fn status(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::RequestError(e) => e.status().map(|s| s.as_u16()),
        ApiError::TooManyRetries(inner) => status(inner),
        _ => None,
    }
}

/// An error and its sources, joined with ": " (reqwest keeps the cause in the source chain).
pub use r2_http::error_chain;

/// A repository's files at one commit, in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `<cache>/models--owner--name/snapshots/<commit>`: the files below keep their paths.
    pub dir: PathBuf,
    /// The commit the revision resolved to.
    pub commit: String,
    /// Every file of the repository at that commit (relative paths, sorted); only the wanted ones
    /// are in [`Snapshot::dir`]. From the cache alone, the files that are there.
    pub files: Vec<String>,
    /// Whether the Hub was asked (false: offline, or unreachable and served from the cache).
    pub online: bool,
}

/// The files of `repo` for which `wanted` holds, in the cache: listed on the Hub, downloaded when
/// not cached yet, and returned as one snapshot folder. Offline (`HF_HUB_OFFLINE`) or when the Hub
/// cannot be reached, the cached snapshot of the revision is used instead.
pub async fn snapshot(
    repo: &RepoRef,
    settings: &HubSettings,
    wanted: impl Fn(&str) -> bool,
    progress: bool,
) -> Result<Snapshot> {
    if settings.offline {
        return cached(repo, settings, "HF_HUB_OFFLINE is set".to_owned());
    }
    let hub_repo = Repo::with_revision(repo.id.clone(), RepoType::Model, repo.revision.clone());
    let api = settings.api(progress).map_err(|e| Error::Request {
        repo: repo.id.clone(),
        url: settings.endpoint.clone(),
        reason: format!("cannot set up the HTTP client: {}", error_chain(&e)),
    })?;
    let api_repo = api.repo(hub_repo.clone());
    let listing_url = format!("{}/api/{}", settings.endpoint, hub_repo.api_url());
    let info = match api_repo.info().await {
        Ok(info) => info,
        Err(e) => match status(&e) {
            Some(404) => {
                return Err(Error::RepoNotFound {
                    repo: repo.id.clone(),
                    revision: repo.revision.clone(),
                    url: listing_url,
                })
            }
            Some(status @ (401 | 403)) => {
                return Err(Error::Unauthorized {
                    repo: repo.id.clone(),
                    url: listing_url,
                    status,
                })
            }
            Some(status) => {
                return Err(Error::Request {
                    repo: repo.id.clone(),
                    url: listing_url,
                    reason: format!("HTTP {status}: {}", error_chain(&e)),
                })
            }
            None => {
                // No answer: what huggingface_hub does too, fall back to the cache.
                let why = format!(
                    "the Hub cannot be reached ({listing_url}: {}; HF_ENDPOINT is {})",
                    error_chain(&e),
                    settings.endpoint
                );
                tracing::warn!(repo = %repo, "{why}; trying the cache");
                return cached(repo, settings, why);
            }
        },
    };
    let repo_dir = settings.repo_cache_dir(&repo.id);
    let dir = repo_dir.join("snapshots").join(&info.sha);
    let mut files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    files.sort();
    for file in files.iter().filter(|f| wanted(f)) {
        if dir.join(file).is_file() {
            continue;
        }
        let path = api_repo
            .download(file)
            .await
            .map_err(|e| file_error(repo, &api_repo.url(file), &e))?;
        if path != dir.join(file) {
            return Err(Error::Moved {
                repo: repo.id.clone(),
                file: file.clone(),
                expected: info.sha.clone(),
                got: path
                    .strip_prefix(repo_dir.join("snapshots"))
                    .ok()
                    .and_then(|p| p.components().next())
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .unwrap_or_default(),
            });
        }
    }
    // The revision now points at this commit, so the cache finds it offline.
    write_ref(&repo_dir, &repo.revision, &info.sha)?;
    std::fs::create_dir_all(&dir)
        .map_err(|source| io(&dir, "cannot create the snapshot folder", source))?;
    Ok(Snapshot {
        dir,
        commit: info.sha,
        files,
        online: true,
    })
}

fn file_error(repo: &RepoRef, url: &str, e: &ApiError) -> Error {
    match status(e) {
        Some(status @ (401 | 403)) => Error::Unauthorized {
            repo: repo.id.clone(),
            url: url.to_owned(),
            status,
        },
        Some(status) => Error::Request {
            repo: repo.id.clone(),
            url: url.to_owned(),
            reason: format!("HTTP {status}: {}", error_chain(e)),
        },
        None => Error::Request {
            repo: repo.id.clone(),
            url: url.to_owned(),
            reason: format!("download failed: {}", error_chain(e)),
        },
    }
}

/// The cached snapshot of `repo`'s revision: the commit its ref names (or the revision itself,
/// when it is a commit that is cached).
fn cached(repo: &RepoRef, settings: &HubSettings, why: String) -> Result<Snapshot> {
    let repo_dir = settings.repo_cache_dir(&repo.id);
    let snapshots = repo_dir.join("snapshots");
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(&repo.revision))
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .or_else(|| {
            snapshots
                .join(&repo.revision)
                .is_dir()
                .then(|| repo.revision.clone())
        });
    let Some(commit) = commit.filter(|c| snapshots.join(c).is_dir()) else {
        return Err(Error::NotCached {
            repo: repo.id.clone(),
            revision: repo.revision.clone(),
            cache: settings.cache_dir.clone(),
            why,
        });
    };
    let dir = snapshots.join(&commit);
    let mut files = Vec::new();
    list_files(&dir, &dir, &mut files)?;
    files.sort();
    tracing::debug!(repo = %repo, commit, "using the cached snapshot");
    Ok(Snapshot {
        dir,
        commit,
        files,
        online: false,
    })
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|source| io(dir, "cannot list the snapshot", source))?;
    for entry in entries {
        let entry = entry.map_err(|source| io(dir, "cannot list the snapshot", source))?;
        let path = entry.path();
        // Snapshot entries are symlinks to blobs: follow them.
        if path.is_dir() {
            list_files(root, &path, out)?;
        } else if path.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<()> {
    let path = repo_dir.join("refs").join(revision);
    if std::fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|source| io(parent, "cannot create the refs folder", source))?;
    }
    std::fs::write(&path, commit).map_err(|source| io(&path, "cannot write the ref", source))
}

fn io(path: &Path, action: &'static str, source: std::io::Error) -> Error {
    Error::Io(r2_core::IoError::new(path, action, source))
}

impl r2_core::Classify for Error {
    fn class(&self) -> r2_core::ErrorClass {
        use r2_core::ErrorClass::{InvalidInput, NotFound, Unavailable, UpstreamFailure};
        match self {
            Error::InvalidRepo { .. } => InvalidInput,
            Error::NoCacheDir | Error::NotCached { .. } => Unavailable,
            Error::RepoNotFound { .. } => NotFound,
            Error::Unauthorized { .. } | Error::Request { .. } | Error::Moved { .. } => {
                UpstreamFailure
            }
            Error::Io(e) => e.class(),
        }
    }
}
