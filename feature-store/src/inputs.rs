//! `PutInputs`: request-time inputs stored for an entity without asking for a feature.
//! They are merged into what the entity has, appended to the feature log (so a batch
//! job sees what the online path saw), and read by later requests of the entity that
//! do not send them ([`crate::request::ValidRequest::new`]).

use fstore_proto::api::{self, log_record::Kind};
use fstore_proto::wire::StoredInputs;
use fstore_substrate::Substrate;
use fstore_substrate::time::now_ms;
use prost::Message;

use crate::config::Limits;
use crate::names::{check_entity_id, check_name, truncate};
use crate::{Error, Result};

/// Checks, stores and logs the inputs of every entity of `req`.
pub async fn put(
    substrate: &Substrate,
    limits: &Limits,
    tenant: &str,
    req: api::PutInputsRequest,
) -> Result<api::PutInputsResponse> {
    check(limits, &req)?;
    let mut stored = 0;
    for e in req.entities {
        let now = now_ms();
        stored += e.inputs.len() as u32;
        substrate
            .inputs
            .put(
                tenant,
                &e.entity_id,
                StoredInputs {
                    inputs: e.inputs.clone(),
                    updated_at_ms: now,
                },
            )
            .await?;
        let mut record = api::LogRecord {
            tenant: tenant.to_string(),
            entity_id: e.entity_id,
            inputs: e.inputs,
            computed_at_ms: now,
            planned_at_ms: now,
            ..Default::default()
        };
        record.set_kind(Kind::Inputs);
        let id = format!("inputs.{}", uuid::Uuid::now_v7().simple());
        substrate.log.append(&id, record).await?;
    }
    Ok(api::PutInputsResponse { stored })
}

fn check(limits: &Limits, req: &api::PutInputsRequest) -> Result<()> {
    if req.entities.is_empty() {
        return Err(Error::InvalidArgument(
            "no entities: send at least one entity with its inputs".into(),
        ));
    }
    if req.entities.len() > limits.max_entities {
        return Err(Error::InvalidArgument(format!(
            "{} entities is more than the limit of {} per call (limits.max_entities); split the request",
            req.entities.len(),
            limits.max_entities
        )));
    }
    for e in &req.entities {
        check_entity_id(&e.entity_id)?;
        if e.inputs.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "entity `{}` has no inputs to store",
                truncate(&e.entity_id, 80)
            )));
        }
        let mut bytes = 0;
        for (name, value) in &e.inputs {
            check_name("request input", name)?;
            if value.kind.is_none() {
                return Err(Error::InvalidArgument(format!(
                    "input `{name}` of entity `{}` has no value",
                    truncate(&e.entity_id, 80)
                )));
            }
            bytes += name.len() + value.encoded_len();
        }
        if bytes > limits.max_input_bytes {
            return Err(Error::InvalidArgument(format!(
                "inputs of entity `{}` are {bytes} bytes, more than the limit of {} (limits.max_input_bytes)",
                truncate(&e.entity_id, 80),
                limits.max_input_bytes
            )));
        }
    }
    Ok(())
}
