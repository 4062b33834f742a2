//! Load generation: the kinds of call, their mix, and a client that sends one call at a
//! time and follows it until final or lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fstore_benches::rng::Rng;
use fstore_proto::api::{self, Status};
use fstore_tests::TestClient;

use crate::features::{
    BAD_ENTITIES, C3, DEP, FAIL, FAIL_DEP, GOOD, ROOT, bad_entity, request, warm_entity,
};
use crate::settings::Settings;
use crate::stats::Stats;

/// Bound on one RPC; a call with no answer in this time is lost.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Hit,
    Miss,
    Failing,
    Invalidate,
    Sync,
}

impl Kind {
    pub(crate) const ALL: [Kind; 5] = [
        Kind::Hit,
        Kind::Miss,
        Kind::Failing,
        Kind::Invalidate,
        Kind::Sync,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Hit => "hit (warm set)",
            Kind::Miss => "miss (new entities)",
            Kind::Failing => "failing entities",
            Kind::Invalidate => "invalidate",
            Kind::Sync => "SYNC short wait",
        }
    }
}

pub(crate) fn pending(r: &api::GetFeaturesResponse) -> bool {
    r.results
        .iter()
        .any(|x| !matches!(x.status(), Status::Ready | Status::Failed))
}

pub(crate) fn us_since(t: Instant) -> u64 {
    t.elapsed().as_micros().max(1) as u64
}

pub(crate) struct Client {
    pub(crate) id: usize,
    pub(crate) replicas: [TestClient; 2],
    pub(crate) rng: Rng,
    pub(crate) seq: u64,
    pub(crate) settings: Arc<Settings>,
    pub(crate) stats: Stats,
    /// Start of the load, to place lost calls in the processes' logs.
    pub(crate) start: Instant,
}

impl Client {
    /// One call of `kind`, followed until final or lost.
    pub(crate) async fn one(&mut self, kind: Kind) {
        *self.stats.sent.entry(kind).or_default() += 1;
        self.seq += 1;
        let first = (self.id + self.seq as usize) % 2;
        let warm = self.settings.warm_entities;
        let w = |rng: &mut Rng| warm_entity(rng.below(warm));
        let (req, wanted_features): (api::GetFeaturesRequest, Vec<&str>) = match kind {
            Kind::Invalidate => {
                let e = w(&mut self.rng);
                let c = &self.replicas[first];
                let t = Instant::now();
                match tokio::time::timeout(CALL_TIMEOUT, c.invalidate(ROOT, &e)).await {
                    Ok(Ok(_)) => {
                        self.stats.call_us.saturating_record(us_since(t));
                        self.stats.done += 1;
                    }
                    Ok(Err(s)) => self.stats.refuse("Invalidate", &s),
                    Err(_) => self.stats.lose(format!(
                        "Invalidate {ROOT} {e}: no answer in {CALL_TIMEOUT:?}"
                    )),
                }
                return;
            }
            Kind::Hit => {
                let n = 1 + self.rng.below(4);
                let entities: Vec<String> = (0..n).map(|_| w(&mut self.rng)).collect();
                let f = self.rng.subset(&GOOD);
                (request(&entities, &f), f)
            }
            Kind::Miss => {
                let n = 1 + self.rng.below(4);
                let entities: Vec<String> = (0..n)
                    .map(|i| format!("m-{}-{}-{i}", self.id, self.seq))
                    .collect();
                let f = self.rng.subset(&GOOD);
                (request(&entities, &f), f)
            }
            Kind::Failing => {
                let entities = vec![bad_entity(self.rng.below(BAD_ENTITIES)), w(&mut self.rng)];
                let f = vec![FAIL, FAIL_DEP, ROOT];
                (request(&entities, &f), f)
            }
            Kind::Sync => {
                let entities = vec![w(&mut self.rng), format!("s-{}-{}", self.id, self.seq)];
                let f = vec![DEP, C3];
                let mut req = request(&entities, &f);
                req.mode = api::Mode::Sync as i32;
                req.wait_ms = self.settings.sync_wait_ms;
                (req, f)
            }
        };
        let wanted: HashSet<(String, String)> = req
            .entities
            .iter()
            .flat_map(|e| {
                wanted_features
                    .iter()
                    .map(|f| (e.entity_id.clone(), f.to_string()))
            })
            .collect();
        let what = format!(
            "{} {:?} × {:?}",
            kind.name(),
            req.entities
                .iter()
                .map(|e| e.entity_id.as_str())
                .collect::<Vec<_>>(),
            wanted_features
        );
        let sent_at = Instant::now();
        let answer = match tokio::time::timeout(CALL_TIMEOUT, self.replicas[first].get(req)).await {
            Ok(Ok(a)) => a,
            Ok(Err(s)) => return self.stats.refuse("GetFeatures", &s),
            Err(_) => {
                return self
                    .stats
                    .lose(format!("{what}: no answer in {CALL_TIMEOUT:?}"));
            }
        };
        let us = us_since(sent_at);
        self.stats.call_us.saturating_record(us);
        if kind == Kind::Hit {
            self.stats.hit_us.saturating_record(us);
        }
        if !pending(&answer) {
            return self.stats.settle(&wanted, &answer);
        }
        if answer.ticket.is_empty() {
            return self
                .stats
                .lose(format!("{what}: answered PENDING without a ticket"));
        }
        self.stats.followed += 1;
        self.follow(&what, &answer.ticket, first, sent_at, &wanted)
            .await;
    }

    /// Polls `ticket` (the other replica first, then alternating) until nothing is
    /// pending, within the follow-up bound.
    pub(crate) async fn follow(
        &mut self,
        what: &str,
        ticket: &str,
        first: usize,
        sent_at: Instant,
        wanted: &HashSet<(String, String)>,
    ) {
        let deadline = sent_at + self.settings.follow_up;
        let mut pause = Duration::from_millis(10);
        let mut replica = 1 - first;
        let mut last_error = None;
        let mut last_answer: Option<api::GetFeaturesResponse> = None;
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
            self.stats.polls += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(
                left.max(Duration::from_secs(1)).min(CALL_TIMEOUT),
                self.replicas[replica].ticket(ticket),
            )
            .await
            {
                Ok(Ok(r)) if !pending(&r) => {
                    self.stats.final_us.saturating_record(us_since(sent_at));
                    return self.stats.settle(wanted, &r);
                }
                Ok(Ok(r)) => last_answer = Some(r),
                Ok(Err(s)) if s.code() == tonic::Code::NotFound => {
                    return self
                        .stats
                        .lose(format!("{what}: ticket {ticket} vanished: {}", s.message()));
                }
                Ok(Err(s)) => last_error = Some(format!("{:?}: {}", s.code(), s.message())),
                Err(_) => last_error = Some("GetTicket timed out".to_string()),
            }
            if Instant::now() >= deadline {
                // What was still pending at the last answer, with its attempts.
                let stuck = last_answer.as_ref().map_or("no answer".to_string(), |r| {
                    r.results
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
                        .join(", ")
                });
                return self.stats.lose(format!(
                    "{what}, sent at {:.1} s of the load: ticket {ticket} still pending after {:?}: {stuck} (last error: {})",
                    sent_at.saturating_duration_since(self.start).as_secs_f64(),
                    self.settings.follow_up,
                    last_error.as_deref().unwrap_or("none")
                ));
            }
            replica = 1 - replica;
        }
    }

    pub(crate) fn pick(&mut self) -> Kind {
        match self.rng.below(100) {
            0..60 => Kind::Hit,
            60..85 => Kind::Miss,
            85..90 => Kind::Failing,
            90..95 => Kind::Invalidate,
            _ => Kind::Sync,
        }
    }
}
