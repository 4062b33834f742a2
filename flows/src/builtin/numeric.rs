//! Numeric transforms: `num.affine` and `num.zscore` (vectorised on candle) and
//! `num.combine`.

use candle_core::{Device, Tensor};

use super::{SpecBuilder, input, param};
use crate::{Error, Flow, FlowInput, FlowSpec, Value, ValueType};

/// `fn(scale * x + offset)` with `fn` one of identity, log1p, sqrt, square, tanh.
#[derive(Debug)]
pub struct Affine {
    spec: FlowSpec,
}

impl Affine {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "num.affine",
            1,
            ValueType::F64,
            "fn(scale * x + offset), computed for the whole batch at once",
        )
        .input(input("x", ValueType::F64))
        .param(param("scale", Some("1"), "multiplier"))
        .param(param("offset", Some("0"), "added after scaling"))
        .param(param(
            "fn",
            Some("identity"),
            "applied last: identity, log1p, sqrt, square or tanh",
        ))
        .build();
        Affine { spec }
    }
}

impl Default for Affine {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy)]
enum UnaryFn {
    Identity,
    Log1p,
    Sqrt,
    Square,
    Tanh,
}

impl UnaryFn {
    fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "identity" => UnaryFn::Identity,
            "log1p" => UnaryFn::Log1p,
            "sqrt" => UnaryFn::Sqrt,
            "square" => UnaryFn::Square,
            "tanh" => UnaryFn::Tanh,
            other => {
                return Err(Error::Permanent(format!(
                    "param `fn` = `{other}` is not one of identity, log1p, sqrt, square, tanh"
                )));
            }
        })
    }

    fn apply(self, v: f64) -> f64 {
        match self {
            UnaryFn::Identity => v,
            UnaryFn::Log1p => v.ln_1p(),
            UnaryFn::Sqrt => v.sqrt(),
            UnaryFn::Square => v * v,
            UnaryFn::Tanh => v.tanh(),
        }
    }
}

struct AffineItem {
    x: f64,
    scale: f64,
    offset: f64,
    func: UnaryFn,
}

fn affine_item(item: &FlowInput) -> Result<AffineItem, Error> {
    Ok(AffineItem {
        x: item.value("x")?.as_f64()?,
        scale: item.params.f64_or("scale", 1.0)?,
        offset: item.params.f64_or("offset", 0.0)?,
        func: UnaryFn::parse(item.params.str_or("fn", "identity"))?,
    })
}

impl Flow for Affine {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn check_params(&self, params: &crate::Params) -> Result<(), Error> {
        self.spec.check_params(params)?;
        params.f64_or("scale", 1.0)?;
        params.f64_or("offset", 0.0)?;
        UnaryFn::parse(params.str_or("fn", "identity")).map(|_| ())
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        let parsed: Vec<Result<AffineItem, Error>> = batch.iter().map(affine_item).collect();
        let ok: Vec<&AffineItem> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
        let computed = match affine_batch(&ok) {
            Ok(values) => values,
            Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut computed = computed.into_iter();
        parsed
            .into_iter()
            .map(|p| {
                let item = p?;
                let y = computed
                    .next()
                    .ok_or_else(|| Error::Permanent("batch result is short".to_string()))?;
                finite(item.func.apply(y))
            })
            .collect()
    }
}

/// `scale * x + offset` for every item, as one tensor expression.
fn affine_batch(items: &[&AffineItem]) -> Result<Vec<f64>, Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let n = items.len();
    let dev = Device::Cpu;
    let x = Tensor::from_iter(items.iter().map(|i| i.x), &dev)?;
    let scale = Tensor::from_iter(items.iter().map(|i| i.scale), &dev)?;
    let offset = Tensor::from_iter(items.iter().map(|i| i.offset), &dev)?;
    let y = x.mul(&scale)?.add(&offset)?.to_vec1::<f64>()?;
    debug_assert_eq!(y.len(), n);
    Ok(y)
}

fn finite(v: f64) -> Result<Value, Error> {
    if v.is_finite() {
        Ok(Value::F64(v))
    } else {
        Err(Error::Permanent(format!(
            "result {v} is not a finite number; check the input and params"
        )))
    }
}

/// `(x - mean) / std`: how many standard deviations `x` lies from `mean`.
#[derive(Debug)]
pub struct ZScore {
    spec: FlowSpec,
}

impl ZScore {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "num.zscore",
            1,
            ValueType::F64,
            "(x - mean) / std, computed for the whole batch at once",
        )
        .input(input("x", ValueType::F64))
        .input(input("mean", ValueType::F64))
        .input(input("std", ValueType::F64))
        .build();
        ZScore { spec }
    }
}

impl Default for ZScore {
    fn default() -> Self {
        Self::new()
    }
}

struct ZScoreItem {
    x: f64,
    mean: f64,
    std: f64,
}

fn zscore_item(item: &FlowInput) -> Result<ZScoreItem, Error> {
    let std = item.value("std")?.as_f64()?;
    if std.is_nan() || std <= 0.0 {
        return Err(Error::Permanent(format!(
            "input `std` = {std} must be above 0; a z-score needs a positive standard deviation"
        )));
    }
    Ok(ZScoreItem {
        x: item.value("x")?.as_f64()?,
        mean: item.value("mean")?.as_f64()?,
        std,
    })
}

impl Flow for ZScore {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        let parsed: Vec<Result<ZScoreItem, Error>> = batch.iter().map(zscore_item).collect();
        let ok: Vec<&ZScoreItem> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
        let computed = match zscore_batch(&ok) {
            Ok(values) => values,
            Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut computed = computed.into_iter();
        parsed
            .into_iter()
            .map(|p| {
                p?;
                let z = computed
                    .next()
                    .ok_or_else(|| Error::Permanent("batch result is short".to_string()))?;
                finite(z)
            })
            .collect()
    }
}

/// `(x - mean) / std` for every item, as one tensor expression.
fn zscore_batch(items: &[&ZScoreItem]) -> Result<Vec<f64>, Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let dev = Device::Cpu;
    let x = Tensor::from_iter(items.iter().map(|i| i.x), &dev)?;
    let mean = Tensor::from_iter(items.iter().map(|i| i.mean), &dev)?;
    let std = Tensor::from_iter(items.iter().map(|i| i.std), &dev)?;
    Ok(x.sub(&mean)?.div(&std)?.to_vec1::<f64>()?)
}

/// `x op y` with op one of add, sub, mul, div, min, max.
#[derive(Debug)]
pub struct Combine {
    spec: FlowSpec,
}

impl Combine {
    pub fn new() -> Self {
        let spec = SpecBuilder::new("num.combine", 1, ValueType::F64, "x op y")
            .input(input("x", ValueType::F64))
            .input(input("y", ValueType::F64))
            .param(param("op", Some("add"), "add, sub, mul, div, min or max"))
            .build();
        Combine { spec }
    }
}

impl Default for Combine {
    fn default() -> Self {
        Self::new()
    }
}

fn combine(op: &str, x: f64, y: f64) -> Result<f64, Error> {
    Ok(match op {
        "add" => x + y,
        "sub" => x - y,
        "mul" => x * y,
        "div" => x / y,
        "min" => x.min(y),
        "max" => x.max(y),
        other => {
            return Err(Error::Permanent(format!(
                "param `op` = `{other}` is not one of add, sub, mul, div, min, max"
            )));
        }
    })
}

impl Flow for Combine {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn check_params(&self, params: &crate::Params) -> Result<(), Error> {
        self.spec.check_params(params)?;
        combine(params.str_or("op", "add"), 1.0, 1.0).map(|_| ())
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        batch
            .iter()
            .map(|item| {
                let x = item.value("x")?.as_f64()?;
                let y = item.value("y")?.as_f64()?;
                finite(combine(item.params.str_or("op", "add"), x, y)?)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::testing::item;

    #[test]
    fn affine_batches_with_per_item_params() {
        let out = Affine::new().run(&[
            item(
                &[("x", Value::F64(2.0))],
                &[("scale", "3"), ("offset", "1")],
            ),
            item(&[("x", Value::F64(3.0))], &[("fn", "square")]),
            item(&[("x", Value::String("no".into()))], &[]),
            item(&[("x", Value::F64(-2.0))], &[("fn", "sqrt")]),
        ]);
        assert_eq!(out[0].as_ref().map(|v| v.as_f64().ok()), Ok(Some(7.0)));
        assert_eq!(out[1].as_ref().map(|v| v.as_f64().ok()), Ok(Some(9.0)));
        assert!(matches!(&out[2], Err(Error::Permanent(m)) if m.contains("expected a f64")));
        assert!(matches!(&out[3], Err(Error::Permanent(m)) if m.contains("not a finite")));
    }

    #[test]
    fn affine_refuses_bad_params_at_registration() {
        let f = Affine::new();
        let p = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect();
        assert!(f.check_params(&p("scale", "2.5")).is_ok());
        assert!(f.check_params(&p("scale", "two")).is_err());
        assert!(f.check_params(&p("fn", "cube")).is_err());
        assert!(f.check_params(&p("nope", "1")).is_err());
    }

    #[test]
    fn zscore_batches_and_refuses_a_non_positive_std() {
        let z = |x: f64, mean: f64, std: f64| {
            item(
                &[
                    ("x", Value::F64(x)),
                    ("mean", Value::F64(mean)),
                    ("std", Value::F64(std)),
                ],
                &[],
            )
        };
        let out = ZScore::new().run(&[
            z(13.0, 10.0, 2.0),
            z(1.0, 1.0, 0.0),
            z(4.0, 10.0, 3.0),
            z(1.0, 1.0, -1.0),
            z(1.0, 1.0, f64::NAN),
            item(&[("x", Value::F64(1.0)), ("mean", Value::F64(0.0))], &[]),
        ]);
        assert_eq!(out[0].as_ref().map(|v| v.as_f64().ok()), Ok(Some(1.5)));
        assert!(
            matches!(&out[1], Err(Error::Permanent(m)) if m.contains("`std` = 0 must be above 0"))
        );
        assert_eq!(out[2].as_ref().map(|v| v.as_f64().ok()), Ok(Some(-2.0)));
        assert!(matches!(&out[3], Err(Error::Permanent(m)) if m.contains("`std` = -1")));
        assert!(matches!(&out[4], Err(Error::Permanent(m)) if m.contains("`std` = NaN")));
        assert!(matches!(&out[5], Err(Error::Permanent(m)) if m.contains("`std` is missing")));
        assert!(
            ZScore::new()
                .check_params(&crate::Params::default())
                .is_ok()
        );
    }

    #[test]
    fn combine_ops() {
        let out = Combine::new().run(&[item(
            &[("x", Value::F64(6.0)), ("y", Value::F64(4.0))],
            &[("op", "sub")],
        )]);
        assert_eq!(out[0].as_ref().map(|v| v.as_f64().ok()), Ok(Some(2.0)));
    }
}
