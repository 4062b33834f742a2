//! The feature log's verbs: `events` (the result-ready stream, live, resumable) and
//! `export` (training sets to Parquet or CSV: a time range, or a point-in-time join onto
//! label events), with a progress bar on a terminal.

use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;
use fstore::client::Client;
use fstore::export::{self, Destination, Format, JoinExport, Progress, RangeExport};
use fstore_proto::api;
use serde_json::json;
use tokio_stream::StreamExt;

use crate::error::usage;
use crate::output;

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Streams result-ready events (each value that becomes READY or FAILED) as they
    /// are logged; `--after` resumes after the last sequence received.
    Events {
        #[arg(short, long = "feature")]
        features: Vec<String>,
        #[arg(short, long = "entity")]
        entities: Vec<String>,
        /// Events after this sequence (0: from the oldest kept); default: from now on.
        #[arg(long)]
        after: Option<u64>,
        /// Also the inputs stored with `fstore put`.
        #[arg(long)]
        inputs: bool,
    },
    /// Writes a training set from the feature log to Parquet or CSV: every logged value
    /// of the features in a time range (one row each), or, with --labels, each feature's
    /// latest READY value as of each label event (never a later one) with its age.
    Export(ExportArgs),
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Features to export, as name (every version) or name@version.
    #[arg(short, long = "feature", required = true)]
    features: Vec<String>,
    /// The file to write (.parquet or .csv); it appears only once complete.
    #[arg(short, long)]
    output: PathBuf,
    /// The output's format [default: from the file's extension].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// A CSV or Parquet file of label events: an entity id and a timestamp per row (Unix
    /// ms or RFC 3339 in UTC); its other columns are copied to the output.
    #[arg(long, conflicts_with_all = ["from", "to", "entities", "failed"])]
    labels: Option<PathBuf>,
    /// The labels' entity-id column.
    #[arg(long, default_value = "entity_id")]
    entity_column: String,
    /// The labels' time column.
    #[arg(long, default_value = "timestamp")]
    time_column: String,
    /// Range export: values computed at or after this time (RFC 3339 in UTC, Unix ms,
    /// or a duration ago such as 24h) [default: the oldest kept].
    #[arg(long)]
    from: Option<String>,
    /// Range export: values computed before this time [default: now].
    #[arg(long)]
    to: Option<String>,
    /// Range export: only these entities.
    #[arg(short, long = "entity")]
    entities: Vec<String>,
    /// Range export: FAILED computes too (null value, with their error).
    #[arg(long)]
    failed: bool,
}

pub async fn run(store: &Client, verb: Verb, json: bool) -> anyhow::Result<()> {
    match verb {
        Verb::Events {
            features,
            entities,
            after,
            inputs,
        } => {
            let req = api::SubscribeEventsRequest {
                features,
                entity_ids: entities,
                after_sequence: after,
                include_inputs: inputs,
            };
            let mut events = store.subscribe_events(req).await?;
            while let Some(e) = events.next().await {
                let e = e?;
                if json {
                    println!("{}", serde_json::to_string(&output::event_json(&e))?);
                } else {
                    println!("{}", output::event_text(&e));
                }
            }
            Ok(())
        }
        Verb::Export(args) => run_export(store, args, json).await,
    }
}

/// A time argument: RFC 3339 in UTC, Unix ms, or a duration before now.
fn time_arg(flag: &str, text: &str) -> anyhow::Result<i64> {
    if let Ok(ago) = humantime::parse_duration(text) {
        let now = fstore_substrate::time::now_ms();
        return Ok(now.saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)));
    }
    export::labels::parse_time(text).map_err(|m| usage(format!("--{flag}: {m}")))
}

async fn run_export(store: &Client, a: ExportArgs, json: bool) -> anyhow::Result<()> {
    let out = Destination {
        format: Format::pick(a.format, &a.output)?,
        path: a.output,
    };
    // Per mille of the export's time range.
    let mut bar = crate::progress::Progress::new("export", 1000);
    let mut report = |p: Progress| {
        bar.set(
            (p.fraction * 1000.0) as u64,
            format!("{} records, {} rows", p.records, p.rows),
        );
    };
    let started = Instant::now();
    let summary = match a.labels {
        Some(labels) => {
            let spec = JoinExport {
                features: a.features,
                labels_format: Format::pick(None, &labels)?,
                labels,
                columns: export::labels::LabelColumns {
                    entity: a.entity_column,
                    time: a.time_column,
                },
            };
            export::point_in_time(store, &spec, &out, &mut report).await
        }
        None => {
            let spec = RangeExport {
                features: a.features,
                entities: a.entities,
                from_ms: a
                    .from
                    .as_deref()
                    .map(|t| time_arg("from", t))
                    .transpose()?
                    .unwrap_or(0),
                to_ms: a
                    .to
                    .as_deref()
                    .map(|t| time_arg("to", t))
                    .transpose()?
                    .unwrap_or(0),
                failed: a.failed,
            };
            export::range(store, &spec, &out, &mut report).await
        }
    };
    bar.finish();
    let summary = summary?;
    let secs = started.elapsed().as_secs_f64();
    let rate = summary.records as f64 / secs.max(1e-9);
    if json {
        output::print_json(&json!({
            "path": out.path,
            "rows": summary.rows,
            "records": summary.records,
            "matched": summary.matched,
            "seconds": secs,
        }))
    } else {
        println!(
            "wrote {} rows to {} ({} log records read in {secs:.1} s, {rate:.0} records/s{})",
            summary.rows,
            out.path.display(),
            summary.records,
            if summary.matched > 0 {
                format!("; {} feature values found", summary.matched)
            } else {
                String::new()
            }
        );
        Ok(())
    }
}
