//! One SubscribeEvents subscriber per tenant: it follows the tenant's result-ready stream
//! from a sequence taken before the load, on whichever replica is up, and after a broken
//! or silent stream subscribes again after the last sequence it received — as a consumer
//! of the stream would. What it received is compared with ReadLog at the end.

use std::time::Duration;

use fstore_proto::api;
use tokio::sync::watch;

use crate::topology::Endpoints;

/// A stream silent this long is subscribed again (after the last sequence received).
const IDLE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Sequences in the order received (a repeat is a duplicate delivery).
    pub(crate) sequences: Vec<u64>,
    pub(crate) subscriptions: u64,
    /// Errors that ended a subscription, by kind (first few).
    pub(crate) breaks: Vec<String>,
}

impl Received {
    pub(crate) fn last(&self) -> u64 {
        self.sequences.iter().copied().max().unwrap_or(0)
    }
}

/// Follows tenant events after `from` until `stop` turns true; what it received is
/// published on `progress` after every event.
pub(crate) async fn subscribe(
    endpoints: Endpoints,
    key: String,
    from: u64,
    mut stop: watch::Receiver<bool>,
    progress: watch::Sender<u64>,
) -> Received {
    let mut got = Received::default();
    let mut replica = 0usize;
    let replicas = endpoints.len().max(1);
    while !*stop.borrow() {
        replica = (replica + 1) % replicas;
        let Some(c) = endpoints.get(replica) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let c = c.with_key(&key);
        let after = got.last().max(from);
        let req = api::SubscribeEventsRequest {
            after_sequence: Some(after),
            ..Default::default()
        };
        let opened = tokio::select! {
            r = tokio::time::timeout(IDLE, c.subscribe(req)) => r,
            _ = stop.changed() => break,
        };
        let mut stream = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(s)) => {
                note(&mut got, format!("subscribe: {:?}", s.code()));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                note(&mut got, "subscribe: no answer".into());
                continue;
            }
        };
        got.subscriptions += 1;
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout(IDLE, stream.message()) => r,
                _ = stop.changed() => break,
            };
            match next {
                Ok(Ok(Some(ev))) => {
                    got.sequences.push(ev.sequence);
                    progress.send_replace(got.last());
                }
                Ok(Ok(None)) => {
                    note(&mut got, "stream ended".into());
                    break;
                }
                Ok(Err(s)) => {
                    note(&mut got, format!("stream: {:?}", s.code()));
                    break;
                }
                // Silent: maybe a stopped replica, maybe no traffic; subscribe again.
                Err(_) => break,
            }
        }
    }
    got
}

fn note(got: &mut Received, why: String) {
    if got.breaks.len() < 10 {
        got.breaks.push(why);
    }
}
