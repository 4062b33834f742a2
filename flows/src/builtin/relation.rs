//! Flows over related entities: `rel.ids` makes a relation feature of ids (sent with a
//! request, stored with PutInputs, or aggregated along a path: a materialized edge), and
//! `vec.normalize` scales an aggregated vector (a mean of related embeddings) to unit
//! length.

use super::{SpecBuilder, input};
use crate::{Error, Flow, FlowInput, FlowSpec, Value, ValueType};

/// The related ids as given, each once, in first-seen order.
#[derive(Debug)]
pub struct RelationIds {
    spec: FlowSpec,
}

impl RelationIds {
    pub fn new() -> Self {
        RelationIds {
            spec: SpecBuilder::new(
                "rel.ids",
                1,
                ValueType::Relation,
                "the related entity ids of `ids`, each once, in first-seen order",
            )
            .input(input("ids", ValueType::Relation))
            .build(),
        }
    }
}

impl Default for RelationIds {
    fn default() -> Self {
        Self::new()
    }
}

impl Flow for RelationIds {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        batch
            .iter()
            .map(|item| {
                let (entity_type, ids) = item.value("ids")?.as_relation()?;
                let mut seen = std::collections::HashSet::new();
                Ok(Value::Relation {
                    entity_type: entity_type.to_string(),
                    ids: ids.iter().filter(|id| seen.insert(*id)).cloned().collect(),
                })
            })
            .collect()
    }
}

/// `v / |v|`.
#[derive(Debug)]
pub struct Normalize {
    spec: FlowSpec,
}

impl Normalize {
    pub fn new() -> Self {
        Normalize {
            spec: SpecBuilder::new(
                "vec.normalize",
                1,
                ValueType::Tensor,
                "the vector scaled to unit length (L2)",
            )
            .input(input("v", ValueType::Tensor))
            .build(),
        }
    }
}

impl Default for Normalize {
    fn default() -> Self {
        Self::new()
    }
}

impl Flow for Normalize {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        batch
            .iter()
            .map(|item| {
                let t = item.value("v")?.as_tensor()?;
                let (shape, data) = Value::tensor_parts(t)?;
                let norm = data.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm == 0.0 || !norm.is_finite() {
                    return Err(Error::Permanent(format!(
                        "a vector of norm {norm} cannot be normalised"
                    )));
                }
                Value::tensor(data.iter().map(|x| x / norm).collect(), &shape)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::testing::item;

    #[test]
    fn ids_are_deduplicated_in_order() {
        let ids = Value::Relation {
            entity_type: "title".into(),
            ids: vec!["b".into(), "a".into(), "b".into()],
        };
        let out = RelationIds::new().run(&[item(&[("ids", ids)], &[])]);
        let got = out[0]
            .as_ref()
            .expect("ok")
            .as_relation()
            .expect("relation");
        assert_eq!(got, ("title", &["b".to_string(), "a".to_string()][..]));
        let wrong = RelationIds::new().run(&[item(&[("ids", Value::F64(1.0))], &[])]);
        assert!(wrong[0].is_err());
    }

    #[test]
    fn vectors_come_out_unit_length() {
        let v = Value::tensor(vec![3.0, 4.0], &[2]).expect("tensor");
        let out = Normalize::new().run(&[item(&[("v", v)], &[])]);
        let t = out[0].as_ref().expect("ok").as_tensor().expect("tensor");
        let (_, data) = Value::tensor_parts(t).expect("parts");
        assert_eq!(data, vec![0.6, 0.8]);
        let zero = Value::tensor(vec![0.0, 0.0], &[2]).expect("tensor");
        assert!(Normalize::new().run(&[item(&[("v", zero)], &[])])[0].is_err());
    }
}
