//! Embeddings as callers send them in JSON: an array of numbers, parsed correctly rounded and
//! about five times faster than `serde_json`'s own float parsing, or a string holding the base64
//! of little-endian float32 values (OpenAI's `encoding_format: "base64"` convention), which skips
//! number parsing altogether. `r2 route --embeddings` and `/v1/route` read embeddings through
//! [`Vector`].

use std::ops::Range;

use base64::Engine;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// An embedding read from JSON: `[0.1, -2e-3, ...]` or `"<base64 of f32 LE>"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Vector(pub Vec<f64>);

impl<'de> Deserialize<'de> for Vector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The value's JSON text, checked by serde_json but not converted: the numbers are parsed
        // below, at once.
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        parse(raw.get()).map(Vector).map_err(D::Error::custom)
    }
}

/// `json` (an object) as `T`, with the value of its top-level field `key` parsed by [`parse`]
/// (or, for an array of embeddings, [`parse_many`] with `many`) without going through
/// `serde_json`'s number parsing, and `T` seeing `null` there. Anything unusual (no such field,
/// an escaped key, text that is not JSON, a value [`parse`] refuses) takes the plain
/// `serde_json` path, so errors are `serde_json`'s (with [`Vector`]'s messages).
pub fn from_str_with<T: DeserializeOwned>(
    json: &str,
    key: &str,
    many: bool,
) -> serde_json::Result<(T, Option<Vec<Vec<f64>>>)> {
    let fast = field_range(json, key).and_then(|range| {
        let value = &json[range.clone()];
        let values = if many {
            parse_many(value).ok()?
        } else {
            vec![parse(value).ok()?]
        };
        let mut rest = String::with_capacity(json.len() - range.len() + 4);
        rest.push_str(&json[..range.start]);
        rest.push_str("null");
        rest.push_str(&json[range.end..]);
        Some((rest, values))
    });
    match fast {
        Some((rest, values)) => Ok((serde_json::from_str(&rest)?, Some(values))),
        None => Ok((serde_json::from_str(json)?, None)),
    }
}

/// The byte range of the value of the top-level field `key` of the JSON object `json`, found by
/// skipping strings and nested values without parsing them; `None` when it is not there (or the
/// text is not shaped as expected).
pub fn field_range(json: &str, key: &str) -> Option<Range<usize>> {
    let b = json.as_bytes();
    let mut at = 0;
    let space = |at: &mut usize| {
        while *at < b.len() && b[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    space(&mut at);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        space(&mut at);
        if b.get(at) != Some(&b'"') {
            return None;
        }
        let key_start = at + 1;
        at = skip_string(b, at)?;
        let name = &b[key_start..at - 1];
        space(&mut at);
        if b.get(at) != Some(&b':') {
            return None;
        }
        at += 1;
        space(&mut at);
        let value_start = at;
        at = skip_value(b, at)?;
        if name == key.as_bytes() {
            return Some(value_start..at);
        }
        space(&mut at);
        match b.get(at) {
            Some(b',') => at += 1,
            _ => return None,
        }
    }
}

/// The index after the string starting at `at` (a `"`).
fn skip_string(b: &[u8], mut at: usize) -> Option<usize> {
    at += 1;
    while at < b.len() {
        match b[at] {
            b'"' => return Some(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
    None
}

/// The index after the value starting at `at`: a string, or anything up to the `,`, `}` or `]`
/// that ends it at its own depth.
fn skip_value(b: &[u8], mut at: usize) -> Option<usize> {
    if b.get(at) == Some(&b'"') {
        return skip_string(b, at);
    }
    let mut depth = 0usize;
    while at < b.len() {
        match b[at] {
            b'"' => {
                at = skip_string(b, at)?;
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' if depth == 0 => return Some(at),
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            b',' if depth == 0 => return Some(at),
            _ => {}
        }
        at += 1;
    }
    (depth == 0).then_some(at)
}

/// The embeddings of a JSON array of embeddings (each an array of numbers or a base64 string).
pub fn parse_many(json: &str) -> Result<Vec<Vec<f64>>, String> {
    let b = json.trim().as_bytes();
    if b.first() != Some(&b'[') {
        return Err("a list of embeddings is an array".into());
    }
    let text = json.trim();
    let mut out = Vec::new();
    let mut at = 1;
    let space = |at: &mut usize| {
        while *at < b.len() && b[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    space(&mut at);
    if b.get(at) == Some(&b']') {
        return Ok(out);
    }
    loop {
        space(&mut at);
        let start = at;
        at = skip_value(b, at).ok_or("a list of embeddings that is not JSON")?;
        out.push(parse(&text[start..at]).map_err(|e| format!("embedding {}: {e}", out.len() + 1))?);
        space(&mut at);
        match b.get(at) {
            Some(b',') => at += 1,
            Some(b']') => return Ok(out),
            _ => return Err("a list of embeddings that is not JSON".into()),
        }
    }
}

/// The values of a JSON array of numbers or of a base64 string of float32 values; the error says
/// which element is wrong.
pub fn parse(json: &str) -> Result<Vec<f64>, String> {
    let json = json.trim();
    match json.as_bytes().first() {
        Some(b'[') => numbers(json),
        Some(b'"') => {
            let text: String = serde_json::from_str(json).map_err(|e| e.to_string())?;
            base64_f32(&text)
        }
        _ => Err("an embedding is an array of numbers or a base64 string of float32 values".into()),
    }
}

/// The numbers of a JSON array (already known to be valid JSON).
fn numbers(json: &str) -> Result<Vec<f64>, String> {
    let bytes = json.as_bytes();
    let inner = &bytes[1..bytes.len().saturating_sub(1)];
    let mut values = Vec::with_capacity(inner.len() / 8 + 1);
    let mut at = 0;
    let skip_space = |at: &mut usize| {
        while *at < inner.len() && inner[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    skip_space(&mut at);
    if at == inner.len() {
        return Ok(values);
    }
    loop {
        skip_space(&mut at);
        let rest = &inner[at..];
        // JSON numbers start with '-' or a digit; fast-float2 would also take "inf" or "+1".
        if !rest
            .first()
            .is_some_and(|b| *b == b'-' || b.is_ascii_digit())
        {
            return Err(format!(
                "embedding value {} is not a number",
                values.len() + 1
            ));
        }
        let used = json_number_len(rest)
            .ok_or_else(|| format!("embedding value {} is not a number", values.len() + 1))?;
        let value = fast_float2::parse::<f64, _>(&rest[..used])
            .map_err(|_| format!("embedding value {} is not a number", values.len() + 1))?;
        values.push(value);
        at += used;
        skip_space(&mut at);
        match inner.get(at) {
            None => return Ok(values),
            Some(b',') => at += 1,
            Some(_) => return Err(format!("embedding value {} is not a number", values.len())),
        }
    }
}

/// The length of the JSON number at the start of `b` (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`).
fn json_number_len(b: &[u8]) -> Option<usize> {
    let mut at = usize::from(b.first() == Some(&b'-'));
    let digits = |at: &mut usize| {
        let start = *at;
        while *at < b.len() && b[*at].is_ascii_digit() {
            *at += 1;
        }
        *at > start
    };
    match b.get(at) {
        Some(b'0') => at += 1,
        Some(c) if c.is_ascii_digit() => {
            digits(&mut at);
        }
        _ => return None,
    }
    if b.get(at) == Some(&b'.') {
        at += 1;
        if !digits(&mut at) {
            return None;
        }
    }
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(b.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        if !digits(&mut at) {
            return None;
        }
    }
    Some(at)
}

/// Little-endian float32 values from base64 (standard alphabet, padding optional).
pub fn base64_f32(text: &str) -> Result<Vec<f64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim_end_matches('='))
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim_end_matches('='))
        })
        .map_err(|e| format!("the embedding string is not base64: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "the base64 embedding has {} bytes, not a whole number of float32 values (4 bytes each)",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect())
}

/// The base64 text of `values` as little-endian float32 (what [`base64_f32`] reads).
pub fn to_base64_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_parse_as_serde_json_parses_them() {
        for json in [
            "[]",
            "[ ]",
            "[1]",
            "[0.1, -2e-3,3.5E+2 , -0.0, 1e308, 5e-324, 0.30000000000000004]",
            "[\n1,\n2\n]",
            "[123456789012345678901234567890, 2.2250738585072014e-308]",
        ] {
            let want: Vec<f64> = serde_json::from_str(json).unwrap();
            let got = parse(json).unwrap();
            assert_eq!(got.len(), want.len(), "{json}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.to_bits(), w.to_bits(), "{json}");
            }
        }
    }

    #[test]
    fn what_is_not_a_number_is_named() {
        for (json, error) in [
            ("[1, \"x\"]", "value 2 is not a number"),
            ("[null]", "value 1 is not a number"),
            ("[1, [2]]", "value 2 is not a number"),
            ("{}", "an array of numbers or a base64 string"),
            ("\"@@@\"", "not base64"),
            ("\"AAAA\"", "not a whole number of float32"),
        ] {
            let got = parse(json).unwrap_err();
            assert!(got.contains(error), "{json}: {got}");
        }
    }

    #[test]
    fn the_field_is_found_at_the_top_level_only() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Line {
            id: serde_json::Value,
            embedding: Option<Vector>,
            query: Option<String>,
        }
        let json = r#"{"id": {"embedding": [9]}, "query": "a \"embedding\": [8] }", "embedding" : [1, 2.5e-1 ] }"#;
        let range = field_range(json, "embedding").unwrap();
        assert_eq!(&json[range], "[1, 2.5e-1 ]");
        let (line, values) = from_str_with::<Line>(json, "embedding", false).unwrap();
        assert_eq!(values, Some(vec![vec![1.0, 0.25]]));
        assert_eq!(line.embedding, None);
        assert_eq!(line.query.as_deref(), Some("a \"embedding\": [8] }"));
        assert_eq!(line.id, serde_json::json!({"embedding": [9]}));
        // Not there, or not usable: serde_json's path and errors.
        assert_eq!(field_range(r#"{"id": 1}"#, "embedding"), None);
        let (line, values) =
            from_str_with::<Line>(r#"{"id": 1, "embedding": [3]}"#, "nothing", false).unwrap();
        assert_eq!((line.embedding, values), (Some(Vector(vec![3.0])), None));
        let err = from_str_with::<Line>(r#"{"id": 1, "embedding": [1, "x"]}"#, "embedding", false)
            .unwrap_err();
        assert!(err.to_string().contains("value 2 is not a number"), "{err}");
        let err = from_str_with::<Line>(r#"{"id": 1, "embedding": [1, 01]}"#, "embedding", false)
            .unwrap_err();
        assert!(err.is_syntax(), "{err}");
        let err = from_str_with::<Line>(
            r#"{"id": 1, "embedding": [1], "embedding": [2]}"#,
            "embedding",
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("duplicate field"), "{err}");
        // Many.
        let text = to_base64_f32(&[0.5]);
        let many = format!(r#"[[1, 2], "{text}", []]"#);
        assert_eq!(
            parse_many(&many).unwrap(),
            vec![vec![1.0, 2.0], vec![0.5], vec![]]
        );
        assert!(parse_many("[[1], [true]]")
            .unwrap_err()
            .contains("embedding 2"));
    }

    #[test]
    fn json_numbers_are_checked_as_json_defines_them() {
        for ok in ["0", "-0", "1.5", "1e5", "1E-5", "-12.25e+3"] {
            assert_eq!(json_number_len(ok.as_bytes()), Some(ok.len()), "{ok}");
        }
        for bad in ["-", ".5", "1.", "1e", "+1", "inf", "NaN"] {
            assert!(json_number_len(bad.as_bytes()) != Some(bad.len()), "{bad}");
        }
    }

    #[test]
    fn base64_round_trips_float32_values() {
        let values = [0.5f32, -1.25, 3.0e-8, f32::MAX];
        let text = to_base64_f32(&values);
        let got = parse(&serde_json::to_string(&text).unwrap()).unwrap();
        assert_eq!(got, values.map(f64::from));
        let unpadded = text.trim_end_matches('=');
        assert_eq!(base64_f32(unpadded).unwrap(), got);
    }

    #[test]
    fn a_vector_field_reads_either_form() {
        #[derive(Deserialize, Debug)]
        struct Line {
            embedding: Vector,
        }
        let line: Line = serde_json::from_str(r#"{"embedding": [1, 2.5]}"#).unwrap();
        assert_eq!(line.embedding.0, [1.0, 2.5]);
        let text = to_base64_f32(&[1.0, 2.5]);
        let line: Line = serde_json::from_str(&format!(r#"{{"embedding": "{text}"}}"#)).unwrap();
        assert_eq!(line.embedding.0, [1.0, 2.5]);
        let err = serde_json::from_str::<Line>(r#"{"embedding": [1, true]}"#).unwrap_err();
        assert!(err.to_string().contains("value 2 is not a number"), "{err}");
    }
}
