//! The range export: every logged value of some features over a time range, one row
//! each — entity, feature, version, status, times, attempts, error, value key, lineage,
//! the request inputs it read (JSON) — and the value in a typed column per feature.

use std::sync::Arc;

use arrow_array::builder::{
    StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef};
use fstore_proto::api::{self, log_record::Kind};
use futures::StreamExt;
use serde_json::Value as Json;

use super::columns::{ColumnType, ValueColumn};
use super::join::Selection;
use super::sink::{self, Sink};
use super::{
    BATCH_ROWS, Destination, Error, LogSource, Progress, Reporter, Summary, column_types, mixed,
    selections, utc_ms, value_json,
};

/// A range export: `features` (`name` for every version, or `name@version`) over
/// `[from_ms, to_ms)` (0: unbounded).
#[derive(Debug, Clone, Default)]
pub struct RangeExport {
    pub features: Vec<String>,
    pub entities: Vec<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// FAILED records too (their value is null, their error set).
    pub failed: bool,
}

/// The rows of a range export, built a batch at a time.
struct RangeRows {
    schema: SchemaRef,
    names: Vec<String>,
    selections: Vec<Selection>,
    sequence: UInt64Builder,
    entity: StringBuilder,
    feature: StringBuilder,
    version: UInt32Builder,
    status: StringBuilder,
    computed_at: TimestampMillisecondBuilder,
    planned_at: TimestampMillisecondBuilder,
    attempts: UInt32Builder,
    error: StringBuilder,
    value_key: StringBuilder,
    lineage: StringBuilder,
    inputs: StringBuilder,
    values: Vec<ValueColumn>,
    len: usize,
}

impl RangeRows {
    fn new(names: Vec<String>, selections: Vec<Selection>, types: &[ColumnType]) -> RangeRows {
        let mut fields = vec![
            Field::new("sequence", DataType::UInt64, false),
            Field::new("entity_id", DataType::Utf8, false),
            Field::new("feature", DataType::Utf8, false),
            Field::new("version", DataType::UInt32, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("computed_at", utc_ms(), false),
            Field::new("planned_at", utc_ms(), false),
            Field::new("attempts", DataType::UInt32, false),
            Field::new("error", DataType::Utf8, true),
            Field::new("value_key", DataType::Utf8, false),
            Field::new("lineage_hash", DataType::Utf8, false),
            Field::new("inputs", DataType::Utf8, true),
        ];
        for (name, ty) in names.iter().zip(types) {
            fields.push(Field::new(name, ty.arrow(), true));
        }
        RangeRows {
            schema: sink::schema(fields),
            names,
            selections,
            sequence: UInt64Builder::new(),
            entity: StringBuilder::new(),
            feature: StringBuilder::new(),
            version: UInt32Builder::new(),
            status: StringBuilder::new(),
            computed_at: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            planned_at: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            attempts: UInt32Builder::new(),
            error: StringBuilder::new(),
            value_key: StringBuilder::new(),
            lineage: StringBuilder::new(),
            inputs: StringBuilder::new(),
            values: types.iter().map(|t| ValueColumn::new(*t)).collect(),
            len: 0,
        }
    }

    fn push(&mut self, sequence: u64, r: &api::LogRecord) -> Result<(), Error> {
        // The value goes in the column of each selection it matches; a mismatch is
        // found before anything of the row is appended.
        for ((column, selection), name) in self
            .values
            .iter_mut()
            .zip(&self.selections)
            .zip(&self.names)
        {
            let value = if selection.matches(r) {
                r.value.as_ref()
            } else {
                None
            };
            column.append(value).map_err(|m| mixed(name, m))?;
        }
        self.sequence.append_value(sequence);
        self.entity.append_value(&r.entity_id);
        self.feature.append_value(&r.feature);
        self.version.append_value(r.version);
        self.status
            .append_value(r.status().as_str_name().trim_start_matches("STATUS_"));
        self.computed_at.append_value(r.computed_at_ms);
        self.planned_at.append_value(r.planned_at_ms);
        self.attempts.append_value(r.attempts);
        self.error
            .append_option((!r.error.is_empty()).then_some(&r.error));
        self.value_key.append_value(&r.value_key);
        self.lineage.append_value(&r.lineage_hash);
        let inputs = (!r.inputs.is_empty()).then(|| {
            let map: serde_json::Map<String, Json> = r
                .inputs
                .iter()
                .map(|(k, v)| (k.clone(), value_json(v)))
                .collect();
            Json::Object(map).to_string()
        });
        self.inputs.append_option(inputs);
        self.len += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordBatch, Error> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.sequence.finish()),
            Arc::new(self.entity.finish()),
            Arc::new(self.feature.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.computed_at.finish()),
            Arc::new(self.planned_at.finish()),
            Arc::new(self.attempts.finish()),
            Arc::new(self.error.finish()),
            Arc::new(self.value_key.finish()),
            Arc::new(self.lineage.finish()),
            Arc::new(self.inputs.finish()),
        ];
        columns.extend(self.values.iter_mut().map(ValueColumn::finish));
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(format!("building a batch of the range export: {e}")))
    }
}

/// Writes every logged value of `spec`'s features in its time range to `out`, oldest
/// first, calling `progress` as it goes.
pub async fn range(
    source: &dyn LogSource,
    spec: &RangeExport,
    out: &Destination,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary, Error> {
    let selections = selections(&spec.features)?;
    if spec.to_ms != 0 && spec.to_ms <= spec.from_ms {
        return Err(Error::Invalid(format!(
            "the time range is backwards or empty: --to {} is not after --from {}; swap them",
            spec.to_ms, spec.from_ms
        )));
    }
    let types = column_types(source, &spec.features).await?;
    let mut records = source
        .read_log(api::ReadLogRequest {
            features: spec.features.clone(),
            entity_ids: spec.entities.clone(),
            from_ms: spec.from_ms,
            to_ms: spec.to_ms,
            include_inputs: false,
        })
        .await?;
    let mut rows = RangeRows::new(spec.features.clone(), selections, &types);
    let mut sink = Sink::create(&out.path, out.format, rows.schema.clone())?;
    let to = if spec.to_ms > 0 {
        spec.to_ms
    } else {
        fstore_substrate::time::now_ms()
    };
    let mut reporter = Reporter::new(progress, (spec.from_ms > 0).then_some(spec.from_ms), to);
    let mut summary = Summary::default();
    while let Some(event) = records.next().await {
        let event = event?;
        let record = event.record.unwrap_or_default();
        summary.records += 1;
        let wanted =
            record.kind() == Kind::Value && (spec.failed || record.status() == api::Status::Ready);
        if wanted {
            rows.push(event.sequence, &record)?;
            if rows.len == BATCH_ROWS {
                summary.rows += rows.len as u64;
                sink.write(rows.finish()?).await?;
            }
        }
        reporter.read(
            &summary,
            summary.rows + rows.len as u64,
            record.computed_at_ms,
        );
    }
    if rows.len > 0 || summary.rows == 0 {
        summary.rows += rows.len as u64;
        sink.write(rows.finish()?).await?;
    }
    sink.finish().await?;
    reporter.done(&summary);
    Ok(summary)
}
