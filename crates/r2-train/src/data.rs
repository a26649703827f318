//! Training and evaluation data: records of (query, model, budget) → true score and output
//! tokens, as JSONL, CSV or Parquet, in the long or the wide layout, with query embeddings inline
//! or in a separate file (JSONL, or a NumPy `.npy` array with an ids file).
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
//! # Tables: CSV and Parquet
//!
//! The format is the file's extension: `.csv` (`.tsv`: tab-separated; a header row, UTF-8) and
//! `.parquet`; anything else is JSONL. [`load_sources`] reads several files (or folders of them,
//! in name order) into one data set. A table has one of two layouts:
//!
//! - *long*, the JSONL records as rows: a column per field (the field's name, or the column
//!   [`Columns`] gives, `--column score=judge_score`), other columns ignored. An empty cell is a
//!   missing optional field. Parquet columns may be strings or numbers (the budget a string or an
//!   integer), and `embedding` a list of numbers; in CSV an embedding is a JSON list, but they
//!   usually come from an embeddings file. A table is long when it has the `budget` column.
//! - *wide*, as upstream's data pipeline writes it: one file per model, one row per query, a
//!   query id column (`query_id`, or the one [`Columns`] gives), optional `split` and
//!   `input_tokens` columns, and per budget `b` the columns `{b}_score` (the score) and
//!   `{b}_count` (the output tokens), `unlimited_score` and `unlimited_count` without a budget. The
//!   model is the file's name without its extension, unless [`DataSources::file_models`] maps
//!   the file to one. Both cells of a budget empty: no record for it.
//!
//! Rows are numbered as a spreadsheet shows them: in CSV the header is row 1 (a row is the line it
//! starts on); in Parquet the first row is row 1. A bad cell is an error naming the file, the row
//! and the column.
//!
//! # Embeddings file
//!
//! JSONL, one `{"query_id" | "id" | "query", "embedding": […], "input_tokens"?}` a line: the key is
//! `query_id`, else `id`, else the `query` text (so `r2 embed` output can be used as it is when the
//! records' `query_id` is the query text). An embedding on a record wins over the file's.
//!
//! Or a NumPy `.npy` array `[queries, dim]` of float32 or float64 (little-endian, C order, as
//! `numpy.save` writes it) with an ids file ([`DataSources::embedding_ids`]): row i of the array is
//! the query of the ids file's i-th id; one id a line, as text or as JSONL `{"query_id" | "id"}`.
//!
//! # Splits
//!
//! Training uses the queries whose records say `"split": "train"` or nothing; evaluation uses the
//! `"test"` queries, or every query when the file has no `"test"` record.
//!
//! Every error names the file and the line (or the row and the column).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use r2_core::Budget;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

pub mod npy;
mod table;

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
    /// A row of a CSV or Parquet file is inconsistent with the rest.
    #[error("{}: row {row}: {message}", path.display())]
    Row {
        path: PathBuf,
        row: usize,
        message: String,
    },
    /// A cell of a CSV or Parquet file is malformed.
    #[error("{}: row {row}, column `{column}`: {message}", path.display())]
    Cell {
        path: PathBuf,
        row: usize,
        column: String,
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
            DataError::Line { .. }
            | DataError::Row { .. }
            | DataError::Cell { .. }
            | DataError::File { .. } => InvalidInput,
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
    /// The line (JSONL) or row (CSV, Parquet) of its first record, in the data file that has it.
    pub line: usize,
    /// Input tokens (from the data, else [`DEFAULT_INPUT_TOKENS`]).
    pub input_tokens: u64,
    /// Its split, if the data gave one.
    pub split: Option<Split>,
}

/// Labels and embeddings of the selected queries, dense.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The records file (the first one, as given, when there are several).
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

    /// The queries `indices` (in that order) as a dataset of their own, described by `selection`;
    /// `None` when an index is not a query of this dataset.
    pub fn subset(&self, indices: &[usize], selection: impl Into<String>) -> Option<Dataset> {
        let n = self.queries.len();
        if indices.iter().any(|&q| q >= n) {
            return None;
        }
        let per_query = self.models.len() * self.slots();
        let mut out = Dataset {
            path: self.path.clone(),
            models: self.models.clone(),
            budgets: self.budgets.clone(),
            queries: Vec::with_capacity(indices.len()),
            dim: self.dim,
            embeddings: Vec::with_capacity(indices.len() * self.dim),
            scores: Vec::with_capacity(indices.len() * per_query),
            tokens: Vec::with_capacity(indices.len() * per_query),
            selection: selection.into(),
        };
        for &q in indices {
            out.queries.push(self.queries[q].clone());
            out.embeddings.extend_from_slice(self.embedding(q));
            let first = q * per_query;
            out.scores
                .extend_from_slice(&self.scores[first..first + per_query]);
            out.tokens
                .extend_from_slice(&self.tokens[first..first + per_query]);
        }
        Some(out)
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
    file: u16,
}

struct QueryState {
    id: String,
    /// The file and line (row) of its first record.
    file: u16,
    line: usize,
    split: Option<Split>,
    input_tokens: Option<(u64, u16, usize)>,
    /// (file, line, vector) of the first inline embedding.
    embedding: Option<(u16, usize, Vec<f64>)>,
}

/// A field of a record, as the readers of every layout name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    QueryId,
    Model,
    Budget,
    Score,
    OutputTokens,
    Embedding,
    Split,
    InputTokens,
}

impl Field {
    /// Every field, in the order of the documentation.
    pub const ALL: [Field; 8] = [
        Field::QueryId,
        Field::Model,
        Field::Budget,
        Field::Score,
        Field::OutputTokens,
        Field::Embedding,
        Field::Split,
        Field::InputTokens,
    ];

    /// Its name in JSONL records, and its default column name.
    pub fn name(self) -> &'static str {
        match self {
            Field::QueryId => "query_id",
            Field::Model => "model",
            Field::Budget => "budget",
            Field::Score => "score",
            Field::OutputTokens => "output_tokens",
            Field::Embedding => "embedding",
            Field::Split => "split",
            Field::InputTokens => "input_tokens",
        }
    }
}

/// The model of a record: by name (checked against the pool), or already resolved.
pub(crate) enum ModelIn<'a> {
    Name(&'a str),
    Index(u16),
}

/// A record of any layout, parsed but not checked.
pub(crate) struct RecordIn<'a> {
    pub query_id: Cow<'a, str>,
    pub model: ModelIn<'a>,
    pub budget: Budget,
    pub score: f64,
    pub output_tokens: f64,
    pub embedding: Option<Vec<f64>>,
    pub split: Option<Cow<'a, str>>,
    pub input_tokens: Option<u64>,
}

/// What is wrong with a record, and in which field (a reader of columns names the column).
#[derive(Debug)]
pub(crate) struct Bad {
    pub field: Option<Field>,
    pub message: String,
}

impl Bad {
    fn new(field: Field, message: String) -> Self {
        Bad {
            field: Some(field),
            message,
        }
    }
}

/// How a file's places are named: lines (JSONL) or rows (CSV, Parquet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Line,
    Row,
}

struct FileInfo {
    path: PathBuf,
    unit: Unit,
}

/// Collects the records of every data file, checking each one, then makes the [`Dataset`].
pub(crate) struct Collector<'o> {
    options: &'o LoadOptions<'o>,
    model_index: HashMap<&'o str, u16>,
    files: Vec<FileInfo>,
    queries: Vec<QueryState>,
    query_index: HashMap<String, u32>,
    records: Vec<Rec>,
    /// The embedding length, and where it was set.
    dim: Option<(usize, String)>,
}

impl<'o> Collector<'o> {
    fn new(options: &'o LoadOptions<'o>, first: &Path) -> Result<Self, DataError> {
        if options.models.len() > usize::from(u16::MAX) {
            return Err(DataError::File {
                path: first.to_path_buf(),
                message: "more than 65535 models".into(),
            });
        }
        let model_index = options
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.as_str(), i as u16))
            .collect();
        Ok(Collector {
            options,
            model_index,
            files: Vec::new(),
            queries: Vec::new(),
            query_index: HashMap::new(),
            records: Vec::new(),
            dim: None,
        })
    }

    /// Registers a data file; its records are then added with the returned number.
    pub(crate) fn add_file(&mut self, path: &Path, unit: Unit) -> Result<u16, DataError> {
        let n = u16::try_from(self.files.len()).map_err(|_| DataError::File {
            path: path.to_path_buf(),
            message: "more than 65535 data files".into(),
        })?;
        self.files.push(FileInfo {
            path: path.to_path_buf(),
            unit,
        });
        Ok(n)
    }

    /// The pool's index of model `name`, or the unknown-model message.
    pub(crate) fn model(&self, name: &str) -> Result<u16, String> {
        self.model_index.get(name).copied().ok_or_else(|| {
            format!(
                "unknown model `{name}`: it is not in the pool config ({}), whose models are: {}",
                self.options.models_source,
                self.options.models.join(", ")
            )
        })
    }

    /// "line 7" in the file `here`, "other.csv row 7" in another.
    fn place(&self, file: u16, line: usize, here: u16) -> String {
        place(&self.files, file, line, here)
    }

    /// An error at a line (row) of a data file.
    pub(crate) fn error_at(&self, file: u16, line: usize, message: String) -> DataError {
        let info = &self.files[usize::from(file)];
        match info.unit {
            Unit::Line => DataError::Line {
                path: info.path.clone(),
                line,
                message,
            },
            Unit::Row => DataError::Row {
                path: info.path.clone(),
                row: line,
                message,
            },
        }
    }

    /// Checks one record (at `line` of data file `file`) and keeps it.
    pub(crate) fn add(&mut self, file: u16, line: usize, raw: RecordIn) -> Result<(), Bad> {
        let model = match raw.model {
            ModelIn::Index(m) => m,
            ModelIn::Name(name) => self.model(name).map_err(|m| Bad::new(Field::Model, m))?,
        };
        if !(0.0..=1.0).contains(&raw.score) {
            return Err(Bad::new(
                Field::Score,
                format!("`score` must be a number in [0, 1], got {}", raw.score),
            ));
        }
        if !(raw.output_tokens.is_finite() && raw.output_tokens >= 0.0) {
            return Err(Bad::new(
                Field::OutputTokens,
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
                return Err(Bad::new(
                    Field::Split,
                    format!("`split` must be \"train\" or \"test\", got {other:?}"),
                ))
            }
        };
        let q = match self.query_index.get(raw.query_id.as_ref()) {
            Some(&q) => q,
            None => {
                let q = u32::try_from(self.queries.len()).map_err(|_| Bad {
                    field: None,
                    message: "more than 4 billion queries".into(),
                })?;
                self.query_index
                    .insert(raw.query_id.clone().into_owned(), q);
                self.queries.push(QueryState {
                    id: raw.query_id.into_owned(),
                    file,
                    line,
                    split,
                    input_tokens: None,
                    embedding: None,
                });
                q
            }
        };
        let state = &self.queries[q as usize];
        if state.split != split {
            return Err(Bad::new(
                Field::Split,
                format!(
                    "query `{}` has split {} here but {} on {}: a query's records must \
                     share one split",
                    state.id,
                    split_name(split),
                    split_name(state.split),
                    self.place(state.file, state.line, file)
                ),
            ));
        }
        if let Some(tokens) = raw.input_tokens {
            match state.input_tokens {
                Some((earlier, at_file, at)) if earlier != tokens => {
                    return Err(Bad::new(
                        Field::InputTokens,
                        format!(
                            "query `{}` has input_tokens {tokens} here but {earlier} on {}",
                            state.id,
                            self.place(at_file, at, file)
                        ),
                    ))
                }
                Some(_) => {}
                None => self.queries[q as usize].input_tokens = Some((tokens, file, line)),
            }
        }
        if let Some(embedding) = raw.embedding {
            let files = &self.files;
            let here = || place(files, file, line, u16::MAX);
            check_dim(&mut self.dim, embedding.len(), here, self.options.dim)
                .map_err(|m| Bad::new(Field::Embedding, m))?;
            let state = &self.queries[q as usize];
            match &state.embedding {
                Some((at_file, at, earlier)) if *earlier != embedding => {
                    return Err(Bad::new(
                        Field::Embedding,
                        format!(
                            "query `{}` has another embedding here than on {}",
                            state.id,
                            self.place(*at_file, *at, file)
                        ),
                    ))
                }
                Some(_) => {}
                None => self.queries[q as usize].embedding = Some((file, line, embedding)),
            }
        }
        self.records.push(Rec {
            score: raw.score,
            tokens: raw.output_tokens,
            query: q,
            line: u32::try_from(line).unwrap_or(u32::MAX),
            budget: match raw.budget {
                Budget::Tokens(b) => b,
                Budget::Unlimited => UNLIMITED,
            },
            model,
            file,
        });
        Ok(())
    }

    /// Selects the queries and budgets, checks that every label is there, adds the embeddings.
    fn finish(mut self, path: &Path, embeddings: Option<Embeddings>) -> Result<Dataset, DataError> {
        let options = self.options;
        let queries = &mut self.queries;
        let records = std::mem::take(&mut self.records);

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
        // (file, line) of each cell's record; line 0: none yet.
        let mut lines = vec![(0u16, 0u32); cells];
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
            let (first_file, first_line) = lines[cell];
            if first_line != 0 {
                return Err(self.error_at(
                    r.file,
                    r.line as usize,
                    format!(
                        "a second record for query `{}`, model `{}`, budget {} (the first is on {})",
                        self.queries[r.query as usize].id,
                        options.models[m],
                        budget_name(r.budget),
                        self.place(first_file, first_line as usize, r.file)
                    ),
                ));
            }
            lines[cell] = (r.file, r.line);
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
        let selected_queries: Vec<usize> = (0..self.queries.len())
            .filter(|&i| new_index[i] != u32::MAX)
            .collect();
        for (q, &old) in selected_queries.iter().enumerate() {
            for m in 0..models {
                for s in 0..slots {
                    if lines[(q * models + m) * slots + s].1 == 0 {
                        let state = &self.queries[old];
                        return Err(self.error_at(
                            state.file,
                            state.line,
                            format!(
                                "query `{}` (first record here) has no record for model `{}` at \
                                 budget {}: every query needs a score for every (model, budget) \
                                 the router has a head for",
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
            .map(|&old| self.queries[old].embedding.take().map(|(_, _, v)| v))
            .collect();
        let mut file_tokens: Vec<Option<u64>> = vec![None; n];
        if let Some(source) = &embeddings {
            let mut seen_at: Vec<usize> = vec![0; n];
            let query_index = &self.query_index;
            let dim = &mut self.dim;
            source.for_each(dim, options.dim, |entry: EmbeddingEntry| {
                let Some(&old) = query_index.get(entry.key.as_ref()) else {
                    return Ok(());
                };
                let q = new_index[old as usize];
                if q == u32::MAX {
                    return Ok(());
                }
                let q = q as usize;
                if seen_at[q] != 0 {
                    return Err(entry.error(format!(
                        "a second embedding for query `{}` (the first is on line {})",
                        entry.key, seen_at[q]
                    )));
                }
                seen_at[q] = entry.line;
                file_tokens[q] = entry.input_tokens;
                if vectors[q].is_none() {
                    vectors[q] = Some(entry.vector);
                }
                Ok(())
            })?;
        }
        let Some((dim, _)) = self.dim.take() else {
            return Err(DataError::File {
                path: path.to_path_buf(),
                message: "no embeddings: give them inline (`embedding` on a record) or in an \
                          embeddings file"
                    .into(),
            });
        };
        let mut embeddings_out = Vec::with_capacity(n * dim);
        for (q, v) in vectors.into_iter().enumerate() {
            let Some(v) = v else {
                let state = &self.queries[selected_queries[q]];
                return Err(self.error_at(
                    state.file,
                    state.line,
                    format!(
                        "query `{}` (first record here) has no embedding: neither on a record nor \
                         {}",
                        state.id,
                        match &embeddings {
                            Some(e) => format!("in {}", e.describe()),
                            None => "in an embeddings file (none given)".into(),
                        }
                    ),
                ));
            };
            embeddings_out.extend_from_slice(&v);
        }
        let queries = selected_queries
            .iter()
            .enumerate()
            .map(|(q, &old)| {
                let s = &self.queries[old];
                Query {
                    id: s.id.clone(),
                    line: s.line,
                    input_tokens: s
                        .input_tokens
                        .map(|(t, _, _)| t)
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
            embeddings: embeddings_out,
            scores,
            tokens,
            selection,
        })
    }
}

/// Where the data comes from, beyond one JSONL file.
#[derive(Debug, Clone, Default)]
pub struct DataSources {
    /// Data files, or folders whose `.jsonl`, `.json`, `.csv`, `.tsv` and `.parquet` files are
    /// read (in name order). The format is the extension's: `.csv` (`.tsv`: tab-separated) and
    /// `.parquet` are tables (long or wide layout), anything else JSONL.
    pub paths: Vec<PathBuf>,
    /// Column names of the fields in CSV and Parquet files (JSONL keeps the field names; renames
    /// with only JSONL files are an error rather than ignored).
    pub columns: Columns,
    /// `(file, model)`: the model of a wide-layout file whose name (without extension) is not the
    /// model's. `file` is the path as given, the file name or the name without extension.
    pub file_models: Vec<(String, String)>,
    /// The ids of a `.npy` embeddings file, one a line: text, or JSONL `{"query_id" | "id"}`.
    pub embedding_ids: Option<PathBuf>,
}

/// Which column holds each field of CSV and Parquet records (by default the field's name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    renamed: Vec<(Field, String)>,
}

impl Columns {
    /// Parses `--column` values: `field=column`, e.g. `query_id=prompts_id`.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Columns, String> {
        let mut columns = Columns::default();
        for spec in specs {
            let spec = spec.as_ref();
            let Some((field, name)) = spec.split_once('=') else {
                return Err(format!(
                    "`{spec}` is not FIELD=COLUMN (e.g. query_id=prompts_id)"
                ));
            };
            let field_name = field.trim();
            let field = Field::ALL
                .into_iter()
                .find(|f| f.name() == field_name)
                .ok_or_else(|| {
                    format!(
                        "`{field_name}` is not a field of the records; the fields are: {}",
                        Field::ALL.map(Field::name).join(", ")
                    )
                })?;
            columns.set(field, name.trim())?;
        }
        Ok(columns)
    }

    /// Reads `field` from column `name`.
    pub fn set(&mut self, field: Field, name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err(format!("an empty column name for `{}`", field.name()));
        }
        if self.renamed.iter().any(|(f, _)| *f == field) {
            return Err(format!("the column of `{}` is given twice", field.name()));
        }
        if let Some(other) = Field::ALL
            .into_iter()
            .find(|&f| f != field && self.name(f) == name)
        {
            return Err(format!(
                "column `{name}` cannot be both `{}` and `{}`",
                other.name(),
                field.name()
            ));
        }
        self.renamed.push((field, name.to_owned()));
        Ok(())
    }

    /// The column of `field`.
    pub fn name(&self, field: Field) -> &str {
        self.renamed
            .iter()
            .find(|(f, _)| *f == field)
            .map_or(field.name(), |(_, n)| n.as_str())
    }

    /// Whether no column was renamed.
    pub fn is_empty(&self) -> bool {
        self.renamed.is_empty()
    }

    /// Whether `field`'s column was renamed.
    pub fn is_renamed(&self, field: Field) -> bool {
        self.renamed.iter().any(|(f, _)| *f == field)
    }
}

/// Reads `path` (and the embeddings file) into a dense [`Dataset`]: every check of the module
/// documentation, each error naming the file and line. `path` may be any format of
/// [`DataSources::paths`]; [`load_sources`] reads several files with column names.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    load_sources(
        &DataSources {
            paths: vec![path.to_path_buf()],
            ..DataSources::default()
        },
        options,
    )
}

/// Reads every file of `sources` (and the embeddings file of `options`) into one [`Dataset`],
/// whose `path` is the first path of `sources`.
pub fn load_sources(sources: &DataSources, options: &LoadOptions) -> Result<Dataset, DataError> {
    let Some(first) = sources.paths.first() else {
        return Err(DataError::File {
            path: PathBuf::new(),
            message: "no data file given".into(),
        });
    };
    let mut collector = Collector::new(options, first)?;
    let files = expand(&sources.paths)?;
    let all_jsonl = files.iter().all(|f| matches!(Format::of(f), Format::Jsonl));
    if let (false, true, Some(jsonl)) = (sources.columns.is_empty(), all_jsonl, files.first()) {
        return Err(DataError::File {
            path: jsonl.clone(),
            message: "column names (--column) are for CSV and Parquet files, but the data is \
                      JSONL, whose records keep the field names (query_id, model, budget, \
                      score, ...): rename the keys in the file, or leave out --column"
                .into(),
        });
    }
    for path in files {
        match Format::of(&path) {
            Format::Jsonl => read_jsonl(&mut collector, &path)?,
            Format::Csv(delimiter) => table::read_csv(&mut collector, &path, delimiter, sources)?,
            Format::Parquet => table::read_parquet(&mut collector, &path, sources)?,
        }
    }
    // An `r2 collect` folder brings its embeddings.
    let collected_embeddings = sources
        .paths
        .iter()
        .find_map(|p| collect_folder(p).then(|| p.join(COLLECTED_EMBEDDINGS)));
    let embeddings = match options.embeddings.or(collected_embeddings.as_deref()) {
        None => None,
        Some(path) if Format::is_npy(path) => {
            let ids = sources
                .embedding_ids
                .as_deref()
                .ok_or_else(|| DataError::File {
                    path: path.to_path_buf(),
                    message: "a .npy embeddings file needs its query ids: give them with \
                          --embedding-ids FILE (one id a line, row i of the array is the \
                          query of line i)"
                        .into(),
                })?;
            Some(Embeddings::Npy { array: path, ids })
        }
        Some(path) => {
            if let Some(ids) = &sources.embedding_ids {
                return Err(DataError::File {
                    path: ids.clone(),
                    message: format!(
                        "an ids file is for a .npy embeddings file, but {} is JSONL (its lines \
                         carry their ids): leave out --embedding-ids",
                        path.display()
                    ),
                });
            }
            Some(Embeddings::Jsonl(path))
        }
    };
    collector.finish(first, embeddings)
}

/// A data file's format, by its extension.
enum Format {
    Jsonl,
    Csv(u8),
    Parquet,
}

impl Format {
    fn extension(path: &Path) -> String {
        path.extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default()
    }

    fn of(path: &Path) -> Format {
        match Format::extension(path).as_str() {
            "csv" => Format::Csv(b','),
            "tsv" => Format::Csv(b'\t'),
            "parquet" | "pq" => Format::Parquet,
            _ => Format::Jsonl,
        }
    }

    fn is_data(path: &Path) -> bool {
        matches!(
            Format::extension(path).as_str(),
            "jsonl" | "json" | "ndjson" | "csv" | "tsv" | "parquet" | "pq"
        )
    }

    fn is_npy(path: &Path) -> bool {
        Format::extension(path) == "npy"
    }
}

/// The records and embeddings of an `r2 collect` output folder (beside its `manifest.json`).
const COLLECTED_RECORDS: &str = "records.jsonl";
const COLLECTED_EMBEDDINGS: &str = "embeddings.jsonl";

/// Whether `path` is a folder `r2 collect` wrote: its records are `records.jsonl` only (not the
/// answers, failures or manifest beside it) and its embeddings `embeddings.jsonl`.
fn collect_folder(path: &Path) -> bool {
    path.join("manifest.json").is_file() && path.join(COLLECTED_RECORDS).is_file()
}

/// The data files of `paths`: files as they are, folders' data files in name order (an
/// `r2 collect` folder's records file only).
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        if collect_folder(path) {
            files.push(path.join(COLLECTED_RECORDS));
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| {
            DataError::Io(r2_core::IoError::new(
                path,
                "cannot list the folder",
                source,
            ))
        })?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| {
                DataError::Io(r2_core::IoError::new(
                    path,
                    "cannot list the folder",
                    source,
                ))
            })?;
            let file = entry.path();
            if file.is_file() && Format::is_data(&file) {
                found.push(file);
            }
        }
        if found.is_empty() {
            return Err(DataError::File {
                path: path.clone(),
                message: "the folder has no data file (.jsonl, .json, .csv, .tsv, .parquet)".into(),
            });
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn read_jsonl(collector: &mut Collector, path: &Path) -> Result<(), DataError> {
    let file = collector.add_file(path, Unit::Line)?;
    for_each_line(path, |number, line| {
        let raw: RawRecord =
            serde_json::from_str(line).map_err(|e| json_error(path, number, line, &e))?;
        let record = RecordIn {
            query_id: raw.query_id.0,
            model: ModelIn::Name(raw.model.as_ref()),
            budget: raw.budget,
            score: raw.score,
            output_tokens: raw.output_tokens,
            embedding: raw.embedding,
            split: raw.split,
            input_tokens: raw.input_tokens,
        };
        collector
            .add(file, number, record)
            .map_err(|bad| collector.error_at(file, number, bad.message))
    })
}

/// An embeddings file.
enum Embeddings<'a> {
    Jsonl(&'a Path),
    Npy { array: &'a Path, ids: &'a Path },
}

/// One embedding of an embeddings file.
struct EmbeddingEntry<'a> {
    key: Cow<'a, str>,
    vector: Vec<f64>,
    input_tokens: Option<u64>,
    /// The file and line that gave its key.
    path: &'a Path,
    line: usize,
}

impl EmbeddingEntry<'_> {
    fn error(&self, message: String) -> DataError {
        DataError::Line {
            path: self.path.to_path_buf(),
            line: self.line,
            message,
        }
    }
}

impl Embeddings<'_> {
    fn describe(&self) -> String {
        match self {
            Embeddings::Jsonl(p) => p.display().to_string(),
            Embeddings::Npy { array, ids } => {
                format!("{} (ids {})", array.display(), ids.display())
            }
        }
    }

    /// Calls `f` for every embedding, checking its length.
    fn for_each(
        &self,
        dim: &mut Option<(usize, String)>,
        expected: Option<usize>,
        mut f: impl FnMut(EmbeddingEntry) -> Result<(), DataError>,
    ) -> Result<(), DataError> {
        match *self {
            Embeddings::Jsonl(emb_path) => for_each_line(emb_path, |number, line| {
                let raw: RawEmbedding = serde_json::from_str(line)
                    .map_err(|e| json_error(emb_path, number, line, &e))?;
                let emb_error = |message: String| DataError::Line {
                    path: emb_path.to_path_buf(),
                    line: number,
                    message,
                };
                let key = raw
                    .query_id
                    .map(|i| i.0)
                    .or(raw.id.map(|i| i.0))
                    .or(raw.query)
                    .ok_or_else(|| {
                        emb_error(
                            "needs a `query_id` (or `id`, or `query`) naming the query of the \
                             records"
                                .into(),
                        )
                    })?;
                let here = || format!("{} line {number}", emb_path.display());
                check_dim(dim, raw.embedding.len(), here, expected).map_err(emb_error)?;
                f(EmbeddingEntry {
                    key,
                    vector: raw.embedding,
                    input_tokens: raw.input_tokens,
                    path: emb_path,
                    line: number,
                })
            }),
            Embeddings::Npy { array, ids } => {
                let ids_list = npy::read_ids(ids)?;
                let mut reader = npy::NpyReader::open(array)?;
                if reader.rows() != ids_list.len() {
                    return Err(DataError::File {
                        path: array.to_path_buf(),
                        message: format!(
                            "the array has {} rows but {} has {} ids: row i of the array is the \
                             embedding of the i-th id",
                            reader.rows(),
                            ids.display(),
                            ids_list.len()
                        ),
                    });
                }
                check_dim(dim, reader.dim(), || array.display().to_string(), expected).map_err(
                    |message| DataError::File {
                        path: array.to_path_buf(),
                        message,
                    },
                )?;
                for (line, key) in ids_list {
                    let vector = reader.next_row()?;
                    f(EmbeddingEntry {
                        key: Cow::Owned(key),
                        vector,
                        input_tokens: None,
                        path: ids,
                        line,
                    })?;
                }
                Ok(())
            }
        }
    }
}

/// "line 7" in the file `here`, "other.csv row 7" in another.
fn place(files: &[FileInfo], file: u16, line: usize, here: u16) -> String {
    let info = &files[usize::from(file)];
    let unit = match info.unit {
        Unit::Line => "line",
        Unit::Row => "row",
    };
    if file == here {
        format!("{unit} {line}")
    } else {
        format!("{} {unit} {line}", info.path.display())
    }
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

/// Checks an embedding's length against the first one's (set where `here` says) and the pool's.
fn check_dim(
    dim: &mut Option<(usize, String)>,
    len: usize,
    here: impl FnOnce() -> String,
    expected: Option<usize>,
) -> Result<(), String> {
    if len == 0 {
        return Err("the embedding is empty".into());
    }
    match dim {
        Some((d, at)) if *d != len => Err(format!(
            "the embedding has {len} values, but the one at {at} has {d}: mixed dimensions"
        )),
        Some(_) => Ok(()),
        None => {
            if let Some(e) = expected.filter(|&e| e != len) {
                return Err(format!(
                    "the embedding has {len} values, the pool config's embedding_dim is {e}"
                ));
            }
            *dim = Some((len, here()));
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
