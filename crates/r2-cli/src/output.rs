//! What `r2` prints: decisions as upstream's JSON (same keys, same rounding, same number format)
//! or as upstream route.py's human-readable text.

use std::io::{self, Write};

use r2_router::r2_core::Decision;
use r2_router::report::Report;
use serde::Serialize;

/// A float as Python's `repr` prints it: the shortest digits that read back to the same value,
/// in exponent form below 1e-4 and from 1e16 up (`6.8e-07`, `0.0001`, `1e+16`), else with at
/// least one decimal (`1.0`).
pub fn py_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` writes an integer exponent");
    if (-4..16).contains(&exp) {
        let plain = format!("{x}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// serde_json formatting with Python `json.dumps` defaults: `", "` and `": "` separators and
/// floats in Python's `repr`.
struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(py_float(value).as_bytes())
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        separator(w, first)
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        separator(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Python's item separator, before every item but the first.
fn separator<W: ?Sized + Write>(writer: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

/// One line of JSON as Python's `json.dumps(obj, ensure_ascii=False)` writes it.
pub fn python_json<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    value
        .serialize(&mut ser)
        .expect("decisions serialise to JSON: strings, integers and finite floats");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// The line upstream's route.py prints between the decision and the response: 40 dashes.
pub const GENERATION_RULE: &str = "----------------------------------------";

/// upstream route.py's `print_human_readable`: the candidates, the selected LLM and the budget,
/// each block after a blank line; with `verbose`, then the `All options:` block, every option
/// ranked by risk (as route.py prints it for route-only runs).
pub fn human(report: &Report, d: &Decision, candidates: &[&str], verbose: bool) -> String {
    let mut out = format!(
        "Candidate LLMs:\n{}\n\nSelected LLM: {}\n\nSelected budget: {}\n",
        candidates.join(", "),
        report.model_name(d.choice.model),
        d.choice.budget
    );
    if verbose {
        out.push_str("\nAll options:\n");
        for o in report.ranked(d) {
            out.push_str(&format!(
                "- {} @ {}: quality={}, cost=${}, risk={}\n",
                o.model,
                o.budget,
                py_float(o.predicted_quality),
                py_float(o.predicted_cost_usd),
                py_float(o.risk)
            ));
        }
    }
    out
}

/// What route.py prints between the decision and the answer: a blank line, the rule, a blank
/// line and `Response:` (the answer follows on the next line).
pub fn response_header() -> String {
    format!("\n{GENERATION_RULE}\n\nResponse:\n")
}

/// The line upstream's `R2Router.from_pretrained(..., verbose=True)` prints when it has loaded
/// the checkpoints (route.py's `--verbose`): `R2-Router loaded 11 models: ['GLM-4.5-Air', …]`.
pub fn loaded_line(models: &[&str]) -> String {
    let names: Vec<String> = models.iter().map(|m| py_str(m)).collect();
    format!(
        "R2-Router loaded {} models: [{}]\n",
        models.len(),
        names.join(", ")
    )
}

/// A string as Python's `repr` prints it: in single quotes unless it holds a single quote and no
/// double quote; backslashes, the quote and control characters escaped.
pub fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        // Expectations from CPython 3.11 `repr`.
        let cases = [
            (0.8041, "0.8041"),
            (0.00068005, "0.00068005"),
            (6.8e-07, "6.8e-07"),
            (0.0001, "0.0001"),
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (-1.234e-05, "-1.234e-05"),
            (1e16, "1e+16"),
            (123456789012345.6, "123456789012345.6"),
            (2.5e-10, "2.5e-10"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float(x), want, "{x:e}");
        }
    }

    #[test]
    fn strings_print_like_python_repr() {
        // Expectations from CPython 3.11 `repr`.
        let cases = [
            ("GLM-4.5-Air", "'GLM-4.5-Air'"),
            ("it's", "\"it's\""),
            ("say \"hi\"", "'say \"hi\"'"),
            ("both ' and \"", "'both \\' and \"'"),
            ("a\\b\n", "'a\\\\b\\n'"),
            ("\u{1}", "'\\x01'"),
            ("é", "'é'"),
        ];
        for (s, want) in cases {
            assert_eq!(py_str(s), want, "{s:?}");
        }
        assert_eq!(
            loaded_line(&["a", "b"]),
            "R2-Router loaded 2 models: ['a', 'b']\n"
        );
    }

    #[test]
    fn json_uses_python_separators() {
        let v = serde_json::json!({"a": [1, 2.5e-07], "b": "é"});
        assert_eq!(python_json(&v), r#"{"a": [1, 2.5e-07], "b": "é"}"#);
    }
}
