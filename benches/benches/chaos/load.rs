//! The chaos load: client tasks, each bound to a tenant, sending one call at a time — SYNC
//! calls, ASYNC calls followed by ticket polls, WatchFeatures streams, invalidations, new
//! versions of a feature, poison inputs and backfills — to whichever replica is up,
//! retrying what was refused as a client of the store would, following each accepted
//! call until it is final or its bound passes (lost).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fstore_benches::rng::Rng;
use fstore_proto::api::{self, Status};
use fstore_tests::TestClient;
use fstore_tests::build::f64_of;
use tonic::Code;

use crate::features::{
    DEP, Expect, GOOD, POISON, ROOT, TEXT, reference, request, text_of, ttl_ms, ver,
};
use crate::stats::Stats;
use crate::topology::Endpoints;

/// Bound on one RPC attempt (a SYNC call adds its wait).
const RPC_TIMEOUT: Duration = Duration::from_secs(8);
pub(crate) const SYNC_WAIT_MS: u64 = 3_000;
const WATCH_MS: u64 = 30_000;
const BACKFILL_ENTITIES: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Sync,
    Async,
    Watch,
    Invalidate,
    Register,
    Poison,
    Backfill,
}

impl Kind {
    pub(crate) const ALL: [Kind; 7] = [
        Kind::Sync,
        Kind::Async,
        Kind::Watch,
        Kind::Invalidate,
        Kind::Register,
        Kind::Poison,
        Kind::Backfill,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Sync => "SYNC GetFeatures",
            Kind::Async => "ASYNC GetFeatures + GetTicket",
            Kind::Watch => "WatchFeatures",
            Kind::Invalidate => "Invalidate",
            Kind::Register => "RegisterFeature (new version)",
            Kind::Poison => "poison input (ASYNC)",
            Kind::Backfill => "StartBackfill",
        }
    }
}

/// What every client task shares.
pub(crate) struct Shared {
    pub(crate) endpoints: Endpoints,
    /// The load key of each tenant.
    pub(crate) keys: Vec<String>,
    pub(crate) follow_up: Duration,
    pub(crate) warm: usize,
    pub(crate) max_backfills: usize,
    /// (tenant, entity) whose root was invalidated: their root and dep may be computed again.
    pub(crate) invalidated: Mutex<HashSet<(usize, String)>>,
    /// (tenant, backfill id) started.
    pub(crate) backfills: Mutex<Vec<(usize, String)>>,
    /// Per tenant, how many times `chaos.ver` was registered (one registrar at a time).
    pub(crate) registrations: Vec<tokio::sync::Mutex<u64>>,
}

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

fn pending(results: &[api::FeatureResult]) -> bool {
    results
        .iter()
        .any(|x| !matches!(x.status(), Status::Ready | Status::Failed))
}

/// How an attempt to get an answer ended.
enum Answer<T> {
    Got(T),
    /// A non-retryable error: the call is over.
    Refused(tonic::Status),
    /// Nothing accepted it before the bound.
    Gave,
}

pub(crate) struct Client {
    pub(crate) id: usize,
    pub(crate) tenant: usize,
    pub(crate) rng: Rng,
    pub(crate) seq: u64,
    pub(crate) stats: Stats,
    pub(crate) shared: std::sync::Arc<Shared>,
    pub(crate) start: Instant,
}

impl Client {
    pub(crate) fn pick(&mut self) -> Kind {
        match self.rng.below(100) {
            0..26 => Kind::Sync,
            26..52 => Kind::Async,
            52..68 => Kind::Watch,
            68..80 => Kind::Invalidate,
            80..92 => Kind::Poison,
            92..96 => Kind::Register,
            _ if self.backfills_started() < self.shared.max_backfills => Kind::Backfill,
            _ => Kind::Async,
        }
    }

    fn backfills_started(&self) -> usize {
        self.shared.backfills.lock().map_or(usize::MAX, |l| l.len())
    }

    fn replica_client(&self, r: usize) -> Option<TestClient> {
        Some(
            self.shared
                .endpoints
                .get(r)?
                .with_key(&self.shared.keys[self.tenant]),
        )
    }

    /// Calls `f` on a replica that is up, the other one after each failure, until it
    /// answers, refuses for good, or `deadline` passes.
    async fn unary<T, F, Fut>(
        &mut self,
        first: usize,
        deadline: Instant,
        extra: Duration,
        mut f: F,
    ) -> Answer<T>
    where
        F: FnMut(TestClient) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let replicas = self.shared.endpoints.len().max(1);
        let mut r = first % replicas;
        let mut pause = Duration::from_millis(50);
        loop {
            if let Some(c) = self.replica_client(r) {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(
                    (RPC_TIMEOUT + extra).min(left.max(Duration::from_millis(100))),
                    f(c),
                )
                .await
                {
                    Ok(Ok(v)) => return Answer::Got(v),
                    Ok(Err(s)) if !retryable(s.code()) => return Answer::Refused(s),
                    Ok(Err(s)) => {
                        *self
                            .stats
                            .retried
                            .entry(format!("{:?}", s.code()))
                            .or_default() += 1
                    }
                    Err(_) => {
                        *self
                            .stats
                            .retried
                            .entry("no answer in time".into())
                            .or_default() += 1
                    }
                }
            }
            if Instant::now() >= deadline {
                return Answer::Gave;
            }
            r = (r + 1) % replicas;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(800));
        }
    }

    /// One call of `kind`, followed until final or lost.
    pub(crate) async fn one(&mut self, kind: Kind) {
        *self.stats.sent.entry(kind).or_default() += 1;
        self.seq += 1;
        let first = (self.id + self.seq as usize) % 2;
        let sent_at = Instant::now();
        let deadline = sent_at + self.shared.follow_up;
        let t = self.tenant;
        let what = format!(
            "{} #{}-{} (tenant {t}) sent at {:.1} s",
            kind.name(),
            self.id,
            self.seq,
            sent_at.duration_since(self.start).as_secs_f64()
        );
        let warm = |rng: &mut Rng, n: usize| format!("w-{}", rng.below(n));
        let done = match kind {
            Kind::Invalidate => {
                let e = warm(&mut self.rng, self.shared.warm);
                if let Ok(mut set) = self.shared.invalidated.lock() {
                    set.insert((t, e.clone()));
                }
                let a = self
                    .unary(first, deadline, Duration::ZERO, |c| {
                        let e = e.clone();
                        async move { c.invalidate(ROOT, &e).await }
                    })
                    .await;
                self.answered(&what, a).is_some()
            }
            Kind::Register => {
                let shared = self.shared.clone();
                let mut n = shared.registrations[t].lock().await;
                let value = 100 * (*n + 1);
                let a = self
                    .unary(first, deadline, Duration::ZERO, |c| async move {
                        c.register(ver(value)).await
                    })
                    .await;
                let ok = self.answered(&what, a).is_some();
                if ok {
                    *n += 1;
                }
                ok
            }
            Kind::Backfill => self.backfill(&what, first, deadline).await,
            Kind::Sync | Kind::Async | Kind::Watch | Kind::Poison => {
                let (entities, features): (Vec<String>, Vec<&str>) = if kind == Kind::Poison {
                    (vec![format!("p-{}-{}", self.id, self.seq)], vec![POISON])
                } else {
                    let n = 1 + self.rng.below(3);
                    let mut es: Vec<String> = (0..n)
                        .map(|_| warm(&mut self.rng, self.shared.warm))
                        .collect();
                    es.push(format!("n-{}-{}", self.id, self.seq));
                    es.sort();
                    es.dedup();
                    (es, self.rng.subset(&GOOD))
                };
                let wanted: HashSet<(String, String)> = entities
                    .iter()
                    .flat_map(|e| features.iter().map(|f| (e.clone(), f.to_string())))
                    .collect();
                let mode = if kind == Kind::Sync {
                    api::Mode::Sync
                } else {
                    api::Mode::Async
                };
                let mut req = request(&entities, &features, mode);
                if kind == Kind::Sync {
                    req.wait_ms = SYNC_WAIT_MS;
                }
                let results = if kind == Kind::Watch {
                    self.watch(&what, first, deadline, req, &wanted).await
                } else {
                    self.get(&what, first, deadline, req).await
                };
                match results {
                    Some(r) => {
                        self.settle(&what, &wanted, &r);
                        true
                    }
                    None => false,
                }
            }
        };
        if done {
            *self.stats.done.entry(kind).or_default() += 1;
        }
    }

    /// The value of an answer; counts a refusal or a call nobody accepted.
    fn answered<T>(&mut self, what: &str, a: Answer<T>) -> Option<T> {
        match a {
            Answer::Got(v) => Some(v),
            Answer::Refused(s) => {
                self.stats.refused += 1;
                self.stats.wrong_examples.add(format!(
                    "{what}: refused {:?}: {}",
                    s.code(),
                    s.message()
                ));
                None
            }
            Answer::Gave => {
                self.stats.never_accepted += 1;
                self.stats.lost_examples.add(format!(
                    "{what}: no replica accepted it within {:?}",
                    self.shared.follow_up
                ));
                None
            }
        }
    }

    fn lose(&mut self, why: String) {
        self.stats.lost += 1;
        self.stats.lost_examples.add(why);
    }

    /// GetFeatures (SYNC or ASYNC), then its ticket while anything is pending.
    async fn get(
        &mut self,
        what: &str,
        first: usize,
        deadline: Instant,
        req: api::GetFeaturesRequest,
    ) -> Option<Vec<api::FeatureResult>> {
        let extra = Duration::from_millis(req.wait_ms);
        let a = self
            .unary(first, deadline, extra, |c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await;
        let r = self.answered(what, a)?;
        if !pending(&r.results) {
            return Some(r.results);
        }
        if r.ticket.is_empty() {
            self.lose(format!("{what}: answered PENDING without a ticket"));
            return None;
        }
        self.follow(what, &r.ticket, 1 - first, deadline).await
    }

    /// Polls `ticket` on alternating replicas until nothing is pending or `deadline`.
    async fn follow(
        &mut self,
        what: &str,
        ticket: &str,
        first: usize,
        deadline: Instant,
    ) -> Option<Vec<api::FeatureResult>> {
        let mut pause = Duration::from_millis(20);
        let mut r = first;
        let mut last = String::from("no answer");
        let mut refused_once = false;
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(400));
            if let Some(c) = self.replica_client(r % 2) {
                match tokio::time::timeout(RPC_TIMEOUT, c.ticket(ticket)).await {
                    Ok(Ok(x)) if !pending(&x.results) => return Some(x.results),
                    Ok(Ok(x)) => {
                        last = x
                            .results
                            .iter()
                            .filter(|x| !matches!(x.status(), Status::Ready | Status::Failed))
                            .map(|x| {
                                format!(
                                    "{} of {} {} (attempts {})",
                                    x.feature,
                                    x.entity_id,
                                    x.status().as_str_name(),
                                    x.attempts
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                    }
                    Ok(Err(s)) if s.code() == Code::NotFound => {
                        // A ticket that exists refused as unknown: counted, then followed
                        // on (the other replica may know it), so the report tells a
                        // refusal by one replica from a ticket gone for good.
                        if !refused_once {
                            refused_once = true;
                            self.stats.ticket_not_found += 1;
                            self.stats.wrong_examples.add(format!(
                                "{what}: ticket {ticket} answered NOT_FOUND: {}",
                                s.message()
                            ));
                        }
                        last = format!("NOT_FOUND: {}", s.message());
                    }
                    Ok(Err(s)) => last = format!("{:?}: {}", s.code(), s.message()),
                    Err(_) => last = "GetTicket timed out".to_string(),
                }
            }
            if Instant::now() >= deadline {
                self.lose(format!(
                    "{what}: ticket {ticket} not final within {:?}: {last}",
                    self.shared.follow_up
                ));
                return None;
            }
            r += 1;
        }
    }

    /// WatchFeatures until every pair was forwarded final; a broken stream is followed
    /// by its ticket, or sent again if it gave none.
    async fn watch(
        &mut self,
        what: &str,
        first: usize,
        deadline: Instant,
        req: api::GetFeaturesRequest,
        wanted: &HashSet<(String, String)>,
    ) -> Option<Vec<api::FeatureResult>> {
        let mut r = first;
        loop {
            let a = self
                .unary(r, deadline, Duration::ZERO, |c| {
                    let body = api::WatchFeaturesRequest {
                        target: Some(api::watch_features_request::Target::Request(req.clone())),
                        wait_ms: WATCH_MS,
                    };
                    async move {
                        c.raw
                            .clone()
                            .watch_features(c.req(body))
                            .await
                            .map(tonic::Response::into_inner)
                    }
                })
                .await;
            let mut stream = self.answered(what, a)?;
            let mut got: BTreeMap<(String, String), api::FeatureResult> = BTreeMap::new();
            let mut ticket = String::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, stream.message()).await {
                    Ok(Ok(Some(ev))) => {
                        if !ev.ticket.is_empty() {
                            ticket = ev.ticket;
                        }
                        if let Some(x) = ev.result
                            && matches!(x.status(), Status::Ready | Status::Failed)
                        {
                            got.insert((x.entity_id.clone(), x.feature.clone()), x);
                        }
                        if got.len() >= wanted.len() {
                            return Some(got.into_values().collect());
                        }
                    }
                    Ok(Ok(None)) | Ok(Err(_)) => break,
                    Err(_) => {
                        self.lose(format!(
                            "{what}: watch not final within {:?} ({} of {} results)",
                            self.shared.follow_up,
                            got.len(),
                            wanted.len()
                        ));
                        return None;
                    }
                }
            }
            if !ticket.is_empty() {
                *self
                    .stats
                    .retried
                    .entry("watch broken: ticket followed".into())
                    .or_default() += 1;
                return self.follow(what, &ticket, r + 1, deadline).await;
            }
            *self
                .stats
                .retried
                .entry("watch broken before a ticket: sent again".into())
                .or_default() += 1;
            if Instant::now() >= deadline {
                self.answered::<()>(what, Answer::Gave);
                return None;
            }
            r += 1;
        }
    }

    async fn backfill(&mut self, what: &str, first: usize, deadline: Instant) -> bool {
        let entities: Vec<api::EntityRequest> = (0..BACKFILL_ENTITIES)
            .map(|i| {
                let e = format!("b-{}-{}-{i}", self.id, self.seq);
                fstore_tests::build::entity(
                    &e,
                    &[("text", fstore_tests::build::text(&text_of(&e)))],
                )
            })
            .collect();
        let a = self
            .unary(first, deadline, Duration::ZERO, |c| {
                let msg = api::StartBackfillRequest {
                    features: vec![ROOT.to_string(), DEP.to_string(), TEXT.to_string()],
                    entities: entities.clone(),
                    ..Default::default()
                };
                async move {
                    let stream = futures::stream::iter(vec![msg]);
                    c.raw
                        .clone()
                        .start_backfill(c.req(stream))
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await;
        match self.answered(what, a) {
            Some(b) => {
                if let Ok(mut list) = self.shared.backfills.lock() {
                    list.push((self.tenant, b.id));
                }
                true
            }
            None => false,
        }
    }

    /// Checks a final answer against the reference.
    fn settle(
        &mut self,
        what: &str,
        wanted: &HashSet<(String, String)>,
        results: &[api::FeatureResult],
    ) {
        let mut seen = HashSet::new();
        for x in results {
            seen.insert((x.entity_id.clone(), x.feature.clone()));
            if x.status() == Status::Ready && x.age_ms > ttl_ms(&x.feature) {
                self.wrong(format!(
                    "{what}: {} of {} READY {} ms after it was computed, past its TTL of {} ms",
                    x.feature,
                    x.entity_id,
                    x.age_ms,
                    ttl_ms(&x.feature)
                ));
            }
            let known = std::collections::HashMap::new();
            match (
                x.status(),
                reference(&x.feature, x.version, &x.entity_id, &known),
            ) {
                (Status::Ready, Some(Expect::Deferred)) => match f64_of(x) {
                    Some(v) => {
                        self.stats.ready += 1;
                        self.stats.ver_seen.push((self.tenant, x.version, v));
                    }
                    None => self.wrong(format!(
                        "{what}: {} of {} READY without a number",
                        x.feature, x.entity_id
                    )),
                },
                (Status::Ready, Some(Expect::Value(v)))
                    if f64_of(x).is_some_and(|g| (g - v).abs() < 1e-6) =>
                {
                    self.stats.ready += 1;
                }
                (Status::Failed, Some(Expect::Failed)) if !x.error.is_empty() => {
                    self.stats.failed_expected += 1
                }
                (Status::Failed, _) => {
                    self.stats.failed_unexpected += 1;
                    self.stats.wrong_examples.add(format!(
                        "{what}: {}@{} of {} FAILED: {}",
                        x.feature, x.version, x.entity_id, x.error
                    ));
                }
                (s, want) => self.wrong(format!(
                    "{what}: {} of {}: {} {:?}, expected {want:?}",
                    x.feature,
                    x.entity_id,
                    s.as_str_name(),
                    f64_of(x)
                )),
            }
        }
        if seen != *wanted {
            self.wrong(format!(
                "{what}: answered {} distinct results, asked for {}",
                seen.len(),
                wanted.len()
            ));
        }
    }

    fn wrong(&mut self, s: String) {
        self.stats.wrong += 1;
        self.stats.wrong_examples.add(s);
    }
}
