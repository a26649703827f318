//! Logs: the libraries emit `tracing` events; the binary writes them to stderr, as text or JSON
//! lines. `RUST_LOG` filters them (default: `info` for r2's crates, `warn` for the others).

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line (for log collectors).
    Json,
}

/// The default filter: r2's own crates at `info`, everything else at `warn`.
const DEFAULT_FILTER: &str =
    "warn,r2=info,r2_cli=info,r2_core=info,r2_checkpoints=info,r2_embed=info,r2_hub=info,\
     r2_http=info,r2_llm=info,r2_router=info,r2_serve=info,r2_train=info";

/// Installs the stderr logger once; `timestamps` for long-running commands (the server).
pub fn init(format: LogFormat, timestamps: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = match (format, timestamps) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.with_ansi(false).try_init(),
        (LogFormat::Text, false) => builder.with_ansi(false).without_time().try_init(),
    };
    // A second call (a logger is already installed) keeps the first.
    let _ = installed;
}
