//! The feature log on JetStream: a limits stream `<PREFIX>_LOG` on `<prefix>.log.>`,
//! file storage, retention by age and size, `replicas` copies. A record is a
//! `featurestore.v1.LogRecord` on `<prefix>.log.<tenant>.<feature>.<version>` (inputs:
//! `<prefix>.log.<tenant>.inputs`), published with its id as `Nats-Msg-Id`, so a record
//! appended again within the duplicate window is dropped by the server. The stream
//! sequence is the event's sequence. Reads are ordered consumers: any NATS client can
//! read the same stream with a durable consumer of its own.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use fstore_proto::api::{LogEvent, LogRecord, log_record::Kind};
use futures::StreamExt;
use prost::Message;

use super::{Layout, fits, unavailable};
use crate::log::{FeatureLog, LogOptions, LogQuery, LogStream, Start};
use crate::{Error, error};

pub struct NatsLog {
    js: jetstream::Context,
    stream: stream::Stream,
    layout: Layout,
}

impl NatsLog {
    pub(crate) async fn open(
        js: jetstream::Context,
        layout: &Layout,
        options: &LogOptions,
        replicas: usize,
        duplicate_window: Duration,
    ) -> Result<Self, Error> {
        let config = stream::Config {
            name: layout.log_stream(),
            subjects: vec![layout.log_filter()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_age: options.max_age,
            max_bytes: i64::try_from(options.max_bytes).unwrap_or(i64::MAX),
            duplicate_window,
            allow_direct: true,
            ..Default::default()
        };
        let mut stream = js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| unavailable(format!("log stream: {e}")))?;
        let had = &stream.cached_info().config;
        if had.max_age != config.max_age
            || had.max_bytes != config.max_bytes
            || had.duplicate_window != config.duplicate_window
        {
            js.update_stream(&config)
                .await
                .map_err(|e| unavailable(format!("updating the log stream's retention: {e}")))?;
            stream = js
                .get_stream(&config.name)
                .await
                .map_err(|e| unavailable(format!("log stream: {e}")))?;
        }
        Ok(NatsLog {
            js,
            stream,
            layout: layout.clone(),
        })
    }

    /// The subjects a query reads: per feature, or every feature; and the inputs.
    fn filters(&self, q: &LogQuery) -> Vec<String> {
        let mut out: Vec<String> = if q.features.is_empty() {
            vec![self.layout.log_subject(&q.tenant, None, None)]
        } else {
            q.features
                .iter()
                .map(|f| self.layout.log_subject(&q.tenant, Some(&f.name), f.version))
                .collect()
        };
        if q.include_inputs {
            out.push(self.layout.log_inputs_subject(&q.tenant));
        }
        out.sort();
        out.dedup();
        out
    }
}

fn unix_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms.max(0)) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[async_trait]
impl FeatureLog for NatsLog {
    async fn append(&self, id: &str, record: LogRecord) -> Result<u64, Error> {
        let subject = match record.kind() {
            Kind::Inputs => self.layout.log_inputs_subject(&record.tenant),
            _ => {
                self.layout
                    .log_subject(&record.tenant, Some(&record.feature), Some(record.version))
            }
        };
        let payload = record.encode_to_vec();
        fits(&self.js.client(), error::Message::LogRecord, payload.len())?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(if ack.duplicate { 0 } else { ack.sequence })
    }

    async fn read(&self, query: LogQuery) -> Result<LogStream, Error> {
        let info = self.stream.get_info().await.map_err(unavailable)?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let deliver_policy = match query.start {
            Start::Now => consumer::DeliverPolicy::New,
            Start::After(n) if n > last => {
                return Err(Error::Cursor(format!(
                    "cursor {n} is ahead of the log, whose last sequence is {last}; resume with a sequence the log gave you"
                )));
            }
            Start::After(n) if n != 0 && n + 1 < first => {
                return Err(Error::Cursor(format!(
                    "events after {n} are gone: the log keeps sequences from {first} on (retention by age and size); resume from 0 to read from the oldest kept"
                )));
            }
            Start::After(n) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: (n + 1).max(1),
            },
            // Stream time is when the record was appended, at or after it was computed.
            Start::Time(ms) => consumer::DeliverPolicy::ByStartTime {
                start_time: unix_ms(ms),
            },
        };
        if !query.follow && (last == 0 || matches!(query.start, Start::Now)) {
            return Ok(futures::stream::empty().boxed());
        }
        let mut consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subjects: self.filters(&query),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let pending = consumer
            .info()
            .await
            .map(|i| i.num_pending)
            .map_err(unavailable)?;
        if !query.follow && pending == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        let messages = consumer.messages().await.map_err(unavailable)?;
        let follow = query.follow;
        let events = futures::stream::unfold(
            (messages, query, false),
            move |(mut messages, query, done)| async move {
                loop {
                    if done {
                        return None;
                    }
                    let m = match messages.next().await? {
                        Ok(m) => m,
                        Err(e) => return Some((Err(unavailable(e)), (messages, query, true))),
                    };
                    let Ok(info) = m.info() else {
                        continue;
                    };
                    let (seq, left) = (info.stream_sequence, info.pending);
                    let end = !follow && (left == 0 || seq >= last);
                    let event = LogRecord::decode(m.payload.as_ref())
                        .map_err(Error::from)
                        .map(|record| LogEvent {
                            sequence: seq,
                            record: Some(record),
                        });
                    let wanted = match &event {
                        Ok(e) => e.record.as_ref().is_some_and(|r| query.matches(r)),
                        Err(_) => true,
                    };
                    if wanted {
                        return Some((event, (messages, query, end)));
                    }
                    if end {
                        return None;
                    }
                }
            },
        );
        Ok(events.boxed())
    }
}
