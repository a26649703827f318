//! Parity of the in-process Qwen3 embedder with Hugging Face transformers on the tiny fixture
//! (`shared/fixtures/tiny-qwen3`), and its error paths.

#![cfg(feature = "local")]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use r2_embed::{Embedder, Error, LocalQwen3Embedder};
use serde_json::Value;

/// One case of `reference.json`.
struct Case {
    text: String,
    ids: Vec<u32>,
    /// `None` for the empty text.
    embedding: Option<Vec<f32>>,
}

fn cases() -> Vec<Case> {
    let path = r2_fixtures::tiny_qwen3_dir().join("reference.json");
    let text = std::fs::read_to_string(&path).expect("reference.json is readable");
    let json: Value = serde_json::from_str(&text).expect("reference.json is JSON");
    assert_eq!(json["pooling"], "last");
    assert_eq!(json["normalize"], true);
    json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_owned(),
            ids: c["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect(),
            embedding: c["embedding"].as_array().map(|e| {
                e.iter()
                    .map(|v| v.as_f64().expect("value") as f32)
                    .collect()
            }),
        })
        .collect()
}

/// The cases with an embedding (every text but the empty one).
fn non_empty() -> Vec<(String, Vec<f32>)> {
    cases()
        .into_iter()
        .filter_map(|c| c.embedding.map(|e| (c.text, e)))
        .collect()
}

/// One embedder for the whole test binary, used from the runtimes of several tests.
fn embedder() -> &'static LocalQwen3Embedder {
    static EMBEDDER: OnceLock<LocalQwen3Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        LocalQwen3Embedder::from_dir(&r2_fixtures::tiny_qwen3_dir()).expect("the fixture loads")
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn norm(a: &[f32]) -> f64 {
    a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// A copy of the fixture in a temporary folder, to be altered by a test.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(
            r2_fixtures::tiny_qwen3_dir().join(name),
            dir.path().join(name),
        )
        .unwrap();
    }
    dir
}

/// The tensors of a safetensors file: (name, dtype, shape, bytes), in file order.
type RawTensor = (String, String, Vec<u64>, Vec<u8>);

fn read_safetensors(path: &Path) -> Vec<RawTensor> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut tensors: Vec<(u64, RawTensor)> = header
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(name, info)| {
            let offsets: Vec<u64> = info["data_offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let shape = info["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let raw = data[offsets[0] as usize..offsets[1] as usize].to_vec();
            let dtype = info["dtype"].as_str().unwrap().to_owned();
            (offsets[0], (name.clone(), dtype, shape, raw))
        })
        .collect();
    tensors.sort_by_key(|(offset, _)| *offset);
    tensors.into_iter().map(|(_, t)| t).collect()
}

fn write_safetensors(path: &Path, tensors: &[RawTensor]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, raw) in tensors {
        let start = data.len();
        data.extend_from_slice(raw);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).unwrap();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

fn expect_model_error(result: Result<LocalQwen3Embedder, Error>) -> (PathBuf, String) {
    match result {
        Err(Error::Model { path, reason }) => (path, reason),
        Err(other) => panic!("expected Error::Model, got {other:?}"),
        Ok(_) => panic!("expected Error::Model, got an embedder"),
    }
}

#[test]
fn token_ids_match_reference() {
    let e = embedder();
    for case in cases() {
        assert_eq!(
            e.token_ids(&case.text).unwrap(),
            case.ids,
            "token ids of {:?}",
            case.text
        );
    }
}

#[test]
fn dim_and_model_name() {
    let e = embedder();
    assert_eq!(e.dim(), 64);
    assert_eq!(
        e.model_name(),
        r2_fixtures::tiny_qwen3_dir().display().to_string()
    );
}

#[tokio::test]
async fn embeddings_match_reference_one_text_per_call() {
    let e = embedder();
    let mut worst_cos = f64::INFINITY;
    let mut worst_abs = 0f32;
    for (text, reference) in non_empty() {
        let got = e.embed(std::slice::from_ref(&text)).await.unwrap();
        assert_eq!(got.len(), 1);
        let cos = cosine(&got[0], &reference);
        let abs = max_abs_diff(&got[0], &reference);
        assert!(cos >= 0.99999, "cosine {cos} for {text:?}");
        assert!(abs <= 1e-4, "max abs difference {abs} for {text:?}");
        assert!(
            (norm(&got[0]) - 1.0).abs() < 1e-5,
            "not unit norm: {text:?}"
        );
        worst_cos = worst_cos.min(cos);
        worst_abs = worst_abs.max(abs);
    }
    eprintln!(
        "parity vs transformers: worst cosine {worst_cos:.12} (1 - cos = {:e}), max abs diff \
         {worst_abs:e}",
        1.0 - worst_cos
    );
}

#[tokio::test]
async fn one_batch_equals_one_text_at_a_time() {
    let e = embedder();
    let cases = non_empty();
    assert_eq!(cases.len(), 12);
    let texts: Vec<String> = cases.iter().map(|(t, _)| t.clone()).collect();
    let batch = e.embed(&texts).await.unwrap();
    assert_eq!(batch.len(), texts.len());
    let mut worst = 0f32;
    for (i, text) in texts.iter().enumerate() {
        let single = e.embed(std::slice::from_ref(text)).await.unwrap();
        let diff = max_abs_diff(&batch[i], &single[0]);
        assert!(
            diff <= 1e-5,
            "batch vs single differ by {diff} for {text:?}"
        );
        worst = worst.max(diff);
        assert!(cosine(&batch[i], &cases[i].1) >= 0.99999);
        assert!(max_abs_diff(&batch[i], &cases[i].1) <= 1e-4);
        assert!((norm(&batch[i]) - 1.0).abs() < 1e-5);
    }
    eprintln!("batch of 12 vs one text at a time: max abs diff {worst:e}");

    // Reversed order and a duplicate: every vector goes back to its own text.
    let mut shuffled: Vec<String> = texts.iter().rev().cloned().collect();
    shuffled.push(texts[0].clone());
    let again = e.embed(&shuffled).await.unwrap();
    for (i, v) in again.iter().enumerate() {
        let j = if i == texts.len() {
            0
        } else {
            texts.len() - 1 - i
        };
        assert!(max_abs_diff(v, &batch[j]) <= 1e-5);
    }
}

#[tokio::test]
async fn empty_text_is_rejected_with_its_index() {
    let e = embedder();
    let empty = cases()
        .into_iter()
        .find(|c| c.text.is_empty())
        .expect("the reference has an empty text");
    assert!(empty.ids.is_empty() && empty.embedding.is_none());
    assert_eq!(e.token_ids("").unwrap(), Vec::<u32>::new());

    match e.embed(&[String::new()]).await {
        Err(Error::EmptyText { index: 0 }) => {}
        other => panic!("expected EmptyText {{ index: 0 }}, got {other:?}"),
    }
    let texts = vec![
        "a".to_owned(),
        "b c".to_owned(),
        String::new(),
        "d".to_owned(),
    ];
    match e.embed(&texts).await {
        Err(Error::EmptyText { index: 2 }) => {}
        other => panic!("expected EmptyText {{ index: 2 }}, got {other:?}"),
    }
    // The embedder still works afterwards, and no texts means no vectors.
    assert_eq!(e.embed(&texts[..2]).await.unwrap().len(), 2);
    assert!(e.embed(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn too_long_text_is_an_error_naming_index_and_token_count() {
    let e = embedder();
    let long = "Hello, world! ".repeat(80);
    let n = e.token_ids(&long).unwrap().len();
    assert!(n > 512, "{n} tokens");
    let texts = vec!["short".to_owned(), long];
    let err = e.embed(&texts).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::TooLong { index: 1, tokens, max: 512 } if tokens == n),
        "{err:?}"
    );
    assert!(
        msg.contains("text 1") && msg.contains(&n.to_string()) && msg.contains("512"),
        "{msg}"
    );
}

#[tokio::test]
async fn concurrent_calls_from_several_tasks() {
    let e: Arc<dyn Embedder> = Arc::new(
        LocalQwen3Embedder::from_dir(&r2_fixtures::tiny_qwen3_dir()).expect("the fixture loads"),
    );
    let cases = non_empty();
    let mut tasks = Vec::new();
    for round in 0..3 {
        for (i, (text, reference)) in cases.iter().enumerate() {
            let e = e.clone();
            let (text, reference) = (text.clone(), reference.clone());
            // Some tasks send one text, some a pair, so that calls of different shapes interleave.
            let texts = if (i + round) % 2 == 0 {
                vec![text]
            } else {
                vec![text.clone(), text]
            };
            tasks.push(tokio::spawn(async move {
                let got = e.embed(&texts).await.unwrap();
                for v in got {
                    assert!(max_abs_diff(&v, &reference) <= 1e-4);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn concurrent_calls_from_a_multi_threaded_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let cases = non_empty();
    rt.block_on(async {
        let handles: Vec<_> = cases
            .iter()
            .cloned()
            .map(|(text, reference)| {
                tokio::spawn(async move {
                    let got = embedder().embed(&[text]).await.unwrap();
                    assert!(max_abs_diff(&got[0], &reference) <= 1e-4);
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    });
}

#[test]
fn from_dir_on_an_empty_folder_names_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reason) = expect_model_error(LocalQwen3Embedder::from_dir(dir.path()));
    assert_eq!(path, dir.path().join("config.json"));
    assert!(
        reason.contains("tokenizer.json") && reason.contains("model.safetensors"),
        "the message says what the folder must hold: {reason}"
    );
}

#[test]
fn missing_tokenizer_or_weights_are_named() {
    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let (path, _) = expect_model_error(LocalQwen3Embedder::from_dir(dir.path()));
    assert_eq!(path, dir.path().join("tokenizer.json"));

    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let (path, reason) = expect_model_error(LocalQwen3Embedder::from_dir(dir.path()));
    assert_eq!(path, dir.path().join("model.safetensors"));
    assert!(reason.contains("model.safetensors.index.json"), "{reason}");
}

#[test]
fn wrong_hidden_size_names_the_tensor() {
    let dir = fixture_copy();
    let config_path = dir.path().join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["hidden_size"] = 32.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let (path, reason) = expect_model_error(LocalQwen3Embedder::from_dir(dir.path()));
    assert_eq!(path, dir.path().join("model.safetensors"));
    assert!(
        reason.contains("model.embed_tokens.weight")
            && reason.contains("[512, 64]")
            && reason.contains("[512, 32]")
            && reason.contains("hidden_size 32"),
        "{reason}"
    );
}

#[test]
fn bad_config_values_name_the_field() {
    let dir = fixture_copy();
    let config_path = dir.path().join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["num_key_value_heads"] = 3.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let (path, reason) = expect_model_error(LocalQwen3Embedder::from_dir(dir.path()));
    assert_eq!(path, config_path);
    assert!(reason.contains("num_key_value_heads"), "{reason}");

    std::fs::write(&config_path, "{ not json").unwrap();
    let (path, _) = expect_model_error(LocalQwen3Embedder::from_dir(dir.path()));
    assert_eq!(path, config_path);
}

#[test]
fn missing_tensor_is_named() {
    let dir = fixture_copy();
    let weights = dir.path().join("model.safetensors");
    let tensors: Vec<RawTensor> = read_safetensors(&weights)
        .into_iter()
        .filter(|t| t.0 != "model.layers.1.self_attn.k_norm.weight")
        .collect();
    write_safetensors(&weights, &tensors);
    let (path, reason) = expect_model_error(LocalQwen3Embedder::from_dir(dir.path()));
    assert_eq!(path, weights);
    assert!(
        reason.contains("model.layers.1.self_attn.k_norm.weight"),
        "{reason}"
    );
}

#[tokio::test]
async fn sharded_checkpoint_gives_the_same_vectors() {
    let dir = fixture_copy();
    let single = dir.path().join("model.safetensors");
    let tensors = read_safetensors(&single);
    std::fs::remove_file(&single).unwrap();
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write_safetensors(&dir.path().join(names[0]), first);
    write_safetensors(&dir.path().join(names[1]), second);
    let mut map = serde_json::Map::new();
    for (part, name) in [(first, names[0]), (second, names[1])] {
        for t in part {
            map.insert(t.0.clone(), name.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let sharded = LocalQwen3Embedder::from_dir(dir.path()).unwrap();
    let texts: Vec<String> = non_empty().into_iter().map(|(t, _)| t).collect();
    let a = sharded.embed(&texts).await.unwrap();
    let b = embedder().embed(&texts).await.unwrap();
    assert_eq!(a, b);
}

#[tokio::test]
async fn bf16_weights_are_upcast() {
    let dir = fixture_copy();
    let weights = dir.path().join("model.safetensors");
    let tensors: Vec<RawTensor> = read_safetensors(&weights)
        .into_iter()
        .map(|(name, dtype, shape, raw)| {
            assert_eq!(dtype, "F32");
            // Round to nearest even, as torch does when casting to bfloat16.
            let raw = raw
                .chunks_exact(4)
                .flat_map(|b| {
                    let bits = u32::from_le_bytes(b.try_into().unwrap());
                    let rounded = bits + 0x7fff + ((bits >> 16) & 1);
                    ((rounded >> 16) as u16).to_le_bytes()
                })
                .collect();
            (name, "BF16".to_owned(), shape, raw)
        })
        .collect();
    write_safetensors(&weights, &tensors);
    let e = LocalQwen3Embedder::from_dir(dir.path()).unwrap();
    let mut worst = f64::INFINITY;
    for (text, reference) in non_empty() {
        let got = e.embed(&[text]).await.unwrap();
        worst = worst.min(cosine(&got[0], &reference));
    }
    eprintln!("bf16 weights vs float32 reference: worst cosine {worst:.6}");
    assert!(worst >= 0.99, "worst cosine {worst}");
}

#[test]
fn embedder_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<LocalQwen3Embedder>();
    let e: Box<dyn Embedder> =
        Box::new(LocalQwen3Embedder::from_dir(&r2_fixtures::tiny_qwen3_dir()).unwrap());
    assert_eq!(e.dim(), 64);
    drop(e);
}
