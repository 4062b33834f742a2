//! Conformance, training exports: a point-in-time join on a hand-built history (values
//! computed at known times, one of them after a label's time, which must not be chosen)
//! and a range export, both read through the server's `ReadLog`, written to Parquet and
//! CSV and read back.

use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use fstore::export::{self, Destination, Format, JoinExport, RangeExport};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;

/// Computes `words` of `entity` for `text` (bypassing the cache) and returns the
/// value's computed_at.
async fn compute(h: &Harness, entity_id: &str, words: &str) -> anyhow::Result<i64> {
    let mut req = build::sync(&[], &["words"], 5_000);
    req.entities = vec![entity(entity_id, &[("text", text(words))])];
    req.max_staleness_ms = Some(0);
    let r = h.client.get(req).await?;
    let result = &r.results[0];
    assert_eq!(result.status(), Status::Ready, "{r:?}");
    // A distinct millisecond for the next value.
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(result.computed_at_ms)
}

fn read_parquet(path: &Path) -> anyhow::Result<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.build()?;
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    Ok(arrow_select::concat::concat_batches(
        &batches[0].schema(),
        &batches,
    )?)
}

fn f64s(batch: &RecordBatch, column: &str) -> Vec<Option<f64>> {
    let c = batch.column_by_name(column).expect("the column");
    c.as_primitive::<Float64Type>().iter().collect()
}

pub(crate) async fn point_in_time_join_never_leaks_a_later_value(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(words()).await?;
    // The history: u1's words were 1, then 2, then 3; u2's was 4 once.
    let c1 = compute(&h, "u1", "a").await?;
    let c2 = compute(&h, "u1", "a b").await?;
    let u2 = compute(&h, "u2", "w x y z").await?;
    let c3 = compute(&h, "u1", "a b c").await?;
    assert!(c1 < c2 && c2 < u2 && u2 < c3);
    let dir = tempfile::tempdir()?;
    let labels = dir.path().join("labels.csv");
    let rows = [
        ("u1", c1 - 1, "before any value"),
        ("u1", c1, "exactly at the first"),
        ("u1", c3 - 1, "just before the third"),
        ("u2", u2 + 5, "u2"),
        ("u1", c3 + 10, "after the third"),
        ("u3", c3, "an entity never computed"),
    ];
    let mut text = String::from("entity_id,timestamp,why\n");
    for (e, t, why) in rows {
        text.push_str(&format!("{e},{t},{why}\n"));
    }
    std::fs::write(&labels, text)?;
    let client = h.store_client(&h.running.url(), None).await?;
    let spec = JoinExport {
        features: vec!["words".into()],
        labels: labels.clone(),
        labels_format: Format::Csv,
        columns: Default::default(),
    };
    let out = dir.path().join("train.parquet");
    let dest = Destination {
        path: out.clone(),
        format: Format::Parquet,
    };
    let summary = export::point_in_time(&client, &spec, &dest, &mut |_| {}).await?;
    assert_eq!((summary.rows, summary.matched), (6, 4), "{summary:?}");
    let t = read_parquet(&out)?;
    assert_eq!(
        f64s(&t, "words"),
        vec![None, Some(1.0), Some(2.0), Some(4.0), Some(3.0), None],
        "each label gets the value as of its time, never a later one"
    );
    let ages: Vec<Option<i64>> = t
        .column_by_name("words.age_ms")
        .expect("ages")
        .as_primitive::<Int64Type>()
        .iter()
        .collect();
    assert_eq!(
        ages,
        vec![None, Some(0), Some(c3 - 1 - c2), Some(5), Some(10), None]
    );
    let why = t.column_by_name("why").expect("the labels' own column");
    assert_eq!(why.as_string::<i32>().value(2), "just before the third");

    // The same join as CSV.
    let csv = dir.path().join("train.csv");
    let dest = Destination {
        path: csv.clone(),
        format: Format::Csv,
    };
    export::point_in_time(&client, &spec, &dest, &mut |_| {}).await?;
    let text = std::fs::read_to_string(&csv)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "entity_id,timestamp,why,words,words.version,words.age_ms"
    );
    assert!(lines[1].ends_with(",before any value,,,"), "{}", lines[1]);
    assert!(lines[3].contains(",just before the third,2.0,1,"), "{text}");

    // A range export of [c1, c3): one row per logged value, the third excluded.
    let out = dir.path().join("range.parquet");
    let spec = RangeExport {
        features: vec!["words".into()],
        from_ms: c1,
        to_ms: c3,
        ..Default::default()
    };
    let dest = Destination {
        path: out.clone(),
        format: Format::Parquet,
    };
    let summary = export::range(&client, &spec, &dest, &mut |_| {}).await?;
    assert_eq!(summary.rows, 3, "{summary:?}");
    let t = read_parquet(&out)?;
    assert_eq!(f64s(&t, "words"), vec![Some(1.0), Some(2.0), Some(4.0)]);
    let inputs = t.column_by_name("inputs").expect("inputs");
    assert_eq!(
        inputs.as_string::<i32>().value(0),
        r#"{"text":"a"}"#,
        "the request input each value read"
    );
    assert_eq!(t.column_by_name("entity_id").expect("ids").len(), 3);

    // Refusals leave nothing behind.
    let missing = Destination {
        path: dir.path().join("never.parquet"),
        format: Format::Parquet,
    };
    let unknown = RangeExport {
        features: vec!["nope".into()],
        ..Default::default()
    };
    let e = export::range(&client, &unknown, &missing, &mut |_| {})
        .await
        .expect_err("an unknown feature");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let backwards = RangeExport {
        features: vec!["words".into()],
        from_ms: c3,
        to_ms: c1,
        ..Default::default()
    };
    let e = export::range(&client, &backwards, &missing, &mut |_| {})
        .await
        .expect_err("a backwards range");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    std::fs::write(&labels, "entity_id,timestamp\nu1,1000\nu1,later\n")?;
    let bad = JoinExport {
        features: vec!["words".into()],
        labels,
        labels_format: Format::Csv,
        columns: Default::default(),
    };
    let e = export::point_in_time(&client, &bad, &missing, &mut |_| {})
        .await
        .expect_err("a bad label row");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.to_string().contains("row 2, column `timestamp`"), "{e}");
    let names: Vec<String> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.starts_with("never"))
        .collect();
    assert!(names.is_empty(), "nothing half-written: {names:?}");
    h.stop().await;
    Ok(())
}
