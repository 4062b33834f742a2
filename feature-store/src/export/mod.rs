//! Training exports from the feature log, to Parquet or CSV:
//!
//! - [`range`]: every logged value of some features over a time range, one row each,
//!   with its entity, feature, version, times, the request inputs it read, and the value
//!   in a typed column per feature;
//! - [`point_in_time`]: for each label event `(entity_id, timestamp)` of a training set,
//!   each feature's latest READY value computed at or before the timestamp — never a later
//!   one — with its age, or null when none existed ([`join`]).
//!
//! Both read the log through a [`LogSource`] (the `ReadLog` call of
//! [`crate::client::Client`], so a tenant exports only its own records) and write through
//! a [`sink::Sink`]: a temporary file renamed into place when complete. Memory does not
//! grow with the log: a range export holds one batch of rows and the Parquet row group in
//! progress; a join holds the labels and one value per (label, feature), the size of its
//! output.

pub mod columns;
mod error;
pub mod join;
pub mod labels;
mod point_in_time;
mod range;
pub mod sink;

pub use error::Error;
pub use point_in_time::{JoinExport, point_in_time};
pub use range::{RangeExport, range};

use std::path::{Path, PathBuf};

use arrow_schema::{DataType, TimeUnit};
use async_trait::async_trait;
use fstore_proto::api;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value as Json, json};
use tonic::Status;

use self::columns::{ColumnType, Mismatch};
use self::join::Selection;

/// Rows per record batch handed to the writer.
pub const BATCH_ROWS: usize = 8192;
/// A join asks the server for its entities by id up to this many; past it, it reads the
/// features' whole history up to the last label and filters here.
pub const MAX_FILTER_ENTITIES: usize = 1_000;
/// Progress is reported every this many records read.
const PROGRESS_EVERY: u64 = 4096;

/// A file format of exports and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Parquet,
    Csv,
}

impl Format {
    /// The format a path's extension names (`.parquet`, `.pq`, `.csv`).
    pub fn of_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// `format`, or the one `path`'s extension names.
    pub fn pick(format: Option<Format>, path: &Path) -> Result<Format, Error> {
        format.or_else(|| Format::of_path(path)).ok_or_else(|| {
            Error::Invalid(format!(
                "cannot tell the format of {}: name it .parquet or .csv, or pass --format",
                path.display()
            ))
        })
    }
}

/// Where the log is read from: [`crate::client::Client`]'s `ReadLog`.
#[async_trait]
pub trait LogSource: Sync {
    async fn read_log(
        &self,
        req: api::ReadLogRequest,
    ) -> Result<BoxStream<'static, Result<api::LogEvent, Status>>, Status>;
}

#[async_trait]
impl LogSource for crate::client::Client {
    async fn read_log(
        &self,
        req: api::ReadLogRequest,
    ) -> Result<BoxStream<'static, Result<api::LogEvent, Status>>, Status> {
        Ok(crate::client::Client::read_log(self, req).await?.boxed())
    }
}

/// How far an export got.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Log records read.
    pub records: u64,
    /// Rows written (a join writes its rows at the end).
    pub rows: u64,
    /// How much of the time range the records read so far reach, 0 to 1.
    pub fraction: f64,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub rows: u64,
    /// Join only: (label, feature) cells that found a value.
    pub matched: u64,
}

/// The file an export writes.
#[derive(Debug, Clone)]
pub struct Destination {
    pub path: PathBuf,
    pub format: Format,
}

fn selections(features: &[String]) -> Result<Vec<Selection>, Error> {
    if features.is_empty() {
        return Err(Error::Invalid(
            "name at least one feature to export (-f NAME or NAME@VERSION)".to_string(),
        ));
    }
    features
        .iter()
        .map(|f| {
            let r =
                crate::names::FeatureRef::parse(f).map_err(|e| Error::Invalid(e.to_string()))?;
            Ok(Selection {
                name: r.name,
                version: r.version,
            })
        })
        .collect()
}

/// The column type of a selection: that of its first READY value in the log (which
/// also proves the feature exists: the server answers NOT_FOUND otherwise).
async fn column_type(source: &dyn LogSource, feature: &str) -> Result<ColumnType, Error> {
    let mut records = source
        .read_log(api::ReadLogRequest {
            features: vec![feature.to_string()],
            ..Default::default()
        })
        .await?;
    while let Some(event) = records.next().await {
        let record = event?.record.unwrap_or_default();
        if record.status() == api::Status::Ready
            && let Some(ty) = record.value.as_ref().and_then(ColumnType::of)
        {
            return Ok(ty);
        }
    }
    Ok(ColumnType::Null)
}

async fn column_types(
    source: &dyn LogSource,
    features: &[String],
) -> Result<Vec<ColumnType>, Error> {
    let mut out = Vec::with_capacity(features.len());
    for f in features {
        out.push(column_type(source, f).await?);
    }
    Ok(out)
}

fn mixed(feature: &str, m: Mismatch) -> Error {
    Error::MixedTypes {
        feature: feature.to_string(),
        column: m.column,
        found: m.found.map_or("no value".to_string(), |t| t.to_string()),
    }
}

fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Progress as an export reads the log: every [`PROGRESS_EVERY`] records, how far
/// into `[from, to]` the record times reach (`from`: the first record's time unless the
/// export names one).
struct Reporter<'a> {
    progress: &'a mut (dyn FnMut(Progress) + Send),
    from: Option<i64>,
    to: i64,
}

impl<'a> Reporter<'a> {
    fn new(progress: &'a mut (dyn FnMut(Progress) + Send), from: Option<i64>, to: i64) -> Self {
        Reporter { progress, from, to }
    }

    /// One more record read, computed at `at`, with `rows` written or waiting.
    fn read(&mut self, summary: &Summary, rows: u64, at: i64) {
        if !summary.records.is_multiple_of(PROGRESS_EVERY) {
            return;
        }
        let from = *self.from.get_or_insert(at);
        let fraction = if self.to <= from {
            0.0
        } else {
            ((at - from) as f64 / (self.to - from) as f64).clamp(0.0, 1.0)
        };
        (self.progress)(Progress {
            records: summary.records,
            rows,
            fraction,
        });
    }

    fn done(&mut self, summary: &Summary) {
        (self.progress)(Progress {
            records: summary.records,
            rows: summary.rows,
            fraction: 1.0,
        });
    }
}

/// A request value as JSON: numbers, booleans and strings as themselves, bytes as
/// base64, tensors as `{shape, data}`.
fn value_json(v: &api::Value) -> Json {
    use api::value::Kind;
    use base64::Engine as _;
    match &v.kind {
        None => Json::Null,
        Some(Kind::F64(x)) => json!(x),
        Some(Kind::I64(x)) => json!(x),
        Some(Kind::Bool(x)) => json!(x),
        Some(Kind::String(s)) => json!(s),
        Some(Kind::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(Kind::Tensor(t)) => json!({ "shape": t.shape, "data": t.data }),
        Some(Kind::Relation(r)) => json!({ "entity_type": r.entity_type, "ids": r.ids }),
    }
}
