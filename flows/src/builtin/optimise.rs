//! `sku.order_qty`: order quantities per SKU for one partner, the on-demand form of a
//! queue-fed replenishment optimiser (the seed: Zalando's order optimiser, which consumed
//! partner demand forecasts from a queue and published order proposals).
//!
//! The entity is a partner. Its request (or upstream features) supplies the demand
//! forecast per SKU and the partner's ordering settings; the flow answers with one order
//! quantity per SKU, computed for every SKU of every partner in the batch as one candle
//! expression:
//!
//! ```text
//! raw  = mean · L + z · std · √L            (cycle demand over the lead time + safety stock)
//! need = max(raw, moq)
//! qty  = pack · max(0, ⌈need / pack − 1e-6⌉)
//! ```
//!
//! with `z = Φ⁻¹(service_level)`, so the order is always a whole number of packs and at
//! least the minimum order quantity. A SKU whose `raw` is 0 or less gets `moq` rounded up
//! to a pack multiple, which is 0 when `moq` is 0. The `1e-6` pack of slack keeps a `raw`
//! that lands on a pack multiple up to float noise (inputs are f32 tensors) from costing an
//! extra pack.
//!
//! `Φ⁻¹` is Peter Acklam's rational approximation of the inverse standard normal CDF
//! (relative error below 1.15e-9 over (0, 1)), refined by one Halley step against the
//! complementary error function, which brings it to about machine precision.

use candle_core::{Device, Tensor};

use super::{SpecBuilder, input};
use crate::{Error, Flow, FlowInput, FlowSpec, Value, ValueType};

/// Slack, in packs, under which a quantity still counts as the pack multiple below it.
const PACK_SLACK: f64 = 1e-6;
/// The largest whole number an f32 output holds exactly.
const F32_EXACT: f64 = 16_777_216.0;

/// Order quantity per SKU from demand mean and spread, service level, lead time, pack
/// size and minimum order quantity.
#[derive(Debug)]
pub struct OrderQty {
    spec: FlowSpec,
}

impl OrderQty {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "sku.order_qty",
            1,
            ValueType::Tensor,
            "order quantity per sku: max(moq, mean·L + z·std·√L) rounded up to whole packs, \
             z = Φ⁻¹(service_level)",
        )
        .input(input("demand_mean", ValueType::Tensor))
        .input(input("demand_std", ValueType::Tensor))
        .input(input("service_level", ValueType::F64))
        .input(input("lead_time", ValueType::F64))
        .input(input("pack_size", ValueType::F64))
        .input(input("moq", ValueType::F64))
        .build();
        OrderQty { spec }
    }
}

impl Default for OrderQty {
    fn default() -> Self {
        Self::new()
    }
}

/// Peter Acklam's inverse standard normal CDF, refined by one Halley step.
///
/// Three regions: a rational function in `p − 0.5` for 0.02425 ≤ p ≤ 0.97575, and in
/// `√(−2 ln p)` (or `√(−2 ln(1−p))`) for the tails. The result `x` is then corrected with
/// `e = Φ(x) − p`, `u = e · √(2π) · exp(x²/2)`, `x ← x − u / (1 + x·u/2)`, where
/// `Φ(x) = erfc(−x/√2) / 2` comes from candle's CPU `erfc` (a port of fdlibm's).
/// Returns NaN outside (0, 1); callers check the range first.
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.02425;

    if p.is_nan() || p <= 0.0 || p >= 1.0 {
        return f64::NAN;
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    };
    // One Halley step on Φ(x) − p.
    let e = 0.5 * candle_core::cpu::erf::erfc_f64(-x / std::f64::consts::SQRT_2) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// One partner's validated inputs.
#[derive(Debug)]
struct Order {
    mean: Vec<f32>,
    std: Vec<f32>,
    /// `z · √L`: the safety-stock multiplier of `std`.
    z_sqrt_lead: f64,
    lead_time: f64,
    pack: f64,
    moq: f64,
}

fn setting(item: &FlowInput, name: &str) -> Result<f64, Error> {
    let v = item
        .value(name)?
        .as_f64()
        .map_err(|e| Error::Permanent(format!("input `{name}`: {}", e.message())))?;
    let ok = v.is_finite()
        && match name {
            "service_level" => v > 0.0 && v < 1.0,
            "lead_time" => v > 0.0,
            "pack_size" => v >= 1.0 && v.fract() == 0.0,
            _ => v >= 0.0,
        };
    if ok {
        return Ok(v);
    }
    let rule = match name {
        "service_level" => "must be a probability strictly between 0 and 1, e.g. 0.95",
        "lead_time" => "must be a number of periods above 0",
        "pack_size" => "must be a whole number of units from 1",
        _ => "must be a number of units from 0 (0: no minimum)",
    };
    Err(Error::Permanent(format!("input `{name}` = {v} {rule}")))
}

/// A per-SKU input: a 1-d tensor of finite, non-negative values.
fn sku_vector(item: &FlowInput, name: &str) -> Result<Vec<f32>, Error> {
    let t = item
        .value(name)?
        .as_tensor()
        .map_err(|e| Error::Permanent(format!("input `{name}`: {}", e.message())))?;
    let (shape, data) = Value::tensor_parts(t)?;
    if shape.len() != 1 {
        return Err(Error::Permanent(format!(
            "input `{name}` must be a 1-d tensor [n_skus], got shape {shape:?}"
        )));
    }
    if let Some((i, v)) = data
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite() || **v < 0.0)
    {
        return Err(Error::Permanent(format!(
            "input `{name}`[{i}] = {v} must be a finite number from 0 (units per period)"
        )));
    }
    Ok(data)
}

fn order(item: &FlowInput) -> Result<Order, Error> {
    let mean = sku_vector(item, "demand_mean")?;
    let std = sku_vector(item, "demand_std")?;
    if mean.len() != std.len() {
        return Err(Error::Permanent(format!(
            "inputs `demand_mean` [{}] and `demand_std` [{}] must have one value per sku each",
            mean.len(),
            std.len()
        )));
    }
    let service_level = setting(item, "service_level")?;
    let lead_time = setting(item, "lead_time")?;
    let pack = setting(item, "pack_size")?;
    let moq = setting(item, "moq")?;
    let z = inverse_normal_cdf(service_level);
    Ok(Order {
        mean,
        std,
        z_sqrt_lead: z * lead_time.sqrt(),
        lead_time,
        pack,
        moq,
    })
}

/// Order quantities for every SKU of every order, as one tensor expression over all SKUs
/// with each order's settings repeated along its SKUs.
fn order_batch(orders: &[&Order]) -> Result<Vec<f64>, Error> {
    let total: usize = orders.iter().map(|o| o.mean.len()).sum();
    if total == 0 {
        return Ok(Vec::new());
    }
    let per_sku = |f: &dyn Fn(&Order) -> f64| -> Vec<f64> {
        orders
            .iter()
            .flat_map(|o| std::iter::repeat_n(f(o), o.mean.len()))
            .collect()
    };
    let dev = Device::Cpu;
    let f64s = |v: Vec<f64>| Tensor::from_vec(v, total, &dev);
    let mean = f64s(
        orders
            .iter()
            .flat_map(|o| o.mean.iter().map(|v| f64::from(*v)))
            .collect(),
    )?;
    let std = f64s(
        orders
            .iter()
            .flat_map(|o| o.std.iter().map(|v| f64::from(*v)))
            .collect(),
    )?;
    let lead = f64s(per_sku(&|o| o.lead_time))?;
    let z_sqrt_lead = f64s(per_sku(&|o| o.z_sqrt_lead))?;
    let pack = f64s(per_sku(&|o| o.pack))?;
    let moq = f64s(per_sku(&|o| o.moq))?;

    let raw = ((&mean * &lead)? + (&std * &z_sqrt_lead)?)?;
    let need = raw.maximum(&moq)?;
    let packs = ((need / &pack)? - PACK_SLACK)?.ceil()?.maximum(0.0)?;
    // `+ 0.0` turns the -0.0 that `ceil` gives for small negatives into 0.0.
    let qty = ((packs * &pack)? + 0.0)?;
    Ok(qty.to_vec1::<f64>()?)
}

impl Flow for OrderQty {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        let parsed: Vec<Result<Order, Error>> = batch.iter().map(order).collect();
        let ok: Vec<&Order> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
        let all = match order_batch(&ok) {
            Ok(q) => q,
            Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut rest = all.as_slice();
        parsed
            .into_iter()
            .map(|p| {
                let o = p?;
                let n = o.mean.len();
                let (mine, tail) = rest
                    .split_at_checked(n)
                    .ok_or_else(|| Error::Permanent("batch result is short".to_string()))?;
                rest = tail;
                quantities(mine)
            })
            .collect()
    }
}

/// One partner's quantities as an f32 tensor [n_skus], refusing what f32 cannot hold.
fn quantities(q: &[f64]) -> Result<Value, Error> {
    if let Some((i, v)) = q
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite() || **v > F32_EXACT)
    {
        return Err(Error::Permanent(format!(
            "order quantity for sku {i} is {v}, above {F32_EXACT} units, which the f32 output \
             cannot hold exactly; express demand and moq in larger units (e.g. packs)"
        )));
    }
    Value::tensor(q.iter().map(|v| *v as f32).collect(), &[q.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::testing::item;

    fn t(v: &[f32]) -> Value {
        Value::tensor(v.to_vec(), &[v.len()]).expect("tensor")
    }

    fn partner(mean: &[f32], std: &[f32], sl: f64, lead: f64, pack: f64, moq: f64) -> FlowInput {
        item(
            &[
                ("demand_mean", t(mean)),
                ("demand_std", t(std)),
                ("service_level", Value::F64(sl)),
                ("lead_time", Value::F64(lead)),
                ("pack_size", Value::F64(pack)),
                ("moq", Value::F64(moq)),
            ],
            &[],
        )
    }

    fn qty(r: &Result<Value, Error>) -> Vec<f32> {
        let t = r
            .as_ref()
            .ok()
            .and_then(|v| v.as_tensor().ok())
            .expect("a tensor value");
        let (shape, data) = Value::tensor_parts(t).expect("parts");
        assert_eq!(shape, vec![data.len()]);
        data
    }

    fn one(mean: f32, std: f32, sl: f64, lead: f64, pack: f64, moq: f64) -> f32 {
        let out = OrderQty::new().run(&[partner(&[mean], &[std], sl, lead, pack, moq)]);
        qty(&out[0])[0]
    }

    #[test]
    fn inverse_normal_cdf_matches_known_quantiles() {
        let cases = [
            (0.5, 0.0),
            (0.95, 1.644_853_626_951_472_2),
            (0.975, 1.959_963_984_540_054),
            (0.99, 2.326_347_874_040_841),
            (0.841_344_746_068_542_9, 1.0),
            (0.001, -3.090_232_306_167_813_5),
            (0.02, -2.053_748_910_631_823),
            (1e-10, -6.361_340_902_404_056),
        ];
        for (p, want) in cases {
            let got = inverse_normal_cdf(p);
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "Φ⁻¹({p}) = {got}, want {want}"
            );
        }
        assert!((inverse_normal_cdf(0.975) - 1.959_963_984_540_054).abs() < 1e-8);
        assert_eq!(inverse_normal_cdf(0.5), 0.0);
        for p in [0.001, 0.01, 0.2, 0.4, 0.7] {
            assert!((inverse_normal_cdf(p) + inverse_normal_cdf(1.0 - p)).abs() < 1e-9);
        }
        assert!(inverse_normal_cdf(0.0).is_nan());
        assert!(inverse_normal_cdf(1.0).is_nan());
    }

    #[test]
    fn closed_form_quantities() {
        // 10·4 + 1.6448536269514722·2·√4 = 46.579…
        assert_eq!(one(10.0, 2.0, 0.95, 4.0, 1.0, 0.0), 47.0);
        assert_eq!(one(10.0, 2.0, 0.95, 4.0, 6.0, 0.0), 48.0);
        // moq above the need: the moq, rounded up to whole packs.
        assert_eq!(one(10.0, 2.0, 0.95, 4.0, 1.0, 50.0), 50.0);
        assert_eq!(one(10.0, 2.0, 0.95, 4.0, 6.0, 50.0), 54.0);
        // z = 0: exactly the cycle demand, no extra unit for float noise.
        assert_eq!(one(10.0, 2.0, 0.5, 4.0, 1.0, 0.0), 40.0);
        assert_eq!(one(10.0, 2.0, 0.5, 4.0, 8.0, 0.0), 40.0);
        assert_eq!(one(0.1, 0.0, 0.5, 10.0, 1.0, 0.0), 1.0);
        // Zero demand: moq rounded up to packs, or nothing.
        assert_eq!(one(0.0, 0.0, 0.95, 4.0, 6.0, 0.0), 0.0);
        assert!(one(0.0, 0.0, 0.95, 4.0, 6.0, 0.0).is_sign_positive());
        assert_eq!(one(0.0, 0.0, 0.95, 4.0, 6.0, 7.0), 12.0);
        // A service level under one half lowers the quantity below the cycle demand.
        assert_eq!(one(0.0, 3.0, 0.1, 1.0, 1.0, 0.0), 0.0);
    }

    #[test]
    fn several_skus_and_partners_in_one_run() {
        let z95 = 1.644_853_626_951_472_2_f64;
        let z975 = 1.959_963_984_540_054_f64;
        let out = OrderQty::new().run(&[
            partner(
                &[10.0, 0.0, 3.5, 100.0],
                &[2.0, 0.0, 1.0, 0.0],
                0.95,
                4.0,
                6.0,
                0.0,
            ),
            partner(&[5.0, 20.0, 0.0], &[1.0, 4.0, 2.0], 0.975, 9.0, 1.0, 10.0),
        ]);
        // Partner 1, packs of 6: 46.58 -> 48; 0 -> 0; 14 + 3.29 = 17.29 -> 18; 400 -> 402.
        let p1 = [
            10.0 * 4.0 + z95 * 2.0 * 2.0,
            0.0,
            3.5 * 4.0 + z95 * 1.0 * 2.0,
            400.0,
        ];
        let want1: Vec<f32> = p1.iter().map(|r| ((r / 6.0).ceil() * 6.0) as f32).collect();
        assert_eq!(want1, vec![48.0, 0.0, 18.0, 402.0]);
        assert_eq!(qty(&out[0]), want1);
        // Partner 2: 45 + 5.88 = 50.88 -> 51; 180 + 23.52 = 203.52 -> 204; 0 + 11.76 -> 12.
        let p2 = [
            5.0 * 9.0 + z975 * 1.0 * 3.0,
            20.0 * 9.0 + z975 * 4.0 * 3.0,
            z975 * 2.0 * 3.0,
        ];
        let want2: Vec<f32> = p2.iter().map(|r| r.ceil().max(10.0) as f32).collect();
        assert_eq!(want2, vec![51.0, 204.0, 12.0]);
        assert_eq!(qty(&out[1]), want2);
    }

    #[test]
    fn invalid_settings_and_shapes_fail_their_item_only() {
        let good = || partner(&[1.0, 2.0], &[0.5, 0.5], 0.9, 2.0, 1.0, 0.0);
        let out = OrderQty::new().run(&[
            partner(&[1.0], &[0.5], 1.0, 2.0, 1.0, 0.0),
            good(),
            partner(&[1.0], &[0.5], 0.9, 0.0, 1.0, 0.0),
            partner(&[1.0], &[0.5], 0.9, 2.0, 2.5, 0.0),
            partner(&[1.0], &[0.5], 0.9, 2.0, 1.0, -1.0),
            partner(&[1.0, 2.0], &[0.5], 0.9, 2.0, 1.0, 0.0),
            partner(&[-1.0], &[0.5], 0.9, 2.0, 1.0, 0.0),
            partner(&[1.0], &[f32::NAN], 0.9, 2.0, 1.0, 0.0),
            item(
                &[
                    (
                        "demand_mean",
                        Value::tensor(vec![1.0; 4], &[2, 2]).expect("t"),
                    ),
                    (
                        "demand_std",
                        Value::tensor(vec![1.0; 4], &[2, 2]).expect("t"),
                    ),
                    ("service_level", Value::F64(0.9)),
                    ("lead_time", Value::F64(1.0)),
                    ("pack_size", Value::F64(1.0)),
                    ("moq", Value::F64(0.0)),
                ],
                &[],
            ),
            partner(&[], &[], 0.9, 2.0, 1.0, 0.0),
            partner(&[1e7], &[0.0], 0.9, 2.0, 1.0, 0.0),
        ]);
        let msg = |i: usize| match &out[i] {
            Err(Error::Permanent(m)) => m.clone(),
            other => format!("item {i}: not a permanent error but {other:?}"),
        };
        assert!(msg(0).contains("`service_level` = 1 must be a probability strictly between"));
        assert!(out[1].is_ok());
        assert!(msg(2).contains("`lead_time` = 0 must be a number of periods above 0"));
        assert!(msg(3).contains("`pack_size` = 2.5 must be a whole number"));
        assert!(msg(4).contains("`moq` = -1 must be"));
        assert!(msg(5).contains("one value per sku"));
        assert!(msg(6).contains("`demand_mean`[0] = -1"));
        assert!(msg(7).contains("`demand_std`[0] = NaN"));
        assert!(msg(8).contains("must be a 1-d tensor"));
        assert_eq!(qty(&out[9]), Vec::<f32>::new());
        assert!(msg(10).contains("larger units"));
    }
}
