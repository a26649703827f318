//! What `r2` prints: decisions as upstream's JSON (same keys, same rounding, same number format)
//! or as upstream route.py's human-readable text.

use std::io::{self, Write};

use r2_core::{round_like_python, Budget, Decision, RouteOption, Router};
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

/// An option with upstream's keys and rounding.
#[derive(Serialize)]
pub struct OptionJson<'a> {
    pub model: &'a str,
    pub openrouter_id: &'a str,
    pub budget: Budget,
    pub predicted_quality: f64,
    pub predicted_output_tokens: serde_json::Value,
    pub predicted_cost_usd: f64,
    pub risk: f64,
}

/// A decision with upstream's keys and rounding; `id` and `query` are echoed from the input.
#[derive(Serialize)]
pub struct DecisionJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<&'a str>,
    pub model: &'a str,
    pub openrouter_id: &'a str,
    pub budget: Budget,
    pub predicted_quality: f64,
    pub predicted_cost_usd: f64,
    pub risk: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_options: Option<Vec<OptionJson<'a>>>,
}

/// The line upstream's route.py prints between the decision and the response: 40 dashes.
pub const GENERATION_RULE: &str = "----------------------------------------";

/// Upstream's answer object, plus the USD cost of the call.
#[derive(Serialize)]
pub struct GenerationJson<'a> {
    pub query: &'a str,
    pub model: &'a str,
    pub openrouter_id: &'a str,
    pub budget: Budget,
    pub predicted_quality: f64,
    pub risk: f64,
    pub response: &'a str,
    pub usage: r2_llm::Usage,
    pub cost_usd: f64,
}

/// Names and OpenRouter ids of the router's models, in the router's order.
pub struct Names<'a> {
    pub router: &'a Router,
    pub openrouter_ids: Vec<&'a str>,
}

impl<'a> Names<'a> {
    fn model(&self, index: usize) -> &'a str {
        &self.router.models()[index].name
    }

    /// The name of model `index`.
    pub fn model_name(&self, index: usize) -> &'a str {
        self.model(index)
    }

    /// upstream's `route_and_generate` output object, with the cost of the call added.
    pub fn generation(
        &self,
        d: &Decision,
        query: &'a str,
        g: &'a r2_router::Generation,
    ) -> GenerationJson<'a> {
        let c = self.option(&d.choice);
        GenerationJson {
            query,
            model: c.model,
            openrouter_id: c.openrouter_id,
            budget: c.budget,
            predicted_quality: c.predicted_quality,
            risk: c.risk,
            response: &g.text,
            usage: g.usage,
            cost_usd: g.cost_usd,
        }
    }

    /// Upstream's view of an option, rounded as upstream rounds it.
    pub fn option(&self, o: &RouteOption) -> OptionJson<'a> {
        let output_tokens = match o.budget {
            Budget::Tokens(n) => serde_json::Value::from(n),
            Budget::Unlimited => serde_json::Value::from(round_like_python(o.output_tokens, 1)),
        };
        OptionJson {
            model: self.model(o.model),
            openrouter_id: self.openrouter_ids[o.model],
            budget: o.budget,
            predicted_quality: round_like_python(o.quality, 4),
            predicted_output_tokens: output_tokens,
            predicted_cost_usd: round_like_python(o.cost, 8),
            risk: round_like_python(o.risk, 8),
        }
    }

    /// Upstream's decision object; `all_options` only when `verbose`.
    pub fn decision(
        &self,
        d: &Decision,
        id: Option<&'a serde_json::Value>,
        query: Option<&'a str>,
        verbose: bool,
    ) -> DecisionJson<'a> {
        let c = self.option(&d.choice);
        DecisionJson {
            id,
            query,
            model: c.model,
            openrouter_id: c.openrouter_id,
            budget: c.budget,
            predicted_quality: c.predicted_quality,
            predicted_cost_usd: c.predicted_cost_usd,
            risk: c.risk,
            all_options: verbose.then(|| d.ranked.iter().map(|o| self.option(o)).collect()),
        }
    }

    /// upstream route.py's text: candidates, the selected LLM and budget, and with `verbose` every
    /// option ranked by risk.
    pub fn human(&self, d: &Decision, candidates: &[&str], verbose: bool) -> String {
        let mut out = format!(
            "Candidate LLMs: {}\nSelected LLM: {}\nSelected budget: {}\n",
            candidates.join(", "),
            self.model(d.choice.model),
            d.choice.budget
        );
        if verbose {
            out.push_str("\nAll options:\n");
            for o in &d.ranked {
                let o = self.option(o);
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
    fn json_uses_python_separators() {
        let v = serde_json::json!({"a": [1, 2.5e-07], "b": "é"});
        assert_eq!(python_json(&v), r#"{"a": [1, 2.5e-07], "b": "é"}"#);
    }
}
