//! Concurrent calls of the in-process embedder share forward passes (`BatchOptions`), on the tiny
//! Qwen3 fixture (`shared/fixtures/tiny-qwen3`): the vectors are those of each call alone, fewer
//! forward passes run than calls, a full queue refuses with `Error::Overloaded`, a call longer
//! than `max_batch_tokens` runs alone, and callers that give up or send bad texts harm no one.

#![cfg(feature = "local")]

use std::sync::Arc;

use r2_embed::{BatchOptions, Embedder, Error, LocalQwen3Embedder};
use serde_json::Value;

/// The texts of `reference.json` that have an embedding, with it.
fn references() -> Vec<(String, Vec<f32>)> {
    let path = r2_fixtures::tiny_qwen3_dir().join("reference.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            let embedding = c["embedding"].as_array()?;
            let text = c["text"].as_str().unwrap().to_owned();
            Some((
                text,
                embedding
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect(),
            ))
        })
        .collect()
}

fn embedder(batch: BatchOptions) -> Arc<LocalQwen3Embedder> {
    Arc::new(LocalQwen3Embedder::from_dir_with(&r2_fixtures::tiny_qwen3_dir(), batch).unwrap())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A call that keeps the model busy for a while (8 texts of 361 tokens), so that the calls made
/// right after it wait in the queue together.
fn blocker() -> Vec<String> {
    vec!["Hello, world! ".repeat(30); 8]
}

/// Each text's vector when it is embedded alone, one call at a time.
async fn alone(e: &LocalQwen3Embedder, texts: &[String]) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for t in texts {
        out.extend(e.embed(std::slice::from_ref(t)).await.unwrap());
    }
    out
}

type Call = tokio::task::JoinHandle<Result<Vec<Vec<f32>>, Error>>;

/// Spawns one call per element of `calls`; on the test's single-threaded runtime they all reach
/// the embedder's queue as soon as the test awaits.
fn spawn_calls(e: &Arc<LocalQwen3Embedder>, calls: Vec<Vec<String>>) -> Vec<Call> {
    calls
        .into_iter()
        .map(|texts| {
            let e = e.clone();
            tokio::spawn(async move { e.embed(&texts).await })
        })
        .collect()
}

#[tokio::test]
async fn concurrent_calls_get_their_own_vectors_in_fewer_forward_passes() {
    let e = embedder(BatchOptions::default());
    let refs = references();
    let texts: Vec<String> = refs.iter().map(|(t, _)| t.clone()).collect();
    let singles = alone(&e, &texts).await;
    for (v, (_, reference)) in singles.iter().zip(&refs) {
        assert!(max_abs_diff(v, reference) <= 1e-4);
    }

    // 36 calls of one or two texts, in several shapes, behind a long call.
    let mut calls = Vec::new();
    let mut expected = Vec::new();
    for round in 0..3 {
        for (i, text) in texts.iter().enumerate() {
            if (i + round) % 2 == 0 {
                calls.push(vec![text.clone()]);
                expected.push(vec![i]);
            } else {
                let j = (i + 5) % texts.len();
                calls.push(vec![text.clone(), texts[j].clone()]);
                expected.push(vec![i, j]);
            }
        }
    }
    let n_calls = calls.len();
    let before = e.forward_passes();
    let busy = spawn_calls(&e, vec![blocker()]);
    let tasks = spawn_calls(&e, calls);
    assert_eq!(
        busy.into_iter()
            .next()
            .unwrap()
            .await
            .unwrap()
            .unwrap()
            .len(),
        8
    );
    let mut worst = 0f32;
    for (task, want) in tasks.into_iter().zip(expected) {
        let got = task.await.unwrap().unwrap();
        assert_eq!(got.len(), want.len());
        for (v, &i) in got.iter().zip(&want) {
            let diff = max_abs_diff(v, &singles[i]);
            assert!(
                diff <= 1e-5,
                "batched vs alone differ by {diff} for {:?}",
                texts[i]
            );
            worst = worst.max(diff);
        }
    }
    let passes = e.forward_passes() - before;
    eprintln!(
        "{n_calls} concurrent calls + 1 long call: {passes} forward passes; max abs diff {worst:e}"
    );
    // The long call takes 1 pass (8 × 361 tokens, ≤ 8192); the 36 calls (60 texts of
    // at most 27 tokens) share a few more.
    assert!(
        passes < n_calls as u64 / 2,
        "{passes} forward passes for {n_calls} calls"
    );
}

#[tokio::test]
async fn a_full_queue_refuses_with_overloaded() {
    let e = embedder(BatchOptions {
        max_queued: 4,
        ..BatchOptions::default()
    });
    let refs = references();
    let busy = spawn_calls(&e, vec![blocker()]);
    let tasks = spawn_calls(&e, (0..10).map(|i| vec![refs[i].0.clone()]).collect());
    busy.into_iter().next().unwrap().await.unwrap().unwrap();
    let mut refused = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(got) => assert!(max_abs_diff(&got[0], &refs[i].1) <= 1e-4),
            Err(Error::Overloaded { queued, limit }) => {
                assert_eq!(limit, 4);
                assert!(queued > 0 && queued + 1 > limit, "queued {queued}");
                refused += 1;
            }
            Err(other) => panic!("expected Overloaded, got {other:?}"),
        }
    }
    // At most 4 texts wait behind the long call (none if it was still queued itself).
    assert!(refused >= 6, "{refused} of 10 refused");
    let class = r2_core::Classify::class(&Error::Overloaded {
        queued: 4,
        limit: 4,
    });
    assert_eq!(class, r2_core::ErrorClass::Overloaded);

    // Once the queue has drained, calls are accepted again; one call of more texts than the queue
    // holds runs when nothing waits.
    let texts: Vec<String> = refs.iter().map(|(t, _)| t.clone()).collect();
    let got = e.embed(&texts).await.unwrap();
    for (v, (_, reference)) in got.iter().zip(&refs) {
        assert!(max_abs_diff(v, reference) <= 1e-4);
    }
}

#[tokio::test]
async fn a_call_longer_than_max_batch_tokens_runs_alone() {
    let e = embedder(BatchOptions {
        max_batch_tokens: 16,
        ..BatchOptions::default()
    });
    let refs = references();
    let (long, long_ref) = refs
        .iter()
        .find(|(t, _)| e.token_ids(t).unwrap().len() > 16)
        .expect("a reference text of more than 16 tokens");
    let before = e.forward_passes();
    let got = e.embed(std::slice::from_ref(long)).await.unwrap();
    assert!(max_abs_diff(&got[0], long_ref) <= 1e-4);
    assert_eq!(e.forward_passes() - before, 1);

    // Behind a long call: the long text and two short calls whose tokens add up to more than 16
    // run in separate passes, and every call gets its own vectors.
    let short: Vec<&(String, Vec<f32>)> = refs
        .iter()
        .filter(|(t, _)| (9..=12).contains(&e.token_ids(t).unwrap().len()))
        .take(2)
        .collect();
    assert_eq!(short.len(), 2);
    let busy = spawn_calls(&e, vec![blocker()]);
    let before = e.forward_passes();
    let tasks = spawn_calls(
        &e,
        vec![
            vec![long.clone()],
            vec![short[0].0.clone()],
            vec![short[1].0.clone()],
        ],
    );
    busy.into_iter().next().unwrap().await.unwrap().unwrap();
    let wanted = [long_ref, &short[0].1, &short[1].1];
    for (task, reference) in tasks.into_iter().zip(wanted) {
        let got = task.await.unwrap().unwrap();
        assert!(max_abs_diff(&got[0], reference) <= 1e-4);
    }
    // 8 passes for the long call (16 tokens a pass: one text each) and one per call after it.
    assert_eq!(e.forward_passes() - before, 8 + 3);
}

#[tokio::test]
async fn dropped_and_failing_callers_do_not_harm_the_others() {
    let e = embedder(BatchOptions::default());
    let refs = references();
    let busy = spawn_calls(&e, vec![blocker()]);
    // Ten calls; a too-long text in one of them; five are given up while they wait.
    let mut calls: Vec<Vec<String>> = (0..10).map(|i| vec![refs[i].0.clone()]).collect();
    calls[3].push("Hello, world! ".repeat(80));
    let tasks = spawn_calls(&e, calls);
    tokio::task::yield_now().await;
    for task in tasks.iter().step_by(2) {
        task.abort();
    }
    busy.into_iter().next().unwrap().await.unwrap().unwrap();
    for (i, task) in tasks.into_iter().enumerate() {
        match (i % 2, i, task.await) {
            (0, _, Err(join)) => assert!(join.is_cancelled()),
            (0, _, Ok(_)) => {} // answered before the abort took effect
            (
                _,
                3,
                Ok(Err(Error::TooLong {
                    index: 1, max: 512, ..
                })),
            ) => {}
            (_, _, Ok(Ok(got))) if i != 3 => {
                assert!(max_abs_diff(&got[0], &refs[i].1) <= 1e-4)
            }
            (_, _, other) => panic!("call {i}: unexpected {other:?}"),
        }
    }
    // The embedder keeps serving.
    let got = e.embed(std::slice::from_ref(&refs[0].0)).await.unwrap();
    assert!(max_abs_diff(&got[0], &refs[0].1) <= 1e-4);
}
