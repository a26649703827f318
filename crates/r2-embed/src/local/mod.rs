//! [`LocalQwen3Embedder`]: Qwen3 run in-process on the CPU with candle (feature `local`).
//!
//! It computes what `vllm serve Qwen/Qwen3-0.6B --runner pooling` returns from `/v1/embeddings`,
//! following Hugging Face transformers' `Qwen3ForCausalLM` in float32:
//!
//! - **Tokens**: `tokenizer.encode(text, add_special_tokens = true)` with the tokenizer's own
//!   post-processor and no chat template, as vLLM's embeddings endpoint does. Nothing is truncated:
//!   a text longer than `max_position_embeddings` tokens is an [`Error::TooLong`] naming its
//!   index and length (vLLM also rejects it), and a text without tokens is [`Error::EmptyText`].
//! - **Network**: token embedding; per layer RMSNorm → attention (q/k/v projections, per-head
//!   RMSNorm of q and k before the rotary embedding, grouped-query attention, causal mask) →
//!   residual, RMSNorm → SwiGLU MLP → residual; final RMSNorm. Arithmetic is float32 throughout.
//!   On CPUs with AVX-512 the linear layers run on this crate's kernel, their weights packed once
//!   when loaded and kept in bfloat16 when the file has them so (widened in registers, exactly);
//!   each output sums its products in input order whatever the batch, so a text's products are
//!   bit-identical alone or in a batch. Elsewhere the weights are widened to float32 tensors for
//!   candle's matmul. There is no `lm_head`: logits are never computed.
//! - **Pooling**: the hidden state of the last token, L2-normalised.
//! - **Batching**: texts run as left-padded batches (forward passes of at most 32 texts and
//!   [`BatchOptions::max_batch_tokens`] tokens, padding included, similar lengths together).
//!   Positions start at 0 at each sequence's first real token and padding is masked, so a text's
//!   vector does not depend on the other texts of its batch (beyond float rounding, about 1e-6).
//! - **Concurrent calls** share forward passes, as in text-embeddings-inference's queue: calls
//!   that arrive while the model runs wait in a queue; when the model is free, the next batch
//!   takes the waiting calls in arrival order, each call whole, while the sum of their token
//!   counts (without padding) stays within [`BatchOptions::max_batch_tokens`] (the first call
//!   always goes in, however long), and runs their texts together as above. An idle model starts
//!   on a call at once, unless its last pass served several calls: then their callers' next calls
//!   are on their way, and it waits up to 3 ms for as many (within the token budget), so that the
//!   first to arrive does not run alone while the others wait a whole pass. The queue holds at most
//!   [`BatchOptions::max_queued`] texts; a call that would take it past that is refused at once
//!   with [`Error::Overloaded`] (a call when nothing waits is always accepted, however many texts
//!   it has). [`LocalQwen3Embedder::forward_passes`] counts the forward passes run.
//! - **Threads**: the model lives on a dedicated worker thread owned by the embedder; `embed`
//!   sends the texts there and awaits the answer, so it never blocks the tokio runtime; texts are
//!   tokenized on that thread as they arrive. A forward pass uses every core through rayon's
//!   thread pool (candle's too). A panic in a batch is reported to every call in it as [`Error::Worker`]; a call
//!   whose future was dropped is skipped (and a batch whose calls were all dropped stops early).
//!   Dropping the embedder ends the thread, after the batch in progress.
//! - **Memory**: each weight is read from the file straight into its final buffer (no memory
//!   map, no second copy); the embedding table stays in the file's dtype and only the rows of a
//!   batch are widened. Qwen3-0.6B in bfloat16 holds about 1.2 GB with the kernel (0.9 GB of
//!   bfloat16 layers and the 0.3 GB table; 2.1 GB with float32 layers elsewhere), which is also
//!   the peak. They are loaded once per embedder: share one
//!   embedder (it is `Send + Sync`, e.g. in an `Arc`) rather than loading it twice.
//!
//! [`LocalQwen3Embedder::from_hub`] downloads a model into the Hugging Face cache on first use
//! (honouring `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`); [`LocalQwen3Embedder::from_dir`] loads
//! one from a folder.

mod attention;
mod config;
mod files;
mod gemm;
mod hub;
mod model;
mod worker;

/// Deterministic values in ±1 with many distinct bit patterns (for the kernels' tests).
#[cfg(test)]
fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

use std::cmp::Reverse;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokenizers::Tokenizer;

use self::config::Qwen3Config;
use self::files::ModelFiles;
use self::model::{Checkpoint, Qwen3Model};
use self::worker::{Batcher, Limits, Worker};
use crate::{check_embeddings, check_texts, BatchOptions, Embedder, Error, Result};

/// At most this many texts run in one forward pass.
const MAX_BATCH_TEXTS: usize = 32;

/// The fixed cost of one forward pass in tokens, used to weigh padding against more passes: every
/// pass reads all the weights once, which costs about as much as computing this many tokens.
const BATCH_OVERHEAD_TOKENS: usize = 32;

/// Qwen3 (e.g. `Qwen/Qwen3-0.6B`) run in-process on the CPU: the embeddings of
/// `vllm serve … --runner pooling` (last token, L2-normalised).
///
/// See the [module documentation](self) for the exact semantics.
pub struct LocalQwen3Embedder {
    name: String,
    dim: usize,
    tokenizer: Arc<Tokenizer>,
    /// Forward passes run so far (shared with the worker thread).
    passes: Arc<AtomicU64>,
    worker: Worker<Engine>,
}

impl std::fmt::Debug for LocalQwen3Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalQwen3Embedder")
            .field("model", &self.name)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl LocalQwen3Embedder {
    /// Loads `config.json`, `model.safetensors` (or `model.safetensors.index.json` and its
    /// shards) and `tokenizer.json` from `dir`.
    ///
    /// This blocks while the weights are read (seconds for Qwen3-0.6B); in async code call it
    /// through `tokio::task::spawn_blocking`. A missing file, a config that is not a Qwen3 one or
    /// weights that do not match the config are [`Error::Model`] naming the file, and the field
    /// or tensor.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_dir_with(dir, BatchOptions::default())
    }

    /// [`from_dir`](Self::from_dir) with the batching of concurrent calls set by `batch`.
    pub fn from_dir_with(dir: &Path, batch: BatchOptions) -> Result<Self> {
        let files = ModelFiles::in_dir(dir)?;
        Self::load(files, dir.display().to_string(), batch)
    }

    /// Fetches `repo` (e.g. `Qwen/Qwen3-0.6B`) into the Hugging Face cache on first use, then
    /// loads it. [`model_name`](Embedder::model_name) is `repo`.
    ///
    /// The cache is `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub` or `~/.cache/huggingface/hub` (as Python's
    /// `huggingface_hub` chooses it); `HF_ENDPOINT` replaces `https://huggingface.co`;
    /// with `HF_HUB_OFFLINE=1` only the cache is used. Cached files are never downloaded again.
    /// When `progress` is true, downloads show a progress bar on stderr. Errors are
    /// [`Error::Download`] naming the file and saying what to do, or those of
    /// [`from_dir`](Self::from_dir).
    pub async fn from_hub(repo: &str, progress: bool) -> Result<Self> {
        Self::from_hub_with(repo, progress, BatchOptions::default()).await
    }

    /// [`from_hub`](Self::from_hub) with the batching of concurrent calls set by `batch`.
    pub async fn from_hub_with(repo: &str, progress: bool, batch: BatchOptions) -> Result<Self> {
        let files = hub::fetch(repo, progress).await?;
        let name = repo.to_owned();
        tokio::task::spawn_blocking(move || Self::load(files, name, batch))
            .await
            .map_err(|e| Error::Worker(format!("loading the model failed: {e}")))?
    }

    /// The token ids the model sees for `text` (no padding, no truncation; empty for `""`).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        tokenize(&self.tokenizer, text).map_err(Error::Tokenizer)
    }

    /// Forward passes run so far by this embedder (each over one batch of texts), e.g. to see
    /// that concurrent calls shared them.
    pub fn forward_passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    fn load(files: ModelFiles, name: String, batch: BatchOptions) -> Result<Self> {
        let cfg = Qwen3Config::from_file(&files.config)?;
        let tokenizer = Arc::new(load_tokenizer(&files.tokenizer, &cfg)?);
        let checkpoint = Checkpoint::open(&files.weights)?;
        let model = Qwen3Model::load(cfg, &checkpoint)?;
        // The files are no longer needed once every tensor has been read.
        drop(checkpoint);

        let dim = model.config().hidden_size;
        let passes = Arc::new(AtomicU64::new(0));
        let engine = Engine {
            model,
            tokenizer: tokenizer.clone(),
            weights: files.weights[0].clone(),
            max_batch_tokens: batch.max_batch_tokens,
            passes: passes.clone(),
        };
        let limits = Limits {
            max_batch_cost: batch.max_batch_tokens,
            max_queued: batch.max_queued,
            gather_wait: worker::GATHER_WAIT,
        };
        let worker = Worker::spawn("r2-embed-qwen3", engine, limits)?;
        Ok(Self {
            name,
            dim,
            tokenizer,
            passes,
            worker,
        })
    }
}

#[async_trait::async_trait]
impl Embedder for LocalQwen3Embedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        check_texts(texts)?;
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let embeddings = self.worker.call(texts.to_vec(), texts.len()).await?;
        check_embeddings(&self.name, &embeddings, self.dim)?;
        Ok(embeddings)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn model_name(&self) -> &str {
        &self.name
    }
}

/// What the worker thread owns.
struct Engine {
    model: Qwen3Model,
    tokenizer: Arc<Tokenizer>,
    /// The (first) weights file, named in errors of the forward pass.
    weights: PathBuf,
    /// Tokens, padding included, per forward pass at most (unless one text is longer).
    max_batch_tokens: usize,
    passes: Arc<AtomicU64>,
}

impl Batcher for Engine {
    type Request = Vec<String>;
    /// The token ids of each text of a call.
    type Ready = Vec<Vec<u32>>;
    type Response = Vec<Vec<f32>>;

    fn prepare(&mut self, texts: Vec<String>) -> Result<Vec<Vec<u32>>> {
        self.tokenize(&texts)
    }

    fn cost(&self, seqs: &Vec<Vec<u32>>) -> usize {
        seqs.iter().map(Vec::len).sum()
    }

    fn run(
        &mut self,
        calls: &[&Vec<Vec<u32>>],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let seqs: Vec<&[u32]> = calls
            .iter()
            .flat_map(|c| c.iter())
            .map(Vec::as_slice)
            .collect();
        let mut vectors = self.embed(&seqs, cancelled)?.into_iter();
        Ok(calls
            .iter()
            .map(|c| vectors.by_ref().take(c.len()).collect())
            .collect())
    }
}

impl Engine {
    /// The token ids of `texts`, each non-empty and within the model's length.
    fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let max_tokens = self.model.config().max_position_embeddings;
        let mut seqs = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let ids = tokenize(&self.tokenizer, text)
                .map_err(|e| Error::Tokenizer(format!("text {index}: {e}")))?;
            if ids.is_empty() {
                return Err(Error::EmptyText { index });
            }
            if ids.len() > max_tokens {
                return Err(Error::TooLong {
                    index,
                    tokens: ids.len(),
                    max: max_tokens,
                });
            }
            seqs.push(ids);
        }
        Ok(seqs)
    }

    /// One vector per sequence, in order, from forward passes of similar lengths.
    fn embed(&mut self, seqs: &[&[u32]], cancelled: &dyn Fn() -> bool) -> Result<Vec<Vec<f32>>> {
        // Longest first, then cut into sub-batches of similar lengths.
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| Reverse(seqs[i].len()));
        let lengths: Vec<usize> = order.iter().map(|&i| seqs[i].len()).collect();
        let mut out = vec![Vec::new(); seqs.len()];
        let mut rest = order.as_slice();
        for size in plan_batches(&lengths, self.max_batch_tokens) {
            if cancelled() {
                return Err(Error::Worker("the call was cancelled".to_owned()));
            }
            let (chunk, tail) = rest.split_at(size);
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| seqs[i]).collect();
            self.passes.fetch_add(1, Ordering::Relaxed);
            let vectors = self.model.embed(&batch).map_err(|e| Error::Model {
                path: self.weights.clone(),
                reason: format!("the forward pass failed: {e}"),
            })?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
            rest = tail;
        }
        Ok(out)
    }
}

/// Splits texts of `lengths` (sorted longest first) into consecutive sub-batches; returns their
/// sizes.
///
/// A sub-batch costs its padded size (texts × longest) plus [`BATCH_OVERHEAD_TOKENS`]; the split
/// with the least total cost is found by dynamic programming over the sorted lengths, within
/// [`MAX_BATCH_TEXTS`] and `max_tokens` (padded) per sub-batch.
fn plan_batches(lengths: &[usize], max_tokens: usize) -> Vec<usize> {
    let n = lengths.len();
    // best[k]: least cost of the first k texts, and the size of the last sub-batch.
    let mut best = vec![(0usize, 0usize); n + 1];
    for k in 1..=n {
        best[k] = (usize::MAX, 0);
        for size in 1..=k.min(MAX_BATCH_TEXTS) {
            let padded = size * lengths[k - size];
            if size > 1 && padded > max_tokens {
                break;
            }
            let cost = best[k - size].0 + padded + BATCH_OVERHEAD_TOKENS;
            if cost < best[k].0 {
                best[k] = (cost, size);
            }
        }
    }
    let mut sizes = Vec::new();
    let mut k = n;
    while k > 0 {
        sizes.push(best[k].1);
        k -= best[k].1;
    }
    sizes.reverse();
    sizes
}

/// The ids of `text` with the tokenizer's special tokens (its post-processor), as vLLM encodes.
fn tokenize(tokenizer: &Tokenizer, text: &str) -> std::result::Result<Vec<u32>, String> {
    tokenizer
        .encode(text, true)
        .map(|enc| enc.get_ids().to_vec())
        .map_err(|e| e.to_string())
}

/// Reads `tokenizer.json`, turns off any truncation or padding it configures, and checks that its
/// ids fit the model's vocabulary.
fn load_tokenizer(path: &Path, cfg: &Qwen3Config) -> Result<Tokenizer> {
    let fail = |reason: String| Error::Model {
        path: path.to_path_buf(),
        reason,
    };
    let mut tokenizer =
        Tokenizer::from_file(path).map_err(|e| fail(format!("not a valid tokenizer: {e}")))?;
    tokenizer
        .with_truncation(None)
        .map_err(|e| fail(format!("cannot turn off truncation: {e}")))?;
    tokenizer.with_padding(None);
    if let Some(max_id) = tokenizer.get_vocab(true).values().max() {
        if *max_id as usize >= cfg.vocab_size {
            return Err(fail(format!(
                "the tokenizer has token id {max_id}, but the model's vocab_size is {}",
                cfg.vocab_size
            )));
        }
    }
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_MAX_BATCH_TOKENS;

    fn plan_batches_default(lengths: &[usize]) -> Vec<usize> {
        plan_batches(lengths, DEFAULT_MAX_BATCH_TOKENS)
    }

    #[test]
    fn batches_group_similar_lengths() {
        assert_eq!(plan_batches_default(&[]), Vec::<usize>::new());
        assert_eq!(plan_batches_default(&[5]), vec![1]);
        // One long text does not pad eleven short ones to its length.
        let mut lengths = vec![361];
        lengths.extend([27, 13, 12, 11, 10, 9, 8, 8, 7, 1, 1]);
        let sizes = plan_batches_default(&lengths);
        assert_eq!(sizes[0], 1, "{sizes:?}");
        assert!(sizes.len() <= 3, "{sizes:?}");
        // Equal lengths fill sub-batches of at most 32 texts.
        let sizes = plan_batches_default(&[10; 70]);
        assert_eq!(sizes.len(), 3, "{sizes:?}");
        assert!(sizes.iter().all(|&s| s <= MAX_BATCH_TEXTS), "{sizes:?}");
        // Long texts respect the token budget; a text beyond it runs alone.
        let sizes = plan_batches_default(&[9000, 4000, 4000, 4000]);
        assert_eq!((sizes[0], sizes.len()), (1, 3), "{sizes:?}");
        let sizes = plan_batches_default(&[3000; 10]);
        assert!(
            sizes.iter().all(|&s| s * 3000 <= DEFAULT_MAX_BATCH_TOKENS),
            "{sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), 10);
    }
}
