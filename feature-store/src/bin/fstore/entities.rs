//! A backfill's entities from a file: an `entity_id` column and one column per
//! request-time input. CSV headers type their column the way `-i` does (`setting:f64`;
//! a bare name is a string) and an empty cell leaves that input out for that entity;
//! Parquet columns are typed by Arrow (utf8, float64, int64, boolean, binary, lists of
//! float32 as tensors) and a null leaves it out. A cell that cannot be read is refused
//! with its row and column.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use fstore::export::Format;
use fstore_proto::api;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A file that cannot be read as entities: the file, where, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}{}{}: {message}",
    .row.map(|r| format!(" row {r}")).unwrap_or_default(),
    .column.as_ref().map(|c| format!(", column `{c}`")).unwrap_or_default())]
pub struct Error {
    pub path: String,
    pub row: Option<u64>,
    pub column: Option<String>,
    pub message: String,
}

fn error(path: &Path, row: Option<u64>, column: Option<&str>, message: impl Into<String>) -> Error {
    Error {
        path: path.display().to_string(),
        row,
        column: column.map(str::to_string),
        message: message.into(),
    }
}

/// The entities of `path` (CSV or Parquet, by its extension), with `id_column` as the
/// entity id.
pub fn read(path: &Path, id_column: &str) -> Result<Vec<api::EntityRequest>, Error> {
    let format = Format::of_path(path)
        .ok_or_else(|| error(path, None, None, "name the file .csv or .parquet"))?;
    let file = File::open(path).map_err(|e| error(path, None, None, e.to_string()))?;
    let entities = match format {
        Format::Csv => read_csv(path, file, id_column)?,
        Format::Parquet => read_parquet(path, file, id_column)?,
    };
    if entities.is_empty() {
        return Err(error(path, None, None, "the file has no rows"));
    }
    Ok(entities)
}

fn id_index(path: &Path, names: &[String], id_column: &str) -> Result<usize, Error> {
    names.iter().position(|n| n == id_column).ok_or_else(|| {
        error(
            path,
            None,
            None,
            format!(
                "no column `{id_column}` for the entity ids (columns: {}); name it with --id-column",
                names.join(", ")
            ),
        )
    })
}

fn read_csv(path: &Path, file: File, id_column: &str) -> Result<Vec<api::EntityRequest>, Error> {
    let mut reader = csv::Reader::from_reader(std::io::BufReader::new(file));
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| error(path, None, None, format!("the header row: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let id = id_index(path, &names, id_column)?;
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i as u64 + 1;
        let record = record.map_err(|e| error(path, Some(row), None, e.to_string()))?;
        let entity_id = record.get(id).unwrap_or_default();
        if entity_id.is_empty() {
            return Err(error(
                path,
                Some(row),
                Some(id_column),
                "the entity id is empty",
            ));
        }
        let mut inputs = HashMap::new();
        for (c, header) in names.iter().enumerate() {
            let cell = record.get(c).unwrap_or_default();
            if c == id || cell.is_empty() {
                continue;
            }
            let (name, value) = crate::input::parse(&format!("{header}={cell}"))
                .map_err(|e| error(path, Some(row), Some(header), e.to_string()))?;
            inputs.insert(name, value);
        }
        out.push(api::EntityRequest {
            entity_id: entity_id.to_string(),
            inputs,
        });
    }
    Ok(out)
}

fn read_parquet(
    path: &Path,
    file: File,
    id_column: &str,
) -> Result<Vec<api::EntityRequest>, Error> {
    let unreadable = |e: parquet::errors::ParquetError| {
        error(
            path,
            None,
            None,
            format!("not a readable Parquet file: {e}"),
        )
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(unreadable)?;
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let id = id_index(path, &names, id_column)?;
    let mut out = Vec::new();
    for batch in builder.build().map_err(unreadable)? {
        let batch = batch.map_err(|e| error(path, None, None, e.to_string()))?;
        let first = out.len();
        for row in 0..batch.num_rows() {
            let n = (first + row) as u64 + 1;
            let entity_id = match cell(batch.column(id), row) {
                Ok(Some(api::Value {
                    kind: Some(api::value::Kind::String(s)),
                })) if !s.is_empty() => s,
                Ok(Some(api::Value {
                    kind: Some(api::value::Kind::I64(i)),
                })) => i.to_string(),
                Ok(_) => {
                    return Err(error(
                        path,
                        Some(n),
                        Some(id_column),
                        "the entity id is null or empty",
                    ));
                }
                Err(m) => return Err(error(path, Some(n), Some(id_column), m)),
            };
            let mut inputs = HashMap::new();
            for (c, name) in names.iter().enumerate() {
                if c == id {
                    continue;
                }
                match cell(batch.column(c), row) {
                    Ok(Some(v)) => {
                        inputs.insert(name.clone(), v);
                    }
                    Ok(None) => {}
                    Err(m) => return Err(error(path, Some(n), Some(name), m)),
                }
            }
            out.push(api::EntityRequest { entity_id, inputs });
        }
    }
    Ok(out)
}

/// One Arrow cell as a request value; None for a null.
fn cell(array: &ArrayRef, row: usize) -> Result<Option<api::Value>, String> {
    use api::value::Kind;
    if array.is_null(row) {
        return Ok(None);
    }
    let kind = match array.data_type() {
        DataType::Utf8 => Kind::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Kind::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Float64 => Kind::F64(array.as_primitive::<Float64Type>().value(row)),
        DataType::Int64 => Kind::I64(array.as_primitive::<Int64Type>().value(row)),
        DataType::Int32 => Kind::I64(i64::from(array.as_primitive::<Int32Type>().value(row))),
        DataType::Boolean => Kind::Bool(array.as_boolean().value(row)),
        DataType::Binary => Kind::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        DataType::List(_) | DataType::FixedSizeList(_, _) => {
            let values = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(row),
                _ => array.as_fixed_size_list().value(row),
            };
            let floats = values
                .as_primitive_opt::<Float32Type>()
                .ok_or("a list column must hold float32 (a tensor)")?;
            let data: Vec<f32> = floats.values().to_vec();
            Kind::Tensor(api::Tensor {
                shape: vec![data.len() as u64],
                data,
            })
        }
        other => {
            return Err(format!(
                "a column of type {other} cannot be a request input"
            ));
        }
    };
    Ok(Some(api::Value { kind: Some(kind) }))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn csv(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".csv")
            .tempfile()
            .expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn csv_headers_type_their_inputs_and_empty_cells_leave_them_out() {
        let f = csv("entity_id,text,setting:f64\np1,hello,0.5\np2,,2\n");
        let e = read(f.path(), "entity_id").expect("entities");
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].inputs.get("setting").and_then(|v| v.kind.clone()),
            Some(api::value::Kind::F64(0.5))
        );
        assert_eq!(
            e[0].inputs.get("text").and_then(|v| v.kind.clone()),
            Some(api::value::Kind::String("hello".into()))
        );
        assert!(
            !e[1].inputs.contains_key("text"),
            "an empty cell is no input"
        );
    }

    #[test]
    fn a_bad_cell_names_its_row_and_column() {
        let f = csv("entity_id,setting:f64\np1,0.5\np2,high\n");
        let m = read(f.path(), "entity_id").expect_err("bad").to_string();
        assert!(
            m.contains("row 2, column `setting:f64`") && m.contains("high"),
            "{m}"
        );
        let f = csv("id,x\np1,1\n");
        let m = read(f.path(), "entity_id").expect_err("no id").to_string();
        assert!(
            m.contains("no column `entity_id`") && m.contains("--id-column"),
            "{m}"
        );
        assert_eq!(read(f.path(), "id").expect("entities").len(), 1);
    }
}
