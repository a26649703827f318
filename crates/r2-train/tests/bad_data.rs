//! Bad training data is an error naming the file and the line.

use std::path::{Path, PathBuf};

use r2_train::{LoadOptions, SplitFilter};

const MODELS: [&str; 2] = ["m1", "m2"];

/// Three queries × two models × budgets 10, 20 and unlimited; 2-d embeddings inline on the first
/// record of each query. Line numbers start at 1.
fn good_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for q in 0..3 {
        for m in MODELS {
            for b in ["10", "20", "\"unlimited\""] {
                let embedding = if lines.len() % 6 == 0 {
                    format!(",\"embedding\":[{}.5,-1.0]", q)
                } else {
                    String::new()
                };
                lines.push(format!(
                    "{{\"query_id\":\"q{q}\",\"model\":\"{m}\",\"budget\":{b},\"score\":0.5,\"output_tokens\":7{embedding}}}"
                ));
            }
        }
    }
    lines
}

fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn load(path: &Path, embeddings: Option<&Path>) -> Result<r2_train::Dataset, String> {
    let models: Vec<String> = MODELS.iter().map(|m| m.to_string()).collect();
    r2_train::load(
        path,
        &LoadOptions {
            models: &models,
            models_source: "pool.json",
            budgets: None,
            split: SplitFilter::Train,
            embeddings,
            dim: None,
        },
    )
    .map_err(|e| e.to_string())
}

/// The error of loading the good data with line `line` (1-based) replaced.
fn error_with(line: usize, text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = good_lines();
    lines[line - 1] = text.to_owned();
    let path = write(dir.path(), "data.jsonl", &lines);
    let err = load(&path, None).expect_err("bad data must not load");
    assert!(err.contains("data.jsonl"), "{err}");
    err
}

#[test]
fn good_data_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "data.jsonl", &good_lines());
    let data = load(&path, None).unwrap();
    assert_eq!(data.queries.len(), 3);
    assert_eq!(data.budgets, vec![10, 20]);
    assert_eq!(data.dim, 2);
    assert_eq!(data.embedding(2), &[2.5, -1.0]);
    assert_eq!(data.queries[1].line, 7);
    assert_eq!(
        data.queries[1].input_tokens,
        r2_train::data::DEFAULT_INPUT_TOKENS
    );
}

#[test]
fn missing_field() {
    let err = error_with(
        2,
        r#"{"query_id":"q0","model":"m1","budget":20,"score":0.5}"#,
    );
    assert!(
        err.contains("line 2") && err.contains("missing field `output_tokens`"),
        "{err}"
    );
}

#[test]
fn nan_and_out_of_range_values() {
    let err = error_with(
        3,
        r#"{"query_id":"q0","model":"m1","budget":"unlimited","score":NaN,"output_tokens":7}"#,
    );
    assert!(err.contains("line 3") && err.contains("NaN"), "{err}");
    let err = error_with(
        3,
        r#"{"query_id":"q0","model":"m1","budget":"unlimited","score":1.5,"output_tokens":7}"#,
    );
    assert!(err.contains("line 3") && err.contains("[0, 1]"), "{err}");
    let err = error_with(
        3,
        r#"{"query_id":"q0","model":"m1","budget":"unlimited","score":0.5,"output_tokens":-1}"#,
    );
    assert!(
        err.contains("line 3") && err.contains("output_tokens"),
        "{err}"
    );
    let err = error_with(
        1,
        r#"{"query_id":"q0","model":"m1","budget":10,"score":0.5,"output_tokens":7,"embedding":[NaN,1]}"#,
    );
    assert!(err.contains("line 1") && err.contains("NaN"), "{err}");
    let err = error_with(
        2,
        r#"{"query_id":"q0","model":"m1","budget":0,"score":0.5,"output_tokens":7}"#,
    );
    assert!(
        err.contains("line 2") && err.contains("number of tokens"),
        "{err}"
    );
}

#[test]
fn unknown_model() {
    let err = error_with(
        5,
        r#"{"query_id":"q0","model":"gpt-9","budget":20,"score":0.5,"output_tokens":7}"#,
    );
    assert!(
        err.contains("line 5") && err.contains("unknown model `gpt-9`") && err.contains("m1, m2"),
        "{err}"
    );
}

#[test]
fn mixed_dimensions() {
    let err = error_with(
        7,
        r#"{"query_id":"q1","model":"m1","budget":10,"score":0.5,"output_tokens":7,"embedding":[1,2,3]}"#,
    );
    assert!(
        err.contains("line 7") && err.contains("mixed dimensions") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn missing_label_names_the_query_model_and_budget() {
    // Query q1's record for m2 at budget 20 (line 11) becomes a duplicate of line 10's budget.
    let err = error_with(
        11,
        r#"{"query_id":"q1","model":"m2","budget":10,"score":0.5,"output_tokens":7}"#,
    );
    assert!(
        err.contains("line 11") && err.contains("second record"),
        "{err}"
    );
    // Drop it instead.
    let dir = tempfile::tempdir().unwrap();
    let mut lines = good_lines();
    lines[10] = String::new();
    let path = write(dir.path(), "data.jsonl", &lines);
    let err = load(&path, None).unwrap_err();
    assert!(
        err.contains("line 7")
            && err.contains("query `q1`")
            && err.contains("model `m2` at budget 20"),
        "{err}"
    );
}

#[test]
fn inconsistent_split_and_missing_embedding() {
    let err = error_with(
        8,
        r#"{"query_id":"q1","model":"m1","budget":20,"score":0.5,"output_tokens":7,"split":"test"}"#,
    );
    assert!(err.contains("line 8") && err.contains("split"), "{err}");
    let err = error_with(
        13,
        r#"{"query_id":"q2","model":"m1","budget":10,"score":0.5,"output_tokens":7}"#,
    );
    assert!(
        err.contains("line 13") && err.contains("no embedding"),
        "{err}"
    );
}

#[test]
fn embeddings_file_errors_name_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = good_lines();
    // q2's embedding moves to the embeddings file.
    lines[12] =
        r#"{"query_id":"q2","model":"m1","budget":10,"score":0.5,"output_tokens":7}"#.into();
    let data = write(dir.path(), "data.jsonl", &lines);
    let good = write(
        dir.path(),
        "emb.jsonl",
        &[r#"{"id":"q2","embedding":[2.5,-1.0],"input_tokens":40}"#.into()],
    );
    let loaded = load(&data, Some(&good)).unwrap();
    assert_eq!(loaded.embedding(2), &[2.5, -1.0]);
    assert_eq!(loaded.queries[2].input_tokens, 40);
    for (line, text, what) in [
        (r#"{"embedding":[1.0,2.0]}"#, 1, "query_id"),
        (r#"{"id":"q2","embedding":[1.0]}"#, 1, "mixed dimensions"),
    ]
    .map(|(t, l, w)| (l, t, w))
    {
        let bad = write(dir.path(), "bad.jsonl", &[text.to_owned()]);
        let err = load(&data, Some(&bad)).unwrap_err();
        assert!(
            err.contains("bad.jsonl")
                && err.contains(&format!("line {line}"))
                && err.contains(what),
            "{err}"
        );
    }
}

#[test]
fn a_byte_order_mark_at_the_start_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = good_lines();
    let plain = load(&write(dir.path(), "plain.jsonl", &lines), None).unwrap();
    lines[0] = format!("\u{feff}{}", lines[0]);
    let marked = load(&write(dir.path(), "bom.jsonl", &lines), None).unwrap();
    assert_eq!(marked.queries, plain.queries);
    assert_eq!(marked.scores, plain.scores);
    // Anywhere else it is still an error, named with its line.
    lines[0] = lines[0].trim_start_matches('\u{feff}').to_owned();
    lines[3] = format!("\u{feff}{}", lines[3]);
    let err = load(&write(dir.path(), "bad.jsonl", &lines), None).unwrap_err();
    assert!(err.contains("line 4"), "{err}");
}
