//! The feature log's verbs: `events` (the result-ready stream, live, resumable).

use clap::Subcommand;
use fstore::client::Client;
use fstore_proto::api;
use tokio_stream::StreamExt;

use crate::output;

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Streams result-ready events (each value that becomes READY or FAILED) as they
    /// are logged; `--after` resumes after the last sequence received.
    Events {
        #[arg(short, long = "feature")]
        features: Vec<String>,
        #[arg(short, long = "entity")]
        entities: Vec<String>,
        /// Events after this sequence (0: from the oldest kept); default: from now on.
        #[arg(long)]
        after: Option<u64>,
        /// Also the inputs stored with `fstore put`.
        #[arg(long)]
        inputs: bool,
    },
}

pub async fn run(store: &Client, verb: Verb, json: bool) -> anyhow::Result<()> {
    match verb {
        Verb::Events {
            features,
            entities,
            after,
            inputs,
        } => {
            let req = api::SubscribeEventsRequest {
                features,
                entity_ids: entities,
                after_sequence: after,
                include_inputs: inputs,
            };
            let mut events = store.subscribe_events(req).await?;
            while let Some(e) = events.next().await {
                let e = e?;
                if json {
                    println!("{}", serde_json::to_string(&output::event_json(&e))?);
                } else {
                    println!("{}", output::event_text(&e));
                }
            }
            Ok(())
        }
    }
}
