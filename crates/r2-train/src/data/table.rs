//! CSV and Parquet records: the long layout (one row per query × model × budget) and the wide
//! layout (one file per model, one row per query, `{budget}_score` and `{budget}_count` columns).

use std::borrow::Cow;
use std::path::Path;

use r2_core::Budget;

use super::{Bad, Collector, DataError, DataSources, Field, ModelIn, RecordIn, Unit};

/// A cell of a table, whatever the file's types (CSV has only text and empty cells).
#[cfg_attr(not(feature = "parquet"), allow(dead_code))]
pub(super) enum Cell<'a> {
    Null,
    Int(i64),
    Float(f64),
    Text(&'a str),
    List(Vec<f64>),
    /// A type no field takes (its name, for the error).
    Other(&'static str),
}

/// Which columns hold what.
struct Plan {
    layout: Layout,
    query_id: usize,
    split: Option<usize>,
    input_tokens: Option<usize>,
    embedding: Option<usize>,
}

enum Layout {
    Long {
        model: usize,
        budget: usize,
        score: usize,
        output_tokens: usize,
    },
    Wide {
        model: u16,
        /// (budget, score column, output tokens column).
        budgets: Vec<(Budget, usize, usize)>,
    },
}

/// The columns and file of the table being read.
struct Table<'a> {
    path: &'a Path,
    file: u16,
    header: Vec<String>,
}

impl Table<'_> {
    fn cell_error(&self, row: usize, column: usize, message: String) -> DataError {
        DataError::Cell {
            path: self.path.to_path_buf(),
            row,
            column: self.header[column].clone(),
            message,
        }
    }

    fn file_error(&self, message: String) -> DataError {
        DataError::File {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn columns_list(&self) -> String {
        self.header
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|c| c == name)
    }

    /// The column of `field`: `Ok(None)` when an optional field's default column is absent.
    fn column(
        &self,
        sources: &DataSources,
        field: Field,
        required: bool,
    ) -> Result<Option<usize>, DataError> {
        let name = sources.columns.name(field);
        if let Some(i) = self.find(name) {
            if self.header.iter().rposition(|c| c == name) != Some(i) {
                return Err(self.file_error(format!(
                    "column `{name}` (the records' `{}`) appears twice in the header",
                    field.name()
                )));
            }
            return Ok(Some(i));
        }
        if sources.columns.is_renamed(field) {
            return Err(self.file_error(format!(
                "no column `{name}` (given for `{}` by --column {}={name}); the columns are: {}",
                field.name(),
                field.name(),
                self.columns_list()
            )));
        }
        if required {
            return Err(self.file_error(format!(
                "no column `{name}` for the records' `{}`: name the column that holds it with \
                 --column {}=COLUMN; the columns are: {}",
                field.name(),
                field.name(),
                self.columns_list()
            )));
        }
        Ok(None)
    }

    /// Which layout, and which columns.
    fn plan(&self, collector: &Collector, sources: &DataSources) -> Result<Plan, DataError> {
        let budget_name = sources.columns.name(Field::Budget);
        let layout =
            if self.find(budget_name).is_some() || sources.columns.is_renamed(Field::Budget) {
                let required = |f| self.column(sources, f, true).map(|c| c.unwrap_or_default());
                Layout::Long {
                    model: required(Field::Model)?,
                    budget: required(Field::Budget)?,
                    score: required(Field::Score)?,
                    output_tokens: required(Field::OutputTokens)?,
                }
            } else {
                let mut budgets = Vec::new();
                for (i, name) in self.header.iter().enumerate() {
                    let Some(prefix) = name.strip_suffix("_score") else {
                        continue;
                    };
                    let budget = match prefix {
                        "unlimited" => Budget::Unlimited,
                        digits => match digits.parse::<u32>() {
                            Ok(b) if b > 0 => Budget::Tokens(b),
                            _ => continue,
                        },
                    };
                    let count = format!("{prefix}_count");
                    let Some(c) = self.find(&count) else {
                        return Err(self.file_error(format!(
                        "column `{name}` has no `{count}` column beside it (the output tokens of \
                         the answers at budget {budget})"
                    )));
                    };
                    budgets.push((budget, i, c));
                }
                if budgets.is_empty() {
                    return Err(self.file_error(format!(
                        "neither layout: a long table needs the columns {} (name others with \
                     --column FIELD=COLUMN), a wide table (one file per model) a query id column \
                     and `{{budget}}_score`, `{{budget}}_count`, `unlimited_score`, \
                     `unlimited_count` columns; the columns are: {}",
                        [
                            Field::QueryId,
                            Field::Model,
                            Field::Budget,
                            Field::Score,
                            Field::OutputTokens
                        ]
                        .map(|f| format!("`{}`", sources.columns.name(f)))
                        .join(", "),
                        self.columns_list()
                    )));
                }
                Layout::Wide {
                    model: self.wide_model(collector, sources)?,
                    budgets,
                }
            };
        Ok(Plan {
            layout,
            query_id: self
                .column(sources, Field::QueryId, true)?
                .unwrap_or_default(),
            split: self.column(sources, Field::Split, false)?,
            input_tokens: self.column(sources, Field::InputTokens, false)?,
            embedding: self.column(sources, Field::Embedding, false)?,
        })
    }

    /// The model of a wide file: `--data-model`'s, else the file name without extension.
    fn wide_model(&self, collector: &Collector, sources: &DataSources) -> Result<u16, DataError> {
        let given = self.path.to_string_lossy();
        let file_name = self
            .path
            .file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default();
        let stem = self
            .path
            .file_stem()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default();
        let mapped = sources
            .file_models
            .iter()
            .find(|(file, _)| *file == given || *file == file_name || *file == stem);
        match mapped {
            Some((file, model)) => collector
                .model(model)
                .map_err(|m| self.file_error(format!("--data-model {file}={model}: {m}"))),
            None => collector.model(&stem).map_err(|m| {
                self.file_error(format!(
                    "a wide table (one file per model) takes its model from its file name: {m}; \
                     rename the file after its model or pass --data-model {stem}=MODEL"
                ))
            }),
        }
    }

    /// Adds the records of one row (`row` as in a spreadsheet: CSV's header is row 1).
    fn add_row(
        &self,
        collector: &mut Collector,
        plan: &Plan,
        row: usize,
        cells: &[Cell],
    ) -> Result<(), DataError> {
        let at = |column: usize| &cells[column];
        let query_id =
            id_text(at(plan.query_id)).map_err(|m| self.cell_error(row, plan.query_id, m))?;
        let split = match plan.split {
            Some(c) => optional_text(at(c)).map_err(|m| self.cell_error(row, c, m))?,
            None => None,
        };
        let input_tokens = match plan.input_tokens {
            Some(c) => match at(c) {
                Cell::Null => None,
                cell => Some(count(cell).map_err(|m| self.cell_error(row, c, m))?),
            },
            None => None,
        };
        let embedding = match plan.embedding {
            Some(c) => vector(at(c)).map_err(|m| self.cell_error(row, c, m))?,
            None => None,
        };
        let add = |collector: &mut Collector,
                   record: RecordIn,
                   columns: &dyn Fn(Field) -> Option<usize>|
         -> Result<(), DataError> {
            collector
                .add(self.file, row, record)
                .map_err(|Bad { field, message }| match field.and_then(columns) {
                    Some(c) => self.cell_error(row, c, message),
                    None => collector.error_at(self.file, row, message),
                })
        };
        let common = |f: Field| match f {
            Field::QueryId => Some(plan.query_id),
            Field::Split => plan.split,
            Field::InputTokens => plan.input_tokens,
            Field::Embedding => plan.embedding,
            _ => None,
        };
        match &plan.layout {
            Layout::Long {
                model,
                budget,
                score,
                output_tokens,
            } => {
                let model_name = match at(*model) {
                    Cell::Text(t) => *t,
                    cell => {
                        return Err(self.cell_error(
                            row,
                            *model,
                            format!("the model must be text, got {}", describe(cell)),
                        ))
                    }
                };
                let record = RecordIn {
                    query_id,
                    model: ModelIn::Name(model_name),
                    budget: budget_of(at(*budget)).map_err(|m| self.cell_error(row, *budget, m))?,
                    score: number(at(*score), "score")
                        .map_err(|m| self.cell_error(row, *score, m))?,
                    output_tokens: number(at(*output_tokens), "output_tokens")
                        .map_err(|m| self.cell_error(row, *output_tokens, m))?,
                    embedding,
                    split,
                    input_tokens,
                };
                let columns = |f: Field| match f {
                    Field::Model => Some(*model),
                    Field::Budget => Some(*budget),
                    Field::Score => Some(*score),
                    Field::OutputTokens => Some(*output_tokens),
                    f => common(f),
                };
                add(collector, record, &columns)
            }
            Layout::Wide { model, budgets } => {
                let mut embedding = embedding;
                for &(budget, score, tokens) in budgets {
                    match (at(score), at(tokens)) {
                        (Cell::Null, Cell::Null) => continue,
                        (Cell::Null, _) => {
                            return Err(self.cell_error(
                                row,
                                score,
                                format!(
                                    "is empty, but `{}` is not: give both or neither",
                                    self.header[tokens]
                                ),
                            ))
                        }
                        (_, Cell::Null) => {
                            return Err(self.cell_error(
                                row,
                                tokens,
                                format!(
                                    "is empty, but `{}` is not: give both or neither",
                                    self.header[score]
                                ),
                            ))
                        }
                        _ => {}
                    }
                    let record = RecordIn {
                        query_id: query_id.clone(),
                        model: ModelIn::Index(*model),
                        budget,
                        score: number(at(score), "score")
                            .map_err(|m| self.cell_error(row, score, m))?,
                        output_tokens: number(at(tokens), "output_tokens")
                            .map_err(|m| self.cell_error(row, tokens, m))?,
                        embedding: embedding.take(),
                        split: split.clone(),
                        input_tokens,
                    };
                    let columns = |f: Field| match f {
                        Field::Score => Some(score),
                        Field::OutputTokens => Some(tokens),
                        f => common(f),
                    };
                    add(collector, record, &columns)?;
                }
                Ok(())
            }
        }
    }
}

fn describe(cell: &Cell) -> String {
    match cell {
        Cell::Null => "an empty cell".into(),
        Cell::Int(i) => format!("the number {i}"),
        Cell::Float(f) => format!("the number {f}"),
        Cell::Text(t) => format!("`{t}`"),
        Cell::List(_) => "a list".into(),
        Cell::Other(what) => (*what).into(),
    }
}

/// A float that is an integer, as one.
fn integral(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < 9e15).then_some(f as i64)
}

fn id_text<'a>(cell: &Cell<'a>) -> Result<Cow<'a, str>, String> {
    match cell {
        Cell::Text(t) => Ok(Cow::Borrowed(*t)),
        Cell::Int(i) => Ok(Cow::Owned(i.to_string())),
        Cell::Float(f) => match integral(*f) {
            Some(i) => Ok(Cow::Owned(i.to_string())),
            None => Err(format!(
                "a query id must be text or an integer, got {}",
                describe(cell)
            )),
        },
        cell => Err(format!(
            "a query id must be text or an integer, got {}",
            describe(cell)
        )),
    }
}

fn optional_text<'a>(cell: &Cell<'a>) -> Result<Option<Cow<'a, str>>, String> {
    match cell {
        Cell::Null => Ok(None),
        Cell::Text(t) => Ok(Some(Cow::Borrowed(*t))),
        cell => Err(format!("must be text, got {}", describe(cell))),
    }
}

fn number(cell: &Cell, field: &str) -> Result<f64, String> {
    match cell {
        Cell::Int(i) => Ok(*i as f64),
        Cell::Float(f) => Ok(*f),
        Cell::Text(t) => t.trim().parse::<f64>().map_err(|_| {
            format!("`{t}` is not a number (the record's `{field}` must be a number)")
        }),
        cell => Err(format!(
            "the record's `{field}` must be a number, got {}",
            describe(cell)
        )),
    }
}

/// A token count: an integer ≥ 0.
fn count(cell: &Cell) -> Result<u64, String> {
    let wrong = || format!("must be an integer ≥ 0, got {}", describe(cell));
    match cell {
        Cell::Int(i) => u64::try_from(*i).map_err(|_| wrong()),
        Cell::Float(f) => integral(*f)
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(wrong),
        Cell::Text(t) => t.trim().parse::<u64>().map_err(|_| wrong()),
        _ => Err(wrong()),
    }
}

fn budget_of(cell: &Cell) -> Result<Budget, String> {
    let wrong = || {
        format!(
            "a budget must be a positive integer number of tokens or `unlimited`, got {}",
            describe(cell)
        )
    };
    let tokens = |i: i64| {
        u32::try_from(i)
            .ok()
            .filter(|&b| b > 0)
            .map(Budget::Tokens)
            .ok_or_else(wrong)
    };
    match cell {
        Cell::Int(i) => tokens(*i),
        Cell::Float(f) => integral(*f).ok_or_else(wrong).and_then(tokens),
        Cell::Text(t) => {
            let t = t.trim();
            if t == "unlimited" {
                Ok(Budget::Unlimited)
            } else {
                match t.parse::<i64>() {
                    Ok(i) => tokens(i),
                    Err(_) => t
                        .parse::<f64>()
                        .ok()
                        .and_then(integral)
                        .ok_or_else(wrong)
                        .and_then(tokens),
                }
            }
        }
        _ => Err(wrong()),
    }
}

fn vector(cell: &Cell) -> Result<Option<Vec<f64>>, String> {
    match cell {
        Cell::Null => Ok(None),
        Cell::List(v) => Ok(Some(v.clone())),
        Cell::Text(t) => serde_json::from_str::<Vec<f64>>(t).map(Some).map_err(|_| {
            "an embedding in a text cell must be a JSON list of numbers, e.g. [0.1, -0.2]".into()
        }),
        cell => Err(format!(
            "an embedding must be a list of numbers, got {}",
            describe(cell)
        )),
    }
}

/// Reads a CSV file (`delimiter` `,` or tab) with a header row.
pub(super) fn read_csv(
    collector: &mut Collector,
    path: &Path,
    delimiter: u8,
    sources: &DataSources,
) -> Result<(), DataError> {
    let file = collector.add_file(path, Unit::Row)?;
    let open = std::fs::File::open(path)
        .map_err(|source| DataError::Io(r2_core::IoError::new(path, "cannot open", source)))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, open));
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c = if i == 0 {
                c.trim_start_matches('\u{feff}')
            } else {
                c
            };
            c.trim().to_owned()
        })
        .collect();
    let table = Table { path, file, header };
    let plan = table.plan(collector, sources)?;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(csv_error(path, e)),
        }
        let row = record.position().map_or(0, |p| p.line() as usize);
        if record.len() == 1 && record[0].trim().is_empty() {
            continue;
        }
        let cells: Vec<Cell> = record
            .iter()
            .map(|v| {
                if v.trim().is_empty() {
                    Cell::Null
                } else {
                    Cell::Text(v)
                }
            })
            .collect();
        table.add_row(collector, &plan, row, &cells)?;
    }
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let row = e.position().map_or(0, |p| p.line() as usize);
    match e.into_kind() {
        csv::ErrorKind::Io(source) => {
            DataError::Io(r2_core::IoError::new(path, "cannot read", source))
        }
        csv::ErrorKind::Utf8 { .. } => DataError::Row {
            path: path.to_path_buf(),
            row,
            message: "not UTF-8 text: save the file as UTF-8".into(),
        },
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => DataError::Row {
            path: path.to_path_buf(),
            row,
            message: format!(
                "{len} fields, but the header row has {expected_len}: every row needs one field \
                 per column"
            ),
        },
        kind => DataError::File {
            path: path.to_path_buf(),
            message: format!("cannot be read as CSV: {kind:?}"),
        },
    }
}

/// Reads a Parquet file (rows numbered from 1).
#[cfg(feature = "parquet")]
pub(super) fn read_parquet(
    collector: &mut Collector,
    path: &Path,
    sources: &DataSources,
) -> Result<(), DataError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field as P;

    let file = collector.add_file(path, Unit::Row)?;
    let open = std::fs::File::open(path)
        .map_err(|source| DataError::Io(r2_core::IoError::new(path, "cannot open", source)))?;
    let reader = SerializedFileReader::new(open).map_err(|e| DataError::File {
        path: path.to_path_buf(),
        message: format!("not a Parquet file, or a damaged one: {e}"),
    })?;
    let header: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    let table = Table { path, file, header };
    let plan = table.plan(collector, sources)?;
    let rows = reader.get_row_iter(None).map_err(|e| DataError::File {
        path: path.to_path_buf(),
        message: format!("cannot be read: {e}"),
    })?;
    fn cell(field: &P) -> Cell<'_> {
        match field {
            P::Null => Cell::Null,
            P::Byte(v) => Cell::Int(i64::from(*v)),
            P::Short(v) => Cell::Int(i64::from(*v)),
            P::Int(v) => Cell::Int(i64::from(*v)),
            P::Long(v) => Cell::Int(*v),
            P::UByte(v) => Cell::Int(i64::from(*v)),
            P::UShort(v) => Cell::Int(i64::from(*v)),
            P::UInt(v) => Cell::Int(i64::from(*v)),
            P::ULong(v) => i64::try_from(*v).map_or(Cell::Float(*v as f64), Cell::Int),
            P::Float16(v) => Cell::Float(f64::from(*v)),
            P::Float(v) => Cell::Float(f64::from(*v)),
            P::Double(v) => Cell::Float(*v),
            P::Str(s) => Cell::Text(s),
            P::Bytes(b) => match std::str::from_utf8(b.data()) {
                Ok(s) => Cell::Text(s),
                Err(_) => Cell::Other("bytes that are not UTF-8 text"),
            },
            P::ListInternal(list) => {
                let values: Option<Vec<f64>> = list
                    .elements()
                    .iter()
                    .map(|e| match cell(e) {
                        Cell::Int(i) => Some(i as f64),
                        Cell::Float(f) => Some(f),
                        _ => None,
                    })
                    .collect();
                values.map_or(Cell::Other("a list of non-numbers"), Cell::List)
            }
            P::Bool(_) => Cell::Other("a boolean"),
            _ => Cell::Other("a value of another type (date, decimal, group, map)"),
        }
    }
    for (i, row) in rows.enumerate() {
        let number = i + 1;
        let row = row.map_err(|e| DataError::Row {
            path: path.to_path_buf(),
            row: number,
            message: format!("cannot be read: {e}"),
        })?;
        let cells: Vec<Cell> = row.get_column_iter().map(|(_, f)| cell(f)).collect();
        if cells.len() != table.header.len() {
            return Err(DataError::Row {
                path: path.to_path_buf(),
                row: number,
                message: format!(
                    "{} values, but the schema has {} columns",
                    cells.len(),
                    table.header.len()
                ),
            });
        }
        table.add_row(collector, &plan, number, &cells)?;
    }
    Ok(())
}

#[cfg(not(feature = "parquet"))]
pub(super) fn read_parquet(
    collector: &mut Collector,
    path: &Path,
    _sources: &DataSources,
) -> Result<(), DataError> {
    let _ = collector;
    Err(DataError::File {
        path: path.to_path_buf(),
        message: "this build cannot read Parquet (r2-train's cargo feature `parquet` is off): \
                  convert the file to CSV or JSONL, or rebuild with the feature"
            .into(),
    })
}
