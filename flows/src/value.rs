//! Typed values that flows read and produce.

use std::fmt;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The type of a flow input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    F64,
    I64,
    Bool,
    String,
    Bytes,
    /// A dense f32 tensor of any shape.
    Tensor,
    /// Ids of related entities of one entity type.
    Relation,
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ValueType::F64 => "f64",
            ValueType::I64 => "i64",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Bytes => "bytes",
            ValueType::Tensor => "tensor",
            ValueType::Relation => "relation",
        };
        f.write_str(s)
    }
}

/// A feature value. Tensors are f32 candle tensors on the flow's device.
#[derive(Debug, Clone)]
pub enum Value {
    F64(f64),
    I64(i64),
    Bool(bool),
    String(String),
    Bytes(Vec<u8>),
    Tensor(Tensor),
    /// Related entities: their entity type and ids, in order.
    Relation {
        entity_type: String,
        ids: Vec<String>,
    },
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::F64(_) => ValueType::F64,
            Value::I64(_) => ValueType::I64,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Bytes(_) => ValueType::Bytes,
            Value::Tensor(_) => ValueType::Tensor,
            Value::Relation { .. } => ValueType::Relation,
        }
    }

    /// A tensor from row-major f32 data, refusing a shape that does not fit the data.
    pub fn tensor(data: Vec<f32>, shape: &[usize]) -> Result<Value, Error> {
        // Checked: a shape sent by a caller may multiply past usize. candle multiplies
        // the dimensions after a zero too (its strides), so those must fit as well.
        let expected = shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d));
        let strides = shape
            .iter()
            .filter(|d| **d != 0)
            .try_fold(1usize, |acc, d| acc.checked_mul(*d));
        let expected = expected.filter(|_| strides.is_some());
        if expected != Some(data.len()) {
            return Err(Error::Permanent(format!(
                "tensor shape {shape:?} needs {} values, got {}",
                expected.map_or_else(|| "more than can be counted".to_string(), |n| n.to_string()),
                data.len()
            )));
        }
        Ok(Value::Tensor(Tensor::from_vec(data, shape, &Device::Cpu)?))
    }

    pub fn as_f64(&self) -> Result<f64, Error> {
        match self {
            Value::F64(v) => Ok(*v),
            other => Err(type_error(ValueType::F64, other)),
        }
    }

    pub fn as_str(&self) -> Result<&str, Error> {
        match self {
            Value::String(s) => Ok(s),
            other => Err(type_error(ValueType::String, other)),
        }
    }

    /// The entity type and ids of a relation value.
    pub fn as_relation(&self) -> Result<(&str, &[String]), Error> {
        match self {
            Value::Relation { entity_type, ids } => Ok((entity_type, ids)),
            other => Err(type_error(ValueType::Relation, other)),
        }
    }

    pub fn as_tensor(&self) -> Result<&Tensor, Error> {
        match self {
            Value::Tensor(t) => Ok(t),
            other => Err(type_error(ValueType::Tensor, other)),
        }
    }

    /// The shape and row-major f32 data of a tensor value.
    pub fn tensor_parts(t: &Tensor) -> Result<(Vec<usize>, Vec<f32>), Error> {
        let shape = t.dims().to_vec();
        let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok((shape, data))
    }
}

fn type_error(expected: ValueType, got: &Value) -> Error {
    Error::Permanent(format!(
        "expected a {expected} value, got a {}",
        got.value_type()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the conversion's property test: a caller's shape whose product
    /// overflows used to panic (debug) or wrap (release).
    #[test]
    fn a_shape_past_usize_is_refused_not_multiplied() {
        let e = Value::tensor(Vec::new(), &[usize::MAX, 2]).expect_err("overflow");
        assert!(e.to_string().contains("more than can be counted"), "{e}");
        assert!(Value::tensor(vec![1.0; 6], &[2, 3]).is_ok());
        assert!(Value::tensor(vec![1.0; 5], &[2, 3]).is_err());
        // Found by fuzzing (the wire target, replayed in a debug build): no values, but
        // strides past usize that candle would compute and overflow on.
        let e = Value::tensor(Vec::new(), &[0, 1 << 40, 1 << 40]).expect_err("overflow");
        assert!(e.to_string().contains("more than can be counted"), "{e}");
        assert!(
            Value::tensor(Vec::new(), &[0, 3]).is_ok(),
            "an empty tensor is fine"
        );
    }
}
