//! `r2 route`: embeddings in, decisions out.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use r2_router::{R2Router, RoutePlan, RouteRequest};

use crate::input::EmbeddingLines;
use crate::print::{Generate, Item, Printer};
use crate::text::{self, EmbedderArgs, LlmArgs, Progress, Queries};
use crate::{load, RouterArgs};

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

    /// Query embeddings: JSONL, one {"id"?, "embedding", "input_tokens"?, "query"?} a line, the
    /// embedding an array of numbers or a base64 string of little-endian float32 values (`-`
    /// reads stdin); or a NumPy .npy float32/float64 array [queries, dim]
    #[arg(long, value_name = "FILE")]
    embeddings: Option<PathBuf>,

    /// For a .npy --embeddings array: one line a row, a plain id or {"id", "input_tokens",
    /// "query"} (each optional)
    #[arg(long, value_name = "FILE", requires = "embeddings")]
    embedding_ids: Option<PathBuf>,

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
    // λ, the filter and the cost cap are checked once, before any input is read.
    let mut plan = r2
        .plan(&RouteRequest {
            lambda: args.lambda,
            models: (!args.models.is_empty()).then(|| args.models.clone()),
            max_cost: args.max_cost,
            all_models: args.llm.all_models,
            // Generating needs the ranked list for fallbacks.
            ranked: args.verbose || (r2.can_generate() && args.llm.fallbacks > 0),
            interpolate: args.interpolate,
            input_tokens: args.input_tokens,
        })
        .map_err(load::with_hint)?;
    if let Some(threads) = args.threads {
        plan = plan.with_threads(threads);
    }
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printer = Printer::new(&r2, r2.candidates(&plan), args.json, args.verbose, out);
    if args.verbose && !args.json {
        printer.print_loaded()?; // route.py's --verbose: the loader's line first.
    }
    printer.generate = r2.can_generate().then_some(Generate {
        runtime: &runtime,
        stream: args.llm.stream,
        temperature: args.llm.temperature,
        policy: args.llm.policy()?,
    });
    match &args.embeddings {
        Some(path) => route_embeddings(
            path,
            args.embedding_ids.as_deref(),
            &r2,
            &plan,
            &mut printer,
        ),
        None => route_text(&args, &r2, &plan, &runtime, &mut printer),
    }
}

/// `--query` / `--file`: embed in batches, route each batch as soon as it is embedded.
fn route_text<W: Write>(
    args: &RouteArgs,
    r2: &R2Router,
    plan: &RoutePlan,
    runtime: &tokio::runtime::Runtime,
    printer: &mut Printer<'_, W>,
) -> Result<()> {
    runtime
        .block_on(r2.embedder())
        .map_err(load::with_hint)
        .context("setting up the embedder")?;
    let mut queries = Queries::open(args.query.as_deref(), args.file.as_ref())?;
    printer.label = queries.label().to_owned();
    let mut progress = Progress::new("routed");
    loop {
        let chunk = queries.next_chunk(args.embedder.embed_batch_size.max(1))?;
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
            break;
        };
        let texts: Vec<String> = chunk.iter().map(|q| q.text.clone()).collect();
        let routed = runtime
            .block_on(r2.route_texts(&texts, plan))
            .with_context(|| {
                format!(
                    "{}: embedding lines {}–{}",
                    printer.label, first.line, last.line
                )
            })?;
        let items = chunk.iter().map(|q| Item {
            line: q.line,
            id: None,
            query: Some(&q.text),
        });
        printer.print_routed(items.collect(), routed)?;
        progress.add(chunk.len());
    }
    Ok(())
}

/// `--embeddings`: JSONL of vectors, routed in batches of [`BATCH`] lines.
fn route_embeddings<W: Write>(
    path: &std::path::Path,
    rows: Option<&std::path::Path>,
    r2: &R2Router,
    plan: &RoutePlan,
    printer: &mut Printer<'_, W>,
) -> Result<()> {
    let (mut lines, label) = EmbeddingLines::open(path, rows, r2.router().dim())?;
    printer.label = label.clone();
    loop {
        let (chunk, bad_line) = lines.next_chunk(BATCH, &label);
        let mut values = Vec::with_capacity(chunk.len() * r2.router().dim());
        let mut tokens = Vec::with_capacity(chunk.len());
        for (_, line) in &chunk {
            values.extend_from_slice(&line.embedding.0);
            tokens.push(plan.embedding_tokens(line.input_tokens));
        }
        // The lines before a bad one are still routed and printed: nothing valid is lost.
        let routed = r2.route_embeddings(&values, &tokens, plan);
        let items = chunk.iter().map(|(number, line)| Item {
            line: *number,
            id: line.id.as_ref(),
            query: line.query.as_deref(),
        });
        printer.print_routed(items.collect(), routed)?;
        if let Some(e) = bad_line {
            return Err(e);
        }
        if chunk.len() < BATCH {
            return Ok(());
        }
    }
}
