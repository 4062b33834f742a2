//! Where an export's rows go: a Parquet or CSV file, written to a temporary file beside
//! the destination and renamed into place only when the export completes, so a failed
//! or interrupted export leaves nothing half-written. The writing runs on its own
//! blocking thread, fed batches through a channel of two: the reader never blocks the
//! reactor, and at most a few batches wait in memory.
//!
//! Parquet: snappy-compressed, a row group flushed whenever the one in progress passes
//! [`ROW_GROUP_BYTES`]. CSV: a header row; timestamps as RFC 3339 in UTC, tensors as a
//! JSON list, floats always with a decimal point, bytes as base64, nulls as empty
//! cells.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use base64::Engine as _;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tokio::sync::mpsc;

use super::{Error, Format};

/// A Parquet row group is flushed once the one in progress holds this much.
pub const ROW_GROUP_BYTES: usize = 32 * 1024 * 1024;

/// An export file being written. Dropped without [`Sink::finish`], it removes its
/// temporary file.
#[derive(Debug)]
pub struct Sink {
    batches: mpsc::Sender<Message>,
    writer: Option<tokio::task::JoinHandle<Result<u64, Error>>>,
}

impl Sink {
    /// Starts writing `schema`'s rows to a temporary file beside `path`.
    pub fn create(path: &Path, format: Format, schema: SchemaRef) -> Result<Sink, Error> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::write(path, e))?;
        let file = tmp.reopen().map_err(|e| Error::write(path, e))?;
        let encoder = match format {
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                Encoder::Parquet(
                    ArrowWriter::try_new(file, schema, Some(props))
                        .map_err(|e| Error::parquet(path, e))?,
                )
            }
            Format::Csv => Encoder::Csv(csv_writer(file, &schema)),
        };
        let (batches, rx) = mpsc::channel(2);
        let destination = path.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || write_all(encoder, rx, tmp, destination));
        Ok(Sink {
            batches,
            writer: Some(writer),
        })
    }

    /// Hands a batch to the writer; waits while two are queued.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), Error> {
        if self.batches.send(Message::Batch(batch)).await.is_err() {
            // The writer stopped: its error says why.
            return Err(self.outcome().await.err().unwrap_or(Error::Internal(
                "the export's writer stopped without an error".to_string(),
            )));
        }
        Ok(())
    }

    /// Writes what is queued, closes the file and renames it into place; the number of
    /// rows written.
    pub async fn finish(mut self) -> Result<u64, Error> {
        // A writer that already stopped reports why below.
        let _ = self.batches.send(Message::Finish).await;
        self.outcome().await
    }

    /// How the writer ended (it ends once told to finish, or on an error).
    async fn outcome(&mut self) -> Result<u64, Error> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::Internal("the export's writer was already joined".to_string()))?;
        writer
            .await
            .map_err(|e| Error::Internal(format!("the export's writer failed: {e}")))?
    }
}

/// What the writer thread is sent: a batch, or the word to complete the file. A channel
/// closed without [`Message::Finish`] (the export failed or was dropped) discards it.
#[derive(Debug)]
enum Message {
    Batch(RecordBatch),
    Finish,
}

enum Encoder {
    Parquet(ArrowWriter<File>),
    Csv(csv::Writer<BufWriter<File>>),
}

fn csv_writer(file: File, schema: &SchemaRef) -> csv::Writer<BufWriter<File>> {
    let mut w = csv::Writer::from_writer(BufWriter::new(file));
    // The header goes with the first record; an empty export still gets it.
    let _ = w.write_record(schema.fields().iter().map(|f| f.name().as_str()));
    w
}

/// The writer thread: every batch, then, if told to finish, the file closed, synced and
/// renamed; otherwise the temporary file is removed.
fn write_all(
    mut encoder: Encoder,
    mut batches: mpsc::Receiver<Message>,
    tmp: tempfile::NamedTempFile,
    destination: PathBuf,
) -> Result<u64, Error> {
    let path = destination.as_path();
    let mut rows = 0u64;
    loop {
        let batch = match batches.blocking_recv() {
            Some(Message::Batch(batch)) => batch,
            Some(Message::Finish) => break,
            None => return Err(Error::Internal("the export was abandoned".to_string())),
        };
        rows += batch.num_rows() as u64;
        match &mut encoder {
            Encoder::Parquet(w) => {
                w.write(&batch).map_err(|e| Error::parquet(path, e))?;
                if w.in_progress_size() >= ROW_GROUP_BYTES {
                    w.flush().map_err(|e| Error::parquet(path, e))?;
                }
            }
            Encoder::Csv(w) => write_csv(w, &batch).map_err(|e| Error::write(path, e))?,
        }
    }
    match encoder {
        Encoder::Parquet(w) => {
            w.close().map_err(|e| Error::parquet(path, e))?;
        }
        Encoder::Csv(mut w) => {
            w.flush().map_err(|e| Error::write(path, e))?;
        }
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::write(path, e))?;
    tmp.persist(path).map_err(|e| Error::write(path, e.error))?;
    Ok(rows)
}

fn write_csv(w: &mut csv::Writer<BufWriter<File>>, batch: &RecordBatch) -> std::io::Result<()> {
    let columns = batch.columns();
    let mut cells = vec![String::new(); columns.len()];
    for row in 0..batch.num_rows() {
        for (cell, column) in cells.iter_mut().zip(columns) {
            cell.clear();
            csv_cell(cell, column.as_ref(), row)?;
        }
        w.write_record(&cells)?;
    }
    Ok(())
}

/// One cell's text; an error for a column type CSV has no rendering of here.
fn csv_cell(out: &mut String, array: &dyn Array, row: usize) -> std::io::Result<()> {
    use std::fmt::Write as _;
    if array.is_null(row) {
        return Ok(());
    }
    macro_rules! num {
        ($t:ty) => {{
            let _ = write!(out, "{}", array.as_primitive::<$t>().value(row));
        }};
    }
    // Floats keep a decimal point (`1.0`, not `1`), so a reader types them as floats.
    macro_rules! float {
        ($t:ty) => {{
            let _ = write!(out, "{:?}", array.as_primitive::<$t>().value(row));
        }};
    }
    let ms = |ms: i64| {
        let t = u64::try_from(ms)
            .ok()
            .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
        t.map_or_else(
            || ms.to_string(),
            |t| humantime::format_rfc3339_millis(t).to_string(),
        )
    };
    match array.data_type() {
        DataType::Utf8 => out.push_str(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => out.push_str(array.as_string::<i64>().value(row)),
        DataType::Utf8View => out.push_str(array.as_string_view().value(row)),
        DataType::Boolean => {
            let _ = write!(out, "{}", array.as_boolean().value(row));
        }
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        DataType::Float32 => float!(Float32Type),
        DataType::Float64 => float!(Float64Type),
        DataType::Binary => {
            let bytes = array.as_binary::<i32>().value(row);
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000),
                TimeUnit::Millisecond => {
                    array.as_primitive::<TimestampMillisecondType>().value(row)
                }
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(row)
                    .div_euclid(1_000),
                TimeUnit::Nanosecond => array
                    .as_primitive::<TimestampNanosecondType>()
                    .value(row)
                    .div_euclid(1_000_000),
            };
            out.push_str(&ms(v));
        }
        DataType::Date32 => {
            let days = i64::from(array.as_primitive::<Date32Type>().value(row));
            let day = ms(days.saturating_mul(86_400_000));
            out.push_str(day.split('T').next().unwrap_or(&day));
        }
        DataType::FixedSizeList(_, _) => {
            let list = array.as_fixed_size_list().value(row);
            out.push('[');
            if let Some(floats) = list.as_primitive_opt::<Float32Type>() {
                for (i, x) in floats.values().iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{x:?}");
                }
            }
            out.push(']');
        }
        DataType::Null => {}
        other => {
            return Err(std::io::Error::other(format!(
                "a column of type {other} cannot be written as CSV: export to Parquet instead"
            )));
        }
    }
    Ok(())
}

/// The schema's fields as `Arc`s, for building record batches.
pub fn schema(fields: Vec<arrow_schema::Field>) -> SchemaRef {
    Arc::new(arrow_schema::Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use arrow_array::{
        ArrayRef, BinaryArray, Float64Array, StringArray, TimestampMillisecondArray,
    };
    use arrow_schema::Field;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::export::columns::{ColumnType, ValueColumn};

    fn batch() -> RecordBatch {
        let mut tensors = ValueColumn::new(ColumnType::Tensor { width: 2 });
        let t = |d: Vec<f32>| fstore_proto::api::Value {
            kind: Some(fstore_proto::api::value::Kind::Tensor(
                fstore_proto::api::Tensor {
                    shape: vec![2],
                    data: d,
                },
            )),
        };
        tensors.append(Some(&t(vec![0.5, -1.0]))).expect("fits");
        tensors.append(None).expect("null");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["a,b", "c"])),
            Arc::new(TimestampMillisecondArray::from(vec![1_500, 0]).with_timezone("UTC")),
            Arc::new(Float64Array::from(vec![Some(1.25), None])),
            Arc::new(BinaryArray::from(vec![Some(b"hi".as_ref()), None])),
            tensors.finish(),
        ];
        let fields = vec![
            Field::new("entity_id", DataType::Utf8, false),
            Field::new(
                "computed_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("x", DataType::Float64, true),
            Field::new("raw", DataType::Binary, true),
            Field::new("emb", ColumnType::Tensor { width: 2 }.arrow(), true),
        ];
        RecordBatch::try_new(schema(fields), columns).expect("batch")
    }

    #[tokio::test]
    async fn csv_renders_every_type_and_appears_only_when_finished() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("out.csv");
        let b = batch();
        let mut sink = Sink::create(&path, Format::Csv, b.schema()).expect("sink");
        sink.write(b).await.expect("write");
        assert!(!path.exists(), "nothing at the destination before finish");
        assert_eq!(sink.finish().await.expect("finish"), 2);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "entity_id,computed_at,x,raw,emb\n\
             \"a,b\",1970-01-01T00:00:01.500Z,1.25,aGk=,\"[0.5,-1.0]\"\n\
             c,1970-01-01T00:00:00.000Z,,,\n"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }

    #[tokio::test]
    async fn parquet_round_trips_and_an_unfinished_sink_leaves_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("out.parquet");
        let b = batch();
        let mut sink = Sink::create(&path, Format::Parquet, b.schema()).expect("sink");
        sink.write(b.clone()).await.expect("write");
        sink.finish().await.expect("finish");
        let file = File::open(&path).expect("open");
        let read: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader")
            .collect::<Result<_, _>>()
            .expect("batches");
        assert_eq!(read, vec![b.clone()]);

        let other = dir.path().join("dropped.parquet");
        let mut sink = Sink::create(&other, Format::Parquet, b.schema()).expect("sink");
        sink.write(b).await.expect("write");
        drop(sink);
        // The writer thread ends when the channel closes; give it a moment to remove
        // its temporary file.
        for _ in 0..100 {
            if std::fs::read_dir(dir.path()).expect("ls").count() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!other.exists());
    }
}
