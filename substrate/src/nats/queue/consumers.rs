//! The job queue's consumers: one durable pull consumer per (flow, lane, tenant),
//! created by the first enqueue a process makes for it, listed by pullers every REFRESH,
//! and created again when jobs wait on a subject whose consumer is gone (deleted by
//! hand, or lost).

use std::collections::HashSet;
use std::time::Instant;

use async_nats::jetstream::consumer::{AckPolicy, Consumer, pull};
use fstore_flows::FlowId;
use futures::StreamExt;
use tracing::warn;

use super::{LaneState, NETWORK_BOUND, NatsQueue, RECONCILE, REFRESH, lock};
use crate::nats::unavailable;
use crate::queue::Lane;
use crate::{Error, token};

impl NatsQueue {
    /// The durable consumer of one (flow, lane, tenant), created if needed.
    pub(super) async fn consumer(
        &self,
        flow: &str,
        lane: Lane,
        tenant: &str,
    ) -> Result<Consumer<pull::Config>, Error> {
        let name = self.layout.consumer(flow, lane, tenant);
        if let Some(c) = lock(&self.known).get(&name) {
            return Ok(c.clone());
        }
        self.create_consumer(flow, lane, tenant).await
    }

    /// Creates (or finds) the durable consumer of one (flow, lane, tenant).
    async fn create_consumer(
        &self,
        flow: &str,
        lane: Lane,
        tenant: &str,
    ) -> Result<Consumer<pull::Config>, Error> {
        let name = self.layout.consumer(flow, lane, tenant);
        let consumer = self
            .stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.layout.jobs_subject(flow, lane, tenant),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: self.max_deliver,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| unavailable(format!("consumer for {flow}, tenant {tenant}: {e}")))?;
        lock(&self.known).insert(name, consumer.clone());
        Ok(consumer)
    }

    /// The consumers of every tenant with jobs for `flow` in `lane`, re-listed after
    /// REFRESH. No lock is held across the network calls, and they are bounded in time:
    /// a call lost with a broken connection must not stall pullers or the autoscaler.
    pub(super) async fn tenant_consumers(
        &self,
        flow: &FlowId,
        lane: Lane,
        state: &LaneState,
        force: bool,
    ) -> Result<Vec<Consumer<pull::Config>>, Error> {
        {
            let guard = lock(&state.consumers);
            let fresh = guard.0.is_some_and(|at| at.elapsed() < REFRESH);
            if fresh && !force {
                return Ok(guard.1.clone());
            }
        }
        let due = lock(&state.reconciled).is_none_or(|at| at.elapsed() >= RECONCILE);
        if due {
            tokio::time::timeout(NETWORK_BOUND, self.reconcile(flow, lane))
                .await
                .map_err(|_| unavailable("checking the consumers timed out"))??;
            *lock(&state.reconciled) = Some(Instant::now());
        }
        let consumers = tokio::time::timeout(NETWORK_BOUND, self.list_consumers(flow, lane))
            .await
            .map_err(|_| unavailable("listing consumers timed out"))??;
        *lock(&state.consumers) = (Some(Instant::now()), consumers.clone());
        Ok(consumers)
    }

    /// Gives every subject of `flow` in `lane` that holds jobs its consumer, if it has
    /// none: a consumer deleted by hand leaves its jobs in the stream with nobody to
    /// deliver them, and enqueuers only create consumers they have not seen.
    async fn reconcile(&self, flow: &FlowId, lane: Lane) -> Result<(), Error> {
        let flow = flow.to_string();
        let mut subjects = self
            .stream
            .info_with_subjects(self.layout.jobs_of(&flow, lane))
            .await
            .map_err(unavailable)?;
        let mut tenants = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, count) = subject.map_err(unavailable)?;
            let tenant = subject.rsplit('.').next().and_then(token::decode);
            if let (Some(tenant), true) = (tenant, count > 0) {
                tenants.push(tenant);
            }
        }
        if tenants.is_empty() {
            return Ok(());
        }
        let mut names = HashSet::new();
        let mut listed = self.stream.consumer_names();
        while let Some(name) = listed.next().await {
            names.insert(name.map_err(unavailable)?);
        }
        for tenant in tenants {
            let name = self.layout.consumer(&flow, lane, &tenant);
            if !names.contains(&name) {
                warn!(consumer = %name, "jobs without a consumer (deleted?); creating it again");
                lock(&self.known).remove(&name);
                self.create_consumer(&flow, lane, &tenant).await?;
            }
        }
        Ok(())
    }

    async fn list_consumers(
        &self,
        flow: &FlowId,
        lane: Lane,
    ) -> Result<Vec<Consumer<pull::Config>>, Error> {
        let prefix = self.layout.consumers_of(&flow.to_string(), lane);
        let mut names = self.stream.consumer_names();
        let mut mine = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(unavailable)?;
            if name.starts_with(&prefix) {
                mine.push(name);
            }
        }
        mine.sort();
        let mut consumers = Vec::with_capacity(mine.len());
        for name in mine {
            let cached = lock(&self.known).get(&name).cloned();
            let c = match cached {
                Some(c) => c,
                None => {
                    let c: Consumer<pull::Config> =
                        self.stream.get_consumer(&name).await.map_err(unavailable)?;
                    lock(&self.known).insert(name, c.clone());
                    c
                }
            };
            consumers.push(c);
        }
        Ok(consumers)
    }
}
