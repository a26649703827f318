//! A small, safe reader for the pickle protocol (versions 2–5) with joblib's in-stream numpy
//! arrays.
//!
//! This is not a general unpickler. It runs the pickle virtual machine on a byte slice but only
//! constructs plain data (None, bool, int, float, str, bytes, tuple, list, dict), a fixed set of
//! numpy/joblib objects (`numpy.dtype`, numpy scalars, `joblib.numpy_pickle.NumpyArrayWrapper`,
//! which is replaced by the array that follows it in the stream) and the "plain classes" the caller
//! names: objects created by `NEWOBJ` with no arguments whose state is a `dict` applied by `BUILD`.
//! Any other global is refused when it is looked up, so no code from the file is ever run.
//!
//! Robustness: every read is bounds-checked, every length field is compared with the bytes that
//! remain before anything is allocated, arithmetic on file values is checked, and the sizes of the
//! stack, the mark stack, the memo, the object heap and tuple nesting are limited. Array and byte
//! string payloads are not copied: they borrow from the input.
//!
//! Framing follows Python's pure-Python `pickle._Unpickler` (which joblib subclasses): an opcode
//! and its argument may not cross the end of a `FRAME`, a new frame may only start where the
//! current one ends, and joblib's raw array bytes are read from the underlying stream, which this
//! reader requires to begin exactly at the end of the current frame (joblib's pickler always ends
//! the frame there).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::cast_possible_truncation
)]

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use crate::joblib::JoblibErrorKind as Kind;

/// Most values the visible and hidden parts of the stack may hold together.
const MAX_STACK: usize = 1 << 16;
/// Deepest nesting of `MARK`s.
const MAX_MARKS: usize = 64;
/// Most memo entries.
const MAX_MEMO: usize = 1 << 20;
/// Most mutable objects (dicts, lists, instances, dtypes).
const MAX_HEAP: usize = 1 << 20;
/// Most entries of one dict or list.
const MAX_CONTAINER: usize = 1 << 20;
/// Deepest nesting of tuples (dropping nested tuples recurses).
const MAX_TUPLE_DEPTH: u32 = 32;
/// Most dimensions of an array (numpy allows 64).
const MAX_NDIM: usize = 64;
/// Most attributes `BUILD` may copy from state dicts into objects in one load. Copying is the one
/// operation whose cost is not bounded by its own bytes (a large dict can be applied repeatedly).
const MAX_COPIED_ATTRS: usize = 1 << 18;

/// A class the caller allows: created by `NEWOBJ` with an empty argument tuple, then given a
/// `dict` state by `BUILD`, like a scikit-learn estimator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlainClass {
    /// The module, e.g. `sklearn.linear_model._ridge`.
    pub module: &'static str,
    /// The class name, e.g. `Ridge`.
    pub name: &'static str,
}

/// A failed load: where in the input and what went wrong.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Byte offset of the opcode (or raw array data) that failed.
    pub offset: u64,
    /// What went wrong.
    pub kind: Kind,
}

/// The byte order of a numpy dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteOrder {
    /// `<`.
    Little,
    /// `>`.
    Big,
    /// `|`: byte order does not apply.
    NotApplicable,
    /// `=` or unspecified: the byte order of the machine that reads the file.
    Native,
}

/// The kind of a numeric numpy dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DtypeKind {
    /// `f`: IEEE-754 float.
    Float,
    /// `i`: signed integer.
    Int,
    /// `u`: unsigned integer.
    UInt,
    /// `b`: boolean.
    Bool,
}

/// A numeric numpy dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dtype {
    pub kind: DtypeKind,
    /// Bytes per element: 1, 2, 4 or 8.
    pub itemsize: u8,
    pub order: ByteOrder,
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = match self.order {
            ByteOrder::Little => "<",
            ByteOrder::Big => ">",
            ByteOrder::NotApplicable => "|",
            ByteOrder::Native => "=",
        };
        let kind = match self.kind {
            DtypeKind::Float => 'f',
            DtypeKind::Int => 'i',
            DtypeKind::UInt => 'u',
            DtypeKind::Bool => 'b',
        };
        write!(f, "{order}{kind}{}", self.itemsize)
    }
}

/// A numpy scalar (`numpy._core.multiarray.scalar(dtype, bytes)`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scalar<'a> {
    pub dtype: Dtype,
    /// Exactly `dtype.itemsize` bytes.
    pub bytes: &'a [u8],
    /// Offset of `bytes` in the input.
    pub offset: usize,
}

/// A numpy array read from joblib's in-stream format.
#[derive(Debug)]
pub(crate) struct Array<'a> {
    pub dtype: Dtype,
    /// The shape (the element order, C or Fortran, is checked but not kept: only vectors and
    /// single-row matrices are used, for which both orders agree).
    pub shape: Vec<u64>,
    /// The raw elements: product of `shape` times `dtype.itemsize` bytes.
    pub bytes: &'a [u8],
    /// Offset of `bytes` in the input.
    pub offset: usize,
}

/// An immutable tuple.
#[derive(Debug)]
pub(crate) struct Tuple<'a> {
    pub items: Vec<Value<'a>>,
    /// 1 for a tuple without tuples inside, and so on.
    depth: u32,
}

/// A whitelisted global.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    /// The caller's plain class with this index.
    Plain(usize),
    NumpyArrayWrapper,
    NdArray,
    Dtype,
    Scalar,
}

/// A value on the stack or in the memo. Mutable objects live in the heap and are shared by id.
#[derive(Debug, Clone)]
pub(crate) enum Value<'a> {
    None,
    Bool(bool),
    Int(i64),
    /// A Python float and the offset of its 8 bytes in the input.
    Float {
        value: f64,
        offset: usize,
    },
    Str(Rc<str>),
    Bytes {
        bytes: &'a [u8],
        offset: usize,
    },
    Tuple(Rc<Tuple<'a>>),
    Global(Global),
    /// A heap object.
    Ref(usize),
    Scalar(Scalar<'a>),
    Array(Rc<Array<'a>>),
}

/// A hashable dict key (Python's `True == 1` holds here too).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    None,
    Int(i64),
    Str(Rc<str>),
}

/// Dicts up to this size are searched linearly; larger ones get a hash index.
const DICT_SCAN: usize = 32;

/// An insertion-ordered dict.
#[derive(Debug, Default)]
pub(crate) struct Dict<'a> {
    entries: Vec<(Value<'a>, Value<'a>)>,
    /// The key of each entry.
    keys: Vec<Key>,
    /// Key → entry index, once the dict has more than [`DICT_SCAN`] entries.
    index: Option<HashMap<Key, usize>>,
}

impl<'a> Dict<'a> {
    /// The entries in insertion order.
    pub fn entries(&self) -> &[(Value<'a>, Value<'a>)] {
        &self.entries
    }

    /// The value under a string key.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        let index = match &self.index {
            Some(index) => *index.get(&Key::Str(Rc::from(key)))?,
            None => self
                .keys
                .iter()
                .position(|k| matches!(k, Key::Str(s) if &**s == key))?,
        };
        self.entries.get(index).map(|(_, value)| value)
    }

    fn find(&self, key: &Key) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.keys.iter().position(|k| k == key),
        }
    }

    fn insert(&mut self, key: Value<'a>, value: Value<'a>) -> Result<(), Kind> {
        let hashable = match &key {
            Value::None => Key::None,
            Value::Bool(b) => Key::Int(i64::from(*b)),
            Value::Int(i) => Key::Int(*i),
            Value::Str(s) => Key::Str(Rc::clone(s)),
            _ => {
                return Err(Kind::Malformed {
                    detail: "a dict key is neither a string, an int nor None".into(),
                })
            }
        };
        if let Some(index) = self.find(&hashable) {
            if let Some(slot) = self.entries.get_mut(index) {
                slot.1 = value;
            }
            return Ok(());
        }
        if self.entries.len() >= MAX_CONTAINER {
            return Err(limit("dict entries", MAX_CONTAINER));
        }
        let position = self.entries.len();
        if let Some(index) = &mut self.index {
            index.insert(hashable.clone(), position);
        } else if position >= DICT_SCAN {
            let mut index: HashMap<Key, usize> = self
                .keys
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, k)| (k, i))
                .collect();
            index.insert(hashable.clone(), position);
            self.index = Some(index);
        }
        self.keys.push(hashable);
        self.entries.push((key, value));
        Ok(())
    }
}

/// An object created by `NEWOBJ` of a plain class or of `NumpyArrayWrapper`.
#[derive(Debug)]
pub(crate) struct Instance<'a> {
    pub class: Global,
    /// The attributes set by `BUILD` (string keys only).
    pub attrs: Dict<'a>,
    /// Offset of the `NEWOBJ` opcode, or of the last `BUILD` that set attributes.
    pub offset: usize,
}

/// A mutable object.
#[derive(Debug)]
pub(crate) enum Obj<'a> {
    Dict(Dict<'a>),
    List(Vec<Value<'a>>),
    Instance(Instance<'a>),
    Dtype(Dtype),
}

/// The result of a successful load.
#[derive(Debug)]
pub(crate) struct Pickle<'a> {
    heap: Vec<Obj<'a>>,
    classes: &'static [PlainClass],
    /// The value returned by `STOP`.
    pub root: Value<'a>,
    /// Offset of the `STOP` opcode.
    pub stop_offset: usize,
    /// Length of the input.
    pub input_len: usize,
}

impl<'a> Pickle<'a> {
    /// The heap object a value refers to, if it is a reference.
    pub fn object(&self, value: &Value<'a>) -> Option<&Obj<'a>> {
        match value {
            Value::Ref(id) => self.heap.get(*id),
            _ => None,
        }
    }

    /// The dict a value refers to.
    pub fn dict(&self, value: &Value<'a>) -> Option<&Dict<'a>> {
        match self.object(value) {
            Some(Obj::Dict(dict)) => Some(dict),
            _ => None,
        }
    }

    /// The instance of plain class `class` a value refers to.
    pub fn instance(&self, value: &Value<'a>, class: usize) -> Option<&Instance<'a>> {
        match self.object(value) {
            Some(Obj::Instance(inst)) if inst.class == Global::Plain(class) => Some(inst),
            _ => None,
        }
    }

    /// A short description of a value's type for error messages.
    pub fn type_name(&self, value: &Value<'a>) -> &'static str {
        type_name(&self.heap, self.classes, value)
    }
}

fn type_name(heap: &[Obj<'_>], classes: &[PlainClass], value: &Value<'_>) -> &'static str {
    match value {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float { .. } => "a float",
        Value::Str(_) => "a str",
        Value::Bytes { .. } => "a bytes object",
        Value::Tuple(_) => "a tuple",
        Value::Global(g) => global_name(*g, classes),
        Value::Scalar(_) => "a numpy scalar",
        Value::Array(_) => "a numpy array",
        Value::Ref(id) => match heap.get(*id) {
            Some(Obj::Dict(_)) => "a dict",
            Some(Obj::List(_)) => "a list",
            Some(Obj::Dtype(_)) => "a numpy dtype",
            Some(Obj::Instance(inst)) => match inst.class {
                Global::NumpyArrayWrapper => "a NumpyArrayWrapper without its array",
                Global::Plain(i) => match classes.get(i).map(|c| c.name) {
                    Some("Ridge") => "a Ridge object",
                    _ => "an object",
                },
                _ => "an object",
            },
            None => "a dangling reference",
        },
    }
}

fn global_name(global: Global, classes: &[PlainClass]) -> &'static str {
    match global {
        Global::Plain(i) => match classes.get(i).map(|c| c.name) {
            Some("Ridge") => "the class Ridge",
            _ => "a class",
        },
        Global::NumpyArrayWrapper => "the class NumpyArrayWrapper",
        Global::NdArray => "the class numpy.ndarray",
        Global::Dtype => "the class numpy.dtype",
        Global::Scalar => "the function numpy scalar",
    }
}

fn limit(what: &'static str, limit: usize) -> Kind {
    Kind::LimitExceeded {
        what,
        limit: u64::try_from(limit).unwrap_or(u64::MAX),
    }
}

fn malformed(detail: impl Into<String>) -> Kind {
    Kind::Malformed {
        detail: detail.into(),
    }
}

/// Escapes a name read from the file for an error message and bounds its length.
fn printable(s: &str) -> String {
    let escaped: String = s.escape_debug().take(120).collect();
    if s.escape_debug().nth(120).is_some() {
        format!("{escaped}…")
    } else {
        escaped
    }
}

fn u64_from(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Reads the input with Python's framing rules.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// End of the current frame, if one is open.
    frame_end: Option<usize>,
}

impl<'a> Reader<'a> {
    /// Takes `n` bytes: from the current frame, or from the stream once the frame is used up.
    fn take(&mut self, n: usize) -> Result<&'a [u8], Kind> {
        if self.frame_end == Some(self.pos) {
            self.frame_end = None;
        }
        let end_limit = self.frame_end.unwrap_or(self.data.len());
        let available = end_limit.saturating_sub(self.pos);
        if n > available {
            return Err(if self.frame_end.is_some() {
                Kind::BadFrame {
                    reason: "an opcode or its argument runs past the end of its pickle frame",
                }
            } else {
                Kind::Truncated {
                    needed: u64_from(n),
                    available: u64_from(available),
                }
            });
        }
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| malformed("offset overflow"))?;
        let bytes = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| malformed("offset out of range"))?;
        self.pos = end;
        Ok(bytes)
    }

    /// Takes `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Kind> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| malformed("short read"))
    }

    fn u8(&mut self) -> Result<u8, Kind> {
        Ok(self.array::<1>()?[0])
    }

    /// A length field, which must fit in `usize`.
    fn len_u32(&mut self) -> Result<usize, Kind> {
        let n = u32::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| too_long(u64::from(n)))
    }

    fn len_u64(&mut self) -> Result<usize, Kind> {
        let n = u64::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| too_long(n))
    }

    /// Reads up to and including a newline (for `GLOBAL`) and returns the line without it.
    fn line(&mut self) -> Result<&'a str, Kind> {
        if self.frame_end == Some(self.pos) {
            self.frame_end = None;
        }
        let end_limit = self.frame_end.unwrap_or(self.data.len());
        let rest = self.data.get(self.pos..end_limit).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == b'\n') else {
            return Err(if self.frame_end.is_some() {
                Kind::BadFrame {
                    reason: "a GLOBAL name runs past the end of its pickle frame",
                }
            } else {
                Kind::Truncated {
                    needed: u64_from(rest.len()).saturating_add(1),
                    available: u64_from(rest.len()),
                }
            });
        };
        let line = rest.get(..len).unwrap_or_default();
        let consumed = len
            .checked_add(1)
            .ok_or_else(|| malformed("offset overflow"))?;
        self.take(consumed)?;
        std::str::from_utf8(line).map_err(|_| malformed("a GLOBAL name is not valid UTF-8"))
    }

    /// Starts a frame of `len` bytes at the current position.
    fn start_frame(&mut self, len: u64) -> Result<(), Kind> {
        if let Some(end) = self.frame_end {
            if end != self.pos {
                return Err(Kind::BadFrame {
                    reason: "a new pickle frame starts before the current one ends",
                });
            }
        }
        let available = self.data.len().saturating_sub(self.pos);
        let len = usize::try_from(len).map_err(|_| too_long(len))?;
        if len > available {
            return Err(Kind::Truncated {
                needed: u64_from(len),
                available: u64_from(available),
            });
        }
        self.frame_end = Some(
            self.pos
                .checked_add(len)
                .ok_or_else(|| too_long(u64_from(len)))?,
        );
        Ok(())
    }
}

fn too_long(n: u64) -> Kind {
    Kind::Truncated {
        needed: n,
        available: 0,
    }
}

/// Runs the pickle in `data` and returns the value of its `STOP` opcode.
///
/// `classes` lists the plain classes that may be constructed besides the numpy/joblib objects.
pub(crate) fn load<'a>(
    data: &'a [u8],
    classes: &'static [PlainClass],
) -> Result<Pickle<'a>, Failure> {
    let mut machine = Machine {
        r: Reader {
            data,
            pos: 0,
            frame_end: None,
        },
        classes,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
        heap: Vec::new(),
        op_pos: 0,
        copied_attrs: 0,
    };
    match machine.run() {
        Ok(root) => Ok(Pickle {
            heap: machine.heap,
            classes,
            root,
            stop_offset: machine.op_pos,
            input_len: data.len(),
        }),
        Err(failure) => Err(failure),
    }
}

struct Machine<'a> {
    r: Reader<'a>,
    classes: &'static [PlainClass],
    stack: Vec<Value<'a>>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    /// The memo; its indices are dense, as every pickler writes them.
    memo: Vec<Value<'a>>,
    heap: Vec<Obj<'a>>,
    /// Offset of the opcode being run.
    op_pos: usize,
    /// Attributes copied by `BUILD` so far.
    copied_attrs: usize,
}

impl<'a> Machine<'a> {
    fn at(&self, kind: Kind) -> Failure {
        Failure {
            offset: u64_from(self.op_pos),
            kind,
        }
    }

    fn run(&mut self) -> Result<Value<'a>, Failure> {
        loop {
            self.op_pos = self.r.pos;
            let op = self.r.u8().map_err(|kind| self.at(kind))?;
            match self.step(op) {
                Ok(Some(root)) => {
                    let trailing = self.r.data.len().saturating_sub(self.r.pos);
                    if trailing > 0 {
                        return Err(self.at(Kind::TrailingBytes {
                            count: u64_from(trailing),
                        }));
                    }
                    return Ok(root);
                }
                Ok(None) => {}
                Err(failure) => return Err(failure),
            }
        }
    }

    /// Runs one opcode; returns the result at `STOP`.
    fn step(&mut self, op: u8) -> Result<Option<Value<'a>>, Failure> {
        let result = match op {
            0x80 => self.proto(),
            0x95 => {
                let len = self.r.array().map(u64::from_le_bytes);
                len.and_then(|len| self.r.start_frame(len))
            }
            b'.' => {
                return match self.pop("STOP") {
                    Ok(value) => Ok(Some(value)),
                    Err(kind) => Err(self.at(kind)),
                }
            }
            b'(' => self.mark(),
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'K' => self
                .r
                .u8()
                .and_then(|v| self.push(Value::Int(i64::from(v)))),
            b'M' => self
                .r
                .array()
                .and_then(|b| self.push(Value::Int(i64::from(u16::from_le_bytes(b))))),
            b'J' => self
                .r
                .array()
                .and_then(|b| self.push(Value::Int(i64::from(i32::from_le_bytes(b))))),
            0x8a => self.long1(),
            b'G' => {
                let offset = self.r.pos;
                self.r.array().and_then(|b| {
                    self.push(Value::Float {
                        value: f64::from_be_bytes(b),
                        offset,
                    })
                })
            }
            0x8c => self.r.u8().and_then(|n| self.string(usize::from(n))),
            b'X' => self.r.len_u32().and_then(|n| self.string(n)),
            0x8d => self.r.len_u64().and_then(|n| self.string(n)),
            b'C' => self.r.u8().and_then(|n| self.bytes(usize::from(n))),
            b'B' => self.r.len_u32().and_then(|n| self.bytes(n)),
            0x8e => self.r.len_u64().and_then(|n| self.bytes(n)),
            b')' => self.push_tuple(Vec::new()),
            0x85 => self.tuple_n(1, "TUPLE1"),
            0x86 => self.tuple_n(2, "TUPLE2"),
            0x87 => self.tuple_n(3, "TUPLE3"),
            b't' => self
                .pop_mark("TUPLE")
                .and_then(|items| self.push_tuple(items)),
            b'}' => self.new_object(Obj::Dict(Dict::default())),
            b']' => self.new_object(Obj::List(Vec::new())),
            b's' => self.setitem(),
            b'u' => self.setitems(),
            b'a' => self.append(),
            b'e' => self.appends(),
            0x94 => self.memoize(),
            b'q' => self.r.u8().and_then(|i| self.put(u64::from(i))),
            b'r' => self
                .r
                .array()
                .and_then(|b| self.put(u64::from(u32::from_le_bytes(b)))),
            b'h' => self.r.u8().and_then(|i| self.get(u64::from(i))),
            b'j' => self
                .r
                .array()
                .and_then(|b| self.get(u64::from(u32::from_le_bytes(b)))),
            b'c' => self.global(),
            0x93 => self.stack_global(),
            b'R' => self.reduce(),
            0x81 => self.newobj(),
            b'b' => return self.build().map(|()| None),
            _ => Err(Kind::UnknownOpcode { opcode: op }),
        };
        result.map(|()| None).map_err(|kind| self.at(kind))
    }

    fn proto(&mut self) -> Result<(), Kind> {
        let version = self.r.u8()?;
        if (2..=5).contains(&version) {
            Ok(())
        } else {
            Err(Kind::UnsupportedProtocol { version })
        }
    }

    fn long1(&mut self) -> Result<(), Kind> {
        let n = usize::from(self.r.u8()?);
        let bytes = self.r.take(n)?;
        if n > 8 {
            return Err(malformed(format!(
                "an integer of {n} bytes does not fit in 64 bits"
            )));
        }
        let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut buf = if negative { [0xff; 8] } else { [0; 8] };
        for (slot, byte) in buf.iter_mut().zip(bytes) {
            *slot = *byte;
        }
        self.push(Value::Int(i64::from_le_bytes(buf)))
    }

    fn string(&mut self, n: usize) -> Result<(), Kind> {
        let bytes = self.r.take(n)?;
        let s = std::str::from_utf8(bytes).map_err(|_| malformed("a string is not valid UTF-8"))?;
        self.push(Value::Str(Rc::from(s)))
    }

    fn bytes(&mut self, n: usize) -> Result<(), Kind> {
        let offset = self.r.pos;
        let bytes = self.r.take(n)?;
        self.push(Value::Bytes { bytes, offset })
    }

    /// Index of the first visible stack slot (above the innermost mark).
    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, value: Value<'a>) -> Result<(), Kind> {
        if self.stack.len() >= MAX_STACK {
            return Err(limit("values on the pickle stack", MAX_STACK));
        }
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self, opcode: &'static str) -> Result<Value<'a>, Kind> {
        if self.stack.len() <= self.base() {
            return Err(Kind::StackUnderflow { opcode });
        }
        self.stack.pop().ok_or(Kind::StackUnderflow { opcode })
    }

    fn top(&self, opcode: &'static str) -> Result<&Value<'a>, Kind> {
        if self.stack.len() <= self.base() {
            return Err(Kind::StackUnderflow { opcode });
        }
        self.stack.last().ok_or(Kind::StackUnderflow { opcode })
    }

    fn mark(&mut self) -> Result<(), Kind> {
        if self.marks.len() >= MAX_MARKS {
            return Err(limit("nested MARKs", MAX_MARKS));
        }
        self.marks.push(self.stack.len());
        Ok(())
    }

    fn pop_mark(&mut self, opcode: &'static str) -> Result<Vec<Value<'a>>, Kind> {
        let base = self.marks.pop().ok_or(Kind::MissingMark { opcode })?;
        if base > self.stack.len() {
            return Err(malformed("the mark stack is inconsistent"));
        }
        Ok(self.stack.split_off(base))
    }

    fn push_tuple(&mut self, items: Vec<Value<'a>>) -> Result<(), Kind> {
        let inner = items
            .iter()
            .map(|v| match v {
                Value::Tuple(t) => t.depth,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let depth = inner.saturating_add(1);
        if depth > MAX_TUPLE_DEPTH {
            return Err(limit(
                "levels of nested tuples",
                usize::try_from(MAX_TUPLE_DEPTH).unwrap_or(usize::MAX),
            ));
        }
        self.push(Value::Tuple(Rc::new(Tuple { items, depth })))
    }

    fn tuple_n(&mut self, n: usize, opcode: &'static str) -> Result<(), Kind> {
        let visible = self.stack.len().saturating_sub(self.base());
        if visible < n {
            return Err(Kind::StackUnderflow { opcode });
        }
        let start = self.stack.len().saturating_sub(n);
        let items = self.stack.split_off(start);
        self.push_tuple(items)
    }

    fn new_object(&mut self, obj: Obj<'a>) -> Result<(), Kind> {
        let id = self.alloc(obj)?;
        self.push(Value::Ref(id))
    }

    fn alloc(&mut self, obj: Obj<'a>) -> Result<usize, Kind> {
        if self.heap.len() >= MAX_HEAP {
            return Err(limit("objects", MAX_HEAP));
        }
        self.heap.push(obj);
        Ok(self.heap.len().saturating_sub(1))
    }

    fn type_name(&self, value: &Value<'a>) -> &'static str {
        type_name(&self.heap, self.classes, value)
    }

    /// The heap id of the dict on top of the stack.
    fn top_dict(&self, opcode: &'static str) -> Result<usize, Kind> {
        let top = self.top(opcode)?;
        match top {
            Value::Ref(id) if matches!(self.heap.get(*id), Some(Obj::Dict(_))) => Ok(*id),
            other => Err(Kind::WrongType {
                context: opcode,
                expected: "a dict",
                found: self.type_name(other),
            }),
        }
    }

    fn top_list(&self, opcode: &'static str) -> Result<usize, Kind> {
        let top = self.top(opcode)?;
        match top {
            Value::Ref(id) if matches!(self.heap.get(*id), Some(Obj::List(_))) => Ok(*id),
            other => Err(Kind::WrongType {
                context: opcode,
                expected: "a list",
                found: self.type_name(other),
            }),
        }
    }

    fn dict_insert_all(
        &mut self,
        id: usize,
        pairs: impl Iterator<Item = (Value<'a>, Value<'a>)>,
    ) -> Result<(), Kind> {
        let Some(Obj::Dict(dict)) = self.heap.get_mut(id) else {
            return Err(malformed("a dict reference is dangling"));
        };
        for (key, value) in pairs {
            dict.insert(key, value)?;
        }
        Ok(())
    }

    fn setitem(&mut self) -> Result<(), Kind> {
        let value = self.pop("SETITEM")?;
        let key = self.pop("SETITEM")?;
        let id = self.top_dict("SETITEM")?;
        self.dict_insert_all(id, std::iter::once((key, value)))
    }

    fn setitems(&mut self) -> Result<(), Kind> {
        let items = self.pop_mark("SETITEMS")?;
        if items.len() % 2 != 0 {
            return Err(malformed("SETITEMS has an odd number of items"));
        }
        let id = self.top_dict("SETITEMS")?;
        let mut it = items.into_iter();
        let pairs = std::iter::from_fn(|| Some((it.next()?, it.next()?)));
        self.dict_insert_all(id, pairs)
    }

    fn list_extend(&mut self, id: usize, items: Vec<Value<'a>>) -> Result<(), Kind> {
        let Some(Obj::List(list)) = self.heap.get_mut(id) else {
            return Err(malformed("a list reference is dangling"));
        };
        if items.len() > MAX_CONTAINER.saturating_sub(list.len()) {
            return Err(limit("list items", MAX_CONTAINER));
        }
        list.extend(items);
        Ok(())
    }

    fn append(&mut self) -> Result<(), Kind> {
        let value = self.pop("APPEND")?;
        let id = self.top_list("APPEND")?;
        self.list_extend(id, vec![value])
    }

    fn appends(&mut self) -> Result<(), Kind> {
        let items = self.pop_mark("APPENDS")?;
        let id = self.top_list("APPENDS")?;
        self.list_extend(id, items)
    }

    fn memoize(&mut self) -> Result<(), Kind> {
        let index = u64_from(self.memo.len());
        self.put(index)
    }

    /// Stores the top of the stack in the memo: replacing an entry or adding the next one.
    fn put(&mut self, index: u64) -> Result<(), Kind> {
        let value = self.top("MEMOIZE")?.clone();
        let slot = usize::try_from(index)
            .ok()
            .filter(|&i| i <= self.memo.len());
        match slot {
            Some(i) if i < self.memo.len() => {
                if let Some(entry) = self.memo.get_mut(i) {
                    *entry = value;
                }
            }
            Some(_) if self.memo.len() >= MAX_MEMO => {
                return Err(limit("memo entries", MAX_MEMO));
            }
            Some(_) => self.memo.push(value),
            None => {
                return Err(malformed(format!(
                    "memo index {index} skips unused entries (picklers number them consecutively)"
                )))
            }
        }
        Ok(())
    }

    fn get(&mut self, index: u64) -> Result<(), Kind> {
        let value = usize::try_from(index)
            .ok()
            .and_then(|i| self.memo.get(i))
            .cloned()
            .ok_or(Kind::BadMemoIndex { index })?;
        self.push(value)
    }

    fn global(&mut self) -> Result<(), Kind> {
        let module = self.r.line()?;
        let name = self.r.line()?;
        let global = self.find_global(module, name)?;
        self.push(Value::Global(global))
    }

    fn stack_global(&mut self) -> Result<(), Kind> {
        let name = self.pop("STACK_GLOBAL")?;
        let module = self.pop("STACK_GLOBAL")?;
        let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
            return Err(Kind::WrongType {
                context: "STACK_GLOBAL",
                expected: "two strings",
                found: if matches!(module, Value::Str(_)) {
                    self.type_name(&name)
                } else {
                    self.type_name(&module)
                },
            });
        };
        let global = self.find_global(module, name)?;
        self.push(Value::Global(global))
    }

    fn find_global(&self, module: &str, name: &str) -> Result<Global, Kind> {
        let global = match (module, name) {
            ("joblib.numpy_pickle", "NumpyArrayWrapper") => Global::NumpyArrayWrapper,
            ("numpy", "ndarray") => Global::NdArray,
            ("numpy", "dtype") => Global::Dtype,
            ("numpy._core.multiarray" | "numpy.core.multiarray", "scalar") => Global::Scalar,
            _ => {
                let index = self
                    .classes
                    .iter()
                    .position(|c| c.module == module && c.name == name)
                    .ok_or_else(|| Kind::UnsupportedGlobal {
                        module: printable(module),
                        name: printable(name),
                    })?;
                Global::Plain(index)
            }
        };
        Ok(global)
    }

    fn args_tuple(&self, args: &Value<'a>, context: &'static str) -> Result<Rc<Tuple<'a>>, Kind> {
        match args {
            Value::Tuple(t) => Ok(Rc::clone(t)),
            other => Err(Kind::WrongType {
                context,
                expected: "a tuple of arguments",
                found: self.type_name(other),
            }),
        }
    }

    fn reduce(&mut self) -> Result<(), Kind> {
        let args = self.pop("REDUCE")?;
        let func = self.pop("REDUCE")?;
        let args = self.args_tuple(&args, "REDUCE")?;
        let value = match func {
            Value::Global(Global::Dtype) => {
                let dtype = self.make_dtype(&args.items)?;
                Value::Ref(self.alloc(Obj::Dtype(dtype))?)
            }
            Value::Global(Global::Scalar) => Value::Scalar(self.make_scalar(&args.items)?),
            other => {
                return Err(Kind::WrongType {
                    context: "REDUCE",
                    expected: "numpy.dtype or the numpy scalar constructor",
                    found: self.type_name(&other),
                })
            }
        };
        self.push(value)
    }

    /// `numpy.dtype(str, align, copy)`.
    fn make_dtype(&self, args: &[Value<'a>]) -> Result<Dtype, Kind> {
        let (Some(Value::Str(code)), rest) = (args.first(), args.get(1..).unwrap_or_default())
        else {
            return Err(Kind::WrongType {
                context: "numpy.dtype arguments",
                expected: "a type code string such as 'f4'",
                found: args.first().map_or("nothing", |v| self.type_name(v)),
            });
        };
        if rest.len() > 2
            || !rest
                .iter()
                .all(|v| matches!(v, Value::Bool(_) | Value::Int(0 | 1)))
        {
            return Err(malformed(
                "numpy.dtype takes a type code and up to two flags (align, copy)",
            ));
        }
        parse_dtype(code)
    }

    /// `numpy._core.multiarray.scalar(dtype, bytes)`.
    fn make_scalar(&self, args: &[Value<'a>]) -> Result<Scalar<'a>, Kind> {
        let [dtype, Value::Bytes { bytes, offset }] = args else {
            return Err(malformed(
                "a numpy scalar needs a dtype and its raw bytes (object scalars are not supported)",
            ));
        };
        let dtype = match self.object(dtype) {
            Some(Obj::Dtype(d)) => *d,
            _ => {
                return Err(Kind::WrongType {
                    context: "numpy scalar",
                    expected: "a numpy dtype",
                    found: self.type_name(dtype),
                })
            }
        };
        if bytes.len() != usize::from(dtype.itemsize) {
            return Err(malformed(format!(
                "a numpy scalar of dtype {dtype} has {} bytes instead of {}",
                bytes.len(),
                dtype.itemsize
            )));
        }
        Ok(Scalar {
            dtype,
            bytes,
            offset: *offset,
        })
    }

    fn object(&self, value: &Value<'a>) -> Option<&Obj<'a>> {
        match value {
            Value::Ref(id) => self.heap.get(*id),
            _ => None,
        }
    }

    fn newobj(&mut self) -> Result<(), Kind> {
        let args = self.pop("NEWOBJ")?;
        let cls = self.pop("NEWOBJ")?;
        let args = self.args_tuple(&args, "NEWOBJ")?;
        let class = match cls {
            Value::Global(g @ (Global::Plain(_) | Global::NumpyArrayWrapper)) => g,
            other => {
                return Err(Kind::WrongType {
                    context: "NEWOBJ",
                    expected: "an allowed class",
                    found: self.type_name(&other),
                })
            }
        };
        if !args.items.is_empty() {
            return Err(malformed(
                "NEWOBJ passes arguments to a class that is created without any",
            ));
        }
        self.new_object(Obj::Instance(Instance {
            class,
            attrs: Dict::default(),
            offset: self.op_pos,
        }))
    }

    fn build(&mut self) -> Result<(), Failure> {
        let state = self.pop("BUILD").map_err(|k| self.at(k))?;
        let target = self.top("BUILD").map_err(|k| self.at(k))?.clone();
        let id = match target {
            Value::Ref(id) => id,
            other => {
                let found = self.type_name(&other);
                return Err(self.at(Kind::WrongType {
                    context: "BUILD",
                    expected: "an object with state",
                    found,
                }));
            }
        };
        let wrapper = match self.heap.get(id) {
            Some(Obj::Dtype(_)) => {
                return self.build_dtype(id, &state).map_err(|k| self.at(k));
            }
            Some(Obj::Instance(inst)) => inst.class == Global::NumpyArrayWrapper,
            _ => {
                let found = self.type_name(&Value::Ref(id));
                return Err(self.at(Kind::WrongType {
                    context: "BUILD",
                    expected: "an object with state",
                    found,
                }));
            }
        };
        self.build_instance(id, &state).map_err(|k| self.at(k))?;
        if wrapper {
            let array = self.read_array(id)?;
            let underflow = self.at(Kind::StackUnderflow { opcode: "BUILD" });
            let top = self.stack.last_mut().ok_or(underflow)?;
            *top = Value::Array(Rc::new(array));
        }
        Ok(())
    }

    /// `BUILD` of a plain object or array wrapper: `__dict__.update(state)`.
    fn build_instance(&mut self, id: usize, state: &Value<'a>) -> Result<(), Kind> {
        let Some(Obj::Dict(dict)) = self.object(state) else {
            return Err(Kind::WrongType {
                context: "BUILD",
                expected: "a dict of attributes",
                found: self.type_name(state),
            });
        };
        let copied = self
            .copied_attrs
            .checked_add(dict.entries().len())
            .filter(|&n| n <= MAX_COPIED_ATTRS)
            .ok_or_else(|| limit("object attributes", MAX_COPIED_ATTRS))?;
        let pairs: Vec<_> = dict.entries().to_vec();
        if let Some((key, _)) = pairs.iter().find(|(k, _)| !matches!(k, Value::Str(_))) {
            return Err(Kind::WrongType {
                context: "attribute name",
                expected: "a str",
                found: self.type_name(key),
            });
        }
        let op_pos = self.op_pos;
        let Some(Obj::Instance(inst)) = self.heap.get_mut(id) else {
            return Err(malformed("an object reference is dangling"));
        };
        for (key, value) in pairs {
            inst.attrs.insert(key, value)?;
        }
        inst.offset = op_pos;
        self.copied_attrs = copied;
        Ok(())
    }

    /// `BUILD` of a dtype: `dtype.__setstate__((version, byteorder, subarray, names, fields,
    /// ...))`.
    fn build_dtype(&mut self, id: usize, state: &Value<'a>) -> Result<(), Kind> {
        let Value::Tuple(state) = state else {
            return Err(Kind::WrongType {
                context: "numpy dtype state",
                expected: "a tuple",
                found: self.type_name(state),
            });
        };
        let Some(Obj::Dtype(dtype)) = self.heap.get(id) else {
            return Err(malformed("a dtype reference is dangling"));
        };
        let dtype = *dtype;
        let invalid = |reason: String| Kind::InvalidDtype {
            dtype: dtype.to_string(),
            reason,
        };
        let items = &state.items;
        let (order, elsize, alignment, flags, metadata) = match items.as_slice() {
            [Value::Int(3 | 4), Value::Str(order), Value::None, Value::None, Value::None, elsize, alignment, flags, metadata @ ..]
                if metadata.len() <= 1 =>
            {
                let order = match &**order {
                    "<" => ByteOrder::Little,
                    ">" => ByteOrder::Big,
                    "|" => ByteOrder::NotApplicable,
                    "=" => ByteOrder::Native,
                    _ => return Err(malformed("a numpy dtype has an invalid byte order")),
                };
                (order, elsize, alignment, flags, metadata.first())
            }
            [Value::Int(3 | 4), Value::Str(_), ..] if matches!(items.len(), 8 | 9) => {
                return Err(Kind::UnsupportedDtype {
                    dtype: "structured or sub-array dtype".into(),
                    reason: "only plain numeric dtypes can be read",
                })
            }
            _ => return Err(malformed("a numpy dtype state is not (3, byteorder, ...)")),
        };
        // numpy's `dtype.__setstate__` refuses anything but ints for the item size, alignment
        // and flags, and a numpy dtype's pickle gives -1 for the size and alignment of a built-in
        // type. Any other size or alignment does not belong to this kind.
        let size = i64::from(dtype.itemsize);
        for (what, value) in [("item size", elsize), ("alignment", alignment)] {
            match value {
                Value::Int(-1) => {}
                Value::Int(n) if *n == size => {}
                Value::Int(n) => {
                    return Err(invalid(format!(
                        "its pickled state gives {what} {n}, but {dtype} has {size} bytes \
                         (numpy writes -1 for a built-in type)"
                    )))
                }
                other => {
                    return Err(invalid(format!(
                        "its pickled state gives {} as the {what}, where numpy needs an int",
                        self.type_name(other)
                    )))
                }
            }
        }
        match flags {
            Value::Int(n) if *n >= 0 => {}
            other => {
                return Err(invalid(format!(
                    "its pickled state gives {} as the flags, where numpy needs an int ≥ 0",
                    if matches!(other, Value::Int(_)) {
                        "a negative int"
                    } else {
                        self.type_name(other)
                    }
                )))
            }
        }
        match metadata {
            None | Some(Value::None) => {}
            Some(value) if matches!(self.object(value), Some(Obj::Dict(_))) => {}
            Some(other) => {
                return Err(invalid(format!(
                    "its pickled state gives {} as the metadata, where numpy needs a dict or None",
                    self.type_name(other)
                )))
            }
        }
        let Some(Obj::Dtype(dtype)) = self.heap.get_mut(id) else {
            return Err(malformed("a dtype reference is dangling"));
        };
        dtype.order = order;
        Ok(())
    }

    /// Reads the raw array that follows a `NumpyArrayWrapper`'s `BUILD` (joblib's `read_array`).
    fn read_array(&mut self, id: usize) -> Result<Array<'a>, Failure> {
        let (dtype, shape, aligned) = self.wrapper_state(id).map_err(|k| self.at(k))?;
        if let Some(end) = self.r.frame_end {
            if end != self.r.pos {
                return Err(self.at(Kind::BadFrame {
                    reason: "joblib array data must start where the pickle frame ends",
                }));
            }
            self.r.frame_end = None;
        }
        if aligned {
            let pad_pos = self.r.pos;
            let padded = self
                .r
                .u8()
                .and_then(|n| self.r.take(usize::from(n)).map(|_| ()));
            padded.map_err(|kind| Failure {
                offset: u64_from(pad_pos),
                kind,
            })?;
        }
        let offset = self.r.pos;
        let at_data = |kind| Failure {
            offset: u64_from(offset),
            kind,
        };
        let count = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| at_data(too_long(u64::MAX)))?;
        let nbytes = count
            .checked_mul(u64::from(dtype.itemsize))
            .ok_or_else(|| at_data(too_long(u64::MAX)))?;
        let nbytes = usize::try_from(nbytes).map_err(|_| at_data(too_long(nbytes)))?;
        let bytes = self.r.take(nbytes).map_err(at_data)?;
        Ok(Array {
            dtype,
            shape,
            bytes,
            offset,
        })
    }

    /// The dtype, shape and alignment flag of an array wrapper (whose order must be 'C' or 'F').
    fn wrapper_state(&self, id: usize) -> Result<(Dtype, Vec<u64>, bool), Kind> {
        let Some(Obj::Instance(inst)) = self.heap.get(id) else {
            return Err(malformed("an array wrapper reference is dangling"));
        };
        let attrs = &inst.attrs;
        let field = |name: &'static str| {
            attrs.get(name).ok_or_else(|| {
                malformed(format!("joblib's NumpyArrayWrapper state has no {name:?}"))
            })
        };
        let wrong =
            |context: &'static str, expected: &'static str, found: &Value<'a>| Kind::WrongType {
                context,
                expected,
                found: self.type_name(found),
            };
        match field("subclass")? {
            Value::Global(Global::NdArray) => {}
            other => return Err(wrong("array subclass", "numpy.ndarray", other)),
        }
        let dtype = match field("dtype")? {
            Value::Ref(d) => match self.heap.get(*d) {
                Some(Obj::Dtype(dtype)) => *dtype,
                _ => return Err(wrong("array dtype", "a numpy dtype", &Value::Ref(*d))),
            },
            other => return Err(wrong("array dtype", "a numpy dtype", other)),
        };
        let shape = match field("shape")? {
            Value::Tuple(t) if t.items.len() <= MAX_NDIM => {
                t.items
                    .iter()
                    .map(|d| match d {
                        Value::Int(n) => u64::try_from(*n)
                            .map_err(|_| malformed("an array dimension is negative")),
                        other => Err(wrong("array shape", "an int", other)),
                    })
                    .collect::<Result<Vec<u64>, Kind>>()?
            }
            Value::Tuple(_) => return Err(limit("array dimensions", MAX_NDIM)),
            other => return Err(wrong("array shape", "a tuple", other)),
        };
        match field("order")? {
            Value::Str(s) if matches!(&**s, "C" | "F") => {}
            Value::Str(_) => return Err(malformed("an array order is neither 'C' nor 'F'")),
            other => return Err(wrong("array order", "a str", other)),
        }
        let aligned = match attrs.get("numpy_array_alignment_bytes") {
            None | Some(Value::None) => false,
            Some(Value::Int(_)) => true,
            Some(other) => {
                return Err(wrong(
                    "numpy_array_alignment_bytes",
                    "an int or None",
                    other,
                ))
            }
        };
        Ok((dtype, shape, aligned))
    }
}

/// numpy's one-character type codes (`np.dtype('d')` is float64, `'b'` int8, `'?'` bool, …).
const NUMPY_CHAR_CODES: &str = "?bBhHiIlLqQpPnNeEfdgFDGSaUVOMm";

/// The type names `numpy.dtype` accepts (numpy 1.x and 2.x), without sized datetime units.
const NUMPY_TYPE_NAMES: &[&str] = &[
    "bool",
    "bool_",
    "bool8",
    "byte",
    "ubyte",
    "short",
    "ushort",
    "intc",
    "uintc",
    "int",
    "uint",
    "int_",
    "long",
    "ulong",
    "longlong",
    "ulonglong",
    "intp",
    "uintp",
    "int0",
    "uint0",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "half",
    "single",
    "double",
    "float",
    "float_",
    "longdouble",
    "longfloat",
    "float16",
    "float32",
    "float64",
    "float96",
    "float128",
    "csingle",
    "singlecomplex",
    "cdouble",
    "cfloat",
    "complex",
    "complex_",
    "clongdouble",
    "clongfloat",
    "longcomplex",
    "complex64",
    "complex128",
    "complex192",
    "complex256",
    "object",
    "object_",
    "object0",
    "bytes",
    "bytes_",
    "bytes0",
    "string_",
    "str",
    "str_",
    "unicode",
    "unicode_",
    "str0",
    "void",
    "void0",
    "datetime64",
    "timedelta64",
];

/// Parses a numpy type code such as `f4` or `<f8`, following the rules of `numpy.dtype(code)`.
///
/// A code numpy itself refuses (`f3`, `f5`, `f0`, `i3`, `b2`, `f4x`, `<`, `x4`, …) is a
/// [`Kind::InvalidDtype`]: no numpy wrote it, so the file is damaged. A dtype numpy accepts but
/// this reader cannot use (`f2` float16, `f16` long double, `c8`, `S5`, `U3`, `M8[ns]`, a
/// one-character code such as `d`, a structured or sub-array dtype, a type name such as
/// `float32`) is a [`Kind::UnsupportedDtype`]. numpy pickles a plain dtype as its kind and item
/// size (`f4`, `i8`, `b1`), which is all that is read: floats of 4 or 8 bytes, integers of 1, 2, 4
/// or 8 bytes and `b1` booleans.
fn parse_dtype(code: &str) -> Result<Dtype, Kind> {
    let shown = printable(code);
    let invalid = |reason: String| Kind::InvalidDtype {
        dtype: shown.clone(),
        reason,
    };
    let unsupported = |reason: &'static str| Kind::UnsupportedDtype {
        dtype: shown.clone(),
        reason,
    };
    let (order, rest) = match code.as_bytes().first() {
        Some(b'<') => (ByteOrder::Little, code.get(1..)),
        Some(b'>') => (ByteOrder::Big, code.get(1..)),
        Some(b'|') => (ByteOrder::NotApplicable, code.get(1..)),
        Some(b'=') => (ByteOrder::Native, code.get(1..)),
        _ => (ByteOrder::Native, Some(code)),
    };
    let rest = rest.unwrap_or_default();
    let mut chars = rest.chars();
    let Some(kind) = chars.next() else {
        return Err(invalid(if code.is_empty() {
            "the type code is empty".into()
        } else {
            "a byte order without a type".into()
        }));
    };
    let tail = chars.as_str();
    if code.contains(',') || kind.is_ascii_digit() {
        return Err(unsupported(
            "structured and sub-array dtypes cannot be read; weights are plain numeric arrays",
        ));
    }
    if tail.is_empty() {
        return Err(if NUMPY_CHAR_CODES.contains(kind) {
            unsupported(
                "one-character type codes are not read: numpy pickles a dtype as its kind and \
                 item size, such as f4",
            )
        } else {
            invalid(format!(
                "`{}` is not a numpy type code",
                kind.escape_debug()
            ))
        });
    }
    let size_len = tail.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, garbage) = tail.split_at(size_len);
    if digits.is_empty() {
        return Err(if NUMPY_TYPE_NAMES.contains(&code) {
            unsupported(
                "type names are not read: numpy pickles a dtype as its kind and item size, such \
                 as f4",
            )
        } else {
            invalid("neither a kind and item size such as f4 nor a numpy type name".into())
        });
    }
    if !garbage.is_empty() {
        if matches!(kind, 'M' | 'm') && garbage.starts_with('[') {
            return Err(unsupported("datetime and timedelta dtypes cannot be read"));
        }
        return Err(invalid(format!(
            "`{}` follows the item size",
            printable(garbage)
        )));
    }
    // numpy parses the size as a C int.
    let size: u64 = match digits.parse() {
        Ok(size) if size <= u64::from(i32::MAX.unsigned_abs()) => size,
        _ => return Err(invalid("the item size is out of range".into())),
    };
    let no_such = |what: &str, sizes: &str| {
        invalid(format!(
            "numpy has no {size}-byte {what} ({what} item sizes are {sizes})"
        ))
    };
    let kind = match (kind, size) {
        ('f', 4 | 8) => DtypeKind::Float,
        ('f', 2) => return Err(unsupported("float16 weights cannot be read; use float32")),
        ('f', 16) => {
            return Err(unsupported(
                "long double weights cannot be read; use float32",
            ))
        }
        ('f', _) => return Err(no_such("float", "2, 4, 8 and 16")),
        ('i', 1 | 2 | 4 | 8) => DtypeKind::Int,
        ('i', _) => return Err(no_such("signed integer", "1, 2, 4 and 8")),
        ('u', 1 | 2 | 4 | 8) => DtypeKind::UInt,
        ('u', _) => return Err(no_such("unsigned integer", "1, 2, 4 and 8")),
        ('b', 1) => DtypeKind::Bool,
        ('b', _) => return Err(no_such("boolean", "1")),
        ('c', 8 | 16 | 32) => return Err(unsupported("complex numbers cannot be read")),
        ('c', _) => return Err(no_such("complex", "8, 16 and 32")),
        ('S' | 'a' | 'U' | 'V', _) => {
            return Err(unsupported("string and void dtypes cannot be read"))
        }
        ('O', 4 | 8) => return Err(unsupported("object arrays cannot be read")),
        ('O', _) => return Err(no_such("object pointer", "4 and 8")),
        ('M' | 'm', 8) => return Err(unsupported("datetime and timedelta dtypes cannot be read")),
        ('M' | 'm', _) => return Err(no_such("datetime", "8")),
        (other, _) => {
            return Err(invalid(format!(
                "`{}` is not a numpy kind (b, i, u, f, c, …)",
                other.escape_debug()
            )))
        }
    };
    // The match above only lets 1-, 2-, 4- and 8-byte sizes through.
    let itemsize =
        u8::try_from(size).map_err(|_| invalid("the item size is out of range".into()))?;
    Ok(Dtype {
        kind,
        itemsize,
        order,
    })
}
