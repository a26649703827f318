//! Queries as text: where they come from, which embedder turns them into vectors, and progress.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

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

/// Where generated answers come from.
#[derive(Args, Debug, Clone)]
pub struct LlmArgs {
    /// OpenAI-compatible chat API to generate the answer with the chosen model and budget, e.g.
    /// https://openrouter.ai/api/v1 [default: route only]
    #[arg(long, value_name = "URL")]
    pub llm_api_base: Option<String>,

    /// API key for --llm-api-base [default: $OPENROUTER_API_KEY]
    #[arg(long, value_name = "KEY")]
    pub llm_api_key: Option<String>,

    /// Print the answer as it arrives (server-sent events)
    #[arg(long, requires = "llm_api_base")]
    pub stream: bool,

    /// Sampling temperature of the answer
    #[arg(long, default_value_t = r2_router::DEFAULT_TEMPERATURE, value_name = "T")]
    pub temperature: f64,

    /// Also route to models not marked `available` on the API (by default, with --llm-api-base,
    /// only those are candidates)
    #[arg(long)]
    pub all_models: bool,

    /// Other models tried, next-best first along the ranked options, when the chosen one's call
    /// fails in a way another model may fix (connection, timeout, 5xx, 429, unknown or
    /// unavailable model); 0: none
    #[arg(long, default_value_t = r2_router::chat::DEFAULT_FALLBACKS, value_name = "N")]
    pub fallbacks: usize,

    /// Seconds all attempts of one answer (the choice and its fallbacks) may take together
    #[arg(long, default_value_t = r2_router::chat::DEFAULT_DEADLINE.as_secs_f64(), value_name = "SECS")]
    pub deadline: f64,
}

impl LlmArgs {
    /// The fallback policy of --fallbacks and --deadline.
    pub fn policy(&self) -> Result<r2_router::FallbackPolicy> {
        deadline_policy(self.fallbacks, self.deadline)
    }
}

/// A fallback policy, the deadline checked (a finite number of seconds > 0).
pub fn deadline_policy(fallbacks: usize, deadline: f64) -> Result<r2_router::FallbackPolicy> {
    if !(deadline.is_finite() && deadline > 0.0) {
        anyhow::bail!("--deadline must be a number of seconds > 0, got {deadline}");
    }
    Ok(r2_router::FallbackPolicy {
        fallbacks,
        deadline: std::time::Duration::from_secs_f64(deadline),
    })
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
                    // A byte-order mark at the start of the file is not part of the first query.
                    let text = if *line == 1 {
                        buf.trim_start_matches('\u{feff}').trim()
                    } else {
                        buf.trim()
                    };
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
