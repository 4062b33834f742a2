//! The point-in-time export: the labels read, the log offered to the as-of join
//! ([`super::join::AsOf`]), then one row per label in the labels' order — the label's
//! columns, and per feature its value, `<feature>.version` and `<feature>.age_ms`.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::builder::UInt32Builder;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, SchemaRef};
use fstore_proto::api;
use futures::StreamExt;

use super::columns::{ColumnType, ValueColumn};
use super::join::AsOf;
use super::labels::{self, LabelColumns, Labels};
use super::sink::{self, Sink};
use super::{
    BATCH_ROWS, Destination, Error, Format, LogSource, MAX_FILTER_ENTITIES, Progress, Reporter,
    Summary, column_types, mixed, selections, utc_ms,
};

/// A point-in-time join of `features` onto the label events in `labels`.
#[derive(Debug, Clone)]
pub struct JoinExport {
    pub features: Vec<String>,
    pub labels: PathBuf,
    pub labels_format: Format,
    pub columns: LabelColumns,
}

/// Joins `spec`'s features as of each label event onto the labels and writes one row
/// per label, in the labels' order, to `out`.
pub async fn point_in_time(
    source: &dyn LogSource,
    spec: &JoinExport,
    out: &Destination,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary, Error> {
    let selections = selections(&spec.features)?;
    let labels = {
        let (path, format, columns) = (
            spec.labels.clone(),
            spec.labels_format,
            spec.columns.clone(),
        );
        tokio::task::spawn_blocking(move || labels::read(&path, format, &columns))
            .await
            .map_err(|e| Error::Internal(format!("reading the labels failed: {e}")))??
    };
    let types = column_types(source, &spec.features).await?;
    let mut join = AsOf::new(&labels.entities, &labels.times_ms, selections);
    let entities: Vec<String> = if join.entities().count() <= MAX_FILTER_ENTITIES {
        join.entities().cloned().collect()
    } else {
        Vec::new()
    };
    let until = join.until_ms();
    let mut records = source
        .read_log(api::ReadLogRequest {
            features: spec.features.clone(),
            entity_ids: entities,
            from_ms: 0,
            // Nothing computed after the last label can be chosen.
            to_ms: until.saturating_add(1).max(1),
            include_inputs: false,
        })
        .await?;
    let mut summary = Summary::default();
    let mut reporter = Reporter::new(progress, None, until);
    while let Some(event) = records.next().await {
        let event = event?;
        let record = event.record.unwrap_or_default();
        join.offer(event.sequence, &record);
        summary.records += 1;
        reporter.read(&summary, 0, record.computed_at_ms);
    }
    let schema = join_schema(&labels, &spec.columns, &spec.features, &types);
    let mut sink = Sink::create(&out.path, out.format, schema.clone())?;
    for start in (0..labels.len()).step_by(BATCH_ROWS) {
        let rows = start..(start + BATCH_ROWS).min(labels.len());
        let (batch, matched) = join_batch(&schema, &labels, &join, &spec.features, &types, rows)?;
        summary.matched += matched;
        summary.rows += batch.num_rows() as u64;
        sink.write(batch).await?;
    }
    sink.finish().await?;
    reporter.done(&summary);
    Ok(summary)
}

/// The join's columns: the labels' entity and time (a UTC timestamp) under their own
/// names, the labels' other columns, then per feature its value, `<feature>.version` and
/// `<feature>.age_ms`.
fn join_schema(
    labels: &Labels,
    names: &LabelColumns,
    features: &[String],
    types: &[ColumnType],
) -> SchemaRef {
    let mut fields = vec![
        Field::new(&names.entity, DataType::Utf8, false),
        Field::new(&names.time, utc_ms(), false),
    ];
    fields.extend(labels.extra.iter().map(|(f, _)| f.as_ref().clone()));
    for (name, ty) in features.iter().zip(types) {
        fields.push(Field::new(name, ty.arrow(), true));
        fields.push(Field::new(
            format!("{name}.version"),
            DataType::UInt32,
            true,
        ));
        fields.push(Field::new(format!("{name}.age_ms"), DataType::Int64, true));
    }
    sink::schema(fields)
}

fn join_batch(
    schema: &SchemaRef,
    labels: &Labels,
    join: &AsOf,
    features: &[String],
    types: &[ColumnType],
    rows: std::ops::Range<usize>,
) -> Result<(RecordBatch, u64), Error> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            &labels.entities[rows.clone()],
        )),
        Arc::new(
            TimestampMillisecondArray::from(labels.times_ms[rows.clone()].to_vec())
                .with_timezone("UTC"),
        ),
    ];
    columns.extend(
        labels
            .extra
            .iter()
            .map(|(_, a)| a.slice(rows.start, rows.len())),
    );
    let mut matched = 0;
    for (s, (name, ty)) in features.iter().zip(types).enumerate() {
        let mut values = ValueColumn::new(*ty);
        let mut versions = UInt32Builder::with_capacity(rows.len());
        let mut ages = Vec::with_capacity(rows.len());
        for row in rows.clone() {
            let found = join.value(row, s);
            values
                .append(found.map(|v| v.value.as_ref()))
                .map_err(|m| mixed(name, m))?;
            versions.append_option(found.map(|v| v.version));
            ages.push(found.map(|v| labels.times_ms[row].saturating_sub(v.computed_at_ms)));
            matched += u64::from(found.is_some());
        }
        columns.push(values.finish());
        columns.push(Arc::new(versions.finish()));
        columns.push(Arc::new(Int64Array::from(ages)));
    }
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Internal(format!("building a batch of the join: {e}")))?;
    Ok((batch, matched))
}
