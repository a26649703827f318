//! `r2_hub::snapshot` against the Hub stand-in of `r2_fixtures::hub` on 127.0.0.1: listing,
//! downloading only the wanted files, the cache layout of `huggingface_hub`, revisions, and the
//! cache when the Hub is down or offline. Settings are built directly, so no test touches the
//! process environment.

use std::collections::HashMap;
use std::path::Path;

use r2_fixtures::hub::{closed_endpoint, HubRepo, HubServer, COMMIT};
use r2_hub::{Error, HubSettings, RepoRef};

fn settings(endpoint: &str, cache: &Path, offline: bool) -> HubSettings {
    HubSettings {
        endpoint: endpoint.to_owned(),
        cache_dir: cache.to_path_buf(),
        offline,
        token: None,
    }
}

fn repo() -> HubRepo {
    let mut repo = HubRepo::default();
    repo.files
        .insert("config.json".into(), b"{\"a\": 1}".to_vec());
    repo.files
        .insert("checkpoints/m/x.joblib".into(), vec![7u8; 3000]);
    repo.files
        .insert("README.md".into(), b"not wanted".to_vec());
    repo.redirected.insert("checkpoints/m/x.joblib".into());
    repo.revisions.insert("v1.0".into());
    repo
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn wanted(file: &str) -> bool {
    file != "README.md"
}

#[test]
fn downloads_the_wanted_files_then_serves_them_from_the_cache() {
    let server = HubServer::start(HashMap::from([("team/router".to_owned(), repo())]));
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime();
    let id: RepoRef = "team/router".parse().unwrap();
    let online = settings(&server.endpoint, cache.path(), false);
    let snap = rt
        .block_on(r2_hub::snapshot(&id, &online, wanted, false))
        .unwrap();
    assert!(snap.online);
    assert_eq!(snap.commit, COMMIT);
    assert_eq!(
        snap.files,
        ["README.md", "checkpoints/m/x.joblib", "config.json"]
    );
    let expected_dir = cache
        .path()
        .join("models--team--router")
        .join("snapshots")
        .join(COMMIT);
    assert_eq!(snap.dir, expected_dir);
    assert_eq!(
        std::fs::read(snap.dir.join("checkpoints/m/x.joblib")).unwrap(),
        vec![7u8; 3000]
    );
    assert!(snap.dir.join("config.json").is_file());
    assert!(
        !snap.dir.join("README.md").exists(),
        "not wanted, not downloaded"
    );
    assert_eq!(
        std::fs::read_to_string(cache.path().join("models--team--router/refs/main")).unwrap(),
        COMMIT
    );
    let requests = server.requests();
    assert!(requests
        .iter()
        .any(|r| r == "/api/models/team/router/revision/main"));
    assert!(
        !requests.iter().any(|r| r.ends_with("README.md")),
        "{requests:?}"
    );

    // A second run lists again but downloads nothing.
    server.clear_requests();
    let again = rt
        .block_on(r2_hub::snapshot(&id, &online, wanted, false))
        .unwrap();
    assert_eq!(again.dir, snap.dir);
    assert_eq!(server.requests(), ["/api/models/team/router/revision/main"]);

    // The Hub down: the cached snapshot, without the network.
    let down = settings(&closed_endpoint(), cache.path(), false);
    let cached = rt
        .block_on(r2_hub::snapshot(&id, &down, wanted, false))
        .unwrap();
    assert!(!cached.online);
    assert_eq!(cached.dir, snap.dir);
    assert_eq!(cached.files, ["checkpoints/m/x.joblib", "config.json"]);

    // Offline: the same, without even trying.
    let offline = settings("http://unused.invalid", cache.path(), true);
    let cached = rt
        .block_on(r2_hub::snapshot(&id, &offline, wanted, false))
        .unwrap();
    assert_eq!(cached.dir, snap.dir);
}

#[test]
fn revisions_resolve_and_are_cached_under_their_own_ref() {
    let server = HubServer::start(HashMap::from([("team/router".to_owned(), repo())]));
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime();
    let online = settings(&server.endpoint, cache.path(), false);
    for revision in ["v1.0", COMMIT] {
        let id: RepoRef = format!("team/router@{revision}").parse().unwrap();
        assert_eq!(id.revision, revision);
        let snap = rt
            .block_on(r2_hub::snapshot(&id, &online, wanted, false))
            .unwrap();
        assert_eq!(snap.commit, COMMIT);
        let offline = settings("http://unused.invalid", cache.path(), true);
        let cached = rt
            .block_on(r2_hub::snapshot(&id, &offline, wanted, false))
            .unwrap();
        assert_eq!(cached.dir, snap.dir, "{revision}");
    }
    // A revision the Hub does not have is a 404 naming it.
    let id: RepoRef = "team/router@v9".parse().unwrap();
    let err = rt
        .block_on(r2_hub::snapshot(&id, &online, wanted, false))
        .unwrap_err();
    assert!(matches!(err, Error::RepoNotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("team/router") && message.contains("v9"),
        "{message}"
    );
}

#[test]
fn an_empty_cache_offline_or_with_the_hub_down_says_what_to_do() {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime();
    let id: RepoRef = "team/router".parse().unwrap();
    let endpoint = closed_endpoint();
    for (s, why) in [
        (settings(&endpoint, cache.path(), true), "HF_HUB_OFFLINE"),
        (settings(&endpoint, cache.path(), false), endpoint.as_str()),
    ] {
        let err = rt
            .block_on(r2_hub::snapshot(&id, &s, wanted, false))
            .unwrap_err();
        assert!(matches!(err, Error::NotCached { .. }), "{err:?}");
        let message = err.to_string();
        let cache_path = cache.path().display().to_string();
        for needle in [
            "team/router",
            cache_path.as_str(),
            why,
            "huggingface-cli download team/router",
        ] {
            assert!(message.contains(needle), "{needle:?} not in: {message}");
        }
    }
}

#[test]
fn unknown_repositories_and_bad_ids_are_named() {
    let server = HubServer::start(HashMap::from([("team/router".to_owned(), repo())]));
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime();
    let online = settings(&server.endpoint, cache.path(), false);
    let id: RepoRef = "team/nothing".parse().unwrap();
    let err = rt
        .block_on(r2_hub::snapshot(&id, &online, wanted, false))
        .unwrap_err();
    assert!(matches!(err, Error::RepoNotFound { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("/api/models/team/nothing/revision/main"),
        "{err}"
    );

    for bad in [
        "",
        "a/b/c",
        "../x",
        "a b",
        "/x",
        "x/",
        "team/router@",
        "team/router@a b",
    ] {
        let got = bad.parse::<RepoRef>();
        assert!(
            matches!(got, Err(Error::InvalidRepo { .. })),
            "{bad:?}: {got:?}"
        );
    }
    let ok: RepoRef = "gpt2".parse().unwrap();
    assert_eq!((ok.id.as_str(), ok.revision.as_str()), ("gpt2", "main"));
    assert_eq!(ok.to_string(), "gpt2");
    let with_revision: RepoRef = "a/b@refs/pr/1".parse().unwrap();
    assert_eq!(with_revision.to_string(), "a/b@refs/pr/1");
}

#[test]
fn debug_hides_the_token() {
    let mut s = settings("http://x", Path::new("/c"), false);
    s.token = Some("hf_secret_token".into());
    assert!(!format!("{s:?}").contains("hf_secret_token"));
}
