//! The floor: the same miss written directly with async-nats (a job on a work-queue
//! stream, a worker that puts the value into a KV bucket and publishes "ready", a caller
//! that wakes on it and reads the value back), padded to fstore's message sizes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use async_nats::jetstream::{self, consumer::pull, kv, stream};
use bytes::Bytes;
use fstore_benches::{Call, Failures};
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::measure::Fresh;
use crate::settings::Settings;

/// The raw floor's names: apart from fstore's (`FSTORE_JOBS`, `fstore_*`).
pub(crate) const RAW_STREAM: &str = "RAW_JOBS";
pub(crate) const RAW_JOB_SUBJECT: &str = "raw.jobs.probe.bench";
pub(crate) const RAW_BUCKET: &str = "raw_values";
pub(crate) const RAW_CONSUMER: &str = "raw_worker";

/// publish job (acked, with a message id) → worker: KV put, ready, ack → caller wakes on
/// ready → KV get.
#[derive(Clone)]
pub(crate) struct RawMiss {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) values: kv::Store,
    pub(crate) keys: Fresh,
    pub(crate) job_bytes: usize,
    pub(crate) value_bytes: usize,
    pub(crate) wait: Duration,
}

impl RawMiss {
    pub(crate) async fn round_trip(&self) -> anyhow::Result<()> {
        let key = self.keys.next();
        // Subscribed before the job exists, so the ready message cannot be missed.
        let mut ready = self.client.subscribe(format!("raw.ready.{key}")).await?;
        let mut job = Vec::with_capacity(self.job_bytes.max(key.len() + 1));
        job.extend_from_slice(key.as_bytes());
        job.push(b' ');
        job.resize(self.job_bytes.max(job.len()), b'j');
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, key.as_str());
        let ack = self
            .js
            .publish_with_headers(RAW_JOB_SUBJECT, headers, job.into())
            .await?
            .await?;
        ensure!(!ack.duplicate, "job {key} was taken for a duplicate");
        tokio::time::timeout(self.wait, ready.next())
            .await
            .with_context(|| format!("no ready message for {key} in {:?}", self.wait))?
            .context("the ready subscription ended")?;
        let value = self
            .values
            .get(key.as_str())
            .await?
            .with_context(|| format!("ready, but no value under {key}"))?;
        ensure!(
            value.len() == self.value_bytes,
            "value of {} bytes, expected {}",
            value.len(),
            self.value_bytes
        );
        Ok(())
    }
}

impl Call for RawMiss {
    async fn call(&mut self) -> Result<(), String> {
        self.round_trip().await.map_err(|e| format!("raw: {e:#}"))
    }
}

pub(crate) struct RawSide {
    pub(crate) worker: JoinHandle<()>,
    pub(crate) worker_errors: Arc<Mutex<Failures>>,
    pub(crate) callers: Vec<RawMiss>,
}

/// The raw worker's handling of one job: value stored, ready published, then acked
/// (the order fstore's worker settles a job in).
pub(crate) async fn raw_work(
    m: jetstream::Message,
    client: &async_nats::Client,
    values: &kv::Store,
    value: Bytes,
) -> anyhow::Result<()> {
    let key = m
        .payload
        .split(|b| *b == b' ')
        .next()
        .and_then(|k| std::str::from_utf8(k).ok())
        .context("job without a key")?
        .to_string();
    values.put(key.as_str(), value).await?;
    client
        .publish(format!("raw.ready.{key}"), Bytes::new())
        .await?;
    m.double_ack()
        .await
        .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    Ok(())
}

pub(crate) async fn start_raw(
    s: &Settings,
    url: &str,
    job_bytes: usize,
    value_bytes: usize,
) -> anyhow::Result<RawSide> {
    // One connection for callers and worker, as fstore's serve and worker share one.
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client.clone());
    let jobs = js
        .get_or_create_stream(stream::Config {
            name: RAW_STREAM.into(),
            subjects: vec!["raw.jobs.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("creating the raw jobs stream")?;
    let values = js
        .create_key_value(kv::Config {
            bucket: RAW_BUCKET.into(),
            history: 1,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("creating the raw values bucket")?;
    let consumer = jobs
        .get_or_create_consumer(
            RAW_CONSUMER,
            pull::Config {
                durable_name: Some(RAW_CONSUMER.into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .context("creating the raw consumer")?;
    let messages = consumer.messages().await?;
    let worker_errors = Arc::new(Mutex::new(Failures::default()));
    let value = Bytes::from(vec![b'v'; value_bytes]);
    let worker = {
        let (client, values, errors) = (client.clone(), values.clone(), worker_errors.clone());
        tokio::spawn(messages.for_each_concurrent(s.raw_slots, move |m| {
            let (client, values, value, errors) = (
                client.clone(),
                values.clone(),
                value.clone(),
                errors.clone(),
            );
            async move {
                let done = match m {
                    Ok(m) => raw_work(m, &client, &values, value).await,
                    Err(e) => Err(anyhow::anyhow!("pull: {e}")),
                };
                if let Err(e) = done {
                    errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(format!("raw worker: {e:#}"));
                }
            }
        }))
    };
    let caller = RawMiss {
        client,
        js,
        values,
        keys: Fresh::new("k"),
        job_bytes,
        value_bytes,
        wait: Duration::from_millis(s.wait_ms),
    };
    Ok(RawSide {
        worker,
        worker_errors,
        callers: vec![caller],
    })
}
