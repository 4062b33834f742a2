//! The substrate's option structs, built from a [`Config`]: they have no defaults of
//! their own, so every default stays in this module's parent.

use super::{Config, parse_rate};

impl Config {
    pub fn worker_options(&self, worker_id: String) -> fstore_substrate::WorkerOptions {
        fstore_substrate::WorkerOptions {
            worker_id,
            slots: self.worker.slots,
            min_slots: self.worker.min_slots,
            scaling: fstore_substrate::ScalingOptions {
                jobs_per_slot: self.worker.jobs_per_slot,
                scale_down_after: self.worker.scale_down_after,
                tick: self.worker.scale_tick,
                flows: self
                    .worker
                    .flows
                    .iter()
                    .map(|(name, b)| {
                        (
                            name.clone(),
                            fstore_substrate::SlotBounds {
                                min: b.min_slots,
                                max: b.max_slots,
                            },
                        )
                    })
                    .collect(),
            },
            max_batch: self.worker.max_batch,
            max_wait: self.worker.max_wait,
            batch_every: self.worker.batch_every,
            batch_slots: self.worker.batch_slots,
            max_attempts: self.worker.max_attempts,
            max_deliveries: u32::try_from(self.nats.max_deliver).unwrap_or(u32::MAX),
            retry_base: self.worker.retry_base,
            retry_max: self.worker.retry_max,
            failure_ttl: self.cache.failure_ttl,
            claim_ttl: self.cache.claim_ttl,
            heartbeat: self.nats.heartbeat,
            progress_interval: (self.nats.ack_wait / 3).max(std::time::Duration::from_millis(100)),
            rates: self
                .worker
                .rates
                .iter()
                .filter_map(|(flow, rate)| Some((flow.clone(), parse_rate(rate)?)))
                .collect(),
        }
    }

    pub fn nats_options(&self, url: &str) -> fstore_substrate::nats::Options {
        fstore_substrate::nats::Options {
            url: url.to_string(),
            prefix: self.nats.prefix.clone(),
            replicas: self.nats.replicas,
            ack_wait: self.nats.ack_wait,
            max_deliver: self.nats.max_deliver,
            duplicate_window: self.queue.duplicate_window,
            max_queued_per_flow: self.queue.max_queued_per_flow,
            max_queued_per_tenant: self.queue.max_queued_per_tenant,
            ticket_ttl: self.tickets.retention,
            claim_ttl: self.cache.claim_ttl,
            l1_max_bytes: self.nats.l1_max_bytes,
            heartbeat: self.nats.heartbeat,
            log: self.log_options(),
            backfill_retention: self.backfill.retention,
            claim_orphan_after: self.cache.claim_orphan_after,
            security: fstore_substrate::nats::Security {
                require_tls: self.nats.require_tls,
                ca_file: self.nats.ca_file.clone(),
                cert_file: self.nats.cert_file.clone(),
                key_file: self.nats.key_file.clone(),
                creds_file: self.nats.creds_file.clone(),
                nkey_seed_file: self.nats.nkey_seed_file.clone(),
                user: self.nats.user.clone(),
                password: self.nats.password.clone(),
                token: self.nats.token.clone(),
            },
        }
    }

    pub fn embedded_options(&self) -> fstore_substrate::embedded::Options {
        fstore_substrate::embedded::Options {
            cache_max_bytes: self.cache.max_bytes,
            ticket_ttl: self.tickets.retention,
            max_queued_per_flow: self.queue.max_queued_per_flow,
            max_queued_per_tenant: self.queue.max_queued_per_tenant,
            duplicate_window: self.queue.duplicate_window,
            log: self.log_options(),
            claim_orphan_after: self.cache.claim_orphan_after,
        }
    }

    fn log_options(&self) -> fstore_substrate::LogOptions {
        fstore_substrate::LogOptions {
            dir: self.log.dir.clone(),
            max_age: self.log.max_age,
            max_bytes: self.log.max_bytes,
            segment_bytes: self.log.segment_bytes,
        }
    }
}
