//! First-run fetch of the released R2-Router checkpoints.
//!
//! r2 routes with upstream's weights, which are not in this repository. When no converted router
//! is at hand, [`ensure_upstream_router`] gets one:
//!
//! 1. If `<cache>/<short commit>/router.safetensors` ([`cached_router_dir`]) exists and is a
//!    whole router file (see below), it is used without any network access.
//! 2. Otherwise, unless offline (`R2_OFFLINE=1`), upstream's `config.json` and the 33 joblib files
//!    of the release pinned by [`UPSTREAM_COMMIT`] are downloaded from [`FetchOptions::base_url`]
//!    (default [`DEFAULT_BASE_URL`], overridden by `R2_CHECKPOINTS_URL`) into a fresh temporary
//!    folder next to the final one (same file system). Every file must match the sha256 pinned in
//!    [`UPSTREAM_FILES`]; a file larger than [`MAX_FILE_BYTES`] is rejected while it streams in.
//! 3. The files are converted with [`r2_checkpoints::read_upstream`] into
//!    `router.safetensors` (weights bit for bit; the `source` metadata is [`ROUTER_SOURCE`], so the
//!    file does not depend on where it was downloaded from), and upstream's `config.json` is kept
//!    beside it as `upstream-config.json`.
//! 4. The temporary folder is renamed to the final path in one step. Whatever fails before, the
//!    temporary folder is removed and nothing appears at the final path. If another process
//!    renamed its copy into place first, that copy is used. Temporary folders left by a crashed run
//!    have unique names (`.r2-fetch-<commit>-<pid>-<random>`), are never read, and are removed
//!    once they are an hour old.
//!
//! A cached router counts as there when its file is whole: its safetensors header reads, names
//! r2's router format and accounts for every byte of the file. Its weights are read and checked
//! by whoever loads it, so a start does not parse the file twice.
//!
//! HTTP requests have a timeout per file and are retried, with jittered backoff, after connection
//! errors and 5xx answers; every error says which URL or file failed and what to do about it.
//! Nothing is printed: progress goes to `tracing` (see [`FetchOptions::progress`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use r2_checkpoints::{RouterFile, FORMAT, FORMAT_VERSION, ROUTER_FILE};
use r2_http::{RateLimits, RetryPolicy};
use serde_json::Value;
use sha2::{Digest, Sha256};

macro_rules! upstream_commit {
    () => {
        "b0b2291aeee08feb4bedbd199ab014ec60d0004f"
    };
}

/// The upstream commit whose `r2_router/` folder is fetched (UCF-ML-Research/R2-Router).
pub const UPSTREAM_COMMIT: &str = upstream_commit!();

/// The upstream repository on GitHub.
pub const UPSTREAM_REPOSITORY: &str = "UCF-ML-Research/R2-Router";

/// Upstream's `r2_router/` folder at [`UPSTREAM_COMMIT`]; files are fetched from
/// `{base}config.json` and `{base}checkpoints/<model>_ridge_alpha10.0/<file>.joblib`.
pub const DEFAULT_BASE_URL: &str = concat!(
    "https://raw.githubusercontent.com/UCF-ML-Research/R2-Router/",
    upstream_commit!(),
    "/r2_router/"
);

/// Environment variable overriding [`DEFAULT_BASE_URL`] (a mirror of upstream's `r2_router/`).
pub const BASE_URL_ENV: &str = "R2_CHECKPOINTS_URL";

/// Environment variable that, set to `1` (or `true`, `yes`, `on`), forbids downloading.
pub const OFFLINE_ENV: &str = "R2_OFFLINE";

/// The name under which upstream's `config.json` is kept beside the cached router.
pub const UPSTREAM_CONFIG_FILE: &str = "upstream-config.json";

/// The `source` metadata of a router made by [`ensure_upstream_router`].
pub const ROUTER_SOURCE: &str = concat!(
    "upstream R2-Router release UCF-ML-Research/R2-Router@",
    upstream_commit!(),
    " (r2_router/config.json and checkpoints/, sha256-verified), converted by r2"
);

/// The largest file accepted from the server; no upstream file is larger than 70 KB.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// The default time allowed for each file, from connecting to the last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The default number of retries of a file after a connection error or an HTTP 5xx answer.
pub const DEFAULT_RETRIES: u32 = 2;

/// Every file of the pinned release, relative to upstream's `r2_router/` folder, with its sha256.
///
/// This table is the pin: a download is accepted only if every file matches it.
pub use r2_checkpoints::release::FILES as UPSTREAM_FILES;

const TEMP_PREFIX: &str = ".r2-fetch-";
/// A temporary folder this old belongs to a crashed run (a live fetch takes seconds to minutes).
const STALE_AFTER: Duration = Duration::from_secs(3600);
const CONCURRENT_DOWNLOADS: usize = 8;
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// The largest safetensors header read to check a cached router (safetensors' own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;
const CONVERT_BY_HAND: &str = "a copy of upstream's r2_router/ folder (config.json and \
                               checkpoints/), which r2 reads as it is, or `r2 convert --from \
                               <that folder> --out DIR`";

/// What can go wrong while fetching the released checkpoints. Each error says what failed, where
/// (URL, file or folder) and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No user cache folder could be determined (no `HOME`).
    #[error(
        "cannot find the user's cache folder for the R2-Router checkpoints (is HOME set?): set \
         HOME or XDG_CACHE_HOME, or use {CONVERT_BY_HAND}"
    )]
    NoCacheDir,

    /// `R2_OFFLINE` is set and nothing is cached.
    #[error(
        "{OFFLINE_ENV} is set and no converted R2-Router checkpoints are cached in {}: run r2 \
         once with network access and without {OFFLINE_ENV} to download them, or use \
         {CONVERT_BY_HAND}",
        dir.display()
    )]
    Offline { dir: PathBuf },

    /// The base URL is not an http(s) URL that file paths can be appended to.
    #[error(
        "`{url}` is not a usable base URL for the R2-Router checkpoints ({reason}): set \
         {BASE_URL_ENV} to the http(s) URL of a copy of upstream's r2_router/ folder, e.g. \
         {DEFAULT_BASE_URL}"
    )]
    InvalidBaseUrl { url: String, reason: String },

    /// The server answered 404 for a file of the release.
    #[error(
        "{url} answered HTTP 404 (not found): the R2-Router release may have moved; set \
         {BASE_URL_ENV} to a copy of upstream's r2_router/ folder at commit {UPSTREAM_COMMIT}, \
         or use {CONVERT_BY_HAND}"
    )]
    NotFound { url: String },

    /// The server answered another error status (5xx ones after every retry).
    #[error(
        "{url} answered HTTP {status} (attempt {attempts}): try again later, or set \
         {BASE_URL_ENV} to another copy of upstream's r2_router/ folder, or use \
         {CONVERT_BY_HAND}"
    )]
    Status {
        url: String,
        status: u16,
        attempts: u32,
    },

    /// The server could not be reached or the connection broke (after every retry).
    #[error(
        "cannot download {url} ({reason}; attempt {attempts}): check the network and \
         {BASE_URL_ENV}, or use {CONVERT_BY_HAND}"
    )]
    Unreachable {
        url: String,
        reason: String,
        attempts: u32,
    },

    /// A file took longer than the timeout.
    #[error(
        "downloading {url} took longer than {}s: check the network, or set {BASE_URL_ENV} to a \
         closer copy of upstream's r2_router/ folder",
        timeout.as_secs_f64()
    )]
    Timeout { url: String, timeout: Duration },

    /// A file is larger than [`MAX_FILE_BYTES`].
    #[error(
        "{url} is larger than {limit} bytes, which no R2-Router checkpoint file is: check that \
         {BASE_URL_ENV} points at upstream's r2_router/ folder"
    )]
    TooLarge { url: String, limit: u64 },

    /// A file does not match its pinned sha256; nothing was cached.
    #[error(
        "{file} (from {url}) has sha256 {actual}, expected {expected}: the download is damaged \
         or the server holds other files than release {UPSTREAM_COMMIT}; nothing was cached. Run \
         again, point {BASE_URL_ENV} at a faithful copy, or use {CONVERT_BY_HAND}"
    )]
    HashMismatch {
        file: String,
        url: String,
        expected: String,
        actual: String,
    },

    /// The verified files could not be converted (a bug, or a disk problem).
    #[error(
        "converting the downloaded R2-Router checkpoints failed: {source}; nothing was cached \
         (use {CONVERT_BY_HAND})"
    )]
    Convert {
        #[source]
        source: r2_checkpoints::Error,
    },

    /// A file or folder of the cache could not be created, written or moved.
    #[error(transparent)]
    Io(#[from] r2_core::IoError),
}

impl FetchError {
    fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        FetchError::Io(r2_core::IoError::new(path, action, source))
    }
}

/// Where to fetch from, where to cache, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// A copy of upstream's `r2_router/` folder at [`UPSTREAM_COMMIT`]; a missing trailing `/` is
    /// tolerated. Default: `$R2_CHECKPOINTS_URL`, else [`DEFAULT_BASE_URL`].
    pub base_url: String,
    /// The folder holding one sub-folder per pinned release (see [`cached_router_dir`]). Default:
    /// `<user cache>/r2/checkpoints`, e.g. `~/.cache/r2/checkpoints` on Linux.
    pub cache_dir: PathBuf,
    /// Log that the download starts, and where the router was cached, at `info` (else at
    /// `debug`); each downloaded file is logged at `debug`. Callers pass
    /// `std::io::stderr().is_terminal()`. Default: off.
    pub progress: bool,
    /// Time allowed for each file (default [`DEFAULT_TIMEOUT`]). Timeouts are not retried.
    pub timeout: Duration,
    /// Retries of a file after a connection error or an HTTP 5xx answer (default
    /// [`DEFAULT_RETRIES`]).
    pub retries: u32,
    /// Never download; only a cached router is used. Default: whether `$R2_OFFLINE` is set.
    pub offline: bool,
}

impl FetchOptions {
    /// Options caching in `cache_dir` and fetching from [`DEFAULT_BASE_URL`], ignoring the
    /// environment: no progress, the default timeout and retries, online.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            cache_dir: cache_dir.into(),
            progress: false,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            offline: false,
        }
    }

    /// The default options: `$R2_CHECKPOINTS_URL` (else [`DEFAULT_BASE_URL`]),
    /// `<user cache>/r2/checkpoints`, and `$R2_OFFLINE`. Fails if there is no user cache folder.
    pub fn from_env() -> Result<Self, FetchError> {
        Self::from_vars(|key| std::env::var(key).ok(), dirs::cache_dir())
    }

    fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        user_cache: Option<PathBuf>,
    ) -> Result<Self, FetchError> {
        let cache = user_cache.ok_or(FetchError::NoCacheDir)?;
        let mut options = Self::new(cache.join("r2").join("checkpoints"));
        if let Some(url) = var(BASE_URL_ENV).filter(|u| !u.trim().is_empty()) {
            options.base_url = url.trim().to_owned();
        }
        options.offline = var(OFFLINE_ENV).is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Ok(options)
    }
}

/// Where the pinned release is (or would be) cached: `<cache_dir>/<short commit>`, e.g.
/// `~/.cache/r2/checkpoints/b0b2291`. It holds `router.safetensors` and `upstream-config.json`.
pub fn cached_router_dir(options: &FetchOptions) -> PathBuf {
    options.cache_dir.join(short_commit())
}

/// The folder holding `router.safetensors` for the pinned release: the cached one, or freshly
/// fetched, verified, converted and cached.
///
/// A cached router whose file is whole is returned without any network access (its weights are
/// checked by whoever loads it). See the [module documentation](self) for the steps and
/// guarantees.
pub async fn ensure_upstream_router(options: &FetchOptions) -> Result<PathBuf, FetchError> {
    let target = cached_router_dir(options);
    if is_installed(&target) {
        return Ok(target);
    }
    if options.offline {
        return Err(FetchError::Offline { dir: target });
    }
    let base = base_url(&options.base_url)?;
    std::fs::create_dir_all(&options.cache_dir).map_err(|e| {
        FetchError::io(
            &options.cache_dir,
            "cannot create the cache folder for the R2-Router checkpoints",
            e,
        )
    })?;
    remove_stale_temps(&options.cache_dir);

    let temp = temp_dir(&options.cache_dir)?;
    progress(
        options,
        format_args!(
            "fetching the R2-Router checkpoints ({UPSTREAM_REPOSITORY}@{}, {} files)",
            short_commit(),
            UPSTREAM_FILES.len()
        ),
    );
    download_all(&base, &temp.path().join("upstream"), options).await?;
    convert(temp.path())?;
    install(temp, &target)?;
    progress(
        options,
        format_args!(
            "cached the R2-Router checkpoints ({UPSTREAM_REPOSITORY}@{}) in {}",
            short_commit(),
            target.display()
        ),
    );
    Ok(target)
}

/// A progress event: at `info` with [`FetchOptions::progress`], else at `debug`.
fn progress(options: &FetchOptions, message: std::fmt::Arguments<'_>) {
    if options.progress {
        tracing::info!("{message}");
    } else {
        tracing::debug!("{message}");
    }
}

fn short_commit() -> &'static str {
    &UPSTREAM_COMMIT[..7]
}

/// Whether `dir` holds a whole router file (see the [module documentation](self)); an unreadable
/// or broken one is not.
fn is_installed(dir: &Path) -> bool {
    router_file_is_whole(&dir.join(ROUTER_FILE)).unwrap_or(false)
}

/// Whether the safetensors header of `path` reads, names r2's router format (and its version),
/// and the file ends where its last tensor does. The weights themselves are not read.
fn router_file_is_whole(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut length = [0u8; 8];
    file.read_exact(&mut length)?;
    let header_len = u64::from_le_bytes(length);
    let data_len = size.saturating_sub(8);
    if header_len > MAX_HEADER_BYTES || header_len > data_len {
        return Ok(false);
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)?;
    let Ok(header) = serde_json::from_slice::<serde_json::Map<String, Value>>(&header) else {
        return Ok(false);
    };
    let metadata = |key: &str| header.get("__metadata__")?.get(key)?.as_str();
    if metadata("format") != Some(FORMAT) || metadata("format_version") != Some(FORMAT_VERSION) {
        return Ok(false);
    }
    let data_end = header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .try_fold(0u64, |end, (_, tensor)| {
            Some(end.max(tensor.pointer("/data_offsets/1")?.as_u64()?))
        });
    Ok(data_end == Some(data_len - header_len))
}

/// Checks a base URL and returns it with exactly one trailing `/`.
fn base_url(raw: &str) -> Result<String, FetchError> {
    let folder = r2_http::Endpoint {
        known_suffixes: &[],
        path: "/",
        reject_credentials: false,
    };
    r2_http::endpoint_url(raw, &folder).map_err(|problem| {
        use r2_http::UrlProblem as P;
        let reason = match problem {
            P::Unparsable(e) => e,
            // Not checked for: kept as they are.
            P::Credentials { .. } => "it holds credentials".to_owned(),
            P::NotHttp => "only http and https URLs are supported".to_owned(),
            P::NoHost => "it has no host".to_owned(),
            P::QueryOrFragment => "file paths cannot follow a query or fragment".to_owned(),
        };
        FetchError::InvalidBaseUrl {
            url: raw.to_owned(),
            reason,
        }
    })
}

/// Downloads and verifies every file of [`UPSTREAM_FILES`] into `dir`, keeping their relative
/// paths.
async fn download_all(base: &str, dir: &Path, options: &FetchOptions) -> Result<(), FetchError> {
    let client =
        r2_http::client(Some(options.timeout), None).map_err(|e| FetchError::Unreachable {
            url: base.to_owned(),
            reason: format!(
                "cannot set up the HTTP client: {}",
                r2_http::error_chain(&e)
            ),
            attempts: 0,
        })?;
    let mut downloads = stream::iter(UPSTREAM_FILES)
        .map(|(file, sha256)| fetch_file(&client, base, file, sha256, dir, options))
        .buffer_unordered(CONCURRENT_DOWNLOADS);
    let (mut files, mut bytes) = (0, 0);
    while let Some(fetched) = downloads.next().await {
        let (file, size) = fetched?;
        files += 1;
        bytes += size;
        tracing::debug!(
            "fetched {file} ({files}/{} files, {:.1} MB)",
            UPSTREAM_FILES.len(),
            bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// Downloads one file, checks its sha256 and writes it to `dir/file`; returns its name and size.
async fn fetch_file<'f>(
    client: &reqwest::Client,
    base: &str,
    file: &'f str,
    expected: &str,
    dir: &Path,
    options: &FetchOptions,
) -> Result<(&'f str, u64), FetchError> {
    let url = format!("{base}{file}");
    let bytes = download(client, &url, options).await?;
    let actual: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != expected {
        return Err(FetchError::HashMismatch {
            file: file.to_owned(),
            url,
            expected: expected.to_owned(),
            actual,
        });
    }
    let path = dir.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| FetchError::io(parent, "cannot create a temporary folder", e))?;
    }
    std::fs::write(&path, &bytes)
        .map_err(|e| FetchError::io(&path, "cannot write a downloaded file", e))?;
    Ok((file, bytes.len() as u64))
}

/// How one attempt at a download failed.
type Failure = r2_http::Failure<FetchError>;

/// The retry policy of the fetch: connection errors and 5xx answers (a file server does not
/// rate-limit: a 429 is final like any 4xx), backoff from 250 ms.
fn retry_policy(options: &FetchOptions) -> RetryPolicy {
    RetryPolicy {
        max_retries: options.retries,
        initial_backoff: INITIAL_BACKOFF,
        max_backoff: RetryPolicy::DEFAULT_MAX_BACKOFF,
        rate_limits: RateLimits::Ignore,
    }
}

/// GETs `url`, retrying connection errors and 5xx answers with exponential backoff. The error
/// names the attempt it came from.
async fn download(
    client: &reqwest::Client,
    url: &str,
    options: &FetchOptions,
) -> Result<Vec<u8>, FetchError> {
    let timeout = options.timeout;
    let policy = retry_policy(options);
    let mut target = (client, url);
    policy
        .run(&mut target, move |(client, url), attempt| {
            Box::pin(get_once(client, url, policy, timeout, attempt))
        })
        .await
        .map_err(|stopped| stopped.error)
}

/// One attempt of [`download`], number `attempt`.
async fn get_once(
    client: &reqwest::Client,
    url: &str,
    policy: RetryPolicy,
    timeout: Duration,
    attempt: u32,
) -> Result<Vec<u8>, Failure> {
    let transport = |e: &reqwest::Error| {
        Failure::of_transport(
            e,
            || FetchError::Timeout {
                url: url.to_owned(),
                timeout,
            },
            || FetchError::Unreachable {
                url: url.to_owned(),
                reason: r2_http::error_chain(e),
                attempts: attempt,
            },
        )
    };
    let response = client.get(url).send().await.map_err(|e| transport(&e))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(Failure::Final(FetchError::NotFound {
            url: url.to_owned(),
        }));
    }
    if !status.is_success() {
        let error = FetchError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
            attempts: attempt,
        };
        return Err(policy.status_failure(status.as_u16(), None, error));
    }
    let limit = usize::try_from(MAX_FILE_BYTES).unwrap_or(usize::MAX);
    r2_http::read_limited(response, limit)
        .await
        .map_err(|e| match e {
            r2_http::Error::TooLarge { .. } => Failure::Final(FetchError::TooLarge {
                url: url.to_owned(),
                limit: MAX_FILE_BYTES,
            }),
            r2_http::Error::Transport(e) => transport(&e),
        })
}

/// Converts `temp/upstream/` into `temp/router.safetensors`, keeps upstream's config as
/// `temp/upstream-config.json` and removes the rest.
fn convert(temp: &Path) -> Result<(), FetchError> {
    let upstream = temp.join("upstream");
    let convert_error = |source| FetchError::Convert { source };
    let mut router = r2_checkpoints::read_upstream(&upstream).map_err(convert_error)?;
    router.source = Some(ROUTER_SOURCE.to_owned());
    let path = temp.join(ROUTER_FILE);
    router.write(&path).map_err(convert_error)?;
    if RouterFile::read(&path).map_err(convert_error)? != router {
        return Err(convert_error(r2_checkpoints::Error::Safetensors {
            path,
            message: "the file read back differs from what was written".to_owned(),
        }));
    }
    let config = temp.join(UPSTREAM_CONFIG_FILE);
    std::fs::rename(upstream.join("config.json"), &config)
        .map_err(|e| FetchError::io(&config, "cannot keep upstream's config.json", e))?;
    std::fs::remove_dir_all(&upstream)
        .map_err(|e| FetchError::io(&upstream, "cannot remove the downloaded files", e))
}

/// Renames the finished temporary folder to `target`. If `target` already holds a whole router
/// (another process was faster), that one is kept; if it holds something broken, that is
/// replaced.
fn install(temp: tempfile::TempDir, target: &Path) -> Result<(), FetchError> {
    let first = match std::fs::rename(temp.path(), target) {
        Ok(()) => {
            // Renamed into place: nothing to remove.
            let _ = temp.keep();
            return Ok(());
        }
        Err(_) if is_installed(target) => return Ok(()),
        Err(e) => e,
    };
    if std::fs::symlink_metadata(target).is_err() {
        return Err(FetchError::io(
            target,
            "cannot move the converted router into place",
            first,
        ));
    }
    let parent = target.parent().unwrap_or(Path::new("."));
    let trash = temp_dir(parent)?;
    std::fs::rename(target, trash.path().join("broken")).map_err(|e| {
        FetchError::io(
            target,
            "this cached router is broken and cannot be moved away; delete the folder",
            e,
        )
    })?;
    match std::fs::rename(temp.path(), target) {
        Ok(()) => {
            let _ = temp.keep();
            Ok(())
        }
        Err(_) if is_installed(target) => Ok(()),
        Err(e) => Err(FetchError::io(
            target,
            "cannot move the converted router into place",
            e,
        )),
    }
}

/// Removes temporary folders of crashed runs: only our own names, and only old ones, so the
/// folder of a fetch running in another process is left alone.
fn remove_stale_temps(cache_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && entry.metadata().is_ok_and(|m| {
                m.is_dir()
                    && m.modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_AFTER)
            });
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A new temporary folder `<parent>/.r2-fetch-<commit>-<pid>-<random>`, removed when dropped
/// (every error path, and a cancelled future) unless kept.
fn temp_dir(parent: &Path) -> Result<tempfile::TempDir, FetchError> {
    let prefix = format!("{TEMP_PREFIX}{}-{}-", short_commit(), std::process::id());
    tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(parent)
        .map_err(|e| FetchError::io(parent, "cannot create a temporary folder in the cache", e))
}

impl r2_core::Classify for FetchError {
    fn class(&self) -> r2_core::ErrorClass {
        use r2_core::ErrorClass::{
            Internal, InvalidInput, NotFound, Unavailable, UpstreamFailure, UpstreamTimeout,
        };
        match self {
            // Nothing is cached and nothing may (or can) be downloaded here.
            FetchError::NoCacheDir
            | FetchError::Offline { .. }
            | FetchError::Unreachable { .. } => Unavailable,
            FetchError::InvalidBaseUrl { .. } => InvalidInput,
            FetchError::NotFound { .. } => NotFound,
            // The server answered, with an error or with other files than the release's.
            FetchError::Status { .. }
            | FetchError::TooLarge { .. }
            | FetchError::HashMismatch { .. } => UpstreamFailure,
            FetchError::Timeout { .. } => UpstreamTimeout,
            // Verified files that do not convert (a bug), or the disk.
            FetchError::Convert { .. } => Internal,
            FetchError::Io(e) => e.class(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_base_url_is_the_pinned_commit() {
        assert_eq!(UPSTREAM_COMMIT, r2_checkpoints::release::COMMIT);
        assert!(DEFAULT_BASE_URL.contains(UPSTREAM_COMMIT));
        assert!(DEFAULT_BASE_URL.ends_with("/r2_router/"));
        assert_eq!(short_commit(), "b0b2291");
    }

    #[test]
    fn base_url_gets_one_trailing_slash() {
        assert_eq!(base_url("http://h/x").unwrap(), "http://h/x/");
        assert_eq!(base_url("http://h/x/").unwrap(), "http://h/x/");
        assert_eq!(base_url(" http://h ").unwrap(), "http://h/");
        for bad in ["ftp://h/x", "h/x", "http://h/x?y=1", ""] {
            assert!(
                matches!(base_url(bad), Err(FetchError::InvalidBaseUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_cached_router_is_there_only_when_its_file_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ROUTER_FILE);
        assert!(!is_installed(dir.path()), "no file");
        let router = RouterFile {
            dim: 2,
            budgets: vec![10],
            embedding_model: None,
            source: Some(ROUTER_SOURCE.to_owned()),
            models: vec![r2_checkpoints::StoredModel {
                name: "m".to_owned(),
                coef: vec![0.5; 6],
                intercept: vec![0.25; 3],
            }],
        };
        router.write(&path).unwrap();
        assert!(is_installed(dir.path()));
        let bytes = std::fs::read(&path).unwrap();
        for broken in [
            &bytes[..bytes.len() - 1],
            &[bytes.as_slice(), b"x"].concat(),
            &bytes[..7],
            b"not a router",
            b"",
        ] {
            std::fs::write(&path, broken).unwrap();
            assert!(!is_installed(dir.path()), "{} bytes", broken.len());
        }
        // A whole safetensors file, but not a router.
        let header = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let other = [&(header.len() as u64).to_le_bytes()[..], header, &[0u8; 4]].concat();
        std::fs::write(&path, other).unwrap();
        assert!(!is_installed(dir.path()));
        let header = br#"{"__metadata__":{"format":"r2-router","format_version":"1"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let other = [&(header.len() as u64).to_le_bytes()[..], header, &[0u8; 4]].concat();
        std::fs::write(&path, &other).unwrap();
        assert!(is_installed(dir.path()), "the header is what is checked");
    }

    #[test]
    fn fetch_errors_have_classes() {
        use r2_core::{Classify, ErrorClass};
        let url = || "http://mirror/r2_router/config.json".to_owned();
        assert_eq!(
            FetchError::NotFound { url: url() }.class(),
            ErrorClass::NotFound
        );
        assert_eq!(
            FetchError::Offline { dir: "/c".into() }.class(),
            ErrorClass::Unavailable
        );
        assert_eq!(
            FetchError::Timeout {
                url: url(),
                timeout: DEFAULT_TIMEOUT
            }
            .class(),
            ErrorClass::UpstreamTimeout
        );
        assert_eq!(
            FetchError::Status {
                url: url(),
                status: 503,
                attempts: 3
            }
            .class(),
            ErrorClass::UpstreamFailure
        );
    }

    #[test]
    fn options_from_the_environment() {
        let none = FetchOptions::from_vars(|_| None, Some("/c".into())).unwrap();
        assert_eq!(none.base_url, DEFAULT_BASE_URL);
        assert_eq!(none.cache_dir, Path::new("/c/r2/checkpoints"));
        assert!(!none.offline && !none.progress);
        assert_eq!(none.timeout, DEFAULT_TIMEOUT);

        let set = FetchOptions::from_vars(
            |key| match key {
                BASE_URL_ENV => Some("http://mirror/r2_router".into()),
                OFFLINE_ENV => Some("1".into()),
                _ => None,
            },
            Some("/c".into()),
        )
        .unwrap();
        assert_eq!(set.base_url, "http://mirror/r2_router");
        assert!(set.offline);
        assert_eq!(
            cached_router_dir(&set),
            Path::new("/c/r2/checkpoints/b0b2291")
        );

        let off = FetchOptions::from_vars(
            |key| (key == OFFLINE_ENV).then(|| "0".into()),
            Some("/c".into()),
        )
        .unwrap();
        assert!(!off.offline);
        assert!(matches!(
            FetchOptions::from_vars(|_| None, None),
            Err(FetchError::NoCacheDir)
        ));
    }
}
