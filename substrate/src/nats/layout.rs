//! Every name the JetStream backend uses — streams, subjects, consumers, buckets and
//! the keys inside them — built here and nowhere else. Names that come from users
//! (tenants, flows, features, workers) go through [`crate::token::encode`] in these
//! methods, so no caller can forget it. The test below pins every name: a change of
//! layout (which strands data written under the old names) is a visible test change.

use crate::queue::Lane;
use crate::token;

/// Names of streams, buckets and subjects under one prefix. `<flow>` is always a
/// flow's `name@version`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The prefix as a token: the first token of every subject.
    prefix: String,
}

impl Layout {
    pub(crate) fn new(prefix: &str) -> Self {
        Layout {
            prefix: token::encode(prefix),
        }
    }

    /// The stream names' prefix: the subjects' prefix in capitals.
    fn stream_prefix(&self) -> String {
        self.prefix.to_uppercase()
    }

    // --- jobs ---------------------------------------------------------------------

    /// The work-queue stream of every job: `<PREFIX>_JOBS`.
    pub(crate) fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.stream_prefix())
    }

    /// The subjects of the jobs stream: `<prefix>.jobs.>` (the interactive lane) and
    /// `<prefix>.batch.>` (the batch lane).
    pub(crate) fn jobs_filters(&self) -> Vec<String> {
        vec![
            format!("{}.jobs.>", self.prefix),
            format!("{}.batch.>", self.prefix),
        ]
    }

    /// The jobs of one (flow, tenant) in a lane: `<prefix>.jobs.<flow>.<tenant>`
    /// (interactive) or `<prefix>.batch.<flow>.<tenant>`.
    pub(crate) fn jobs_subject(&self, flow: &str, lane: Lane, tenant: &str) -> String {
        let lane = match lane {
            Lane::Interactive => "jobs",
            Lane::Batch => "batch",
        };
        format!(
            "{}.{lane}.{}.{}",
            self.prefix,
            token::encode(flow),
            token::encode(tenant)
        )
    }

    /// Every tenant's jobs of one flow in a lane: `<prefix>.jobs.<flow>.*` or
    /// `<prefix>.batch.<flow>.*`.
    pub(crate) fn jobs_of(&self, flow: &str, lane: Lane) -> String {
        let lane = match lane {
            Lane::Interactive => "jobs",
            Lane::Batch => "batch",
        };
        format!("{}.{lane}.{}.*", self.prefix, token::encode(flow))
    }

    /// The durable consumer of one (flow, tenant) in a lane: `c__<flow>__<tenant>`
    /// (interactive) or `b__<flow>__<tenant>`. Tokens never contain `__`, so a name
    /// splits back into its flow and tenant.
    pub(crate) fn consumer(&self, flow: &str, lane: Lane, tenant: &str) -> String {
        format!("{}{}", self.consumers_of(flow, lane), token::encode(tenant))
    }

    /// What the names of a flow's consumers in a lane (one per tenant) start with:
    /// `c__<flow>__` or `b__<flow>__`.
    pub(crate) fn consumers_of(&self, flow: &str, lane: Lane) -> String {
        let lane = match lane {
            Lane::Interactive => "c",
            Lane::Batch => "b",
        };
        format!("{lane}__{}__", token::encode(flow))
    }

    /// The core subject that wakes a flow's idle pullers: `<prefix>.wake.<flow>`.
    pub(crate) fn wake_subject(&self, flow: &str) -> String {
        format!("{}.wake.{}", self.prefix, token::encode(flow))
    }

    // --- KV buckets -----------------------------------------------------------------

    fn bucket(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    /// Value envelopes by value key: `<prefix>_values`.
    pub(crate) fn values_bucket(&self) -> String {
        self.bucket("values")
    }

    /// Tickets by id: `<prefix>_tickets`.
    pub(crate) fn tickets_bucket(&self) -> String {
        self.bucket("tickets")
    }

    /// In-flight claims by value key: `<prefix>_claims`.
    pub(crate) fn claims_bucket(&self) -> String {
        self.bucket("claims")
    }

    /// Jobs waiting on an input, by the input's value key: `<prefix>_waiters`.
    pub(crate) fn waiters_bucket(&self) -> String {
        self.bucket("waiters")
    }

    /// Invalidation watermarks ([`Layout::watermark_key`]): `<prefix>_watermarks`.
    pub(crate) fn watermarks_bucket(&self) -> String {
        self.bucket("watermarks")
    }

    /// Feature definitions ([`Layout::definition_key`]): `<prefix>_registry`.
    pub(crate) fn registry_bucket(&self) -> String {
        self.bucket("registry")
    }

    /// The spec of every flow ever advertised ([`Layout::flow_key`]): `<prefix>_flows`.
    pub(crate) fn flows_bucket(&self) -> String {
        self.bucket("flows")
    }

    /// Worker heartbeats ([`Layout::worker_key`]): `<prefix>_workers`.
    pub(crate) fn workers_bucket(&self) -> String {
        self.bucket("workers")
    }

    /// What each serve replica served: `<prefix>_served`, one key per (tenant, replica)
    /// with a TTL.
    pub(crate) fn served_bucket(&self) -> String {
        self.bucket("served")
    }

    /// The subject a KV entry is published on: `$KV.<bucket>.<key>` (the convention of
    /// JetStream KV, for puts that carry headers the KV client cannot set).
    pub(crate) fn kv_subject(&self, bucket: &str, key: &str) -> String {
        format!("$KV.{bucket}.{key}")
    }

    // --- keys inside buckets ----------------------------------------------------------

    /// A flow's key in the flows bucket: `<flow>`.
    pub(crate) fn flow_key(&self, flow: &str) -> String {
        token::encode(flow)
    }

    /// One worker's heartbeat for one flow in the workers bucket: `<flow>.<worker>`.
    pub(crate) fn worker_key(&self, flow: &str, worker: &str) -> String {
        format!("{}.{}", token::encode(flow), token::encode(worker))
    }

    /// The (flow key, worker id) of a heartbeat key; None if it is not one.
    pub(crate) fn parse_worker_key(&self, key: &str) -> Option<(String, String)> {
        let (flow, worker) = key.split_once('.')?;
        let worker = token::decode(worker).unwrap_or_else(|| worker.to_string());
        Some((flow.to_string(), worker))
    }

    /// Whether a heartbeat key belongs to `worker`.
    pub(crate) fn is_key_of_worker(&self, key: &str, worker: &str) -> bool {
        key.strip_suffix(&token::encode(worker))
            .is_some_and(|rest| rest.ends_with('.'))
    }

    /// A watermark's key: `<tenant>.<feature>` for all entities, or
    /// `<tenant>.<feature>.<entity hash>` for one (entity ids may be long: 32 hex digits
    /// of their blake3 keep the key short and still exact enough).
    pub(crate) fn watermark_key(
        &self,
        tenant: &str,
        feature: &str,
        entity: Option<&str>,
    ) -> String {
        let base = format!("{}.{}", token::encode(tenant), token::encode(feature));
        match entity {
            None => base,
            Some(e) => format!("{base}.{}", &blake3::hash(e.as_bytes()).to_hex()[..32]),
        }
    }

    /// A feature definition's key: `<tenant>.<name>.<version>`.
    pub(crate) fn definition_key(&self, tenant: &str, name: &str, version: u32) -> String {
        format!(
            "{}.{}.{version}",
            token::encode(tenant),
            token::encode(name)
        )
    }

    // --- dead letters -----------------------------------------------------------------

    /// The limits stream of dead letters: `<PREFIX>_DLQ`.
    pub(crate) fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.stream_prefix())
    }

    /// The subjects of the dead-letter stream: `<prefix>.dlq.>`.
    pub(crate) fn dlq_filter(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// The dead letters of one (tenant, flow): `<prefix>.dlq.<tenant>.<flow>`.
    pub(crate) fn dlq_subject(&self, tenant: &str, flow: &str) -> String {
        format!(
            "{}.dlq.{}.{}",
            self.prefix,
            token::encode(tenant),
            token::encode(flow)
        )
    }

    /// Every dead letter of a tenant: `<prefix>.dlq.<tenant>.*`.
    pub(crate) fn dlq_tenant_filter(&self, tenant: &str) -> String {
        format!("{}.dlq.{}.*", self.prefix, token::encode(tenant))
    }

    // --- the feature log --------------------------------------------------------------

    /// The limits stream of the feature log (and result-ready events): `<PREFIX>_LOG`.
    pub(crate) fn log_stream(&self) -> String {
        format!("{}_LOG", self.stream_prefix())
    }

    /// The subjects of the log stream: `<prefix>.log.>`.
    pub(crate) fn log_filter(&self) -> String {
        format!("{}.log.>", self.prefix)
    }

    /// The records of one feature version of a tenant:
    /// `<prefix>.log.<tenant>.<feature>.<version>`; with no version, every version
    /// (`.*`); with no feature either, every feature (`<prefix>.log.<tenant>.*.*`).
    pub(crate) fn log_subject(
        &self,
        tenant: &str,
        feature: Option<&str>,
        version: Option<u32>,
    ) -> String {
        let feature = feature.map_or_else(|| "*".to_string(), token::encode);
        let version = version.map_or_else(|| "*".to_string(), |v| v.to_string());
        format!(
            "{}.log.{}.{feature}.{version}",
            self.prefix,
            token::encode(tenant)
        )
    }

    /// The inputs a tenant stored with PutInputs: `<prefix>.log.<tenant>.inputs` (one
    /// token fewer than a feature's subjects, so the two never meet).
    pub(crate) fn log_inputs_subject(&self, tenant: &str) -> String {
        format!("{}.log.{}.inputs", self.prefix, token::encode(tenant))
    }

    /// Backfills: `<prefix>_backfills`, a record per backfill under `rec.<id>` (ids are
    /// generated hex); their entities in `<prefix>_backfill_chunks` under
    /// `chunk.<id>.<index>`, apart, so that listing the records reads no chunk.
    pub(crate) fn backfills_bucket(&self) -> String {
        self.bucket("backfills")
    }

    pub(crate) fn backfill_chunks_bucket(&self) -> String {
        self.bucket("backfill_chunks")
    }

    pub(crate) fn backfill_key(&self, id: &str) -> String {
        format!("rec.{}", token::encode(id))
    }

    pub(crate) fn backfill_chunk_key(&self, id: &str, index: u32) -> String {
        format!("chunk.{}.{index}", token::encode(id))
    }

    /// Schedules: `<prefix>_schedules`, kept until deleted; the record under
    /// `rec.<tenant>.<name>`, its entities under `chunk.<entities id>.<index>`.
    pub(crate) fn schedules_bucket(&self) -> String {
        self.bucket("schedules")
    }

    pub(crate) fn schedule_key(&self, tenant: &str, name: &str) -> String {
        format!("rec.{}.{}", token::encode(tenant), token::encode(name))
    }

    /// Published generations: `<prefix>_publish`, a record per feature under
    /// `pub.<tenant>.<feature>.<version>`; the values of its generations in
    /// `<prefix>_generations` under `gen.<tenant>.<feature>.<version>.<generation>.<index>`.
    pub(crate) fn publish_bucket(&self) -> String {
        self.bucket("publish")
    }

    pub(crate) fn generations_bucket(&self) -> String {
        self.bucket("generations")
    }

    pub(crate) fn publish_key(&self, tenant: &str, feature: &str, version: u32) -> String {
        format!(
            "pub.{}.{}.{version}",
            token::encode(tenant),
            token::encode(feature)
        )
    }

    pub(crate) fn generation_key(
        &self,
        tenant: &str,
        feature: &str,
        version: u32,
        generation: u64,
        index: u32,
    ) -> String {
        format!(
            "gen.{}.{}.{version}.{generation}.{index}",
            token::encode(tenant),
            token::encode(feature)
        )
    }

    /// Request-time inputs stored for an entity: `<prefix>_inputs`, keyed
    /// `<tenant>.<entity hash>` (as watermark keys hash entity ids).
    pub(crate) fn inputs_bucket(&self) -> String {
        self.bucket("inputs")
    }

    pub(crate) fn inputs_key(&self, tenant: &str, entity: &str) -> String {
        format!(
            "{}.{}",
            token::encode(tenant),
            &blake3::hash(entity.as_bytes()).to_hex()[..32]
        )
    }

    /// API key records: `<prefix>_keys`, one key per key id.
    pub(crate) fn keys_bucket(&self) -> String {
        self.bucket("keys")
    }

    /// Shared rate limits: `<prefix>_rates`, one key per flow.
    pub(crate) fn rates_bucket(&self) -> String {
        self.bucket("rates")
    }

    /// The enrichment index: `<prefix>_partials`, keyed `<tenant>.<entity hash>` like
    /// stored inputs.
    pub(crate) fn partials_bucket(&self) -> String {
        self.bucket("partials")
    }

    pub(crate) fn partials_key(&self, tenant: &str, entity: &str) -> String {
        self.inputs_key(tenant, entity)
    }

    /// The requests that joined compute `generation` of a claimed key, in the claims
    /// bucket: `joined.<key>.<generation>`, then `.<request id>` per request.
    pub(crate) fn joined_key(&self, key: &str, generation: u64) -> String {
        format!("joined.{}.{generation}", token::encode(key))
    }

    /// A compute whose job was submitted (enqueued or parked), in the claims bucket:
    /// `submitted.<key>.<generation>`. A claim without it past the orphan bound is
    /// taken over.
    pub(crate) fn submitted_key(&self, key: &str, generation: u64) -> String {
        format!("submitted.{}.{generation}", token::encode(key))
    }

    /// A compute given up by a cancelled ticket, in the claims bucket:
    /// `abandoned.<key>.<generation>`; watched by every worker (`abandoned.>`).
    pub(crate) fn abandoned_key(&self, key: &str, generation: u64) -> String {
        format!("abandoned.{}.{generation}", token::encode(key))
    }

    pub(crate) fn abandoned_filter(&self) -> &'static str {
        "abandoned.>"
    }

    // --- ready notifications ----------------------------------------------------------

    /// The core subject announcing that a value was stored: `<prefix>.ready.<key>`.
    pub(crate) fn ready_subject(&self, key: &str) -> String {
        format!("{}.ready.{}", self.prefix, token::encode(key))
    }

    /// Every ready notification: `<prefix>.ready.>`.
    pub(crate) fn ready_filter(&self) -> String {
        format!("{}.ready.>", self.prefix)
    }

    /// The value key a ready subject announces; None for any other subject.
    pub(crate) fn ready_key(&self, subject: &str) -> Option<String> {
        let key = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".ready.")?;
        token::decode(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = "text.stats@1";
    const FLOW_TOKEN: &str = "text_2Estats_401";

    #[test]
    fn every_name_is_pinned() {
        let l = Layout::new("fstore");
        assert_eq!(l.jobs_stream(), "FSTORE_JOBS");
        assert_eq!(l.jobs_filters(), vec!["fstore.jobs.>", "fstore.batch.>"]);
        assert_eq!(
            l.jobs_subject(FLOW, Lane::Interactive, "acme"),
            format!("fstore.jobs.{FLOW_TOKEN}.acme")
        );
        assert_eq!(
            l.jobs_subject(FLOW, Lane::Batch, "acme"),
            format!("fstore.batch.{FLOW_TOKEN}.acme")
        );
        assert_eq!(
            l.consumer(FLOW, Lane::Interactive, "acme"),
            format!("c__{FLOW_TOKEN}__acme")
        );
        assert_eq!(
            l.consumer(FLOW, Lane::Batch, "acme"),
            format!("b__{FLOW_TOKEN}__acme")
        );
        assert_eq!(
            l.consumers_of(FLOW, Lane::Interactive),
            format!("c__{FLOW_TOKEN}__")
        );
        assert_eq!(l.wake_subject(FLOW), format!("fstore.wake.{FLOW_TOKEN}"));

        assert_eq!(l.values_bucket(), "fstore_values");
        assert_eq!(l.backfills_bucket(), "fstore_backfills");
        assert_eq!(l.backfill_chunks_bucket(), "fstore_backfill_chunks");
        assert_eq!(l.backfill_key("0a1b"), "rec.0a1b");
        assert_eq!(l.backfill_chunk_key("0a1b", 7), "chunk.0a1b.7");
        assert_eq!(l.schedules_bucket(), "fstore_schedules");
        assert_eq!(l.schedule_key("acme", "nightly"), "rec.acme.nightly");
        assert_eq!(l.partials_bucket(), "fstore_partials");
        assert_eq!(l.rates_bucket(), "fstore_rates");
        assert_eq!(l.keys_bucket(), "fstore_keys");
        assert_eq!(l.publish_bucket(), "fstore_publish");
        assert_eq!(l.generations_bucket(), "fstore_generations");
        assert_eq!(l.publish_key("acme", "score", 2), "pub.acme.score.2");
        assert_eq!(
            l.generation_key("acme", "score", 2, 5, 0),
            "gen.acme.score.2.5.0"
        );
        assert_eq!(l.tickets_bucket(), "fstore_tickets");
        assert_eq!(l.log_stream(), "FSTORE_LOG");
        assert_eq!(l.log_filter(), "fstore.log.>");
        assert_eq!(
            l.log_subject("acme", Some("user.score"), Some(2)),
            "fstore.log.acme.user_2Escore.2"
        );
        assert_eq!(
            l.log_subject("acme", Some("f"), None),
            "fstore.log.acme.f.*"
        );
        assert_eq!(l.log_subject("acme", None, None), "fstore.log.acme.*.*");
        assert_eq!(l.log_inputs_subject("acme"), "fstore.log.acme.inputs");
        assert_eq!(l.inputs_bucket(), "fstore_inputs");
        assert_eq!(l.joined_key("k1", 7), "joined.k1.7");
        assert_eq!(l.abandoned_key("k1", 7), "abandoned.k1.7");
        assert_eq!(l.claims_bucket(), "fstore_claims");
        assert_eq!(l.waiters_bucket(), "fstore_waiters");
        assert_eq!(l.watermarks_bucket(), "fstore_watermarks");
        assert_eq!(l.registry_bucket(), "fstore_registry");
        assert_eq!(l.flows_bucket(), "fstore_flows");
        assert_eq!(l.workers_bucket(), "fstore_workers");
        assert_eq!(l.kv_subject("fstore_values", "k1"), "$KV.fstore_values.k1");

        assert_eq!(l.flow_key(FLOW), FLOW_TOKEN);
        assert_eq!(l.worker_key(FLOW, "w.1"), format!("{FLOW_TOKEN}.w_2E1"));
        assert_eq!(
            l.watermark_key("acme", "title.len", None),
            "acme.title_2Elen"
        );
        assert_eq!(
            l.watermark_key("acme", "title.len", Some("42")),
            format!("acme.title_2Elen.{}", &blake3::hash(b"42").to_hex()[..32])
        );
        assert_eq!(
            l.definition_key("acme", "title.len", 3),
            "acme.title_2Elen.3"
        );

        assert_eq!(l.dlq_stream(), "FSTORE_DLQ");
        assert_eq!(l.dlq_filter(), "fstore.dlq.>");
        assert_eq!(
            l.dlq_subject("acme", FLOW),
            format!("fstore.dlq.acme.{FLOW_TOKEN}")
        );
        assert_eq!(l.dlq_tenant_filter("acme"), "fstore.dlq.acme.*");

        assert_eq!(l.ready_subject("ab12"), "fstore.ready.ab12");
        assert_eq!(l.ready_filter(), "fstore.ready.>");
    }

    #[test]
    fn user_names_cannot_change_routing() {
        let l = Layout::new("fs.x");
        assert_eq!(l.jobs_stream(), "FS_2EX_JOBS");
        assert_eq!(
            l.jobs_subject("f*", Lane::Interactive, "a>b"),
            "fs_2Ex.jobs.f_2A.a_3Eb"
        );
        assert_eq!(l.dlq_subject("a b", "f"), "fs_2Ex.dlq.a_20b.f");
        assert_eq!(l.wake_subject("f.1"), "fs_2Ex.wake.f_2E1");
    }

    #[test]
    fn names_parse_back() {
        let l = Layout::new("fstore");
        let key = l.worker_key(FLOW, "w.1");
        assert_eq!(
            l.parse_worker_key(&key),
            Some((FLOW_TOKEN.to_string(), "w.1".to_string()))
        );
        assert!(l.is_key_of_worker(&key, "w.1"));
        assert!(!l.is_key_of_worker(&key, "1"));
        assert_eq!(
            l.ready_key(&l.ready_subject("ab12")).as_deref(),
            Some("ab12")
        );
        assert_eq!(l.ready_key("other.ready.ab12"), None);
    }
}
