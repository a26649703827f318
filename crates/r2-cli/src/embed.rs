//! `r2 embed`: text in, `{"query", "embedding"}` JSONL out.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args};
use serde::Serialize;

use crate::output::python_json;
use crate::text::{self, EmbedderArgs, Progress, Queries};

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["query", "file"])))]
pub struct EmbedArgs {
    #[command(flatten)]
    embedder: EmbedderArgs,

    /// One query to embed
    #[arg(long, value_name = "TEXT")]
    query: Option<String>,

    /// Queries to embed, one a line (blank lines are skipped); `-` reads stdin
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,

    /// Model pool config, for the embedding model's name [default: $R2_CONFIG, else the built-in
    /// config/r2.json]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// One output line. The float32 values are written as the float64 numbers they are (as Python
/// prints a float32 tensor's `tolist()`), so reading them back gives the very same vector.
#[derive(Serialize)]
struct Line<'a> {
    query: &'a str,
    embedding: Vec<f64>,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let pool = r2_router::load_pool(args.config.as_deref()).context("loading the pool config")?;
    let runtime = text::runtime()?;
    let options = r2_router::Options {
        embed_url: args.embedder.embed_url.clone(),
        embedding_model_dir: args.embedder.embedding_model_dir.clone(),
        embed_batch_size: Some(args.embedder.embed_batch_size),
        progress: std::io::stderr().is_terminal(),
        ..r2_router::Options::default()
    };
    let embedder = runtime
        .block_on(r2_router::make_embedder(&options, &pool, None))
        .map_err(crate::load::with_hint)
        .context("setting up the embedder")?;
    let mut queries = Queries::open(args.query.as_deref(), args.file.as_ref())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut progress = Progress::new("embedded");
    loop {
        let chunk = queries.next_chunk(args.embedder.embed_batch_size.max(1))?;
        if chunk.is_empty() {
            break;
        }
        let texts: Vec<String> = chunk.iter().map(|q| q.text.clone()).collect();
        let embeddings = runtime.block_on(embedder.embed(&texts)).with_context(|| {
            format!(
                "{}: embedding lines {}–{}",
                queries.label(),
                chunk[0].line,
                chunk[chunk.len() - 1].line
            )
        })?;
        for (text, embedding) in texts.iter().zip(&embeddings) {
            let line = Line {
                query: text,
                embedding: embedding.iter().map(|&v| f64::from(v)).collect(),
            };
            writeln!(out, "{}", python_json(&line))?;
        }
        out.flush()?;
        progress.add(texts.len());
    }
    Ok(())
}
