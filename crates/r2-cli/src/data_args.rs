//! `--data` and its companions, shared by `r2 train`, `r2 eval` and `r2 experiment`: data files in
//! JSONL, CSV or Parquet (long or wide layout), column names, embeddings (JSONL or `.npy`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use r2_train::data::{self, Columns, DataSources, Dataset, LoadOptions};

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Scored answers: JSONL (one {"query_id", "model", "budget", "score", "output_tokens",
    /// "embedding"?, "split"?, "input_tokens"?} a line), CSV (.csv, .tsv) or Parquet (.parquet)
    /// with those columns (long layout), or one CSV/Parquet file per model with a query id column
    /// and {budget}_score, {budget}_count, unlimited_score, unlimited_count columns (wide layout,
    /// the model is the file name); several times, or a folder of such files
    #[arg(long, value_name = "FILE|DIR", required = true)]
    pub data: Vec<PathBuf>,

    /// The CSV/Parquet column of a field, e.g. --column query_id=prompts_id --column
    /// score=judge_score (fields: query_id, model, budget, score, output_tokens, embedding, split,
    /// input_tokens). JSONL records keep the field names: with only JSONL data this is an error
    #[arg(long = "column", value_name = "FIELD=COLUMN")]
    pub columns: Vec<String>,

    /// The model of a wide-layout file not named after it: FILE (its path, name, or name without
    /// extension) = a model of the pool, e.g. --data-model results_glm=GLM-4.5-Air
    #[arg(long = "data-model", value_name = "FILE=MODEL")]
    pub data_models: Vec<String>,

    /// Query embeddings for records without an inline "embedding": JSONL, one {"query_id" (or
    /// "id", or "query"), "embedding", "input_tokens"?} a line, or a NumPy .npy array [queries,
    /// dim] (float32 or float64) with --embedding-ids
    #[arg(long, value_name = "FILE")]
    pub embeddings: Option<PathBuf>,

    /// The query ids of a .npy --embeddings array, row i of the array for line i: one id a line,
    /// or JSONL {"query_id" | "id"}
    #[arg(long, value_name = "FILE", requires = "embeddings")]
    pub embedding_ids: Option<PathBuf>,
}

impl DataArgs {
    /// The sources to read, with the arguments checked.
    pub fn sources(&self) -> Result<DataSources> {
        let columns = Columns::parse(&self.columns).map_err(|e| anyhow::anyhow!("--column {e}"))?;
        let file_models = self
            .data_models
            .iter()
            .map(|spec| {
                spec.split_once('=')
                    .map(|(f, m)| (f.trim().to_owned(), m.trim().to_owned()))
                    .filter(|(f, m)| !f.is_empty() && !m.is_empty())
                    .with_context(|| {
                        format!("--data-model `{spec}` is not FILE=MODEL (e.g. results_glm=GLM-4.5-Air)")
                    })
            })
            .collect::<Result<_>>()?;
        Ok(DataSources {
            paths: self.data.clone(),
            columns,
            file_models,
            embedding_ids: self.embedding_ids.clone(),
        })
    }

    /// Reads the data; `options.embeddings` is replaced by `--embeddings`.
    pub fn load(&self, options: &LoadOptions) -> Result<Dataset> {
        let sources = self.sources()?;
        let options = LoadOptions {
            embeddings: self.embeddings.as_deref(),
            ..options.clone()
        };
        Ok(data::load_sources(&sources, &options)?)
    }

    /// The data's file names, for reports ("records.csv", "wide/ (3 files)", …).
    pub fn label(&self) -> String {
        self.data
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.display().to_string())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        data: DataArgs,
    }

    #[test]
    fn parses_columns_and_models() {
        let cli = Cli::try_parse_from([
            "r2",
            "--data",
            "a.csv",
            "--data",
            "wide/",
            "--column",
            "query_id=prompts_id",
            "--column",
            "score=judge_score",
            "--data-model",
            "results_glm=GLM-4.5-Air",
        ])
        .unwrap();
        let sources = cli.data.sources().unwrap();
        assert_eq!(sources.paths.len(), 2);
        assert_eq!(
            sources.columns.name(r2_train::data::Field::QueryId),
            "prompts_id"
        );
        assert_eq!(
            sources.file_models,
            vec![("results_glm".to_owned(), "GLM-4.5-Air".to_owned())]
        );
        let bad = Cli::try_parse_from(["r2", "--data", "a.csv", "--column", "nope=x"]).unwrap();
        assert!(bad
            .data
            .sources()
            .unwrap_err()
            .to_string()
            .contains("`nope`"));
        let bad = Cli::try_parse_from(["r2", "--data", "a.csv", "--data-model", "x"]).unwrap();
        assert!(bad.data.sources().is_err());
        assert!(
            Cli::try_parse_from(["r2", "--data", "a.csv", "--embedding-ids", "i.txt"]).is_err()
        );
    }
}
