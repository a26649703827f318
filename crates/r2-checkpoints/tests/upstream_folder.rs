//! Upstream R2-Router folders at run time: layout detection, upstream's skip rule, the in-memory
//! load (`load_any`), validation before anything is written, and the hash checks (the folder's
//! `SHA256SUMS`, the pinned release table).
//!
//! Every damaged folder is a private copy of `shared/upstream-r2-router` in a temporary folder.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use r2_checkpoints::joblib::{read_ridge, read_ridge_dict, JoblibErrorKind, RidgeHead};
use r2_checkpoints::{
    convert_upstream, convert_upstream_folder, detect_layout, load_any, read_upstream,
    read_upstream_folder, release, Error, Layout, PoolChoice, PoolConfig, RouterFile, Verified,
    ROUTER_FILE, SHA256SUMS,
};
use sha2::Digest;

const LIMITED: &str = "limited_score_predictors.joblib";
const UNLIMITED_SCORE: &str = "unlimited_score_predictor.joblib";
const UNLIMITED_TOKENS: &str = "unlimited_token_predictor.joblib";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A private, writable copy of the upstream folder (with its SHA256SUMS and release config.json).
fn upstream_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("upstream");
    r2_fixtures::copy_dir(&r2_fixtures::upstream_dir(), &copy);
    (tmp, copy)
}

/// Makes a copy claim nothing: no SHA256SUMS, and a config.json that is not the release's (the
/// first model's input price changed to `price`).
fn unclaim(copy: &Path, price: f64) {
    std::fs::remove_file(copy.join(SHA256SUMS)).unwrap();
    let path = copy.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let first = config["models"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .next()
        .unwrap();
    first["input_price_per_million"] = price.into();
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

fn model_dir(copy: &Path, model: &str) -> PathBuf {
    copy.join("checkpoints")
        .join(format!("{model}_ridge_alpha10.0"))
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Where a head's `coef_` data and `intercept_` bytes are in a joblib file: the coef is located by
/// its bytes (found without the importer's offsets), the intercept is the first 4-byte
/// `SHORT_BINBYTES` (`C\x04`) after it.
fn head_offsets(bytes: &[u8], head: &RidgeHead) -> (usize, usize) {
    let data = f32_bytes(&head.coef);
    let coef = find(bytes, &data, 0).expect("the coef bytes");
    assert!(
        find(bytes, &data, coef + 1).is_none(),
        "coef bytes are unique"
    );
    let intercept = find(bytes, b"C\x04", coef + data.len()).unwrap() + 2;
    assert_eq!(
        bytes[intercept..intercept + 4],
        head.intercept.to_le_bytes()
    );
    (coef, intercept)
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn folder_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn model_names(pool: &PoolConfig) -> Vec<String> {
    pool.models.iter().map(|m| m.name.clone()).collect()
}

/// Captures `tracing` events (level and fields) on this thread.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields<'a>(&'a mut String);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut text = String::new();
        event.record(&mut Fields(&mut text));
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), text));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Capture {
    fn warnings(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(level, _)| *level == tracing::Level::WARN)
            .map(|(_, text)| text.clone())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Layouts and the in-memory load
// ---------------------------------------------------------------------------------------------

#[test]
fn detect_layout_tells_the_two_layouts_apart() {
    let upstream = r2_fixtures::upstream_dir();
    assert_eq!(
        detect_layout(&upstream).unwrap(),
        Layout::Upstream {
            dir: upstream.clone()
        }
    );
    let converted = r2_fixtures::converted_router_dir();
    let file = converted.join(ROUTER_FILE);
    assert_eq!(
        detect_layout(&converted).unwrap(),
        Layout::Router { file: file.clone() }
    );
    assert_eq!(
        detect_layout(&file).unwrap(),
        Layout::Router { file: file.clone() }
    );

    // A folder holding both: the converted file wins.
    let (_tmp, copy) = upstream_copy();
    std::fs::copy(&file, copy.join(ROUTER_FILE)).unwrap();
    assert_eq!(
        detect_layout(&copy).unwrap(),
        Layout::Router {
            file: copy.join(ROUTER_FILE)
        }
    );

    // A path that does not exist.
    let missing = copy.join("no-such-folder");
    assert!(
        matches!(detect_layout(&missing), Err(Error::RouterNotFound { dir, .. }) if dir == missing)
    );
}

#[test]
fn a_folder_of_neither_layout_lists_what_it_holds_and_the_layouts_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let accepted = [
        "not a router folder".to_owned(),
        format!("a folder holding {ROUTER_FILE}"),
        "an upstream R2-Router folder holding config.json and checkpoints/".to_owned(),
    ];
    let check = |dir: &Path, found: &[&str], more: usize, mentions: &[&str]| {
        let err = detect_layout(dir).unwrap_err();
        match &err {
            Error::NoRouterLayout {
                dir: d,
                found: f,
                more: m,
            } => {
                assert_eq!(d, dir);
                assert_eq!(f, found);
                assert_eq!(*m, more);
            }
            other => panic!("expected NoRouterLayout, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.starts_with(&dir.display().to_string()), "{message}");
        for needle in accepted
            .iter()
            .map(String::as_str)
            .chain(mentions.iter().copied())
        {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        for hint in ["--", "xtask", "$R2_"] {
            assert!(!message.contains(hint), "{message:?} names {hint:?}");
        }
        // load_any says the same.
        let pool = r2_fixtures::upstream_pool();
        assert!(matches!(
            load_any(dir, PoolChoice::FolderOr(&pool)),
            Err(Error::NoRouterLayout { .. })
        ));
    };

    check(tmp.path(), &[], 0, &["it is empty"]);

    // config.json without checkpoints/ (and a stray file) is not an upstream folder.
    std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
    std::fs::create_dir(tmp.path().join("weights")).unwrap();
    check(
        tmp.path(),
        &["config.json", "weights/"],
        0,
        &["it holds config.json, weights/"],
    );

    // Many entries: the first 20, sorted, then how many more.
    for i in (0..30).rev() {
        std::fs::write(tmp.path().join(format!("file-{i:02}.bin")), "x").unwrap();
    }
    let mut expected = vec!["config.json".to_owned()];
    expected.extend((0..19).map(|i| format!("file-{i:02}.bin")));
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    check(tmp.path(), &expected, 12, &["file-18.bin (and 12 more)"]);
}

/// The head outputs of a router for the golden inputs, bit for bit.
fn head_bits(router: &r2_core::Router) -> Vec<u64> {
    r2_fixtures::golden_inputs()
        .iter()
        .take(5)
        .flat_map(|g| router.head_outputs(&g.embedding).unwrap())
        .map(f64::to_bits)
        .collect()
}

#[test]
fn load_any_reads_the_upstream_folder_in_memory_like_the_converted_router() {
    let upstream = r2_fixtures::upstream_dir();
    let upstream_pool = r2_fixtures::upstream_pool();
    let reference = r2_fixtures::upstream_router();
    let other_pool = {
        let mut pool = upstream_pool.clone();
        pool.source = PathBuf::from("<caller's pool>");
        pool
    };

    // The folder's own config.json is the pool.
    let loaded = load_any(&upstream, PoolChoice::FolderOr(&other_pool)).unwrap();
    assert_eq!(
        loaded.layout,
        Layout::Upstream {
            dir: upstream.clone()
        }
    );
    assert_eq!(loaded.pool, upstream_pool);
    assert!(loaded.skipped.is_empty());
    assert_eq!(
        loaded.verified,
        Verified {
            sha256sums: 34,
            release: true
        }
    );
    assert_eq!(head_bits(&loaded.router), head_bits(&reference));
    assert_eq!(loaded.router.models(), reference.models());

    // A given pool wins over the folder's: a subset, in another order, with other prices.
    let mut subset = upstream_pool.clone();
    subset.models.reverse();
    subset.models.truncate(3);
    subset.models[0].input_price_per_million = 7.0;
    let loaded = load_any(&upstream, PoolChoice::Given(&subset)).unwrap();
    assert_eq!(loaded.pool, subset);
    let names: Vec<&str> = loaded
        .router
        .models()
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, model_names(&subset));
    assert_eq!(loaded.router.models()[0].input_price_per_million, 7.0);

    // A given pool naming a model the folder lacks lists the folder's models.
    let mut ghost = subset.clone();
    ghost.models[1].name = "Ghost-1B".into();
    let err = load_any(&upstream, PoolChoice::Given(&ghost)).unwrap_err();
    assert!(
        matches!(&err, Error::ModelNotInRouter { model, available, .. }
            if model == "Ghost-1B" && available.len() == 11),
        "{err:?}"
    );

    // A router folder gets the caller's pool either way.
    let converted = r2_fixtures::converted_router_dir();
    for choice in [
        PoolChoice::FolderOr(&other_pool),
        PoolChoice::Given(&other_pool),
    ] {
        let loaded = load_any(&converted, choice).unwrap();
        assert_eq!(
            loaded.layout,
            Layout::Router {
                file: converted.join(ROUTER_FILE)
            }
        );
        assert_eq!(loaded.pool, other_pool);
        assert_eq!(loaded.verified, Verified::default());
        assert_eq!(head_bits(&loaded.router), head_bits(&reference));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Upstream's loading rule: skip a model without its limited file
// ---------------------------------------------------------------------------------------------

#[test]
fn a_model_without_its_limited_file_is_skipped_logged_and_reported() {
    let (tmp, copy) = upstream_copy();
    unclaim(&copy, 0.5);
    let upstream_names = model_names(&r2_fixtures::upstream_pool());
    let dropped = ["Qwen3-235B-A22B-Instruct-2507", "gemma-3-4b-it"];
    for model in dropped {
        std::fs::remove_file(model_dir(&copy, model).join(LIMITED)).unwrap();
    }
    let expected: Vec<String> = upstream_names
        .iter()
        .filter(|m| !dropped.contains(&m.as_str()))
        .cloned()
        .collect();

    let capture = Capture::default();
    let folder =
        tracing::subscriber::with_default(capture.clone(), || read_upstream_folder(&copy).unwrap());
    assert_eq!(folder.skipped, dropped);
    assert_eq!(
        model_names(&folder.pool),
        expected,
        "config order, skipped removed"
    );
    let stored: Vec<String> = folder
        .router
        .models
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(stored, expected);
    assert_eq!(folder.verified, Verified::default());
    let warnings = capture.warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    for (warning, model) in warnings.iter().zip(dropped) {
        assert!(warning.contains(model), "{warning}");
        assert!(warning.contains(LIMITED), "{warning}");
    }

    // The in-memory load and the converter agree.
    let pool = r2_fixtures::upstream_pool();
    let loaded = load_any(&copy, PoolChoice::FolderOr(&pool)).unwrap();
    assert_eq!(loaded.skipped, dropped);
    assert_eq!(loaded.pool, folder.pool);
    assert_eq!(loaded.pool.source, copy.join("config.json"));
    let out = tmp.path().join("out");
    let written = convert_upstream(&copy, &out).unwrap();
    assert_eq!(written, folder.router);
    assert_eq!(read_upstream(&copy).unwrap(), folder.router);

    // A limited file without its siblings is an error naming the missing file.
    for file in [UNLIMITED_SCORE, UNLIMITED_TOKENS] {
        let (_tmp, copy) = upstream_copy();
        unclaim(&copy, 0.5);
        let missing = model_dir(&copy, "Mistral-7B-Instruct-v0.2").join(file);
        std::fs::remove_file(&missing).unwrap();
        let err = read_upstream_folder(&copy).unwrap_err();
        assert!(
            matches!(&err, Error::Joblib(j) if j.path == missing
                && matches!(&j.kind, JoblibErrorKind::Io(e) if e.kind() == std::io::ErrorKind::NotFound)),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }
}

#[test]
fn a_folder_whose_models_all_lack_their_limited_file_has_no_checkpoints() {
    let (tmp, copy) = upstream_copy();
    unclaim(&copy, 0.5);
    for model in model_names(&r2_fixtures::upstream_pool()) {
        std::fs::remove_file(model_dir(&copy, &model).join(LIMITED)).unwrap();
    }
    let out = tmp.path().join("out");
    for err in [
        read_upstream_folder(&copy).unwrap_err(),
        load_any(&copy, PoolChoice::FolderOr(&r2_fixtures::upstream_pool())).unwrap_err(),
        convert_upstream(&copy, &out).unwrap_err(),
    ] {
        match &err {
            Error::NoCheckpoints { dir, looked_for } => {
                assert_eq!(dir, &copy.join("checkpoints"));
                assert_eq!(looked_for.len(), 11);
            }
            other => panic!("expected NoCheckpoints, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "no checkpoints found in {}",
                copy.join("checkpoints").display()
            )),
            "{message}"
        );
        assert!(message.contains("and 8 more"), "{message}");
    }
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------------
// 3. A failed conversion never replaces a good router
// ---------------------------------------------------------------------------------------------

/// One weight to poison: file, dict entry (for the limited file), attribute, element, value.
struct Poison {
    model: &'static str,
    file: &'static str,
    entry: Option<&'static str>,
    attribute: &'static str,
    index: usize,
    value: f32,
}

#[test]
fn a_non_finite_weight_names_the_joblib_file_and_byte_and_leaves_the_old_router() {
    let cases = [
        Poison {
            model: "Llama-3.2-3B-Instruct",
            file: LIMITED,
            entry: Some("300_score"),
            attribute: "coef_",
            index: 17,
            value: f32::NAN,
        },
        Poison {
            model: "GLM-4.5-Air",
            file: UNLIMITED_TOKENS,
            entry: None,
            attribute: "coef_",
            index: 1023,
            value: f32::INFINITY,
        },
        Poison {
            model: "gemma-3-1b-it",
            file: UNLIMITED_SCORE,
            entry: None,
            attribute: "intercept_",
            index: 0,
            value: f32::NEG_INFINITY,
        },
        Poison {
            model: "Qwen3-0.6B",
            file: LIMITED,
            entry: Some("4000_score"),
            attribute: "intercept_",
            index: 0,
            value: f32::NAN,
        },
    ];
    for case in cases {
        let (tmp, copy) = upstream_copy();
        unclaim(&copy, 0.5);
        // The out folder already holds a good router.
        let out = tmp.path().join("out");
        convert_upstream(&copy, &out).unwrap();
        let good = std::fs::read(out.join(ROUTER_FILE)).unwrap();

        let path = model_dir(&copy, case.model).join(case.file);
        let mut bytes = std::fs::read(&path).unwrap();
        let head = match case.entry {
            Some(key) => {
                read_ridge_dict(&path)
                    .unwrap()
                    .into_iter()
                    .find(|(k, _)| k == key)
                    .unwrap()
                    .1
            }
            None => read_ridge(&path).unwrap(),
        };
        let (coef, intercept) = head_offsets(&bytes, &head);
        let at = match case.attribute {
            "coef_" => coef + 4 * case.index,
            _ => intercept,
        };
        bytes[at..at + 4].copy_from_slice(&case.value.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();

        let label = format!("{} {} {:?}", case.model, case.file, case.entry);
        let err = convert_upstream(&copy, &out).unwrap_err();
        let Error::Joblib(j) = &err else {
            panic!("{label}: expected a joblib error, got {err:?}")
        };
        assert_eq!(j.path, path, "{label}");
        assert_eq!(j.offset, at as u64, "{label}: {err}");
        let kind = match (&j.kind, case.entry) {
            (JoblibErrorKind::InEntry { key, inner }, Some(entry)) => {
                assert_eq!(key, entry, "{label}");
                &**inner
            }
            (kind, None) => kind,
            (other, Some(_)) => panic!("{label}: expected InEntry, got {other:?}"),
        };
        assert!(
            matches!(kind, JoblibErrorKind::NonFinite { attribute, index, value }
                if *attribute == case.attribute && *index == case.index as u64
                    && value.to_bits() == f64::from(case.value).to_bits()),
            "{label}: {kind:?}"
        );
        let message = err.to_string();
        let value = f64::from(case.value);
        for needle in [
            format!("{}: byte {at}: ", path.display()),
            format!("{}[{}] is {value}", case.attribute, case.index),
        ] {
            assert!(message.contains(&needle), "{message:?} lacks {needle:?}");
        }
        assert_eq!(
            std::fs::read(out.join(ROUTER_FILE)).unwrap(),
            good,
            "{label}"
        );
        assert_eq!(
            folder_entries(&out),
            [ROUTER_FILE],
            "{label}: no temporary file"
        );

        // The in-memory paths give the same error.
        for err in [
            read_upstream(&copy).unwrap_err(),
            load_any(&copy, PoolChoice::FolderOr(&r2_fixtures::upstream_pool())).unwrap_err(),
        ] {
            assert!(
                matches!(&err, Error::Joblib(e) if e.path == path && e.offset == at as u64),
                "{label}: {err:?}"
            );
        }
    }
}

#[test]
fn a_failed_conversion_into_a_folder_with_a_good_router_keeps_it_whatever_fails() {
    // Other failures (a missing sibling, a hash mismatch, a broken pickle) keep the old router too.
    let (tmp, copy) = upstream_copy();
    let out = tmp.path().join("out");
    convert_upstream(&copy, &out).unwrap();
    let good = std::fs::read(out.join(ROUTER_FILE)).unwrap();
    let path = model_dir(&copy, "gemma-3-270m-it").join(UNLIMITED_SCORE);
    let original = std::fs::read(&path).unwrap();

    let mut truncated = original.clone();
    truncated.truncate(1000);
    type Damage<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let damages: [Damage; 3] = [
        (
            "hash mismatch",
            Box::new(|| {
                let mut b = original.clone();
                b[500] ^= 1;
                std::fs::write(&path, b).unwrap();
            }),
        ),
        (
            "truncated, no claim",
            Box::new(|| {
                unclaim(&copy, 0.5);
                std::fs::write(&path, &truncated).unwrap();
            }),
        ),
        ("missing", Box::new(|| std::fs::remove_file(&path).unwrap())),
    ];
    for (what, damage) in damages {
        damage();
        assert!(convert_upstream(&copy, &out).is_err(), "{what}");
        assert_eq!(
            std::fs::read(out.join(ROUTER_FILE)).unwrap(),
            good,
            "{what}"
        );
        assert_eq!(folder_entries(&out), [ROUTER_FILE], "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Hashes
// ---------------------------------------------------------------------------------------------

/// Flips one bit of `coef_[5]` of a model's limited file (entry `80_score`) so that the weight
/// stays finite but is far from the original; returns the file and its new bytes.
fn flip_a_coefficient(copy: &Path) -> (PathBuf, Vec<u8>) {
    let path = model_dir(copy, "Llama-3.1-70B-Instruct").join(LIMITED);
    let head = read_ridge_dict(&path)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "80_score")
        .unwrap()
        .1;
    let mut bytes = std::fs::read(&path).unwrap();
    let (coef, _) = head_offsets(&bytes, &head);
    let at = coef + 4 * 5 + 3; // the byte holding the sign and the top of the exponent
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let changed = f32::from_le_bytes(bytes[coef + 20..coef + 24].try_into().unwrap());
    assert!(changed.is_finite() && changed != head.coef[5]);
    (path, bytes)
}

#[test]
fn the_shared_folder_passes_its_sha256sums_and_the_pinned_release() {
    let folder = read_upstream_folder(&r2_fixtures::upstream_dir()).unwrap();
    assert_eq!(
        folder.verified,
        Verified {
            sha256sums: 34,
            release: true
        }
    );
    assert!(folder.skipped.is_empty());
    assert_eq!(folder.pool, r2_fixtures::upstream_pool());
    // The shared SHA256SUMS agrees with the pinned table.
    let sums = std::fs::read_to_string(r2_fixtures::upstream_dir().join(SHA256SUMS)).unwrap();
    for (file, hash) in release::FILES {
        assert!(sums.contains(&format!("{hash}  {file}")), "{file}");
    }
}

#[test]
fn a_flipped_byte_is_rejected_by_sha256sums_naming_the_file_and_both_hashes() {
    let (tmp, copy) = upstream_copy();
    let (path, bytes) = flip_a_coefficient(&copy);
    let relative =
        "checkpoints/Llama-3.1-70B-Instruct_ridge_alpha10.0/limited_score_predictors.joblib";
    let expected = release::FILES
        .iter()
        .find(|(f, _)| *f == relative)
        .unwrap()
        .1;
    let actual = sha256_hex(&bytes);
    let out = tmp.path().join("out");
    for err in [
        read_upstream_folder(&copy).unwrap_err(),
        load_any(&copy, PoolChoice::FolderOr(&r2_fixtures::upstream_pool())).unwrap_err(),
        convert_upstream(&copy, &out).unwrap_err(),
    ] {
        match &err {
            Error::Sha256Mismatch {
                path: p,
                sums,
                line,
                expected: e,
                actual: a,
            } => {
                assert_eq!(p, &path);
                assert_eq!(sums, &copy.join(SHA256SUMS));
                assert_eq!(*line, 5);
                assert_eq!(e, expected);
                assert_eq!(a, &actual);
            }
            other => panic!("expected Sha256Mismatch, got {other:?}"),
        }
        let message = err.to_string();
        for needle in [
            path.display().to_string(),
            expected.to_owned(),
            actual.clone(),
            format!("{} line 5", copy.join(SHA256SUMS).display()),
        ] {
            assert!(message.contains(&needle), "{message:?} lacks {needle:?}");
        }
    }
    assert!(!out.exists());
}

#[test]
fn without_sha256sums_the_release_config_json_makes_the_pinned_table_apply() {
    let (_tmp, copy) = upstream_copy();
    std::fs::remove_file(copy.join(SHA256SUMS)).unwrap();
    // Untouched, the copy passes the pinned table.
    assert_eq!(
        read_upstream_folder(&copy).unwrap().verified,
        Verified {
            sha256sums: 0,
            release: true
        }
    );
    let (path, bytes) = flip_a_coefficient(&copy);
    for err in [
        read_upstream(&copy).unwrap_err(),
        load_any(&copy, PoolChoice::FolderOr(&r2_fixtures::upstream_pool())).unwrap_err(),
    ] {
        match &err {
            Error::ReleaseMismatch {
                path: p,
                file,
                expected,
                actual,
            } => {
                assert_eq!(p, &path);
                assert_eq!(
                    file,
                    "checkpoints/Llama-3.1-70B-Instruct_ridge_alpha10.0/limited_score_predictors.joblib"
                );
                assert_eq!(
                    expected.as_deref(),
                    Some("02348c9794dcb6af03a6c360c6f93a826f927e467379ac31fa83dc0ccb9be0cc")
                );
                assert_eq!(actual, &sha256_hex(&bytes));
            }
            other => panic!("expected ReleaseMismatch, got {other:?}"),
        }
        let message = err.to_string();
        for needle in [
            path.display().to_string(),
            "differs from the R2-Router release b0b2291".into(),
            "02348c9794dcb6af03a6c360c6f93a826f927e467379ac31fa83dc0ccb9be0cc".into(),
            release::COMMIT.into(),
        ] {
            assert!(message.contains(&needle), "{message:?} lacks {needle:?}");
        }
    }

    // A release folder missing a model's limited file is incomplete, not a smaller pool.
    let (_tmp, copy) = upstream_copy();
    std::fs::remove_file(copy.join(SHA256SUMS)).unwrap();
    let missing = model_dir(&copy, "gemma-3-4b-it").join(LIMITED);
    std::fs::remove_file(&missing).unwrap();
    let err = read_upstream_folder(&copy).unwrap_err();
    assert!(
        matches!(&err, Error::Joblib(j) if j.path == missing),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("the R2-Router release b0b2291"),
        "{err}"
    );
}

#[test]
fn a_folder_claiming_nothing_is_not_checked() {
    // Other prices (so not the release's config.json), no SHA256SUMS and a changed weight: loads,
    // with the changed weight.
    let (_tmp, copy) = upstream_copy();
    unclaim(&copy, 0.25);
    flip_a_coefficient(&copy);
    let folder = read_upstream_folder(&copy).unwrap();
    assert_eq!(folder.verified, Verified::default());
    assert_eq!(folder.pool.models[0].input_price_per_million, 0.25);
    let original = read_upstream(&r2_fixtures::upstream_dir()).unwrap();
    let model = folder
        .router
        .models
        .iter()
        .position(|m| m.name == "Llama-3.1-70B-Instruct")
        .unwrap();
    let budget_row = folder.router.budgets.iter().position(|&b| b == 80).unwrap();
    let changed: Vec<usize> = (0..folder.router.models[model].coef.len())
        .filter(|&i| {
            folder.router.models[model].coef[i].to_bits()
                != original.models[model].coef[i].to_bits()
        })
        .collect();
    assert_eq!(changed, [budget_row * 1024 + 5]);
    let loaded = load_any(&copy, PoolChoice::FolderOr(&r2_fixtures::upstream_pool())).unwrap();
    assert_eq!(loaded.verified, Verified::default());
}

#[test]
fn sha256sums_must_list_every_file_read_and_be_well_formed() {
    let sums_text = std::fs::read_to_string(r2_fixtures::upstream_dir().join(SHA256SUMS)).unwrap();
    let relative = "checkpoints/gemma-3-270m-it_ridge_alpha10.0/unlimited_token_predictor.joblib";

    // A file the loader reads that SHA256SUMS does not list.
    let (_tmp, copy) = upstream_copy();
    let without: String = sums_text
        .lines()
        .filter(|l| !l.ends_with(relative))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(copy.join(SHA256SUMS), without).unwrap();
    let err = read_upstream_folder(&copy).unwrap_err();
    assert!(
        matches!(&err, Error::NotInSha256Sums { path, file, .. }
            if *path == copy.join(relative) && file == relative),
        "{err:?}"
    );
    assert!(err.to_string().contains(relative), "{err}");

    // sha256sum's binary marker, `./` prefixes and uppercase hex are fine.
    let (_tmp, copy) = upstream_copy();
    let variant: String = sums_text
        .lines()
        .map(|l| {
            let (hash, name) = l.split_once("  ").unwrap();
            format!("{} *./{name}\n", hash.to_uppercase())
        })
        .collect();
    std::fs::write(copy.join(SHA256SUMS), variant).unwrap();
    assert_eq!(read_upstream_folder(&copy).unwrap().verified.sha256sums, 34);

    // A malformed line names the file and the line.
    let (_tmp, copy) = upstream_copy();
    let broken = sums_text.replacen("  config.json", " config.json", 1);
    std::fs::write(copy.join(SHA256SUMS), broken).unwrap();
    let err = read_upstream_folder(&copy).unwrap_err();
    assert!(
        matches!(&err, Error::Sha256Sums { path, line: 1, .. } if *path == copy.join(SHA256SUMS)),
        "{err:?}"
    );
    assert!(err.to_string().contains("line 1"), "{err}");

    // A file SHA256SUMS lists that is missing is an error, not a skipped model.
    let (_tmp, copy) = upstream_copy();
    let missing = model_dir(&copy, "Qwen2.5-Math-7B-Instruct").join(LIMITED);
    std::fs::remove_file(&missing).unwrap();
    let err = read_upstream_folder(&copy).unwrap_err();
    assert!(
        matches!(&err, Error::Joblib(j) if j.path == missing),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(SHA256SUMS), "{message}");
    assert!(message.contains("incomplete"), "{message}");

    // An edited config.json is checked against SHA256SUMS like every other file.
    let (_tmp, copy) = upstream_copy();
    let config = copy.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("0.071", "0.072")).unwrap();
    let err = load_any(&copy, PoolChoice::FolderOr(&r2_fixtures::upstream_pool())).unwrap_err();
    assert!(
        matches!(&err, Error::Sha256Mismatch { path, line: 1, .. } if *path == config),
        "{err:?}"
    );
}

#[test]
fn converting_the_shared_folder_is_reproducible_and_matches_the_in_memory_router() {
    let tmp = tempfile::tempdir().unwrap();
    let written = convert_upstream(&r2_fixtures::upstream_dir(), tmp.path()).unwrap();
    assert_eq!(
        RouterFile::read(&tmp.path().join(ROUTER_FILE)).unwrap(),
        written
    );
    assert_eq!(
        std::fs::read(tmp.path().join(ROUTER_FILE)).unwrap(),
        written.to_bytes().unwrap()
    );
    assert_eq!(folder_entries(tmp.path()), [ROUTER_FILE]);
    assert_eq!(
        read_upstream(&r2_fixtures::upstream_dir()).unwrap(),
        written
    );
}

#[test]
fn convert_upstream_folder_reports_the_pool_which_writes_and_reads_back_beside_the_router() {
    let (tmp, copy) = upstream_copy();
    unclaim(&copy, 0.5);
    std::fs::remove_file(model_dir(&copy, "gemma-3-1b-it").join(LIMITED)).unwrap();
    let out = tmp.path().join("out");
    let folder = convert_upstream_folder(&copy, &out).unwrap();
    assert_eq!(folder.skipped, ["gemma-3-1b-it"]);
    assert_eq!(folder, read_upstream_folder(&copy).unwrap());
    assert_eq!(
        RouterFile::read(&out.join(ROUTER_FILE)).unwrap(),
        folder.router
    );

    let pool_path = out.join("config.json");
    folder.pool.write(&pool_path).unwrap();
    let back = PoolConfig::from_file(&pool_path).unwrap();
    assert_eq!(back.source, pool_path);
    assert_eq!(
        PoolConfig {
            source: folder.pool.source.clone(),
            ..back
        },
        folder.pool
    );
    assert_eq!(folder_entries(&out), ["config.json", ROUTER_FILE]);
    // The folder is still a router folder (router.safetensors wins over a config.json).
    let loaded = load_any(&out, PoolChoice::FolderOr(&folder.pool)).unwrap();
    assert_eq!(
        loaded.layout,
        Layout::Router {
            file: out.join(ROUTER_FILE)
        }
    );
    assert_eq!(loaded.router.models().len(), 10);
}
