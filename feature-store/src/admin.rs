//! Administration of one tenant's data: invalidation (watermarks for a feature and
//! everything downstream of it) and the dead-letter verbs — list, replay, purge. A replay
//! goes into the queue through the planner's claim-and-submit, like any planned compute.

use std::sync::Arc;
use std::time::Duration;

use fstore_proto::api;
use fstore_substrate::time::now_ms;
use fstore_substrate::{DeadLetter, Submitted, Substrate};

use crate::keys::ValueKey;
use crate::names::{FeatureRef, check_entity_id, truncate};
use crate::planner::{Claimed, Planner};
use crate::registry::{Node, Snapshot};
use crate::{Error, Result};

/// Dead letters listed when the caller names no limit, and the most it may name.
const DEFAULT_LIST: usize = 100;
const MAX_LIST: usize = 1000;

/// Drops `feature`'s values (every version when unpinned) and those of everything
/// downstream, for one entity or all; returns the feature versions invalidated, sorted.
pub async fn invalidate(
    substrate: &Substrate,
    snapshot: &Snapshot,
    tenant: &str,
    req: &api::InvalidateRequest,
) -> Result<api::InvalidateResponse> {
    let r = FeatureRef::parse(&req.feature)?;
    let entity = if req.entity_id.is_empty() {
        None
    } else {
        check_entity_id(&req.entity_id)?;
        Some(req.entity_id.as_str())
    };
    let roots: Vec<Arc<Node>> = match r.version {
        Some(_) => vec![snapshot.resolve(&r)?],
        None => {
            let n = snapshot.versions(&r.name).len() as u32;
            if n == 0 {
                snapshot.resolve(&r)?; // the NotFound error
            }
            (1..=n)
                .map(|v| {
                    snapshot.resolve(&FeatureRef {
                        name: r.name.clone(),
                        version: Some(v),
                    })
                })
                .collect::<Result<_>>()?
        }
    };
    let mut targets = Vec::new();
    for root in roots {
        targets.extend(snapshot.downstream(&(root.name.clone(), root.version)));
        targets.push(root);
    }
    let at = now_ms();
    let mut invalidated: Vec<String> = Vec::new();
    for node in targets {
        if invalidated.contains(&node.id) {
            continue;
        }
        substrate
            .watermarks
            .set(
                tenant,
                &node.id,
                entity,
                at,
                Duration::from_millis(node.ttl_ms),
            )
            .await?;
        invalidated.push(node.id.clone());
    }
    invalidated.sort();
    Ok(api::InvalidateResponse { invalidated })
}

/// The oldest dead letters of `tenant`, with the total.
pub async fn list_dead_letters(
    substrate: &Substrate,
    tenant: &str,
    limit: u32,
) -> Result<api::ListDeadLettersResponse> {
    let limit = match limit {
        0 => DEFAULT_LIST,
        n => (n as usize).min(MAX_LIST),
    };
    let (letters, total) = substrate.dead_letters.list(tenant, limit).await?;
    Ok(api::ListDeadLettersResponse {
        dead_letters: letters.iter().map(dead_letter_info).collect(),
        total,
    })
}

/// Computes a dead letter's value again under a new generation (a new message id, so
/// the duplicate window cannot swallow it, and a fresh attempt count), then drops it.
/// When the key is being computed already, only the dead letter is dropped.
pub async fn replay_dead_letter(
    substrate: &Substrate,
    planner: &Planner,
    tenant: &str,
    id: &str,
) -> Result<api::ReplayDeadLetterResponse> {
    let letter = own_dead_letter(substrate, tenant, id).await?;
    let Some(job) = letter.job.clone() else {
        return Err(Error::NotFound(format!(
            "dead letter `{}` holds no job; purge it",
            truncate(id, 40)
        )));
    };
    let key = ValueKey::from_wire(job.value_key.clone());
    let planned_at_ms = now_ms();
    let claimed = planner
        .claim_and_submit(
            &key,
            async || Ok(None::<()>),
            |generation| fstore_substrate::ComputeJob {
                generation,
                planned_at_ms,
                ..job
            },
        )
        .await?;
    // Parked behind a missing input counts as enqueued: its input's completion enqueues
    // it. Failed at once (an input had failed) does not.
    let enqueued = match claimed {
        Claimed::Submitted(Submitted::Enqueued | Submitted::Waiting, _) => true,
        Claimed::Submitted(Submitted::Failed(_), _)
        | Claimed::Coalesced(_)
        | Claimed::Found(()) => false,
    };
    substrate.dead_letters.remove(&letter.id).await?;
    Ok(api::ReplayDeadLetterResponse { enqueued })
}

/// Drops one dead letter of `tenant` (`id` non-empty) or all of them.
pub async fn purge_dead_letters(
    substrate: &Substrate,
    tenant: &str,
    id: &str,
) -> Result<api::PurgeDeadLettersResponse> {
    let dl = &substrate.dead_letters;
    if !id.is_empty() {
        let letter = own_dead_letter(substrate, tenant, id).await?;
        let purged = u64::from(dl.remove(&letter.id).await?);
        return Ok(api::PurgeDeadLettersResponse { purged });
    }
    let mut purged = 0;
    loop {
        let (letters, _) = dl.list(tenant, 500).await?;
        if letters.is_empty() {
            break;
        }
        for l in letters {
            purged += u64::from(dl.remove(&l.id).await?);
        }
    }
    Ok(api::PurgeDeadLettersResponse { purged })
}

/// A dead letter of the caller's tenant, or NOT_FOUND (another tenant's included).
async fn own_dead_letter(substrate: &Substrate, tenant: &str, id: &str) -> Result<DeadLetter> {
    let letter = substrate.dead_letters.get(id).await?;
    letter
        .filter(|l| l.job.as_ref().is_some_and(|j| j.tenant == tenant))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no dead letter `{}`; `fstore dlq ls` lists them",
                truncate(id, 40)
            ))
        })
}

fn dead_letter_info(l: &DeadLetter) -> api::DeadLetterInfo {
    let job = l.job.clone().unwrap_or_default();
    api::DeadLetterInfo {
        id: l.id.clone(),
        entity_id: job.entity_id,
        feature: format!("{}@{}", job.feature, job.feature_version),
        flow: format!("{}@{}", job.flow, job.flow_version),
        error: l.error.clone(),
        attempts: l.attempts,
        planned_at_ms: l.planned_at_ms,
        failed_at_ms: l.failed_at_ms,
        value_key: job.value_key,
    }
}
