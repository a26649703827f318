//! `r2 route --embeddings`: JSONL of vectors, read in chunks; every error names the line.

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// One line of the embeddings file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputLine {
    /// Echoed in the decision; `query_id` (as `r2 collect` and `r2 train` data name it) works too.
    #[serde(default, alias = "query_id")]
    pub id: Option<serde_json::Value>,
    #[serde(default)]
    pub query: Option<String>,
    pub embedding: Vec<f64>,
    #[serde(default)]
    pub input_tokens: Option<u64>,
}

/// The lines of an embeddings file (`-`: stdin), one chunk at a time.
pub struct EmbeddingLines {
    lines: std::io::Lines<Box<dyn BufRead>>,
    pub label: String,
    number: usize,
    dim: usize,
}

impl EmbeddingLines {
    /// Opens `path` for embeddings of `dim` values.
    pub fn open(path: &Path, dim: usize) -> Result<Self> {
        let (reader, label): (Box<dyn BufRead>, String) = if path.as_os_str() == "-" {
            (Box::new(std::io::stdin().lock()), "<stdin>".into())
        } else {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            (Box::new(BufReader::new(file)), path.display().to_string())
        };
        Ok(Self {
            lines: reader.lines(),
            label,
            number: 0,
            dim,
        })
    }

    /// Up to `n` more lines (blank ones skipped) with their line numbers. A bad line ends the
    /// chunk early: the lines before it come back with its error, so nothing valid is lost.
    pub fn next_chunk(&mut self, n: usize) -> (Vec<(usize, InputLine)>, Option<anyhow::Error>) {
        let mut chunk = Vec::with_capacity(n.min(4096));
        while chunk.len() < n {
            let Some(line) = self.lines.next() else {
                break;
            };
            self.number += 1;
            match parse_line(line, self.number, &self.label, self.dim) {
                Ok(None) => {}
                Ok(Some(parsed)) => chunk.push((self.number, parsed)),
                Err(e) => return (chunk, Some(e)),
            }
        }
        (chunk, None)
    }
}

/// One line of input: `None` for a blank line, or an error naming the line.
fn parse_line(
    line: std::io::Result<String>,
    number: usize,
    label: &str,
    dim: usize,
) -> Result<Option<InputLine>> {
    let line = line.with_context(|| format!("{label}: line {number}: cannot read"))?;
    // A byte-order mark (as some editors write) at the start of the file is not JSON.
    let line = match (number, line.strip_prefix('\u{feff}')) {
        (1, Some(rest)) => rest.to_owned(),
        _ => line,
    };
    if line.trim().is_empty() {
        return Ok(None);
    }
    let parsed: InputLine = serde_json::from_str(&line).map_err(|e| {
        anyhow!(
            "{label}: line {number}, column {}: {}",
            e.column(),
            strip_position(&e)
        )
    })?;
    if parsed.embedding.len() != dim {
        bail!(
            "{label}: line {number}: the embedding has {} values, the router expects {dim}",
            parsed.embedding.len(),
        );
    }
    Ok(Some(parsed))
}

/// serde_json's message without its trailing " at line L column C" (we say where ourselves).
fn strip_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_owned(),
        None => message,
    }
}
