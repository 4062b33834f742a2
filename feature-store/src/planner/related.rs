//! Related inputs: a feature of related entities, reached through relation features
//! hop by hop and aggregated. The first relation is planned for the entity like any
//! dependency; each next hop and the feature read are planned for every entity reached,
//! with that entity's stored inputs (PutInputs) and the usual keys, claims and
//! coalescing — two users sharing a title compute its embedding once. Until every value
//! read is known the node is *awaiting* (its key covers the keys it read, so it has
//! none yet); an entity that cannot be computed (no stored inputs) or failed is left out
//! of the aggregate. Past `limits.max_related` entities the input fails naming the
//! limit, or reads the first ones when its binding says `truncate`.

use std::collections::HashSet;
use std::sync::Arc;

use fstore_proto::api::{self, value::Kind};
use fstore_proto::wire::PartialRef;
use fstore_substrate::time::now_ms;
use futures::future::BoxFuture;

use super::{NodeState, NodeStates, Pass, Planner};
use crate::keys::ValueKey;
use crate::registry::{Aggregate, Node, NodeInput};
use crate::request::ValidRequest;
use crate::{Error, Result};

/// A related input resolved: its aggregated value, the keys of the values read, and
/// the entities reached and left out.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub input: String,
    pub value: api::Value,
    pub keys: Vec<ValueKey>,
    /// Entities reached at the last hop.
    pub reached: usize,
    /// Entities left out: no inputs yet, or failed.
    pub missing: Vec<String>,
    /// Of those, the ones without inputs, with their entity type: references that
    /// arrived before their entity.
    pub absent: Vec<(String, String)>,
}

/// Where a related input stands.
pub(super) enum Related {
    Ready(Resolved),
    /// These values are needed first.
    Awaiting(Vec<ValueKey>),
    Failed(String),
}

/// One entity of a hop as planned: None when it has no inputs yet.
type Planned = (String, Option<(ValueKey, NodeState)>);

/// Where the values of one hop stand.
#[derive(Default)]
struct Hop {
    ready: Vec<(ValueKey, api::Value)>,
    waits: Vec<ValueKey>,
    missing: Vec<String>,
    absent: Vec<String>,
}

impl Hop {
    fn take(planned: impl IntoIterator<Item = Planned>) -> Hop {
        let mut hop = Hop::default();
        for (id, planned) in planned {
            match planned {
                None => {
                    hop.absent.push(id.clone());
                    hop.missing.push(id);
                }
                Some((key, NodeState::Ready(env))) => match env.value.clone() {
                    Some(v) => hop.ready.push((key, v)),
                    None => hop.missing.push(id),
                },
                Some((key, NodeState::Pending { .. })) => hop.waits.push(key),
                Some((_, NodeState::Awaiting(w))) => hop.waits.extend(w),
                // Left out: the aggregate covers what is available.
                Some((_, NodeState::Failed { .. })) => hop.missing.push(id),
            }
        }
        hop
    }
}

impl Planner {
    /// Resolves the related input `i` of a node, whose first relation `states` holds
    /// planned for the entity, planning what it reads of the related entities.
    pub(super) async fn related(
        &self,
        request: &ValidRequest,
        i: &NodeInput,
        states: &NodeStates,
        pass: Pass,
    ) -> Result<Related> {
        let NodeInput::Related {
            input,
            via,
            target,
            aggregate,
            truncate,
        } = i
        else {
            return Err(Error::Internal(
                "a related input that is not one".to_string(),
            ));
        };
        let first = via
            .first()
            .and_then(|n| states.get(&(Arc::as_ptr(n) as usize)))
            .ok_or_else(|| {
                Error::Internal(format!(
                    "planning order broke: input `{input}`'s first relation was not planned"
                ))
            })?;
        let mut hop = Hop::take([(
            String::new(),
            Some((first.key.clone(), first.state.clone())),
        )]);
        let (mut missing, mut absent) = (Vec::new(), Vec::new());
        let mut ids: Vec<String> = Vec::new();
        let mut keys: Vec<ValueKey> = Vec::new();
        for (n, relation) in via.iter().enumerate() {
            if !hop.waits.is_empty() {
                return Ok(Related::Awaiting(hop.waits));
            }
            ids.clear();
            let mut seen = HashSet::new();
            for (_, value) in &hop.ready {
                let Some(Kind::Relation(r)) = &value.kind else {
                    return Ok(Related::Failed(format!(
                        "input `{input}`: `{}` holds no relation",
                        relation.id
                    )));
                };
                if r.entity_type != relation.definition.relates_to {
                    return Ok(Related::Failed(format!(
                        "input `{input}`: `{}` holds ids of `{}` entities, but it relates to `{}`",
                        relation.id, r.entity_type, relation.definition.relates_to
                    )));
                }
                ids.extend(r.ids.iter().filter(|id| seen.insert(*id)).cloned());
            }
            if ids.len() > self.options.max_related {
                if !truncate {
                    return Ok(Related::Failed(format!(
                        "input `{input}` reaches {} entities through `{}`, more than limits.max_related ({}); \
                         bind it with truncate = true to read the first ones",
                        ids.len(),
                        relation.id,
                        self.options.max_related
                    )));
                }
                ids.truncate(self.options.max_related);
            }
            keys = hop.ready.iter().map(|(k, _)| k.clone()).collect();
            // Entities left out at an earlier hop stay left out (the first hop's own
            // relation is no related entity).
            if let Some(before) = n.checked_sub(1).and_then(|b| via.get(b)) {
                let ty = &before.definition.relates_to;
                missing.append(&mut hop.missing);
                absent.extend(hop.absent.drain(..).map(|id| (id, ty.clone())));
            }
            if let Some(next) = via.get(n + 1) {
                hop = Hop::take(self.plan_all(request, &ids, next, pass).await?);
            }
        }
        let reached = ids.len();
        let value = match target {
            None => Ok(api::Value {
                kind: Some(Kind::Relation(api::Relation {
                    entity_type: via
                        .last()
                        .map(|n| n.definition.relates_to.clone())
                        .unwrap_or_default(),
                    ids,
                })),
            }),
            Some(t) => {
                let mut hop = Hop::take(self.plan_all(request, &ids, t, pass).await?);
                if !hop.waits.is_empty() {
                    return Ok(Related::Awaiting(hop.waits));
                }
                missing.append(&mut hop.missing);
                let ty = &t.definition.entity_type;
                absent.extend(hop.absent.drain(..).map(|id| (id, ty.clone())));
                keys = hop.ready.iter().map(|(k, _)| k.clone()).collect();
                let values: Vec<api::Value> = hop.ready.into_iter().map(|(_, v)| v).collect();
                aggregate_values(*aggregate, &values, ids.len()).map_err(|e| {
                    format!("input `{input}` ({} of `{}`): {e}", aggregate.name(), t.id)
                })
            }
        };
        Ok(match value {
            Ok(value) => Related::Ready(Resolved {
                input: input.clone(),
                value,
                keys,
                reached,
                missing,
                absent,
            }),
            Err(e) => Related::Failed(e),
        })
    }

    /// Parks `node` of `entity` on each related entity it was computed without for
    /// want of inputs, so that their arrival plans it again ([`crate::enrich`]). A
    /// failure only costs that background re-enrichment: the call goes on.
    pub(super) async fn park_absent(
        &self,
        request: &ValidRequest,
        entity: &api::EntityRequest,
        node: &Node,
        resolved: &[Resolved],
    ) {
        for (id, entity_type) in resolved.iter().flat_map(|r| &r.absent) {
            let item = PartialRef {
                entity: Some(entity.clone()),
                feature: node.id.clone(),
                parked_at_ms: now_ms(),
                waits_on: id.clone(),
                entity_type: entity_type.clone(),
            };
            if let Err(e) = self
                .substrate
                .partials
                .park(&request.tenant, id, item)
                .await
            {
                tracing::warn!(feature = %node.id, entity = %id, error = %e, "could not park a reference to an entity without inputs; it is enriched when next asked for");
            }
        }
    }

    /// Plans `node` for each entity of `ids`.
    async fn plan_all(
        &self,
        request: &ValidRequest,
        ids: &[String],
        node: &Arc<Node>,
        pass: Pass,
    ) -> Result<Vec<Planned>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push((id.clone(), self.plan_other(request, id, node, pass).await?));
        }
        Ok(out)
    }

    /// Plans `node` (and what it reads of the same entity) for the related entity `id`,
    /// with its stored inputs; None when it lacks a request input the node needs (a
    /// reference that arrived before its entity).
    fn plan_other<'a>(
        &'a self,
        request: &'a ValidRequest,
        id: &'a str,
        node: &'a Arc<Node>,
        pass: Pass,
    ) -> BoxFuture<'a, Result<Option<(ValueKey, NodeState)>>> {
        Box::pin(async move {
            let stored = self.substrate.inputs.get(&request.tenant, id).await?;
            let entity = api::EntityRequest {
                entity_id: id.to_string(),
                inputs: stored.map(|s| s.inputs).unwrap_or_default(),
            };
            let chain: Vec<&Arc<Node>> = node.upstream.iter().chain([node]).collect();
            let lacks = chain.iter().flat_map(|n| &n.inputs).any(|i| {
                matches!(i, NodeInput::Request { name, .. } if !entity.inputs.contains_key(name))
            });
            if lacks {
                return Ok(None);
            }
            let mut states = NodeStates::new();
            for n in chain {
                let planned = self.node(request, &entity, n, 0, &states, pass).await?;
                states.insert(Arc::as_ptr(n) as usize, planned);
            }
            Ok(states
                .remove(&(Arc::as_ptr(node) as usize))
                .map(|p| (p.key, p.state)))
        })
    }
}

/// The aggregate of the related values available (`reached` entities were reached).
fn aggregate_values(
    aggregate: Aggregate,
    values: &[api::Value],
    reached: usize,
) -> std::result::Result<api::Value, String> {
    let kind = |k| Ok(api::Value { kind: Some(k) });
    if aggregate == Aggregate::Count {
        return kind(Kind::I64(values.len() as i64));
    }
    if aggregate == Aggregate::List {
        return list(values).map(|t| api::Value {
            kind: Some(Kind::Tensor(t)),
        });
    }
    let none = || format!("none of the {reached} related entities has a value yet");
    if let Some(Kind::Tensor(first)) = values.first().and_then(|v| v.kind.as_ref()) {
        let mut acc = vec![0f32; first.data.len()];
        for v in values {
            match &v.kind {
                Some(Kind::Tensor(t)) if t.shape == first.shape => {
                    acc.iter_mut().zip(&t.data).for_each(|(a, x)| *a += x);
                }
                _ => {
                    return Err(format!(
                        "the related tensors differ in shape from {:?}",
                        first.shape
                    ));
                }
            }
        }
        if aggregate == Aggregate::Mean {
            let n = values.len() as f32;
            acc.iter_mut().for_each(|a| *a /= n);
        }
        return kind(Kind::Tensor(api::Tensor {
            shape: first.shape.clone(),
            data: acc,
        }));
    }
    let numbers: Vec<f64> = values
        .iter()
        .filter_map(|v| match v.kind.as_ref()? {
            Kind::F64(x) => Some(*x),
            Kind::I64(x) => Some(*x as f64),
            _ => None,
        })
        .collect();
    if numbers.len() != values.len() {
        return Err("a related value is not a number".to_string());
    }
    let x = match aggregate {
        Aggregate::Sum => numbers.iter().sum(),
        _ if numbers.is_empty() => return Err(none()),
        Aggregate::Mean => numbers.iter().sum::<f64>() / numbers.len() as f64,
        Aggregate::Min => numbers.iter().copied().fold(f64::INFINITY, f64::min),
        Aggregate::Max => numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Aggregate::Count | Aggregate::List | Aggregate::Ids => {
            return Err(format!("aggregate {} takes no values", aggregate.name()));
        }
    };
    kind(Kind::F64(x))
}

/// The related values as one batch: numbers as `[n]`, tensors of one shape `s` as
/// `[n, ..s]`.
fn list(values: &[api::Value]) -> std::result::Result<api::Tensor, String> {
    let n = values.len() as u64;
    let mut shape: Option<Vec<u64>> = None;
    let mut data = Vec::new();
    for v in values {
        let (s, d): (Vec<u64>, Vec<f32>) = match &v.kind {
            Some(Kind::F64(x)) => (Vec::new(), vec![*x as f32]),
            Some(Kind::I64(x)) => (Vec::new(), vec![*x as f32]),
            Some(Kind::Tensor(t)) => (t.shape.clone(), t.data.clone()),
            _ => return Err("a related value is neither a number nor a tensor".to_string()),
        };
        match &shape {
            Some(first) if *first != s => {
                return Err(format!(
                    "the related values differ in shape: {first:?} and {s:?}"
                ));
            }
            _ => shape = Some(s),
        }
        data.extend(d);
    }
    let mut full = vec![n];
    full.extend(shape.unwrap_or_default());
    Ok(api::Tensor { shape: full, data })
}

/// The coverage of a value whose related inputs are `resolved`.
pub(super) fn coverage(resolved: &[Resolved]) -> Option<api::Coverage> {
    if resolved.is_empty() {
        return None;
    }
    let total: usize = resolved.iter().map(|r| r.reached).sum();
    let missing: Vec<String> = resolved
        .iter()
        .flat_map(|r| r.missing.iter().cloned())
        .collect();
    Some(api::Coverage {
        resolved: u32::try_from(total.saturating_sub(missing.len())).unwrap_or(u32::MAX),
        total: u32::try_from(total).unwrap_or(u32::MAX),
        missing: missing.into_iter().take(20).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> api::Value {
        api::Value {
            kind: Some(Kind::F64(x)),
        }
    }

    fn t(data: Vec<f32>) -> api::Value {
        api::Value {
            kind: Some(Kind::Tensor(api::Tensor {
                shape: vec![data.len() as u64],
                data,
            })),
        }
    }

    #[test]
    fn numbers_and_tensors_aggregate() {
        let xs = [f(1.0), f(2.0), f(6.0)];
        let got = |a| aggregate_values(a, &xs, 3).expect("aggregates").kind;
        assert_eq!(got(Aggregate::Mean), Some(Kind::F64(3.0)));
        assert_eq!(got(Aggregate::Sum), Some(Kind::F64(9.0)));
        assert_eq!(got(Aggregate::Min), Some(Kind::F64(1.0)));
        assert_eq!(got(Aggregate::Max), Some(Kind::F64(6.0)));
        assert_eq!(got(Aggregate::Count), Some(Kind::I64(3)));
        let mean = aggregate_values(Aggregate::Mean, &[t(vec![1.0, 0.0]), t(vec![0.0, 1.0])], 2)
            .expect("tensor mean");
        assert_eq!(mean, t(vec![0.5, 0.5]));
        assert!(aggregate_values(Aggregate::Mean, &[t(vec![1.0]), t(vec![1.0, 2.0])], 2).is_err());
    }

    #[test]
    fn a_list_is_the_batch_of_values() {
        let got = aggregate_values(Aggregate::List, &[f(1.0), f(2.0)], 2).expect("list");
        assert_eq!(got, t(vec![1.0, 2.0]));
        let rows = aggregate_values(Aggregate::List, &[t(vec![1.0, 2.0]), t(vec![3.0, 4.0])], 2)
            .expect("stacked");
        assert_eq!(
            rows.kind,
            Some(Kind::Tensor(api::Tensor {
                shape: vec![2, 2],
                data: vec![1.0, 2.0, 3.0, 4.0]
            }))
        );
        assert!(aggregate_values(Aggregate::List, &[t(vec![1.0]), t(vec![1.0, 2.0])], 2).is_err());
        let empty = aggregate_values(Aggregate::List, &[], 0).expect("empty");
        assert_eq!(empty, t(Vec::new()).clone());
    }

    #[test]
    fn nothing_available_is_an_error_except_for_sums_and_counts() {
        let e = aggregate_values(Aggregate::Mean, &[], 3).expect_err("no values");
        assert!(e.contains("none of the 3"), "{e}");
        assert_eq!(
            aggregate_values(Aggregate::Sum, &[], 3).expect("zero").kind,
            Some(Kind::F64(0.0))
        );
        assert_eq!(
            aggregate_values(Aggregate::Count, &[], 3)
                .expect("zero")
                .kind,
            Some(Kind::I64(0))
        );
    }
}
