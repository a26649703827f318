//! `r2 route --embeddings`: JSONL of vectors (arrays of numbers or base64 float32), read in
//! chunks and parsed on two threads, or a NumPy `.npy` array with an optional rows file; every
//! error names the line (or row).

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use r2_router::vector::Vector;
use serde::Deserialize;

/// One line of the embeddings file.
pub struct InputLine {
    pub id: Option<serde_json::Value>,
    pub query: Option<String>,
    pub embedding: Vector,
    pub input_tokens: Option<u64>,
}

/// A line as JSON has it; the embedding is usually parsed aside ([`r2_router::vector::from_str_with`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    /// Echoed in the decision; `query_id` (as `r2 collect` and `r2 train` data name it) works too.
    #[serde(default, alias = "query_id")]
    id: Option<serde_json::Value>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    embedding: Option<Vector>,
    #[serde(default)]
    input_tokens: Option<u64>,
}

/// One line of a `.npy` array's rows file: its id, input tokens and text, all optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RowLine {
    #[serde(default, alias = "query_id")]
    id: Option<serde_json::Value>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    input_tokens: Option<u64>,
}

/// Where the embeddings come from.
pub enum EmbeddingLines {
    Jsonl(JsonlLines),
    Npy(NpyRows),
}

/// The lines of an embeddings file (`-`: stdin), one chunk at a time.
pub struct JsonlLines {
    reader: Box<dyn BufRead>,
    number: usize,
    dim: usize,
    /// The lines of the chunk being parsed, with their numbers: kept from chunk to chunk so their
    /// memory (tens of MB) is not given back and faulted in again each time.
    raw: Vec<(usize, String)>,
}

/// The rows of a `.npy` array and, when given, the lines of its rows file.
pub struct NpyRows {
    array: r2_train::data::npy::NpyReader,
    rows: Vec<RowLine>,
    next: usize,
}

impl EmbeddingLines {
    /// Opens `path` for embeddings of `dim` values: JSONL, or (by its extension) a `.npy` array
    /// whose row i is described by line i of `rows` (ids, input tokens).
    pub fn open(path: &Path, rows: Option<&Path>, dim: usize) -> Result<(Self, String)> {
        let label = if path.as_os_str() == "-" {
            "<stdin>".to_owned()
        } else {
            path.display().to_string()
        };
        let npy = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        if !npy {
            if let Some(rows) = rows {
                bail!(
                    "--embedding-ids {} is for a .npy --embeddings array; JSONL lines carry their \
                     own ids",
                    rows.display()
                );
            }
            let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                Box::new(BufReader::with_capacity(1 << 20, file))
            };
            let lines = JsonlLines {
                reader,
                number: 0,
                dim,
                raw: Vec::new(),
            };
            return Ok((EmbeddingLines::Jsonl(lines), label));
        }
        let array = r2_train::data::npy::NpyReader::open(path)?;
        if array.dim() != dim {
            bail!(
                "{label}: the array's rows have {} values, the router expects {dim}",
                array.dim()
            );
        }
        let rows = match rows {
            Some(rows) => read_rows(rows, array.rows())?,
            None => Vec::new(),
        };
        Ok((
            EmbeddingLines::Npy(NpyRows {
                array,
                rows,
                next: 0,
            }),
            label,
        ))
    }

    /// Up to `n` more embeddings with their line (or row) numbers. A bad line ends the chunk
    /// early: the lines before it come back with its error, so nothing valid is lost.
    pub fn next_chunk(
        &mut self,
        n: usize,
        label: &str,
    ) -> (Vec<(usize, InputLine)>, Option<anyhow::Error>) {
        match self {
            EmbeddingLines::Jsonl(lines) => lines.next_chunk(n, label),
            EmbeddingLines::Npy(rows) => rows.next_chunk(n, label),
        }
    }
}

impl NpyRows {
    fn next_chunk(
        &mut self,
        n: usize,
        label: &str,
    ) -> (Vec<(usize, InputLine)>, Option<anyhow::Error>) {
        let mut chunk = Vec::with_capacity(n.min(self.array.rows() - self.next));
        while chunk.len() < n && self.next < self.array.rows() {
            let values = match self.array.next_row() {
                Ok(values) => values,
                Err(e) => return (chunk, Some(anyhow!(e).context(format!("reading {label}")))),
            };
            let row = self
                .rows
                .get_mut(self.next)
                .map(std::mem::take)
                .unwrap_or_default();
            self.next += 1;
            chunk.push((
                self.next,
                InputLine {
                    id: row.id,
                    query: row.query,
                    embedding: Vector(values),
                    input_tokens: row.input_tokens,
                },
            ));
        }
        (chunk, None)
    }
}

/// The rows file of a `.npy` array: one line a row (blank lines skipped), a plain id or a JSON
/// object `{"id" | "query_id", "input_tokens", "query"}` (each optional); as many as the array has
/// rows.
fn read_rows(path: &Path, want: usize) -> Result<Vec<RowLine>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rows = Vec::with_capacity(want);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let row = if line.starts_with('{') {
            serde_json::from_str(line).map_err(|e| {
                anyhow!(
                    "{}: line {}, column {}: {}",
                    path.display(),
                    i + 1,
                    e.column(),
                    strip_position(&e)
                )
            })?
        } else {
            RowLine {
                id: Some(serde_json::Value::String(line.to_owned())),
                ..RowLine::default()
            }
        };
        rows.push(row);
    }
    if rows.len() != want {
        bail!(
            "{}: {} rows described, but the array has {want}: one line a row",
            path.display(),
            rows.len()
        );
    }
    Ok(rows)
}

impl JsonlLines {
    /// Reads up to `n` lines, then parses them on two threads (a chunk of 1,024 lines is about
    /// 20 MB of numbers), keeping their order.
    fn next_chunk(
        &mut self,
        n: usize,
        label: &str,
    ) -> (Vec<(usize, InputLine)>, Option<anyhow::Error>) {
        let mut raw = std::mem::take(&mut self.raw);
        let mut used = 0;
        let mut read_error = None;
        while used < n {
            if raw.len() == used {
                raw.push((0, String::new()));
            }
            let (number, line) = &mut raw[used];
            line.clear();
            match self.reader.read_line(line) {
                Ok(0) => break,
                Ok(_) => {
                    self.number += 1;
                    if line.ends_with('\n') {
                        line.pop();
                        if line.ends_with('\r') {
                            line.pop();
                        }
                    }
                    if !line.trim().is_empty() {
                        *number = self.number;
                        used += 1;
                    }
                }
                Err(e) => {
                    self.number += 1;
                    let what = if e.kind() == std::io::ErrorKind::InvalidData {
                        "not UTF-8 text"
                    } else {
                        "cannot read"
                    };
                    read_error =
                        Some(anyhow!(e).context(format!("{label}: line {}: {what}", self.number)));
                    break;
                }
            }
        }
        let lines = &raw[..used];
        let dim = self.dim;
        let parse_all = |lines: &[(usize, String)]| -> Vec<Result<InputLine>> {
            lines
                .iter()
                .map(|(number, line)| parse_line(line, *number, label, dim))
                .collect()
        };
        let parsed: Vec<Result<InputLine>> = if lines.len() >= 64 {
            let (a, b) = lines.split_at(lines.len() / 2);
            std::thread::scope(|scope| {
                let second = scope.spawn(|| parse_all(b));
                let mut first = parse_all(a);
                first.extend(second.join().unwrap_or_else(|_| {
                    vec![Err(anyhow!("{label}: the parsing thread panicked"))]
                }));
                first
            })
        } else {
            parse_all(lines)
        };
        let mut chunk = Vec::with_capacity(parsed.len());
        let mut bad_line = read_error;
        for ((number, _), line) in lines.iter().zip(parsed) {
            match line {
                Ok(line) => chunk.push((*number, line)),
                Err(e) => {
                    bad_line = Some(e);
                    break;
                }
            }
        }
        self.raw = raw;
        (chunk, bad_line)
    }
}

/// One (non-blank) line of input, or an error naming the line.
fn parse_line(line: &str, number: usize, label: &str, dim: usize) -> Result<InputLine> {
    // A byte-order mark (as some editors write) at the start of the file is not JSON.
    let line = match (number, line.strip_prefix('\u{feff}')) {
        (1, Some(rest)) => rest,
        _ => line,
    };
    let (raw, fast) = r2_router::vector::from_str_with::<RawLine>(line, "embedding", false)
        .map_err(|e| {
            anyhow!(
                "{label}: line {number}, column {}: {}",
                e.column(),
                strip_position(&e)
            )
        })?;
    let embedding = match (fast.and_then(|mut v| v.pop()), raw.embedding) {
        (Some(values), _) | (None, Some(Vector(values))) => Vector(values),
        // Where serde_json would say it: the end of the object.
        (None, None) => bail!(
            "{label}: line {number}, column {}: missing field `embedding`",
            line.trim_end().len()
        ),
    };
    let parsed = InputLine {
        id: raw.id,
        query: raw.query,
        embedding,
        input_tokens: raw.input_tokens,
    };
    if parsed.embedding.0.len() != dim {
        bail!(
            "{label}: line {number}: the embedding has {} values, the router expects {dim}",
            parsed.embedding.0.len(),
        );
    }
    Ok(parsed)
}

/// serde_json's message without its trailing " at line L column C" (we say where ourselves).
fn strip_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_owned(),
        None => message,
    }
}
