//! r2's ridge against scikit-learn 1.7.2 `Ridge(alpha=10.0)` on the committed fixture
//! (`test_data/parity`, made by `tools/sklearn_parity_fixture.py`).

use std::path::{Path, PathBuf};

use r2_checkpoints::PoolConfig;
use r2_train::{LoadOptions, SplitFilter, TrainOptions};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/parity")
}

fn relative_error(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn coefficients_and_intercepts_match_scikit_learn() {
    let dir = fixture();
    let pool = PoolConfig::from_file(&dir.join("pool.json")).unwrap();
    let models: Vec<String> = pool.models.iter().map(|m| m.name.clone()).collect();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sklearn.json")).unwrap()).unwrap();
    let data = r2_train::load(
        &dir.join("records.jsonl"),
        &LoadOptions {
            models: &models,
            models_source: "pool.json",
            budgets: None,
            split: SplitFilter::Train,
            embeddings: Some(&dir.join("embeddings.jsonl")),
            dim: Some(pool.embedding_dim),
        },
    )
    .unwrap();
    assert_eq!(
        data.queries.len() as u64,
        expected["train_queries"].as_u64().unwrap()
    );
    assert_eq!(data.budgets, vec![50, 200]);
    let alpha = expected["alpha"].as_f64().unwrap();
    let trained = r2_train::train(
        data,
        &TrainOptions {
            alpha,
            threads: 2,
            embedding_model: None,
            source: None,
        },
    )
    .unwrap();
    let rows = 4;
    let mut worst: f64 = 0.0;
    let mut checked = 0;
    for (m, name) in models.iter().enumerate() {
        let heads = &expected["models"][name];
        for row in 0..rows {
            let head = m * rows + row;
            let want_coef = heads["coef"][row].as_array().unwrap();
            for (got, want) in trained.fit.coef_of(head).iter().zip(want_coef) {
                let e = relative_error(*got, want.as_f64().unwrap());
                worst = worst.max(e);
                assert!(e <= 1e-6, "{name} head {row}: coef {got} vs sklearn {want}");
                checked += 1;
            }
            let want_b = heads["intercept"][row].as_f64().unwrap();
            let got_b = trained.fit.intercept[head];
            let e = relative_error(got_b, want_b);
            worst = worst.max(e);
            assert!(
                e <= 1e-6,
                "{name} head {row}: intercept {got_b} vs sklearn {want_b}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * rows * 17);
    eprintln!("{checked} values, worst relative difference {worst:.2e}");
    // The stored float32 router holds the same heads, rounded.
    for (m, stored) in trained.file.models.iter().enumerate() {
        assert_eq!(stored.name, models[m]);
        for (i, &w) in stored.coef.iter().enumerate() {
            let want = trained.fit.coef[m * rows * 16 + i];
            assert_eq!(w, want as f32);
        }
    }
}
