//! Collecting training data (`r2 collect`): every query × pool model × budget answered with
//! exactly the request routing sends ([`ChatRequest::routed`]), each answer graded by a judge
//! model, written as `r2 train`'s records.
//!
//! Output folder:
//!
//! - `records.jsonl`: one `{"query_id", "model", "budget", "score", "output_tokens", "split"?,
//!   "input_tokens", "prompt_tokens", "response", "judge", "cost_usd", "latency_ms"}` per answer,
//!   appended and flushed one line at a time;
//! - `embeddings.jsonl`: one `{"query_id", "embedding", "input_tokens"}` per query (input tokens are
//!   upstream's estimate, as `r2 route` uses);
//! - `failures.jsonl`: what failed in the last run after retries (`{"query_id", "model", "budget",
//!   "stage", "error"}`); every failure is retried by the next run;
//! - `answers.jsonl`: every answer as soon as it arrives, before it is graded (`{"query_id",
//!   "model", "budget", "response", "prompt_tokens", "output_tokens", "cost_usd", "latency_ms"}`),
//!   so an answer that was paid for is never asked for again: a rerun grades the answers of keys
//!   not yet recorded (the judge failed, or the run was killed while it graded) instead of
//!   generating them anew. At the end of a run it keeps only those still ungraded;
//! - `manifest.json`: the pool's models and prices, the budgets, the judge model, the sha256 of the
//!   judge prompt, the temperature and r2's version. A later run into the same folder with other
//!   settings is refused unless forced.
//!
//! Reruns skip every (query, model, budget) already in `records.jsonl`. A torn last line (a run
//! killed mid-write: no trailing newline, or not JSON) is dropped and the file truncated to the
//! last good line; a bad line elsewhere is an error naming it.
//!
//! Architecture invariant: this module composes the chat client and the embedder; it prints
//! nothing (the caller is told progress through a callback).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use futures_util::StreamExt;
use r2_checkpoints::PoolConfig;
use r2_core::Budget;
use r2_embed::Embedder;
use r2_llm::{ChatRequest, LlmClient, Prices, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The records file in the output folder.
pub const RECORDS_FILE: &str = "records.jsonl";
/// The embeddings file in the output folder.
pub const EMBEDDINGS_FILE: &str = "embeddings.jsonl";
/// The failures file in the output folder.
pub const FAILURES_FILE: &str = "failures.jsonl";
/// The manifest in the output folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The answers not yet graded, in the output folder.
pub const ANSWERS_FILE: &str = "answers.jsonl";

/// How many times a judge reply without a valid score is asked again (so at most 3 calls).
pub const JUDGE_RETRIES: u32 = 2;

/// The output tokens assumed for an unlimited answer and for a judge reply in a cost estimate.
pub const ASSUMED_OUTPUT_TOKENS: u64 = 500;

/// The default concurrency of [`collect`].
pub const DEFAULT_CONCURRENCY: usize = 8;

/// The default grading prompt. Placeholders: `{query}`, `{reference}` (a stated absence when the
/// query has none) and `{response}`.
pub const DEFAULT_JUDGE_PROMPT: &str = "You are grading an AI assistant's answer to a user's \
question.

Question:
{query}

Reference answer (may be absent):
{reference}

Answer to grade:
{response}

Judge whether the answer is correct and answers the question; when a reference answer is given, \
the answer is correct if it agrees with it. Give a score between 0 (wrong) and 1 (fully correct); \
partial credit is allowed. Reply with only a JSON object: {\"score\": <number in [0, 1]>, \
\"reason\": \"<one short sentence>\"}";

/// What `{reference}` becomes for a query without a reference answer.
pub const NO_REFERENCE: &str = "(no reference answer given)";

/// Errors of collecting data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bad line in the queries file.
    #[error("{}: line {line}: {reason}", path.display())]
    BadQuery {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Two queries have the same id.
    #[error(
        "{}: line {line}: the query id `{id}` is already used on line {first}: give every query \
         its own id",
        path.display()
    )]
    DuplicateId {
        path: PathBuf,
        id: String,
        first: usize,
        line: usize,
    },
    /// The queries file holds no query.
    #[error("{}: no queries in the file", path.display())]
    NoQueries { path: PathBuf },
    /// A bad judge prompt template.
    #[error("{source_name}: {reason}")]
    BadPrompt { source_name: String, reason: String },
    /// A line of an earlier run's output that is not the last one does not read.
    #[error(
        "{}: line {line}: {reason}: the file is not one r2 collect wrote; move it away or fix the \
         line",
        path.display()
    )]
    BadOutput {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The folder was written with other settings.
    #[error(
        "{}: this folder was collected with other settings ({what} differs: was {was}, now \
         {now}): use another output folder, or force to mix them",
        path.display()
    )]
    ManifestMismatch {
        path: PathBuf,
        what: String,
        was: String,
        now: String,
    },
    /// Bad settings.
    #[error("{0}")]
    Invalid(String),
    #[error("embedding the queries: {0}")]
    Embed(#[from] r2_embed::Error),
}

impl r2_core::Classify for CollectError {
    fn class(&self) -> r2_core::ErrorClass {
        use r2_core::ErrorClass::{Internal, InvalidInput};
        match self {
            CollectError::Io { .. } => Internal,
            CollectError::BadQuery { .. }
            | CollectError::DuplicateId { .. }
            | CollectError::NoQueries { .. }
            | CollectError::BadPrompt { .. }
            | CollectError::BadOutput { .. }
            | CollectError::ManifestMismatch { .. }
            | CollectError::Invalid(_) => InvalidInput,
            CollectError::Embed(e) => e.class(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CollectError + '_ {
    move |source| CollectError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One query to collect answers for.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySpec {
    /// Its id (the line number when the file gives none).
    pub id: String,
    pub query: String,
    /// A reference answer for the judge.
    pub reference: Option<String>,
    /// `train` or `test`, copied to the records.
    pub split: Option<String>,
    /// The 1-based line it was read from.
    pub line: usize,
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(default)]
    id: Option<Value>,
    query: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    split: Option<String>,
}

/// Reads queries: one text a line, or (when the first non-blank line starts with `{`) JSONL of
/// `{"id"?, "query", "reference"?, "split"?}`. Blank lines are skipped; ids default to the line
/// number; a duplicated id is an error naming both lines.
pub fn read_queries(path: &Path) -> Result<Vec<QuerySpec>, CollectError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    parse_queries(&text, path)
}

/// [`read_queries`] on text already read (`path` names it in errors).
pub fn parse_queries(text: &str, path: &Path) -> Result<Vec<QuerySpec>, CollectError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let jsonl = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim_start().starts_with('{'));
    let bad = |line: usize, reason: String| CollectError::BadQuery {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut queries = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() {
            continue;
        }
        let spec = if jsonl {
            let parsed: QueryLine = serde_json::from_str(raw)
                .map_err(|e| bad(line, format!("column {}: {e}", e.column())))?;
            let id = match parsed.id {
                None | Some(Value::Null) => line.to_string(),
                Some(Value::String(s)) => s,
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => {
                    return Err(bad(
                        line,
                        format!("`id` must be a string or an integer, got {other}"),
                    ))
                }
            };
            if let Some(split) = &parsed.split {
                if split != "train" && split != "test" {
                    return Err(bad(
                        line,
                        format!("`split` must be \"train\" or \"test\", got {split:?}"),
                    ));
                }
            }
            QuerySpec {
                id,
                query: parsed.query,
                reference: parsed.reference,
                split: parsed.split,
                line,
            }
        } else {
            QuerySpec {
                id: line.to_string(),
                query: raw.to_owned(),
                reference: None,
                split: None,
                line,
            }
        };
        if spec.query.trim().is_empty() {
            return Err(bad(line, "the query is empty".to_owned()));
        }
        if let Some(&first) = seen.get(&spec.id) {
            return Err(CollectError::DuplicateId {
                path: path.to_path_buf(),
                id: spec.id,
                first,
                line,
            });
        }
        seen.insert(spec.id.clone(), line);
        queries.push(spec);
    }
    if queries.is_empty() {
        return Err(CollectError::NoQueries {
            path: path.to_path_buf(),
        });
    }
    Ok(queries)
}

/// A grading prompt template with `{query}`, `{reference}` and `{response}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgePrompt {
    template: String,
}

const PLACEHOLDERS: [&str; 3] = ["query", "reference", "response"];

/// The `{name}` placeholders of `template` (a `{` followed by an identifier and `}`), in order.
fn placeholders(template: &str) -> Vec<(usize, usize, &str)> {
    let mut found = Vec::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            if j > start && j < bytes.len() && bytes[j] == b'}' && !bytes[start].is_ascii_digit() {
                found.push((i, j + 1, &template[start..j]));
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    found
}

impl Default for JudgePrompt {
    fn default() -> Self {
        Self {
            template: DEFAULT_JUDGE_PROMPT.to_owned(),
        }
    }
}

impl JudgePrompt {
    /// Checks a template: every `{identifier}` must be one of `{query}`, `{reference}`,
    /// `{response}`, and `{response}` must be there. `source_name` names it in errors.
    pub fn new(template: &str, source_name: &str) -> Result<Self, CollectError> {
        let bad = |reason: String| CollectError::BadPrompt {
            source_name: source_name.to_owned(),
            reason,
        };
        let found = placeholders(template);
        if let Some((_, _, name)) = found.iter().find(|(_, _, n)| !PLACEHOLDERS.contains(n)) {
            return Err(bad(format!(
                "unknown placeholder {{{name}}}: the template may use {{query}}, {{reference}} \
                 and {{response}}"
            )));
        }
        if !found.iter().any(|(_, _, n)| *n == "response") {
            return Err(bad(
                "the template has no {response} placeholder, so the judge would never see the \
                 answer: add it"
                    .to_owned(),
            ));
        }
        Ok(Self {
            template: template.to_owned(),
        })
    }

    /// The template's text.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The sha256 of the template, hex.
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(self.template.as_bytes()))
    }

    /// The prompt for one answer.
    pub fn render(&self, query: &str, reference: Option<&str>, response: &str) -> String {
        let mut out = String::with_capacity(self.template.len() + query.len() + response.len());
        let mut last = 0;
        for (start, end, name) in placeholders(&self.template) {
            out.push_str(&self.template[last..start]);
            out.push_str(match name {
                "query" => query,
                "reference" => reference.unwrap_or(NO_REFERENCE),
                _ => response,
            });
            last = end;
        }
        out.push_str(&self.template[last..]);
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The score in a judge's reply: a JSON object (alone, or the first `{…}` in the text) with a
/// number `score` (or `correctness_score`) in [0, 1].
pub fn parse_score(reply: &str) -> Option<f64> {
    let object = serde_json::from_str::<Value>(reply.trim())
        .ok()
        .or_else(|| {
            let start = reply.find('{')?;
            let end = reply.rfind('}')?;
            (end > start)
                .then(|| serde_json::from_str::<Value>(&reply[start..=end]).ok())
                .flatten()
        })?;
    let score = object
        .get("score")
        .or_else(|| object.get("correctness_score"))?
        .as_f64()?;
    (score.is_finite() && (0.0..=1.0).contains(&score)).then_some(score)
}

/// Settings of a collection run.
#[derive(Debug, Clone)]
pub struct CollectConfig {
    pub queries: Vec<QuerySpec>,
    pub pool: PoolConfig,
    /// The budgets, `Unlimited` included when wanted (see [`default_budgets`]).
    pub budgets: Vec<Budget>,
    /// The judge's model id on its API.
    pub judge_model: String,
    pub judge_prompt: JudgePrompt,
    /// Sampling temperature of the answers (the judge samples at 0).
    pub temperature: f64,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Stop starting calls once this run's spend (answers and judge) reaches this (USD).
    pub max_spend: Option<f64>,
    /// The judge's prices, when known ([`judge_prices`]); its calls then count towards the spend.
    pub judge_prices: Option<Prices>,
    /// Write into a folder collected with other settings.
    pub force: bool,
}

/// The judge's prices when it is a pool model (by name or id).
pub fn judge_prices(pool: &PoolConfig, judge_model: &str) -> Option<Prices> {
    pool.models
        .iter()
        .find(|m| m.name == judge_model || m.openrouter_id == judge_model)
        .map(|m| Prices {
            input_per_million: m.input_price_per_million,
            output_per_million: m.output_price_per_million,
        })
}

/// The released budgets ([`r2_core::UPSTREAM_BUDGETS`]) and `unlimited`.
pub fn default_budgets() -> Vec<Budget> {
    let mut budgets: Vec<Budget> = r2_core::UPSTREAM_BUDGETS
        .iter()
        .map(|&b| Budget::Tokens(b))
        .collect();
    budgets.push(Budget::Unlimited);
    budgets
}

/// The manifest of an output folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub models: Vec<ManifestModel>,
    pub budgets: Vec<Budget>,
    pub judge_model: String,
    pub judge_prompt_sha256: String,
    pub temperature: f64,
    pub r2_version: String,
}

/// A pool model in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestModel {
    pub name: String,
    pub openrouter_id: String,
    pub input_price_per_million: f64,
    pub output_price_per_million: f64,
}

impl Manifest {
    /// The manifest of `config`.
    pub fn of(config: &CollectConfig) -> Self {
        Self {
            models: config
                .pool
                .models
                .iter()
                .map(|m| ManifestModel {
                    name: m.name.clone(),
                    openrouter_id: m.openrouter_id.clone(),
                    input_price_per_million: m.input_price_per_million,
                    output_price_per_million: m.output_price_per_million,
                })
                .collect(),
            budgets: config.budgets.clone(),
            judge_model: config.judge_model.clone(),
            judge_prompt_sha256: config.judge_prompt.sha256(),
            temperature: config.temperature,
            r2_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// The first setting that differs from `now` (the version aside): what, was, now.
    fn difference(&self, now: &Manifest) -> Option<(String, String, String)> {
        if self.models != now.models {
            return Some((
                "the pool (models or prices)".into(),
                show(&self.models),
                show(&now.models),
            ));
        }
        if self.budgets != now.budgets {
            return Some((
                "the budgets".into(),
                show(&self.budgets),
                show(&now.budgets),
            ));
        }
        if self.judge_model != now.judge_model {
            return Some((
                "the judge model".into(),
                self.judge_model.clone(),
                now.judge_model.clone(),
            ));
        }
        if self.judge_prompt_sha256 != now.judge_prompt_sha256 {
            return Some((
                "the judge prompt (sha256)".into(),
                self.judge_prompt_sha256.clone(),
                now.judge_prompt_sha256.clone(),
            ));
        }
        if self.temperature != now.temperature {
            return Some((
                "the temperature".into(),
                self.temperature.to_string(),
                now.temperature.to_string(),
            ));
        }
        None
    }
}

fn show<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// One line of `records.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub query_id: String,
    pub model: String,
    pub budget: Budget,
    pub score: f64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Upstream's estimate of the query's input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// The provider's count of the prompt's tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub response: String,
    /// The judge's model, reply and attempts.
    #[serde(default)]
    pub judge: Value,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub latency_ms: u64,
}

/// One line of `failures.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub query_id: String,
    pub model: String,
    pub budget: Budget,
    /// `generation` or `judge`.
    pub stage: String,
    pub error: String,
    /// The answer, when the judge failed on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// One line of `answers.jsonl`: an answer as it arrived, before grading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub query_id: String,
    pub model: String,
    pub budget: Budget,
    pub response: String,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub latency_ms: u64,
}

impl Answer {
    fn key(&self) -> Key {
        (self.query_id.clone(), self.model.clone(), self.budget)
    }
}

/// The answers in a folder's `answers.jsonl` whose keys are not in `done` (repairing a torn last
/// line when `repair`).
pub fn ungraded_answers(
    dir: &Path,
    done: &HashSet<Key>,
    repair: bool,
) -> Result<HashMap<Key, Answer>, CollectError> {
    let lines = read_appended(&dir.join(ANSWERS_FILE), repair, |text| {
        serde_json::from_str::<Answer>(text).map_err(|e| format!("column {}: {e}", e.column()))
    })?;
    Ok(lines
        .into_iter()
        .map(|a| (a.key(), a))
        .filter(|(key, _)| !done.contains(key))
        .collect())
}

/// A (query id, model, budget) key.
pub type Key = (String, String, Budget);

#[derive(Deserialize)]
struct KeyLine {
    query_id: Value,
    model: String,
    budget: Budget,
}

#[derive(Deserialize)]
struct EmbeddingKey {
    query_id: Value,
}

fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads a JSONL file r2 collect appended to: every line parsed with `parse`; a torn last line
/// (no trailing newline, or unparsable) is dropped, and with `repair` the file is truncated to
/// the last good line. A bad line before the last is an error. A missing file is empty.
fn read_appended<T>(
    path: &Path,
    repair: bool,
    mut parse: impl FnMut(&str) -> Result<T, String>,
) -> Result<Vec<T>, CollectError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut out = Vec::new();
    let mut good_end = 0;
    let mut start = 0;
    let mut line = 0;
    while start < bytes.len() {
        line += 1;
        let (end, complete) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(p) => (start + p, true),
            None => (bytes.len(), false),
        };
        let text = String::from_utf8_lossy(&bytes[start..end]);
        let next = if complete { end + 1 } else { end };
        let last = next >= bytes.len();
        if text.trim().is_empty() && complete {
            good_end = next;
            start = next;
            continue;
        }
        match (complete, parse(&text)) {
            (true, Ok(v)) => {
                out.push(v);
                good_end = next;
            }
            (_, Err(_)) | (false, Ok(_)) if last => break,
            (_, Err(reason)) => {
                return Err(CollectError::BadOutput {
                    path: path.to_path_buf(),
                    line,
                    reason,
                })
            }
            (false, Ok(_)) => unreachable!("only the last line can lack a newline"),
        }
        start = next;
    }
    if repair && good_end < bytes.len() {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        file.set_len(good_end as u64).map_err(io(path))?;
        tracing::warn!(
            file = %path.display(),
            dropped_bytes = bytes.len() - good_end,
            "dropped a torn last line (an earlier run was interrupted while writing it)"
        );
    }
    Ok(out)
}

/// The (query, model, budget) keys already in a folder's `records.jsonl` (repairing a torn last
/// line when `repair`).
pub fn done_keys(dir: &Path, repair: bool) -> Result<HashSet<Key>, CollectError> {
    let lines = read_appended(&dir.join(RECORDS_FILE), repair, |text| {
        serde_json::from_str::<KeyLine>(text)
            .map(|k| (id_text(&k.query_id), k.model, k.budget))
            .map_err(|e| format!("column {}: {e}", e.column()))
    })?;
    Ok(lines.into_iter().collect())
}

fn embedded_ids(dir: &Path, repair: bool) -> Result<HashSet<String>, CollectError> {
    let lines = read_appended(&dir.join(EMBEDDINGS_FILE), repair, |text| {
        serde_json::from_str::<EmbeddingKey>(text)
            .map(|k| id_text(&k.query_id))
            .map_err(|e| format!("column {}: {e}", e.column()))
    })?;
    Ok(lines.into_iter().collect())
}

/// What a run would do: the calls left and an estimate of their cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Generation calls left (keys neither in `records.jsonl` nor answered in `answers.jsonl`).
    pub generations: usize,
    /// Answers of earlier runs that only need their grade (in `answers.jsonl`).
    pub regrades: usize,
    /// Judge calls (one per answer, retries aside).
    pub judge_calls: usize,
    /// Keys already done.
    pub done: usize,
    /// Estimated USD of the answers: input tokens (upstream's estimate; plus the budget prompt's
    /// words) × input price + budget tokens × output price for limited budgets,
    /// [`ASSUMED_OUTPUT_TOKENS`] for unlimited ones.
    pub generation_usd: f64,
    /// Estimated USD of the judge calls, when its prices are known
    /// ([`CollectConfig::judge_prices`]): the prompt's words (upstream's estimate) plus the
    /// answer's assumed tokens in, [`ASSUMED_JUDGE_REPLY_TOKENS`] out; `None` when they are not.
    pub judge_usd: Option<f64>,
}

/// The output tokens assumed for a judge reply (a JSON object with a score and a reason).
pub const ASSUMED_JUDGE_REPLY_TOKENS: u64 = 50;

/// The calls a run into `dir` would make and their estimated cost; reads `records.jsonl` without
/// changing it, sends nothing.
pub fn estimate(config: &CollectConfig, dir: &Path) -> Result<Estimate, CollectError> {
    let done = done_keys(dir, false)?;
    let answered = ungraded_answers(dir, &done, false)?;
    let judge_prices = config.judge_prices;
    let mut estimate = Estimate {
        generations: 0,
        judge_calls: 0,
        done: 0,
        generation_usd: 0.0,
        judge_usd: judge_prices.map(|_| 0.0),
        regrades: 0,
    };
    for query in &config.queries {
        let input = r2_core::estimate_input_tokens(&query.query);
        for model in &config.pool.models {
            for &budget in &config.budgets {
                if done.contains(&(query.id.clone(), model.name.clone(), budget)) {
                    estimate.done += 1;
                    continue;
                }
                estimate.judge_calls += 1;
                let (prompt, output) = match budget {
                    Budget::Tokens(n) => (input + 20, u64::from(n)),
                    Budget::Unlimited => (input, ASSUMED_OUTPUT_TOKENS),
                };
                let key = (query.id.clone(), model.name.clone(), budget);
                if let Some(answer) = answered.get(&key) {
                    // Answered in an earlier run, only its grade is missing.
                    if let (Some(judge), Some(usd)) = (judge_prices, estimate.judge_usd.as_mut()) {
                        *usd += judge_call_usd(config, query, answer.output_tokens, judge);
                    }
                    estimate.regrades += 1;
                    continue;
                }
                estimate.generations += 1;
                estimate.generation_usd += (prompt as f64 * model.input_price_per_million
                    + output as f64 * model.output_price_per_million)
                    / 1e6;
                if let (Some(judge), Some(usd)) = (judge_prices, estimate.judge_usd.as_mut()) {
                    *usd += judge_call_usd(config, query, output, judge);
                }
            }
        }
    }
    Ok(estimate)
}

/// The estimated cost of grading one answer of `answer_tokens` tokens to `query`.
fn judge_call_usd(
    config: &CollectConfig,
    query: &QuerySpec,
    answer_tokens: u64,
    judge: Prices,
) -> f64 {
    let prompt_tokens = r2_core::estimate_input_tokens(&config.judge_prompt.render(
        &query.query,
        query.reference.as_deref(),
        "",
    )) + answer_tokens;
    (prompt_tokens as f64 * judge.input_per_million
        + ASSUMED_JUDGE_REPLY_TOKENS as f64 * judge.output_per_million)
        / 1e6
}

/// Progress of a run, handed to the callback after every finished call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Keys finished in this run (recorded or failed).
    pub finished: usize,
    /// Keys this run set out to do.
    pub total: usize,
    pub recorded: usize,
    pub failed: usize,
    /// USD spent in this run: answers and (when its prices are known) the judge.
    pub spend_usd: f64,
    /// The judge's part of `spend_usd`.
    pub judge_spend_usd: f64,
}

/// The end of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub progress: Progress,
    /// Keys already done before the run.
    pub skipped: usize,
    /// Generation and judge calls made (judge retries included).
    pub generation_calls: usize,
    pub judge_calls: usize,
    /// Whether the spend cap stopped the run before every key was done.
    pub stopped_by_spend: bool,
    /// Keys not started because of the cap or a halt.
    pub not_started: usize,
    /// The error that stopped the run early because every later call would fail the same way
    /// (the key rejected, no credit left, an API that cannot be reached).
    pub halted: Option<String>,
    /// Per pool model (pool order): records written in this run and their mean score.
    pub per_model: Vec<(String, usize, f64)>,
}

/// The clients a run talks to.
pub struct Clients<'a> {
    /// The API of the pool's models.
    pub generation: &'a LlmClient,
    /// The judge's API.
    pub judge: &'a LlmClient,
    /// The embedder (`r2 route`'s: [`crate::make_embedder`]); `None` writes no embeddings.
    pub embedder: Option<&'a dyn Embedder>,
}

/// What one key cost in this run: a new answer and the judge calls.
#[derive(Clone, Copy, Default)]
struct Spent {
    /// Whether a generation call was made (not when an earlier run's answer was graded).
    generation_call: bool,
    answer_usd: f64,
    judge_usd: f64,
}

impl Progress {
    fn add(&mut self, spent: Spent) {
        self.spend_usd += spent.answer_usd + spent.judge_usd;
        self.judge_spend_usd += spent.judge_usd;
    }
}

enum Outcome {
    Recorded(Record, u32, Spent),
    /// The failure, the judge calls made, what was paid for, and whether every later call would
    /// fail the same way (a rejected key, no credit, a bad URL).
    Failed(Failure, u32, Spent, bool),
    NotStarted,
}

/// `answers.jsonl`, shared by the calls in flight.
struct Journal {
    file: Mutex<File>,
    path: PathBuf,
}

impl Journal {
    fn append(&self, answer: &Answer) -> Result<(), CollectError> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        append_line(&mut file, &self.path, answer)
    }
}

/// Checks the folder's manifest against `config` (writing it when there is none), then embeds the
/// queries not yet in `embeddings.jsonl`, then answers and grades every key not yet in
/// `records.jsonl`, at most `config.concurrency` at a time. Each record, failure and embedding is
/// appended and flushed as it is done.
pub async fn collect(
    config: &CollectConfig,
    dir: &Path,
    clients: Clients<'_>,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Summary, CollectError> {
    if config.concurrency == 0 {
        return Err(CollectError::Invalid(
            "the concurrency must be at least 1".into(),
        ));
    }
    if config.budgets.is_empty() {
        return Err(CollectError::Invalid("no budgets to collect".into()));
    }
    if config.pool.models.is_empty() {
        return Err(CollectError::Invalid("the pool has no models".into()));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    check_manifest(config, dir)?;

    // Embeddings first: cheap, and `r2 train` needs every query's.
    if let Some(embedder) = clients.embedder {
        embed_missing(config, dir, embedder).await?;
    }

    let done = done_keys(dir, true)?;
    let mut answered = ungraded_answers(dir, &done, true)?;
    let answers_path = dir.join(ANSWERS_FILE);
    let journal = Journal {
        file: Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&answers_path)
                .map_err(io(&answers_path))?,
        ),
        path: answers_path,
    };
    let journal = &journal;
    let failures_path = dir.join(FAILURES_FILE);
    // The failures of the last run are retried now; the file reports this run's.
    let mut failures_file = File::create(&failures_path).map_err(io(&failures_path))?;
    let records_path = dir.join(RECORDS_FILE);
    let mut records_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&records_path)
        .map_err(io(&records_path))?;

    let mut todo = Vec::new();
    let mut skipped = 0;
    for query in &config.queries {
        for model in &config.pool.models {
            for &budget in &config.budgets {
                let key = (query.id.clone(), model.name.clone(), budget);
                if done.contains(&key) {
                    skipped += 1;
                } else {
                    todo.push((query, model, budget, answered.remove(&key)));
                }
            }
        }
    }
    let mut summary = Summary {
        skipped,
        progress: Progress {
            total: todo.len(),
            ..Progress::default()
        },
        ..Summary::default()
    };
    let spend = Mutex::new(0.0f64);
    let cap = config.max_spend;
    let spend = &spend;
    let halt = std::sync::atomic::AtomicBool::new(false);
    let halt = &halt;
    let clients = &clients;
    let mut results = futures_util::stream::iter(todo)
        .map(|(query, model, budget, earlier)| async move {
            if halt.load(std::sync::atomic::Ordering::SeqCst) {
                return Outcome::NotStarted;
            }
            if let Some(cap) = cap {
                if *spend.lock().unwrap_or_else(|e| e.into_inner()) >= cap {
                    return Outcome::NotStarted;
                }
            }
            let outcome =
                answer_and_grade(config, clients, journal, query, model, budget, earlier).await;
            let spent = match &outcome {
                Outcome::Recorded(_, _, spent) => *spent,
                Outcome::Failed(_, _, spent, fatal) => {
                    if *fatal {
                        halt.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    *spent
                }
                Outcome::NotStarted => Spent::default(),
            };
            *spend.lock().unwrap_or_else(|e| e.into_inner()) += spent.answer_usd + spent.judge_usd;
            outcome
        })
        .buffer_unordered(config.concurrency);

    let mut scores: HashMap<&str, (usize, f64)> = HashMap::new();
    let mut recorded: HashSet<Key> = HashSet::new();
    while let Some(outcome) = results.next().await {
        match outcome {
            Outcome::Recorded(record, judge_calls, spent) => {
                append_line(&mut records_file, &records_path, &record)?;
                recorded.insert((record.query_id.clone(), record.model.clone(), record.budget));
                summary.generation_calls += usize::from(spent.generation_call);
                summary.judge_calls += judge_calls as usize;
                summary.progress.recorded += 1;
                summary.progress.add(spent);
                let model = config
                    .pool
                    .models
                    .iter()
                    .find(|m| m.name == record.model)
                    .map_or("", |m| m.name.as_str());
                let entry = scores.entry(model).or_default();
                entry.0 += 1;
                entry.1 += record.score;
            }
            Outcome::Failed(failure, judge_calls, spent, fatal) => {
                if fatal && summary.halted.is_none() {
                    summary.halted = Some(format!("{} call: {}", failure.stage, failure.error));
                }
                append_line(&mut failures_file, &failures_path, &failure)?;
                summary.generation_calls += usize::from(spent.generation_call);
                summary.judge_calls += judge_calls as usize;
                summary.progress.failed += 1;
                summary.progress.add(spent);
                tracing::warn!(
                    query_id = %failure.query_id,
                    model = %failure.model,
                    budget = %failure.budget,
                    stage = %failure.stage,
                    error = %failure.error,
                    "a call failed after its retries"
                );
            }
            Outcome::NotStarted => {
                summary.not_started += 1;
                if summary.halted.is_none() {
                    summary.stopped_by_spend = true;
                }
                continue;
            }
        }
        summary.progress.finished += 1;
        on_progress(&summary.progress);
    }
    drop(results);
    compact_answers(dir, &done, &recorded)?;
    summary.per_model = config
        .pool
        .models
        .iter()
        .map(|m| {
            let (n, sum) = scores.get(m.name.as_str()).copied().unwrap_or_default();
            (
                m.name.clone(),
                n,
                if n > 0 { sum / n as f64 } else { f64::NAN },
            )
        })
        .collect();
    Ok(summary)
}

/// Rewrites `answers.jsonl` with only the answers still ungraded (atomically: a crash leaves the
/// old file whole).
fn compact_answers(
    dir: &Path,
    done: &HashSet<Key>,
    recorded: &HashSet<Key>,
) -> Result<(), CollectError> {
    let path = dir.join(ANSWERS_FILE);
    let keep: Vec<Answer> = read_appended(&path, false, |text| {
        serde_json::from_str::<Answer>(text).map_err(|e| format!("column {}: {e}", e.column()))
    })?
    .into_iter()
    .filter(|a| {
        let key = a.key();
        !done.contains(&key) && !recorded.contains(&key)
    })
    .collect();
    let tmp = dir.join(".answers.jsonl.tmp");
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    for answer in &keep {
        append_line(&mut file, &tmp, answer)?;
    }
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

fn append_line<T: Serialize>(file: &mut File, path: &Path, value: &T) -> Result<(), CollectError> {
    let mut line = serde_json::to_string(value).map_err(|e| CollectError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    line.push('\n');
    // One write of the whole line: a crash leaves at most the last line torn.
    file.write_all(line.as_bytes()).map_err(io(path))?;
    file.flush().map_err(io(path))
}

fn check_manifest(config: &CollectConfig, dir: &Path) -> Result<(), CollectError> {
    let path = dir.join(MANIFEST_FILE);
    let now = Manifest::of(config);
    match std::fs::read_to_string(&path) {
        Ok(text) if !config.force => {
            let was: Manifest =
                serde_json::from_str(&text).map_err(|e| CollectError::BadOutput {
                    path: path.clone(),
                    line: e.line(),
                    reason: e.to_string(),
                })?;
            if let Some((what, was, now)) = was.difference(&now) {
                return Err(CollectError::ManifestMismatch {
                    path,
                    what,
                    was,
                    now,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
        _ => {
            let text = serde_json::to_string_pretty(&now).expect("a manifest serialises") + "\n";
            let tmp = dir.join(".manifest.json.tmp");
            std::fs::write(&tmp, text).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))
        }
    }
}

async fn embed_missing(
    config: &CollectConfig,
    dir: &Path,
    embedder: &dyn Embedder,
) -> Result<(), CollectError> {
    if embedder.dim() != config.pool.embedding_dim {
        return Err(CollectError::Invalid(format!(
            "the embedding model {} gives {}-d vectors but the pool config ({}) says \
             embedding_dim {}: use the pool's embedding model ({})",
            embedder.model_name(),
            embedder.dim(),
            config.pool.source.display(),
            config.pool.embedding_dim,
            config.pool.embedding_model
        )));
    }
    let have = embedded_ids(dir, true)?;
    let missing: Vec<&QuerySpec> = config
        .queries
        .iter()
        .filter(|q| !have.contains(&q.id))
        .collect();
    let path = dir.join(EMBEDDINGS_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    for chunk in missing.chunks(64) {
        let texts: Vec<String> = chunk.iter().map(|q| q.query.clone()).collect();
        let vectors = embedder.embed(&texts).await?;
        for (query, vector) in chunk.iter().zip(vectors) {
            let line = json!({
                "query_id": query.id,
                "embedding": vector.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>(),
                "input_tokens": r2_core::estimate_input_tokens(&query.query),
            });
            append_line(&mut file, &path, &line)?;
        }
    }
    Ok(())
}

async fn answer_and_grade(
    config: &CollectConfig,
    clients: &Clients<'_>,
    journal: &Journal,
    query: &QuerySpec,
    model: &r2_checkpoints::PoolModel,
    budget: Budget,
    earlier: Option<Answer>,
) -> Outcome {
    let failure = |stage: &str, error: String, response: Option<String>| Failure {
        query_id: query.id.clone(),
        model: model.name.clone(),
        budget,
        stage: stage.to_owned(),
        error,
        response,
    };
    let mut spent = Spent::default();
    let answer = match earlier {
        Some(answer) => answer,
        None => {
            spent.generation_call = true;
            match generate(config, clients, query, model, budget).await {
                Ok(answer) => {
                    spent.answer_usd = answer.cost_usd;
                    if let Err(e) = journal.append(&answer) {
                        // Still graded and recorded; only a crash before that would lose it.
                        tracing::warn!(error = %e, "could not keep the answer in the journal");
                    }
                    answer
                }
                Err(e) => {
                    return Outcome::Failed(
                        failure("generation", r2_http::error_chain(&e), None),
                        0,
                        spent,
                        fatal(&e),
                    )
                }
            }
        }
    };
    let prompt =
        config
            .judge_prompt
            .render(&query.query, query.reference.as_deref(), &answer.response);
    let body = json!({
        "model": config.judge_model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.0,
        "response_format": {"type": "json_object"},
    });
    let mut calls = 0;
    let mut last_error = String::new();
    let mut judge_fatal = false;
    for _ in 0..=JUDGE_RETRIES {
        calls += 1;
        match clients.judge.complete_raw(&body).await {
            Ok(reply_body) => {
                let usage = reply_body.get("usage").cloned().unwrap_or(Value::Null);
                let judge_usd = config.judge_prices.map_or(0.0, |prices| {
                    serde_json::from_value::<Usage>(usage.clone())
                        .unwrap_or_default()
                        .cost_usd(prices)
                });
                spent.judge_usd += judge_usd;
                let reply = reply_body["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if let Some(score) = parse_score(&reply) {
                    let record = Record {
                        query_id: query.id.clone(),
                        model: model.name.clone(),
                        budget,
                        score,
                        output_tokens: answer.output_tokens,
                        split: query.split.clone(),
                        input_tokens: r2_core::estimate_input_tokens(&query.query),
                        prompt_tokens: answer.prompt_tokens,
                        response: answer.response,
                        judge: json!({
                            "model": config.judge_model,
                            "reply": reply,
                            "attempts": calls,
                            "usage": usage,
                        }),
                        cost_usd: answer.cost_usd,
                        latency_ms: answer.latency_ms,
                    };
                    return Outcome::Recorded(record, calls, spent);
                }
                last_error = format!(
                    "the judge's reply holds no JSON object with a `score` in [0, 1]: {}",
                    r2_http::truncate(&reply, 300)
                );
            }
            Err(e) => {
                // HTTP failures were already retried by the client.
                last_error = r2_http::error_chain(&e);
                judge_fatal = fatal(&e);
                break;
            }
        }
    }
    let mut failed = failure("judge", last_error, Some(answer.response));
    if calls > 1 {
        failed.error = format!("after {calls} judge calls: {}", failed.error);
    }
    // The answer stays in the journal: the next run grades it without asking for it again.
    Outcome::Failed(failed, calls, spent, judge_fatal)
}

/// One generation with exactly the request routing sends.
async fn generate(
    config: &CollectConfig,
    clients: &Clients<'_>,
    query: &QuerySpec,
    model: &r2_checkpoints::PoolModel,
    budget: Budget,
) -> Result<Answer, r2_llm::Error> {
    let tokens = match budget {
        Budget::Tokens(n) => Some(n),
        Budget::Unlimited => None,
    };
    let request = ChatRequest::routed(
        &model.openrouter_id,
        &query.query,
        tokens,
        config.temperature,
    );
    let started = Instant::now();
    let completion = clients.generation.complete(&request).await?;
    let latency_ms = started.elapsed().as_millis() as u64;
    let usage: Usage = completion.usage.unwrap_or_default();
    Ok(Answer {
        query_id: query.id.clone(),
        model: model.name.clone(),
        budget,
        response: completion.text,
        prompt_tokens: usage.prompt_tokens,
        output_tokens: usage.completion_tokens,
        cost_usd: usage.cost_usd(Prices {
            input_per_million: model.input_price_per_million,
            output_per_million: model.output_price_per_million,
        }),
        latency_ms,
    })
}

/// Whether every later call would fail as this one did.
fn fatal(e: &r2_llm::Error) -> bool {
    matches!(
        e,
        r2_llm::Error::Unauthorized { .. }
            | r2_llm::Error::PaymentRequired { .. }
            | r2_llm::Error::InvalidApiKey { .. }
            | r2_llm::Error::InvalidUrl { .. }
            | r2_llm::Error::Unreachable { .. }
    )
}
