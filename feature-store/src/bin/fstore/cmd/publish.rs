//! `publish status` and `rollback`: the generations of snapshot-served features, the
//! gate's report on each, and publishing an earlier one again.

use clap::Subcommand;
use fstore::client::Client;
use fstore_proto::api::{self, GenerationState};
use serde_json::json;

use crate::output::{print_json, table, timestamp_text};

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Which generation of each snapshot-served feature is published, and every kept
    /// generation with the gate's checks.
    Status {
        /// A feature (name or name@version); every one with generations if absent.
        feature: Option<String>,
    },
}

pub async fn run(store: &Client, verb: Verb, json: bool) -> anyhow::Result<()> {
    match verb {
        Verb::Status { feature } => {
            let status = store.publish_status(feature.unwrap_or_default()).await?;
            if json {
                return print_json(&json!(
                    status.features.iter().map(feature_json).collect::<Vec<_>>()
                ));
            }
            if status.features.is_empty() {
                println!(
                    "no feature has generations: stage one with `fstore backfill start --stage`"
                );
            }
            for f in &status.features {
                print_feature(f);
            }
            Ok(())
        }
    }
}

/// `fstore rollback FEATURE [--to GEN]`.
pub async fn rollback(
    store: &Client,
    feature: String,
    to: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let f = store.rollback(feature, to).await?;
    if json {
        return print_json(&feature_json(&f));
    }
    println!(
        "{}@{}: generation {} is published",
        f.feature, f.version, f.published
    );
    Ok(())
}

fn state_name(s: GenerationState) -> &'static str {
    match s {
        GenerationState::Staging => "STAGING",
        GenerationState::Published => "PUBLISHED",
        GenerationState::Superseded => "SUPERSEDED",
        GenerationState::Rejected => "REJECTED",
        GenerationState::Abandoned => "ABANDONED",
        GenerationState::Unspecified => "UNKNOWN",
    }
}

fn checks_text(g: &api::Generation) -> String {
    g.checks
        .iter()
        .map(|c| {
            format!(
                "{}{} {:.3}/{:.3}",
                if c.passed { "" } else { "✗" },
                c.name,
                c.value,
                c.threshold
            )
        })
        .collect::<Vec<_>>()
        .join("  ")
}

fn print_feature(f: &api::FeaturePublish) {
    let published = if f.published == 0 {
        "nothing published".to_string()
    } else {
        format!("generation {} published", f.published)
    };
    println!("{}@{}: {published}", f.feature, f.version);
    let rows: Vec<Vec<String>> = f
        .generations
        .iter()
        .map(|g| {
            vec![
                g.generation.to_string(),
                state_name(g.state()).to_string(),
                g.rows.to_string(),
                g.failed.to_string(),
                timestamp_text(g.created_at_ms),
                g.backfill_id.clone(),
                checks_text(g),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "GEN", "STATE", "ROWS", "FAILED", "CREATED", "BACKFILL", "CHECKS"
            ],
            &rows
        )
    );
    for g in &f.generations {
        if g.state() == GenerationState::Rejected {
            println!("  generation {}: {}", g.generation, g.reason);
        }
    }
}

fn feature_json(f: &api::FeaturePublish) -> serde_json::Value {
    json!({
        "feature": f.feature,
        "version": f.version,
        "published": f.published,
        "generations": f.generations.iter().map(|g| json!({
            "generation": g.generation,
            "state": state_name(g.state()),
            "backfill_id": g.backfill_id,
            "rows": g.rows,
            "failed": g.failed,
            "created_at_ms": g.created_at_ms,
            "decided_at_ms": g.decided_at_ms,
            "reason": g.reason,
            "checks": g.checks.iter().map(|c| json!({
                "name": c.name, "value": c.value, "threshold": c.threshold, "passed": c.passed,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
