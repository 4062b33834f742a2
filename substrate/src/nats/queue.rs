//! Jobs on a JetStream work-queue stream: one subject per (flow, tenant), one durable
//! pull consumer per flow shared by every worker serving it. Enqueue carries the
//! message id `key.generation`, so the server drops duplicates inside its window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, Consumer, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, context::PublishErrorKind};
use async_trait::async_trait;
use fstore_flows::FlowId;
use futures::StreamExt;
use prost::Message as _;
use tracing::warn;

use super::{Layout, Options, unavailable};
use crate::queue::{Enqueued, Settle};
use crate::{ComputeJob, Delivery, Error, Headers, JobQueue, message_id};

pub struct NatsQueue {
    js: jetstream::Context,
    layout: Layout,
    stream: stream::Stream,
    ack_wait: Duration,
    max_deliver: i64,
    max_queued_per_subject: i64,
    consumers: Mutex<HashMap<FlowId, Consumer<pull::Config>>>,
}

impl NatsQueue {
    pub(crate) async fn open(
        js: jetstream::Context,
        layout: &Layout,
        options: &Options,
    ) -> Result<Self, Error> {
        let config = stream::Config {
            name: layout.jobs_stream(),
            subjects: vec![format!("{}.jobs.>", layout.prefix)],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: options.replicas,
            duplicate_window: options.duplicate_window,
            max_messages: options.max_queued,
            max_messages_per_subject: options.max_queued_per_subject,
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            ..Default::default()
        };
        let stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| unavailable(format!("jobs stream: {e}")))?;
        Ok(NatsQueue {
            js,
            layout: layout.clone(),
            stream,
            ack_wait: options.ack_wait,
            max_deliver: options.max_deliver,
            max_queued_per_subject: options.max_queued_per_subject,
            consumers: Mutex::new(HashMap::new()),
        })
    }

    async fn consumer(&self, flow: &FlowId) -> Result<Consumer<pull::Config>, Error> {
        if let Some(c) = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(flow)
        {
            return Ok(c.clone());
        }
        let name = format!("flow-{}", crate::token::encode(&flow.to_string()));
        let consumer = self
            .stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.layout.flow_filter(&flow.to_string()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: self.max_deliver,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| unavailable(format!("consumer for {flow}: {e}")))?;
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(flow.clone(), consumer.clone());
        Ok(consumer)
    }

    fn delivery(message: jetstream::Message) -> Option<Delivery> {
        let attempt = message
            .info()
            .map(|i| i.delivered.max(1) as u32)
            .unwrap_or(1);
        let job = match ComputeJob::decode(message.payload.as_ref()) {
            Ok(job) => job,
            Err(e) => {
                warn!(error = %e, subject = %message.subject, "undecodable job; terminating it");
                tokio::spawn(async move {
                    let _ = message.ack_with(AckKind::Term).await;
                });
                return None;
            }
        };
        let headers = message
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.first()?.as_str().to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Some(Delivery::new(
            job,
            headers,
            attempt,
            Box::new(NatsSettle { message }),
        ))
    }
}

#[async_trait]
impl JobQueue for NatsQueue {
    async fn enqueue(&self, job: &ComputeJob, headers: &Headers) -> Result<Enqueued, Error> {
        let subject = self
            .layout
            .jobs_subject(&format!("{}@{}", job.flow, job.flow_version), &job.tenant);
        let mut h = async_nats::HeaderMap::new();
        h.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message_id(job).as_str(),
        );
        for (k, v) in headers {
            h.insert(k.as_str(), v.as_str());
        }
        let ack = self
            .js
            .publish_with_headers(subject.clone(), h, job.encode_to_vec().into())
            .await
            .map_err(unavailable)?
            .await;
        match ack {
            Ok(ack) if ack.duplicate => Ok(Enqueued::Duplicate),
            Ok(_) => Ok(Enqueued::Added),
            Err(e)
                if e.kind() == PublishErrorKind::Other
                    && e.to_string().contains("maximum messages") =>
            {
                Err(Error::QueueFull {
                    scope: format!(
                        "flow {}@{}, tenant {}",
                        job.flow, job.flow_version, job.tenant
                    ),
                    limit: self.max_queued_per_subject as u64,
                    retry_after_ms: 1000,
                })
            }
            Err(e) => {
                let text = e.to_string();
                if text.contains("maximum messages") {
                    return Err(Error::QueueFull {
                        scope: format!(
                            "flow {}@{}, tenant {}",
                            job.flow, job.flow_version, job.tenant
                        ),
                        limit: self.max_queued_per_subject as u64,
                        retry_after_ms: 1000,
                    });
                }
                Err(unavailable(format!("enqueue on {subject}: {text}")))
            }
        }
    }

    async fn pull(
        &self,
        flow: &FlowId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, Error> {
        let consumer = self.consumer(flow).await?;
        // Wait for the first job, then take whatever else is there without waiting.
        // The whole wait is bounded: a pull request lost with a broken connection must
        // not stall the worker past its reconnection.
        let wait = wait.max(Duration::from_millis(50));
        let first = async {
            let mut batch = consumer
                .batch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await
                .map_err(unavailable)?;
            let mut out = Vec::new();
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => out.extend(Self::delivery(m)),
                    Err(e) if out.is_empty() => return Err(unavailable(e)),
                    Err(_) => break,
                }
            }
            Ok(out)
        };
        let mut out = match tokio::time::timeout(wait + Duration::from_millis(250), first).await {
            Ok(r) => r?,
            Err(_) => return Ok(Vec::new()),
        };
        if out.is_empty() || max <= 1 {
            return Ok(out);
        }
        let mut more = consumer
            .fetch()
            .max_messages(max - out.len())
            .messages()
            .await
            .map_err(unavailable)?;
        while let Some(Ok(m)) = more.next().await {
            out.extend(Self::delivery(m));
        }
        Ok(out)
    }

    async fn depth(&self, flow: &FlowId) -> Result<u64, Error> {
        let mut consumer = self.consumer(flow).await?;
        let info = consumer.info().await.map_err(unavailable)?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

struct NatsSettle {
    message: jetstream::Message,
}

#[async_trait]
impl Settle for NatsSettle {
    async fn ack(&self) -> Result<(), Error> {
        // Wait for the server to confirm: the job is gone only once this returns.
        self.message.double_ack().await.map_err(unavailable)
    }

    async fn nak(&self, delay: Duration) -> Result<(), Error> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(unavailable)
    }

    async fn term(&self) -> Result<(), Error> {
        self.message
            .double_ack_with(AckKind::Term)
            .await
            .map_err(unavailable)
    }

    async fn in_progress(&self) -> Result<(), Error> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(unavailable)
    }
}
