//! Typed columns for feature values: a feature's [`ColumnType`] (from its values in the
//! log: f64, i64, bool, string, bytes, or an f32 tensor as a fixed-size list of its
//! element count) and a [`ValueColumn`] that builds the Arrow array of one batch.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeListBuilder, Float32Builder, Float64Builder,
    Int64Builder, NullBuilder, StringBuilder,
};
use arrow_schema::{DataType, Field};
use fstore_proto::api::{self, value::Kind};

/// How one feature's values are typed in an exported file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// The feature has no READY value in the log: an all-null column.
    Null,
    F64,
    I64,
    Bool,
    String,
    Bytes,
    /// A dense f32 tensor of this many elements (row-major, its shape flattened).
    Tensor {
        width: i32,
    },
}

impl ColumnType {
    /// The type of `value`; None for a value without a kind, or a tensor too large for
    /// one Arrow list.
    pub fn of(value: &api::Value) -> Option<ColumnType> {
        Some(match value.kind.as_ref()? {
            Kind::F64(_) => ColumnType::F64,
            Kind::I64(_) => ColumnType::I64,
            Kind::Bool(_) => ColumnType::Bool,
            // A relation's ids, comma-separated.
            Kind::String(_) | Kind::Relation(_) => ColumnType::String,
            Kind::Bytes(_) => ColumnType::Bytes,
            Kind::Tensor(t) => ColumnType::Tensor {
                width: i32::try_from(t.data.len()).ok()?,
            },
        })
    }

    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Null => DataType::Null,
            ColumnType::F64 => DataType::Float64,
            ColumnType::I64 => DataType::Int64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::String => DataType::Utf8,
            ColumnType::Bytes => DataType::Binary,
            ColumnType::Tensor { width } => DataType::FixedSizeList(element(), width),
        }
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnType::Tensor { width } => write!(f, "tensor of {width} floats"),
            other => write!(f, "{}", format!("{other:?}").to_lowercase()),
        }
    }
}

/// The element field of a tensor column's list.
fn element() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

/// A value whose type is not its column's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub column: ColumnType,
    /// What the value was (`None`: a value without a kind).
    pub found: Option<ColumnType>,
}

/// One batch of a feature's values, typed.
#[derive(Debug)]
pub enum ValueColumn {
    Null(NullBuilder),
    F64(Float64Builder),
    I64(Int64Builder),
    Bool(BooleanBuilder),
    String(StringBuilder),
    Bytes(BinaryBuilder),
    Tensor(FixedSizeListBuilder<Float32Builder>, i32),
}

impl ValueColumn {
    pub fn new(ty: ColumnType) -> ValueColumn {
        match ty {
            ColumnType::Null => ValueColumn::Null(NullBuilder::new()),
            ColumnType::F64 => ValueColumn::F64(Float64Builder::new()),
            ColumnType::I64 => ValueColumn::I64(Int64Builder::new()),
            ColumnType::Bool => ValueColumn::Bool(BooleanBuilder::new()),
            ColumnType::String => ValueColumn::String(StringBuilder::new()),
            ColumnType::Bytes => ValueColumn::Bytes(BinaryBuilder::new()),
            ColumnType::Tensor { width } => ValueColumn::Tensor(
                FixedSizeListBuilder::new(Float32Builder::new(), width).with_field(element()),
                width,
            ),
        }
    }

    /// Appends `value`, or a null for None. A value of another type is refused and
    /// nothing is appended.
    pub fn append(&mut self, value: Option<&api::Value>) -> Result<(), Mismatch> {
        let Some(value) = value else {
            self.append_null();
            return Ok(());
        };
        let kind = value.kind.as_ref();
        match (self, kind) {
            (ValueColumn::F64(b), Some(Kind::F64(x))) => b.append_value(*x),
            (ValueColumn::I64(b), Some(Kind::I64(x))) => b.append_value(*x),
            (ValueColumn::Bool(b), Some(Kind::Bool(x))) => b.append_value(*x),
            (ValueColumn::String(b), Some(Kind::String(x))) => b.append_value(x),
            (ValueColumn::String(b), Some(Kind::Relation(r))) => b.append_value(r.ids.join(",")),
            (ValueColumn::Bytes(b), Some(Kind::Bytes(x))) => b.append_value(x),
            (ValueColumn::Tensor(b, width), Some(Kind::Tensor(t)))
                if i32::try_from(t.data.len()) == Ok(*width) =>
            {
                b.values().append_slice(&t.data);
                b.append(true);
            }
            (column, _) => {
                return Err(Mismatch {
                    column: column.column_type(),
                    found: ColumnType::of(value),
                });
            }
        }
        Ok(())
    }

    pub fn append_null(&mut self) {
        match self {
            ValueColumn::Null(b) => b.append_null(),
            ValueColumn::F64(b) => b.append_null(),
            ValueColumn::I64(b) => b.append_null(),
            ValueColumn::Bool(b) => b.append_null(),
            ValueColumn::String(b) => b.append_null(),
            ValueColumn::Bytes(b) => b.append_null(),
            ValueColumn::Tensor(b, width) => {
                // A null list still holds `width` (ignored) elements.
                for _ in 0..*width {
                    b.values().append_value(0.0);
                }
                b.append(false);
            }
        }
    }

    fn column_type(&self) -> ColumnType {
        match self {
            ValueColumn::Null(_) => ColumnType::Null,
            ValueColumn::F64(_) => ColumnType::F64,
            ValueColumn::I64(_) => ColumnType::I64,
            ValueColumn::Bool(_) => ColumnType::Bool,
            ValueColumn::String(_) => ColumnType::String,
            ValueColumn::Bytes(_) => ColumnType::Bytes,
            ValueColumn::Tensor(_, width) => ColumnType::Tensor { width: *width },
        }
    }

    /// The array of the values appended since the last call; the column starts empty
    /// again.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ValueColumn::Null(b) => Arc::new(b.finish()),
            ValueColumn::F64(b) => Arc::new(b.finish()),
            ValueColumn::I64(b) => Arc::new(b.finish()),
            ValueColumn::Bool(b) => Arc::new(b.finish()),
            ValueColumn::String(b) => Arc::new(b.finish()),
            ValueColumn::Bytes(b) => Arc::new(b.finish()),
            ValueColumn::Tensor(b, _) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::{Array, FixedSizeListArray, Float32Array, Float64Array};

    use super::*;

    fn tensor(data: &[f32]) -> api::Value {
        api::Value {
            kind: Some(Kind::Tensor(api::Tensor {
                shape: vec![data.len() as u64],
                data: data.to_vec(),
            })),
        }
    }

    #[test]
    fn tensors_are_fixed_size_lists_with_nulls_kept_apart() {
        let ty = ColumnType::of(&tensor(&[1.0, 2.0])).expect("typed");
        assert_eq!(ty, ColumnType::Tensor { width: 2 });
        let mut c = ValueColumn::new(ty);
        c.append(Some(&tensor(&[1.0, 2.0]))).expect("fits");
        c.append(None).expect("null");
        c.append(Some(&tensor(&[3.0, 4.0]))).expect("fits");
        let e = c
            .append(Some(&tensor(&[1.0, 2.0, 3.0])))
            .expect_err("wrong width");
        assert_eq!(e.found, Some(ColumnType::Tensor { width: 3 }));
        let array = c.finish();
        assert_eq!(array.data_type(), &ty.arrow());
        let list = array
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .expect("a fixed-size list");
        assert_eq!((list.len(), list.null_count()), (3, 1));
        let row = list.value(2);
        let floats = row.as_any().downcast_ref::<Float32Array>().expect("floats");
        assert_eq!(floats.values().to_vec(), vec![3.0, 4.0]);
    }

    #[test]
    fn a_value_of_another_type_is_refused() {
        let mut c = ValueColumn::new(ColumnType::F64);
        let i = api::Value {
            kind: Some(Kind::I64(3)),
        };
        let e = c.append(Some(&i)).expect_err("an i64 in an f64 column");
        assert_eq!(
            (e.column, e.found),
            (ColumnType::F64, Some(ColumnType::I64))
        );
        c.append(Some(&api::Value {
            kind: Some(Kind::F64(1.5)),
        }))
        .expect("an f64");
        let array = c.finish();
        let f = array.as_any().downcast_ref::<Float64Array>().expect("f64s");
        assert_eq!(
            f.values().to_vec(),
            vec![1.5],
            "nothing of the refused value"
        );
        assert_eq!(
            ColumnType::Tensor { width: 4 }.to_string(),
            "tensor of 4 floats"
        );
        assert_eq!(ColumnType::F64.to_string(), "f64");
    }
}
