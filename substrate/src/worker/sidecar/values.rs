//! Values and specs between the worker's types and the sidecar protocol's.

use fstore_flows::{
    Error as FlowError, FlowId, FlowInput, FlowSpec, InputSpec, ParamSpec, Value, ValueType,
};
use fstore_proto::sidecar as pb;

/// A declared spec as the registry knows specs; an invalid one says what to fix.
pub(super) fn spec(s: pb::Spec) -> Result<FlowSpec, String> {
    let id = format!("{}@{}", s.name, s.version);
    let refuse = |what: String| format!("it declares flow {id} {what}");
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    };
    if !valid_name(&s.name) || !s.name.contains('.') {
        return Err(refuse(
            "with an invalid name: names are dotted lowercase words".into(),
        ));
    }
    if s.version == 0 {
        return Err(refuse("with version 0: versions start at 1".into()));
    }
    let output = value_type(s.output()).ok_or_else(|| refuse("without an output type".into()))?;
    let mut inputs = Vec::new();
    for i in &s.inputs {
        let value_type = value_type(i.value_type())
            .ok_or_else(|| refuse(format!("with input `{}` of no type", i.name)))?;
        if !valid_name(&i.name) {
            return Err(refuse(format!("with an invalid input name `{}`", i.name)));
        }
        inputs.push(InputSpec {
            name: i.name.clone(),
            value_type,
            optional: i.optional,
        });
    }
    if inputs.is_empty() {
        return Err(refuse("without inputs".into()));
    }
    Ok(FlowSpec {
        id: FlowId::new(s.name, s.version),
        description: s.description,
        inputs,
        output,
        params: s
            .params
            .into_iter()
            .map(|p| ParamSpec {
                name: p.name,
                default: p.default,
                doc: p.doc,
            })
            .collect(),
        entity_types: s.entity_types,
        batchable: s.batchable,
    })
}

fn value_type(t: pb::ValueType) -> Option<ValueType> {
    Some(match t {
        pb::ValueType::Unspecified => return None,
        pb::ValueType::F64 => ValueType::F64,
        pb::ValueType::I64 => ValueType::I64,
        pb::ValueType::Bool => ValueType::Bool,
        pb::ValueType::String => ValueType::String,
        pb::ValueType::Bytes => ValueType::Bytes,
        pb::ValueType::Tensor => ValueType::Tensor,
    })
}

/// One item of a batch as the sidecar receives it: the feature's params over the
/// spec's defaults, so a flow reads every param it declares.
pub(super) fn item(input: &FlowInput, spec: &FlowSpec) -> Result<pb::Item, FlowError> {
    let values = input
        .values
        .iter()
        .map(|(name, v)| Ok((name.clone(), value(v)?)))
        .collect::<Result<_, FlowError>>()?;
    Ok(pb::Item {
        entity_id: input.entity_id.clone(),
        params: spec
            .params
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.default.clone()?)))
            .chain(input.params.as_map().clone())
            .collect(),
        values,
        attempt: input.attempt,
    })
}

fn value(v: &Value) -> Result<pb::Value, FlowError> {
    use pb::value::Kind;
    let kind = match v {
        Value::F64(x) => Kind::F64(*x),
        Value::I64(x) => Kind::I64(*x),
        Value::Bool(x) => Kind::Bool(*x),
        Value::String(x) => Kind::String(x.clone()),
        Value::Bytes(x) => Kind::Bytes(x.clone()),
        Value::Tensor(t) => {
            let (shape, data) = Value::tensor_parts(t)?;
            Kind::Tensor(pb::Tensor {
                shape: shape.into_iter().map(|d| d as u64).collect(),
                data,
            })
        }
        Value::Relation { .. } => {
            return Err(FlowError::Permanent(
                "a relation cannot be an input of a sidecar flow: bind a feature of its values"
                    .into(),
            ));
        }
    };
    Ok(pb::Value { kind: Some(kind) })
}

/// An item's result, checked against the flow's declared output type.
pub(super) fn result(r: pb::Result, output: ValueType) -> Result<Value, FlowError> {
    use pb::value::Kind;
    let value = match r.kind {
        Some(pb::result::Kind::Value(v)) => v,
        Some(pb::result::Kind::Error(e)) if e.transient => {
            return Err(FlowError::Transient(e.message));
        }
        Some(pb::result::Kind::Error(e)) => return Err(FlowError::Permanent(e.message)),
        None => {
            return Err(FlowError::Transient(
                "the sidecar answered an empty result".into(),
            ));
        }
    };
    let got = match value.kind {
        Some(Kind::F64(x)) => Value::F64(x),
        Some(Kind::I64(x)) => Value::I64(x),
        Some(Kind::Bool(x)) => Value::Bool(x),
        Some(Kind::String(x)) => Value::String(x),
        Some(Kind::Bytes(x)) => Value::Bytes(x),
        Some(Kind::Tensor(t)) => {
            let shape = t
                .shape
                .iter()
                .map(|d| usize::try_from(*d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| FlowError::Permanent("a tensor dimension over usize".into()))?;
            Value::tensor(t.data, &shape)?
        }
        None => {
            return Err(FlowError::Transient(
                "the sidecar answered a value of no kind".into(),
            ));
        }
    };
    if got.value_type() != output {
        return Err(FlowError::Permanent(format!(
            "the flow returned a {} value; it declares {output}",
            got.value_type()
        )));
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_of_another_type_than_declared_fails_its_item() {
        let r = pb::Result {
            kind: Some(pb::result::Kind::Value(pb::Value {
                kind: Some(pb::value::Kind::String("x".into())),
            })),
        };
        let e = result(r, ValueType::F64).expect_err("a string for f64");
        assert!(
            !e.is_transient() && e.message().contains("declares f64"),
            "{e}"
        );
        let ok = pb::Result {
            kind: Some(pb::result::Kind::Value(pb::Value {
                kind: Some(pb::value::Kind::Tensor(pb::Tensor {
                    shape: vec![2],
                    data: vec![1.0, 2.0],
                })),
            })),
        };
        assert!(result(ok, ValueType::Tensor).is_ok());
        let bad_shape = pb::Result {
            kind: Some(pb::result::Kind::Value(pb::Value {
                kind: Some(pb::value::Kind::Tensor(pb::Tensor {
                    shape: vec![3],
                    data: vec![1.0],
                })),
            })),
        };
        assert!(result(bad_shape, ValueType::Tensor).is_err());
    }

    #[test]
    fn invalid_specs_are_refused_with_what_to_fix() {
        let good = pb::Spec {
            name: "py.double".into(),
            version: 1,
            inputs: vec![pb::Input {
                name: "x".into(),
                value_type: pb::ValueType::F64 as i32,
                optional: false,
            }],
            output: pb::ValueType::F64 as i32,
            ..Default::default()
        };
        assert!(spec(good.clone()).is_ok());
        let e = spec(pb::Spec {
            version: 0,
            ..good.clone()
        })
        .expect_err("version 0");
        assert!(e.contains("versions start at 1"), "{e}");
        let e = spec(pb::Spec {
            name: "Double".into(),
            ..good.clone()
        })
        .expect_err("name");
        assert!(e.contains("dotted lowercase"), "{e}");
        let e = spec(pb::Spec { output: 0, ..good }).expect_err("no output");
        assert!(e.contains("output type"), "{e}");
    }
}
