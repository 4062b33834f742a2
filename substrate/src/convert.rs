//! Conversions between wire values (`featurestore.v1.Value`) and flow values.

use fstore_flows as flows;
use fstore_proto::api;

use crate::Error;

/// A wire value as a flow value; tensors land on the CPU.
pub fn to_flow(v: &api::Value) -> Result<flows::Value, flows::Error> {
    use api::value::Kind;
    match &v.kind {
        Some(Kind::F64(x)) => Ok(flows::Value::F64(*x)),
        Some(Kind::I64(x)) => Ok(flows::Value::I64(*x)),
        Some(Kind::Bool(x)) => Ok(flows::Value::Bool(*x)),
        Some(Kind::String(x)) => Ok(flows::Value::String(x.clone())),
        Some(Kind::Bytes(x)) => Ok(flows::Value::Bytes(x.clone())),
        Some(Kind::Tensor(t)) => {
            let shape: Vec<usize> = t.shape.iter().map(|d| *d as usize).collect();
            flows::Value::tensor(t.data.clone(), &shape)
        }
        Some(Kind::Relation(r)) => Ok(flows::Value::Relation {
            entity_type: r.entity_type.clone(),
            ids: r.ids.clone(),
        }),
        None => Err(flows::Error::Permanent("value is empty".to_string())),
    }
}

/// A flow value as a wire value.
pub fn to_wire(v: &flows::Value) -> Result<api::Value, flows::Error> {
    use api::value::Kind;
    let kind = match v {
        flows::Value::F64(x) => Kind::F64(*x),
        flows::Value::I64(x) => Kind::I64(*x),
        flows::Value::Bool(x) => Kind::Bool(*x),
        flows::Value::String(x) => Kind::String(x.clone()),
        flows::Value::Bytes(x) => Kind::Bytes(x.clone()),
        flows::Value::Tensor(t) => {
            let (shape, data) = flows::Value::tensor_parts(t)?;
            Kind::Tensor(api::Tensor {
                shape: shape.into_iter().map(|d| d as u64).collect(),
                data,
            })
        }
        flows::Value::Relation { entity_type, ids } => Kind::Relation(api::Relation {
            entity_type: entity_type.clone(),
            ids: ids.clone(),
        }),
    };
    Ok(api::Value { kind: Some(kind) })
}

/// The type of a wire value, if it has one.
pub fn wire_type(v: &api::Value) -> Option<flows::ValueType> {
    use api::value::Kind;
    Some(match v.kind.as_ref()? {
        Kind::F64(_) => flows::ValueType::F64,
        Kind::I64(_) => flows::ValueType::I64,
        Kind::Bool(_) => flows::ValueType::Bool,
        Kind::String(_) => flows::ValueType::String,
        Kind::Bytes(_) => flows::ValueType::Bytes,
        Kind::Tensor(_) => flows::ValueType::Tensor,
        Kind::Relation(_) => flows::ValueType::Relation,
    })
}

/// The API enum of a value type.
pub fn api_type(t: flows::ValueType) -> api::ValueType {
    match t {
        flows::ValueType::F64 => api::ValueType::F64,
        flows::ValueType::I64 => api::ValueType::I64,
        flows::ValueType::Bool => api::ValueType::Bool,
        flows::ValueType::String => api::ValueType::String,
        flows::ValueType::Bytes => api::ValueType::Bytes,
        flows::ValueType::Tensor => api::ValueType::Tensor,
        flows::ValueType::Relation => api::ValueType::Relation,
    }
}

/// Decodes a protobuf message stored by a backend.
pub fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, Error> {
    Ok(M::decode(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trips() {
        let wire = api::Value {
            kind: Some(api::value::Kind::Tensor(api::Tensor {
                shape: vec![2, 3],
                data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            })),
        };
        let flow = to_flow(&wire).expect("valid tensor");
        assert_eq!(to_wire(&flow).expect("converts"), wire);
        let bad = api::Value {
            kind: Some(api::value::Kind::Tensor(api::Tensor {
                shape: vec![2, 2],
                data: vec![1.0],
            })),
        };
        assert!(to_flow(&bad).is_err());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    proptest! {
        /// Whatever bytes arrive as a value (a job's input, a stored envelope), decoding
        /// and converting them answers Ok or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(v) = api::Value::decode(bytes.as_slice()) {
                let _ = to_flow(&v);
                let _ = wire_type(&v);
            }
            let _ = fstore_proto::wire::ComputeJob::decode(bytes.as_slice());
            let _ = fstore_proto::wire::ValueEnvelope::decode(bytes.as_slice());
        }

        /// A tensor whose shape does not fit its data is refused, whatever the shape —
        /// including shapes whose product overflows.
        #[test]
        fn any_tensor_shape_is_checked(
            shape in proptest::collection::vec(any::<u64>(), 0..4),
            len in 0usize..8,
        ) {
            let v = api::Value {
                kind: Some(api::value::Kind::Tensor(api::Tensor {
                    shape: shape.clone(),
                    data: vec![0.5; len],
                })),
            };
            let fits = shape
                .iter()
                .try_fold(1u64, |acc, d| acc.checked_mul(*d))
                .is_some_and(|n| n == len as u64);
            prop_assert_eq!(to_flow(&v).is_ok(), fits, "shape {:?}, {} values", shape, len);
        }
    }
}
