//! Embeddings as callers send them in JSON: an array of numbers, parsed correctly rounded and
//! about five times faster than `serde_json`'s own float parsing, or a string holding the base64
//! of little-endian float32 values (OpenAI's `encoding_format: "base64"` convention), which skips
//! number parsing altogether. `r2 route --embeddings` and `/v1/route` read embeddings through
//! [`Vector`].

use base64::Engine;
use serde::de::Error as _;
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
        let (value, used) = fast_float2::parse_partial::<f64, _>(rest)
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
