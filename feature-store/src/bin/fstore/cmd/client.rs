//! The verbs that talk to a running feature store: `register`, `get`, `fetch`, `watch`,
//! `describe`, `ls`, `invalidate`, `put`, `cancel` (and `dlq`, in [`super::dlq`];
//! `events` and `export`, in [`super::log`]; `backfill`, in [`super::backfill`]; `publish` and `rollback`, in [`super::publish`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use fstore_proto::api;
use serde_json::json;
use tokio_stream::StreamExt;

use super::dlq;
use crate::output::{self, millis_text, print_json, table, timestamp_text, type_name};
use fstore::client::Client;

#[derive(Args, Debug, Clone, Default)]
pub struct GetArgs {
    /// Entity ids.
    #[arg(short, long = "entity", required = true)]
    pub entities: Vec<String>,
    /// Features, as name or name@version.
    #[arg(short, long = "feature", required = true)]
    pub features: Vec<String>,
    /// Request-time inputs for every entity: name=text or name:TYPE=value.
    #[arg(short, long = "input")]
    pub inputs: Vec<String>,
    /// Wait for the values (up to --wait) instead of answering at once.
    #[arg(long)]
    pub sync: bool,
    /// How long to wait with --sync or watch, e.g. 2s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// Recompute values older than this; 0s bypasses the cache.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_staleness: Option<Duration>,
    /// Serve an older value as STALE while it is recomputed.
    #[arg(long)]
    pub allow_stale: bool,
}

impl GetArgs {
    /// The GetFeatures request these arguments ask for; every entity gets every input.
    pub fn request(&self) -> Result<api::GetFeaturesRequest, crate::input::Error> {
        let inputs: HashMap<String, api::Value> = self
            .inputs
            .iter()
            .map(|i| crate::input::parse(i))
            .collect::<Result<_, _>>()?;
        Ok(api::GetFeaturesRequest {
            entities: self
                .entities
                .iter()
                .map(|e| api::EntityRequest {
                    entity_id: e.clone(),
                    inputs: inputs.clone(),
                })
                .collect(),
            features: self.features.clone(),
            mode: if self.sync {
                api::Mode::Sync as i32
            } else {
                api::Mode::Async as i32
            },
            wait_ms: self.wait.map_or(0, |w| w.as_millis() as u64),
            max_staleness_ms: self.max_staleness.map(|d| d.as_millis() as u64),
            max_staleness_ms_by_feature: HashMap::new(),
            allow_stale: self.allow_stale,
        })
    }

    /// The WatchFeatures request: the same features, streamed for up to `--wait`.
    pub fn watch_request(&self) -> Result<api::WatchFeaturesRequest, crate::input::Error> {
        let mut req = self.request()?;
        req.mode = api::Mode::Async as i32;
        req.wait_ms = 0;
        Ok(api::WatchFeaturesRequest {
            target: Some(api::watch_features_request::Target::Request(req)),
            wait_ms: self.wait.map_or(0, |w| w.as_millis() as u64),
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Registers the features of a TOML file, in file order.
    Register { file: PathBuf },
    /// Asks for features of entities.
    Get(GetArgs),
    /// The current state of a ticket; with --wait, once every result is final.
    Fetch {
        ticket: String,
        /// Poll until every result is final, for at most this long (e.g. 30s), showing
        /// how many are; still pending then: exit code of DEADLINE_EXCEEDED.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
    },
    /// Streams results as they become final.
    Watch(GetArgs),
    /// A feature's definition, dependencies both ways and lineage.
    Describe { feature: String },
    /// Lists features (or flows with --flows).
    Ls {
        #[arg(long)]
        flows: bool,
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Dead letters: jobs that used up their attempts.
    #[command(subcommand)]
    Dlq(dlq::Verb),
    /// Drops a feature's values, and everything downstream, for one entity or all.
    Invalidate {
        feature: String,
        #[arg(long)]
        entity: Option<String>,
    },
    /// Stores request-time inputs of entities, without asking for a feature.
    Put {
        /// Entity ids.
        #[arg(short, long = "entity", required = true)]
        entities: Vec<String>,
        /// Inputs for every entity: name=text or name:TYPE=value.
        #[arg(short, long = "input", required = true)]
        inputs: Vec<String>,
    },
    /// Gives a ticket up: its computes nobody else waits on are dropped.
    Cancel { ticket: String },
    /// The feature log: result-ready events, training exports.
    #[command(flatten)]
    Log(super::log::Verb),
    /// Backfills: features computed for many entities on the batch lane.
    #[command(subcommand)]
    Backfill(super::backfill::Verb),
    /// Repeating backfills: their runs and gate verdicts.
    #[command(subcommand)]
    Schedule(super::backfill::ScheduleVerb),
    /// Generations of snapshot-served features: which is published, the gate's reports.
    #[command(subcommand)]
    Publish(super::publish::Verb),
    /// Publishes an earlier generation of a snapshot-served feature again.
    Rollback {
        /// name or name@version.
        feature: String,
        /// The generation to publish [default: the one published before the current].
        #[arg(long)]
        to: Option<u64>,
    },
}

pub async fn run(target: super::auth::Target<'_>, json: bool, verb: Verb) -> anyhow::Result<()> {
    let mut store = target.connect().await?;
    match verb {
        Verb::Register { file } => register(&mut store, &file, json).await,
        Verb::Get(a) => output::print_response(&store.get_features(a.request()?).await?, json),
        Verb::Fetch { ticket, wait: None } => {
            output::print_response(&store.get_ticket(ticket).await?, json)
        }
        Verb::Fetch {
            ticket,
            wait: Some(wait),
        } => output::print_response(&fetch_until_final(&store, ticket, wait).await?, json),
        Verb::Watch(a) => watch(&store, &a, json).await,
        Verb::Describe { feature } => describe(&store.describe_feature(feature).await?, json),
        Verb::Ls { flows: true, .. } => {
            print!("{}", flows_table(&store.list_flows().await?));
            Ok(())
        }
        Verb::Ls {
            flows: false,
            prefix,
        } => list_features(&store.list_features(prefix).await?, json),
        Verb::Dlq(verb) => dlq::run(&store, verb, json).await,
        Verb::Invalidate { feature, entity } => {
            let r = store
                .invalidate(feature, entity.unwrap_or_default())
                .await?;
            println!("invalidated: {}", r.invalidated.join(", "));
            Ok(())
        }
        Verb::Put { entities, inputs } => {
            let inputs: HashMap<String, api::Value> = inputs
                .iter()
                .map(|i| crate::input::parse(i))
                .collect::<Result<_, _>>()?;
            let entities = entities
                .into_iter()
                .map(|entity_id| api::EntityRequest {
                    entity_id,
                    inputs: inputs.clone(),
                })
                .collect();
            let r = store.put_inputs(entities).await?;
            if json {
                return print_json(&json!({ "stored": r.stored }));
            }
            println!("stored {} inputs", r.stored);
            Ok(())
        }
        Verb::Cancel { ticket } => {
            let r = store.cancel_ticket(ticket).await?;
            if json {
                return print_json(&json!({
                    "dropped": r.dropped, "kept": r.kept, "already_complete": r.already_complete,
                }));
            }
            if r.already_complete {
                println!("nothing to cancel: every result of the ticket is final");
            } else {
                println!(
                    "cancelled: {} computes dropped, {} kept for other callers",
                    r.dropped, r.kept
                );
            }
            Ok(())
        }
        Verb::Log(verb) => super::log::run(&store, verb, json).await,
        Verb::Backfill(verb) => super::backfill::run(&store, verb, json).await,
        Verb::Schedule(verb) => super::backfill::run_schedule(&store, verb, json).await,
        Verb::Publish(verb) => super::publish::run(&store, verb, json).await,
        Verb::Rollback { feature, to } => super::publish::rollback(&store, feature, to, json).await,
    }
}

async fn register(store: &mut Client, file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let done = store.register_file(&text).await?;
    // Then the schedules, whose entity files are relative to the registration file.
    let schedules = fstore::definitions::schedules(&text)?;
    let base = file.parent().unwrap_or(std::path::Path::new("."));
    for s in schedules {
        let entities = crate::entities::read(&base.join(&s.entities), &s.id_column)?;
        let spec = api::StartBackfillRequest {
            features: s.features,
            max_staleness_ms: s.max_staleness.map(|d| d.as_millis() as u64),
            stage: s.stage,
            every_ms: s.every.as_millis() as u64,
            schedule: s.name.clone(),
            entities: Vec::new(),
        };
        let first = store.start_backfill_with(spec, entities).await?;
        eprintln!(
            "schedule {}: every {}, first run {}",
            s.name,
            humantime::format_duration(s.every),
            first.id
        );
    }
    if json {
        let rows: Vec<_> = done
            .iter()
            .map(|r| {
                let f = r.feature.clone().unwrap_or_default();
                json!({"feature": f.name, "version": f.version, "created": r.created, "lineage": r.lineage_hash})
            })
            .collect();
        return print_json(&json!(rows));
    }
    let rows: Vec<Vec<String>> = done
        .iter()
        .map(|r| {
            let f = r.feature.clone().unwrap_or_default();
            let result = if r.created {
                "new version"
            } else {
                "unchanged"
            };
            vec![
                f.name,
                f.version.to_string(),
                result.to_string(),
                r.lineage_hash.clone(),
            ]
        })
        .collect();
    print!("{}", table(&["FEATURE", "VER", "RESULT", "LINEAGE"], &rows));
    Ok(())
}

/// Polls a ticket (20 ms, growing to 0.5 s between polls) until every result is final,
/// or fails with DEADLINE_EXCEEDED naming how many are still pending after `wait`.
async fn fetch_until_final(
    store: &Client,
    ticket: String,
    wait: Duration,
) -> anyhow::Result<api::GetFeaturesResponse> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(20);
    let mut r = store.get_ticket(ticket.clone()).await?;
    let mut progress =
        crate::progress::Progress::new(format!("ticket {ticket}"), r.results.len() as u64);
    loop {
        let pending = r
            .results
            .iter()
            .filter(|x| x.status() == api::Status::Pending)
            .count();
        progress.set((r.results.len() - pending) as u64, "final");
        if pending == 0 {
            progress.finish();
            return Ok(r);
        }
        if tokio::time::Instant::now() >= deadline {
            progress.finish();
            return Err(tonic::Status::deadline_exceeded(format!(
                "ticket {ticket} still has {pending} pending after {}; fetch it later or cancel it",
                humantime::format_duration(wait)
            ))
            .into());
        }
        tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
        pause = (pause * 3 / 2).min(Duration::from_millis(500));
        r = store.get_ticket(ticket.clone()).await?;
    }
}

async fn watch(store: &Client, a: &GetArgs, json: bool) -> anyhow::Result<()> {
    let mut stream = store.watch_features(a.watch_request()?).await?;
    while let Some(event) = stream.next().await {
        let Some(r) = event?.result else { continue };
        if json {
            println!("{}", serde_json::to_string(&output::result_json(&r))?);
        } else {
            println!(
                "{:<16} {:<24} {:<8} {}",
                r.entity_id,
                r.feature,
                output::status_name(r.status()),
                if r.error.is_empty() {
                    output::value_text(r.value.as_ref())
                } else {
                    r.error.clone()
                }
            );
        }
    }
    Ok(())
}

fn describe(d: &api::DescribeFeatureResponse, json: bool) -> anyhow::Result<()> {
    let def = d.definition.clone().unwrap_or_default();
    if json {
        return print_json(&json!({
            "name": def.name, "version": def.version, "entity_type": def.entity_type, "flow": def.flow,
            "params": def.params, "ttl_ms": def.ttl_ms, "owner": def.owner, "description": def.description,
            "lineage": d.lineage_hash, "dependencies": d.dependencies, "dependents": d.dependents, "versions": d.versions,
        }));
    }
    println!(
        "{}@{}  ({} entities, flow {}, ttl {})",
        def.name,
        def.version,
        def.entity_type,
        def.flow,
        millis_text(def.ttl_ms)
    );
    println!("  {}", def.description);
    println!("  owner:        {}", def.owner);
    println!("  lineage:      {}", d.lineage_hash);
    println!("  params:       {:?}", def.params);
    println!("  reads:        {}", d.dependencies.join(", "));
    println!("  read by:      {}", d.dependents.join(", "));
    println!("  versions:     {:?}", d.versions);
    if let Some(s) = &d.stats {
        let last = if s.last_computed_at_ms > 0 {
            timestamp_text(s.last_computed_at_ms)
        } else {
            "never".to_string()
        };
        let by = match s.replicas {
            0 | 1 => "this replica".to_string(),
            n => format!("{n} replicas"),
        };
        println!(
            "  served ({by}): {} hits, {} misses, {} coalesced, {} failures (hit rate {:.1}%), last computed {last}",
            s.hits,
            s.misses,
            s.coalesced,
            s.failures,
            100.0 * s.hit_rate
        );
        let ages: Vec<String> = s
            .ages
            .iter()
            .map(|b| format!("<={}: {}", b.le, b.count))
            .collect();
        println!("  value ages:   {}", ages.join("  "));
        if s.partial + s.complete > 0 {
            let oldest = if s.oldest_partial_at_ms > 0 {
                format!(
                    ", oldest partial computed {}",
                    timestamp_text(s.oldest_partial_at_ms)
                )
            } else {
                String::new()
            };
            println!(
                "  enrichment:   {} partial, {} complete{oldest}",
                s.partial, s.complete
            );
        }
    }
    if let Some(f) = &d.flow {
        for m in &f.models {
            println!(
                "  model:        {} on {} ({}, sha256 {}, loaded in {} ms)",
                m.name,
                m.worker,
                if m.loaded { "loaded" } else { "unloaded" },
                &m.sha256.get(..12).unwrap_or(""),
                m.load_ms
            );
        }
    }
    Ok(())
}

/// `ls --flows`: always a table.
fn flows_table(r: &api::ListFlowsResponse) -> String {
    let rows: Vec<Vec<String>> = r
        .flows
        .iter()
        .map(|f| {
            let inputs: Vec<String> = f
                .inputs
                .iter()
                .map(|i| format!("{}:{}", i.name, type_name(i.value_type)))
                .collect();
            vec![
                format!("{}@{}", f.name, f.version),
                inputs.join(" "),
                type_name(f.output),
                f.live_workers.to_string(),
                f.slots.to_string(),
                f.queued.to_string(),
                f.description.clone(),
            ]
        })
        .collect();
    table(
        &[
            "FLOW",
            "INPUTS",
            "OUTPUT",
            "WORKERS",
            "SLOTS",
            "QUEUED",
            "DESCRIPTION",
        ],
        &rows,
    )
}

fn list_features(r: &api::ListFeaturesResponse, json: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<_> = r.features.iter().map(|f| json!({"name": f.name, "version": f.latest_version, "entity_type": f.entity_type, "flow": f.flow, "ttl_ms": f.ttl_ms, "owner": f.owner})).collect();
        return print_json(&json!(rows));
    }
    let rows: Vec<Vec<String>> = r
        .features
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.latest_version.to_string(),
                f.entity_type.clone(),
                f.flow.clone(),
                type_name(f.value_type),
                millis_text(f.ttl_ms),
                f.owner.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["FEATURE", "VER", "ENTITY", "FLOW", "TYPE", "TTL", "OWNER"],
            &rows
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> GetArgs {
        GetArgs {
            entities: vec!["doc:1".into(), "doc:2".into()],
            features: vec!["doc.words".into()],
            inputs: vec!["text=a b c".into(), "n:i64=3".into()],
            sync: true,
            wait: Some(Duration::from_secs(2)),
            max_staleness: Some(Duration::from_millis(1500)),
            allow_stale: true,
        }
    }

    #[test]
    fn get_sends_every_input_with_every_entity() {
        let req = args().request().expect("valid args");
        assert_eq!(req.entities.len(), 2);
        assert!(req.entities.iter().all(|e| e.inputs.len() == 2));
        assert_eq!(req.mode, api::Mode::Sync as i32);
        assert_eq!(req.wait_ms, 2000);
        assert_eq!(req.max_staleness_ms, Some(1500));
        assert!(req.allow_stale);
    }

    #[test]
    fn watch_waits_in_the_stream_not_in_the_request() {
        let w = args().watch_request().expect("valid args");
        assert_eq!(w.wait_ms, 2000);
        let Some(api::watch_features_request::Target::Request(req)) = w.target else {
            panic!("a watch of a request")
        };
        assert_eq!((req.mode, req.wait_ms), (api::Mode::Async as i32, 0));
    }

    #[test]
    fn a_bad_input_is_refused_before_any_call() {
        let mut a = args();
        a.inputs.push("x:f64=many".into());
        assert!(matches!(a.request(), Err(crate::input::Error::NotA { .. })));
    }
}
