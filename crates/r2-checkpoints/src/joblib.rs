//! Importer for the upstream R2-Router checkpoints: scikit-learn `Ridge` regressors saved with
//! `joblib.dump` (uncompressed pickle, protocol 2–5, arrays written in-stream by joblib's
//! `NumpyArrayWrapper`).
//!
//! The reader never executes anything from the file: only `sklearn.linear_model._ridge.Ridge`,
//! `joblib.numpy_pickle.NumpyArrayWrapper`, `numpy.ndarray`, `numpy.dtype` and the numpy scalar
//! constructor (`numpy._core.multiarray.scalar` or `numpy.core.multiarray.scalar`) may appear as
//! globals; anything else is a [`JoblibErrorKind::UnsupportedGlobal`] error.
//!
//! Weights come out bit-identical to the file: `coef_` and `intercept_` must be little-endian
//! float32 (`<f4`; `|f4`, `=f4` and a dtype without byte-order state are read as little-endian) or
//! float64 whose every value float32 represents exactly. Any other float64 value is a
//! [`JoblibErrorKind::NotExactFloat32`] error rather than a silent rounding, and a NaN or an
//! infinity is a [`JoblibErrorKind::NonFinite`] error naming the attribute, the element and (in
//! [`JoblibError::offset`]) the byte offset of that value in the file.
//!
//! numpy dtypes are read as `numpy.dtype` reads them: a type code numpy itself refuses (`<f3`,
//! `<i3`, `<f0`, `f4x`, …) or a pickled dtype state that does not fit its kind is a
//! [`JoblibErrorKind::InvalidDtype`]; a dtype numpy accepts but r2 cannot use (`<f2`, `>f4`, `c8`,
//! …) is a [`JoblibErrorKind::UnsupportedDtype`].

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo
)]

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::pickle::{
    self, ByteOrder, Dtype, DtypeKind, Instance, Pickle, PlainClass, Scalar, Value,
};

/// The largest file [`read_ridge`] and [`read_ridge_dict`] accept (1 GiB). The upstream files are
/// 4.6 KB and 64 KB.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// The classes besides numpy/joblib internals that a Ridge file may construct.
const RIDGE_CLASSES: &[PlainClass] = &[PlainClass {
    module: "sklearn.linear_model._ridge",
    name: "Ridge",
}];
/// Index of `Ridge` in [`RIDGE_CLASSES`].
const RIDGE: usize = 0;

/// One scikit-learn Ridge regressor: prediction = coef · x + intercept.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeHead {
    /// `coef_`: one weight per embedding dimension, bit-identical to the float32 values in the
    /// file.
    pub coef: Vec<f32>,
    /// `intercept_`, bit-identical to the file.
    pub intercept: f32,
    /// The regularisation strength `alpha` the model was fitted with.
    pub alpha: f64,
}

/// A file that could not be imported: which file, where in it, and what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: byte {offset}: {kind}", path = .path.display())]
pub struct JoblibError {
    /// The file being read (as given by the caller).
    pub path: PathBuf,
    /// Byte offset of the opcode, or of the raw array data, that failed (0 for I/O errors).
    pub offset: u64,
    /// What went wrong.
    pub kind: JoblibErrorKind,
}

/// What went wrong while importing a joblib file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoblibErrorKind {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(std::io::Error),
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error(
        "the file is larger than {limit} bytes; a scikit-learn Ridge checkpoint is far smaller, \
         so this is not one"
    )]
    FileTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The data ends before an opcode, its argument, a frame or an array is complete.
    #[error(
        "the file ends early: {needed} bytes are needed here but only {available} remain; \
         the file is truncated (copy or export it again)"
    )]
    Truncated {
        /// Bytes the failing read needed.
        needed: u64,
        /// Bytes that were left.
        available: u64,
    },
    /// The pickle framing is inconsistent.
    #[error("{reason}; the file is corrupt")]
    BadFrame {
        /// What was inconsistent.
        reason: &'static str,
    },
    /// An opcode this importer does not run.
    #[error("{}", opcode_message(*.opcode))]
    UnknownOpcode {
        /// The opcode byte.
        opcode: u8,
    },
    /// A `PROTO` opcode names a protocol other than 2–5.
    #[error(
        "unsupported pickle protocol {version}; this importer reads joblib files written with \
         pickle protocol 2–5"
    )]
    UnsupportedProtocol {
        /// The protocol number in the file.
        version: u8,
    },
    /// The file refers to a class or function outside the whitelist.
    #[error(
        "the global {module}.{name} is not allowed; this importer only constructs \
         sklearn.linear_model._ridge.Ridge, joblib's NumpyArrayWrapper and numpy ndarray, dtype \
         and scalar objects, so the file is not a plain scikit-learn Ridge checkpoint"
    )]
    UnsupportedGlobal {
        /// The module name (escaped, at most 120 characters).
        module: String,
        /// The global's name (escaped, at most 120 characters).
        name: String,
    },
    /// A numpy dtype this importer cannot read, or cannot use where it appears.
    #[error("unsupported numpy dtype {dtype}: {reason}")]
    UnsupportedDtype {
        /// The dtype as numpy would spell it, e.g. `>f4`.
        dtype: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A numpy dtype that numpy itself would not make: a type code such as `<f3` or `f4x`, or a
    /// pickled dtype state that does not fit its kind.
    #[error(
        "invalid numpy dtype {dtype}: {reason}; numpy never writes this, so the file is damaged \
         (restore or re-export it)"
    )]
    InvalidDtype {
        /// The dtype or type code as it appears in the file (escaped, at most 120 characters).
        dtype: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An opcode needs more values than the stack holds above the last mark.
    #[error("stack underflow at {opcode}; the pickle is malformed")]
    StackUnderflow {
        /// The opcode's name.
        opcode: &'static str,
    },
    /// An opcode that collects items up to a `MARK` found none.
    #[error("{opcode} without a preceding MARK; the pickle is malformed")]
    MissingMark {
        /// The opcode's name.
        opcode: &'static str,
    },
    /// A memo entry is read that was never stored.
    #[error("memo entry {index} is read but was never stored; the pickle is malformed")]
    BadMemoIndex {
        /// The memo index.
        index: u64,
    },
    /// A size limit of the reader was exceeded.
    #[error("too many {what} (limit {limit}); a scikit-learn Ridge file never needs this many")]
    LimitExceeded {
        /// What there were too many of.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// A value has the wrong type for where it is used.
    #[error("{context}: expected {expected}, found {found}")]
    WrongType {
        /// Where the value is used.
        context: &'static str,
        /// What was expected there.
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// Another structural error in the pickle.
    #[error("{detail}; the pickle is malformed")]
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// Data follows the `STOP` opcode.
    #[error(
        "{count} bytes follow the end of the pickle; the file is corrupt or not one joblib dump"
    )]
    TrailingBytes {
        /// How many bytes follow.
        count: u64,
    },
    /// The file holds something other than what the function reads.
    #[error("the file holds {found}, not {expected}; {hint}")]
    UnexpectedRoot {
        /// What the function reads.
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
        /// Which function to use instead, or what to check.
        hint: &'static str,
    },
    /// A Ridge object lacks a required attribute.
    #[error(
        "the Ridge object has no attribute {attribute}; only fitted scikit-learn Ridge models \
         can be imported"
    )]
    MissingAttribute {
        /// The attribute name.
        attribute: &'static str,
    },
    /// `coef_` does not have one weight per input feature.
    #[error(
        "coef_ has {coef_len} values but n_features_in_ is {n_features_in}; the file is \
         inconsistent"
    )]
    CoefLengthMismatch {
        /// Length of `coef_`.
        coef_len: u64,
        /// The `n_features_in_` attribute.
        n_features_in: i64,
    },
    /// An array attribute has a shape other than a vector or a single-row matrix.
    #[error("{attribute} has shape {shape:?}; expected (n,) or (1, n) (a single-target Ridge)")]
    BadShape {
        /// The attribute name.
        attribute: &'static str,
        /// The shape in the file.
        shape: Vec<u64>,
    },
    /// A float64 weight that float32 cannot represent exactly.
    #[error(
        "{attribute}[{index}] = {value:e} is a float64 that float32 cannot represent exactly; \
         re-save the model with float32 weights"
    )]
    NotExactFloat32 {
        /// The attribute name.
        attribute: &'static str,
        /// The element index (0 for scalars).
        index: u64,
        /// The value in the file.
        value: f64,
    },
    /// A weight is NaN or an infinity.
    #[error(
        "{attribute}[{index}] is {value}, not a finite number; a fitted Ridge has finite weights, \
         so the file is damaged (restore or re-export it)"
    )]
    NonFinite {
        /// The attribute name (`coef_` or `intercept_`).
        attribute: &'static str,
        /// The element index (0 for scalars).
        index: u64,
        /// The value in the file, widened to float64.
        value: f64,
    },
    /// An error inside one entry of a dict of Ridge objects.
    #[error("entry {key:?}: {inner}")]
    InEntry {
        /// The dict key.
        key: String,
        /// The error in that entry.
        inner: Box<JoblibErrorKind>,
    },
}

/// The message for an opcode this importer does not run.
fn opcode_message(opcode: u8) -> String {
    let tail =
        "this importer reads scikit-learn Ridge files written by joblib (pickle protocol 2–5)";
    match opcode_name(opcode) {
        Some(name) => format!("unsupported pickle opcode 0x{opcode:02x} ({name}); {tail}"),
        None => format!("unknown pickle opcode 0x{opcode:02x}; {tail}"),
    }
}

/// The names of the standard pickle opcodes this importer does not run.
fn opcode_name(opcode: u8) -> Option<&'static str> {
    Some(match opcode {
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'L' => "LONG",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'd' => "DICT",
        b'g' => "GET",
        b'i' => "INST",
        b'l' => "LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x8b => "LONG4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

impl JoblibError {
    fn new(path: &Path, offset: u64, kind: JoblibErrorKind) -> Self {
        Self {
            path: path.to_path_buf(),
            offset,
            kind,
        }
    }
}

/// Reads a file that holds one scikit-learn `Ridge` (e.g. `unlimited_score_predictor.joblib`).
///
/// # Errors
///
/// A [`JoblibError`] with the path, the byte offset and a [`JoblibErrorKind`] when the file cannot
/// be read, is not a pickle this importer runs, or does not hold a fitted single-target `Ridge`.
pub fn read_ridge(path: &Path) -> Result<RidgeHead, JoblibError> {
    let bytes = read_file(path)?;
    parse_ridge(&bytes, path)
}

/// Reads a file that holds a dict of str → `Ridge` (e.g. `limited_score_predictors.joblib`),
/// returning the entries in the dict's insertion order.
///
/// # Errors
///
/// A [`JoblibError`] with the path, the byte offset and a [`JoblibErrorKind`] when the file cannot
/// be read, is not a pickle this importer runs, or does not hold a dict whose keys are strings
/// and whose values are fitted `Ridge`s.
pub fn read_ridge_dict(path: &Path) -> Result<Vec<(String, RidgeHead)>, JoblibError> {
    let bytes = read_file(path)?;
    parse_ridge_dict(&bytes, path)
}

/// Parses the bytes of a joblib file that holds one `Ridge`; `path` is only used in errors.
///
/// # Errors
///
/// A [`JoblibError`] with the path, the byte offset and a [`JoblibErrorKind`] when the bytes are
/// not a pickle this importer runs or do not hold a fitted single-target `Ridge`.
pub fn parse_ridge(bytes: &[u8], path: &Path) -> Result<RidgeHead, JoblibError> {
    let pickle = load(bytes, path)?;
    if pickle.instance(&pickle.root, RIDGE).is_none() {
        let found = pickle.type_name(&pickle.root);
        let hint = if pickle.dict(&pickle.root).is_some() {
            "read it with read_ridge_dict (limited_score_predictors.joblib holds a dict)"
        } else {
            "check that this is an upstream R2-Router checkpoint"
        };
        return Err(JoblibError::new(
            path,
            offset(pickle.stop_offset),
            JoblibErrorKind::UnexpectedRoot {
                expected: "a scikit-learn Ridge object",
                found,
                hint,
            },
        ));
    }
    let mut budget = bytes.len();
    ridge(&pickle, &pickle.root, &mut budget).map_err(|(at, kind)| JoblibError::new(path, at, kind))
}

/// Parses the bytes of a joblib file that holds a dict of str → `Ridge`, returning the entries
/// in insertion order; `path` is only used in errors.
///
/// # Errors
///
/// A [`JoblibError`] with the path, the byte offset and a [`JoblibErrorKind`] when the bytes are
/// not a pickle this importer runs or do not hold a dict whose keys are strings and whose values
/// are fitted `Ridge`s.
pub fn parse_ridge_dict(
    bytes: &[u8],
    path: &Path,
) -> Result<Vec<(String, RidgeHead)>, JoblibError> {
    let pickle = load(bytes, path)?;
    let Some(dict) = pickle.dict(&pickle.root) else {
        let found = pickle.type_name(&pickle.root);
        let hint = if pickle.instance(&pickle.root, RIDGE).is_some() {
            "read it with read_ridge (the unlimited_*.joblib files hold a single Ridge)"
        } else {
            "check that this is an upstream R2-Router checkpoint"
        };
        return Err(JoblibError::new(
            path,
            offset(pickle.stop_offset),
            JoblibErrorKind::UnexpectedRoot {
                expected: "a dict of scikit-learn Ridge objects",
                found,
                hint,
            },
        ));
    };
    let mut heads = Vec::with_capacity(dict.entries().len());
    let mut budget = bytes.len();
    for (key, value) in dict.entries() {
        let Value::Str(key) = key else {
            return Err(JoblibError::new(
                path,
                offset(pickle.stop_offset),
                JoblibErrorKind::WrongType {
                    context: "key of the dict of Ridge objects",
                    expected: "a str",
                    found: pickle.type_name(key),
                },
            ));
        };
        let in_entry = |kind| JoblibErrorKind::InEntry {
            key: key.to_string(),
            inner: Box::new(kind),
        };
        if pickle.instance(value, RIDGE).is_none() {
            return Err(JoblibError::new(
                path,
                offset(pickle.stop_offset),
                in_entry(JoblibErrorKind::UnexpectedRoot {
                    expected: "a scikit-learn Ridge object",
                    found: pickle.type_name(value),
                    hint: "every value of the dict must be a Ridge",
                }),
            ));
        }
        let head = ridge(&pickle, value, &mut budget)
            .map_err(|(at, kind)| JoblibError::new(path, at, in_entry(kind)))?;
        heads.push((key.to_string(), head));
    }
    Ok(heads)
}

/// Reads a whole joblib file (at most [`MAX_FILE_BYTES`]).
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, JoblibError> {
    let io = |e| JoblibError::new(path, 0, JoblibErrorKind::Io(e));
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if offset(bytes.len()) > MAX_FILE_BYTES {
        return Err(JoblibError::new(
            path,
            MAX_FILE_BYTES,
            JoblibErrorKind::FileTooLarge {
                limit: MAX_FILE_BYTES,
            },
        ));
    }
    Ok(bytes)
}

fn load<'a>(bytes: &'a [u8], path: &Path) -> Result<Pickle<'a>, JoblibError> {
    pickle::load(bytes, RIDGE_CLASSES).map_err(|f| JoblibError::new(path, f.offset, f.kind))
}

fn offset(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

type Located<T> = Result<T, (u64, JoblibErrorKind)>;

/// Extracts coef_, intercept_ and alpha from a Ridge instance.
///
/// `budget` is the number of coef_ bytes still allowed to be decoded: at most the file size in
/// total, so that one array shared through the memo by many Ridge objects cannot multiply the
/// memory used.
fn ridge<'a>(pickle: &Pickle<'a>, value: &Value<'a>, budget: &mut usize) -> Located<RidgeHead> {
    let inst: &Instance<'a> = pickle.instance(value, RIDGE).ok_or((
        0,
        JoblibErrorKind::Malformed {
            detail: "a Ridge reference is dangling".into(),
        },
    ))?;
    let at = offset(inst.offset);
    let attr = |attribute: &'static str| {
        inst.attrs
            .get(attribute)
            .ok_or((at, JoblibErrorKind::MissingAttribute { attribute }))
    };
    let wrong = |context: &'static str, expected: &'static str, found: &Value<'a>| {
        (
            at,
            JoblibErrorKind::WrongType {
                context,
                expected,
                found: pickle.type_name(found),
            },
        )
    };

    let coef = match attr("coef_")? {
        Value::Array(array) => {
            let n = match array.shape.as_slice() {
                [n] | [1, n] => *n,
                _ => {
                    return Err((
                        offset(array.offset),
                        JoblibErrorKind::BadShape {
                            attribute: "coef_",
                            shape: array.shape.clone(),
                        },
                    ))
                }
            };
            *budget = budget.checked_sub(array.bytes.len()).ok_or((
                offset(array.offset),
                JoblibErrorKind::LimitExceeded {
                    what: "coef_ bytes (Ridge objects share arrays)",
                    limit: offset(pickle.input_len),
                },
            ))?;
            let coef = floats(array.dtype, array.bytes, array.offset, "coef_")?;
            if offset(coef.len()) != n {
                return Err((
                    offset(array.offset),
                    JoblibErrorKind::Malformed {
                        detail: "coef_ data does not match its shape".into(),
                    },
                ));
            }
            coef
        }
        other => return Err(wrong("attribute coef_", "a numpy array", other)),
    };

    let intercept = match attr("intercept_")? {
        Value::Scalar(s) => one_float(
            &floats(s.dtype, s.bytes, s.offset, "intercept_")?,
            "intercept_",
            at,
        )?,
        Value::Array(array) => one_float(
            &floats(array.dtype, array.bytes, array.offset, "intercept_")?,
            "intercept_",
            at,
        )?,
        Value::Float { value, offset: o } => {
            finite(*value, "intercept_", 0).map_err(|kind| (offset(*o), kind))?;
            exact_f32(*value, "intercept_", 0).map_err(|kind| (offset(*o), kind))?
        }
        Value::Int(i) => exact_int_f32(*i, "intercept_").map_err(|kind| (at, kind))?,
        other => return Err(wrong("attribute intercept_", "a float", other)),
    };

    let alpha =
        match attr("alpha")? {
            Value::Float { value, .. } => *value,
            Value::Int(i) => exact_int_f64(*i)
                .ok_or_else(|| wrong("attribute alpha", "a float", &Value::Int(*i)))?,
            Value::Scalar(s) => scalar_f64(s)
                .ok_or_else(|| wrong("attribute alpha", "a float", &Value::Scalar(*s)))?,
            other => return Err(wrong("attribute alpha", "a float", other)),
        };

    match inst.attrs.get("n_features_in_") {
        None => {}
        Some(Value::Int(n)) if u64::try_from(*n).ok() == Some(offset(coef.len())) => {}
        Some(Value::Int(n)) => {
            return Err((
                at,
                JoblibErrorKind::CoefLengthMismatch {
                    coef_len: offset(coef.len()),
                    n_features_in: *n,
                },
            ))
        }
        Some(other) => return Err(wrong("attribute n_features_in_", "an int", other)),
    }

    Ok(RidgeHead {
        coef,
        intercept,
        alpha,
    })
}

/// A little-endian float32 or float64 numpy scalar as float64.
fn scalar_f64(s: &Scalar<'_>) -> Option<f64> {
    if s.dtype.kind != DtypeKind::Float || s.dtype.order == ByteOrder::Big {
        return None;
    }
    match s.bytes.len() {
        4 => <[u8; 4]>::try_from(s.bytes)
            .ok()
            .map(|b| f64::from(f32::from_le_bytes(b))),
        8 => <[u8; 8]>::try_from(s.bytes).ok().map(f64::from_le_bytes),
        _ => None,
    }
}

/// The single value of a scalar or one-element array.
fn one_float(values: &[f32], attribute: &'static str, at: u64) -> Located<f32> {
    match values {
        [v] => Ok(*v),
        _ => Err((
            at,
            JoblibErrorKind::Malformed {
                detail: format!("{attribute} has {} values instead of 1", values.len()),
            },
        )),
    }
}

/// Decodes little-endian float32 (bit-exact) or float64 (only if float32 represents it exactly).
fn floats(dtype: Dtype, bytes: &[u8], start: usize, attribute: &'static str) -> Located<Vec<f32>> {
    let at = offset(start);
    let unsupported = |reason| {
        (
            at,
            JoblibErrorKind::UnsupportedDtype {
                dtype: dtype.to_string(),
                reason,
            },
        )
    };
    if dtype.order == ByteOrder::Big {
        return Err(unsupported(
            "big-endian weights are not supported; re-save the model on a little-endian machine",
        ));
    }
    match (dtype.kind, dtype.itemsize) {
        (DtypeKind::Float, 4) => {
            let mut values = Vec::with_capacity(bytes.len() / 4);
            for chunk in bytes.chunks_exact(4) {
                if let &[a, b, c, d] = chunk {
                    values.push(f32::from_le_bytes([a, b, c, d]));
                }
            }
            if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err((
                    element_offset(start, i, 4, at),
                    JoblibErrorKind::NonFinite {
                        attribute,
                        index: offset(i),
                        value: f64::from(*v),
                    },
                ));
            }
            Ok(values)
        }
        (DtypeKind::Float, 8) => bytes
            .chunks_exact(8)
            .enumerate()
            .map(|(i, c)| {
                let c = <[u8; 8]>::try_from(c).map_err(|_| unsupported("short element"))?;
                let v = f64::from_le_bytes(c);
                finite(v, attribute, offset(i))
                    .and_then(|()| exact_f32(v, attribute, offset(i)))
                    .map_err(|kind| (element_offset(start, i, 8, at), kind))
            })
            .collect(),
        _ => Err(unsupported(
            "weights must be float32 (or float64 values that float32 represents exactly)",
        )),
    }
}

/// The byte offset of element `i` of `size` bytes in data starting at `start` (`fallback` if that
/// overflows, which it cannot for data inside the file).
fn element_offset(start: usize, i: usize, size: usize, fallback: u64) -> u64 {
    i.checked_mul(size)
        .and_then(|d| start.checked_add(d))
        .map_or(fallback, offset)
}

/// A [`JoblibErrorKind::NonFinite`] error unless `v` is finite.
fn finite(v: f64, attribute: &'static str, index: u64) -> Result<(), JoblibErrorKind> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(JoblibErrorKind::NonFinite {
            attribute,
            index,
            value: v,
        })
    }
}

/// `v` as float32 if that is exact (NaN maps to NaN).
fn exact_f32(v: f64, attribute: &'static str, index: u64) -> Result<f32, JoblibErrorKind> {
    let narrowed = v as f32;
    if f64::from(narrowed) == v || v.is_nan() {
        Ok(narrowed)
    } else {
        Err(JoblibErrorKind::NotExactFloat32 {
            attribute,
            index,
            value: v,
        })
    }
}

/// An int as float32 if that is exact.
fn exact_int_f32(i: i64, attribute: &'static str) -> Result<f32, JoblibErrorKind> {
    let not_exact = || JoblibErrorKind::NotExactFloat32 {
        attribute,
        index: 0,
        value: i as f64,
    };
    let wide = exact_int_f64(i).ok_or_else(not_exact)?;
    exact_f32(wide, attribute, 0).map_err(|_| not_exact())
}

/// An int as float64 if that is exact.
fn exact_int_f64(i: i64) -> Option<f64> {
    let wide = i as f64;
    // Comparing through i128 keeps the saturating float-to-int cast from hiding an inexact result.
    let back = wide as i128;
    (back == i128::from(i)).then_some(wide)
}
