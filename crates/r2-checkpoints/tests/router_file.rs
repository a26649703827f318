//! The router-file loader (`RouterFile::read`, `RouterFile::from_bytes`, `load_router`), the pool
//! config parser (`PoolConfig::from_json`, `PoolConfig::from_file`) and the upstream converter
//! reject bad input with the right `Error` variant and a message naming the file and the tensor or
//! key at fault, and never panic.
//!
//! Damaged router files are built here with the `safetensors` crate directly (not with
//! `RouterFile::to_bytes`), from a small synthetic router, so that each case differs from a valid
//! file in exactly one way.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use r2_checkpoints::joblib::JoblibErrorKind;
use r2_checkpoints::{
    convert_upstream, load_router, Error, PoolConfig, RouterFile, StoredModel, FORMAT,
    FORMAT_VERSION, ROUTER_FILE,
};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

// ---------------------------------------------------------------------------------------------
// Synthetic router and raw safetensors files
// ---------------------------------------------------------------------------------------------

/// Embedding length of the synthetic router.
const DIM: usize = 4;
/// Limited budgets of the synthetic router.
const BUDGETS: [u32; 2] = [10, 20];
/// Rows per model: the limited heads, unlimited quality, unlimited output tokens.
const ROWS: usize = BUDGETS.len() + 2;
/// Models of the synthetic router, in file order.
const MODELS: [&str; 2] = ["alpha", "beta"];

/// A small valid router: dim 4, budgets [10, 20], models `alpha` and `beta`, distinct weights.
fn synthetic_router() -> RouterFile {
    let models = MODELS
        .iter()
        .enumerate()
        .map(|(m, name)| StoredModel {
            name: (*name).to_owned(),
            coef: (0..ROWS * DIM)
                .map(|i| (m * 100 + i) as f32 * 0.01 - 0.25)
                .collect(),
            intercept: (0..ROWS)
                .map(|i| 0.5 + (m * 10 + i) as f32 * 0.125)
                .collect(),
        })
        .collect();
    RouterFile {
        dim: DIM,
        budgets: BUDGETS.to_vec(),
        embedding_model: Some("test/embedder".into()),
        source: Some("synthetic router of tests/router_file.rs".into()),
        models,
    }
}

/// The pool config matching [`synthetic_router`].
fn synthetic_pool_json() -> String {
    pool_json(DIM, 0.5, &[("alpha", 1.0, 2.0), ("beta", 0.5, 0.25)])
}

/// A pool config as JSON text.
fn pool_json(dim: usize, lambda: f64, models: &[(&str, f64, f64)]) -> String {
    let mut map = serde_json::Map::new();
    for (name, input, output) in models {
        map.insert(
            (*name).to_owned(),
            serde_json::json!({
                "openrouter_id": format!("test/{}", name.to_lowercase()),
                "input_price_per_million": input,
                "output_price_per_million": output,
            }),
        );
    }
    serde_json::json!({
        "embedding_model": "test/embedder",
        "embedding_dim": dim,
        "default_lambda": lambda,
        "models": map,
    })
    .to_string()
}

fn pool(json: &str) -> PoolConfig {
    PoolConfig::from_json(json, Path::new("test-pool.json"))
        .unwrap_or_else(|e| panic!("test pool config must parse: {e}"))
}

#[derive(Debug, Clone)]
struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl RawTensor {
    fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            dtype: Dtype::F32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    fn f64(shape: Vec<usize>, values: &[f64]) -> Self {
        Self {
            dtype: Dtype::F64,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    fn zeros_f32(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self::f32(shape, &vec![0.0; n])
    }
}

/// A safetensors file before serialisation: metadata and tensors, freely editable.
#[derive(Debug, Clone)]
struct RawFile {
    metadata: Option<HashMap<String, String>>,
    tensors: BTreeMap<String, RawTensor>,
}

impl RawFile {
    /// The layout of `router`, spelled out by hand from the format documentation.
    fn of(router: &RouterFile) -> Self {
        let rows = router.budgets.len() + 2;
        let mut tensors = BTreeMap::new();
        for model in &router.models {
            tensors.insert(
                format!("models/{}/coef", model.name),
                RawTensor::f32(vec![rows, router.dim], &model.coef),
            );
            tensors.insert(
                format!("models/{}/intercept", model.name),
                RawTensor::f32(vec![rows], &model.intercept),
            );
        }
        let budgets: Vec<String> = router.budgets.iter().map(u32::to_string).collect();
        let names: Vec<&str> = router.models.iter().map(|m| m.name.as_str()).collect();
        let mut metadata = HashMap::new();
        metadata.insert("format".to_owned(), "r2-router".to_owned());
        metadata.insert("format_version".to_owned(), "1".to_owned());
        metadata.insert("embedding_dim".to_owned(), router.dim.to_string());
        metadata.insert("budgets".to_owned(), budgets.join(","));
        metadata.insert("models".to_owned(), serde_json::to_string(&names).unwrap());
        if let Some(e) = &router.embedding_model {
            metadata.insert("embedding_model".to_owned(), e.clone());
        }
        if let Some(s) = &router.source {
            metadata.insert("source".to_owned(), s.clone());
        }
        Self {
            metadata: Some(metadata),
            tensors,
        }
    }

    fn serialize(&self) -> Vec<u8> {
        let views: Vec<(String, TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let view = TensorView::new(t.dtype, t.shape.clone(), &t.data)
                    .unwrap_or_else(|e| panic!("test tensor `{name}` is inconsistent: {e}"));
                (name.clone(), view)
            })
            .collect();
        safetensors::serialize(views, self.metadata.clone()).expect("test file serialises")
    }

    fn set_meta(&mut self, key: &str, value: &str) {
        self.metadata
            .as_mut()
            .expect("metadata present")
            .insert(key.to_owned(), value.to_owned());
    }

    fn remove_meta(&mut self, key: &str) {
        let removed = self
            .metadata
            .as_mut()
            .expect("metadata present")
            .remove(key);
        assert!(removed.is_some(), "test removes metadata `{key}` it has");
    }

    fn remove_tensor(&mut self, name: &str) {
        assert!(
            self.tensors.remove(name).is_some(),
            "test removes tensor `{name}` it has"
        );
    }

    fn replace_tensor(&mut self, name: &str, tensor: RawTensor) {
        assert!(
            self.tensors.insert(name.to_owned(), tensor).is_some(),
            "test replaces tensor `{name}` it has"
        );
    }

    fn add_tensor(&mut self, name: &str, tensor: RawTensor) {
        assert!(
            self.tensors.insert(name.to_owned(), tensor).is_none(),
            "test adds tensor `{name}` it lacks"
        );
    }

    /// Overwrites value `index` of an F32 tensor.
    fn poke_f32(&mut self, name: &str, index: usize, value: f32) {
        let t = self.tensors.get_mut(name).expect("tensor present");
        assert_eq!(t.dtype, Dtype::F32);
        t.data[index * 4..index * 4 + 4].copy_from_slice(&value.to_le_bytes());
    }
}

fn synthetic_bytes() -> Vec<u8> {
    RawFile::of(&synthetic_router()).serialize()
}

/// A deterministic xorshift generator (no `rand` dependency).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Runs `f`, turning a panic into an `Err` that names `what`.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        format!("{what}: panicked: {msg}")
    })
}

/// Fails with every collected problem at once, so one run shows every failing case.
fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of the {what} cases failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Checks that the message of `err` names `path` and every one of `needles`.
fn check_message(err: &Error, path: &Path, needles: &[String]) -> Result<(), String> {
    let message = err.to_string();
    let path_text = path.display().to_string();
    if !message.contains(&path_text) {
        return Err(format!(
            "message `{message}` does not name the file {path_text}"
        ));
    }
    for needle in needles {
        if !message.contains(needle.as_str()) {
            return Err(format!("message `{message}` does not mention {needle}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn converted_router_round_trips_through_to_bytes_and_from_bytes_unchanged() {
    let path = r2_fixtures::converted_router_dir().join(ROUTER_FILE);
    let router = RouterFile::read(&path).unwrap();
    assert_eq!(router.dim, 1024);
    assert_eq!(router.models.len(), 11);
    let bytes = router.to_bytes().unwrap();
    let back = RouterFile::from_bytes(&bytes, Path::new("in-memory")).unwrap();
    assert_eq!(back, router);
}

/// Serialising the same router gives the same bytes, so a conversion is reproducible (checksums
/// of `router.safetensors` stay stable).
#[test]
fn to_bytes_gives_the_same_bytes_every_time() {
    let router = synthetic_router();
    let first = router.to_bytes().unwrap();
    let differing = (0..20)
        .filter(|_| router.to_bytes().unwrap() != first)
        .count();
    assert_eq!(
        differing, 0,
        "{differing} of 20 serialisations of one router differ from the first"
    );
    // The converted file on disk is what to_bytes gives for its contents.
    let path = r2_fixtures::converted_router_dir().join(ROUTER_FILE);
    let on_disk = std::fs::read(&path).unwrap();
    let again = RouterFile::read(&path).unwrap().to_bytes().unwrap();
    assert!(
        on_disk == again,
        "re-serialising {} gives other bytes",
        path.display()
    );
}

#[test]
fn converted_router_written_to_a_new_folder_reads_back_equal_and_leaves_no_temporary_file() {
    let router = RouterFile::read(&r2_fixtures::converted_router_dir().join(ROUTER_FILE)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("checkpoints");
    let path = dir.join(ROUTER_FILE);
    router.write(&path).unwrap();
    assert_eq!(RouterFile::read(&path).unwrap(), router);
    assert_eq!(folder_entries(&dir), vec![ROUTER_FILE.to_owned()]);

    // Overwriting an existing router is just as clean.
    let mut changed = router.clone();
    changed.models.truncate(3);
    changed.source = None;
    changed.write(&path).unwrap();
    assert_eq!(RouterFile::read(&path).unwrap(), changed);
    assert_eq!(folder_entries(&dir), vec![ROUTER_FILE.to_owned()]);
}

#[test]
fn write_onto_a_folder_fails_naming_it_and_leaves_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join(ROUTER_FILE);
    std::fs::create_dir(&target).unwrap();
    let err = synthetic_router().write(&target).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if *path == target),
        "{err:?}"
    );
    check_message(&err, &target, &[]).unwrap();
    assert_eq!(folder_entries(tmp.path()), vec![ROUTER_FILE.to_owned()]);
}

/// `write` is atomic: threads writing one path each succeed and leave one whole router, never an
/// error or a mixed file.
#[test]
fn concurrent_writes_to_one_path_never_fail_or_leave_a_mixed_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(ROUTER_FILE);
    let a = synthetic_router();
    let mut b = synthetic_router();
    for m in &mut b.models {
        m.coef.iter_mut().for_each(|v| *v = -*v);
    }
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for router in [&a, &b] {
            let (path, failures, a, b) = (&path, &failures, &a, &b);
            scope.spawn(move || {
                for i in 0..400 {
                    if let Err(e) = router.write(path) {
                        failures.lock().unwrap().push(format!("write {i}: {e}"));
                    }
                    match RouterFile::read(path) {
                        Ok(r) if r == *a || r == *b => {}
                        Ok(_) => failures
                            .lock()
                            .unwrap()
                            .push(format!("read {i}: mixed file")),
                        Err(e) => failures.lock().unwrap().push(format!("read {i}: {e}")),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    let shown: Vec<String> = failures.iter().take(5).cloned().collect();
    assert!(
        failures.is_empty(),
        "{} failures, e.g.:\n  {}",
        failures.len(),
        shown.join("\n  ")
    );
}

#[test]
fn synthetic_router_round_trips_with_and_without_optional_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bare = synthetic_router();
    bare.embedding_model = None;
    bare.source = None;
    for (i, router) in [synthetic_router(), bare].into_iter().enumerate() {
        let bytes = router.to_bytes().unwrap();
        assert_eq!(
            RouterFile::from_bytes(&bytes, Path::new("x")).unwrap(),
            router
        );
        let path = tmp.path().join(format!("r{i}.safetensors"));
        router.write(&path).unwrap();
        assert_eq!(RouterFile::read(&path).unwrap(), router);
    }
    let mut names = folder_entries(tmp.path());
    names.sort();
    assert_eq!(names, vec!["r0.safetensors", "r1.safetensors"]);
}

#[test]
fn synthetic_file_written_with_the_safetensors_crate_loads_as_the_synthetic_router() {
    // The baseline every corruption case below departs from in exactly one way.
    let label = Path::new("/virtual/baseline/router.safetensors");
    let parsed = RouterFile::from_bytes(&synthetic_bytes(), label).unwrap();
    assert_eq!(parsed, synthetic_router());

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(ROUTER_FILE), synthetic_bytes()).unwrap();
    let router = load_router(tmp.path(), &pool(&synthetic_pool_json())).unwrap();
    assert_eq!(router.dim(), DIM);
    assert_eq!(router.budgets(), &BUDGETS);
    assert_eq!(router.head_count(), MODELS.len() * ROWS);
}

fn folder_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 2. Corrupted tensors and metadata
// ---------------------------------------------------------------------------------------------

/// The error a corrupted file must give.
#[derive(Debug)]
enum Expect {
    MissingTensor(&'static str),
    UnexpectedTensor(&'static str),
    Dtype {
        tensor: &'static str,
        got: &'static str,
    },
    Shape {
        tensor: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    NonFinite {
        tensor: &'static str,
        index: usize,
        value: f32,
    },
    /// A metadata key, and text the message must also mention (e.g. the bad value).
    Metadata {
        key: &'static str,
        mentions: Vec<&'static str>,
    },
}

impl Expect {
    fn check(&self, err: &Error, path: &Path) -> Result<(), String> {
        let same_path = |p: &Path| {
            if p == path {
                Ok(())
            } else {
                Err(format!(
                    "error path {} is not {}",
                    p.display(),
                    path.display()
                ))
            }
        };
        let quoted = |s: &str| format!("`{s}`");
        match (self, err) {
            (Expect::MissingTensor(want), Error::MissingTensor { path: p, tensor })
            | (Expect::UnexpectedTensor(want), Error::UnexpectedTensor { path: p, tensor }) => {
                same_path(p)?;
                if tensor != want {
                    return Err(format!("tensor `{tensor}`, expected `{want}`"));
                }
                check_message(err, path, &[quoted(want)])
            }
            (
                Expect::Dtype { tensor: want, got },
                Error::TensorDtype {
                    path: p,
                    tensor,
                    expected,
                    got: got_err,
                },
            ) => {
                same_path(p)?;
                if tensor != want || got_err != got || *expected != "F32" {
                    return Err(format!("wrong fields in {err:?}"));
                }
                check_message(err, path, &[quoted(want), (*got).to_owned(), "F32".into()])
            }
            (
                Expect::Shape {
                    tensor: want,
                    expected,
                    got,
                },
                Error::TensorShape {
                    path: p,
                    tensor,
                    expected: e,
                    got: g,
                },
            ) => {
                same_path(p)?;
                if tensor != want || e != expected || g != got {
                    return Err(format!("wrong fields in {err:?}"));
                }
                check_message(
                    err,
                    path,
                    &[quoted(want), format!("{got:?}"), format!("{expected:?}")],
                )
            }
            (
                Expect::NonFinite {
                    tensor: want,
                    index,
                    value,
                },
                Error::NonFinite {
                    path: p,
                    tensor,
                    index: i,
                    value: v,
                },
            ) => {
                same_path(p)?;
                let same_value = v.to_bits() == value.to_bits() || (v.is_nan() && value.is_nan());
                if tensor != want || i != index || !same_value {
                    return Err(format!("wrong fields in {err:?}"));
                }
                check_message(err, path, &[quoted(want), format!("value {index} ")])
            }
            (
                Expect::Metadata { key, mentions },
                Error::Metadata {
                    path: p, key: k, ..
                },
            ) => {
                same_path(p)?;
                if k != key {
                    return Err(format!("metadata key `{k}`, expected `{key}`"));
                }
                let mut needles = vec![quoted(key)];
                needles.extend(mentions.iter().map(|m| (*m).to_owned()));
                check_message(err, path, &needles)
            }
            _ => Err(format!("expected {self:?}, got {err:?} (`{err}`)")),
        }
    }
}

struct Case {
    name: &'static str,
    corrupt: Box<dyn Fn(&mut RawFile)>,
    expect: Expect,
}

fn case(name: &'static str, corrupt: impl Fn(&mut RawFile) + 'static, expect: Expect) -> Case {
    Case {
        name,
        corrupt: Box::new(corrupt),
        expect,
    }
}

/// Sets metadata `key` to `value`; the message must name the key and mention each of `mentions`
/// (the bad value or the bad part of it).
fn meta_case(
    name: &'static str,
    key: &'static str,
    value: &'static str,
    mentions: &[&'static str],
) -> Case {
    case(
        name,
        move |f: &mut RawFile| f.set_meta(key, value),
        Expect::Metadata {
            key,
            mentions: mentions.to_vec(),
        },
    )
}

fn missing_meta_case(name: &'static str, key: &'static str) -> Case {
    case(
        name,
        move |f: &mut RawFile| f.remove_meta(key),
        Expect::Metadata {
            key,
            mentions: vec!["missing"],
        },
    )
}

fn tensor_cases() -> Vec<Case> {
    let coef_values = |n: usize| (0..n).map(|i| i as f64 * 0.5).collect::<Vec<_>>();
    vec![
        case(
            "missing intercept of the second model",
            |f| f.remove_tensor("models/beta/intercept"),
            Expect::MissingTensor("models/beta/intercept"),
        ),
        case(
            "missing coef of the first model",
            |f| f.remove_tensor("models/alpha/coef"),
            Expect::MissingTensor("models/alpha/coef"),
        ),
        case(
            "extra tensor of a model not listed in the metadata",
            |f| f.add_tensor("models/gamma/coef", RawTensor::zeros_f32(vec![ROWS, DIM])),
            Expect::UnexpectedTensor("models/gamma/coef"),
        ),
        case(
            "extra tensor outside the models/ namespace",
            |f| f.add_tensor("embedding/scale", RawTensor::zeros_f32(vec![DIM])),
            Expect::UnexpectedTensor("embedding/scale"),
        ),
        case(
            "extra third tensor of a listed model",
            |f| f.add_tensor("models/alpha/bias", RawTensor::zeros_f32(vec![ROWS])),
            Expect::UnexpectedTensor("models/alpha/bias"),
        ),
        case(
            "coef stored as F64",
            move |f| {
                f.replace_tensor(
                    "models/alpha/coef",
                    RawTensor::f64(vec![ROWS, DIM], &coef_values(ROWS * DIM)),
                )
            },
            Expect::Dtype {
                tensor: "models/alpha/coef",
                got: "F64",
            },
        ),
        case(
            "intercept stored as F16",
            |f| {
                f.replace_tensor(
                    "models/beta/intercept",
                    RawTensor {
                        dtype: Dtype::F16,
                        shape: vec![ROWS],
                        data: vec![0; ROWS * 2],
                    },
                )
            },
            Expect::Dtype {
                tensor: "models/beta/intercept",
                got: "F16",
            },
        ),
        case(
            "intercept stored as I32",
            |f| {
                f.replace_tensor(
                    "models/alpha/intercept",
                    RawTensor {
                        dtype: Dtype::I32,
                        shape: vec![ROWS],
                        data: vec![0; ROWS * 4],
                    },
                )
            },
            Expect::Dtype {
                tensor: "models/alpha/intercept",
                got: "I32",
            },
        ),
        case(
            "coef with one row too few ([B+1, dim])",
            |f| {
                f.replace_tensor(
                    "models/beta/coef",
                    RawTensor::zeros_f32(vec![ROWS - 1, DIM]),
                )
            },
            Expect::Shape {
                tensor: "models/beta/coef",
                expected: vec![ROWS, DIM],
                got: vec![ROWS - 1, DIM],
            },
        ),
        case(
            "coef one column too wide ([B+2, dim+1])",
            |f| {
                f.replace_tensor(
                    "models/alpha/coef",
                    RawTensor::zeros_f32(vec![ROWS, DIM + 1]),
                )
            },
            Expect::Shape {
                tensor: "models/alpha/coef",
                expected: vec![ROWS, DIM],
                got: vec![ROWS, DIM + 1],
            },
        ),
        case(
            "coef with the right size but another shape ([8, 2])",
            |f| {
                f.replace_tensor(
                    "models/alpha/coef",
                    RawTensor::zeros_f32(vec![DIM * ROWS / 2, 2]),
                )
            },
            Expect::Shape {
                tensor: "models/alpha/coef",
                expected: vec![ROWS, DIM],
                got: vec![DIM * ROWS / 2, 2],
            },
        ),
        case(
            "coef flattened to one dimension",
            |f| f.replace_tensor("models/alpha/coef", RawTensor::zeros_f32(vec![ROWS * DIM])),
            Expect::Shape {
                tensor: "models/alpha/coef",
                expected: vec![ROWS, DIM],
                got: vec![ROWS * DIM],
            },
        ),
        case(
            "intercept with one row too few",
            |f| {
                f.replace_tensor(
                    "models/beta/intercept",
                    RawTensor::zeros_f32(vec![ROWS - 1]),
                )
            },
            Expect::Shape {
                tensor: "models/beta/intercept",
                expected: vec![ROWS],
                got: vec![ROWS - 1],
            },
        ),
        case(
            "intercept as a column ([B+2, 1])",
            |f| f.replace_tensor("models/beta/intercept", RawTensor::zeros_f32(vec![ROWS, 1])),
            Expect::Shape {
                tensor: "models/beta/intercept",
                expected: vec![ROWS],
                got: vec![ROWS, 1],
            },
        ),
        case(
            "NaN in coef",
            |f| f.poke_f32("models/beta/coef", 5, f32::NAN),
            Expect::NonFinite {
                tensor: "models/beta/coef",
                index: 5,
                value: f32::NAN,
            },
        ),
        case(
            "+inf in coef",
            |f| f.poke_f32("models/alpha/coef", 9, f32::INFINITY),
            Expect::NonFinite {
                tensor: "models/alpha/coef",
                index: 9,
                value: f32::INFINITY,
            },
        ),
        case(
            "-inf as the last coef value",
            |f| f.poke_f32("models/alpha/coef", ROWS * DIM - 1, f32::NEG_INFINITY),
            Expect::NonFinite {
                tensor: "models/alpha/coef",
                index: ROWS * DIM - 1,
                value: f32::NEG_INFINITY,
            },
        ),
        case(
            "NaN as the first intercept",
            |f| f.poke_f32("models/beta/intercept", 0, f32::NAN),
            Expect::NonFinite {
                tensor: "models/beta/intercept",
                index: 0,
                value: f32::NAN,
            },
        ),
        case(
            "+inf in intercept",
            |f| f.poke_f32("models/alpha/intercept", 2, f32::INFINITY),
            Expect::NonFinite {
                tensor: "models/alpha/intercept",
                index: 2,
                value: f32::INFINITY,
            },
        ),
    ]
}

fn metadata_cases() -> Vec<Case> {
    vec![
        missing_meta_case("no `format`", "format"),
        missing_meta_case("no `format_version`", "format_version"),
        missing_meta_case("no `embedding_dim`", "embedding_dim"),
        missing_meta_case("no `budgets`", "budgets"),
        missing_meta_case("no `models`", "models"),
        case(
            "no metadata at all",
            |f| f.metadata = None,
            Expect::Metadata {
                key: "format",
                mentions: vec!["missing"],
            },
        ),
        meta_case("format of another program", "format", "gguf", &["`gguf`"]),
        meta_case(
            "format with another case",
            "format",
            "R2-Router",
            &["`R2-Router`"],
        ),
        meta_case("format_version 2", "format_version", "2", &["`2`"]),
        meta_case("format_version 0", "format_version", "0", &["`0`"]),
        meta_case("format_version 1.0", "format_version", "1.0", &["`1.0`"]),
        meta_case("embedding_dim 0", "embedding_dim", "0", &["`0`"]),
        meta_case("embedding_dim abc", "embedding_dim", "abc", &["`abc`"]),
        meta_case("embedding_dim negative", "embedding_dim", "-4", &["`-4`"]),
        meta_case(
            "embedding_dim fractional",
            "embedding_dim",
            "4.0",
            &["`4.0`"],
        ),
        meta_case(
            "budgets descending",
            "budgets",
            "20,10",
            &["`20,10`", "ascending"],
        ),
        meta_case(
            "budgets repeating a budget",
            "budgets",
            "10,10",
            &["`10,10`", "ascending"],
        ),
        meta_case("budgets with a non-number", "budgets", "10,x", &["`x`"]),
        meta_case("budgets with a zero budget", "budgets", "0,10", &["`0`"]),
        meta_case("budgets negative", "budgets", "-10,20", &["`-10`"]),
        meta_case("budgets as a JSON array", "budgets", "[10,20]", &["`[10`"]),
        meta_case(
            "models not JSON",
            "models",
            "alpha,beta",
            &["not a JSON array"],
        ),
        meta_case(
            "models a JSON object",
            "models",
            r#"{"alpha":1}"#,
            &["not a JSON array"],
        ),
        meta_case(
            "models a JSON string",
            "models",
            r#""alpha""#,
            &["not a JSON array"],
        ),
        meta_case(
            "models a list of numbers",
            "models",
            "[1,2]",
            &["not a JSON array"],
        ),
        meta_case(
            "models listing a name twice",
            "models",
            r#"["alpha","beta","alpha"]"#,
            &["`alpha`", "twice"],
        ),
        case(
            "models an empty list",
            |f| f.set_meta("models", "[]"),
            Expect::Metadata {
                key: "models",
                mentions: vec!["no model"],
            },
        ),
    ]
}

/// What a loader did: panicked (`Err`), or returned.
type Outcome = Result<Result<(), Error>, String>;

/// Runs every case through `from_bytes`, `RouterFile::read` and `load_router`.
fn run_cases(what: &str, cases: Vec<Case>) {
    let tmp = tempfile::tempdir().unwrap();
    let pool = pool(&synthetic_pool_json());
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut file = RawFile::of(&synthetic_router());
        (case.corrupt)(&mut file);
        let bytes = file.serialize();

        let label = PathBuf::from(format!("/virtual/case-{i}/{ROUTER_FILE}"));
        let on_disk = tmp.path().join(format!("case-{i}.safetensors"));
        std::fs::write(&on_disk, &bytes).unwrap();

        let results: [(&str, &Path, Outcome); 3] = [
            (
                "from_bytes",
                &label,
                no_panic(case.name, || {
                    RouterFile::from_bytes(&bytes, &label).map(|_| ())
                }),
            ),
            (
                "RouterFile::read",
                &on_disk,
                no_panic(case.name, || RouterFile::read(&on_disk).map(|_| ())),
            ),
            (
                "load_router",
                &on_disk,
                no_panic(case.name, || load_router(&on_disk, &pool).map(|_| ())),
            ),
        ];
        for (entry, path, result) in results {
            let outcome = match result {
                Err(panic) => Err(panic),
                Ok(Ok(())) => Err(format!("accepted; expected {:?}", case.expect)),
                Ok(Err(err)) => case.expect.check(&err, path),
            };
            if let Err(problem) = outcome {
                failures.push(format!("{} ({entry}): {problem}", case.name));
            }
        }
    }
    assert_no_failures(what, &failures);
}

#[test]
fn every_corrupted_tensor_is_rejected_with_the_tensor_name_and_the_file() {
    run_cases("corrupted tensor", tensor_cases());
}

#[test]
fn every_bad_metadata_value_is_rejected_with_the_key_and_the_file() {
    run_cases("bad metadata", metadata_cases());
}

#[test]
fn unknown_extra_metadata_keys_are_ignored() {
    let mut file = RawFile::of(&synthetic_router());
    file.set_meta("trained_on", "2025-10-01");
    let parsed = RouterFile::from_bytes(&file.serialize(), Path::new("x")).unwrap();
    assert_eq!(parsed, synthetic_router());
}

#[test]
fn format_constants_are_the_documented_ones() {
    assert_eq!(FORMAT, "r2-router");
    assert_eq!(FORMAT_VERSION, "1");
    assert_eq!(ROUTER_FILE, "router.safetensors");
}

// ---------------------------------------------------------------------------------------------
// 3. Damaged containers
// ---------------------------------------------------------------------------------------------

/// `from_bytes` of `bytes` must be an error and must not panic.
fn expect_rejected(bytes: &[u8], label: &Path, what: &str) -> Result<(), String> {
    match no_panic(what, || RouterFile::from_bytes(bytes, label))? {
        Ok(_) => Err(format!("{what}: accepted")),
        Err(err) => check_message(&err, label, &[]).map_err(|e| format!("{what}: {e}")),
    }
}

#[test]
fn every_truncation_of_a_small_router_file_is_an_error_not_a_panic() {
    let bytes = synthetic_bytes();
    let label = Path::new("/virtual/truncated/router.safetensors");
    let mut failures = Vec::new();
    let mut container_errors = 0;
    for len in 0..bytes.len() {
        if let Err(e) = expect_rejected(&bytes[..len], label, &format!("first {len} bytes")) {
            failures.push(e);
        }
        if let Ok(Err(Error::Safetensors { .. })) =
            no_panic("", || RouterFile::from_bytes(&bytes[..len], label))
        {
            container_errors += 1;
        }
    }
    assert_no_failures("truncation", &failures);
    // Every truncation damages the container itself (the data section is sized by the header).
    assert_eq!(container_errors, bytes.len());
}

#[test]
fn sampled_truncations_of_the_converted_router_are_errors_not_panics() {
    let path = r2_fixtures::converted_router_dir().join(ROUTER_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let mut failures = Vec::new();
    let samples = 200;
    for s in 0..samples {
        let len = bytes.len() * s / samples;
        if let Err(e) = expect_rejected(&bytes[..len], &path, &format!("first {len} bytes")) {
            failures.push(e);
        }
    }
    // The last few lengths too: one byte short is the likeliest accident.
    for len in bytes.len().saturating_sub(8)..bytes.len() {
        if let Err(e) = expect_rejected(&bytes[..len], &path, &format!("first {len} bytes")) {
            failures.push(e);
        }
    }
    assert_no_failures("converted-router truncation", &failures);
}

#[test]
fn random_bytes_and_an_empty_file_are_rejected_as_damaged_containers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut inputs: Vec<(String, Vec<u8>)> = vec![("empty file".into(), Vec::new())];
    for n in [1, 7, 8, 9, 64, 1000, 4096] {
        inputs.push((format!("{n} random bytes"), rng.bytes(n)));
    }
    // A plausible small header length followed by garbage.
    let mut plausible = 40u64.to_le_bytes().to_vec();
    plausible.extend(rng.bytes(200));
    inputs.push(("small header length then random bytes".into(), plausible));
    // A header that is valid JSON but not a safetensors header.
    let header = br#"{"hello": "world"}"#;
    let mut json = (header.len() as u64).to_le_bytes().to_vec();
    json.extend_from_slice(header);
    inputs.push(("JSON header of the wrong shape".into(), json));
    // A text file.
    inputs.push((
        "a pool config in place of a router".into(),
        synthetic_pool_json().into_bytes(),
    ));

    let mut failures = Vec::new();
    for (i, (what, bytes)) in inputs.iter().enumerate() {
        let path = tmp.path().join(format!("damaged-{i}")).join(ROUTER_FILE);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        for (entry, result) in [
            (
                "from_bytes",
                no_panic(what, || RouterFile::from_bytes(bytes, &path)),
            ),
            (
                "RouterFile::read",
                no_panic(what, || RouterFile::read(&path)),
            ),
        ] {
            match result {
                Err(panic) => failures.push(panic),
                Ok(Ok(_)) => failures.push(format!("{what} ({entry}): accepted")),
                Ok(Err(err @ Error::Safetensors { .. })) => {
                    if let Err(e) = check_message(&err, &path, &["convert".into()]) {
                        failures.push(format!("{what} ({entry}): {e}"));
                    }
                }
                Ok(Err(err)) => failures.push(format!(
                    "{what} ({entry}): expected Error::Safetensors, got {err:?}"
                )),
            }
        }
    }
    assert_no_failures("damaged container", &failures);
}

#[test]
fn single_byte_corruptions_of_a_small_router_file_never_panic() {
    // Every byte of the file replaced by a few values: the result may be accepted (a changed
    // weight) or rejected, but never a panic, and an accepted file holds only finite weights.
    let bytes = synthetic_bytes();
    let label = Path::new("/virtual/flipped/router.safetensors");
    let mut failures = Vec::new();
    for at in 0..bytes.len() {
        for value in [0x00, 0xff, b'"', b'}', bytes[at] ^ 0x01] {
            let mut damaged = bytes.clone();
            damaged[at] = value;
            let what = format!("byte {at} set to {value:#04x}");
            match no_panic(&what, || RouterFile::from_bytes(&damaged, label)) {
                Err(panic) => failures.push(panic),
                Ok(Ok(router)) => {
                    let finite = router
                        .models
                        .iter()
                        .all(|m| m.coef.iter().chain(&m.intercept).all(|v| v.is_finite()));
                    if !finite {
                        failures.push(format!("{what}: accepted non-finite weights"));
                    }
                }
                Ok(Err(err)) => {
                    if let Err(e) = check_message(&err, label, &[]) {
                        failures.push(format!("{what}: {e}"));
                    }
                }
            }
        }
    }
    assert_no_failures("single-byte corruption", &failures);
}

// ---------------------------------------------------------------------------------------------
// 4. Missing file
// ---------------------------------------------------------------------------------------------

/// The message of a missing router names what is missing and the two layouts r2 reads, and (as
/// every library error) no command-line flag or command: the CLI adds those.
fn router_not_found_mentions(dir: &Path) -> Vec<String> {
    vec![
        format!("{} holds no {ROUTER_FILE}", dir.display()),
        format!("a folder holding {ROUTER_FILE}"),
        "an upstream R2-Router folder holding config.json and checkpoints/".into(),
    ]
}

fn assert_no_cli_hints(err: &Error) {
    let message = err.to_string();
    for hint in ["--", "xtask", "$R2_", "cargo "] {
        assert!(!message.contains(hint), "{message:?} names {hint:?}");
    }
}

#[test]
fn load_router_on_an_empty_folder_names_the_missing_file_and_the_layouts_r2_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_router(tmp.path(), &pool(&synthetic_pool_json())).unwrap_err();
    let expected_path = tmp.path().join(ROUTER_FILE);
    match &err {
        Error::RouterNotFound { path, dir } => {
            assert_eq!(path, &expected_path);
            assert_eq!(dir, tmp.path());
        }
        other => panic!("expected RouterNotFound, got {other:?}"),
    }
    check_message(&err, &expected_path, &router_not_found_mentions(tmp.path())).unwrap();
    assert_no_cli_hints(&err);
}

#[test]
fn load_router_on_a_missing_folder_and_read_of_a_missing_file_are_router_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let missing_dir = tmp.path().join("no-such-folder");
    let err = load_router(&missing_dir, &pool(&synthetic_pool_json())).unwrap_err();
    assert!(
        matches!(&err, Error::RouterNotFound { path, .. } if *path == missing_dir.join(ROUTER_FILE)),
        "{err:?}"
    );
    check_message(
        &err,
        &missing_dir.join(ROUTER_FILE),
        &router_not_found_mentions(&missing_dir),
    )
    .unwrap();
    assert_no_cli_hints(&err);

    let missing_file = tmp.path().join("other.safetensors");
    let err = RouterFile::read(&missing_file).unwrap_err();
    assert!(
        matches!(&err, Error::RouterNotFound { path, dir } if *path == missing_file && dir == tmp.path()),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Pool / router mismatch
// ---------------------------------------------------------------------------------------------

fn upstream_model_names() -> Vec<String> {
    r2_fixtures::upstream_pool()
        .models
        .iter()
        .map(|m| m.name.clone())
        .collect()
}

#[test]
fn pool_naming_a_model_the_router_lacks_lists_the_available_models() {
    let dir = r2_fixtures::converted_router_dir();
    let json = pool_json(
        1024,
        0.5,
        &[("Qwen3-0.6B", 0.02, 0.02), ("GPT-9-Ultra", 1.0, 1.0)],
    );
    let err = load_router(&dir, &pool(&json)).unwrap_err();
    let mut all = upstream_model_names();
    all.sort();
    match &err {
        Error::ModelNotInRouter {
            path,
            model,
            available,
        } => {
            assert_eq!(path, &dir.join(ROUTER_FILE));
            assert_eq!(model, "GPT-9-Ultra");
            assert_eq!(available, &all);
        }
        other => panic!("expected ModelNotInRouter, got {other:?}"),
    }
    let mut needles = vec!["`GPT-9-Ultra`".to_owned()];
    needles.extend(all);
    check_message(&err, &dir.join(ROUTER_FILE), &needles).unwrap();
}

#[test]
fn pool_with_another_embedding_dim_is_a_dimension_mismatch() {
    let dir = r2_fixtures::converted_router_dir();
    let json = pool_json(512, 0.5, &[("Qwen3-0.6B", 0.02, 0.02)]);
    let err = load_router(&dir, &pool(&json)).unwrap_err();
    match &err {
        Error::DimensionMismatch {
            path,
            router,
            config,
        } => {
            assert_eq!(path, &dir.join(ROUTER_FILE));
            assert_eq!((*router, *config), (1024, 512));
        }
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
    check_message(&err, &dir.join(ROUTER_FILE), &["1024".into(), "512".into()]).unwrap();
}

#[test]
fn subset_pool_in_another_order_gets_its_order_its_prices_and_the_same_head_outputs() {
    let full = r2_fixtures::upstream_router();
    let subset = [
        ("gemma-3-4b-it", 0.5, 0.75),
        ("Qwen3-235B-A22B-Instruct-2507", 3.0, 0.0),
        ("GLM-4.5-Air", 0.125, 9.5),
    ];
    let router = load_router(
        &r2_fixtures::converted_router_dir(),
        &pool(&pool_json(1024, 0.3, &subset)),
    )
    .unwrap();

    let expected: Vec<r2_core::ModelInfo> = subset
        .iter()
        .map(|(name, input, output)| r2_core::ModelInfo {
            name: (*name).to_owned(),
            input_price_per_million: *input,
            output_price_per_million: *output,
        })
        .collect();
    assert_eq!(router.models(), expected.as_slice());
    assert_eq!(router.dim(), full.dim());
    assert_eq!(router.budgets(), full.budgets());
    let per_model = full.budgets().len() + 2;
    assert_eq!(router.head_count(), subset.len() * per_model);

    let input = &r2_fixtures::golden_inputs()[0];
    let ours = router.head_outputs(&input.embedding).unwrap();
    let theirs = full.head_outputs(&input.embedding).unwrap();
    for (m, (name, _, _)) in subset.iter().enumerate() {
        let f = full.model_index(name).unwrap();
        let ours = &ours[m * per_model..(m + 1) * per_model];
        let theirs = &theirs[f * per_model..(f + 1) * per_model];
        assert_eq!(ours, theirs, "head outputs of {name}");
        for k in 0..per_model {
            assert_eq!(
                router.head_weights(m * per_model + k),
                full.head_weights(f * per_model + k),
                "weights of head {k} of {name}"
            );
        }
    }
}

/// A pool (built in code; `PoolConfig`'s fields are public) that lists one model twice is
/// rejected as a duplicate, not reported as missing from the router.
#[test]
fn pool_listing_a_model_twice_is_rejected_as_a_duplicate_not_as_missing() {
    let mut pool = pool(&synthetic_pool_json());
    let again = pool.models[0].clone();
    pool.models.push(again);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(ROUTER_FILE), synthetic_bytes()).unwrap();
    let err = load_router(tmp.path(), &pool).unwrap_err();
    assert!(
        !matches!(err, Error::ModelNotInRouter { .. }),
        "a duplicate is reported as missing: {err}"
    );
    check_message(&err, &tmp.path().join(ROUTER_FILE), &["alpha".into()]).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 6. Pool config errors
// ---------------------------------------------------------------------------------------------

/// A valid pool config with one line per top-level key, to edit one line at a time.
const VALID_POOL: &str = r#"{
  "embedding_model": "test/embedder",
  "embedding_dim": 4,
  "default_lambda": 0.5,
  "models": {
    "zeta": {"openrouter_id": "z/zeta", "input_price_per_million": 1, "output_price_per_million": 2},
    "alpha": {"openrouter_id": "a/alpha", "input_price_per_million": 0.5, "output_price_per_million": 0.25}
  }
}"#;

#[test]
fn valid_pool_used_by_the_config_cases_parses() {
    let pool = pool(VALID_POOL);
    assert_eq!(pool.models.len(), 2);
}

#[test]
fn pool_config_syntax_error_reports_line_and_column() {
    // A trailing comma after the last field on line 3.
    let text = "{\n  \"embedding_model\": \"m\",\n  \"embedding_dim\": 4,\n}\n";
    let source = Path::new("/virtual/pools/trailing-comma.json");
    let err = PoolConfig::from_json(text, source).unwrap_err();
    match &err {
        Error::Json {
            path,
            line,
            column,
            message,
        } => {
            assert_eq!(path, source);
            // serde_json reports the `}` that follows the trailing comma: line 4, column 1.
            assert_eq!((*line, *column), (4, 1), "{err}");
            assert!(message.contains("trailing comma"), "{message}");
            assert!(
                !message.contains(" at line "),
                "position said twice: {message}"
            );
        }
        other => panic!("expected Error::Json, got {other:?}"),
    }
    check_message(&err, source, &["line 4, column 1".into()]).unwrap();

    // A missing comma on line 3, column 3: the error is at the next key.
    let text = "{\n  \"embedding_model\": \"m\"\n  \"embedding_dim\": 4\n}\n";
    let err = PoolConfig::from_json(text, source).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Json {
                line: 3,
                column: 3,
                ..
            }
        ),
        "{err:?}"
    );

    // The same through from_file names the file on disk.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r2.json");
    std::fs::write(
        &path,
        "{\n  \"embedding_model\": \"m\",\n  \"embedding_dim\": 4,\n}\n",
    )
    .unwrap();
    let err = PoolConfig::from_file(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Json { path: p, line: 4, column: 1, .. } if *p == path),
        "{err:?}"
    );
    check_message(&err, &path, &[]).unwrap();
}

#[test]
fn pool_config_from_a_missing_file_is_an_io_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("absent.json");
    let err = PoolConfig::from_file(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path: p, source, .. } if *p == path && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    check_message(&err, &path, &[]).unwrap();
}

enum PoolExpect {
    /// `Error::Json` whose message mentions these.
    Json(&'static [&'static str]),
    /// `Error::InvalidConfig` whose message mentions these.
    Invalid(&'static [&'static str]),
}

#[test]
fn every_invalid_pool_config_is_rejected_with_the_offending_key() {
    let zeta_line = r#""zeta": {"openrouter_id": "z/zeta", "input_price_per_million": 1, "output_price_per_million": 2},"#;
    let models_block = VALID_POOL
        .split_once("  \"models\"")
        .map(|(_, rest)| format!("  \"models\"{rest}"))
        .unwrap();
    let edit = |from: &str, to: &str| {
        assert!(VALID_POOL.contains(from), "test edit `{from}` not found");
        VALID_POOL.replacen(from, to, 1)
    };
    let cases: Vec<(&str, String, PoolExpect)> = vec![
        (
            "missing `models`",
            VALID_POOL.replace(&format!(",\n{models_block}"), "\n}"),
            PoolExpect::Json(&["missing field `models`"]),
        ),
        (
            "missing `embedding_dim`",
            edit("  \"embedding_dim\": 4,\n", ""),
            PoolExpect::Json(&["missing field `embedding_dim`"]),
        ),
        (
            "`models` an array",
            VALID_POOL.replace(&models_block, "  \"models\": [\"zeta\"]\n}"),
            PoolExpect::Json(&["invalid type"]),
        ),
        (
            "empty `models`",
            VALID_POOL.replace(&models_block, "  \"models\": {}\n}"),
            PoolExpect::Invalid(&["`models`"]),
        ),
        (
            "negative input price",
            edit(
                "\"input_price_per_million\": 1,",
                "\"input_price_per_million\": -1,",
            ),
            PoolExpect::Invalid(&["`zeta`", "input_price_per_million", "-1"]),
        ),
        (
            "negative output price",
            edit(
                "\"output_price_per_million\": 0.25}",
                "\"output_price_per_million\": -0.01}",
            ),
            PoolExpect::Invalid(&["`alpha`", "output_price_per_million", "-0.01"]),
        ),
        (
            "model without openrouter_id",
            edit(
                zeta_line,
                r#""zeta": {"input_price_per_million": 1, "output_price_per_million": 2},"#,
            ),
            PoolExpect::Json(&["`zeta`", "openrouter_id"]),
        ),
        (
            "model that is not an object",
            edit(zeta_line, r#""zeta": "z/zeta","#),
            PoolExpect::Json(&["`zeta`"]),
        ),
        (
            "default_lambda 1.5",
            edit("\"default_lambda\": 0.5", "\"default_lambda\": 1.5"),
            PoolExpect::Invalid(&["default_lambda", "1.5"]),
        ),
        (
            "default_lambda negative",
            edit("\"default_lambda\": 0.5", "\"default_lambda\": -0.1"),
            PoolExpect::Invalid(&["default_lambda", "-0.1"]),
        ),
        (
            "embedding_dim 0",
            edit("\"embedding_dim\": 4", "\"embedding_dim\": 0"),
            PoolExpect::Invalid(&["embedding_dim"]),
        ),
        (
            "embedding_dim negative",
            edit("\"embedding_dim\": 4", "\"embedding_dim\": -4"),
            PoolExpect::Json(&["-4"]),
        ),
        (
            "embedding_dim a string",
            edit("\"embedding_dim\": 4", "\"embedding_dim\": \"1024\""),
            PoolExpect::Json(&["invalid type"]),
        ),
        ("empty text", String::new(), PoolExpect::Json(&["EOF"])),
    ];

    let source = Path::new("/virtual/pools/r2.json");
    let mut failures = Vec::new();
    for (name, text, expect) in &cases {
        let result = match no_panic(name, || PoolConfig::from_json(text, source)) {
            Err(panic) => {
                failures.push(panic);
                continue;
            }
            Ok(result) => result,
        };
        let err = match result {
            Ok(_) => {
                failures.push(format!("{name}: accepted"));
                continue;
            }
            Err(err) => err,
        };
        let mentions = match (expect, &err) {
            (PoolExpect::Json(m), Error::Json { path, line, .. }) if path == source => {
                if *line == 0 {
                    failures.push(format!("{name}: Json error without a line: {err:?}"));
                }
                m
            }
            (PoolExpect::Invalid(m), Error::InvalidConfig { path, .. }) if path == source => m,
            _ => {
                let want = match expect {
                    PoolExpect::Json(_) => "Error::Json",
                    PoolExpect::Invalid(_) => "Error::InvalidConfig",
                };
                failures.push(format!(
                    "{name}: expected {want} at {}, got {err:?}",
                    source.display()
                ));
                continue;
            }
        };
        let needles: Vec<String> = mentions.iter().map(|m| (*m).to_owned()).collect();
        if let Err(e) = check_message(&err, source, &needles) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert_no_failures("invalid pool config", &failures);
}

/// A price of the wrong JSON type is rejected with a message naming the model, the value and
/// the line and column of the value.
#[test]
fn pool_config_price_of_the_wrong_type_names_the_model_and_the_key() {
    let text = VALID_POOL.replacen(
        "\"input_price_per_million\": 1,",
        "\"input_price_per_million\": \"abc\",",
        1,
    );
    assert_ne!(text, VALID_POOL);
    let source = Path::new("/virtual/pools/r2.json");
    let err = PoolConfig::from_json(&text, source).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { path, .. } | Error::Json { path, .. } if path == source),
        "{err:?}"
    );
    // The key itself is found by its line and column, which point at the bad value.
    check_message(
        &err,
        source,
        &["`zeta`".into(), "abc".into(), "line 6, column 72".into()],
    )
    .unwrap();
}

#[test]
fn pool_config_keeps_file_order_ignores_unknown_keys_and_defaults_available_to_true() {
    let text = r#"{
  "router_name": "R2-Router",
  "note": "top-level notes are ignored",
  "token_limits": [10, 20, "unlimited"],
  "embedding_model": "test/embedder",
  "embedding_dim": 4,
  "default_lambda": 0,
  "models": {
    "zeta": {"openrouter_id": "z/zeta", "input_price_per_million": 1, "output_price_per_million": 2, "note": "cheap"},
    "alpha": {"openrouter_id": "a/alpha", "input_price_per_million": 0, "output_price_per_million": 0.25, "available": false},
    "Mid": {"openrouter_id": "m/mid", "input_price_per_million": 0.5, "output_price_per_million": 0.5, "checkpoint_dir": "Mid_dir"}
  }
}"#;
    let pool = PoolConfig::from_json(text, Path::new("p.json")).unwrap();
    let names: Vec<&str> = pool.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "Mid"]);
    let available: Vec<bool> = pool.models.iter().map(|m| m.available).collect();
    assert_eq!(available, [true, false, true]);
    assert_eq!(pool.source, Path::new("p.json"));
    assert_eq!(pool.embedding_dim, 4);
    assert_eq!(pool.default_lambda, 0.0);
    assert_eq!(pool.models[0].openrouter_id, "z/zeta");
    assert_eq!(pool.models[1].input_price_per_million, 0.0);
    assert_eq!(pool.models[2].checkpoint_dir.as_deref(), Some("Mid_dir"));
    assert_eq!(pool.models[0].checkpoint_dir, None);
    assert_eq!(
        pool.model("alpha").map(|m| m.output_price_per_million),
        Some(0.25)
    );
    assert!(pool.model("beta").is_none());

    // λ at both ends of [0, 1] is valid.
    for lambda in ["0", "1", "0.99999"] {
        let text = VALID_POOL.replace(
            "\"default_lambda\": 0.5",
            &format!("\"default_lambda\": {lambda}"),
        );
        assert!(
            PoolConfig::from_json(&text, Path::new("p.json")).is_ok(),
            "λ = {lambda}"
        );
    }
}

#[test]
fn upstream_pool_config_keeps_the_upstream_model_order() {
    let pool = r2_fixtures::upstream_pool();
    let names = upstream_model_names();
    assert_eq!(names.len(), 11);
    assert_eq!(names[0], "Qwen3-235B-A22B-Instruct-2507");
    assert_eq!(names[1], "GLM-4.5-Air");
    assert_eq!(names[10], "gemma-3-270m-it");
    let mut sorted = names.clone();
    sorted.sort();
    assert_ne!(names, sorted, "models must not come back alphabetical");
    assert!(!pool.model("Qwen2.5-Math-7B-Instruct").unwrap().available);
    assert!(pool.model("GLM-4.5-Air").unwrap().available);
    assert_eq!(pool.embedding_dim, 1024);

    // The converted router keeps the same order, and loading with that pool follows it.
    let file = RouterFile::read(&r2_fixtures::converted_router_dir().join(ROUTER_FILE)).unwrap();
    let file_names: Vec<&str> = file.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(file_names, names);
    let router_names: Vec<String> = r2_fixtures::upstream_router()
        .models()
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(router_names, names);
}

// ---------------------------------------------------------------------------------------------
// 7. Converting a damaged upstream folder
// ---------------------------------------------------------------------------------------------

/// A private copy of the upstream folder (never write inside `shared/`).
fn upstream_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("upstream");
    r2_fixtures::copy_dir(&r2_fixtures::upstream_dir(), &copy);
    (tmp, copy)
}

/// After a failed conversion the out folder holds no router and no temporary file.
fn assert_nothing_written(out: &Path) {
    assert!(!out.join(ROUTER_FILE).exists(), "a router was written");
    if out.exists() {
        let left = folder_entries(out);
        assert!(left.is_empty(), "files left in the out folder: {left:?}");
    }
}

#[test]
fn convert_upstream_with_a_deleted_joblib_file_names_it_and_writes_nothing() {
    for (model_dir, file) in [
        (
            "GLM-4.5-Air_ridge_alpha10.0",
            "unlimited_token_predictor.joblib",
        ),
        (
            "Qwen3-235B-A22B-Instruct-2507_ridge_alpha10.0",
            "limited_score_predictors.joblib",
        ),
        (
            "gemma-3-270m-it_ridge_alpha10.0",
            "unlimited_score_predictor.joblib",
        ),
    ] {
        let (tmp, copy) = upstream_copy();
        let deleted = copy.join("checkpoints").join(model_dir).join(file);
        std::fs::remove_file(&deleted).unwrap();
        let out = tmp.path().join("out");
        let err = convert_upstream(&copy, &out).unwrap_err();
        match &err {
            Error::Joblib(j) => {
                assert_eq!(j.path, deleted);
                assert!(
                    matches!(&j.kind, JoblibErrorKind::Io(e) if e.kind() == std::io::ErrorKind::NotFound),
                    "{j:?}"
                );
            }
            other => panic!("expected Error::Joblib, got {other:?}"),
        }
        check_message(&err, &deleted, &[]).unwrap();
        assert_nothing_written(&out);
    }
}

/// Upstream's `R2Router.from_pretrained` skips a model of config.json whose
/// `limited_score_predictors.joblib` does not exist; so does the converter (an edited config.json
/// no longer matches SHA256SUMS, which is therefore removed first).
#[test]
fn convert_upstream_skips_a_model_whose_checkpoint_folder_is_missing() {
    let (tmp, copy) = upstream_copy();
    // A model that config.json names but whose folder (the default `<name>_ridge_alpha10.0`) is
    // absent, placed after two real models.
    let config_path = copy.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let models = config["models"].as_object_mut().unwrap();
    let kept: Vec<(String, serde_json::Value)> =
        models.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    models.clear();
    for (i, (k, v)) in kept.into_iter().enumerate() {
        if i == 2 {
            models.insert(
                "Ghost-1B".into(),
                serde_json::json!({
                    "openrouter_id": "ghost/ghost-1b",
                    "input_price_per_million": 0.1,
                    "output_price_per_million": 0.1
                }),
            );
        }
        models.insert(k, v);
    }
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();

    // With the folder's SHA256SUMS still in place the edited config.json is refused.
    let out = tmp.path().join("out");
    let err = convert_upstream(&copy, &out).unwrap_err();
    assert!(
        matches!(&err, Error::Sha256Mismatch { path, .. } if *path == config_path),
        "{err:?}"
    );
    check_message(&err, &config_path, &["SHA256SUMS".into()]).unwrap();
    assert_nothing_written(&out);

    std::fs::remove_file(copy.join("SHA256SUMS")).unwrap();
    let written = convert_upstream(&copy, &out).unwrap();
    let names: Vec<&str> = written.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, upstream_model_names(), "Ghost-1B is skipped");
    assert_eq!(RouterFile::read(&out.join(ROUTER_FILE)).unwrap(), written);

    // The same with an explicit checkpoint_dir that does not exist, and an out folder that
    // already holds an unrelated file (which must stay untouched).
    let models = config["models"].as_object_mut().unwrap();
    models.shift_remove("Ghost-1B");
    models["GLM-4.5-Air"]["checkpoint_dir"] = "GLM-4.5-Air_moved".into();
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let out = tmp.path().join("out2");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("README"), "keep").unwrap();
    let written = convert_upstream(&copy, &out).unwrap();
    let names: Vec<String> = written.models.iter().map(|m| m.name.clone()).collect();
    let mut expected = upstream_model_names();
    expected.retain(|m| m != "GLM-4.5-Air");
    assert_eq!(names, expected);
    let mut entries = folder_entries(&out);
    entries.sort();
    assert_eq!(entries, vec!["README".to_owned(), ROUTER_FILE.to_owned()]);
    assert_eq!(std::fs::read_to_string(out.join("README")).unwrap(), "keep");
}

#[test]
fn a_pool_config_with_a_byte_order_mark_reads_like_one_without() {
    let text = std::fs::read_to_string(r2_fixtures::upstream_dir().join("config.json")).unwrap();
    let path = std::path::Path::new("config.json");
    let plain = PoolConfig::from_json(&text, path).unwrap();
    let marked = PoolConfig::from_json(&format!("\u{feff}{text}"), path).unwrap();
    assert_eq!(marked, plain);
}
