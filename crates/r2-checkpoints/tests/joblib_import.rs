//! Integration tests of the joblib/scikit-learn Ridge importer against the upstream checkpoints
//! in `shared/`, the upstream Python router's head outputs, and hand-built or damaged pickles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use r2_checkpoints::joblib::{
    parse_ridge, parse_ridge_dict, read_ridge, read_ridge_dict, JoblibError, JoblibErrorKind,
    RidgeHead,
};

/// The upstream budgets (output tokens) of the limited heads, ascending.
const BUDGETS: [u32; 15] = [
    10, 20, 30, 40, 50, 80, 100, 150, 200, 300, 500, 800, 1200, 2000, 4000,
];
const LIMITED: &str = "limited_score_predictors.joblib";
const UNLIMITED_SCORE: &str = "unlimited_score_predictor.joblib";
const UNLIMITED_TOKENS: &str = "unlimited_token_predictor.joblib";
const DIM: usize = 1024;

/// Every upstream joblib file as a readable path.
fn upstream_files() -> Vec<PathBuf> {
    r2_fixtures::upstream_joblib_files()
        .into_iter()
        .map(|p| {
            if p.exists() {
                p
            } else {
                r2_fixtures::upstream_dir().join(p)
            }
        })
        .collect()
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap()
}

/// The model name: the checkpoint folder's name without `_ridge_alpha10.0`.
fn model_name(path: &Path) -> String {
    let dir = path.parent().and_then(|d| d.file_name()).unwrap();
    let dir = dir.to_str().unwrap();
    dir.strip_suffix("_ridge_alpha10.0")
        .unwrap_or_else(|| panic!("unexpected checkpoint folder {dir}"))
        .to_string()
}

fn small_file() -> PathBuf {
    upstream_files()
        .into_iter()
        .find(|p| file_name(p) == UNLIMITED_SCORE)
        .expect("an unlimited_score_predictor.joblib")
}

fn limited_file() -> PathBuf {
    upstream_files()
        .into_iter()
        .find(|p| file_name(p) == LIMITED)
        .expect("a limited_score_predictors.joblib")
}

/// Every head of one file with its golden key suffix (`10`, …, `unlimited_score`,
/// `unlimited_tokens`).
fn heads_of(path: &Path) -> Vec<(String, RidgeHead)> {
    match file_name(path) {
        LIMITED => read_ridge_dict(path)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(key, head)| (key.strip_suffix("_score").unwrap().to_string(), head))
            .collect(),
        UNLIMITED_SCORE => vec![("unlimited_score".into(), read_ridge(path).unwrap())],
        UNLIMITED_TOKENS => vec![("unlimited_tokens".into(), read_ridge(path).unwrap())],
        other => panic!("unexpected upstream file {other}"),
    }
}

/// A tiny deterministic PRNG (xorshift64).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Where the raw weights of one Ridge sit in a file, found without the importer: joblib ends each
/// array wrapper's state with `BININT1 16, SETITEMS, BUILD` (`K\x10ub`), then writes one padding
/// length byte, that many 0xff bytes and the float32 data; the intercept is the first 4-byte
/// `SHORT_BINBYTES` (`C\x04`) after the data.
#[derive(Debug, Clone, Copy)]
struct RawHead {
    coef: usize,
    intercept: usize,
}

fn locate_raw_heads(bytes: &[u8]) -> Vec<RawHead> {
    let mut heads = Vec::new();
    let mut pos = 0;
    while let Some(found) = find(bytes, b"K\x10ub", pos) {
        let pad_at = found + 4;
        let pad = bytes[pad_at] as usize;
        assert!(
            bytes[pad_at + 1..pad_at + 1 + pad]
                .iter()
                .all(|&b| b == 0xff),
            "padding at {pad_at} is not 0xff"
        );
        let coef = pad_at + 1 + pad;
        assert_eq!(coef % 16, 0, "joblib aligns array data to 16 bytes");
        let after = coef + DIM * 4;
        let intercept = find(bytes, b"C\x04", after).expect("an intercept after the coef") + 2;
        heads.push(RawHead { coef, intercept });
        pos = intercept + 4;
    }
    heads
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn f32_at(bytes: &[u8], at: usize) -> f32 {
    f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

#[test]
fn all_upstream_files_import() {
    let files = upstream_files();
    assert_eq!(files.len(), 33, "11 models × 3 files");
    let expected_keys: Vec<String> = BUDGETS.iter().map(|b| format!("{b}_score")).collect();
    let mut models = Vec::new();
    for path in &files {
        let heads: Vec<RidgeHead> = match file_name(path) {
            LIMITED => {
                let entries = read_ridge_dict(path).unwrap_or_else(|e| panic!("{e}"));
                let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(keys, expected_keys, "{}", path.display());
                entries.into_iter().map(|(_, head)| head).collect()
            }
            UNLIMITED_SCORE | UNLIMITED_TOKENS => {
                vec![read_ridge(path).unwrap_or_else(|e| panic!("{e}"))]
            }
            other => panic!("unexpected upstream file {other}"),
        };
        for head in heads {
            assert_eq!(head.coef.len(), DIM, "{}", path.display());
            assert_eq!(head.alpha, 10.0, "{}", path.display());
            assert!(head.intercept.is_finite(), "{}", path.display());
            assert!(head.coef.iter().any(|&w| w != 0.0), "{}", path.display());
        }
        models.push(model_name(path));
    }
    models.dedup();
    assert_eq!(models.len(), 11);
}

#[test]
fn weights_are_bit_identical_to_the_file_bytes() {
    for path in upstream_files() {
        let bytes = std::fs::read(&path).unwrap();
        let raw = locate_raw_heads(&bytes);
        let heads = heads_of(&path);
        assert_eq!(raw.len(), heads.len(), "{}", path.display());
        for ((name, head), raw) in heads.iter().zip(&raw) {
            for (i, w) in head.coef.iter().enumerate() {
                assert_eq!(
                    w.to_bits(),
                    f32_at(&bytes, raw.coef + 4 * i).to_bits(),
                    "{} {name} coef[{i}]",
                    path.display()
                );
            }
            assert_eq!(
                head.intercept.to_bits(),
                f32_at(&bytes, raw.intercept).to_bits(),
                "{} {name} intercept",
                path.display()
            );
        }
    }
}

#[test]
fn heads_reproduce_the_upstream_predictions() {
    let golden = r2_fixtures::golden_dir();
    let predictions: HashMap<String, HashMap<String, f64>> = serde_json::from_str(
        &std::fs::read_to_string(golden.join("head-predictions.json")).unwrap(),
    )
    .unwrap();
    let inputs: Vec<(String, Vec<f64>)> = std::fs::read_to_string(golden.join("route-input.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let embedding = v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (v["id"].to_string(), embedding)
        })
        .collect();
    assert_eq!(inputs.len(), 40);

    let mut heads = Vec::new();
    for path in upstream_files() {
        let model = model_name(&path);
        for (suffix, head) in heads_of(&path) {
            heads.push((format!("{model}/{suffix}"), head));
        }
    }
    assert_eq!(heads.len(), 187);

    for (id, x) in &inputs {
        assert_eq!(x.len(), DIM);
        let expected = &predictions[id];
        assert_eq!(expected.len(), heads.len(), "query {id}");
        for (key, head) in &heads {
            let dot: f64 = head
                .coef
                .iter()
                .zip(x)
                .map(|(&w, &xi)| f64::from(w) * xi)
                .sum();
            let got = dot + f64::from(head.intercept);
            let want = expected[key];
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "query {id} head {key}: {got} vs upstream {want}"
            );
        }
    }
}

#[test]
fn every_truncation_is_an_error_at_or_before_the_cut() {
    let check = |path: &Path, bytes: &[u8], len: usize, dict: bool| {
        let result = if dict {
            parse_ridge_dict(&bytes[..len], path).map(|_| ())
        } else {
            parse_ridge(&bytes[..len], path).map(|_| ())
        };
        let err = result.expect_err("a truncated file must not parse");
        assert!(
            err.offset <= len as u64,
            "prefix {len}: error offset {} beyond the cut",
            err.offset
        );
        assert!(
            matches!(err.kind, JoblibErrorKind::Truncated { .. }),
            "prefix {len}: {err}"
        );
    };

    let small = small_file();
    let bytes = std::fs::read(&small).unwrap();
    for len in 0..bytes.len() {
        check(&small, &bytes, len, false);
    }

    let limited = limited_file();
    let bytes = std::fs::read(&limited).unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut lens: Vec<usize> = (0..bytes.len()).step_by(97).collect();
    lens.extend((0..300).map(|_| rng.below(bytes.len())));
    // Cuts right around every array (padding byte, padding, data) and every intercept.
    for raw in locate_raw_heads(&bytes) {
        for at in [raw.coef, raw.coef + DIM * 4, raw.intercept] {
            lens.extend(at.saturating_sub(24)..(at + 24).min(bytes.len()));
        }
    }
    lens.push(bytes.len() - 1);
    for len in lens {
        check(&limited, &bytes, len, true);
    }
}

/// Compares a damaged file's result with the original: the number of weights (coef entries,
/// intercept, alpha) whose bits differ, and which coef index differs (if any).
fn differences(a: &RidgeHead, b: &RidgeHead) -> (usize, Option<usize>, bool, bool) {
    assert_eq!(a.coef.len(), b.coef.len());
    let coef: Vec<usize> = (0..a.coef.len())
        .filter(|&i| a.coef[i].to_bits() != b.coef[i].to_bits())
        .collect();
    let intercept = a.intercept.to_bits() != b.intercept.to_bits();
    let alpha = a.alpha.to_bits() != b.alpha.to_bits();
    let total = coef.len() + usize::from(intercept) + usize::from(alpha);
    (total, coef.first().copied(), intercept, alpha)
}

#[test]
fn bit_flips_never_panic_and_only_change_the_flipped_weight() {
    let path = small_file();
    let original_bytes = std::fs::read(&path).unwrap();
    let original = parse_ridge(&original_bytes, &path).unwrap();
    let raw = locate_raw_heads(&original_bytes)[0];
    let coef_range = raw.coef..raw.coef + DIM * 4;
    let intercept_range = raw.intercept..raw.intercept + 4;
    // The 8 bytes of `BINFLOAT 10.0` after the key 'alpha'.
    let alpha_at = find(&original_bytes, b"alpha\x94G", 0).unwrap() + 7;
    let alpha_range = alpha_at..alpha_at + 8;

    // Every bit and the whole byte of every structural byte; inside the 4 KiB of float data (one
    // code path) the whole byte everywhere and one seeded single bit in every fourth byte.
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    let mut flips = Vec::new();
    for at in 0..original_bytes.len() {
        if !coef_range.contains(&at) {
            flips.extend((0..8).map(|bit| (at, 1u8 << bit)));
        } else if at % 4 == 0 {
            flips.push((at, 1u8 << rng.below(8)));
        }
        flips.push((at, 0xff));
    }
    let (mut ok, mut err) = (0, 0);
    let mut bytes = original_bytes.clone();
    for (at, mask) in flips {
        {
            bytes[at] ^= mask;
            let result = parse_ridge(&bytes, &path);
            bytes[at] ^= mask;
            let head = match result {
                Ok(head) => head,
                Err(e) => {
                    assert!(e.offset <= bytes.len() as u64, "{e}");
                    err += 1;
                    continue;
                }
            };
            ok += 1;
            let (total, coef, intercept, alpha) = differences(&original, &head);
            if coef_range.contains(&at) {
                assert_eq!(
                    (total, coef),
                    (1, Some((at - raw.coef) / 4)),
                    "byte {at} ^ {mask:#x}"
                );
            } else if intercept_range.contains(&at) {
                assert!(total == 1 && intercept, "byte {at} ^ {mask:#x}");
            } else if alpha_range.contains(&at) {
                assert!(total == 1 && alpha, "byte {at} ^ {mask:#x}");
            } else {
                assert_eq!(total, 0, "byte {at} ^ {mask:#x} changed a weight");
            }
        }
    }
    // Every flip of the float data parses; most flips of the structure do not.
    assert!(ok >= DIM * 5, "{ok} flips parsed");
    assert!(err > 3000, "{err} flips rejected");
}

#[test]
fn bit_flips_in_a_dict_file_never_panic() {
    let path = limited_file();
    let original_bytes = std::fs::read(&path).unwrap();
    let original = parse_ridge_dict(&original_bytes, &path).unwrap();
    // Seeded single-bit flips, mostly of the pickle structure (outside the float data).
    let data: Vec<_> = locate_raw_heads(&original_bytes)
        .iter()
        .map(|raw| raw.coef..raw.coef + DIM * 4)
        .collect();
    let structural: Vec<usize> = (0..original_bytes.len())
        .filter(|at| !data.iter().any(|range| range.contains(at)))
        .collect();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut bytes = original_bytes.clone();
    for i in 0..1200 {
        let at = if i % 10 == 0 {
            rng.below(bytes.len())
        } else {
            structural[rng.below(structural.len())]
        };
        let mask = 1u8 << rng.below(8);
        bytes[at] ^= mask;
        let result = parse_ridge_dict(&bytes, &path);
        bytes[at] ^= mask;
        match result {
            Ok(entries) => {
                // A flip in a key may rename an entry (to a new key, or to a later key, which
                // then overwrites it in place); nothing else may change but one weight.
                let original_head = |key: &str| {
                    original
                        .iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, head)| head)
                };
                let renamed = entries
                    .iter()
                    .filter(|(key, _)| original_head(key).is_none())
                    .count();
                let merged = original.len() - entries.len();
                assert!(renamed + merged <= 1, "byte {at} ^ {mask:#x}");
                let changed: usize = entries
                    .iter()
                    .enumerate()
                    .map(|(i, (key, head))| {
                        let reference = original_head(key).unwrap_or(&original[i].1);
                        differences(reference, head).0
                    })
                    .sum();
                assert!(
                    changed <= 1,
                    "byte {at} ^ {mask:#x} changed {changed} weights"
                );
            }
            Err(e) => assert!(e.offset <= bytes.len() as u64, "{e}"),
        }
    }
}

#[test]
fn error_messages_name_the_file_and_the_byte() {
    let path = small_file();
    let bytes = std::fs::read(&path).unwrap();

    let err = parse_ridge(&bytes[..1000], &path).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{}: byte {}: ", path.display(), err.offset)),
        "{message}"
    );
    assert!(message.contains("truncated"), "{message}");

    let missing = path.with_file_name("no-such-file.joblib");
    let err = read_ridge(&missing).unwrap_err();
    assert!(matches!(err.kind, JoblibErrorKind::Io(_)));
    assert_eq!(err.offset, 0);
    assert!(
        err.to_string()
            .starts_with(&format!("{}: byte 0: ", missing.display())),
        "{err}"
    );

    // The wrong reader for the file says which one to use.
    let err = read_ridge_dict(&path).unwrap_err();
    assert!(matches!(err.kind, JoblibErrorKind::UnexpectedRoot { .. }));
    assert_eq!(err.offset, bytes.len() as u64 - 1, "the STOP opcode");
    assert!(err.to_string().contains("read_ridge"), "{err}");
    let err = read_ridge(&limited_file()).unwrap_err();
    assert!(err.to_string().contains("read_ridge_dict"), "{err}");

    // An unknown opcode in place of the padding byte after the frame header.
    let mut damaged = bytes.clone();
    damaged[11] = 0x06;
    let err = parse_ridge(&damaged, &path).unwrap_err();
    assert_eq!(err.offset, 11);
    assert!(
        err.to_string().ends_with(
            "byte 11: unknown pickle opcode 0x06; this importer reads scikit-learn Ridge files \
             written by joblib (pickle protocol 2–5)"
        ),
        "{err}"
    );
}

/// A minimal pickle writer for hand-built test files (protocol 4, no frames).
struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Self {
        Self(vec![0x80, 4])
    }

    fn op(&mut self, op: u8) -> &mut Self {
        self.0.push(op);
        self
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.op(0x8c).op(s.len() as u8).raw(s.as_bytes())
    }

    fn int(&mut self, i: i32) -> &mut Self {
        self.op(b'J').raw(&i.to_le_bytes())
    }

    fn float(&mut self, f: f64) -> &mut Self {
        self.op(b'G').raw(&f.to_be_bytes())
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.str(module).str(name).op(0x93)
    }

    /// `numpy.dtype(code)` with byte order `order`.
    fn dtype(&mut self, code: &str, order: &str) -> &mut Self {
        self.global("numpy", "dtype")
            .str(code)
            .op(0x89)
            .op(0x88)
            .op(0x87)
            .op(b'R');
        self.op(b'(').int(3).str(order).op(b'N').op(b'N').op(b'N');
        self.int(-1).int(-1).int(0).op(b't').op(b'b')
    }

    /// A joblib array wrapper followed by its raw data.
    fn array(&mut self, code: &str, order: &str, shape: &[i32], data: &[u8]) -> &mut Self {
        self.global("joblib.numpy_pickle", "NumpyArrayWrapper")
            .op(b')')
            .op(0x81)
            .op(b'}')
            .op(b'(');
        self.str("subclass").global("numpy", "ndarray");
        self.str("shape").op(b'(');
        for &d in shape {
            self.int(d);
        }
        self.op(b't');
        self.str("order").str("C");
        self.str("dtype").dtype(code, order);
        self.str("allow_mmap").op(0x88);
        self.str("numpy_array_alignment_bytes").int(16);
        self.op(b'u').op(b'b');
        let pad = 16 - (self.0.len() + 1) % 16;
        self.op(pad as u8).raw(&vec![0xff; pad]).raw(data)
    }

    /// A numpy scalar.
    fn scalar(&mut self, code: &str, data: &[u8]) -> &mut Self {
        self.global("numpy._core.multiarray", "scalar")
            .dtype(code, "<");
        self.op(b'C')
            .op(data.len() as u8)
            .raw(data)
            .op(0x86)
            .op(b'R')
    }

    fn ridge_start(&mut self) -> &mut Self {
        self.global("sklearn.linear_model._ridge", "Ridge")
            .op(b')')
            .op(0x81)
            .op(b'}')
            .op(b'(')
    }

    fn ridge_end(&mut self) -> &mut Self {
        self.op(b'u').op(b'b')
    }

    fn stop(&mut self) -> Vec<u8> {
        self.op(b'.');
        std::mem::take(&mut self.0)
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn parse(bytes: &[u8]) -> Result<RidgeHead, JoblibError> {
    parse_ridge(bytes, Path::new("hand-built.joblib"))
}

#[test]
fn hand_built_ridge_variants() {
    let coef = [1.5f32, -0.25, f32::MIN_POSITIVE, 3.0e-8];
    // float32 coef, float32 scalar intercept, integer alpha.
    let bytes = Writer::new()
        .ridge_start()
        .str("alpha")
        .int(2)
        .str("n_features_in_")
        .int(4)
        .str("coef_")
        .array("f4", "<", &[4], &f32_bytes(&coef))
        .str("intercept_")
        .scalar("f4", &0.5f32.to_le_bytes())
        .ridge_end()
        .stop();
    let head = parse(&bytes).unwrap();
    assert_eq!(
        head,
        RidgeHead {
            coef: coef.to_vec(),
            intercept: 0.5,
            alpha: 2.0
        }
    );

    // float64 values that float32 represents exactly, a (1, n) coef and a Python float intercept.
    let wide: Vec<f64> = coef.iter().map(|&v| f64::from(v)).collect();
    let bytes = Writer::new()
        .ridge_start()
        .str("alpha")
        .float(10.0)
        .str("coef_")
        .array("f8", "<", &[1, 4], &f64_bytes(&wide))
        .str("intercept_")
        .float(-0.125)
        .ridge_end()
        .stop();
    let head = parse(&bytes).unwrap();
    assert_eq!(head.coef, coef);
    assert_eq!(head.intercept, -0.125);

    // A float64 weight that float32 cannot hold is refused, naming the element.
    let bytes = Writer::new()
        .ridge_start()
        .str("alpha")
        .float(10.0)
        .str("coef_")
        .array("f8", "<", &[2], &f64_bytes(&[1.0, 0.1]))
        .str("intercept_")
        .float(0.0)
        .ridge_end()
        .stop();
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(
            err.kind,
            JoblibErrorKind::NotExactFloat32 {
                attribute: "coef_",
                index: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(&bytes[err.offset as usize..][..8], 0.1f64.to_le_bytes());

    // Big-endian weights and integer weights are refused.
    for (code, order) in [("f4", ">"), ("i4", "<")] {
        let bytes = Writer::new()
            .ridge_start()
            .str("alpha")
            .float(10.0)
            .str("coef_")
            .array(code, order, &[1], &[0, 0, 128, 63])
            .str("intercept_")
            .float(0.0)
            .ridge_end()
            .stop();
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(err.kind, JoblibErrorKind::UnsupportedDtype { .. }),
            "{err}"
        );
    }

    // A missing attribute is named.
    let bytes = Writer::new()
        .ridge_start()
        .str("alpha")
        .float(10.0)
        .str("intercept_")
        .float(0.0)
        .ridge_end()
        .stop();
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(
            err.kind,
            JoblibErrorKind::MissingAttribute { attribute: "coef_" }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("coef_"));

    // coef_ must match n_features_in_.
    let bytes = Writer::new()
        .ridge_start()
        .str("alpha")
        .float(10.0)
        .str("n_features_in_")
        .int(5)
        .str("coef_")
        .array("f4", "<", &[4], &f32_bytes(&coef))
        .str("intercept_")
        .float(0.0)
        .ridge_end()
        .stop();
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(
            err.kind,
            JoblibErrorKind::CoefLengthMismatch {
                coef_len: 4,
                n_features_in: 5
            }
        ),
        "{err}"
    );

    // A 2-d coef with several targets is refused.
    let bytes = Writer::new()
        .ridge_start()
        .str("alpha")
        .float(10.0)
        .str("coef_")
        .array("f4", "<", &[2, 2], &f32_bytes(&coef))
        .str("intercept_")
        .float(0.0)
        .ridge_end()
        .stop();
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(err.kind, JoblibErrorKind::BadShape { .. }),
        "{err}"
    );
}

#[test]
fn protocol_2_style_opcodes_are_read() {
    // BINPUT/LONG_BINGET memo use, SETITEM, BINUNICODE, GLOBAL, a list and a negative BININT.
    let mut w = Writer(vec![0x80, 2]);
    w.op(b'c').raw(b"sklearn.linear_model._ridge\nRidge\n");
    w.op(b'q').op(0).op(b')').op(0x81).op(b'}');
    w.op(b'X')
        .raw(&5u32.to_le_bytes())
        .raw(b"alpha")
        .float(0.5)
        .op(b's');
    w.str("tags")
        .op(b']')
        .op(b'(')
        .int(-3)
        .op(b'N')
        .op(b'e')
        .int(9)
        .op(b'a')
        .op(b's');
    w.str("coef_")
        .array("f4", "<", &[2], &f32_bytes(&[1.0, 2.0]))
        .op(b's');
    w.str("intercept_").op(b'K').op(3).op(b's');
    let bytes = w.op(b'b').stop();
    let head = parse(&bytes).unwrap();
    assert_eq!(
        head,
        RidgeHead {
            coef: vec![1.0, 2.0],
            intercept: 3.0,
            alpha: 0.5
        }
    );
    // The memoised class is readable with LONG_BINGET.
    let mut w = Writer(vec![0x80, 2]);
    w.op(b'c')
        .raw(b"sklearn.linear_model._ridge\nRidge\n")
        .op(b'q')
        .op(0);
    w.op(b'j').raw(&0u32.to_le_bytes()).op(b'0');
    let err = parse(&w.stop()).unwrap_err();
    assert!(
        matches!(err.kind, JoblibErrorKind::UnknownOpcode { opcode: b'0' }),
        "{err}"
    );
}

#[test]
fn unknown_opcodes_and_disallowed_globals_are_rejected() {
    let err = parse(b"\x80\x04\x06.").unwrap_err();
    assert!(
        matches!(err.kind, JoblibErrorKind::UnknownOpcode { opcode: 0x06 }),
        "{err}"
    );
    assert_eq!(err.offset, 2);

    // A standard opcode this importer does not run is named.
    let err = parse(b"\x80\x04N0N.").unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported pickle opcode 0x30 (POP)"),
        "{err}"
    );
    assert_eq!(err.offset, 3);

    // os.system by GLOBAL (protocol 2) and by STACK_GLOBAL (protocol 4).
    let err = parse(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.").unwrap_err();
    assert!(
        matches!(&err.kind, JoblibErrorKind::UnsupportedGlobal { module, name }
            if module == "os" && name == "system"),
        "{err}"
    );
    assert_eq!(err.offset, 2);
    let bytes = Writer::new()
        .str("os")
        .str("system")
        .op(0x93)
        .str("ls")
        .op(0x85)
        .op(b'R')
        .stop();
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(&err.kind, JoblibErrorKind::UnsupportedGlobal { module, name }
            if module == "os" && name == "system"),
        "{err}"
    );
    assert_eq!(err.offset, 2 + 4 + 8, "the STACK_GLOBAL opcode");
    assert!(
        err.to_string().contains("os.system is not allowed"),
        "{err}"
    );

    // builtins.eval via a memoised name, and a numpy function that is not whitelisted.
    for (module, name) in [
        ("builtins", "eval"),
        ("numpy.core.multiarray", "_reconstruct"),
    ] {
        let bytes = Writer::new()
            .str(module)
            .op(0x94)
            .str(name)
            .op(0x94)
            .op(b'h')
            .op(0)
            .op(b'h')
            .op(1)
            .op(0x93)
            .stop();
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(&err.kind, JoblibErrorKind::UnsupportedGlobal { module: m, name: n }
                if m == module && n == name),
            "{err}"
        );
    }

    // Unsupported protocols.
    let err = parse(b"\x80\x06N.").unwrap_err();
    assert!(
        matches!(
            err.kind,
            JoblibErrorKind::UnsupportedProtocol { version: 6 }
        ),
        "{err}"
    );
}

#[test]
fn malformed_structure_is_rejected() {
    type Expect = fn(&JoblibErrorKind) -> bool;
    let cases: &[(&[u8], Expect)] = &[
        // Stack underflow, also across a MARK.
        (b"\x80\x04.", |k| {
            matches!(k, JoblibErrorKind::StackUnderflow { .. })
        }),
        (b"\x80\x04N(\x85.", |k| {
            matches!(k, JoblibErrorKind::StackUnderflow { .. })
        }),
        (b"\x80\x04Nt.", |k| {
            matches!(k, JoblibErrorKind::MissingMark { .. })
        }),
        (b"\x80\x04h\x03.", |k| {
            matches!(k, JoblibErrorKind::BadMemoIndex { index: 3 })
        }),
        // A frame longer than the file, and an opcode crossing a frame's end.
        (b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.", |k| {
            matches!(k, JoblibErrorKind::Truncated { .. })
        }),
        (
            b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00NJ\x00\x00\x00\x00.",
            |k| matches!(k, JoblibErrorKind::BadFrame { .. }),
        ),
        // A string length beyond the end of the file.
        (b"\x80\x04X\xff\xff\xff\xff", |k| {
            matches!(k, JoblibErrorKind::Truncated { .. })
        }),
        // A memo index that skips entries.
        (b"\x80\x02Nq\x07.", |k| {
            matches!(k, JoblibErrorKind::Malformed { .. })
        }),
        // Data after STOP.
        (b"\x80\x04N.N", |k| {
            matches!(k, JoblibErrorKind::TrailingBytes { count: 1 })
        }),
        // Something other than a Ridge.
        (b"\x80\x04N.", |k| {
            matches!(k, JoblibErrorKind::UnexpectedRoot { .. })
        }),
    ];
    for (bytes, expected) in cases {
        let err = parse(bytes).unwrap_err();
        assert!(expected(&err.kind), "{bytes:?}: {err}");
        assert!(err.offset <= bytes.len() as u64);
    }

    // Deeply nested tuples and MARKs hit limits instead of exhausting the stack.
    let mut nested = vec![0x80, 4, b')'];
    nested.extend(std::iter::repeat_n(0x85, 100_000));
    nested.push(b'.');
    let err = parse(&nested).unwrap_err();
    assert!(
        matches!(err.kind, JoblibErrorKind::LimitExceeded { .. }),
        "{err}"
    );
    let mut marks = vec![0x80, 4];
    marks.extend(std::iter::repeat_n(b'(', 100_000));
    let err = parse(&marks).unwrap_err();
    assert!(
        matches!(err.kind, JoblibErrorKind::LimitExceeded { .. }),
        "{err}"
    );

    // An array whose shape claims more data than the file holds fails before allocating.
    let bytes = Writer::new()
        .ridge_start()
        .str("coef_")
        .array("f8", "<", &[i32::MAX, i32::MAX], &[])
        .stop();
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(err.kind, JoblibErrorKind::Truncated { .. }),
        "{err}"
    );
}

#[test]
fn a_dict_file_reports_the_failing_entry() {
    let path = limited_file();
    let mut bytes = std::fs::read(&path).unwrap();
    // Rename the attribute key 'coef_' where it is first stored; later entries fetch it from the
    // memo, so every entry loses its coef_ and the first one is reported.
    let at = find(&bytes, b"coef_", 0).unwrap();
    bytes[at] = b'k';
    let err = parse_ridge_dict(&bytes, &path).unwrap_err();
    match &err.kind {
        JoblibErrorKind::InEntry { key, inner } => {
            assert_eq!(key, "10_score");
            assert!(matches!(
                **inner,
                JoblibErrorKind::MissingAttribute { attribute: "coef_" }
            ));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("entry \"10_score\""), "{err}");
}

#[test]
fn shared_objects_cannot_multiply_the_work() {
    // One 4000-byte coef_ array memoised once and shared by 20 Ridge objects in a dict: decoding
    // it 20 times would need far more bytes than the file has.
    let mut w = Writer::new();
    w.op(b'}').op(b'(');
    for i in 0..20 {
        w.str(&format!("{i}_score")).ridge_start();
        w.str("alpha").float(10.0).str("intercept_").float(0.0);
        w.str("coef_");
        if i == 0 {
            w.array("f4", "<", &[1000], &f32_bytes(&[0.5; 1000]))
                .op(0x94);
        } else {
            w.op(b'h').op(0);
        }
        w.ridge_end();
    }
    let bytes = w.op(b'u').stop();
    let err = parse_ridge_dict(&bytes, Path::new("shared.joblib")).unwrap_err();
    match &err.kind {
        JoblibErrorKind::InEntry { inner, .. } => assert!(
            matches!(**inner, JoblibErrorKind::LimitExceeded { .. }),
            "{err}"
        ),
        _ => panic!("unexpected error {err}"),
    }

    // A 40-attribute state dict applied to many objects hits the attribute-copy limit.
    let mut w = Writer::new();
    w.op(b'}').op(0x94).op(b'(');
    for i in 0..40 {
        w.str(&format!("attribute_{i}")).op(b'N');
    }
    w.op(b'u');
    w.global("sklearn.linear_model._ridge", "Ridge").op(0x94);
    w.op(b'}').op(b'(');
    for i in 0..7000u16 {
        w.op(b'M').raw(&i.to_le_bytes());
        w.op(b'h').op(1).op(b')').op(0x81).op(b'h').op(0).op(b'b');
    }
    let bytes = w.op(b'u').stop();
    let err = parse_ridge_dict(&bytes, Path::new("copies.joblib")).unwrap_err();
    assert!(
        matches!(err.kind, JoblibErrorKind::LimitExceeded { .. }),
        "{err}"
    );
}

/// Where the only dtype code `f4` of a small upstream file is, and the `REDUCE` opcode that calls
/// `numpy.dtype` with it (the byte offset errors about the code name).
fn dtype_code_and_reduce(bytes: &[u8]) -> (usize, usize) {
    let code = find(bytes, b"\x8c\x02f4", 0).expect("the dtype code f4") + 2;
    assert!(find(bytes, b"\x8c\x02f4", code).is_none(), "one dtype code");
    let reduce = find(bytes, b"R", code).expect("the REDUCE after the code");
    (code, reduce)
}

#[test]
fn dtype_codes_numpy_refuses_are_rejected_naming_the_file_the_byte_and_the_dtype() {
    // Same-length mutations of the real file's `f4`: numpy itself refuses every one.
    let path = small_file();
    let original = std::fs::read(&path).unwrap();
    let (code_at, reduce_at) = dtype_code_and_reduce(&original);
    for code in [
        "f3", "f5", "f0", "f1", "f7", "i3", "i0", "u5", "b2", "b0", "c4", "x4", "fx", "4f",
    ] {
        let mut bytes = original.clone();
        bytes[code_at..code_at + 2].copy_from_slice(code.as_bytes());
        let err = parse_ridge(&bytes, &path).unwrap_err();
        let message = err.to_string();
        match (&err.kind, code) {
            // A leading digit is numpy's sub-array syntax (valid numpy, unreadable here).
            (JoblibErrorKind::UnsupportedDtype { dtype, .. }, "4f") => assert_eq!(dtype, code),
            (JoblibErrorKind::InvalidDtype { dtype, .. }, _) => assert_eq!(dtype, code),
            (other, _) => panic!("{code}: expected InvalidDtype, got {other:?}"),
        }
        assert_eq!(err.offset, reduce_at as u64, "{code}: {message}");
        assert!(
            message.starts_with(&format!("{}: byte {reduce_at}: ", path.display())),
            "{message}"
        );
        assert!(message.contains(code), "{message}");
    }

    // Codes of other lengths, built by hand: numpy refuses these too.
    for code in [
        "<f3",
        "<f5",
        "<i3",
        "<f0",
        ">f3",
        "f4x",
        "f4 ",
        "<f8\0",
        "f04x",
        "i16",
        "u16",
        "f99",
        "f99999999999",
        "",
        "<",
        "|",
        "q4",
        "d8",
        "\u{e9}4",
    ] {
        let bytes = Writer::new()
            .ridge_start()
            .str("alpha")
            .float(10.0)
            .str("coef_")
            .array(code, "<", &[1], &[0, 0, 128, 63])
            .str("intercept_")
            .float(0.0)
            .ridge_end()
            .stop();
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(&err.kind, JoblibErrorKind::InvalidDtype { dtype, .. }
                if *dtype == code.escape_debug().to_string()),
            "{code:?}: {err}"
        );
        assert_eq!(
            bytes[err.offset as usize], b'R',
            "{code:?}: the REDUCE opcode"
        );
        assert!(err.to_string().contains("numpy never writes this"), "{err}");
    }

    // What numpy accepts but r2 cannot read is "unsupported", not "invalid"; what r2 reads parses.
    for code in [
        "f2", "<f2", "f16", "c8", "c16", "S5", "U3", "V8", "O8", "M8", "M8[ns]", "d", "f", "?",
        "float32", "f4,i4", "2f4", "<2f4",
    ] {
        let bytes = Writer::new()
            .ridge_start()
            .str("coef_")
            .array(code, "<", &[1], &[0, 0, 128, 63])
            .stop();
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(&err.kind, JoblibErrorKind::UnsupportedDtype { .. }),
            "{code:?}: {err}"
        );
    }
    for code in ["f4", "<f4", "|f4", "=f4", "f04"] {
        let bytes = Writer::new()
            .ridge_start()
            .str("alpha")
            .float(10.0)
            .str("coef_")
            .array(code, "<", &[1], &[0, 0, 128, 63])
            .str("intercept_")
            .float(0.0)
            .ridge_end()
            .stop();
        assert_eq!(parse(&bytes).unwrap().coef, [1.0], "{code}");
    }
}

#[test]
fn dtype_states_that_do_not_fit_the_kind_are_rejected() {
    // The real file's dtype state `(3, '<', None, None, None, -1, -1, 0)`: the item size and the
    // alignment must be -1 (or the kind's size) and ints, the flags an int ≥ 0.
    let path = small_file();
    let original = std::fs::read(&path).unwrap();
    let (_, reduce_at) = dtype_code_and_reduce(&original);
    let state = find(
        &original,
        b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t",
        reduce_at,
    )
    .expect("the dtype state")
        + 3;
    let build = find(&original, b"t\x94b", state).unwrap() + 2;
    let cases: [(usize, &[u8], &str); 5] = [
        (state, b"J\x08\x00\x00\x00", "item size 8"),
        (state, b"J\x02\x00\x00\x00", "item size 2"),
        (state + 5, b"J\x10\x00\x00\x00", "alignment 16"),
        (state + 10, b"\x89\x89", "a bool as the flags"),
        (state, b"\x8c\x03abc", "a str as the item size"),
    ];
    for (at, patch, mentions) in cases {
        let mut bytes = original.clone();
        bytes[at..at + patch.len()].copy_from_slice(patch);
        let err = parse_ridge(&bytes, &path).unwrap_err();
        assert!(
            matches!(&err.kind, JoblibErrorKind::InvalidDtype { .. }),
            "{mentions}: {err}"
        );
        assert_eq!(
            err.offset, build as u64,
            "{mentions}: the BUILD opcode; {err}"
        );
        assert!(err.to_string().contains(mentions), "{err}");
    }
    // The kind's own size is what numpy would report, so it is accepted.
    let mut bytes = original.clone();
    bytes[state..state + 5].copy_from_slice(b"J\x04\x00\x00\x00");
    assert_eq!(
        parse_ridge(&bytes, &path).unwrap(),
        parse_ridge(&original, &path).unwrap()
    );
}

#[test]
fn non_finite_weights_are_rejected_at_their_byte() {
    let path = small_file();
    let original = std::fs::read(&path).unwrap();
    let raw = locate_raw_heads(&original)[0];
    for (at, value, attribute, index) in [
        (raw.coef + 4 * 7, f32::NAN, "coef_", 7u64),
        (raw.coef + 4 * 1023, f32::INFINITY, "coef_", 1023),
        (raw.coef, f32::NEG_INFINITY, "coef_", 0),
        (raw.intercept, f32::NAN, "intercept_", 0),
    ] {
        let mut bytes = original.clone();
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let err = parse_ridge(&bytes, &path).unwrap_err();
        assert!(
            matches!(&err.kind, JoblibErrorKind::NonFinite { attribute: a, index: i, .. }
                if *a == attribute && *i == index),
            "{err}"
        );
        assert_eq!(err.offset, at as u64, "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "{}: byte {at}: {attribute}[{index}] is ",
                path.display()
            )),
            "{message}"
        );
    }

    // float64 data and a Python float intercept: the offset of the bad value.
    let bytes = Writer::new()
        .ridge_start()
        .str("alpha")
        .float(10.0)
        .str("coef_")
        .array("f8", "<", &[3], &f64_bytes(&[1.0, f64::INFINITY, 2.0]))
        .str("intercept_")
        .float(0.0)
        .ridge_end()
        .stop();
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(
            err.kind,
            JoblibErrorKind::NonFinite {
                attribute: "coef_",
                index: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        &bytes[err.offset as usize..][..8],
        f64::INFINITY.to_le_bytes()
    );
    let bytes = Writer::new()
        .ridge_start()
        .str("alpha")
        .float(10.0)
        .str("coef_")
        .array("f4", "<", &[1], &f32_bytes(&[1.0]))
        .str("intercept_")
        .float(f64::NAN)
        .ridge_end()
        .stop();
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(
            err.kind,
            JoblibErrorKind::NonFinite {
                attribute: "intercept_",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        f64::from_be_bytes(bytes[err.offset as usize..][..8].try_into().unwrap()).to_bits(),
        f64::NAN.to_bits()
    );
}
