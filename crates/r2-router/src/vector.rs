//! Embeddings as callers send them in JSON: an array of numbers, parsed correctly rounded in one
//! pass (`vector/decimal.rs`), much faster than `serde_json`'s own float parsing, or a string
//! holding the base64 of little-endian float32 values (OpenAI's `encoding_format: "base64"`
//! convention), which skips number parsing altogether. `r2 route --embeddings` and `/v1/route`
//! read embeddings through [`Vector`].

mod decimal;

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
/// `serde_json` path, so errors are `serde_json`'s for the whole text (with [`Vector`]'s
/// messages).
pub fn from_str_with<T: DeserializeOwned>(
    json: &str,
    key: &str,
    many: bool,
) -> serde_json::Result<(T, Option<Vec<Vec<f64>>>)> {
    from_slice_with(json.as_bytes(), key, many)
}

/// [`from_str_with`] for bytes that may not be UTF-8. The array of numbers is not checked for
/// UTF-8 first: it is ASCII when it parses, and the rest is checked by `serde_json`, so the
/// answer is the same as for text.
pub fn from_slice_with<T: DeserializeOwned>(
    json: &[u8],
    key: &str,
    many: bool,
) -> serde_json::Result<(T, Option<Vec<Vec<f64>>>)> {
    let fast = field_start(json, key).and_then(|start| {
        let (values, end) = match (json.get(start), many) {
            (Some(b'['), false) => {
                let (values, end) = numbers_at(json, start).ok()?;
                (vec![values], end)
            }
            (Some(b'['), true) => many_at(std::str::from_utf8(json).ok()?, start).ok()?,
            (Some(b'"'), false) => {
                let end = skip_string(json, start)?;
                let text = std::str::from_utf8(&json[start..end]).ok()?;
                (vec![parse(text).ok()?], end)
            }
            _ => return None,
        };
        let mut rest = Vec::with_capacity(json.len() - (end - start) + 4);
        rest.extend_from_slice(&json[..start]);
        rest.extend_from_slice(b"null");
        rest.extend_from_slice(&json[end..]);
        Some((rest, values))
    });
    // An error in the rest is said as for the whole text (its line and column).
    match fast.and_then(|(rest, values)| Some((serde_json::from_slice(&rest).ok()?, values))) {
        Some((value, values)) => Ok((value, Some(values))),
        None => Ok((serde_json::from_slice(json)?, None)),
    }
}

/// Where the value of the top-level field `key` of the JSON object `json` starts: the fields
/// before it are skipped without being parsed; `None` when it is not there (or the text is not
/// shaped as expected).
pub fn field_start(json: &[u8], key: &str) -> Option<usize> {
    let b = json;
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
        if name == key.as_bytes() {
            return Some(at);
        }
        at = skip_value(b, at)?;
        space(&mut at);
        match b.get(at) {
            Some(b',') => at += 1,
            _ => return None,
        }
    }
}

/// The byte range of the value of the top-level field `key` of the JSON object `json`.
pub fn field_range(json: &str, key: &str) -> Option<Range<usize>> {
    let start = field_start(json.as_bytes(), key)?;
    Some(start..skip_value(json.as_bytes(), start)?)
}

/// The index after the string starting at `at` (a `"`).
fn skip_string(b: &[u8], mut at: usize) -> Option<usize> {
    at += 1;
    loop {
        while let Some(eight) = b.get(at..at + 8) {
            let eight = u64::from_le_bytes(eight.try_into().ok()?);
            if has_byte(eight, b'"') || has_byte(eight, b'\\') {
                break;
            }
            at += 8;
        }
        match b.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// Whether one of the eight bytes of `eight` is `byte`.
fn has_byte(eight: u64, byte: u8) -> bool {
    let x = eight ^ (0x0101_0101_0101_0101 * u64::from(byte));
    x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0
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
    let start = json.len() - json.trim_start().len();
    let (values, end) = many_at(json, start)?;
    if !json[end..].trim().is_empty() {
        return Err("a list of embeddings that is not JSON".into());
    }
    Ok(values)
}

/// The embeddings of the array starting at `start`, and the index after it.
fn many_at(json: &str, start: usize) -> Result<(Vec<Vec<f64>>, usize), String> {
    let b = json.as_bytes();
    if b.get(start) != Some(&b'[') {
        return Err("a list of embeddings is an array".into());
    }
    let not_json = || "a list of embeddings that is not JSON".to_owned();
    let mut out = Vec::new();
    let mut at = start + 1;
    let space = |at: &mut usize| {
        while *at < b.len() && b[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    space(&mut at);
    if b.get(at) == Some(&b']') {
        return Ok((out, at + 1));
    }
    loop {
        space(&mut at);
        let one = match b.get(at) {
            Some(b'[') => numbers_at(b, at),
            Some(b'"') => {
                let end = skip_string(b, at).ok_or_else(not_json)?;
                parse(&json[at..end]).map(|v| (v, end))
            }
            _ => Err(
                "an embedding is an array of numbers or a base64 string of float32 values"
                    .to_owned(),
            ),
        };
        let (values, end) = one.map_err(|e| format!("embedding {}: {e}", out.len() + 1))?;
        out.push(values);
        at = end;
        space(&mut at);
        match b.get(at) {
            Some(b',') => at += 1,
            Some(b']') => return Ok((out, at + 1)),
            _ => return Err(not_json()),
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
            let plain = json[1..]
                .strip_suffix('"')
                .filter(|text| !text.contains('\\'));
            match plain {
                Some(text) => base64_f32(text),
                None => {
                    let text: String = serde_json::from_str(json).map_err(|e| e.to_string())?;
                    base64_f32(&text)
                }
            }
        }
        _ => Err("an embedding is an array of numbers or a base64 string of float32 values".into()),
    }
}

/// The numbers of a JSON array of numbers.
fn numbers(json: &str) -> Result<Vec<f64>, String> {
    let (values, end) = numbers_at(json.as_bytes(), 0)?;
    if !json[end..].trim().is_empty() {
        return Err("an embedding array followed by more text".into());
    }
    Ok(values)
}

/// The numbers of the JSON array starting at `start` (a `[`), and the index after its `]`. One
/// pass: each number is parsed where it stands ([`decimal::parse_fraction`] for the usual
/// `-0.0123…`, else [`decimal::parse_number`]), in JSON's number syntax (no `+`, `inf`, `.5`,
/// `1.`, `01`).
fn numbers_at(b: &[u8], start: usize) -> Result<(Vec<f64>, usize), String> {
    let not_a_number = |i: usize| format!("embedding value {i} is not a number");
    let mut values = Vec::with_capacity(1024);
    let mut at = start + 1;
    let space = |at: &mut usize| {
        while *at < b.len() && b[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    space(&mut at);
    if b.get(at) == Some(&b']') {
        return Ok((values, at + 1));
    }
    loop {
        space(&mut at);
        let rest = &b[at.min(b.len())..];
        let (value, used) = decimal::parse_fraction(rest)
            .or_else(|| decimal::parse_number(rest))
            .ok_or_else(|| not_a_number(values.len() + 1))?;
        values.push(value);
        at += used;
        if b.get(at) == Some(&b',') {
            at += 1;
            continue;
        }
        space(&mut at);
        match b.get(at) {
            Some(b',') => at += 1,
            Some(b']') => return Ok((values, at + 1)),
            _ => return Err(not_a_number(values.len() + usize::from(at < b.len()))),
        }
    }
}

/// Little-endian float32 values from base64 (standard alphabet, padding optional).
pub fn base64_f32(text: &str) -> Result<Vec<f64>, String> {
    if let Some(values) = decode_f32(text.trim_end_matches('=').as_bytes()) {
        return Ok(values);
    }
    let bytes = match decode_base64(text.trim_end_matches('=').as_bytes()) {
        Some(bytes) => bytes,
        None => decode_base64_or_say_why(text)?,
    };
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

/// The value of each character of the standard base64 alphabet; `INVALID` for the others.
const BASE64_VALUES: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut values = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        values[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    values
};
const INVALID: u8 = 0xFF;

/// For each of the four characters of a group, its value in place among the group's 24 bits;
/// [`INVALID_BIT`] for characters outside the alphabet.
const BASE64_PLACED: [[u32; 256]; 4] = {
    let mut placed = [[INVALID_BIT; 256]; 4];
    let mut k = 0;
    while k < 4 {
        let mut c = 0;
        while c < 256 {
            if BASE64_VALUES[c] != INVALID {
                placed[k][c] = (BASE64_VALUES[c] as u32) << (18 - 6 * k);
            }
            c += 1;
        }
        k += 1;
    }
    placed
};
const INVALID_BIT: u32 = 1 << 31;

/// What [`decode_base64`] and the float32 reading of its bytes give, sixteen characters (three
/// values) at a time; `None` where that is not a whole number of values.
fn decode_f32(text: &[u8]) -> Option<Vec<f64>> {
    let (blocks, tail) = text.split_at(text.len() / 16 * 16);
    let tail = decode_base64(tail)?;
    if tail.len() % 4 != 0 {
        return None;
    }
    let mut values = Vec::with_capacity(blocks.len() / 16 * 3 + tail.len() / 4);
    let mut invalid = 0;
    for block in blocks.chunks_exact(16) {
        let group = |i: usize| {
            BASE64_PLACED[0][usize::from(block[i])]
                | BASE64_PLACED[1][usize::from(block[i + 1])]
                | BASE64_PLACED[2][usize::from(block[i + 2])]
                | BASE64_PLACED[3][usize::from(block[i + 3])]
        };
        let (a, b, c, d) = (group(0), group(4), group(8), group(12));
        invalid |= a | b | c | d;
        // Bytes 0-3, 4-7 and 8-11 of the twelve, first byte highest, then little-endian.
        for bits in [a << 8 | b >> 16, b << 16 | c >> 8, c << 24 | d] {
            values.push(f64::from(f32::from_bits(bits.swap_bytes())));
        }
    }
    if invalid & INVALID_BIT != 0 {
        return None;
    }
    values.extend(
        tail.chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
    );
    Some(values)
}

/// The bytes of unpadded standard base64 whose unused last bits are zero (what the `base64`
/// crate accepts); `None` for anything else.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let value = |c: u8| u32::from(BASE64_VALUES[usize::from(c)]);
    let (quads, tail) = text.split_at(text.len() / 4 * 4);
    let tail_bytes = match tail.len() {
        0 => 0,
        1 => return None,
        n => n - 1,
    };
    let mut bytes = vec![0u8; quads.len() / 4 * 3 + tail_bytes];
    let mut invalid = 0;
    for (quad, out) in quads.chunks_exact(4).zip(bytes.chunks_exact_mut(3)) {
        let (a, b, c, d) = (
            value(quad[0]),
            value(quad[1]),
            value(quad[2]),
            value(quad[3]),
        );
        invalid |= a | b | c | d;
        let n = a << 18 | b << 12 | c << 6 | d;
        out.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    let mut n = 0;
    for (i, &c) in tail.iter().enumerate() {
        invalid |= value(c);
        n |= value(c) << (18 - 6 * i);
    }
    let unused_bits = n & ((1 << (24 - 8 * tail_bytes)) - 1);
    if invalid == u32::from(INVALID) || unused_bits != 0 {
        return None;
    }
    let at = bytes.len() - tail_bytes;
    bytes[at..].copy_from_slice(&n.to_be_bytes()[1..1 + tail_bytes]);
    Some(bytes)
}

/// The `base64` crate's reading of `text` (padded or not), or why it is not base64.
fn decode_base64_or_say_why(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim_end_matches('='))
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim_end_matches('='))
        })
        .map_err(|e| format!("the embedding string is not base64: {e}"))
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
    fn bytes_that_are_not_utf8_take_the_plain_path() {
        #[derive(Deserialize, Debug)]
        struct Line {
            #[allow(dead_code)]
            embedding: Option<Vector>,
            #[allow(dead_code)]
            query: Option<String>,
        }
        let ok = b"{\"embedding\": [0.5, -0.25], \"query\": \"caf\\u00e9 \xc3\xa9\"}";
        let (_, values) = from_slice_with::<Line>(ok, "embedding", false).unwrap();
        assert_eq!(values, Some(vec![vec![0.5, -0.25]]));
        for bad in [
            &b"{\"embedding\": [0.5, -0.25], \"query\": \"\xff\"}"[..],
            &b"{\"embedding\": [0.5, -0.25], \"query\": \"x\"} \xff"[..],
            &b"{\"embedding\": [0.5, -0.25, \xff], \"query\": \"x\"}"[..],
            &b"{\"embedding\": \"AAAAPw\xff\"}"[..],
        ] {
            let err = from_slice_with::<Line>(bad, "embedding", false).unwrap_err();
            let plain = serde_json::from_slice::<Line>(bad).unwrap_err();
            assert_eq!(err.to_string(), plain.to_string());
        }
    }

    #[test]
    fn json_numbers_are_checked_as_json_defines_them() {
        for ok in ["0", "-0", "1.5", "1e5", "1E-5", "-12.25e+3", "0.5"] {
            assert!(parse(&format!("[{ok}]")).is_ok(), "{ok}");
        }
        for bad in ["-", ".5", "1.", "+1", "inf", "NaN", "01", "-01", "1 2"] {
            assert!(parse(&format!("[{bad}]")).is_err(), "{bad}");
        }
        assert!(parse("[1] x").is_err());
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

    /// The bits of the float32 values (widened) of base64 as the `base64` crate reads it, if a
    /// whole number of them.
    fn as_f32(text: &str) -> Option<Vec<u64>> {
        let bytes = decode_base64_or_say_why(text).ok()?;
        (bytes.len() % 4 == 0).then(|| {
            bytes
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_bits())
                .collect()
        })
    }

    fn f32_bits(text: &str) -> Option<Vec<u64>> {
        let values = decode_f32(text.trim_end_matches('=').as_bytes())?;
        Some(values.iter().map(|v| v.to_bits()).collect())
    }

    #[test]
    fn base64_is_read_as_the_base64_crate_reads_it() {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        };
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|_| next()).collect();
            let text = engine.encode(&bytes);
            assert_eq!(
                decode_base64(text.trim_end_matches('=').as_bytes()),
                Some(bytes)
            );
            assert_eq!(f32_bits(&text), as_f32(&text));
            // One character changed, to anything: the two readings agree.
            for _ in 0..20 {
                let mut broken = text.clone().into_bytes();
                if broken.is_empty() {
                    break;
                }
                let at = usize::from(next()) % broken.len();
                broken[at] = next() & 0x7f;
                let Ok(broken) = String::from_utf8(broken) else {
                    continue;
                };
                let unpadded = broken.trim_end_matches('=');
                let want = decode_base64_or_say_why(&broken).ok();
                assert_eq!(decode_base64(unpadded.as_bytes()), want, "{broken}");
                assert_eq!(f32_bits(unpadded), as_f32(&broken), "{broken}");
            }
        }
        for bad in ["A", "AB", "ABC", "AAAAA", "A===", "AB@=", "AAAA AAA"] {
            assert_eq!(
                decode_base64(bad.trim_end_matches('=').as_bytes()),
                decode_base64_or_say_why(bad).ok(),
                "{bad}"
            );
        }
    }

    #[test]
    fn strings_are_skipped_past_escapes() {
        for (json, end) in [
            (r#""""#, 2),
            (r#""abc" x"#, 5),
            (r#""a\"b" x"#, 6),
            (r#""0123456789abcdef\\" x"#, 20),
            (r#""0123456789\"abcdefgh" x"#, 22),
        ] {
            assert_eq!(skip_string(json.as_bytes(), 0), Some(end), "{json}");
        }
        assert_eq!(skip_string(br#""0123456789abcdef"#, 0), None);
        assert_eq!(skip_string(br#""01234567\"#, 0), None);
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
