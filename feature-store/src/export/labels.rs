//! The label events of a training set, read from CSV or Parquet: an entity id and a
//! timestamp per row, and the file's other columns (the labels themselves) kept as they
//! are, to be written beside the joined features. A row that cannot be read is refused
//! with its row number and column.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Error, Format};

/// Which columns of the file hold the entity id and the label's time.
#[derive(Debug, Clone)]
pub struct LabelColumns {
    pub entity: String,
    pub time: String,
}

impl Default for LabelColumns {
    fn default() -> Self {
        LabelColumns {
            entity: "entity_id".to_string(),
            time: "timestamp".to_string(),
        }
    }
}

/// A training set's label events, in file order.
#[derive(Debug, Default)]
pub struct Labels {
    pub entities: Vec<String>,
    /// The label times, Unix ms.
    pub times_ms: Vec<i64>,
    /// The file's other columns, in file order (CSV: as text).
    pub extra: Vec<(Arc<Field>, ArrayRef)>,
}

impl Labels {
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }
}

/// Reads the labels of `path` in `format` (CSV or Parquet).
pub fn read(path: &Path, format: Format, columns: &LabelColumns) -> Result<Labels, Error> {
    let file = File::open(path).map_err(|e| Error::read(path, e))?;
    let labels = match format {
        Format::Csv => read_csv(path, file, columns)?,
        Format::Parquet => read_parquet(path, file, columns)?,
    };
    if labels.is_empty() {
        return Err(Error::labels(path, None, None, "the file has no rows"));
    }
    Ok(labels)
}

/// A label time as text: Unix milliseconds, or an RFC 3339 time in UTC
/// (`2026-12-01T10:00:00Z`, fractions of a second allowed).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(text).map_err(|e| {
        format!("`{text}` is neither Unix milliseconds nor an RFC 3339 time in UTC ({e})")
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("`{text}` is before 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| format!("`{text}` is too far in the future"))
}

fn column_index(path: &Path, names: &[&str], wanted: &str, what: &str) -> Result<usize, Error> {
    names.iter().position(|n| *n == wanted).ok_or_else(|| {
        Error::labels(
            path,
            None,
            None,
            format!(
                "no column `{wanted}` for the {what} (columns: {}); name it with --{what}-column",
                names.join(", ")
            ),
        )
    })
}

fn read_csv(path: &Path, file: File, columns: &LabelColumns) -> Result<Labels, Error> {
    let mut reader = csv::Reader::from_reader(BufReader::new(file));
    let headers = reader
        .headers()
        .map_err(|e| Error::labels(path, None, None, format!("the header row: {e}")))?
        .clone();
    let names: Vec<&str> = headers.iter().collect();
    let entity = column_index(path, &names, &columns.entity, "entity")?;
    let time = column_index(path, &names, &columns.time, "time")?;
    let extra: Vec<usize> = (0..names.len())
        .filter(|i| ![entity, time].contains(i))
        .collect();
    let mut texts: Vec<Vec<String>> = vec![Vec::new(); extra.len()];
    let mut labels = Labels::default();
    for (i, record) in reader.records().enumerate() {
        let row = i as u64 + 1;
        let record = record.map_err(|e| Error::labels(path, Some(row), None, e.to_string()))?;
        let id = record.get(entity).unwrap_or_default();
        if id.is_empty() {
            let message = "the entity id is empty";
            return Err(Error::labels(
                path,
                Some(row),
                Some(&columns.entity),
                message,
            ));
        }
        let at = parse_time(record.get(time).unwrap_or_default())
            .map_err(|m| Error::labels(path, Some(row), Some(&columns.time), m))?;
        labels.entities.push(id.to_string());
        labels.times_ms.push(at);
        for (t, &c) in texts.iter_mut().zip(&extra) {
            t.push(record.get(c).unwrap_or_default().to_string());
        }
    }
    labels.extra = extra
        .iter()
        .zip(texts)
        .map(|(&c, t)| typed(names[c], &t))
        .collect();
    Ok(labels)
}

/// A CSV column typed by what all its cells are: integers, numbers, booleans, or text.
/// Empty cells are nulls.
fn typed(name: &str, cells: &[String]) -> (Arc<Field>, ArrayRef) {
    let present = || cells.iter().filter(|c| !c.is_empty());
    let array: ArrayRef =
        if present().all(|c| c.parse::<i64>().is_ok()) && present().next().is_some() {
            Arc::new(Int64Array::from_iter(
                cells.iter().map(|c| c.parse::<i64>().ok()),
            ))
        } else if present().all(|c| c.parse::<f64>().is_ok()) && present().next().is_some() {
            Arc::new(Float64Array::from_iter(
                cells.iter().map(|c| c.parse::<f64>().ok()),
            ))
        } else if present().all(|c| c == "true" || c == "false") && present().next().is_some() {
            Arc::new(BooleanArray::from_iter(cells.iter().map(
                |c| match c.as_str() {
                    "" => None,
                    c => Some(c == "true"),
                },
            )))
        } else {
            Arc::new(StringArray::from_iter(
                cells.iter().map(|c| (!c.is_empty()).then_some(c.as_str())),
            ))
        };
    let field = Field::new(name, array.data_type().clone(), true);
    (Arc::new(field), array)
}

fn read_parquet(path: &Path, file: File, columns: &LabelColumns) -> Result<Labels, Error> {
    let unreadable = |e: parquet::errors::ParquetError| {
        Error::labels(
            path,
            None,
            None,
            format!("not a readable Parquet file: {e}"),
        )
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(unreadable)?;
    let schema = builder.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let entity = column_index(path, &names, &columns.entity, "entity")?;
    let time = column_index(path, &names, &columns.time, "time")?;
    let reader = builder.build().map_err(unreadable)?;
    let mut labels = Labels::default();
    let mut extra: Vec<Vec<ArrayRef>> = vec![Vec::new(); names.len()];
    for batch in reader {
        let batch: RecordBatch = batch
            .map_err(|e| Error::labels(path, Some(labels.len() as u64 + 1), None, e.to_string()))?;
        let first = labels.len() as u64 + 1;
        entity_ids(batch.column(entity), first, |row, id| match id {
            Some(id) if !id.is_empty() => {
                labels.entities.push(id);
                Ok(())
            }
            _ => Err(Error::labels(
                path,
                Some(row),
                Some(&columns.entity),
                "the entity id is null or empty",
            )),
        })
        .map_err(|e| e.in_column(path, &columns.entity))?;
        label_times(batch.column(time), first, |row, at| {
            let at = at.map_err(|m| Error::labels(path, Some(row), Some(&columns.time), m))?;
            labels.times_ms.push(at);
            Ok(())
        })
        .map_err(|e| e.in_column(path, &columns.time))?;
        for (c, arrays) in extra.iter_mut().enumerate() {
            if c != entity && c != time {
                arrays.push(batch.column(c).clone());
            }
        }
    }
    for (c, arrays) in extra.into_iter().enumerate() {
        if c == entity || c == time {
            continue;
        }
        let field = schema.fields()[c].clone();
        let parts: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
        let array = if parts.is_empty() {
            arrow_array::new_empty_array(field.data_type())
        } else {
            arrow_select::concat::concat(&parts)
                .map_err(|e| Error::labels(path, None, Some(field.name()), e.to_string()))?
        };
        labels.extra.push((field, array));
    }
    Ok(labels)
}

/// A column of a type the label reader does not take.
struct Unsupported(DataType);

impl Unsupported {
    fn in_column(self, path: &Path, column: &str) -> Error {
        Error::labels(
            path,
            None,
            Some(column),
            format!("a column of type {} cannot be read here", self.0),
        )
    }
}

/// What a row callback or the column's type refused.
enum Refused {
    Row(Error),
    Type(Unsupported),
}

impl From<Error> for Refused {
    fn from(e: Error) -> Self {
        Refused::Row(e)
    }
}

impl Refused {
    fn in_column(self, path: &Path, column: &str) -> Error {
        match self {
            Refused::Row(e) => e,
            Refused::Type(t) => t.in_column(path, column),
        }
    }
}

/// Calls `each(row, id)` for every entity id of a text or integer column.
fn entity_ids(
    array: &ArrayRef,
    first_row: u64,
    mut each: impl FnMut(u64, Option<String>) -> Result<(), Error>,
) -> Result<(), Refused> {
    macro_rules! ints {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            for i in 0..a.len() {
                let id = a.is_valid(i).then(|| a.value(i).to_string());
                each(first_row + i as u64, id)?;
            }
        }};
    }
    match array.data_type() {
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            for (i, id) in a.iter().enumerate() {
                each(first_row + i as u64, id.map(str::to_string))?;
            }
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            for (i, id) in a.iter().enumerate() {
                each(first_row + i as u64, id.map(str::to_string))?;
            }
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            for (i, id) in a.iter().enumerate() {
                each(first_row + i as u64, id.map(str::to_string))?;
            }
        }
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        other => return Err(Refused::Type(Unsupported(other.clone()))),
    }
    Ok(())
}

/// Calls `each(row, time)` for every label time of a column: Unix ms (Int64), an Arrow
/// timestamp of any unit, a date, or text as [`parse_time`] reads it.
fn label_times(
    array: &ArrayRef,
    first_row: u64,
    mut each: impl FnMut(u64, Result<i64, String>) -> Result<(), Error>,
) -> Result<(), Refused> {
    let null = || Err("the time is null".to_string());
    macro_rules! scaled {
        ($t:ty, $to_ms:expr) => {{
            let a = array.as_primitive::<$t>();
            for i in 0..a.len() {
                let at = if a.is_valid(i) {
                    Ok($to_ms(i64::from(a.value(i))))
                } else {
                    null()
                };
                each(first_row + i as u64, at)?;
            }
        }};
    }
    match array.data_type() {
        DataType::Int64 => scaled!(Int64Type, |v| v),
        DataType::Timestamp(TimeUnit::Second, _) => {
            scaled!(TimestampSecondType, |v: i64| v.saturating_mul(1_000))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => scaled!(TimestampMillisecondType, |v| v),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            scaled!(TimestampMicrosecondType, |v: i64| v.div_euclid(1_000))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            scaled!(TimestampNanosecondType, |v: i64| v.div_euclid(1_000_000))
        }
        DataType::Date32 => scaled!(Date32Type, |v: i64| v.saturating_mul(86_400_000)),
        DataType::Date64 => scaled!(Date64Type, |v| v),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            entity_ids(array, first_row, |row, text| {
                let at = text.map_or_else(null, |t| parse_time(&t));
                each(row, at)
            })?;
        }
        other => return Err(Refused::Type(Unsupported(other.clone()))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use arrow_array::TimestampMicrosecondArray;
    use arrow_schema::Schema;
    use parquet::arrow::ArrowWriter;

    use super::*;

    fn csv(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".csv")
            .tempfile()
            .expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    fn message(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn times_are_unix_ms_or_rfc3339_in_utc() {
        assert_eq!(parse_time("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Ok(1_500));
        assert_eq!(parse_time(" 1970-01-01T00:01:00Z "), Ok(60_000));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("").is_err());
    }

    #[test]
    fn csv_labels_keep_their_other_columns_typed_by_their_cells() {
        let f = csv("entity_id,timestamp,label,score,ok,note\n\
                     u1,1000,1,0.5,true,\n\
                     u2,1970-01-01T00:00:02Z,0,,false,hi\n");
        let l = read(f.path(), Format::Csv, &LabelColumns::default()).expect("labels");
        assert_eq!(l.entities, vec!["u1", "u2"]);
        assert_eq!(l.times_ms, vec![1_000, 2_000]);
        let types: Vec<(&str, &DataType)> = l
            .extra
            .iter()
            .map(|(f, a)| (f.name().as_str(), a.data_type()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("label", &DataType::Int64),
                ("score", &DataType::Float64),
                ("ok", &DataType::Boolean),
                ("note", &DataType::Utf8)
            ]
        );
        assert!(l.extra[1].1.is_null(1), "an empty cell is a null");
        assert_eq!(l.extra[3].1.as_string::<i32>().value(1), "hi");
    }

    #[test]
    fn a_bad_csv_row_is_named_by_row_and_column() {
        let f = csv("entity_id,timestamp\nu1,1000\nu2,soon\n");
        let m = message(read(f.path(), Format::Csv, &LabelColumns::default()).expect_err("bad"));
        assert!(
            m.contains("row 2") && m.contains("`timestamp`") && m.contains("soon"),
            "{m}"
        );
        let f = csv("entity_id,timestamp\n,1000\n");
        let m = message(read(f.path(), Format::Csv, &LabelColumns::default()).expect_err("bad"));
        assert!(m.contains("row 1") && m.contains("empty"), "{m}");
        let f = csv("user,ts\nu1,1000\n");
        let m = message(read(f.path(), Format::Csv, &LabelColumns::default()).expect_err("bad"));
        assert!(
            m.contains("no column `entity_id`") && m.contains("user, ts"),
            "{m}"
        );
        let custom = LabelColumns {
            entity: "user".into(),
            time: "ts".into(),
        };
        assert_eq!(
            read(f.path(), Format::Csv, &custom).expect("labels").len(),
            1
        );
        let f = csv("entity_id,timestamp\n");
        let m = message(read(f.path(), Format::Csv, &LabelColumns::default()).expect_err("empty"));
        assert!(m.contains("no rows"), "{m}");
    }

    fn parquet(batch: RecordBatch) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new()
            .suffix(".parquet")
            .tempfile()
            .expect("temp file");
        let mut w = ArrowWriter::try_new(f.reopen().expect("reopen"), batch.schema(), None)
            .expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        f
    }

    #[test]
    fn parquet_labels_take_integer_ids_and_timestamps_of_any_unit() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("entity_id", DataType::Int64, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("label", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7, 8])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_500_000, 2_000_000])
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![Some(0.5), None])),
            ],
        )
        .expect("batch");
        let f = parquet(batch);
        let l = read(f.path(), Format::Parquet, &LabelColumns::default()).expect("labels");
        assert_eq!(l.entities, vec!["7", "8"]);
        assert_eq!(l.times_ms, vec![1_500, 2_000]);
        assert_eq!(
            l.extra[0].1.data_type(),
            &DataType::Float64,
            "kept as it was"
        );
    }

    #[test]
    fn a_wrongly_typed_parquet_column_is_named() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("entity_id", DataType::Utf8, false),
            Field::new("timestamp", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a"])),
                Arc::new(Float64Array::from(vec![1.0])),
            ],
        )
        .expect("batch");
        let f = parquet(batch);
        let m =
            message(read(f.path(), Format::Parquet, &LabelColumns::default()).expect_err("bad"));
        assert!(m.contains("`timestamp`") && m.contains("Float64"), "{m}");
        let m = message(
            read(
                Path::new("/nonexistent/labels.parquet"),
                Format::Parquet,
                &LabelColumns::default(),
            )
            .expect_err("missing"),
        );
        assert!(m.contains("/nonexistent/labels.parquet"), "{m}");
    }
}
