//! Logs: the libraries emit `tracing` events; the binary writes them to stderr, as text or JSON
//! lines. `RUST_LOG` filters them (default: `info` for r2's crates, `warn` for the others).
//!
//! `r2 serve` logs a line per request, so its lines go through a buffer that a thread of its own
//! writes out ([`init_server`]): a request only copies its line there. Those access-log lines are
//! written by hand (`access.rs`), in the bytes tracing-subscriber's formats would give. The thread
//! writes a line at once when it was idle, and under load whatever gathered meanwhile in one write
//! at most every [`WRITE_INTERVAL`]. No line is dropped: a full buffer ([`MAX_BUFFERED`]) makes the
//! request wait, and [`flush`] (also run when the guard of [`init_server`] is dropped) returns once
//! everything logged so far is written.

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use clap::ValueEnum;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use access::AccessFormat;

mod access;

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

/// The longest the server's log thread lets lines gather before it writes them.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// Bytes of log lines waiting to be written at most; a line beyond waits for the write.
const MAX_BUFFERED: usize = 1 << 20;

/// Installs the stderr logger once; `timestamps` for long-running commands (the server).
pub fn init(format: LogFormat, timestamps: bool) {
    install(format, timestamps, std::io::stderr);
}

/// Installs the server's logger (timestamps, lines written by a thread of their own); the lines
/// logged until the guard is dropped are written by then.
pub fn init_server(format: LogFormat) -> Flushed {
    let buffer = BUFFER.get_or_init(Buffer::default);
    let thread = std::thread::Builder::new()
        .name("r2-log".into())
        .spawn(|| buffer.write_out());
    match thread {
        Ok(_) => install(format, true, Buffered(buffer)),
        Err(_) => init(format, true),
    }
    Flushed
}

/// Returns once every line logged so far is on stderr.
pub fn flush() {
    if let Some(buffer) = BUFFER.get() {
        buffer.flush();
    }
}

/// Runs [`flush`] when dropped.
pub struct Flushed;

impl Drop for Flushed {
    fn drop(&mut self) {
        flush();
    }
}

fn install<W>(format: LogFormat, timestamps: bool, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let installed = match (format, timestamps) {
        (LogFormat::Json, _) => builder
            .fmt_fields(JsonFields::new())
            .event_format(AccessFormat::json(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_target(false),
            ))
            .try_init(),
        (LogFormat::Text, true) => builder
            .with_ansi(false)
            .event_format(AccessFormat::text(
                tracing_subscriber::fmt::format()
                    .with_target(false)
                    .with_ansi(false),
            ))
            .try_init(),
        (LogFormat::Text, false) => builder.with_ansi(false).without_time().try_init(),
    };
    // A second call (a logger is already installed) keeps the first.
    let _ = installed;
}

static BUFFER: OnceLock<Buffer> = OnceLock::new();

/// Log lines on their way to stderr.
#[derive(Default)]
struct Buffer {
    state: Mutex<Pending>,
    /// The log thread waits here for lines, or for the end of its pause between writes.
    wake: Condvar,
    /// Flushes and lines waiting for room wait here for the end of a write.
    written: Condvar,
}

#[derive(Default)]
struct Pending {
    text: Vec<u8>,
    /// The log thread waits for lines: the next line must wake it.
    idle: bool,
    /// The log thread is writing what it took from `text`.
    writing: bool,
    /// Threads waiting for a write to end.
    waiting: usize,
}

impl Buffer {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.text.len() >= MAX_BUFFERED {
            pending = self.wait_for_write(pending);
        }
        pending.text.extend_from_slice(line);
        if pending.idle {
            pending.idle = false;
            self.wake.notify_one();
        }
    }

    fn flush(&self) {
        let mut pending = self.lock();
        while !pending.text.is_empty() || pending.writing {
            pending = self.wait_for_write(pending);
        }
    }

    /// Wakes the log thread if it pauses, and waits for its next write to end.
    fn wait_for_write<'a>(&self, mut pending: MutexGuard<'a, Pending>) -> MutexGuard<'a, Pending> {
        pending.waiting += 1;
        self.wake.notify_one();
        let mut pending = self
            .written
            .wait(pending)
            .unwrap_or_else(PoisonError::into_inner);
        pending.waiting -= 1;
        pending
    }

    /// The log thread: writes the lines as they come, for as long as the process runs.
    fn write_out(&self) {
        let mut taken = Vec::new();
        let mut pending = self.lock();
        loop {
            if pending.text.is_empty() {
                pending.idle = true;
                pending = self
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
                pending.idle = false;
                continue;
            }
            std::mem::swap(&mut pending.text, &mut taken);
            pending.writing = true;
            drop(pending);
            // A log line that cannot be written has nowhere else to go.
            let _ = std::io::stderr().write_all(&taken);
            taken.clear();
            pending = self.lock();
            pending.writing = false;
            if pending.waiting > 0 {
                self.written.notify_all();
                continue;
            }
            pending = self
                .wake
                .wait_timeout(pending, WRITE_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The server's log writer: appends each line to the [`Buffer`].
#[derive(Clone, Copy)]
struct Buffered(&'static Buffer);

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = Buffered;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl Write for Buffered {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
