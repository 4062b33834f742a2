//! The invariant checker, run once the load and the faults have stopped and the system has
//! settled: backfills done, every READY value in the feature log equal to the reference,
//! no FAILED but poison, dead letters of poison only, one event per logged value for each
//! subscriber, and no value key computed twice unless a fault on a planner explains it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use fstore_proto::api::{self, BackfillState, Status};
use fstore_tests::TestClient;

use crate::events::Received;
use crate::faults::Fault;
use crate::features::{DEP, Expect, GOOD, POISON, ROOT, SHORT, VER, reference};
use crate::topology::{Endpoints, TENANTS};

/// What the checker found; `violations` empty means the run passed.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) backfills: Vec<String>,
    pub(crate) log_values: u64,
    pub(crate) log_ready_checked: u64,
    pub(crate) log_failed_poison: u64,
    pub(crate) log_failed_unexpected: u64,
    pub(crate) log_wrong: u64,
    pub(crate) recomputes_allowed: u64,
    pub(crate) duplicates_explained: u64,
    pub(crate) duplicates_unexplained: u64,
    pub(crate) log_repeats: u64,
    pub(crate) dead_letters: u64,
    pub(crate) dead_letters_other: u64,
    /// Per tenant: (received, missing, duplicated, unknown) events.
    pub(crate) events: Vec<(u64, u64, u64, u64)>,
    pub(crate) violations: Vec<String>,
    pub(crate) examples: Vec<String>,
}

impl Verdict {
    fn example(&mut self, s: String) {
        if self.examples.len() < 12 {
            self.examples.push(s);
        }
    }
}

/// An answer from whichever replica gives one, within `bound`.
async fn any_replica<T, F, Fut>(
    endpoints: &Endpoints,
    key: &str,
    bound: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut(TestClient) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + bound;
    let mut last = String::from("no replica up");
    for r in 0.. {
        if let Some(c) = endpoints.get(r % endpoints.len().max(1)) {
            match tokio::time::timeout(Duration::from_secs(15), f(c.with_key(key))).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(s)) => last = format!("{:?}: {}", s.code(), s.message()),
                Err(_) => last = "no answer in 15 s".into(),
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    anyhow::bail!("{last}")
}

pub(crate) async fn read_log(
    endpoints: &Endpoints,
    key: &str,
) -> anyhow::Result<Vec<api::LogEvent>> {
    any_replica(endpoints, key, Duration::from_secs(30), |c| async move {
        c.log(&[], false).await
    })
    .await
}

/// Waits (within `bound`) for every backfill to end and for the logs to stop growing.
pub(crate) async fn settle(
    endpoints: &Endpoints,
    admin_keys: &[String],
    backfills: &[(usize, String)],
    bound: Duration,
    v: &mut Verdict,
) {
    let deadline = Instant::now() + bound;
    for (t, id) in backfills {
        loop {
            let got = any_replica(endpoints, &admin_keys[*t], Duration::from_secs(10), |c| {
                let id = id.clone();
                async move {
                    let req = c.req(api::GetBackfillRequest { id });
                    c.raw
                        .clone()
                        .get_backfill(req)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await;
            let state = got.as_ref().map(|b| b.state());
            if matches!(state, Ok(BackfillState::Done | BackfillState::Canceled))
                || Instant::now() > deadline
            {
                match got {
                    Ok(b) => {
                        v.backfills.push(format!(
                            "{} {}: {} of {} done, {} skipped, {} failed",
                            TENANTS[*t], b.id, b.done, b.total, b.skipped, b.failed
                        ));
                        if b.state() != BackfillState::Done
                            || b.failed > 0
                            || b.done + b.skipped != b.total
                        {
                            v.violations.push(format!(
                                "backfill {} ended {:?}: {b:?}",
                                b.id,
                                b.state()
                            ));
                        }
                    }
                    Err(e) => v.violations.push(format!("backfill {id}: {e:#}")),
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut last = Vec::new();
    let mut stable_since = Instant::now();
    while Instant::now() < deadline {
        let mut now = Vec::new();
        for k in admin_keys {
            now.push(read_log(endpoints, k).await.map_or(0, |l| l.len()));
        }
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(3) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The `value` param of every version of `chaos.ver` named in `versions`.
async fn ver_values(
    endpoints: &Endpoints,
    key: &str,
    versions: &HashSet<u32>,
) -> (HashMap<u32, f64>, Vec<String>) {
    let mut out = HashMap::new();
    let mut unread = Vec::new();
    for v in versions {
        let feature = format!("{VER}@{v}");
        let got = any_replica(endpoints, key, Duration::from_secs(30), |c| {
            let f = feature.clone();
            async move { c.describe(&f).await }
        })
        .await;
        let value = match &got {
            Ok(d) => d
                .definition
                .as_ref()
                .and_then(|d| d.params.get("value").and_then(|p| p.parse().ok())),
            Err(_) => None,
        };
        match value {
            Some(x) => {
                out.insert(*v, x);
            }
            // Why the reference of this version is unknown, for the report.
            None => unread.push(match got {
                Ok(d) => format!(
                    "{feature}: described without a `value` param: {:?}",
                    d.definition
                ),
                Err(e) => format!("{feature}: cannot be described: {e}"),
            }),
        }
    }
    (out, unread)
}

fn f64_value(r: &api::LogRecord) -> Option<f64> {
    match r.value.as_ref()?.kind.as_ref()? {
        api::value::Kind::F64(x) => Some(*x),
        _ => None,
    }
}

/// Checks tenant `t`'s log, dead letters and subscriber; `ver_seen` are the READY values
/// of `chaos.ver` the load received.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn tenant(
    endpoints: &Endpoints,
    t: usize,
    admin_key: &str,
    from: u64,
    received: &Received,
    invalidated: &HashSet<(usize, String)>,
    ver_seen: &[(usize, u32, f64)],
    faults: &[Fault],
    v: &mut Verdict,
) -> anyhow::Result<()> {
    let name = TENANTS[t];
    let log = read_log(endpoints, admin_key)
        .await
        .with_context(|| format!("reading the log of {name}"))?;
    let log: Vec<api::LogEvent> = log.into_iter().filter(|e| e.sequence > from).collect();
    let mut versions: HashSet<u32> = ver_seen
        .iter()
        .filter(|(x, _, _)| *x == t)
        .map(|(_, v, _)| *v)
        .collect();
    for e in &log {
        if let Some(r) = &e.record
            && r.feature == VER
        {
            versions.insert(r.version);
        }
    }
    let (vers, unread) = ver_values(endpoints, admin_key, &versions).await;
    for why in unread {
        v.example(format!("{name}: {why}"));
    }
    for (_, version, got) in ver_seen.iter().filter(|(x, _, _)| *x == t) {
        if vers
            .get(version)
            .is_none_or(|want| (want - got).abs() > 1e-6)
        {
            v.log_wrong += 1;
            v.example(format!(
                "{name}: answered {VER}@{version} = {got}, registered {:?}",
                vers.get(version)
            ));
        }
    }
    // Values: every record against the reference.
    let mut computes: BTreeMap<&str, Vec<(i64, &api::LogRecord)>> = BTreeMap::new();
    for e in &log {
        let Some(r) = &e.record else { continue };
        v.log_values += 1;
        match (
            r.status(),
            reference(&r.feature, r.version, &r.entity_id, &vers),
        ) {
            (Status::Ready, Some(Expect::Value(want)))
                if f64_value(r).is_some_and(|g| (g - want).abs() < 1e-6) =>
            {
                v.log_ready_checked += 1;
            }
            (Status::Failed, Some(Expect::Failed)) if !r.error.is_empty() => {
                v.log_failed_poison += 1
            }
            (Status::Failed, _) => {
                v.log_failed_unexpected += 1;
                v.example(format!(
                    "{name}: log #{}: {}@{} of {} FAILED after {} attempts: {}",
                    e.sequence, r.feature, r.version, r.entity_id, r.attempts, r.error
                ));
            }
            (s, want) => {
                v.log_wrong += 1;
                v.example(format!(
                    "{name}: log #{}: {}@{} of {} {} {:?}, reference {want:?}",
                    e.sequence,
                    r.feature,
                    r.version,
                    r.entity_id,
                    s.as_str_name(),
                    f64_value(r)
                ));
            }
        }
        if GOOD.contains(&r.feature.as_str()) && r.feature != POISON {
            computes
                .entry(r.value_key.as_str())
                .or_default()
                .push((r.planned_at_ms, r));
        }
    }
    // Computes per value key: one per generation (the log de-duplicates a redelivered
    // generation's record); a second generation needs a fault on a planner.
    for (key, mut gens) in computes {
        gens.sort_by_key(|(p, _)| *p);
        let all = gens.len() as u64;
        gens.dedup_by_key(|(p, _)| *p);
        v.log_repeats += all - gens.len() as u64;
        if gens.len() < 2 {
            continue;
        }
        let r = gens[0].1;
        let invalidated = (r.feature == ROOT || r.feature == DEP)
            && invalidated.contains(&(t, r.entity_id.clone()));
        if invalidated || r.feature == SHORT {
            v.recomputes_allowed += gens.len() as u64 - 1;
            continue;
        }
        let first = gens[0].0;
        for (planned, _) in &gens[1..] {
            let explained = faults.iter().any(|f| {
                f.touches_planner() && f.at_ms <= *planned && f.end_ms + 6_000 >= first - 1_000
            });
            if explained {
                v.duplicates_explained += 1;
            } else {
                v.duplicates_unexplained += 1;
                v.example(format!(
                    "{name}: {}@{} of {} (key {key}) planned at {first} and again at {planned} (+{} ms) with no fault on a planner around",
                    r.feature,
                    r.version,
                    r.entity_id,
                    planned - first
                ));
            }
        }
    }
    // Dead letters: poison only.
    let dl = any_replica(
        endpoints,
        admin_key,
        Duration::from_secs(30),
        |c| async move {
            let req = c.req(api::ListDeadLettersRequest { limit: 10_000 });
            c.raw
                .clone()
                .list_dead_letters(req)
                .await
                .map(tonic::Response::into_inner)
        },
    )
    .await
    .with_context(|| format!("listing the dead letters of {name}"))?;
    for d in &dl.dead_letters {
        if d.feature.split('@').next() == Some(POISON) {
            v.dead_letters += 1;
        } else {
            v.dead_letters_other += 1;
            v.example(format!(
                "{name}: dead letter of {} for {}: {}",
                d.feature, d.entity_id, d.error
            ));
        }
    }
    // Events: one per logged value.
    let logged: HashSet<u64> = log.iter().map(|e| e.sequence).collect();
    let mut seen = HashSet::new();
    let (mut dup, mut unknown) = (0, 0);
    for s in &received.sequences {
        if !seen.insert(*s) {
            dup += 1;
        } else if !logged.contains(s) {
            unknown += 1;
        }
    }
    let missing = logged.difference(&seen).count() as u64;
    if missing > 0 {
        let mut m: Vec<&u64> = logged.difference(&seen).collect();
        m.sort();
        v.example(format!(
            "{name}: subscriber missed {missing} events, first {:?}",
            &m[..m.len().min(5)]
        ));
    }
    v.events
        .push((received.sequences.len() as u64, missing, dup, unknown));
    Ok(())
}

/// The violations the figures amount to.
pub(crate) fn judge(v: &mut Verdict) {
    let mut add = |cond: bool, s: String| {
        if cond {
            v.violations.push(s);
        }
    };
    add(
        v.log_wrong > 0,
        format!(
            "{} logged or answered values differ from the reference",
            v.log_wrong
        ),
    );
    add(
        v.log_failed_unexpected > 0,
        format!(
            "{} FAILED values in the log that are not poison",
            v.log_failed_unexpected
        ),
    );
    add(
        v.duplicates_unexplained > 0,
        format!(
            "{} value keys computed again with no fault to explain it",
            v.duplicates_unexplained
        ),
    );
    add(
        v.dead_letters_other > 0,
        format!("{} dead letters that are not poison", v.dead_letters_other),
    );
    for (t, (_, missing, dup, unknown)) in v.events.clone().into_iter().enumerate() {
        add(
            missing + dup + unknown > 0,
            format!(
                "subscriber of {}: {missing} events missing, {dup} duplicated, {unknown} not in the log",
                TENANTS[t]
            ),
        );
    }
}
