//! Training and evaluation data: JSONL records of (query, model, budget) → true score and output
//! tokens, with query embeddings inline or in a separate JSONL file.
//!
//! # Records
//!
//! One JSON object a line (blank lines are skipped):
//!
//! ```json
//! {"query_id": "q17", "model": "GLM-4.5-Air", "budget": 100, "score": 1.0, "output_tokens": 87}
//! {"query_id": "q17", "model": "GLM-4.5-Air", "budget": "unlimited", "score": 1.0, "output_tokens": 412,
//!  "embedding": [0.012, -0.034, …], "split": "test", "input_tokens": 57}
//! ```
//!
//! | field | | meaning |
//! |---|---|---|
//! | `query_id` | required | string or integer (compared as text: `7` and `"7"` are one query) |
//! | `model` | required | a model of the pool config |
//! | `budget` | required | a positive integer number of tokens, or `"unlimited"` |
//! | `score` | required | the answer's true quality, a number in [0, 1] |
//! | `output_tokens` | required | the answer's true output tokens, a number ≥ 0 |
//! | `embedding` | optional | the query's embedding (on at least one record of the query, unless an embeddings file is given; every copy must be the same vector) |
//! | `split` | optional | `"train"` or `"test"`; the same on every record of a query |
//! | `input_tokens` | optional | the query's input tokens (eval's cost; default 100); the same on every record of a query |
//!
//! Other fields are ignored. Every query must have a record for every (pool model, budget) the
//! router has a head for: each limited budget and `unlimited`. Records of budgets the router does
//! not use are ignored. A (query, model, budget) given twice is an error.
//!
//! # Embeddings file
//!
//! JSONL, one `{"query_id" | "id" | "query", "embedding": […], "input_tokens"?}` a line: the key is
//! `query_id`, else `id`, else the `query` text (so `r2 embed` output can be used as it is when the
//! records' `query_id` is the query text). An embedding on a record wins over the file's.
//!
//! # Splits
//!
//! Training uses the queries whose records say `"split": "train"` or nothing; evaluation uses the
//! `"test"` queries, or every query when the file has no `"test"` record.
//!
//! Every error names the file and the line.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use r2_core::Budget;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Input tokens of a query whose data gives none (the same default as `r2 route --embeddings`).
pub const DEFAULT_INPUT_TOKENS: u64 = 100;

/// What can go wrong when reading data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error(transparent)]
    Io(#[from] r2_core::IoError),
    /// A line is malformed or inconsistent with the rest.
    #[error("{}: line {line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The file as a whole cannot be used.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

impl r2_core::Classify for DataError {
    fn class(&self) -> r2_core::ErrorClass {
        use r2_core::ErrorClass::InvalidInput;
        match self {
            DataError::Io(e) => e.class(),
            DataError::Line { .. } | DataError::File { .. } => InvalidInput,
        }
    }
}

/// Which queries to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitFilter {
    /// `"split": "train"` or no split (training).
    Train,
    /// `"split": "test"` only.
    Test,
    /// The `"test"` queries, or every query when no record has `"split": "test"` (evaluation).
    TestOrAll,
    /// Every query.
    All,
}

/// A query's split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// What to read.
#[derive(Debug, Clone)]
pub struct LoadOptions<'a> {
    /// The pool's model names, in pool order; records of other models are an error.
    pub models: &'a [String],
    /// Where the models come from, for the unknown-model error (e.g. the pool config's path).
    pub models_source: &'a str,
    /// The limited budgets to keep (ascending); `None`: every limited budget in the selected queries.
    pub budgets: Option<&'a [u32]>,
    /// Which queries to keep.
    pub split: SplitFilter,
    /// A separate embeddings file.
    pub embeddings: Option<&'a Path>,
    /// The embedding length the data must have (the pool's `embedding_dim`).
    pub dim: Option<usize>,
}

/// One query of a [`Dataset`].
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Its `query_id`, as text.
    pub id: String,
    /// The line of its first record.
    pub line: usize,
    /// Input tokens (from the data, else [`DEFAULT_INPUT_TOKENS`]).
    pub input_tokens: u64,
    /// Its split, if the data gave one.
    pub split: Option<Split>,
}

/// Labels and embeddings of the selected queries, dense.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The records file.
    pub path: PathBuf,
    /// Model names, pool order.
    pub models: Vec<String>,
    /// Limited budgets, ascending. Slot `s < budgets.len()` is budget `s`; slot `budgets.len()` is
    /// unlimited.
    pub budgets: Vec<u32>,
    /// The selected queries, in the order of their first record.
    pub queries: Vec<Query>,
    /// Embedding length.
    pub dim: usize,
    /// Row-major `[queries, dim]`.
    pub embeddings: Vec<f64>,
    /// True scores, index [`Dataset::cell`].
    pub scores: Vec<f64>,
    /// True output tokens, index [`Dataset::cell`].
    pub tokens: Vec<f64>,
    /// Which queries were selected, in words (for reports).
    pub selection: String,
}

impl Dataset {
    /// Slots per model: limited budgets + unlimited.
    pub fn slots(&self) -> usize {
        self.budgets.len() + 1
    }

    /// Index of (query, model, slot) in [`Dataset::scores`] and [`Dataset::tokens`].
    #[inline]
    pub fn cell(&self, query: usize, model: usize, slot: usize) -> usize {
        (query * self.models.len() + model) * self.slots() + slot
    }

    /// The embedding of query `q`.
    pub fn embedding(&self, q: usize) -> &[f64] {
        &self.embeddings[q * self.dim..(q + 1) * self.dim]
    }
}

/// A query id as text, borrowed from the line when it can be.
struct IdText<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for IdText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = IdText<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(IdText(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IdText(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(IdText(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(IdText(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(IdText(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow)]
    query_id: IdText<'a>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    budget: Budget,
    score: f64,
    output_tokens: f64,
    #[serde(default)]
    embedding: Option<Vec<f64>>,
    #[serde(default, borrow)]
    split: Option<Cow<'a, str>>,
    #[serde(default)]
    input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct RawEmbedding<'a> {
    #[serde(default, borrow)]
    query_id: Option<IdText<'a>>,
    #[serde(default, borrow)]
    id: Option<IdText<'a>>,
    #[serde(default, borrow)]
    query: Option<Cow<'a, str>>,
    embedding: Vec<f64>,
    #[serde(default)]
    input_tokens: Option<u64>,
}

/// Budget value of `unlimited` in [`Rec`].
const UNLIMITED: u32 = u32::MAX;

/// One record, compact.
struct Rec {
    score: f64,
    tokens: f64,
    query: u32,
    line: u32,
    budget: u32,
    model: u16,
}

struct QueryState {
    id: String,
    line: usize,
    split: Option<Split>,
    input_tokens: Option<(u64, usize)>,
    /// (line, vector) of the first inline embedding.
    embedding: Option<(usize, Vec<f64>)>,
}

/// Reads `path` (and the embeddings file) into a dense [`Dataset`]: every check of the module
/// documentation, each error naming the file and line.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    let line_error = |line: usize, message: String| DataError::Line {
        path: path.to_path_buf(),
        line,
        message,
    };
    if options.models.len() > usize::from(u16::MAX) {
        return Err(DataError::File {
            path: path.to_path_buf(),
            message: "more than 65535 models".into(),
        });
    }
    let model_index: HashMap<&str, u16> = options
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i as u16))
        .collect();

    let mut queries: Vec<QueryState> = Vec::new();
    let mut query_index: HashMap<String, u32> = HashMap::new();
    let mut records: Vec<Rec> = Vec::new();
    // The embedding length, and the line that set it.
    let mut dim: Option<(usize, usize)> = None;

    for_each_line(path, |number, line| {
        let raw: RawRecord =
            serde_json::from_str(line).map_err(|e| json_error(path, number, line, &e))?;
        let model = *model_index.get(raw.model.as_ref()).ok_or_else(|| {
            line_error(
                number,
                format!(
                    "unknown model `{}`: it is not in the pool config ({}), whose models are: {}",
                    raw.model,
                    options.models_source,
                    options.models.join(", ")
                ),
            )
        })?;
        if !(0.0..=1.0).contains(&raw.score) {
            return Err(line_error(
                number,
                format!("`score` must be a number in [0, 1], got {}", raw.score),
            ));
        }
        if !(raw.output_tokens.is_finite() && raw.output_tokens >= 0.0) {
            return Err(line_error(
                number,
                format!(
                    "`output_tokens` must be a number ≥ 0, got {}",
                    raw.output_tokens
                ),
            ));
        }
        let split = match raw.split.as_deref() {
            None => None,
            Some("train") => Some(Split::Train),
            Some("test") => Some(Split::Test),
            Some(other) => {
                return Err(line_error(
                    number,
                    format!("`split` must be \"train\" or \"test\", got {other:?}"),
                ))
            }
        };
        let q = match query_index.get(raw.query_id.0.as_ref()) {
            Some(&q) => q,
            None => {
                let q = u32::try_from(queries.len())
                    .map_err(|_| line_error(number, "more than 4 billion queries".into()))?;
                query_index.insert(raw.query_id.0.clone().into_owned(), q);
                queries.push(QueryState {
                    id: raw.query_id.0.into_owned(),
                    line: number,
                    split,
                    input_tokens: None,
                    embedding: None,
                });
                q
            }
        };
        let state = &mut queries[q as usize];
        if state.split != split {
            return Err(line_error(
                number,
                format!(
                    "query `{}` has split {} here but {} on line {}: a query's records must \
                     share one split",
                    state.id,
                    split_name(split),
                    split_name(state.split),
                    state.line
                ),
            ));
        }
        if let Some(tokens) = raw.input_tokens {
            match state.input_tokens {
                Some((earlier, at)) if earlier != tokens => {
                    return Err(line_error(
                        number,
                        format!(
                            "query `{}` has input_tokens {tokens} here but {earlier} on line {at}",
                            state.id
                        ),
                    ))
                }
                Some(_) => {}
                None => state.input_tokens = Some((tokens, number)),
            }
        }
        if let Some(embedding) = raw.embedding {
            check_dim(&mut dim, embedding.len(), number, options.dim)
                .map_err(|m| line_error(number, m))?;
            match &state.embedding {
                Some((at, earlier)) if *earlier != embedding => {
                    return Err(line_error(
                        number,
                        format!(
                            "query `{}` has another embedding here than on line {at}",
                            state.id
                        ),
                    ))
                }
                Some(_) => {}
                None => state.embedding = Some((number, embedding)),
            }
        }
        records.push(Rec {
            score: raw.score,
            tokens: raw.output_tokens,
            query: q,
            line: u32::try_from(number).unwrap_or(u32::MAX),
            budget: match raw.budget {
                Budget::Tokens(b) => b,
                Budget::Unlimited => UNLIMITED,
            },
            model,
        });
        Ok(())
    })?;

    // Which queries.
    let any_test = queries.iter().any(|q| q.split == Some(Split::Test));
    type Keep = Box<dyn Fn(Option<Split>) -> bool>;
    let (keep, selection): (Keep, String) = match options.split {
        SplitFilter::Train => (
            Box::new(|s| s != Some(Split::Test)),
            "train split (split \"train\" or none)".into(),
        ),
        SplitFilter::Test => (Box::new(|s| s == Some(Split::Test)), "test split".into()),
        SplitFilter::TestOrAll if any_test => {
            (Box::new(|s| s == Some(Split::Test)), "test split".into())
        }
        SplitFilter::TestOrAll => (
            Box::new(|_| true),
            "all queries: the data has no test split".into(),
        ),
        SplitFilter::All => (Box::new(|_| true), "all queries".into()),
    };
    let mut new_index = vec![u32::MAX; queries.len()];
    let mut selected = 0u32;
    for (i, q) in queries.iter().enumerate() {
        if keep(q.split) {
            new_index[i] = selected;
            selected += 1;
        }
    }
    if selected == 0 {
        return Err(DataError::File {
            path: path.to_path_buf(),
            message: format!("no query in the {selection}"),
        });
    }

    // Which budgets.
    let budgets: Vec<u32> = match options.budgets {
        Some(b) => b.to_vec(),
        None => {
            let mut seen: Vec<u32> = records
                .iter()
                .filter(|r| new_index[r.query as usize] != u32::MAX && r.budget != UNLIMITED)
                .map(|r| r.budget)
                .collect();
            seen.sort_unstable();
            seen.dedup();
            seen
        }
    };
    let models = options.models.len();
    let slots = budgets.len() + 1;
    let n = selected as usize;
    let cells = n * models * slots;
    let mut scores = vec![f64::NAN; cells];
    let mut tokens = vec![f64::NAN; cells];
    let mut lines = vec![0u32; cells];
    let mut model_seen = vec![false; models];
    for r in &records {
        let q = new_index[r.query as usize];
        if q == u32::MAX {
            continue;
        }
        let slot = if r.budget == UNLIMITED {
            budgets.len()
        } else {
            match budgets.binary_search(&r.budget) {
                Ok(s) => s,
                Err(_) => continue,
            }
        };
        let m = usize::from(r.model);
        model_seen[m] = true;
        let cell = (q as usize * models + m) * slots + slot;
        if lines[cell] != 0 {
            return Err(line_error(
                r.line as usize,
                format!(
                    "a second record for query `{}`, model `{}`, budget {} (the first is on line {})",
                    queries[r.query as usize].id,
                    options.models[m],
                    budget_name(r.budget),
                    lines[cell]
                ),
            ));
        }
        lines[cell] = r.line;
        scores[cell] = r.score;
        tokens[cell] = r.tokens;
    }
    drop(records);
    if let Some(m) = model_seen.iter().position(|&s| !s) {
        return Err(DataError::File {
            path: path.to_path_buf(),
            message: format!(
                "model `{}` of the pool has no record in the {selection}: every query needs a \
                 score for every model of the pool",
                options.models[m]
            ),
        });
    }
    let selected_queries: Vec<usize> = (0..queries.len())
        .filter(|&i| new_index[i] != u32::MAX)
        .collect();
    for (q, &old) in selected_queries.iter().enumerate() {
        for m in 0..models {
            for s in 0..slots {
                if lines[(q * models + m) * slots + s] == 0 {
                    let state = &queries[old];
                    return Err(line_error(
                        state.line,
                        format!(
                            "query `{}` (first record here) has no record for model `{}` at \
                             budget {}: every query needs a score for every (model, budget) the \
                             router has a head for",
                            state.id,
                            options.models[m],
                            if s < budgets.len() {
                                budgets[s].to_string()
                            } else {
                                "unlimited".into()
                            }
                        ),
                    ));
                }
            }
        }
    }
    drop(lines);

    // Embeddings: inline first, then the embeddings file for the rest.
    let mut vectors: Vec<Option<Vec<f64>>> = selected_queries
        .iter()
        .map(|&old| queries[old].embedding.take().map(|(_, v)| v))
        .collect();
    let mut file_tokens: Vec<Option<u64>> = vec![None; n];
    if let Some(emb_path) = options.embeddings {
        let emb_error = |line: usize, message: String| DataError::Line {
            path: emb_path.to_path_buf(),
            line,
            message,
        };
        let mut seen_at: Vec<usize> = vec![0; n];
        for_each_line(emb_path, |number, line| {
            let raw: RawEmbedding =
                serde_json::from_str(line).map_err(|e| json_error(emb_path, number, line, &e))?;
            let key = raw
                .query_id
                .map(|i| i.0)
                .or(raw.id.map(|i| i.0))
                .or(raw.query)
                .ok_or_else(|| {
                    emb_error(
                        number,
                        "needs a `query_id` (or `id`, or `query`) naming the query of the records"
                            .into(),
                    )
                })?;
            check_dim(&mut dim, raw.embedding.len(), number, options.dim)
                .map_err(|m| emb_error(number, m))?;
            let Some(&old) = query_index.get(key.as_ref()) else {
                return Ok(());
            };
            let q = new_index[old as usize];
            if q == u32::MAX {
                return Ok(());
            }
            let q = q as usize;
            if seen_at[q] != 0 {
                return Err(emb_error(
                    number,
                    format!(
                        "a second embedding for query `{key}` (the first is on line {})",
                        seen_at[q]
                    ),
                ));
            }
            seen_at[q] = number;
            file_tokens[q] = raw.input_tokens;
            if vectors[q].is_none() {
                vectors[q] = Some(raw.embedding);
            }
            Ok(())
        })?;
    }
    let Some((dim, _)) = dim else {
        return Err(DataError::File {
            path: path.to_path_buf(),
            message: "no embeddings: give them inline (`embedding` on a record) or in an \
                      embeddings file"
                .into(),
        });
    };
    let mut embeddings = Vec::with_capacity(n * dim);
    for (q, v) in vectors.into_iter().enumerate() {
        let Some(v) = v else {
            let state = &queries[selected_queries[q]];
            return Err(line_error(
                state.line,
                format!(
                    "query `{}` (first record here) has no embedding: neither on a record nor {}",
                    state.id,
                    match options.embeddings {
                        Some(p) => format!("in {}", p.display()),
                        None => "in an embeddings file (none given)".into(),
                    }
                ),
            ));
        };
        embeddings.extend_from_slice(&v);
    }
    let queries = selected_queries
        .iter()
        .enumerate()
        .map(|(q, &old)| {
            let s = &queries[old];
            Query {
                id: s.id.clone(),
                line: s.line,
                input_tokens: s
                    .input_tokens
                    .map(|(t, _)| t)
                    .or(file_tokens[q])
                    .unwrap_or(DEFAULT_INPUT_TOKENS),
                split: s.split,
            }
        })
        .collect();
    Ok(Dataset {
        path: path.to_path_buf(),
        models: options.models.to_vec(),
        budgets,
        queries,
        dim,
        embeddings,
        scores,
        tokens,
        selection,
    })
}

fn split_name(s: Option<Split>) -> &'static str {
    match s {
        Some(Split::Train) => "\"train\"",
        Some(Split::Test) => "\"test\"",
        None => "none",
    }
}

fn budget_name(b: u32) -> String {
    if b == UNLIMITED {
        "unlimited".into()
    } else {
        b.to_string()
    }
}

fn check_dim(
    dim: &mut Option<(usize, usize)>,
    len: usize,
    line: usize,
    expected: Option<usize>,
) -> Result<(), String> {
    if len == 0 {
        return Err("the embedding is empty".into());
    }
    match *dim {
        Some((d, at)) if d != len => Err(format!(
            "the embedding has {len} values, but the one on line {at} has {d}: mixed dimensions"
        )),
        Some(_) => Ok(()),
        None => {
            if let Some(e) = expected.filter(|&e| e != len) {
                return Err(format!(
                    "the embedding has {len} values, the pool config's embedding_dim is {e}"
                ));
            }
            *dim = Some((len, line));
            Ok(())
        }
    }
}

/// A JSON error of one line, with a clearer word for the usual suspects (NaN, Infinity).
fn json_error(path: &Path, line: usize, text: &str, e: &serde_json::Error) -> DataError {
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_owned(),
        None => message,
    };
    let hint = if e.is_syntax() && (text.contains("NaN") || text.contains("Infinity")) {
        " (NaN and Infinity are not JSON numbers: every score, token count and embedding value \
         must be a finite number)"
    } else {
        ""
    };
    DataError::Line {
        path: path.to_path_buf(),
        line,
        message: format!("column {}: {message}{hint}", e.column()),
    }
}

/// Calls `f(line number, line)` for every non-blank line of `path`.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, &str) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = std::fs::File::open(path)
        .map_err(|source| DataError::Io(r2_core::IoError::new(path, "cannot open", source)))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = String::new();
    let mut number = 0;
    loop {
        buf.clear();
        number += 1;
        let read = reader
            .read_line(&mut buf)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::InvalidData => DataError::Line {
                    path: path.to_path_buf(),
                    line: number,
                    message: "not UTF-8 text".into(),
                },
                _ => DataError::Io(r2_core::IoError::new(path, "cannot read", source)),
            })?;
        if read == 0 {
            return Ok(());
        }
        // A byte-order mark (as some editors write) at the start of the file is not JSON.
        let line = if number == 1 {
            buf.trim_start_matches('\u{feff}').trim()
        } else {
            buf.trim()
        };
        if !line.is_empty() {
            f(number, line)?;
        }
    }
}
