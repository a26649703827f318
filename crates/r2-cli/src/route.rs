//! `r2 route`: embeddings in, decisions out.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args};
use r2_core::{RouteParams, Router};
use r2_router::R2Router;
use serde::Deserialize;

use crate::output::{human, loaded_line, python_json, response_header};
use crate::text::{self, EmbedderArgs, LlmArgs, Progress, Queries};
use crate::{load, RouterArgs};
use r2_router::report::Report;

/// Lines routed together: one matrix product, one flush of the output.
const BATCH: usize = 1024;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["embeddings", "query", "file"])))]
pub struct RouteArgs {
    #[command(flatten)]
    router: RouterArgs,

    #[command(flatten)]
    embedder: EmbedderArgs,

    #[command(flatten)]
    llm: LlmArgs,

    /// One query to embed and route
    #[arg(long, value_name = "TEXT")]
    query: Option<String>,

    /// Queries to embed and route, one a line (blank lines are skipped); `-` reads stdin
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,

    /// JSONL of query embeddings, one {"id", "embedding", "input_tokens"?} a line; `-` reads stdin
    #[arg(long, value_name = "FILE")]
    embeddings: Option<PathBuf>,

    /// Cost-quality trade-off in [0, 1]: 0 = best quality, 1 = lowest cost [default: the pool
    /// config's default_lambda]
    #[arg(long = "lambda", visible_alias = "lambda_val", value_name = "F")]
    lambda: Option<f64>,

    /// Input tokens of every query [default: for text, upstream's estimate max(1, words × 1.3);
    /// for --embeddings, the line's "input_tokens", else 100]
    #[arg(long, value_name = "N")]
    input_tokens: Option<u64>,

    /// Only route to these models (comma-separated names from the pool config)
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    models: Vec<String>,

    /// Drop every option whose predicted cost is above this many USD
    #[arg(long, value_name = "USD")]
    max_cost: Option<f64>,

    /// Print one JSON object per query (upstream's keys) instead of text
    #[arg(long)]
    json: bool,

    /// Also print every option, ranked by risk
    #[arg(long)]
    verbose: bool,

    /// Threads for routing large inputs [default: all cores]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Continuous budgets: also consider K budgets evenly spaced between each pair of adjacent
    /// trained budgets, their quality interpolated linearly between the two (0 = trained budgets
    /// only)
    #[arg(long, default_value_t = 0, value_name = "K")]
    interpolate: u32,
}

/// One line of the embeddings file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    query: Option<String>,
    embedding: Vec<f64>,
    #[serde(default)]
    input_tokens: Option<u64>,
}

pub fn run(args: RouteArgs) -> Result<()> {
    let runtime = text::runtime()?;
    let r2 = load::router(
        &runtime,
        &args.router,
        &args.embedder,
        Some(&args.llm),
        args.lambda,
    )?;
    if r2.can_generate() && args.embeddings.is_some() {
        bail!("--llm-api-base needs the query text: use --query or --file, not --embeddings");
    }
    let router = r2.router();
    let mut params = r2.default_params()?.with_ranked(args.verbose);
    if !args.models.is_empty() {
        params.candidates = Some(router.model_mask(&args.models).context("--models")?);
    } else if args.llm.all_models {
        params.candidates = None;
    }
    if let Some(max) = args.max_cost {
        params = params.with_max_cost(max);
    }
    // Check λ, the filter and the cost cap once, before reading any input.
    router.check_params(&params)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });

    let names = r2.report();
    let candidates: Vec<&str> = router
        .models()
        .iter()
        .enumerate()
        .filter(|(i, _)| params.candidates.as_ref().is_none_or(|c| c.contains(*i)))
        .map(|(_, m)| m.name.as_str())
        .collect();

    let stdout = std::io::stdout();
    if args.verbose && !args.json {
        // route.py's --verbose: the loader's line first.
        let loaded: Vec<&str> = router.models().iter().map(|m| m.name.as_str()).collect();
        let mut out = stdout.lock();
        out.write_all(loaded_line(&loaded).as_bytes())?;
        out.flush()?;
    }
    let mut session = Session {
        router,
        params: &params,
        threads,
        interpolate: args.interpolate,
        names: &names,
        candidates: &candidates,
        json: args.json,
        verbose: args.verbose,
        label: String::new(),
        printed: 0,
        out: std::io::BufWriter::new(stdout.lock()),
        generate: r2.can_generate().then_some(Generate {
            r2: &r2,
            runtime: &runtime,
            stream: args.llm.stream,
            temperature: args.llm.temperature,
        }),
    };
    match &args.embeddings {
        Some(path) => route_embeddings(path, &args, &mut session),
        None => route_text(&args, &r2, &runtime, &mut session),
    }
}

/// What generation needs, when `--llm-api-base` is given.
struct Generate<'a> {
    r2: &'a R2Router,
    runtime: &'a tokio::runtime::Runtime,
    stream: bool,
    temperature: f64,
}

/// `--query` / `--file`: embed in batches, route each batch as soon as it is embedded.
fn route_text<W: Write>(
    args: &RouteArgs,
    r2: &R2Router,
    runtime: &tokio::runtime::Runtime,
    session: &mut Session<'_, W>,
) -> Result<()> {
    let embedder = runtime
        .block_on(r2.embedder())
        .context("setting up the embedder")?;
    let mut queries = Queries::open(args.query.as_deref(), args.file.as_ref())?;
    session.label = queries.label().to_owned();
    let mut progress = Progress::new("routed");
    loop {
        let chunk = queries.next_chunk(args.embedder.embed_batch_size.max(1))?;
        if chunk.is_empty() {
            break;
        }
        let texts: Vec<String> = chunk.iter().map(|q| q.text.clone()).collect();
        let embeddings = runtime.block_on(embedder.embed(&texts)).with_context(|| {
            format!(
                "{}: embedding lines {}–{}",
                session.label,
                chunk[0].line,
                chunk[chunk.len() - 1].line
            )
        })?;
        let mut batch = Batch::default();
        for (query, embedding) in chunk.into_iter().zip(embeddings) {
            let tokens = args
                .input_tokens
                .unwrap_or_else(|| r2_core::estimate_input_tokens(&query.text));
            let line = InputLine {
                id: None,
                embedding: embedding.into_iter().map(f64::from).collect(),
                input_tokens: Some(tokens),
                query: Some(query.text),
            };
            batch.push(line, query.line, tokens);
        }
        let n = batch.lines.len();
        session.route_and_print(&mut batch)?;
        progress.add(n);
    }
    session.out.flush()?;
    Ok(())
}

/// `--embeddings`: JSONL of vectors, routed in batches.
fn route_embeddings<W: Write>(
    path: &Path,
    args: &RouteArgs,
    session: &mut Session<'_, W>,
) -> Result<()> {
    let (reader, label): (Box<dyn BufRead>, String) = if path.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), "<stdin>".into())
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        (Box::new(BufReader::new(file)), path.display().to_string())
    };
    session.label = label.clone();
    let default_tokens = args.input_tokens.unwrap_or(100);
    let dim = session.router.dim();
    let mut batch = Batch::default();
    let mut bad_line = None;
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        match parse_line(line, number, &label, dim) {
            Ok(None) => continue,
            Ok(Some(parsed)) => batch.push(parsed, number, default_tokens),
            Err(e) => {
                bad_line = Some(e);
                break;
            }
        }
        if batch.lines.len() == BATCH {
            session.route_and_print(&mut batch)?;
        }
    }
    // The lines before a bad one are still routed and printed: nothing valid is lost.
    session.route_and_print(&mut batch)?;
    session.out.flush()?;
    match bad_line {
        Some(e) => Err(e),
        None => Ok(()),
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

#[derive(Default)]
struct Batch {
    lines: Vec<(usize, InputLine)>,
    values: Vec<f64>,
    tokens: Vec<u64>,
}

impl Batch {
    fn push(&mut self, line: InputLine, number: usize, default_tokens: u64) {
        self.values.extend_from_slice(&line.embedding);
        self.tokens
            .push(line.input_tokens.unwrap_or(default_tokens));
        self.lines.push((number, line));
    }
}

/// Everything needed to route a batch and print its decisions.
struct Session<'a, W: Write> {
    router: &'a Router,
    params: &'a RouteParams,
    threads: usize,
    interpolate: u32,
    names: &'a Report<'a>,
    candidates: &'a [&'a str],
    json: bool,
    verbose: bool,
    label: String,
    printed: usize,
    out: W,
    generate: Option<Generate<'a>>,
}

impl<W: Write> Session<'_, W> {
    /// Routes and prints the batch, then empties it.
    fn route_and_print(&mut self, batch: &mut Batch) -> Result<()> {
        if batch.lines.is_empty() {
            return Ok(());
        }
        // Threads pay off only on larger batches.
        let threads = if batch.lines.len() >= 256 {
            self.threads
        } else {
            1
        };
        // On a query that cannot be routed, the queries before it are still printed.
        let (decisions, failed) = self.route_batch(batch, threads);
        for ((number, line), decision) in batch.lines.iter().zip(&decisions) {
            if self.generate.is_some() {
                self.generate_and_print(*number, line, decision)?;
            } else if self.json {
                let json = self.names.decision(
                    decision,
                    line.id.as_ref(),
                    line.query.as_deref(),
                    self.verbose,
                );
                writeln!(self.out, "{}", python_json(&json))?;
            } else {
                if self.printed > 0 {
                    writeln!(self.out)?;
                }
                let text = human(self.names, decision, self.candidates, self.verbose);
                write!(self.out, "{text}")?;
            }
            self.printed += 1;
        }
        self.out.flush()?;
        batch.lines.clear();
        batch.values.clear();
        batch.tokens.clear();
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The decisions of the batch's queries up to the first one that cannot be routed, and that
    /// query's error (naming its line).
    fn route_batch(
        &self,
        batch: &Batch,
        threads: usize,
    ) -> (Vec<r2_core::Decision>, Option<anyhow::Error>) {
        let at_line = |q: usize, e: &r2_core::Error| {
            anyhow!("{}: line {}: {e}", self.label, batch.lines[q].0)
        };
        let dim = self.router.dim();
        if self.interpolate > 0 {
            // The exact path with the interpolated budgets, one query at a time.
            let mut decisions = Vec::with_capacity(batch.tokens.len());
            for (q, (x, &t)) in batch
                .values
                .chunks_exact(dim)
                .zip(&batch.tokens)
                .enumerate()
            {
                match self
                    .router
                    .route_interpolated(x, t, self.params, self.interpolate)
                {
                    Ok(d) => decisions.push(d),
                    Err(e) => return (decisions, Some(at_line(q, &e))),
                }
            }
            return (decisions, None);
        }
        let route = |n: usize| {
            self.router.route_batch_parallel(
                &batch.values[..n * dim],
                &batch.tokens[..n],
                self.params,
                threads,
            )
        };
        match route(batch.tokens.len()) {
            Ok(decisions) => (decisions, None),
            Err(e) => match query_of(&e) {
                // The queries before the first bad one route (the batch names the first).
                Some(q) => (route(q).unwrap_or_default(), Some(at_line(q, &e))),
                None => (Vec::new(), Some(anyhow!(e))),
            },
        }
    }
}

impl<W: Write> Session<'_, W> {
    /// Calls the chosen model for one query and prints its answer (streamed as it arrives with
    /// `--stream`, in text mode).
    fn generate_and_print(
        &mut self,
        number: usize,
        line: &InputLine,
        decision: &r2_core::Decision,
    ) -> Result<()> {
        let g = self.generate.as_ref().expect("only called when generating");
        let query = line.query.as_deref().unwrap_or_default();
        let choice = &decision.choice;
        if !self.json {
            if self.printed > 0 {
                writeln!(self.out)?;
            }
            let head = human(self.names, decision, self.candidates, false);
            write!(self.out, "{head}{}", response_header())?;
            self.out.flush()?;
        }
        let streaming = g.stream && !self.json;
        let generated = {
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
            let result = g.runtime.block_on(g.r2.generate(
                query,
                choice.model,
                choice.budget,
                g.temperature,
                on_delta,
            ));
            if let Some(e) = write_error {
                return Err(e.into());
            }
            result
        };
        let generation = generated.with_context(|| {
            format!(
                "{}: line {number}: generating with {} (budget {})",
                self.label,
                self.names.model_name(choice.model),
                choice.budget
            )
        })?;
        if self.json {
            let json = self.names.generation(decision, query, &generation);
            writeln!(self.out, "{}", python_json(&json))?;
        } else if streaming {
            writeln!(self.out)?;
        } else {
            writeln!(self.out, "{}", generation.text)?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// The query index a core error is about, if any.
fn query_of(e: &r2_core::Error) -> Option<usize> {
    match e {
        r2_core::Error::DimensionMismatch { query, .. }
        | r2_core::Error::NonFiniteEmbedding { query, .. }
        | r2_core::Error::NonFinitePrediction { query, .. }
        | r2_core::Error::NothingWithinMaxCost { query, .. } => Some(*query),
        _ => None,
    }
}
