//! Printing decisions and answers as `r2 route` does: upstream's JSON lines or route.py's text,
//! with the answer of the chosen model when generating (streamed as it arrives with `--stream`).

use std::io::Write;

use anyhow::{anyhow, Context, Result};
use r2_router::r2_core::Decision;
use r2_router::report::Report;
use r2_router::{R2Router, Routed};

use crate::output::{human, loaded_line, python_json, response_header};

/// What generation needs, when `--llm-api-base` is given.
pub struct Generate<'a> {
    pub runtime: &'a tokio::runtime::Runtime,
    pub stream: bool,
    pub temperature: f64,
    pub policy: r2_router::FallbackPolicy,
}

/// One query as it was read: where (for messages), its echoed id and its text.
pub struct Item<'a> {
    pub line: usize,
    pub id: Option<&'a serde_json::Value>,
    pub query: Option<&'a str>,
}

/// Prints one decision (and answer) after the other.
pub struct Printer<'a, W: Write> {
    pub r2: &'a R2Router,
    pub report: Report<'a>,
    pub candidates: Vec<&'a str>,
    pub json: bool,
    pub verbose: bool,
    pub label: String,
    pub generate: Option<Generate<'a>>,
    pub out: W,
    printed: usize,
}

impl<'a, W: Write> Printer<'a, W> {
    pub fn new(
        r2: &'a R2Router,
        candidates: Vec<&'a str>,
        json: bool,
        verbose: bool,
        out: W,
    ) -> Self {
        Self {
            r2,
            report: r2.report(),
            candidates,
            json,
            verbose,
            label: String::new(),
            generate: None,
            out,
            printed: 0,
        }
    }

    /// Prints a decision, or with generation calls the chosen model and prints its answer.
    pub fn print(&mut self, item: &Item, decision: &Decision) -> Result<()> {
        if self.generate.is_some() {
            self.generate_and_print(item, decision)?;
        } else if self.json {
            let json = self
                .report
                .decision(decision, item.id, item.query, self.verbose);
            writeln!(self.out, "{}", python_json(&json))?;
        } else {
            self.separate()?;
            let text = human(&self.report, decision, &self.candidates, self.verbose);
            write!(self.out, "{text}")?;
        }
        self.printed += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        Ok(self.out.flush()?)
    }

    /// Prints the decisions of a batch (one per item, up to the first query that could not be
    /// routed), then fails with that query's error, named by its input line.
    pub fn print_routed(&mut self, items: Vec<Item>, routed: Routed) -> Result<()> {
        for (item, decision) in items.iter().zip(&routed.decisions) {
            self.print(item, decision)?;
        }
        self.flush()?;
        let Some(e) = routed.failed else {
            return Ok(());
        };
        let query = match &e {
            r2_router::Error::Core(core) => r2_router::query_of(core),
            _ => None,
        };
        Err(match query.and_then(|q| items.get(q)) {
            Some(item) => anyhow!("{}: line {}: {e}", self.label, item.line),
            None => anyhow!(e),
        })
    }

    /// route.py's `--verbose` first line: the models the loader loaded.
    pub fn print_loaded(&mut self) -> Result<()> {
        let models: Vec<&str> = self
            .r2
            .router()
            .models()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        write!(self.out, "{}", loaded_line(&models))?;
        self.flush()
    }

    /// route.py's blank line between two queries.
    fn separate(&mut self) -> Result<()> {
        if self.printed > 0 {
            writeln!(self.out)?;
        }
        Ok(())
    }

    fn generate_and_print(&mut self, item: &Item, decision: &Decision) -> Result<()> {
        let (runtime, stream, temperature, policy) = {
            let g = self.generate.as_ref().expect("only called when generating");
            (g.runtime, g.stream, g.temperature, g.policy)
        };
        let query = item.query.unwrap_or_default();
        let choice = &decision.choice;
        if !self.json {
            self.separate()?;
            let head = human(&self.report, decision, &self.candidates, false);
            write!(self.out, "{head}{}", response_header())?;
            self.out.flush()?;
        }
        let streaming = stream && !self.json;
        // Streamed text goes straight to stdout as it arrives (the writer above was flushed;
        // stdout's lock is re-entrant, and the future runs on this thread).
        let mut write_error = None;
        let mut on_delta = |delta: &str| {
            if write_error.is_none() {
                let mut stdout = std::io::stdout();
                if let Err(e) = stdout
                    .write_all(delta.as_bytes())
                    .and_then(|_| stdout.flush())
                {
                    write_error = Some(e);
                }
            }
        };
        let on_delta: Option<&mut (dyn FnMut(&str) + Send)> =
            if streaming { Some(&mut on_delta) } else { None };
        let generated = runtime.block_on(self.r2.generate_with_fallback(
            query,
            decision.clone(),
            temperature,
            policy,
            on_delta,
        ));
        if let Some(e) = write_error {
            return Err(e.into());
        }
        let answer = generated.map_err(crate::load::with_hint).with_context(|| {
            format!(
                "{}: line {}: generating with {} (budget {})",
                self.label,
                item.line,
                self.report.model_name(choice.model),
                choice.budget
            )
        })?;
        if answer.attempts.len() > 1 {
            let failed: Vec<String> = answer.attempts[..answer.attempts.len() - 1]
                .iter()
                .map(|a| {
                    format!(
                        "{} (budget {}): {}",
                        a.model,
                        a.budget,
                        a.error.as_deref().unwrap_or_default()
                    )
                })
                .collect();
            tracing::warn!(
                "{}: line {}: answered by {} (budget {}) after {}",
                self.label,
                item.line,
                self.report.model_name(answer.answered.model),
                answer.answered.budget,
                failed.join("; ")
            );
        }
        if self.json {
            let json = self.report.generation(&answer, query);
            writeln!(self.out, "{}", python_json(&json))?;
        } else if streaming {
            writeln!(self.out)?;
        } else {
            writeln!(self.out, "{}", answer.generation.text)?;
        }
        self.out.flush()?;
        Ok(())
    }
}
