//! Every layout of the same data loads into the same `Dataset`: JSONL, long CSV with renamed
//! columns, wide CSV files (one per model), long Parquet, and `.npy` embeddings with an ids file.
//! Bad tables and arrays are errors naming the file, the row and the column.

use std::path::{Path, PathBuf};

use r2_train::data::{Columns, DataSources, Dataset, LoadOptions, SplitFilter};
use r2_train::synth::{self, SynthConfig};
use serde_json::Value;

const BUDGETS: [u32; 3] = [50, 200, 800];

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    records: PathBuf,
    embeddings: PathBuf,
    models: Vec<String>,
    /// The records, parsed.
    rows: Vec<Value>,
    /// (id, input_tokens, embedding) of the embeddings file.
    vectors: Vec<(String, u64, Vec<f64>)>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let files = synth::write(
        &SynthConfig {
            queries: 40,
            models: 3,
            budgets: BUDGETS.to_vec(),
            dim: 8,
            test_fraction: 0.25,
            score_samples: 4,
            ..SynthConfig::default()
        },
        &path,
    )
    .unwrap();
    let models = synth::MODELS[..3]
        .iter()
        .map(|m| m.name.to_string())
        .collect();
    let rows = std::fs::read_to_string(&files.records)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let embeddings = files.embeddings.unwrap();
    let vectors = std::fs::read_to_string(&embeddings)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_owned(),
                v["input_tokens"].as_u64().unwrap(),
                v["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect(),
            )
        })
        .collect();
    Fixture {
        dir: path,
        _dir: dir,
        records: files.records,
        embeddings,
        models,
        rows,
        vectors,
    }
}

impl Fixture {
    fn load(
        &self,
        paths: &[PathBuf],
        columns: &[&str],
        file_models: &[(&str, &str)],
        embeddings: &Path,
        ids: Option<&Path>,
    ) -> Result<Dataset, String> {
        let sources = DataSources {
            paths: paths.to_vec(),
            columns: Columns::parse(columns)?,
            file_models: file_models
                .iter()
                .map(|(f, m)| (f.to_string(), m.to_string()))
                .collect(),
            embedding_ids: ids.map(Path::to_path_buf),
        };
        r2_train::data::load_sources(
            &sources,
            &LoadOptions {
                models: &self.models,
                models_source: "pool.json",
                budgets: None,
                split: SplitFilter::All,
                embeddings: Some(embeddings),
                dim: Some(8),
            },
        )
        .map_err(|e| e.to_string())
    }

    fn reference(&self) -> Dataset {
        self.load(
            std::slice::from_ref(&self.records),
            &[],
            &[],
            &self.embeddings,
            None,
        )
        .unwrap()
    }

    fn input_tokens(&self, id: &str) -> u64 {
        self.vectors.iter().find(|v| v.0 == id).unwrap().1
    }

    /// The records as a long CSV: renamed and reordered columns, an extra column, and
    /// `input_tokens` when `with_input_tokens`.
    fn long_csv(&self, name: &str, with_input_tokens: bool) -> PathBuf {
        let mut text =
            String::from("judge_score,prompts_id,notes,budget,model_name,output_tokens,split");
        if with_input_tokens {
            text.push_str(",input_tokens");
        }
        text.push('\n');
        for r in &self.rows {
            let id = r["query_id"].as_str().unwrap();
            let budget = match &r["budget"] {
                Value::String(s) => s.clone(),
                b => b.to_string(),
            };
            text.push_str(&format!(
                "{},{id},\"a note, quoted\",{budget},{},{},{}",
                r["score"],
                r["model"].as_str().unwrap(),
                r["output_tokens"],
                r["split"].as_str().unwrap_or("")
            ));
            if with_input_tokens {
                text.push_str(&format!(",{}", self.input_tokens(id)));
            }
            text.push('\n');
        }
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The records as wide CSV files in `folder`, one per model; the file of model `renamed.1`
    /// is named `renamed.0`.
    fn wide_csv(&self, folder: &str, renamed: (&str, &str)) -> PathBuf {
        let dir = self.dir.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        for model in &self.models {
            let mut header = vec!["query_id".to_owned(), "split".to_owned()];
            for b in BUDGETS
                .iter()
                .map(u32::to_string)
                .chain(["unlimited".into()])
            {
                header.push(format!("{b}_score"));
                header.push(format!("{b}_count"));
            }
            let mut text = header.join(",") + "\n";
            let mut ids: Vec<&str> = Vec::new();
            for r in &self.rows {
                let id = r["query_id"].as_str().unwrap();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            for id in ids {
                let mut cells = vec![id.to_owned()];
                let mut split = String::new();
                let mut values = Vec::new();
                for b in BUDGETS
                    .iter()
                    .map(|&b| Value::from(b))
                    .chain([Value::from("unlimited")])
                {
                    let r = self
                        .rows
                        .iter()
                        .find(|r| {
                            r["query_id"] == id && r["model"] == model.as_str() && r["budget"] == b
                        })
                        .unwrap();
                    split = r["split"].as_str().unwrap_or("").to_owned();
                    values.push(r["score"].to_string());
                    values.push(r["output_tokens"].to_string());
                }
                cells.push(split);
                cells.extend(values);
                text.push_str(&(cells.join(",") + "\n"));
            }
            let name = if model == renamed.1 { renamed.0 } else { model };
            std::fs::write(dir.join(format!("{name}.csv")), text).unwrap();
        }
        dir
    }

    /// The embeddings as a `.npy` array (float64, or float32) and an ids file (text, or JSONL).
    fn npy(&self, name: &str, double: bool, jsonl_ids: bool) -> (PathBuf, PathBuf) {
        let rows: Vec<Vec<f64>> = self.vectors.iter().map(|v| v.2.clone()).collect();
        let path = self.dir.join(format!("{name}.npy"));
        write_npy(
            &path,
            if double { "<f8" } else { "<f4" },
            &format!("({}, 8)", rows.len()),
            &data_bytes(&rows, double),
        );
        let ids = self.dir.join(format!("{name}.ids"));
        let text: String = self
            .vectors
            .iter()
            .map(|v| {
                if jsonl_ids {
                    format!("{{\"id\": \"{}\"}}\n", v.0)
                } else {
                    format!("{}\n", v.0)
                }
            })
            .collect();
        std::fs::write(&ids, text).unwrap();
        (path, ids)
    }
}

fn data_bytes(rows: &[Vec<f64>], double: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for v in rows.iter().flatten() {
        if double {
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            out.extend_from_slice(&(*v as f32).to_le_bytes());
        }
    }
    out
}

/// A version 1.0 `.npy` file, as numpy.save writes it (header padded to 64 bytes).
fn write_npy(path: &Path, descr: &str, shape: &str, data: &[u8]) {
    write_npy_header(
        path,
        &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"),
        data,
    );
}

fn write_npy_header(path: &Path, dict: &str, data: &[u8]) {
    let mut header = dict.to_owned();
    while header.len() % 64 != 64 - 11 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// `a` and `b` are the same data set: everything but the file and the line numbers.
fn assert_same(a: &Dataset, b: &Dataset) {
    let mut b = b.clone();
    b.path = a.path.clone();
    assert_eq!(a.queries.len(), b.queries.len());
    for (qa, qb) in a.queries.iter().zip(&mut b.queries) {
        qb.line = qa.line;
    }
    assert!(a == &b, "the data sets differ");
}

#[test]
fn long_csv_with_renamed_columns_is_the_jsonl_data() {
    let f = fixture();
    let reference = f.reference();
    assert_eq!(reference.queries.len(), 40);
    assert_eq!(reference.budgets, BUDGETS);
    let csv = f.long_csv("long.csv", false);
    let loaded = f
        .load(
            &[csv],
            &[
                "query_id=prompts_id",
                "score=judge_score",
                "model=model_name",
            ],
            &[],
            &f.embeddings,
            None,
        )
        .unwrap();
    assert_same(&reference, &loaded);
    // Rows are numbered as a spreadsheet shows them: the header is row 1.
    assert_eq!(loaded.queries[0].line, 2);
    assert_eq!(loaded.queries[1].line, 2 + 3 * 4);
}

#[test]
fn column_names_given_for_jsonl_data_are_an_error_not_ignored() {
    let f = fixture();
    let error = f
        .load(
            std::slice::from_ref(&f.records),
            &["score=judge_score"],
            &[],
            &f.embeddings,
            None,
        )
        .unwrap_err();
    assert!(error.contains(&f.records.display().to_string()), "{error}");
    assert!(error.contains("--column"), "{error}");
    assert!(error.contains("JSONL"), "{error}");
}

#[test]
fn wide_csv_files_per_model_are_the_jsonl_data() {
    let f = fixture();
    let reference = f.reference();
    let folder = f.wide_csv("wide", ("third", &f.models[2]));
    // A folder: its files in name order; the model from the file name or --data-model.
    let loaded = f
        .load(
            std::slice::from_ref(&folder),
            &[],
            &[("third", &f.models[2])],
            &f.embeddings,
            None,
        )
        .unwrap();
    assert_same(&reference, &loaded);
    // The same files given one by one.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let loaded = f
        .load(
            &files,
            &[],
            &[("third.csv", &f.models[2])],
            &f.embeddings,
            None,
        )
        .unwrap();
    assert_same(&reference, &loaded);
    // Without the mapping the file's model is unknown.
    let err = f.load(&files, &[], &[], &f.embeddings, None).unwrap_err();
    assert!(
        err.contains("third.csv")
            && err.contains("--data-model third=MODEL")
            && err.contains(&f.models[0]),
        "{err}"
    );
}

#[test]
fn npy_embeddings_are_the_jsonl_embeddings() {
    let f = fixture();
    let reference = f.reference();
    // float64: the same numbers; input tokens from the records' column.
    let csv = f.long_csv("long_tokens.csv", true);
    let columns = [
        "query_id=prompts_id",
        "score=judge_score",
        "model=model_name",
    ];
    let (npy, ids) = f.npy("emb64", true, false);
    let loaded = f
        .load(std::slice::from_ref(&csv), &columns, &[], &npy, Some(&ids))
        .unwrap();
    assert_same(&reference, &loaded);
    // float32 with JSONL ids: the float32 values, widened exactly.
    let (npy, ids) = f.npy("emb32", false, true);
    let loaded = f.load(&[csv], &columns, &[], &npy, Some(&ids)).unwrap();
    let mut expected = reference.clone();
    expected
        .embeddings
        .iter_mut()
        .for_each(|v| *v = f64::from(*v as f32));
    assert_same(&expected, &loaded);
}

#[cfg(feature = "parquet")]
#[test]
fn long_parquet_is_the_jsonl_data() {
    use std::sync::Arc;

    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let f = fixture();
    let reference = f.reference();
    let schema = parse_message_type(
        "message records {
            REQUIRED BYTE_ARRAY prompts_id (UTF8);
            REQUIRED BYTE_ARRAY model (UTF8);
            REQUIRED BYTE_ARRAY budget (UTF8);
            REQUIRED DOUBLE score;
            REQUIRED INT64 output_tokens;
            OPTIONAL BYTE_ARRAY split (UTF8);
            REQUIRED INT64 input_tokens;
        }",
    )
    .unwrap();
    let path = f.dir.join("long.parquet");
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = SerializedFileWriter::new(
        std::fs::File::create(&path).unwrap(),
        Arc::new(schema),
        Arc::new(props),
    )
    .unwrap();
    let text = |key: &str| -> Vec<ByteArray> {
        f.rows
            .iter()
            .map(|r| match &r[key] {
                Value::String(s) => ByteArray::from(s.as_str()),
                v => ByteArray::from(v.to_string().as_str()),
            })
            .collect()
    };
    // Two row groups, to read across them.
    for half in [0..60, 60..f.rows.len()] {
        let mut group = writer.next_row_group().unwrap();
        let mut index = 0;
        while let Some(mut column) = group.next_column().unwrap() {
            match index {
                0..=2 => {
                    let key = ["query_id", "model", "budget"][index];
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&text(key)[half.clone()], None, None)
                        .unwrap();
                }
                3 => {
                    let v: Vec<f64> = f
                        .rows
                        .iter()
                        .map(|r| r["score"].as_f64().unwrap())
                        .collect();
                    column
                        .typed::<DoubleType>()
                        .write_batch(&v[half.clone()], None, None)
                        .unwrap();
                }
                4 => {
                    let v: Vec<i64> = f
                        .rows
                        .iter()
                        .map(|r| r["output_tokens"].as_i64().unwrap())
                        .collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&v[half.clone()], None, None)
                        .unwrap();
                }
                5 => {
                    let values: Vec<ByteArray> = f.rows[half.clone()]
                        .iter()
                        .filter_map(|r| r["split"].as_str().map(ByteArray::from))
                        .collect();
                    let defined: Vec<i16> = f.rows[half.clone()]
                        .iter()
                        .map(|r| i16::from(r["split"].is_string()))
                        .collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&values, Some(&defined), None)
                        .unwrap();
                }
                _ => {
                    let v: Vec<i64> = f.rows[half.clone()]
                        .iter()
                        .map(|r| f.input_tokens(r["query_id"].as_str().unwrap()) as i64)
                        .collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&v, None, None)
                        .unwrap();
                }
            }
            column.close().unwrap();
            index += 1;
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
    let (npy, ids) = f.npy("emb", true, false);
    let loaded = f
        .load(
            std::slice::from_ref(&path),
            &["query_id=prompts_id"],
            &[],
            &npy,
            Some(&ids),
        )
        .unwrap();
    assert_same(&reference, &loaded);
    assert_eq!(loaded.queries[1].line, 1 + 3 * 4);
    // A renamed column that is not there.
    let err = f
        .load(&[path], &["score=judge"], &[], &npy, Some(&ids))
        .unwrap_err();
    assert!(
        err.contains("long.parquet") && err.contains("no column `judge`"),
        "{err}"
    );
}

// ---- bad tables ----

const MODELS: [&str; 2] = ["m1", "m2"];

/// Two queries × two models × budget 10 and unlimited, as a long CSV; embeddings in a JSONL file.
fn good_csv() -> Vec<String> {
    let mut lines = vec!["query_id,model,budget,judge_score,output_tokens".to_owned()];
    for q in 0..2 {
        for m in MODELS {
            for b in ["10", "unlimited"] {
                lines.push(format!("q{q},{m},{b},0.5,7"));
            }
        }
    }
    lines
}

fn load_table(
    dir: &Path,
    name: &str,
    lines: &[String],
    columns: &[&str],
) -> Result<Dataset, String> {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    load_paths(dir, vec![path], columns)
}

/// Loads `paths` with the embeddings of q0 and q1.
fn load_paths(dir: &Path, paths: Vec<PathBuf>, columns: &[&str]) -> Result<Dataset, String> {
    let emb = dir.join("emb.jsonl");
    std::fs::write(
        &emb,
        "{\"id\":\"q0\",\"embedding\":[1,2]}\n{\"id\":\"q1\",\"embedding\":[3,4]}\n",
    )
    .unwrap();
    let models: Vec<String> = MODELS.iter().map(|m| m.to_string()).collect();
    r2_train::data::load_sources(
        &DataSources {
            paths,
            columns: Columns::parse(columns)?,
            ..DataSources::default()
        },
        &LoadOptions {
            models: &models,
            models_source: "pool.json",
            budgets: None,
            split: SplitFilter::All,
            embeddings: Some(&emb),
            dim: None,
        },
    )
    .map_err(|e| e.to_string())
}

fn csv_error(lines: &[String], columns: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let err =
        load_table(dir.path(), "data.csv", lines, columns).expect_err("bad data must not load");
    assert!(err.contains("data.csv"), "{err}");
    err
}

#[test]
fn good_csv_loads() {
    let dir = tempfile::tempdir().unwrap();
    let data = load_table(dir.path(), "data.csv", &good_csv(), &["score=judge_score"]).unwrap();
    assert_eq!(data.queries.len(), 2);
    assert_eq!(data.budgets, vec![10]);
    assert_eq!(data.embedding(1), &[3.0, 4.0]);
}

#[test]
fn unknown_and_missing_columns() {
    // A --column naming a column the file does not have.
    let err = csv_error(&good_csv(), &["score=judge"]);
    assert!(
        err.contains("no column `judge`")
            && err.contains("--column score=judge")
            && err.contains("`judge_score`"),
        "{err}"
    );
    // A required column missing (no mapping).
    let err = csv_error(&good_csv(), &[]);
    assert!(
        err.contains("no column `score`") && err.contains("--column score=COLUMN"),
        "{err}"
    );
    // A field that does not exist.
    let dir = tempfile::tempdir().unwrap();
    let err = load_table(dir.path(), "data.csv", &good_csv(), &["scor=judge_score"]).unwrap_err();
    assert!(
        err.contains("`scor` is not a field") && err.contains("output_tokens"),
        "{err}"
    );
    // A column twice.
    let mut lines = good_csv();
    lines[0] = "query_id,model,budget,judge_score,judge_score".into();
    let err = csv_error(&lines, &["score=judge_score"]);
    assert!(
        err.contains("`judge_score`") && err.contains("twice"),
        "{err}"
    );
    // Neither layout.
    let lines = vec!["id,a".to_owned(), "q0,1".to_owned()];
    let err = csv_error(&lines, &[]);
    assert!(err.contains("neither layout"), "{err}");
}

#[test]
fn bad_cells_name_the_row_and_the_column() {
    let with = |row: usize, text: &str| {
        let mut lines = good_csv();
        lines[row - 1] = text.to_owned();
        csv_error(&lines, &["score=judge_score"])
    };
    let err = with(4, "q0,m2,10,abc,7");
    assert!(
        err.contains("row 4, column `judge_score`") && err.contains("`abc` is not a number"),
        "{err}"
    );
    let err = with(3, "q0,m1,unlimited,1.5,7");
    assert!(
        err.contains("row 3, column `judge_score`") && err.contains("[0, 1]"),
        "{err}"
    );
    let err = with(5, "q0,m2,unlimited,0.5,NaN");
    assert!(
        err.contains("row 5, column `output_tokens`") && err.contains("≥ 0"),
        "{err}"
    );
    let err = with(2, "q0,gpt-9,10,0.5,7");
    assert!(
        err.contains("row 2, column `model`")
            && err.contains("unknown model `gpt-9`")
            && err.contains("m1, m2"),
        "{err}"
    );
    let err = with(6, "q1,m1,ten,0.5,7");
    assert!(
        err.contains("row 6, column `budget`") && err.contains("`ten`"),
        "{err}"
    );
    let err = with(6, "q1,m1,10,0.5");
    assert!(
        err.contains("row 6") && err.contains("header row has 5"),
        "{err}"
    );
    // A duplicate names both rows.
    let err = with(9, "q0,m1,10,0.5,7");
    assert!(
        err.contains("row 9") && err.contains("second record") && err.contains("row 2"),
        "{err}"
    );
    // A missing label names the query's first row.
    let mut lines = good_csv();
    lines.remove(8);
    let err = csv_error(&lines, &["score=judge_score"]);
    assert!(
        err.contains("row 6")
            && err.contains("query `q1`")
            && err.contains("model `m2` at budget unlimited"),
        "{err}"
    );
}

#[test]
fn bad_wide_tables() {
    let dir = tempfile::tempdir().unwrap();
    let header = "query_id,10_score,10_count,unlimited_score,unlimited_count";
    let m2 = [
        header.to_owned(),
        "q0,0.5,7,0.5,7".into(),
        "q1,0.5,7,0.5,7".into(),
    ];
    std::fs::create_dir(dir.path().join("wide")).unwrap();
    std::fs::write(dir.path().join("wide/m2.csv"), m2.join("\n")).unwrap();
    let wide = |lines: &[&str]| {
        std::fs::write(dir.path().join("wide/m1.csv"), lines.join("\n")).unwrap();
        load_paths(dir.path(), vec![dir.path().join("wide")], &[])
    };
    wide(&[header, "q0,0.5,7,0.5,7", "q1,0.5,7,0.5,7"]).unwrap();
    let err = wide(&[header, "q0,0.5,7,0.5,7", "q1,x,7,0.5,7"]).unwrap_err();
    assert!(
        err.contains("m1.csv: row 3, column `10_score`") && err.contains("`x`"),
        "{err}"
    );
    let err = wide(&[header, "q0,0.5,,0.5,7", "q1,0.5,7,0.5,7"]).unwrap_err();
    assert!(
        err.contains("row 2, column `10_count`") && err.contains("give both"),
        "{err}"
    );
    let err = wide(&[
        "query_id,10_score,unlimited_score,unlimited_count",
        "q0,0.5,0.5,7",
    ])
    .unwrap_err();
    assert!(err.contains("`10_score` has no `10_count`"), "{err}");
}

#[test]
fn bad_npy_files_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ids = d.join("ids.txt");
    std::fs::write(&ids, "q0\nq1\n").unwrap();
    let csv = d.join("data.csv");
    std::fs::write(&csv, good_csv().join("\n")).unwrap();
    let models: Vec<String> = MODELS.iter().map(|m| m.to_string()).collect();
    let load = |npy: &Path, ids: Option<&Path>| {
        r2_train::data::load_sources(
            &DataSources {
                paths: vec![csv.clone()],
                columns: Columns::parse(&["score=judge_score"]).unwrap(),
                embedding_ids: ids.map(Path::to_path_buf),
                ..DataSources::default()
            },
            &LoadOptions {
                models: &models,
                models_source: "pool.json",
                budgets: None,
                split: SplitFilter::All,
                embeddings: Some(npy),
                dim: None,
            },
        )
        .map_err(|e| e.to_string())
    };
    let rows = vec![vec![1.0, 2.0], vec![3.0, 4.0]];
    let npy = d.join("emb.npy");
    write_npy(&npy, "<f4", "(2, 2)", &data_bytes(&rows, false));
    let data = load(&npy, Some(&ids)).unwrap();
    assert_eq!(data.embedding(1), &[3.0, 4.0]);
    let err = load(&npy, None).unwrap_err();
    assert!(
        err.contains("emb.npy") && err.contains("--embedding-ids"),
        "{err}"
    );

    type Make = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "dtype",
            Box::new(|p| write_npy(p, "<i8", "(2, 2)", &[0u8; 32])),
            "'<i8'",
        ),
        (
            "big",
            Box::new(|p| write_npy(p, ">f8", "(2, 2)", &[0u8; 32])),
            "big-endian",
        ),
        (
            "shape",
            Box::new(|p| write_npy(p, "<f8", "(4,)", &[0u8; 32])),
            "2-d array",
        ),
        (
            "rows",
            Box::new(|p| write_npy(p, "<f8", "(3, 2)", &[0u8; 48])),
            "3 rows but",
        ),
        (
            "truncated",
            Box::new(|p| write_npy(p, "<f8", "(2, 2)", &[0u8; 20])),
            "truncated: a 2 × 2 array of float64 needs 32 bytes of data, the file has 20",
        ),
        (
            "extra",
            Box::new(|p| write_npy(p, "<f4", "(2, 2)", &[0u8; 20])),
            "4 bytes after",
        ),
        (
            "fortran",
            Box::new(|p| {
                write_npy_header(
                    p,
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                    &[0u8; 16],
                )
            }),
            "Fortran",
        ),
        (
            "magic",
            Box::new(|p| std::fs::write(p, b"PK\x03\x04 not an array").unwrap()),
            "not a .npy file",
        ),
        (
            "short",
            Box::new(|p| std::fs::write(p, b"\x93NUMPY\x01\x00\x40").unwrap()),
            "truncated",
        ),
        (
            "nan",
            Box::new(|p| {
                write_npy(
                    p,
                    "<f8",
                    "(2, 2)",
                    &data_bytes(&[vec![1.0, 2.0], vec![f64::NAN, 4.0]], true),
                )
            }),
            "row 2 (from 1), value 1 is NaN",
        ),
    ];
    for (name, make, what) in cases {
        let path = d.join(format!("{name}.npy"));
        make(&path);
        let err = load(&path, Some(&ids)).expect_err(name);
        assert!(
            err.contains(&format!("{name}.npy")) && err.contains(what),
            "{name}: {err}"
        );
    }
}

/// A column of a Parquet file written by [`write_parquet`].
#[cfg(feature = "parquet")]
#[derive(Clone)]
enum Col {
    Text(Vec<Option<String>>),
    Double(Vec<Option<f64>>),
    Long(Vec<Option<i64>>),
}

/// A Parquet file (zstd-compressed) of OPTIONAL columns, in one row group.
#[cfg(feature = "parquet")]
fn write_parquet(path: &Path, columns: &[(&str, Col)]) {
    use std::sync::Arc;

    use parquet::basic::{Compression, ZstdLevel};
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let fields: Vec<String> = columns
        .iter()
        .map(|(name, col)| match col {
            Col::Text(_) => format!("OPTIONAL BYTE_ARRAY {name} (UTF8);"),
            Col::Double(_) => format!("OPTIONAL DOUBLE {name};"),
            Col::Long(_) => format!("OPTIONAL INT64 {name};"),
        })
        .collect();
    let schema = parse_message_type(&format!("message t {{ {} }}", fields.join(" "))).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = SerializedFileWriter::new(
        std::fs::File::create(path).unwrap(),
        Arc::new(schema),
        Arc::new(props),
    )
    .unwrap();
    fn split<T: Clone>(v: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
        (
            v.iter().flatten().cloned().collect(),
            v.iter().map(|x| i16::from(x.is_some())).collect(),
        )
    }
    let mut group = writer.next_row_group().unwrap();
    let mut index = 0;
    while let Some(mut column) = group.next_column().unwrap() {
        match &columns[index].1 {
            Col::Text(v) => {
                let (values, defined) = split(v);
                let values: Vec<ByteArray> =
                    values.iter().map(|s| ByteArray::from(s.as_str())).collect();
                column
                    .typed::<ByteArrayType>()
                    .write_batch(&values, Some(&defined), None)
                    .unwrap();
            }
            Col::Double(v) => {
                let (values, defined) = split(v);
                column
                    .typed::<DoubleType>()
                    .write_batch(&values, Some(&defined), None)
                    .unwrap();
            }
            Col::Long(v) => {
                let (values, defined) = split(v);
                column
                    .typed::<Int64Type>()
                    .write_batch(&values, Some(&defined), None)
                    .unwrap();
            }
        }
        column.close().unwrap();
        index += 1;
    }
    group.close().unwrap();
    writer.close().unwrap();
}

#[cfg(feature = "parquet")]
#[test]
fn wide_parquet_files_are_the_jsonl_data() {
    let f = fixture();
    let reference = f.reference();
    let dir = f.dir.join("wide_parquet");
    std::fs::create_dir_all(&dir).unwrap();
    let mut ids: Vec<&str> = Vec::new();
    for r in &f.rows {
        let id = r["query_id"].as_str().unwrap();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    for model in &f.models {
        let find = |id: &str, b: &Value| {
            f.rows
                .iter()
                .find(|r| r["query_id"] == id && r["model"] == model.as_str() && &r["budget"] == b)
                .unwrap()
        };
        let mut columns = vec![
            (
                "qid".to_owned(),
                Col::Text(ids.iter().map(|i| Some(i.to_string())).collect()),
            ),
            (
                "split".to_owned(),
                Col::Text(
                    ids.iter()
                        .map(|i| {
                            find(i, &Value::from("unlimited"))["split"]
                                .as_str()
                                .map(str::to_owned)
                        })
                        .collect(),
                ),
            ),
        ];
        for b in BUDGETS
            .iter()
            .map(|&b| Value::from(b))
            .chain([Value::from("unlimited")])
        {
            let label = match &b {
                Value::String(s) => s.clone(),
                b => b.to_string(),
            };
            columns.push((
                format!("{label}_score"),
                Col::Double(ids.iter().map(|i| find(i, &b)["score"].as_f64()).collect()),
            ));
            columns.push((
                format!("{label}_count"),
                Col::Long(
                    ids.iter()
                        .map(|i| find(i, &b)["output_tokens"].as_i64())
                        .collect(),
                ),
            ));
        }
        // A budget the router does not use, empty: no record.
        columns.push(("5_score".to_owned(), Col::Double(vec![None; ids.len()])));
        columns.push(("5_count".to_owned(), Col::Long(vec![None; ids.len()])));
        let columns: Vec<(&str, Col)> = columns
            .iter()
            .map(|(n, c)| (n.as_str(), c.clone()))
            .collect();
        write_parquet(&dir.join(format!("{model}.parquet")), &columns);
    }
    let loaded = f
        .load(
            std::slice::from_ref(&dir),
            &["query_id=qid"],
            &[],
            &f.embeddings,
            None,
        )
        .unwrap();
    assert_same(&reference, &loaded);
}

#[cfg(feature = "parquet")]
#[test]
fn bad_parquet_cells_name_the_row_and_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.parquet");
    let text = |v: &[&str]| Col::Text(v.iter().map(|s| Some(s.to_string())).collect());
    write_parquet(
        &path,
        &[
            ("query_id", text(&["q0", "q0", "q0", "q0"])),
            ("model", text(&["m1", "m1", "m2", "m2"])),
            (
                "budget",
                Col::Long(vec![Some(10), None, Some(10), Some(10)]),
            ),
            ("score", text(&["0.5", "0.5", "high", "0.5"])),
            ("output_tokens", Col::Long(vec![Some(7); 4])),
        ],
    );
    let err = load_paths(dir.path(), vec![path.clone()], &[]).unwrap_err();
    assert!(
        err.contains("data.parquet: row 2, column `budget`") && err.contains("an empty cell"),
        "{err}"
    );
    write_parquet(
        &path,
        &[
            ("query_id", text(&["q0", "q0"])),
            ("model", text(&["m1", "m2"])),
            ("budget", text(&["unlimited", "unlimited"])),
            ("score", text(&["0.5", "high"])),
            ("output_tokens", Col::Double(vec![Some(7.0); 2])),
        ],
    );
    let err = load_paths(dir.path(), vec![path.clone()], &[]).unwrap_err();
    assert!(
        err.contains("data.parquet: row 2, column `score`")
            && err.contains("`high` is not a number"),
        "{err}"
    );
    std::fs::write(&path, "not parquet at all").unwrap();
    let err = load_paths(dir.path(), vec![path], &[]).unwrap_err();
    assert!(
        err.contains("data.parquet") && err.contains("not a Parquet file"),
        "{err}"
    );
}
