//! Following a request to completion: one sequence of plan updates that every way of
//! asking uses. GetTicket takes the first update, a SYNC call the last one before its
//! deadline, and WatchFeatures forwards each. The first plan is made at once; each later
//! one after a ready notification for a pending key, a lost notification, or a periodic
//! re-check (notifications are a hint, the result store is the truth). The sequence ends
//! after a plan with nothing pending, or at the deadline.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::planner::{Plan, Planner};
use crate::ready::ReadyHub;
use crate::request::ValidRequest;
use crate::{Error, Result};

/// The plan updates of one request.
#[derive(Debug)]
pub struct Follower {
    planner: Planner,
    request: Arc<ValidRequest>,
    rx: broadcast::Receiver<String>,
    deadline: Instant,
    recheck: Duration,
    last: Option<Plan>,
}

impl Follower {
    /// Subscribes to ready notifications before the first plan, so a value that lands
    /// after that plan is always noticed.
    pub fn new(
        planner: Planner,
        hub: &ReadyHub,
        request: Arc<ValidRequest>,
        deadline: Instant,
        recheck: Duration,
    ) -> Self {
        Follower {
            planner,
            request,
            rx: hub.subscribe(),
            deadline,
            recheck,
            last: None,
        }
    }

    pub fn request(&self) -> &Arc<ValidRequest> {
        &self.request
    }

    /// The next plan update, or `None` once a plan had nothing pending or the deadline
    /// has passed. The first call always plans.
    pub async fn next(&mut self) -> Option<Result<Plan>> {
        if let Some(last) = &self.last {
            if !last.is_pending() || Instant::now() >= self.deadline {
                return None;
            }
            let pending: HashSet<&str> = last.pending_keys.iter().map(|k| k.as_str()).collect();
            let tick = self.deadline.min(Instant::now() + self.recheck);
            wait_for_any(&mut self.rx, &pending, tick).await;
        }
        let plan = self.planner.plan(&self.request).await;
        if let Ok(p) = &plan {
            self.last = Some(p.clone());
        }
        Some(plan)
    }

    /// The first update.
    pub async fn first(&mut self) -> Result<Plan> {
        match self.next().await {
            Some(plan) => plan,
            None => Err(Error::Internal("a request was followed twice".into())),
        }
    }

    /// The last update before the deadline: what a SYNC call answers.
    pub async fn last(mut self) -> Result<Plan> {
        while let Some(plan) = self.next().await {
            plan?;
        }
        self.last
            .ok_or_else(|| Error::Internal("a request ended without a plan".into()))
    }

    /// Every update, as a stream (for WatchFeatures).
    pub fn into_stream(self) -> impl Stream<Item = Result<Plan>> + Send {
        futures::stream::unfold(self, |mut f| async move {
            let next = f.next().await?;
            Some((next, f))
        })
    }
}

/// Returns when a pending key is notified, notifications were lost, or at `until`.
async fn wait_for_any(
    rx: &mut broadcast::Receiver<String>,
    pending: &HashSet<&str>,
    until: Instant,
) {
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(key) if pending.contains(key.as_str()) => return,
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
