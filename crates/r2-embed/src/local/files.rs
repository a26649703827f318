//! The files of a checkpoint: `config.json`, `tokenizer.json` and the safetensors weights, and
//! the reader of safetensors files.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

pub(crate) const CONFIG: &str = "config.json";
pub(crate) const TOKENIZER: &str = "tokenizer.json";
pub(crate) const WEIGHTS: &str = "model.safetensors";
pub(crate) const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// What a model folder must hold, for error messages.
pub(crate) const FOLDER_CONTENTS: &str = "a Qwen3 model folder must contain config.json, \
    tokenizer.json and model.safetensors (or model.safetensors.index.json and its shards), e.g. \
    from `huggingface-cli download Qwen/Qwen3-0.6B --local-dir DIR`";

/// Paths of the files of one checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct ModelFiles {
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    /// `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    pub weights: Vec<PathBuf>,
}

impl ModelFiles {
    /// Finds the files in `dir`; a missing file is an [`Error::Model`] naming it.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let require = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Model {
                    path,
                    reason: format!("missing: {FOLDER_CONTENTS}"),
                })
            }
        };
        let config = require(CONFIG)?;
        let tokenizer = require(TOKENIZER)?;
        let single = dir.join(WEIGHTS);
        let index = dir.join(WEIGHTS_INDEX);
        let weights = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shard_names(&index)?
                .into_iter()
                .map(|name| {
                    let path = dir.join(&name);
                    if path.is_file() {
                        Ok(path)
                    } else {
                        Err(Error::Model {
                            path,
                            reason: format!("missing: the shard is named by {WEIGHTS_INDEX}"),
                        })
                    }
                })
                .collect::<Result<_>>()?
        } else {
            return Err(Error::Model {
                path: single,
                reason: format!("missing (and so is {WEIGHTS_INDEX}): {FOLDER_CONTENTS}"),
            });
        };
        Ok(Self {
            config,
            tokenizer,
            weights,
        })
    }
}

/// The shard files named by a `model.safetensors.index.json`, sorted and without duplicates.
///
/// Names must be relative paths inside the folder (no `..`, not absolute).
pub(crate) fn shard_names(index: &Path) -> Result<Vec<String>> {
    let fail = |reason: String| Error::Model {
        path: index.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| fail(format!("cannot read: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| fail("no `weight_map` object".to_owned()))?;
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            fail(format!(
                "weight_map[{tensor:?}] is {file}, expected a file name"
            ))
        })?;
        let safe = !file.is_empty()
            && Path::new(file)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(fail(format!(
                "weight_map[{tensor:?}] names {file:?}, which is not a file inside the model folder"
            )));
        }
        names.insert(file.to_owned());
    }
    if names.is_empty() {
        return Err(fail("`weight_map` is empty".to_owned()));
    }
    Ok(names.into_iter().collect())
}

/// The element types of weights the loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightType {
    F32,
    BF16,
    F16,
}

impl WeightType {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "F32" => Some(Self::F32),
            "BF16" => Some(Self::BF16),
            "F16" => Some(Self::F16),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::BF16 | Self::F16 => 2,
        }
    }
}

/// One tensor named in a safetensors header.
#[derive(Debug, Clone)]
pub(crate) struct TensorEntry {
    /// The dtype as the header spells it (e.g. `BF16`).
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

/// Headers larger than this are rejected (the format's reference implementation allows 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Bytes read from the file at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// A safetensors file read with plain positioned reads (no memory map): the header is parsed
/// once, and each tensor's bytes are read in chunks straight into their destination, so a tensor
/// is never held twice and the file's pages are not counted in the process's resident memory.
pub(crate) struct SafetensorsFile {
    pub path: PathBuf,
    file: std::fs::File,
    tensors: HashMap<String, TensorEntry>,
}

impl SafetensorsFile {
    /// Opens `path` and checks its header: every tensor's byte range lies in the file and, for
    /// the dtypes the loader reads, matches its shape.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |reason: String| Error::Model {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let file_len = file
            .metadata()
            .map_err(|e| fail(format!("cannot read its metadata: {e}")))?
            .len();
        let mut len_bytes = [0u8; 8];
        read_exact_at(&file, &mut len_bytes, 0)
            .map_err(|e| fail(format!("not a safetensors file (no header length): {e}")))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES || header_len > file_len.saturating_sub(8) {
            return Err(fail(format!(
                "not a safetensors file: header length {header_len} with a file of {file_len} bytes"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        read_exact_at(&file, &mut header, 8)
            .map_err(|e| fail(format!("cannot read the safetensors header: {e}")))?;
        let value: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| fail(format!("the safetensors header is not valid JSON: {e}")))?;
        let map = value
            .as_object()
            .ok_or_else(|| fail("the safetensors header is not a JSON object".to_owned()))?;
        let data_start = 8 + header_len;
        let mut tensors = HashMap::with_capacity(map.len());
        for (name, info) in map {
            if name == "__metadata__" {
                continue;
            }
            let bad = |what: &str| fail(format!("tensor `{name}` in the header: {what}"));
            let dtype = info
                .get("dtype")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad("no `dtype` string"))?
                .to_owned();
            let shape = info
                .get("shape")
                .and_then(|v| v.as_array())
                .ok_or_else(|| bad("no `shape` array"))?
                .iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| bad("`shape` is not a list of sizes"))?;
            let offsets = info
                .get("data_offsets")
                .and_then(|v| v.as_array())
                .filter(|a| a.len() == 2)
                .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
                .ok_or_else(|| bad("`data_offsets` is not a pair of offsets"))?;
            let (start, end) = (
                data_start.checked_add(offsets.0),
                data_start.checked_add(offsets.1),
            );
            let (Some(start), Some(end)) = (start, end) else {
                return Err(bad("`data_offsets` overflow"));
            };
            if start > end || end > file_len {
                return Err(bad(&format!(
                    "bytes {}..{} are not inside the file's {} data bytes (truncated file?)",
                    offsets.0,
                    offsets.1,
                    file_len - data_start
                )));
            }
            if let Some(ty) = WeightType::parse(&dtype) {
                let bytes = shape
                    .iter()
                    .try_fold(ty.size(), |n, &d| n.checked_mul(d))
                    .and_then(|n| u64::try_from(n).ok());
                if bytes != Some(end - start) {
                    return Err(bad(&format!(
                        "{} bytes do not hold a {dtype} tensor of shape {shape:?}",
                        end - start
                    )));
                }
            }
            tensors.insert(
                name.clone(),
                TensorEntry {
                    dtype,
                    shape,
                    start,
                    end,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            tensors,
        })
    }

    /// The names of the tensors in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    /// Reads the bytes of `entry` in consecutive chunks (each a whole number of elements of
    /// `element_size` bytes), handing each one to `sink`.
    pub fn read_chunks(
        &self,
        entry: &TensorEntry,
        element_size: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<()> {
        let chunk = READ_CHUNK_BYTES / element_size * element_size;
        let mut buf = vec![0u8; chunk.min((entry.end - entry.start) as usize)];
        let mut at = entry.start;
        while at < entry.end {
            let n = ((entry.end - at) as usize).min(buf.len());
            read_exact_at(&self.file, &mut buf[..n], at).map_err(|e| Error::Model {
                path: self.path.clone(),
                reason: format!("cannot read the weights: {e}"),
            })?;
            sink(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &std::fs::File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Widens little-endian `bytes` of `ty` into `dst` (as many elements as `dst` holds).
pub(crate) fn widen_into(ty: WeightType, bytes: &[u8], dst: &mut [f32]) {
    match ty {
        WeightType::F32 => {
            for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        WeightType::BF16 => {
            for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                *d = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
            }
        }
        WeightType::F16 => {
            for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                *d = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
    }
}

/// `n` zeros, their pages faulted in up front (see [`prefault`]).
pub(crate) fn zeroed_f32(n: usize) -> Vec<f32> {
    prefault_zeroed(n)
}

/// `n` default values (zeros), their pages faulted in up front (see [`prefault`]).
pub(crate) fn prefault_zeroed<T: Copy + Default>(n: usize) -> Vec<T> {
    let v = vec![T::default(); n];
    prefault(v.as_ptr().cast(), n * std::mem::size_of::<T>());
    v
}

/// An empty vector with room for `n` elements, its pages faulted in up front (see [`prefault`]).
pub(crate) fn with_capacity_prefaulted<T>(n: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(n);
    prefault(v.as_ptr().cast(), n * std::mem::size_of::<T>());
    v
}

/// Asks the kernel to map the whole pages of `[ptr, ptr + len)` writable now, in one call
/// (`MADV_POPULATE_WRITE`, Linux 5.14 and later; a no-op elsewhere or on failure).
///
/// Loading writes every page of the weights (2 GB for Qwen3-0.6B): taking them one page fault at
/// a time was half a million faults and most of the load time on a KVM guest (1.5 of 2.1 s of
/// CPU, in the kernel). Transparent huge pages were slower still there (zeroing and compacting).
#[allow(unused_variables)]
fn prefault(ptr: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize).saturating_add(len) / PAGE * PAGE;
        if end > start {
            // SAFETY: `[start, end)` lies inside one live allocation of `len` bytes at `ptr` (the
            // caller's vector, which it keeps). MADV_POPULATE_WRITE only faults in pages of that
            // range as a write would, without changing their contents (zeros or uninitialised
            // capacity stay so), so no Rust invariant depends on the call; its result is ignored
            // on purpose (older kernels answer EINVAL and the pages fault in on first use).
            unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    end - start,
                    libc::MADV_POPULATE_WRITE,
                );
            }
        }
    }
}
