//! Dead letters on a limits stream `<PREFIX>_DLQ`, subjects `<prefix>.dlq.<tenant>.<flow>`;
//! a dead letter's id is its stream sequence. File storage, so they survive restarts.

use async_nats::jetstream::{self, ErrorCode, stream};
use async_trait::async_trait;
use futures::StreamExt;
use prost::Message;

use super::{Layout, Options, unavailable};
use crate::{DeadLetter, DeadLetters, Error};

pub struct NatsDeadLetters {
    js: jetstream::Context,
    stream: stream::Stream,
    layout: Layout,
}

impl NatsDeadLetters {
    pub(crate) async fn open(
        js: jetstream::Context,
        layout: &Layout,
        options: &Options,
    ) -> Result<Self, Error> {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: layout.dlq_stream(),
                subjects: vec![layout.dlq_filter()],
                storage: stream::StorageType::File,
                num_replicas: options.replicas,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(format!("dead-letter stream: {e}")))?;
        Ok(NatsDeadLetters {
            js,
            stream,
            layout: layout.clone(),
        })
    }
}

#[async_trait]
impl DeadLetters for NatsDeadLetters {
    async fn put(&self, letter: DeadLetter) -> Result<String, Error> {
        let (tenant, flow) = letter
            .job
            .as_ref()
            .map(|j| (j.tenant.clone(), format!("{}@{}", j.flow, j.flow_version)))
            .unwrap_or_default();
        let subject = self.layout.dlq_subject(&tenant, &flow);
        let ack = self
            .js
            .publish(subject, letter.encode_to_vec().into())
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(ack.sequence.to_string())
    }

    async fn list(&self, tenant: &str, limit: usize) -> Result<(Vec<DeadLetter>, u64), Error> {
        let filter = self.layout.dlq_tenant_filter(tenant);
        let info = self.stream.clone();
        let mut subjects = info
            .info_with_subjects(filter.clone())
            .await
            .map_err(unavailable)?;
        let mut total = 0u64;
        while let Some(s) = subjects.next().await {
            total += s.map_err(unavailable)?.1 as u64;
        }
        let mut out = Vec::new();
        let mut from = 1;
        while out.len() < limit && (out.len() as u64) < total {
            let message = match self
                .stream
                .direct_get_next_for_subject(filter.clone(), Some(from))
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(unavailable(e)),
            };
            let mut letter = DeadLetter::decode(message.payload)?;
            letter.id = message.sequence.to_string();
            out.push(letter);
            from = message.sequence + 1;
        }
        Ok((out, total))
    }

    async fn get(&self, id: &str) -> Result<Option<DeadLetter>, Error> {
        let Ok(seq) = id.parse::<u64>() else {
            return Ok(None);
        };
        match self.stream.direct_get(seq).await {
            Ok(m) => {
                let mut letter = DeadLetter::decode(m.payload)?;
                letter.id = seq.to_string();
                Ok(Some(letter))
            }
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<bool, Error> {
        let Ok(seq) = id.parse::<u64>() else {
            return Ok(false);
        };
        match self.stream.delete_message(seq).await {
            Ok(deleted) => Ok(deleted),
            // The store may have failed to delete it, or had nothing to delete: ask.
            Err(e) if maybe_absent(&e) => match self.get(id).await? {
                None => Ok(false),
                Some(_) => Err(unavailable(e)),
            },
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// Whether a failed delete may mean the dead letter is not there: JetStream answers a
/// missing sequence with SEQUENCE_NOT_FOUND, or with STREAM_MESSAGE_DELETE_FAILED when
/// its store reports no such message (deleted before, or past the end) — the code it
/// also uses when the store could not delete a message that is there.
fn maybe_absent(e: &stream::DeleteMessageError) -> bool {
    match e.kind() {
        stream::DeleteMessageErrorKind::JetStream(js) => matches!(
            js.error_code(),
            ErrorCode::SEQUENCE_NOT_FOUND | ErrorCode::STREAM_MESSAGE_DELETE_FAILED
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::tests::api_error;
    use stream::{DeleteMessageError, DeleteMessageErrorKind};

    #[test]
    fn only_missing_sequence_answers_may_mean_absent() {
        let answer = |code: ErrorCode| {
            DeleteMessageError::new(DeleteMessageErrorKind::JetStream(api_error(code.0)))
        };
        assert!(maybe_absent(&answer(ErrorCode::SEQUENCE_NOT_FOUND)));
        assert!(maybe_absent(&answer(
            ErrorCode::STREAM_MESSAGE_DELETE_FAILED
        )));
        assert!(!maybe_absent(&answer(ErrorCode::STREAM_NOT_FOUND)));
        assert!(!maybe_absent(&DeleteMessageError::new(
            DeleteMessageErrorKind::TimedOut
        )));
    }
}
