//! The Qwen3 network in candle: loading the weights and the batched forward pass.
//!
//! The forward pass follows Hugging Face transformers' `Qwen3Model` in float32: token embedding;
//! per layer RMSNorm → attention (q/k/v projections, per-head RMSNorm of q and k before the rotary
//! embedding, grouped-query attention with a causal mask) → residual, RMSNorm → SwiGLU MLP →
//! residual; final RMSNorm. The embedding is the last token's hidden state, L2-normalised.
//!
//! Batches are left-padded. Each sequence's positions start at 0 at its first real token, a row
//! attends only to the real keys at or before it ([`super::attention`]), and the last position is
//! the real last token of every sequence, so a text gets the same vector alone or in a batch (up
//! to float rounding in the linear layers' kernel, which is bit-identical too on AVX-512).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::ops::rms_norm;

use half::{bf16, f16};
use rayon::prelude::*;

use super::attention::{attention, key_row_len, Heads};
use super::config::Qwen3Config;
use super::files::{
    widen_into, with_capacity_prefaulted, zeroed_f32, SafetensorsFile, TensorEntry, WeightType,
};
use super::gemm::{kernel_available, PackedWeight, Packer};
use crate::{Error, Result};

/// Up to this many rows, [`Linear`] multiplies in the transposed form (measured on AVX2 with
/// candle 0.9's gemm: 94 against 31 GFLOPS for 8 × 1024 × 4096, 168 against 111 for 64 rows, 111
/// against 141 for 128 rows).
const SMALL_MATMUL_ROWS: usize = 96;

/// Batches of at least this many padded tokens give their freed memory back afterwards.
const TRIM_AFTER_TOKENS: usize = 256;

/// Returns the allocator's free memory to the system (glibc's `malloc_trim`; a no-op elsewhere).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes no pointers
    // and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// At most this many threads read the layers while loading.
const MAX_LOAD_THREADS: usize = 4;

/// Rotary tables are precomputed for this many positions and grown on demand.
const INITIAL_ROPE_POSITIONS: usize = 2048;

/// A safetensors checkpoint, one file or several shards, open while the model loads.
///
/// Tensors are read with positioned reads straight into their final buffers (no memory map), so
/// loading holds the converted weights and a 1 MiB buffer, never the file a second time.
pub(crate) struct Checkpoint {
    files: Vec<SafetensorsFile>,
    /// Tensor name → index in `files`.
    routing: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens `paths` (a single `model.safetensors`, or the shards named by an index) and reads
    /// their headers.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut routing = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let st = SafetensorsFile::open(path)?;
            for name in st.names() {
                routing.insert(name.to_owned(), index);
            }
            files.push(st);
        }
        Ok(Self { files, routing })
    }

    /// The first (or only) weights file, named in errors about missing tensors.
    fn first_path(&self) -> &Path {
        self.files
            .first()
            .map(|f| f.path.as_path())
            .unwrap_or_else(|| Path::new("model.safetensors"))
    }

    /// Tensor `name`, its file and its element type, after checking its shape against `shape`.
    ///
    /// `why` says where the expected shape comes from (named in the error on a mismatch).
    fn find(
        &self,
        name: &str,
        shape: &[usize],
        why: &str,
    ) -> Result<(&SafetensorsFile, &TensorEntry, WeightType)> {
        let missing = || Error::Model {
            path: self.first_path().to_path_buf(),
            reason: format!(
                "tensor `{name}` is missing: this is not a Qwen3 checkpoint or it is incomplete"
            ),
        };
        let file = self
            .routing
            .get(name)
            .map(|&i| &self.files[i])
            .ok_or_else(missing)?;
        let entry = file.entry(name).ok_or_else(missing)?;
        let fail = |reason: String| Error::Model {
            path: file.path.clone(),
            reason,
        };
        if entry.shape != shape {
            return Err(fail(format!(
                "tensor `{name}` has shape {:?}, but config.json ({why}) implies {shape:?}; \
                 config.json and the weights do not belong together",
                entry.shape
            )));
        }
        let ty = WeightType::parse(&entry.dtype).ok_or_else(|| {
            fail(format!(
                "tensor `{name}` has dtype {}; expected F32, BF16 or F16",
                entry.dtype
            ))
        })?;
        Ok((file, entry, ty))
    }

    /// Reads the tensors `parts` (name and shape), stacked along the first dimension, as one
    /// float32 tensor: each is widened chunk by chunk straight into its rows.
    fn get_stacked(&self, parts: &[(&str, &[usize])], why: &str) -> Result<Tensor> {
        let mut found = Vec::with_capacity(parts.len());
        for &(name, shape) in parts {
            found.push((name, self.find(name, shape, why)?));
        }
        let total: usize = parts.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        let mut data = zeroed_f32(total);
        let mut at = 0;
        for (_, (file, entry, ty)) in &found {
            let n: usize = entry.shape.iter().product();
            let dst = &mut data[at..at + n];
            let mut written = 0;
            file.read_chunks(entry, ty.size(), |bytes| {
                let k = bytes.len() / ty.size();
                widen_into(*ty, bytes, &mut dst[written..written + k]);
                written += k;
            })?;
            at += n;
        }
        // Stacked along the first dimension; the parts share the others.
        let mut shape = parts[0].1.to_vec();
        if let Some(rows) = shape.first_mut() {
            *rows = parts
                .iter()
                .map(|(_, s)| s.first().copied().unwrap_or(1))
                .sum();
        }
        let name = found[0].0;
        Tensor::from_vec(data, shape, &Device::Cpu).map_err(|e| Error::Model {
            path: found[0].1 .0.path.clone(),
            reason: format!("tensor `{name}`: {e}"),
        })
    }

    /// Reads the weight matrices `parts` (name and `[out, in]` shape), stacked along `out`, packed
    /// for the kernel when `packed` (kept in bfloat16 when every part is), else as a float32
    /// tensor.
    fn get_linear(
        &self,
        parts: &[(&str, &[usize])],
        why: &str,
        packed: bool,
    ) -> Result<LinearWeight> {
        if !packed {
            return Ok(LinearWeight::Dense(self.get_stacked(parts, why)?));
        }
        let mut found = Vec::with_capacity(parts.len());
        for &(name, shape) in parts {
            found.push(self.find(name, shape, why)?);
        }
        let out = parts.iter().map(|(_, s)| s[0]).sum();
        let inp = parts[0].1[1];
        let bf16 = found.iter().all(|(_, _, ty)| *ty == WeightType::BF16);
        let mut packer = Packer::new(out, inp, bf16);
        for (file, entry, ty) in &found {
            file.read_chunks(entry, ty.size(), |bytes| packer.push(*ty, bytes))?;
        }
        packer
            .finish()
            .map(LinearWeight::Packed)
            .ok_or_else(|| Error::Model {
                path: found[0].0.path.clone(),
                reason: format!("tensor `{}` ended before its shape was filled", parts[0].0),
            })
    }

    /// Loads tensor `name` as float32 after checking its shape against `shape`.
    fn get(&self, name: &str, shape: &[usize], why: &str) -> Result<Tensor> {
        self.get_stacked(&[(name, shape)], why)
    }

    /// Loads tensor `name` in its own dtype (float32, bfloat16 or float16).
    fn get_native(&self, name: &str, shape: &[usize], why: &str) -> Result<Tensor> {
        let (file, entry, ty) = self.find(name, shape, why)?;
        let n: usize = shape.iter().product();
        let tensor = match ty {
            WeightType::F32 => return self.get(name, shape, why),
            WeightType::BF16 => {
                let mut data: Vec<bf16> = with_capacity_prefaulted(n);
                file.read_chunks(entry, 2, |bytes| {
                    data.extend(
                        bytes
                            .chunks_exact(2)
                            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]]))),
                    )
                })?;
                Tensor::from_vec(data, shape, &Device::Cpu)
            }
            WeightType::F16 => {
                let mut data: Vec<f16> = with_capacity_prefaulted(n);
                file.read_chunks(entry, 2, |bytes| {
                    data.extend(
                        bytes
                            .chunks_exact(2)
                            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]]))),
                    )
                })?;
                Tensor::from_vec(data, shape, &Device::Cpu)
            }
        };
        tensor.map_err(|e| Error::Model {
            path: file.path.clone(),
            reason: format!("tensor `{name}`: {e}"),
        })
    }
}

/// `x · Wᵀ + b` with `W` stored as `[out, in]`, as in PyTorch.
struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

enum LinearWeight {
    /// Packed for this crate's kernel (CPUs with AVX-512).
    Packed(PackedWeight),
    /// A float32 tensor for candle's matmul (every other CPU).
    Dense(Tensor),
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Packed(w) => {
                let (rows, inp) = x.dims2()?;
                if inp != w.in_features() {
                    candle_core::bail!(
                        "linear layer of {} inputs applied to rows of {inp}",
                        w.in_features()
                    );
                }
                let y = with_values(x, |x| w.matmul(x, rows))?;
                Tensor::from_vec(y, (rows, w.out_features()), &Device::Cpu)?
            }
            // With few rows, gemm is more than twice as fast computing `(W · xᵀ)ᵀ` (the weight as
            // the tall left operand) than `x · Wᵀ`; from about a hundred rows on, the direct form
            // wins.
            LinearWeight::Dense(w) if x.dim(0)? <= SMALL_MATMUL_ROWS => {
                w.matmul(&x.t()?)?.t()?.contiguous()?
            }
            LinearWeight::Dense(w) => x.matmul(&w.t()?)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Layer {
    input_norm: Tensor,
    /// q_proj, k_proj and v_proj stacked into one matrix (one matrix product instead of three).
    qkv: Linear,
    /// Weights of the per-head RMSNorm of q and k.
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    o: Linear,
    post_norm: Tensor,
    /// gate_proj and up_proj stacked.
    gate_up: Linear,
    down: Linear,
}

/// Cosine and sine of `position × inverse frequency`, row-major `[positions, head_dim / 2]`.
struct RopeTable {
    inv_freq: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    len: usize,
    max: usize,
}

impl RopeTable {
    fn new(cfg: &Qwen3Config) -> Self {
        let half = cfg.head_dim / 2;
        // As transformers computes it: 1 / θ^(2i / d), then position × inv_freq in float32.
        let inv_freq = (0..half)
            .map(|i| (1.0 / cfg.rope_theta.powf((2 * i) as f64 / cfg.head_dim as f64)) as f32)
            .collect();
        let mut table = Self {
            inv_freq,
            cos: Vec::new(),
            sin: Vec::new(),
            len: 0,
            max: cfg.max_position_embeddings,
        };
        table.ensure(INITIAL_ROPE_POSITIONS.min(table.max));
        table
    }

    /// Grows the table to at least `len` positions (to the next power of two, at most `max`).
    fn ensure(&mut self, len: usize) {
        if len <= self.len {
            return;
        }
        let len = len.next_power_of_two().min(self.max).max(len);
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in 0..len {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (self.cos, self.sin, self.len) = (cos, sin, len);
    }
}

/// Runs `f` on the float32 values of `t` (made contiguous first if it is not).
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("the model runs on the CPU only");
    };
    let at = layout.start_offset();
    Ok(f(
        &cpu.as_slice::<f32>()?[at..at + layout.shape().elem_count()]
    ))
}

/// RMSNorm of one head's `src` with `weight`, then the rotary embedding at `cos`/`sin` (half of
/// the head each, transformers' `rotate_half` convention), times `scale`, into `out`.
#[allow(clippy::too_many_arguments)]
fn norm_rope(
    src: &[f32],
    weight: &[f32],
    eps: f32,
    cos: &[f32],
    sin: &[f32],
    scale: f32,
    out: &mut [f32],
) {
    let d = src.len();
    let half = d / 2;
    let mean_square = src.iter().map(|v| v * v).sum::<f32>() / d as f32;
    let inv = 1.0 / (mean_square + eps).sqrt();
    for i in 0..half {
        let a = src[i] * inv * weight[i];
        let b = src[i + half] * inv * weight[i + half];
        out[i] = (a * cos[i] - b * sin[i]) * scale;
        out[i + half] = (b * cos[i] + a * sin[i]) * scale;
    }
}

/// `silu(gate) · up` of each row of `gate_up` (`[rows, 2 · inter]`, gate then up).
fn swiglu(gate_up: &Tensor, inter: usize) -> candle_core::Result<Tensor> {
    let rows = gate_up.dim(0)?;
    let out = with_values(gate_up, |gate_up| {
        let mut out = vec![0f32; rows * inter];
        out.par_chunks_mut(inter)
            .zip(gate_up.par_chunks(2 * inter))
            .with_min_len(4)
            .for_each(|(out, row)| {
                let (gate, up) = row.split_at(inter);
                for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            });
        out
    })?;
    Tensor::from_vec(out, (rows, inter), &Device::Cpu)
}

/// Where the sequences of a left-padded batch start.
struct BatchShape {
    batch: usize,
    len: usize,
    /// Padding tokens in front of each sequence.
    pads: Vec<usize>,
}

/// A loaded Qwen3 network (float32, CPU).
pub(crate) struct Qwen3Model {
    cfg: Qwen3Config,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    rope: RopeTable,
}

impl Qwen3Model {
    /// Builds the network from `checkpoint`, checking every tensor's shape against `cfg`.
    pub fn load(cfg: Qwen3Config, checkpoint: &Checkpoint) -> Result<Self> {
        Self::load_with(cfg, checkpoint, kernel_available())
    }

    /// As [`Qwen3Model::load`], with the linear layers packed for this crate's kernel or not.
    fn load_with(cfg: Qwen3Config, checkpoint: &Checkpoint, packed: bool) -> Result<Self> {
        let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let why = cfg.describe();
        let get = |name: &str, shape: &[usize]| checkpoint.get(name, shape, &why);
        let stack = |parts: &[(&str, &[usize])]| checkpoint.get_stacked(parts, &why);
        let linear = |parts: &[(&str, &[usize])]| checkpoint.get_linear(parts, &why, packed);
        let values = |t: Tensor| {
            t.to_vec1::<f32>().map_err(|e| Error::Model {
                path: checkpoint.first_path().to_path_buf(),
                reason: format!("reading a norm weight: {e}"),
            })
        };

        let load_layer = |l: usize| -> Result<Layer> {
            let p = format!("model.layers.{l}");
            let attn = format!("{p}.self_attn");
            let name = |n: &str| format!("{attn}.{n}");
            let qkv_weight = linear(&[
                (&name("q_proj.weight"), &[nh * d, h]),
                (&name("k_proj.weight"), &[nkv * d, h]),
                (&name("v_proj.weight"), &[nkv * d, h]),
            ])?;
            let (qkv_bias, o_bias) = if cfg.attention_bias {
                let qkv = stack(&[
                    (&name("q_proj.bias"), &[nh * d]),
                    (&name("k_proj.bias"), &[nkv * d]),
                    (&name("v_proj.bias"), &[nkv * d]),
                ])?;
                (Some(qkv), Some(get(&name("o_proj.bias"), &[h])?))
            } else {
                (None, None)
            };
            let gate_up = linear(&[
                (&format!("{p}.mlp.gate_proj.weight"), &[i, h]),
                (&format!("{p}.mlp.up_proj.weight"), &[i, h]),
            ])?;
            Ok(Layer {
                input_norm: get(&format!("{p}.input_layernorm.weight"), &[h])?,
                qkv: Linear {
                    weight: qkv_weight,
                    bias: qkv_bias,
                },
                q_norm: values(get(&name("q_norm.weight"), &[d])?)?,
                k_norm: values(get(&name("k_norm.weight"), &[d])?)?,
                o: Linear {
                    weight: linear(&[(&name("o_proj.weight"), &[h, nh * d])])?,
                    bias: o_bias,
                },
                post_norm: get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate_up: Linear {
                    weight: gate_up,
                    bias: None,
                },
                down: Linear {
                    weight: linear(&[(&format!("{p}.mlp.down_proj.weight"), &[h, i])])?,
                    bias: None,
                },
            })
        };
        // Layers are read by a few threads (each widens its tensors into memory it faults in;
        // one thread does not saturate the page cache), while this thread reads the table, which
        // stays in the file's dtype (bfloat16: 311 MB instead of 622 MB in float32): only the
        // rows a batch uses are widened.
        let n_layers = cfg.num_hidden_layers;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_LOAD_THREADS.min(n_layers.max(1)));
        let mut slots: Vec<Option<Result<Layer>>> = (0..n_layers).map(|_| None).collect();
        let embed_tokens = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let load_layer = &load_layer;
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        for l in (t..n_layers).step_by(threads) {
                            let layer = load_layer(l);
                            let failed = layer.is_err();
                            done.push((l, layer));
                            if failed {
                                break;
                            }
                        }
                        done
                    })
                })
                .collect();
            let table =
                checkpoint.get_native("model.embed_tokens.weight", &[cfg.vocab_size, h], &why);
            for worker in workers {
                // A loading thread only panics on a bug; its layers then stay missing below.
                if let Ok(done) = worker.join() {
                    for (l, layer) in done {
                        slots[l] = Some(layer);
                    }
                }
            }
            table
        })?;
        let mut layers = Vec::with_capacity(n_layers);
        for (l, slot) in slots.into_iter().enumerate() {
            match slot {
                Some(layer) => layers.push(layer?),
                None => {
                    return Err(Error::Model {
                        path: checkpoint.first_path().to_path_buf(),
                        reason: format!("layer {l} was not loaded (its loading thread failed)"),
                    })
                }
            }
        }
        let norm = get("model.norm.weight", &[h])?;
        let rope = RopeTable::new(&cfg);
        Ok(Self {
            cfg,
            embed_tokens,
            layers,
            norm,
            rope,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &Qwen3Config {
        &self.cfg
    }

    /// Embeds one batch of token sequences (each non-empty and at most
    /// `max_position_embeddings` long): one L2-normalised `hidden_size` vector per sequence.
    ///
    /// After a batch of at least [`TRIM_AFTER_TOKENS`] padded tokens, the allocator is asked to
    /// give its freed activation memory back to the system, so the resident set returns to the
    /// weights between calls (about 0.1 GB after 8 × 64 tokens on Qwen3-0.6B).
    pub fn embed(&mut self, seqs: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let padded = seqs.len() * seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        // The whole pass on one of rayon's threads: its parallel loops then split their work
        // there, instead of each being handed to the pool and waited for from outside.
        let out = rayon::scope(|_| self.forward(seqs));
        if padded >= TRIM_AFTER_TOKENS {
            release_freed_memory();
        }
        out
    }

    fn forward(&mut self, seqs: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch = seqs.len();
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if batch == 0 || len == 0 {
            candle_core::bail!("empty batch or empty sequence");
        }
        let h = self.cfg.hidden_size;
        let eps = self.cfg.rms_norm_eps as f32;

        let pads: Vec<usize> = seqs.iter().map(|s| len - s.len()).collect();
        let mut ids = Vec::with_capacity(batch * len);
        for (seq, &pad) in seqs.iter().zip(&pads) {
            // Padding uses token 0 (at position 0); the mask hides it from the real tokens.
            ids.extend(std::iter::repeat_n(0u32, pad));
            ids.extend_from_slice(seq);
        }
        let ids = Tensor::from_vec(ids, batch * len, &Device::Cpu)?;
        self.rope.ensure(len);

        let shape = BatchShape { batch, len, pads };

        let mut x = self
            .embed_tokens
            .index_select(&ids, 0)?
            .to_dtype(DType::F32)?;
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            // Only the last token is pooled, so the last layer needs only the last query row.
            let first_row = if l == last { len - 1 } else { 0 };
            x = self.layer(layer, &x, &shape, first_row)?;
        }
        let x = rms_norm(&x, &self.norm, eps)?;
        debug_assert_eq!(x.dims(), &[batch, h]);
        let mut out = x.to_vec2::<f32>()?;
        for v in &mut out {
            // As torch.nn.functional.normalize: x / max(‖x‖, 1e-12).
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
        }
        Ok(out)
    }

    /// Splits the q/k/v projections `qkv` (`[batch × len, (nh + 2·nkv) · d]`) into heads: q
    /// (rows `first_row..len` only, RMS-normed, rotated and scaled by `1/√d`) as `[b, nh, tq, d]`, k
    /// (normed and rotated) transposed as `[b, nkv, d, key_row_len(len)]`, and v as
    /// `[b, nkv, len, d]`. A token's position counts from its sequence's first real token; padding
    /// sits at position 0.
    fn split_heads(
        &self,
        layer: &Layer,
        qkv: &Tensor,
        shape: &BatchShape,
        first_row: usize,
    ) -> candle_core::Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let cfg = &self.cfg;
        let (b, t) = (shape.batch, shape.len);
        let tq = t - first_row;
        let (nh, nkv, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let width = (nh + 2 * nkv) * d;
        let eps = cfg.rms_norm_eps as f32;
        let half = d / 2;
        let rope = &self.rope;
        let at = |seq: usize, i: usize| {
            let p = i.saturating_sub(shape.pads[seq]) * half;
            (&rope.cos[p..p + half], &rope.sin[p..p + half])
        };
        let scale = 1.0 / (d as f32).sqrt();
        with_values(qkv, |qkv| {
            let row =
                |seq: usize, i: usize, column: usize| &qkv[(seq * t + i) * width + column..][..d];
            let mut q = vec![0f32; b * nh * tq * d];
            q.par_chunks_mut(tq * d).enumerate().for_each(|(sh, out)| {
                let (seq, head) = (sh / nh, sh % nh);
                for (r, out) in out.chunks_exact_mut(d).enumerate() {
                    let i = first_row + r;
                    let (cos, sin) = at(seq, i);
                    let src = row(seq, i, head * d);
                    norm_rope(src, &layer.q_norm, eps, cos, sin, scale, out);
                }
            });
            let key_row = key_row_len(t);
            let mut k = vec![0f32; b * nkv * key_row * d];
            let mut v = vec![0f32; b * nkv * t * d];
            k.par_chunks_mut(key_row * d)
                .zip(v.par_chunks_mut(t * d))
                .enumerate()
                .for_each(|(sh, (k, v))| {
                    let (seq, head) = (sh / nkv, sh % nkv);
                    let mut key = vec![0f32; d];
                    for (i, v) in v.chunks_exact_mut(d).enumerate() {
                        let (cos, sin) = at(seq, i);
                        let src = row(seq, i, (nh + head) * d);
                        norm_rope(src, &layer.k_norm, eps, cos, sin, 1.0, &mut key);
                        for (c, &kc) in key.iter().enumerate() {
                            k[c * key_row + i] = kc;
                        }
                        v.copy_from_slice(row(seq, i, (nh + nkv + head) * d));
                    }
                });
            (q, k, v)
        })
    }

    /// One decoder layer on `x` (`[batch × len, hidden]`); returns the rows `first_row..len` of
    /// every sequence (`[batch × (len − first_row), hidden]`).
    fn layer(
        &self,
        layer: &Layer,
        x: &Tensor,
        shape: &BatchShape,
        first_row: usize,
    ) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t) = (shape.batch, shape.len);
        let tq = t - first_row;
        let (h, d, inter) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let eps = cfg.rms_norm_eps as f32;

        let normed = rms_norm(x, &layer.input_norm, eps)?;
        let qkv = layer.qkv.forward(&normed)?;

        let (q, k, v) = self.split_heads(layer, &qkv, shape, first_row)?;
        let heads = Heads {
            batch: b,
            len: t,
            first_row,
            pads: &shape.pads,
            heads: nh,
            kv_heads: nkv,
            head_dim: d,
        };
        let attn = attention(&heads, &q, &k, &v);
        let attn = Tensor::from_vec(attn, (b * tq, nh * d), &Device::Cpu)?;
        let attn = layer.o.forward(&attn)?;

        let residual = if first_row == 0 {
            x.clone()
        } else {
            x.reshape((b, t, h))?
                .narrow(1, first_row, tq)?
                .reshape((b * tq, h))?
        };
        let x = (residual + attn)?;

        let normed = rms_norm(&x, &layer.post_norm, eps)?;
        let gate_up = layer.gate_up.forward(&normed)?;
        let act = swiglu(&gate_up, inter)?;
        let mlp = layer.down.forward(&act)?;
        x + mlp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Qwen3Model {
        let dir = r2_fixtures::tiny_qwen3_dir();
        let cfg = Qwen3Config::from_file(&dir.join("config.json")).unwrap();
        let checkpoint = Checkpoint::open(&[dir.join("model.safetensors")]).unwrap();
        Qwen3Model::load(cfg, &checkpoint).unwrap()
    }

    fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn packed_and_dense_layers_give_the_same_vectors() {
        let dir = r2_fixtures::tiny_qwen3_dir();
        let cfg = Qwen3Config::from_file(&dir.join("config.json")).unwrap();
        let checkpoint = Checkpoint::open(&[dir.join("model.safetensors")]).unwrap();
        let mut packed = Qwen3Model::load_with(cfg.clone(), &checkpoint, true).unwrap();
        let mut dense = Qwen3Model::load_with(cfg, &checkpoint, false).unwrap();
        let seqs: Vec<Vec<u32>> = vec![(0..40).map(|i| 9 + 11 * i).collect(), vec![4, 5]];
        let batch: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let (a, b) = (packed.embed(&batch).unwrap(), dense.embed(&batch).unwrap());
        assert!(max_abs_diff(&a, &b) <= 1e-5, "{}", max_abs_diff(&a, &b));
    }

    /// The tiny fixture with every tensor rounded to `dtype`, written as `dtype` and as float32.
    fn rounded_copies(dtype: DType) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = r2_fixtures::tiny_qwen3_dir();
        let tensors =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let narrow: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(dtype).unwrap()))
            .collect();
        let wide: HashMap<String, Tensor> = narrow
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(DType::F32).unwrap()))
            .collect();
        let out = tempfile::tempdir().unwrap();
        let (narrow_path, wide_path) = (out.path().join("narrow.st"), out.path().join("wide.st"));
        candle_core::safetensors::save(&narrow, &narrow_path).unwrap();
        candle_core::safetensors::save(&wide, &wide_path).unwrap();
        (out, narrow_path, wide_path)
    }

    #[test]
    fn half_precision_weights_give_the_vectors_of_their_float32_values() {
        let dir = r2_fixtures::tiny_qwen3_dir();
        let cfg = Qwen3Config::from_file(&dir.join("config.json")).unwrap();
        let seqs: Vec<Vec<u32>> = vec![(0..20).map(|i| 5 + 7 * i).collect(), vec![1, 2, 3]];
        let batch: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        for dtype in [DType::BF16, DType::F16] {
            let (_keep, narrow, wide) = rounded_copies(dtype);
            let mut a =
                Qwen3Model::load(cfg.clone(), &Checkpoint::open(&[narrow]).unwrap()).unwrap();
            let mut b = Qwen3Model::load(cfg.clone(), &Checkpoint::open(&[wide]).unwrap()).unwrap();
            // The embedding table stays in the file's dtype; everything else is float32.
            assert_eq!(a.embed_tokens.dtype(), dtype);
            assert_eq!(b.embed_tokens.dtype(), DType::F32);
            let kinds = [&a, &b].map(|m| match &m.layers[0].qkv.weight {
                LinearWeight::Packed(w) => Some(w.is_bf16()),
                LinearWeight::Dense(w) => {
                    assert_eq!(w.dtype(), DType::F32);
                    None
                }
            });
            if kernel_available() {
                // bfloat16 layers stay bfloat16; float16 ones are widened.
                assert_eq!(kinds, [Some(dtype == DType::BF16), Some(false)]);
            } else {
                assert_eq!(kinds, [None, None]);
            }
            assert_eq!(
                a.embed(&batch).unwrap(),
                b.embed(&batch).unwrap(),
                "{dtype:?}"
            );
        }
    }

    #[test]
    fn broken_safetensors_files_are_errors() {
        let out = tempfile::tempdir().unwrap();
        let path = out.path().join("model.safetensors");
        let write = |header: &str, data: usize| {
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend(std::iter::repeat_n(0u8, data));
            std::fs::write(&path, bytes).unwrap();
        };
        let open = || {
            Checkpoint::open(std::slice::from_ref(&path))
                .err()
                .map(|e| e.to_string())
        };
        std::fs::write(&path, b"abc").unwrap();
        assert!(open().unwrap().contains("header length"));
        std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
        assert!(open().unwrap().contains("header length"));
        write("{not json", 0);
        assert!(open().unwrap().contains("not valid JSON"));
        // The data ends before the tensor does (a truncated file).
        write(
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
        );
        assert!(open().unwrap().contains("truncated"), "{:?}", open());
        // The byte range does not match the shape.
        write(
            r#"{"w":{"dtype":"BF16","shape":[4],"data_offsets":[0,16]}}"#,
            16,
        );
        assert!(open().unwrap().contains("do not hold"), "{:?}", open());
        write(
            r#"{"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#,
            16,
        );
        assert!(open().unwrap().contains("shape"), "{:?}", open());
        // A dtype the loader does not read is an error only when the tensor is needed.
        write(
            r#"{"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
            16,
        );
        let checkpoint = Checkpoint::open(std::slice::from_ref(&path)).unwrap();
        let e = checkpoint.get("w", &[2], "test").unwrap_err().to_string();
        assert!(e.contains("I64"), "{e}");
        let e = checkpoint.get("v", &[2], "test").unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        let e = checkpoint.get("w", &[3], "test").unwrap_err().to_string();
        assert!(e.contains("shape"), "{e}");
    }

    #[test]
    fn the_rotary_table_grows_on_demand() {
        let mut cfg = tiny().cfg;
        cfg.max_position_embeddings = 40_960;
        let mut rope = RopeTable::new(&cfg);
        assert_eq!(rope.len, INITIAL_ROPE_POSITIONS);
        rope.ensure(3000);
        assert_eq!(rope.len, 4096);
        rope.ensure(40_000);
        assert_eq!(rope.len, 40_960);
        let (p, i) = (39_999usize, 3usize);
        let cos = rope.cos[p * cfg.head_dim / 2 + i];
        let angle = p as f32 * rope.inv_freq[i];
        assert_eq!(cos, angle.cos());
        let expected = 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64);
        assert!((rope.inv_freq[i] as f64 - expected).abs() <= 1e-7 * expected);
    }
}
