//! Text for errors: error chains, cut text, the message of an error answer's body.

use serde_json::Value;

/// An error and its sources, joined with `": "`; a source whose text the chain already holds is
/// left out (reqwest and hyper often repeat their cause in their own message).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The sources of an error, outermost first, joined with `": "`, without the error's own line
/// (reqwest's repeats the URL, which the caller's error already names); the error's own text when
/// it has no source.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

/// The first `max` characters of `s`, with `…` appended if anything was cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// A JSON value as text: strings without their quotes, anything else as JSON.
pub fn json_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The message in the JSON of an error answer: the first of `error.message`, `error`, `message`,
/// `detail` that is neither null nor an object (OpenAI's and vLLM's shapes, FastAPI's `detail`).
pub fn json_message(json: &Value) -> Option<String> {
    [
        json.pointer("/error/message"),
        json.get("error"),
        json.get("message"),
        json.get("detail"),
    ]
    .into_iter()
    .flatten()
    .find(|v| !v.is_null() && !v.is_object())
    .map(json_text)
}

/// The message of an error answer's `body`: what `from_json` finds in it when it is JSON (and not
/// blank), else the body's text when not blank, else the status's `reason_phrase` (`no message`
/// without one). Not trimmed or cut: callers clean it (e.g. redact a key) first.
pub fn error_message(
    body: &[u8],
    reason_phrase: Option<&str>,
    from_json: impl FnOnce(&Value) -> Option<String>,
) -> String {
    let text = String::from_utf8_lossy(body);
    let from_json = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|json| from_json(&json));
    match from_json {
        Some(m) if !m.trim().is_empty() => m,
        _ if !text.trim().is_empty() => text.into_owned(),
        _ => reason_phrase.unwrap_or("no message").to_owned(),
    }
}

/// The first `max` characters of a body, for quoting in an error: `clean` (e.g. a redaction) is
/// applied to the first `4 · max + slack` bytes read as UTF-8 (lossily), and the result is cut to
/// `max` characters. `slack` leaves room for what `clean` must see whole across the cut.
pub fn excerpt(
    body: &[u8],
    max: usize,
    slack: usize,
    clean: impl FnOnce(String) -> String,
) -> String {
    let head = &body[..body.len().min(4 * max + slack)];
    truncate(&clean(String::from_utf8_lossy(head).into_owned()), max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    fn layers(texts: &[&'static str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |inner, text| Some(Layer(text, inner.map(Box::new))))
            .unwrap()
    }

    #[test]
    fn chains_with_and_without_the_outer_error() {
        let e = layers(&[
            "request to http://h failed",
            "connect error",
            "connect error",
        ]);
        assert_eq!(error_chain(&e), "request to http://h failed: connect error");
        assert_eq!(source_chain(&e), "connect error: connect error");
        let alone = layers(&["builder error"]);
        assert_eq!(error_chain(&alone), "builder error");
        assert_eq!(source_chain(&alone), "builder error");
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("héllo", 3), "hél…");
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn messages_of_error_bodies() {
        let from = |body: &str| error_message(body.as_bytes(), Some("Bad Request"), json_message);
        assert_eq!(from(r#"{"error": {"message": "bad input"}}"#), "bad input");
        assert_eq!(from(r#"{"error": "plain"}"#), "plain");
        assert_eq!(from(r#"{"message": 7}"#), "7");
        assert_eq!(from(r#"{"detail": "Not Found"}"#), "Not Found");
        assert_eq!(
            from(r#"{"error": {"code": 1}}"#),
            r#"{"error": {"code": 1}}"#
        );
        assert_eq!(from("<html>oops</html>"), "<html>oops</html>");
        assert_eq!(from("  "), "Bad Request");
        assert_eq!(error_message(b"", None, json_message), "no message");
        assert_eq!(json_text(&json!("s")), "s");
        assert_eq!(json_text(&json!({"a": 1})), r#"{"a":1}"#);
    }

    #[test]
    fn excerpts_are_cleaned_then_cut() {
        let body = "secret ".repeat(100);
        let cut = excerpt(body.as_bytes(), 10, 0, |t| t.replace("secret", "***"));
        assert_eq!(cut, "*** *** **…");
        assert_eq!(excerpt(b"\xffab", 10, 0, |t| t), "\u{fffd}ab");
    }
}
