//! The server's access-log lines (target `r2_serve::access`, one per request), written straight
//! into the line: the bytes tracing-subscriber's own text (`Full`) and flattened JSON formats
//! give, at a fraction of their cost. Every other event, and an access event inside a span or
//! with a field of a kind not handled here, goes through tracing-subscriber's format.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the access-log events of `r2 serve`.
const TARGET: &str = "r2_serve::access";

/// Access-log events written here, the others by `other`.
pub(super) struct AccessFormat<F> {
    json: bool,
    other: F,
}

impl<F> AccessFormat<F> {
    /// Lines as `other` writes them: `Format<Full>` with timestamps, without target or ANSI.
    pub(super) fn text(other: F) -> Self {
        Self { json: false, other }
    }

    /// Lines as `other` writes them: `Format<Json>`, flattened, without target.
    pub(super) fn json(other: F) -> Self {
        Self { json: true, other }
    }
}

thread_local! {
    static LINE: Cell<String> = const { Cell::new(String::new()) };
}

impl<S, N, F> FormatEvent<S, N> for AccessFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != TARGET || ctx.event_scope().is_some() {
            return self.other.format_event(ctx, writer, event);
        }
        let mut line = LINE.take();
        line.clear();
        let written = if self.json {
            json_line(&mut line, event)
        } else {
            text_line(&mut line, event, writer.sanitizes_ansi_escapes())
        };
        let result = match written {
            Some(()) => writer.write_str(&line),
            None => self.other.format_event(ctx, writer, event),
        };
        LINE.set(line);
        result
    }
}

/// `Format<Full>`'s line: time, level, message, then `name=value` for each field; `None` for
/// a field this does not write as tracing-subscriber does.
fn text_line(line: &mut String, event: &Event<'_>, sanitize: bool) -> Option<()> {
    push_time(line);
    line.push(' ');
    line.push_str(match *event.metadata().level() {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    });
    line.push(' ');
    let mut visitor = Text {
        line,
        sanitize,
        first: true,
        supported: true,
    };
    event.record(&mut visitor);
    let supported = visitor.supported;
    line.push('\n');
    supported.then_some(())
}

struct Text<'a> {
    line: &'a mut String,
    sanitize: bool,
    first: bool,
    supported: bool,
}

impl Text<'_> {
    fn name(&mut self, field: &Field) {
        if !self.first {
            self.line.push(' ');
        }
        self.first = false;
        let name = field.name();
        self.line.push_str(name.strip_prefix("r#").unwrap_or(name));
        self.line.push('=');
    }

    /// The message as `DefaultVisitor` writes it: its `Debug`, terminal escapes escaped.
    fn message(&mut self, message: &dyn fmt::Debug) {
        if !self.first {
            self.line.push(' ');
        }
        self.first = false;
        let start = self.line.len();
        let _ = write!(self.line, "{message:?}");
        let escapes = |c: char| {
            matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        if self.sanitize && self.line[start..].contains(escapes) {
            let text = self.line.split_off(start);
            for c in text.chars() {
                match c {
                    '\x1b' => self.line.push_str("\\x1b"),
                    '\x07' => self.line.push_str("\\x07"),
                    '\x08' => self.line.push_str("\\x08"),
                    '\x0c' => self.line.push_str("\\x0c"),
                    '\x7f' => self.line.push_str("\\x7f"),
                    '\u{80}'..='\u{9f}' => {
                        let _ = write!(self.line, "\\u{{{:x}}}", c as u32);
                    }
                    c => self.line.push(c),
                }
            }
        }
    }
}

impl Visit for Text<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message(&format_args!("{value}"));
            return;
        }
        self.name(field);
        let plain = value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        if plain {
            self.line.push('"');
            self.line.push_str(value);
            self.line.push('"');
        } else {
            let _ = write!(self.line, "{value:?}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        push_u64(self.line, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        if value < 0 {
            self.line.push('-');
        }
        push_u64(self.line, value.unsigned_abs());
    }

    fn record_error(&mut self, _: &Field, _: &(dyn std::error::Error + 'static)) {
        self.supported = false;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message(value);
        } else {
            self.name(field);
            let _ = write!(self.line, "{value:?}");
        }
    }
}

/// `Format<Json>`'s flattened object: time, level, then each field (the message first).
fn json_line(line: &mut String, event: &Event<'_>) -> Option<()> {
    line.push_str("{\"timestamp\":\"");
    push_time(line);
    line.push_str("\",\"level\":\"");
    line.push_str(event.metadata().level().as_str());
    line.push('"');
    let mut visitor = Json {
        line,
        scratch: String::new(),
        supported: true,
    };
    event.record(&mut visitor);
    let supported = visitor.supported;
    line.push_str("}\n");
    supported.then_some(())
}

struct Json<'a> {
    line: &'a mut String,
    /// The `Debug` text of a value, before it is written as a JSON string.
    scratch: String,
    supported: bool,
}

impl Json<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        push_json_string(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Json<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_string(self.line, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        push_u64(self.line, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        if value < 0 {
            self.line.push('-');
        }
        push_u64(self.line, value.unsigned_abs());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        match serde_json::to_string(&value) {
            Ok(text) => self.line.push_str(&text),
            Err(_) => self.supported = false,
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        push_json_string(self.line, &self.scratch);
    }
}

/// `text` as serde_json writes a string.
fn push_json_string(line: &mut String, text: &str) {
    if text.bytes().all(|b| b >= b' ' && b != b'"' && b != b'\\') {
        line.push('"');
        line.push_str(text);
        line.push('"');
    } else if let Ok(quoted) = serde_json::to_string(text) {
        line.push_str(&quoted);
    }
}

fn push_u64(line: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    line.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// The time as tracing-subscriber's `SystemTime` writes it: `2026-12-02T00:22:27.933221Z`.
fn push_time(line: &mut String) {
    let now = SystemTime::now();
    match now.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => {
            push_timestamp(line, since.as_secs(), since.subsec_micros())
        }
        // Before 1970 or after 9999: tracing-subscriber's own signs and widths.
        _ => {
            let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(line));
        }
    }
}

/// The first second of the year 10000.
const YEAR_10000: u64 = 253_402_300_800;

/// `seconds` after the epoch (before the year 10000) and `micros`, in RFC 3339 with microseconds.
fn push_timestamp(line: &mut String, seconds: u64, micros: u32) {
    let (days, second) = (seconds / 86_400, seconds % 86_400);
    // The civil date of a day count (Howard Hinnant's `civil_from_days`), from 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let m = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * m + 2) / 5 + 1;
    let month = if m < 10 { m + 3 } else { m - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let mut push = |value: u64, width: u32, after: char| {
        for k in (0..width).rev() {
            line.push(char::from(b'0' + (value / 10u64.pow(k) % 10) as u8));
        }
        line.push(after);
    };
    push(year, 4, '-');
    push(month, 2, '-');
    push(day, 2, 'T');
    push(second / 3_600, 2, ':');
    push(second / 60 % 60, 2, ':');
    push(second % 60, 2, '.');
    push(u64::from(micros), 6, 'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::JsonFields;
    use tracing_subscriber::fmt::{format, MakeWriter};

    #[test]
    fn timestamps_are_tracing_subscribers() {
        for (seconds, micros, want) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 7, "2000-02-29T00:00:00.000007Z"),
            (951_868_799, 999_999, "2000-02-29T23:59:59.999999Z"),
            (1_709_164_800, 123_456, "2024-02-29T00:00:00.123456Z"),
            (1_796_170_947, 933_221, "2026-12-02T00:22:27.933221Z"),
            (4_107_542_399, 1, "2100-02-28T23:59:59.000001Z"),
            (YEAR_10000 - 1, 0, "9999-12-31T23:59:59.000000Z"),
        ] {
            let mut line = String::new();
            push_timestamp(&mut line, seconds, micros);
            assert_eq!(line, want, "{seconds}");
        }
    }

    /// Lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;

        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    /// Access events of every shape the gateway logs, and a few it does not.
    fn events() {
        let id = "6b0f64c3-4";
        let method = "POST";
        for path in ["/v1/route", "/v1/chat/completions", "/x\u{1b}[31m\u{85}y"] {
            let none: Option<&str> = None;
            let cost: Option<f64> = Some(0.000_012_5);
            tracing::event!(
                target: "r2_serve::access",
                Level::INFO,
                request_id = %id,
                status = 200u16,
                method = %method,
                path = %path,
                model = Some("gemma-3-4b-it"),
                budget = Some("unlimited"),
                attempts = 2usize,
                attempt_log = Some("a@10: error | b@unlimited: ok"),
                prompt_tokens = Some(12u64),
                completion_tokens = none,
                cost_usd = cost,
                embed_ms = 0u64,
                total_ms = 12_345u64,
                prompt = Some("a \"quoted\"\n\tprompt\\ é \u{1}"),
                error = none,
                delta = -5i64,
                flag = true,
                "r2 serve: {} {method} {path}",
                200
            );
            tracing::event!(
                target: "r2_serve::access",
                Level::ERROR,
                request_id = %id,
                status = 502u16,
                error = Some("the provider failed: HTTP 500"),
                "r2 serve: 502 {method} {path}"
            );
            tracing::info!(target: "r2_serve::other", n = 1, "not an access line");
            let span = tracing::info_span!("outer", k = 3);
            let _entered = span.enter();
            tracing::warn!(target: "r2_serve::access", status = 404u16, "in a span");
        }
    }

    /// The text after the timestamp of each line (the timestamps differ by the microsecond).
    fn without_time(bytes: &[u8], json: bool) -> Vec<String> {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .lines()
            .map(|line| {
                if json {
                    let value: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert!(
                        value["timestamp"].as_str().unwrap().ends_with('Z'),
                        "{line}"
                    );
                    line.split_once("\",").unwrap().1.to_owned()
                } else {
                    line.split_once(' ').unwrap().1.to_owned()
                }
            })
            .collect()
    }

    #[test]
    fn text_lines_are_tracing_subscribers() {
        let (ours, theirs) = (Lines::default(), Lines::default());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .with_ansi(false)
            .event_format(AccessFormat::text(
                format().with_target(false).with_ansi(false),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(theirs.clone())
            .with_ansi(false)
            .with_target(false)
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        let ours = without_time(&ours.0.lock().unwrap(), false);
        let theirs = without_time(&theirs.0.lock().unwrap(), false);
        assert_eq!(ours.len(), 12);
        assert_eq!(ours, theirs);
    }

    #[test]
    fn json_lines_are_tracing_subscribers() {
        let (ours, theirs) = (Lines::default(), Lines::default());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .fmt_fields(JsonFields::new())
            .event_format(AccessFormat::json(
                format().json().flatten_event(true).with_target(false),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(theirs.clone())
            .with_target(false)
            .json()
            .flatten_event(true)
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        let ours = without_time(&ours.0.lock().unwrap(), true);
        let theirs = without_time(&theirs.0.lock().unwrap(), true);
        assert_eq!(ours.len(), 12);
        assert_eq!(ours, theirs);
    }
}
