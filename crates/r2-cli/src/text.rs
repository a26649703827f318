//! Queries as text: where they come from, which embedder turns them into vectors, and progress.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use r2_checkpoints::PoolConfig;
use r2_embed::{Embedder, VllmEmbedder, VllmOptions};

/// Which embedder to use.
#[derive(Args, Debug, Clone)]
pub struct EmbedderArgs {
    /// vLLM (or any OpenAI-compatible) embeddings server, e.g. http://localhost:8000
    /// [default: embed in-process]
    #[arg(long, value_name = "URL", conflicts_with = "embedding_model_dir")]
    pub embed_url: Option<String>,

    /// Folder with the embedding model (config.json, model.safetensors, tokenizer.json)
    /// [default: the pool config's embedding model from the Hugging Face cache, fetched on first
    /// use]
    #[arg(long, value_name = "DIR")]
    pub embedding_model_dir: Option<PathBuf>,

    /// Texts embedded together (one request, or one forward pass)
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub embed_batch_size: usize,
}

/// Builds the embedder the arguments ask for and checks it gives `pool.embedding_dim` values.
pub async fn embedder(args: &EmbedderArgs, pool: &PoolConfig) -> Result<Box<dyn Embedder>> {
    let embedder: Box<dyn Embedder> = if let Some(url) = &args.embed_url {
        let options = VllmOptions {
            dim: pool.embedding_dim,
            batch_size: args.embed_batch_size.max(1),
            ..VllmOptions::default()
        };
        Box::new(
            VllmEmbedder::new(url, &pool.embedding_model, options)
                .with_context(|| format!("setting up the embeddings client for {url}"))?,
        )
    } else {
        local_embedder(args, pool).await?
    };
    if embedder.dim() != pool.embedding_dim {
        bail!(
            "the embedding model {} gives {}-d vectors but the router expects {}-d ones: use the \
             embedding model the router was trained on ({})",
            embedder.model_name(),
            embedder.dim(),
            pool.embedding_dim,
            pool.embedding_model
        );
    }
    Ok(embedder)
}

#[cfg(feature = "local")]
async fn local_embedder(args: &EmbedderArgs, pool: &PoolConfig) -> Result<Box<dyn Embedder>> {
    use r2_embed::LocalQwen3Embedder;
    let embedder = match &args.embedding_model_dir {
        Some(dir) => {
            // Loading maps and converts the weights: blocking work, kept off the async threads.
            let owned = dir.clone();
            tokio::task::spawn_blocking(move || LocalQwen3Embedder::from_dir(&owned))
                .await
                .context("the model-loading thread failed")?
                .with_context(|| format!("loading the embedding model from {}", dir.display()))?
        }
        None => {
            LocalQwen3Embedder::from_hub(&pool.embedding_model, std::io::stderr().is_terminal())
                .await
                .with_context(|| format!("loading the embedding model {}", pool.embedding_model))?
        }
    };
    Ok(Box::new(embedder))
}

#[cfg(not(feature = "local"))]
async fn local_embedder(_: &EmbedderArgs, _: &PoolConfig) -> Result<Box<dyn Embedder>> {
    bail!(
        "this r2 was built without in-process embedding (cargo feature `local`): pass --embed-url \
         to use a vLLM server"
    )
}

/// A tokio runtime for the commands that embed.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Where the queries come from: one `--query`, or a file with one query a line.
pub enum Queries {
    One(Option<String>),
    Lines {
        reader: Box<dyn BufRead>,
        label: String,
        line: usize,
    },
}

/// One query and where it was read.
pub struct Query {
    /// 1-based line in the input file (1 for `--query`).
    pub line: usize,
    pub text: String,
}

impl Queries {
    /// `--query TEXT` (which must not be empty) or `--file FILE` (`-` is stdin).
    pub fn open(query: Option<&str>, file: Option<&PathBuf>) -> Result<Self> {
        match (query, file) {
            (Some(q), _) => {
                if q.trim().is_empty() {
                    bail!("--query is empty: give the text to route");
                }
                Ok(Queries::One(Some(q.to_owned())))
            }
            (None, Some(path)) if path.as_os_str() == "-" => Ok(Queries::Lines {
                reader: Box::new(std::io::stdin().lock()),
                label: "<stdin>".into(),
                line: 0,
            }),
            (None, Some(path)) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                Ok(Queries::Lines {
                    reader: Box::new(BufReader::new(file)),
                    label: path.display().to_string(),
                    line: 0,
                })
            }
            (None, None) => bail!("give --query TEXT or --file FILE"),
        }
    }

    /// Up to `n` more queries; blank lines are skipped and the others trimmed, as upstream does.
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<Query>> {
        match self {
            Queries::One(q) => Ok(q
                .take()
                .map(|text| vec![Query { line: 1, text }])
                .unwrap_or_default()),
            Queries::Lines {
                reader,
                label,
                line,
            } => {
                let mut chunk = Vec::with_capacity(n);
                let mut buf = String::new();
                while chunk.len() < n {
                    buf.clear();
                    *line += 1;
                    let read = reader
                        .read_line(&mut buf)
                        .with_context(|| format!("{label}: line {line}: cannot read"))?;
                    if read == 0 {
                        break;
                    }
                    let text = buf.trim();
                    if !text.is_empty() {
                        chunk.push(Query {
                            line: *line,
                            text: text.to_owned(),
                        });
                    }
                }
                Ok(chunk)
            }
        }
    }

    /// The name of the input, for messages.
    pub fn label(&self) -> &str {
        match self {
            Queries::One(_) => "--query",
            Queries::Lines { label, .. } => label,
        }
    }
}

/// A running count on stderr, shown only when stderr is a terminal.
pub struct Progress {
    what: &'static str,
    done: usize,
    started: Instant,
    shown: bool,
    enabled: bool,
}

impl Progress {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            done: 0,
            started: Instant::now(),
            shown: false,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    pub fn add(&mut self, n: usize) {
        self.done += n;
        if self.enabled {
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            eprint!("\r{} queries {} ({rate:.0}/s)", self.done, self.what);
            let _ = std::io::stderr().flush();
            self.shown = true;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}
