//! Embeddings as a NumPy `.npy` array (`[queries, dim]`, float32 or float64, little-endian, C
//! order) with its ids file.
//!
//! The format (numpy.lib.format): the magic `\x93NUMPY`, a version byte pair, the header length
//! (2 bytes little-endian in version 1, 4 bytes in versions 2 and 3), the header (a Python dict
//! literal: `{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 1024), }`), then the data.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{for_each_line, json_error, DataError, IdText};

/// A float array being read row by row.
pub struct NpyReader {
    path: PathBuf,
    reader: BufReader<File>,
    rows: usize,
    dim: usize,
    double: bool,
    row: usize,
    buf: Vec<u8>,
}

impl NpyReader {
    /// Opens `path` and checks its header and its size.
    pub fn open(path: &Path) -> Result<NpyReader, DataError> {
        let bad = |message: String| DataError::File {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path)
            .map_err(|source| DataError::Io(r2_core::IoError::new(path, "cannot open", source)))?;
        let size = file
            .metadata()
            .map_err(|source| DataError::Io(r2_core::IoError::new(path, "cannot read", source)))?
            .len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut read = |n: usize, what: &str| -> Result<Vec<u8>, DataError> {
            let mut buf = vec![0u8; n];
            reader.read_exact(&mut buf).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => bad(format!(
                    "the file ends inside its {what}: it is truncated, or not a .npy file"
                )),
                _ => DataError::Io(r2_core::IoError::new(path, "cannot read", e)),
            })?;
            Ok(buf)
        };
        let magic = read(8, "header")?;
        if &magic[..6] != b"\x93NUMPY" {
            return Err(bad(
                "not a .npy file (it does not start with \\x93NUMPY): save the array with \
                 numpy.save"
                    .into(),
            ));
        }
        let (major, minor) = (magic[6], magic[7]);
        let header_len = match major {
            1 => {
                let b = read(2, "header")?;
                usize::from(u16::from_le_bytes([b[0], b[1]]))
            }
            2 | 3 => {
                let b = read(4, "header")?;
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
            }
            _ => {
                return Err(bad(format!(
                    ".npy format version {major}.{minor} is not known (1.0 to 3.0 are)"
                )))
            }
        };
        let prefix = 8 + if major == 1 { 2 } else { 4 } + header_len as u64;
        let header = read(header_len, "header")?;
        let header = String::from_utf8_lossy(&header);
        let descr = dict_value(&header, "descr")
            .ok_or_else(|| bad(format!("the header has no 'descr': {}", header.trim())))?;
        let descr = descr.trim_matches(|c| c == '\'' || c == '"');
        let double = match descr {
            "<f4" => false,
            "<f8" => true,
            ">f4" | ">f8" => {
                return Err(bad(format!(
                    "the array is big-endian (dtype '{descr}'): save it little-endian, e.g. \
                     numpy.save(path, array.astype('<f4'))"
                )))
            }
            other => {
                return Err(bad(format!(
                    "the array's dtype is '{other}': embeddings must be float32 ('<f4') or \
                     float64 ('<f8'), e.g. numpy.save(path, array.astype(numpy.float32))"
                )))
            }
        };
        match dict_value(&header, "fortran_order").as_deref() {
            Some("False") => {}
            Some("True") => {
                return Err(bad(
                    "the array is in Fortran (column-major) order: save it in C order, e.g. \
                     numpy.save(path, numpy.ascontiguousarray(array))"
                        .into(),
                ))
            }
            _ => {
                return Err(bad(format!(
                    "the header has no 'fortran_order': {}",
                    header.trim()
                )))
            }
        }
        let shape = dict_value(&header, "shape")
            .ok_or_else(|| bad(format!("the header has no 'shape': {}", header.trim())))?;
        let dims: Option<Vec<usize>> = shape
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('L').parse().ok())
            .collect();
        let (rows, dim) = match dims.as_deref() {
            Some(&[rows, dim]) => (rows, dim),
            Some(_) => {
                return Err(bad(format!(
                    "the array's shape is {shape}: embeddings must be a 2-d array [queries, dim]"
                )))
            }
            None => return Err(bad(format!("the header's shape {shape} is not a tuple"))),
        };
        let width: u64 = if double { 8 } else { 4 };
        let needed = (rows as u64)
            .checked_mul(dim as u64)
            .and_then(|n| n.checked_mul(width))
            .ok_or_else(|| bad(format!("the shape {shape} is too large")))?;
        let have = size.saturating_sub(prefix);
        if have < needed {
            return Err(bad(format!(
                "the file is truncated: a {rows} × {dim} array of {} needs {needed} bytes of \
                 data, the file has {have}",
                if double { "float64" } else { "float32" }
            )));
        }
        if have > needed {
            return Err(bad(format!(
                "the file has {} bytes after the {rows} × {dim} array its header describes: it \
                 is not one array saved by numpy.save",
                have - needed
            )));
        }
        Ok(NpyReader {
            path: path.to_path_buf(),
            reader,
            rows,
            dim,
            double,
            row: 0,
            buf: vec![0u8; dim * width as usize],
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The next row, as f64 (float32 values widened exactly); every value must be finite.
    pub fn next_row(&mut self) -> Result<Vec<f64>, DataError> {
        self.row += 1;
        self.reader
            .read_exact(&mut self.buf)
            .map_err(|e| DataError::Io(r2_core::IoError::new(&self.path, "cannot read", e)))?;
        let values: Vec<f64> = if self.double {
            self.buf
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect()
        } else {
            self.buf
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap_or([0; 4]))))
                .collect()
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(DataError::File {
                path: self.path.clone(),
                message: format!(
                    "row {} (from 1), value {} is {}: every embedding value must be a finite \
                     number",
                    self.row,
                    i + 1,
                    values[i]
                ),
            });
        }
        Ok(values)
    }
}

/// The text of `key`'s value in a Python dict literal (strings keep their quotes).
fn dict_value(header: &str, key: &str) -> Option<String> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?;
    let rest = rest.trim_start();
    let end = match rest.chars().next()? {
        '(' => rest.find(')')? + 1,
        q @ ('\'' | '"') => rest[1..].find(q)? + 2,
        _ => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    Some(rest[..end].trim().to_owned())
}

#[derive(Deserialize)]
struct RawId<'a> {
    #[serde(default, borrow)]
    query_id: Option<IdText<'a>>,
    #[serde(default, borrow)]
    id: Option<IdText<'a>>,
}

/// The ids of an ids file, with their lines: one id a line (blank lines skipped), as text or as
/// JSONL `{"query_id" | "id"}`.
pub(super) fn read_ids(path: &Path) -> Result<Vec<(usize, String)>, DataError> {
    let mut ids = Vec::new();
    for_each_line(path, |number, line| {
        let id = if line.starts_with('{') {
            let raw: RawId =
                serde_json::from_str(line).map_err(|e| json_error(path, number, line, &e))?;
            raw.query_id
                .or(raw.id)
                .ok_or_else(|| DataError::Line {
                    path: path.to_path_buf(),
                    line: number,
                    message: "needs a `query_id` (or `id`)".into(),
                })?
                .0
                .into_owned()
        } else {
            line.to_owned()
        };
        ids.push((number, id));
        Ok(())
    })?;
    Ok(ids)
}
