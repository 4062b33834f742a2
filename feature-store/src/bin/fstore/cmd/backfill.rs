//! `backfill start | status | ls | cancel`: features computed for many entities on the
//! batch lane, with a progress bar on a terminal while one is followed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use fstore::client::Client;
use fstore_proto::api::{self, BackfillState};
use serde_json::json;

use crate::error::usage;
use crate::output::{print_json, table, timestamp_text};

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Starts a backfill: every (entity, feature) missing or older than
    /// --max-staleness is computed on the batch lane, dependencies first.
    Start {
        /// Features, as name or name@version.
        #[arg(short, long = "feature", required = true)]
        features: Vec<String>,
        /// Entity ids (their inputs from --input, or stored with `fstore put`).
        #[arg(short, long = "entity")]
        entities: Vec<String>,
        /// A CSV or Parquet file of entities: an id column and one column per
        /// request input (CSV headers typed like -i: `setting:f64`).
        #[arg(long, conflicts_with = "entities")]
        file: Option<PathBuf>,
        /// The file's entity-id column.
        #[arg(long, default_value = "entity_id")]
        id_column: String,
        /// Request inputs for every --entity: name=text or name:TYPE=value.
        #[arg(short, long = "input")]
        inputs: Vec<String>,
        /// Values planned within this are fresh and skipped (0s recomputes all)
        /// [default: any unexpired value is fresh].
        #[arg(long, value_parser = humantime::parse_duration)]
        max_staleness: Option<Duration>,
        /// Stage the values as a new generation of each (snapshot-served) feature:
        /// published when the gate passes it at the end, else kept as rejected.
        #[arg(long)]
        stage: bool,
        /// Repeat it this often (e.g. 24h), as the schedule --schedule names; the
        /// first run starts now.
        #[arg(long, value_parser = humantime::parse_duration, requires = "schedule")]
        every: Option<Duration>,
        /// The schedule's name (one of that name is replaced).
        #[arg(long, requires = "every")]
        schedule: Option<String>,
        /// Follow it to the end (a progress bar on a terminal).
        #[arg(long)]
        wait: bool,
    },
    /// A backfill's progress; --wait follows it to the end.
    Status {
        id: String,
        #[arg(long)]
        wait: bool,
    },
    /// The tenant's backfills, newest first.
    Ls,
    /// Stops a backfill: nothing more is submitted.
    Cancel { id: String },
}

pub async fn run(store: &Client, verb: Verb, json: bool) -> anyhow::Result<()> {
    match verb {
        Verb::Start {
            features,
            entities,
            file,
            id_column,
            inputs,
            max_staleness,
            stage,
            every,
            schedule,
            wait,
        } => {
            let entities = match file {
                Some(path) => {
                    if !inputs.is_empty() {
                        return Err(usage(
                            "--input goes with --entity; a --file has input columns",
                        ));
                    }
                    crate::entities::read(&path, &id_column)?
                }
                None if entities.is_empty() => {
                    return Err(usage("name the entities: --entity ID... or --file FILE"));
                }
                None => {
                    let inputs = inputs
                        .iter()
                        .map(|i| crate::input::parse(i))
                        .collect::<Result<std::collections::HashMap<_, _>, _>>()?;
                    entities
                        .into_iter()
                        .map(|entity_id| api::EntityRequest {
                            entity_id,
                            inputs: inputs.clone(),
                        })
                        .collect()
                }
            };
            let spec = api::StartBackfillRequest {
                features,
                max_staleness_ms: max_staleness.map(|d| d.as_millis() as u64),
                stage,
                entities: Vec::new(),
                every_ms: every.map_or(0, |d| d.as_millis() as u64),
                schedule: schedule.unwrap_or_default(),
            };
            let b = store.start_backfill_with(spec, entities).await?;
            if wait {
                follow(store, b, json).await
            } else {
                print(&b, json)
            }
        }
        Verb::Status { id, wait } => {
            let b = store.get_backfill(id).await?;
            if wait {
                follow(store, b, json).await
            } else {
                print(&b, json)
            }
        }
        Verb::Ls => {
            let list = store.list_backfills().await?;
            if json {
                print_json(&json!(
                    list.backfills.iter().map(backfill_json).collect::<Vec<_>>()
                ))
            } else {
                let rows: Vec<Vec<String>> = list
                    .backfills
                    .iter()
                    .map(|b| {
                        vec![
                            b.id.clone(),
                            state_name(b.state()).to_string(),
                            format!("{}/{}", settled(b), b.total),
                            b.failed.to_string(),
                            timestamp_text(b.created_at_ms),
                            b.features.join(","),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["ID", "STATE", "SETTLED", "FAILED", "CREATED", "FEATURES"],
                        &rows
                    )
                );
                Ok(())
            }
        }
        Verb::Cancel { id } => print(&store.cancel_backfill(id).await?, json),
    }
}

fn settled(b: &api::Backfill) -> u64 {
    b.done + b.failed + b.skipped
}

fn state_name(s: BackfillState) -> &'static str {
    match s {
        BackfillState::Running => "RUNNING",
        BackfillState::Done => "DONE",
        BackfillState::Canceled => "CANCELED",
        BackfillState::Unspecified => "UNKNOWN",
    }
}

fn backfill_json(b: &api::Backfill) -> serde_json::Value {
    json!({
        "id": b.id,
        "state": state_name(b.state()),
        "features": b.features,
        "entities": b.entities,
        "total": b.total,
        "done": b.done,
        "failed": b.failed,
        "skipped": b.skipped,
        "rate": b.rate,
        "eta_ms": b.eta_ms,
        "created_at_ms": b.created_at_ms,
        "finished_at_ms": b.finished_at_ms,
        "runner": b.runner,
        "staged": b.staged.iter().map(|s| json!({
            "feature": s.feature, "version": s.version, "generation": s.generation,
        })).collect::<Vec<_>>(),
    })
}

fn print(b: &api::Backfill, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&backfill_json(b));
    }
    println!(
        "backfill {}  {}  {}/{} settled: {} done, {} skipped as fresh, {} failed  ({:.0}/s{})",
        b.id,
        state_name(b.state()),
        settled(b),
        b.total,
        b.done,
        b.skipped,
        b.failed,
        b.rate,
        if b.eta_ms > 0 {
            format!(
                ", about {} left",
                humantime::format_duration(Duration::from_secs(b.eta_ms / 1000))
            )
        } else {
            String::new()
        }
    );
    for s in &b.staged {
        println!(
            "  stages generation {} of {}@{} (`fstore publish status {}@{}` has the gate's verdict)",
            s.generation, s.feature, s.version, s.feature, s.version
        );
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ScheduleVerb {
    /// The tenant's schedules and their last runs (gate verdicts of staged runs).
    Ls,
    /// Stops a schedule: no run starts any more.
    Rm { name: String },
}

pub async fn run_schedule(store: &Client, verb: ScheduleVerb, json: bool) -> anyhow::Result<()> {
    let schedules = match verb {
        ScheduleVerb::Ls => store.list_schedules().await?.schedules,
        ScheduleVerb::Rm { name } => vec![store.delete_schedule(name).await?],
    };
    if json {
        return print_json(&json!(
            schedules.iter().map(schedule_json).collect::<Vec<_>>()
        ));
    }
    for s in &schedules {
        println!(
            "schedule {}  every {}  {} entities  features {}{}  next run {}",
            s.name,
            humantime::format_duration(Duration::from_millis(s.every_ms)),
            s.entities,
            s.features.join(","),
            if s.stage { " (staged)" } else { "" },
            timestamp_text(s.next_run_ms)
        );
        let rows: Vec<Vec<String>> = s
            .runs
            .iter()
            .map(|r| {
                let (id, state) = match &r.backfill {
                    Some(b) => (b.id.clone(), state_name(b.state()).to_string()),
                    None => (r.backfill_id.clone(), r.note.clone()),
                };
                let gate = r
                    .generations
                    .iter()
                    .map(|g| format!("gen {} {}", g.generation, generation_state(g.state())))
                    .collect::<Vec<_>>()
                    .join(", ");
                vec![timestamp_text(r.started_at_ms), id, state, gate]
            })
            .collect();
        print!(
            "{}",
            table(&["STARTED", "BACKFILL", "STATE", "GATE"], &rows)
        );
    }
    Ok(())
}

fn generation_state(s: api::GenerationState) -> &'static str {
    use api::GenerationState as G;
    match s {
        G::Staging => "staging",
        G::Published => "published",
        G::Superseded => "superseded",
        G::Rejected => "rejected",
        G::Abandoned => "abandoned",
        G::Unspecified => "unknown",
    }
}

fn schedule_json(s: &api::Schedule) -> serde_json::Value {
    json!({
        "name": s.name,
        "features": s.features,
        "every_ms": s.every_ms,
        "stage": s.stage,
        "entities": s.entities,
        "next_run_ms": s.next_run_ms,
        "runs": s.runs.iter().map(|r| json!({
            "backfill_id": r.backfill_id,
            "started_at_ms": r.started_at_ms,
            "note": r.note,
            "backfill": r.backfill.as_ref().map(backfill_json),
            "generations": r.generations.iter().map(|g| json!({
                "generation": g.generation, "state": generation_state(g.state()), "reason": g.reason,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Polls a backfill until it ends, showing its progress, then prints it.
async fn follow(store: &Client, mut b: api::Backfill, json: bool) -> anyhow::Result<()> {
    let mut progress = crate::progress::Progress::new(format!("backfill {}", b.id), b.total);
    while b.state() == BackfillState::Running {
        progress.set(
            settled(&b),
            format!(
                "{} failed, {:.0}/s, eta {}",
                b.failed,
                b.rate,
                humantime::format_duration(Duration::from_secs(b.eta_ms / 1000))
            ),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        b = store.get_backfill(b.id.clone()).await?;
    }
    progress.set(settled(&b), format!("{} failed", b.failed));
    progress.finish();
    print(&b, json)
}
