//! `fstore dlq`: list, show, replay and purge dead letters (jobs that used up their
//! attempts).

use clap::Subcommand;
use fstore_proto::api;
use serde_json::{Value as Json, json};

use crate::error::usage;
use crate::output::{print_json, table, timestamp_text};
use fstore::client::Client;

/// How many dead letters `show` looks through.
const SHOW_WINDOW: u32 = 1000;

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Lists dead letters, oldest first.
    Ls {
        /// How many [default: the server's, 100; at most 1000].
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One dead letter in full.
    Show { id: String },
    /// Computes the value again (after fixing the cause) and drops the dead letter.
    Replay { id: String },
    /// Drops one dead letter, or all of them.
    Purge {
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(store: &Client, verb: Verb, json: bool) -> anyhow::Result<()> {
    match verb {
        Verb::Ls { limit } => {
            // 0 asks for the server's default.
            let r = store.list_dead_letters(limit.unwrap_or(0)).await?;
            if json {
                return print_json(&json!(
                    r.dead_letters.iter().map(to_json).collect::<Vec<_>>()
                ));
            }
            let rows: Vec<Vec<String>> = r.dead_letters.iter().map(row).collect();
            print!(
                "{}",
                table(
                    &["ID", "ENTITY", "FEATURE", "TRIES", "FAILED AT", "ERROR"],
                    &rows
                )
            );
            println!("{} of {} dead letters", r.dead_letters.len(), r.total);
        }
        Verb::Show { id } => {
            let r = store.list_dead_letters(SHOW_WINDOW).await?;
            let d = r.dead_letters.iter().find(|d| d.id == id).ok_or_else(|| {
                usage(format!(
                    "no dead letter `{id}` among the oldest {SHOW_WINDOW}; `fstore dlq ls` lists them"
                ))
            })?;
            print_json(&to_json(d))?;
        }
        Verb::Replay { id } => {
            let r = store.replay_dead_letter(id.clone()).await?;
            if r.enqueued {
                println!("replayed {id}: its value is being computed again");
            } else {
                println!("dropped {id}: its value is already being computed");
            }
        }
        Verb::Purge { id, all } => {
            if id.is_none() && !all {
                return Err(usage(
                    "name a dead letter, or pass --all to drop every one of this tenant",
                ));
            }
            let r = store.purge_dead_letters(id.unwrap_or_default()).await?;
            println!("purged {} dead letters", r.purged);
        }
    }
    Ok(())
}

fn row(d: &api::DeadLetterInfo) -> Vec<String> {
    vec![
        d.id.clone(),
        d.entity_id.clone(),
        d.feature.clone(),
        d.attempts.to_string(),
        timestamp_text(d.failed_at_ms),
        d.error.clone(),
    ]
}

fn to_json(d: &api::DeadLetterInfo) -> Json {
    json!({"id": d.id, "entity": d.entity_id, "feature": d.feature, "flow": d.flow, "attempts": d.attempts,
        "planned_at_ms": d.planned_at_ms, "failed_at_ms": d.failed_at_ms, "error": d.error, "value_key": d.value_key})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_shows_when_it_failed() {
        let d = api::DeadLetterInfo {
            id: "7".into(),
            entity_id: "doc:1".into(),
            feature: "doc.slow_score".into(),
            attempts: 5,
            failed_at_ms: 1_000,
            error: "timed out".into(),
            ..Default::default()
        };
        assert_eq!(
            row(&d),
            [
                "7",
                "doc:1",
                "doc.slow_score",
                "5",
                "1970-01-01T00:00:01.000Z",
                "timed out"
            ]
        );
        assert_eq!(to_json(&d)["attempts"], 5);
    }
}
