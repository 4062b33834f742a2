//! Following a request to completion: one sequence of plan updates that every way of
//! asking uses. GetTicket takes the first update, a SYNC call the last one before its
//! deadline, and WatchFeatures forwards each. The first plan is made at once; if it is
//! pending, the follower subscribes to ready notifications and plans again at once, and
//! then after each notification for a pending key, a lost notification, or a periodic
//! re-check (notifications are a hint, the result store is the truth). The sequence ends
//! after a plan with nothing pending or a failed one, or at the deadline.
//! `watch_events` turns the updates into a watch's events: each result once, as soon as
//! it is final.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fstore_proto::api;
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::keys::ValueKey;
use crate::planner::{Plan, Planner, Planning};
use crate::ready::ReadyHub;
use crate::request::ValidRequest;
use crate::{Error, Result};

/// The plan updates of one request.
#[derive(Debug)]
pub struct Follower {
    planner: Arc<Planner>,
    hub: ReadyHub,
    request: Arc<ValidRequest>,
    /// Taken when the first plan is pending: answers that need no wait (cache hits,
    /// ASYNC, GetTicket) never subscribe.
    rx: Option<broadcast::Receiver<String>>,
    deadline: Instant,
    recheck: Duration,
    /// Plan again once every pending key was notified (backfill chunks), not at the
    /// first (calls, which answer each result as it comes).
    wait_for_all: bool,
    state: State,
}

/// Where a follower stands.
#[derive(Debug)]
enum State {
    /// Nothing planned yet.
    Start,
    /// The last plan left these keys pending.
    Pending(Vec<ValueKey>),
    /// The last plan had nothing pending, or failed.
    Done,
}

impl Follower {
    pub fn new(
        planner: Arc<Planner>,
        hub: &ReadyHub,
        request: Arc<ValidRequest>,
        deadline: Instant,
        recheck: Duration,
    ) -> Self {
        Follower {
            planner,
            hub: hub.clone(),
            request,
            rx: None,
            deadline,
            recheck,
            wait_for_all: false,
            state: State::Start,
        }
    }

    /// Plans again only once every pending key was notified (or at the re-check tick):
    /// for large requests nobody watches result by result — a backfill's chunk would
    /// otherwise be planned whole again for each of its values.
    pub fn waiting_for_all(mut self) -> Self {
        self.wait_for_all = true;
        self
    }

    pub fn request(&self) -> &Arc<ValidRequest> {
        &self.request
    }

    /// The next plan update, or `None` once a plan had nothing pending or failed, or the
    /// deadline has passed. The first call always plans.
    pub async fn next(&mut self) -> Option<Result<Plan>> {
        match &self.state {
            State::Done => return None,
            State::Start => {}
            State::Pending(keys) => {
                if Instant::now() >= self.deadline {
                    return None;
                }
                match &mut self.rx {
                    // Subscribe, then plan again at once: a value that landed after the
                    // last plan is seen by this one, and any later one by the
                    // subscription.
                    None => self.rx = Some(self.hub.subscribe()),
                    Some(rx) => {
                        let mut pending: HashSet<&str> =
                            keys.iter().map(ValueKey::as_str).collect();
                        let tick = self.deadline.min(Instant::now() + self.recheck);
                        wait_for(rx, &mut pending, self.wait_for_all, tick).await;
                    }
                }
            }
        }
        // A call's first plan says which computes it joined; a ticket's reads do not.
        let how = if matches!(self.state, State::Start) && self.request.first_call {
            Planning::First
        } else {
            Planning::Again
        };
        let plan = self.planner.plan(&self.request, how).await;
        self.state = match &plan {
            Ok(p) if p.is_pending() => State::Pending(p.pending_keys.clone()),
            _ => State::Done,
        };
        Some(plan)
    }

    /// The first update.
    pub async fn first(&mut self) -> Result<Plan> {
        match self.next().await {
            Some(plan) => plan,
            None => Err(Error::Internal("a request was followed twice".into())),
        }
    }

    /// The last update before the deadline, given the one before it: what a SYNC call
    /// answers.
    pub async fn last(mut self, mut latest: Plan) -> Result<Plan> {
        while let Some(plan) = self.next().await {
            latest = plan?;
        }
        Ok(latest)
    }

    /// Every later update, as a stream (for WatchFeatures).
    pub fn into_stream(self) -> impl Stream<Item = Result<Plan>> + Send {
        futures::stream::unfold(self, |mut f| async move {
            let next = f.next().await?;
            Some((next, f))
        })
    }
}

/// Returns when a pending key is notified (with `all`, when every one was), when
/// notifications were lost, or at `until`.
async fn wait_for(
    rx: &mut broadcast::Receiver<String>,
    pending: &mut HashSet<&str>,
    all: bool,
    until: Instant,
) {
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(key) if pending.remove(key.as_str()) && (!all || pending.is_empty()) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    tokio::time::sleep_until(until).await;
                    return;
                }
            },
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}

pub(crate) type PlanStream = Pin<Box<dyn Stream<Item = Result<Plan>> + Send>>;

/// What a watch has sent so far.
struct Watching {
    plans: PlanStream,
    ticket: String,
    sent: Vec<bool>,
    last: Option<Plan>,
    queue: VecDeque<api::WatchEvent>,
    done: bool,
}

/// Turns plan updates into watch events: each result once, as soon as it is final, and
/// when the updates end, every result not sent yet as it stands.
pub(crate) fn watch_events(
    plans: PlanStream,
    ticket: String,
) -> impl Stream<Item = Result<api::WatchEvent>> {
    let state = Watching {
        plans,
        ticket,
        sent: Vec::new(),
        last: None,
        queue: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut w| async move {
        loop {
            if let Some(event) = w.queue.pop_front() {
                return Some((Ok(event), w));
            }
            if w.done {
                return None;
            }
            match w.plans.next().await {
                Some(Ok(plan)) => {
                    w.sent.resize(plan.results.len(), false);
                    for (r, sent) in plan.results.iter().zip(w.sent.iter_mut()) {
                        let done = matches!(r.status(), api::Status::Ready | api::Status::Failed);
                        if done && !*sent {
                            *sent = true;
                            w.queue.push_back(api::WatchEvent {
                                result: Some(r.clone()),
                                ticket: w.ticket.clone(),
                            });
                        }
                    }
                    w.last = Some(plan);
                }
                Some(Err(e)) => {
                    w.done = true;
                    return Some((Err(e), w));
                }
                None => {
                    w.done = true;
                    if let Some(last) = w.last.take() {
                        for (r, sent) in last.results.iter().zip(w.sent.iter()) {
                            if !*sent {
                                w.queue.push_back(api::WatchEvent {
                                    result: Some(r.clone()),
                                    ticket: w.ticket.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
    })
}
