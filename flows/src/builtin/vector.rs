//! Vector flows over dependency tensors: `vec.mean_pool` and `vec.cosine`, each computed
//! for the whole batch as one candle expression over stacked rows.

use candle_core::{Device, Tensor};

use super::{SpecBuilder, input};
use crate::{Error, Flow, FlowInput, FlowSpec, Value, ValueType};

/// Element-wise mean of two tensors of one shape.
#[derive(Debug)]
pub struct MeanPool {
    spec: FlowSpec,
}

impl MeanPool {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "vec.mean_pool",
            1,
            ValueType::Tensor,
            "element-wise mean of two vectors",
        )
        .input(input("a", ValueType::Tensor))
        .input(input("b", ValueType::Tensor))
        .build();
        MeanPool { spec }
    }
}

impl Default for MeanPool {
    fn default() -> Self {
        Self::new()
    }
}

/// Cosine similarity of two vectors of one length.
#[derive(Debug)]
pub struct Cosine {
    spec: FlowSpec,
}

impl Cosine {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "vec.cosine",
            1,
            ValueType::F64,
            "cosine similarity of two vectors",
        )
        .input(input("a", ValueType::Tensor))
        .input(input("b", ValueType::Tensor))
        .build();
        Cosine { spec }
    }
}

impl Default for Cosine {
    fn default() -> Self {
        Self::new()
    }
}

/// An item's shape and its two inputs flattened to rows of one length.
type Pair = (Vec<usize>, Vec<f32>, Vec<f32>);

/// The two inputs of an item flattened to rows of one length.
fn pair(item: &FlowInput) -> Result<Pair, Error> {
    let (sa, a) = Value::tensor_parts(item.value("a")?.as_tensor()?)?;
    let (sb, b) = Value::tensor_parts(item.value("b")?.as_tensor()?)?;
    if sa != sb {
        return Err(Error::Permanent(format!(
            "inputs `a` {sa:?} and `b` {sb:?} must have the same shape"
        )));
    }
    if a.is_empty() {
        return Err(Error::Permanent("inputs are empty tensors".to_string()));
    }
    Ok((sa, a, b))
}

/// Runs `f` over groups of items whose rows share a length, as [n, d] matrices.
fn grouped<F>(batch: &[FlowInput], f: F) -> Vec<Result<Value, Error>>
where
    F: Fn(&Tensor, &Tensor, &[Vec<usize>]) -> Result<Vec<Result<Value, Error>>, Error>,
{
    let pairs: Vec<Result<Pair, Error>> = batch.iter().map(pair).collect();
    let mut out: Vec<Result<Value, Error>> = pairs
        .iter()
        .map(|p| match p {
            Ok(_) => Err(Error::Permanent("item was not computed".to_string())),
            Err(e) => Err(e.clone()),
        })
        .collect();
    let mut lens: Vec<usize> = pairs
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|(_, a, _)| a.len()))
        .collect();
    lens.sort_unstable();
    lens.dedup();
    for d in lens {
        let idx: Vec<usize> = (0..batch.len())
            .filter(|i| matches!(&pairs[*i], Ok((_, a, _)) if a.len() == d))
            .collect();
        let mut a_rows = Vec::with_capacity(idx.len() * d);
        let mut b_rows = Vec::with_capacity(idx.len() * d);
        let mut shapes = Vec::with_capacity(idx.len());
        for i in &idx {
            if let Ok((s, a, b)) = &pairs[*i] {
                a_rows.extend_from_slice(a);
                b_rows.extend_from_slice(b);
                shapes.push(s.clone());
            }
        }
        let result = Tensor::from_vec(a_rows, (idx.len(), d), &Device::Cpu)
            .and_then(|a| Ok((a, Tensor::from_vec(b_rows, (idx.len(), d), &Device::Cpu)?)))
            .map_err(Error::from)
            .and_then(|(a, b)| f(&a, &b, &shapes));
        match result {
            Ok(values) => {
                for (i, v) in idx.into_iter().zip(values) {
                    out[i] = v;
                }
            }
            Err(e) => {
                for i in idx {
                    out[i] = Err(e.clone());
                }
            }
        }
    }
    out
}

impl Flow for MeanPool {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        grouped(batch, |a, b, shapes| {
            let mean = ((a + b)? / 2.0)?;
            shapes
                .iter()
                .enumerate()
                .map(|(i, shape)| Ok(Ok(Value::Tensor(mean.get(i)?.reshape(shape.as_slice())?))))
                .collect()
        })
    }
}

impl Flow for Cosine {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        grouped(batch, |a, b, _| {
            let dot = (a * b)?.sum(1)?;
            let na = a.sqr()?.sum(1)?.sqrt()?;
            let nb = b.sqr()?.sum(1)?.sqrt()?;
            let dot = dot.to_vec1::<f32>()?;
            let norms = (na * nb)?.to_vec1::<f32>()?;
            Ok(dot
                .into_iter()
                .zip(norms)
                .map(|(d, n)| {
                    if n == 0.0 {
                        Err(Error::Permanent(
                            "cosine of a zero vector is undefined".to_string(),
                        ))
                    } else {
                        Ok(Value::F64(f64::from(d / n)))
                    }
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::testing::item;

    fn t(v: &[f32]) -> Value {
        Value::tensor(v.to_vec(), &[v.len()]).expect("tensor")
    }

    #[test]
    fn cosine_batch_with_mixed_lengths() {
        let out = Cosine::new().run(&[
            item(&[("a", t(&[1.0, 0.0])), ("b", t(&[0.0, 1.0]))], &[]),
            item(
                &[("a", t(&[1.0, 2.0, 3.0])), ("b", t(&[2.0, 4.0, 6.0]))],
                &[],
            ),
            item(&[("a", t(&[1.0, 1.0])), ("b", t(&[1.0, 1.0, 1.0]))], &[]),
            item(&[("a", t(&[0.0, 0.0])), ("b", t(&[1.0, 1.0]))], &[]),
        ]);
        let f = |i: usize| out[i].as_ref().ok().and_then(|v| v.as_f64().ok());
        assert!(f(0).is_some_and(|v| v.abs() < 1e-6));
        assert!(f(1).is_some_and(|v| (v - 1.0).abs() < 1e-6));
        assert!(matches!(&out[2], Err(Error::Permanent(m)) if m.contains("same shape")));
        assert!(matches!(&out[3], Err(Error::Permanent(m)) if m.contains("zero vector")));
    }

    #[test]
    fn mean_pool_keeps_shape() {
        let a = Value::tensor(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).expect("tensor");
        let b = Value::tensor(vec![3.0, 2.0, 1.0, 0.0], &[2, 2]).expect("tensor");
        let out = MeanPool::new().run(&[item(&[("a", a), ("b", b)], &[])]);
        let (shape, data) = Value::tensor_parts(
            out[0]
                .as_ref()
                .ok()
                .and_then(|v| v.as_tensor().ok())
                .expect("tensor"),
        )
        .expect("parts");
        assert_eq!(shape, vec![2, 2]);
        assert_eq!(data, vec![2.0, 2.0, 2.0, 2.0]);
    }
}
