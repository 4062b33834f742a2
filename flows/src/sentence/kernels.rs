//! The elementwise steps of BERT that candle runs one scalar at a time, or one op (and
//! one allocation) at a time, fused and written so the compiler vectorises them:
//! - the intermediate layer's bias and activation in one pass, the exact (erf) GELU
//!   computed by a rational approximation of erf (no `exp`, no branch) instead of libm's
//!   scalar `erf`;
//! - a dense layer's bias, the residual and the layer norm after it in one pass;
//! - attention's padding mask and softmax in one pass.
//!
//! On a device other than the CPU the same step runs as candle's ops.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;
use serde::Deserialize;

/// BERT's `hidden_act`, as `config.json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// `x · Φ(x)`, with erf: what BERT was trained with.
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU's tanh approximation.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", rename = "gelu_fast")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
}

/// `activation(x + bias)` for `x` `[rows, n]` and `bias` `[n]`.
pub fn add_bias(x: &Tensor, bias: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() {
        return x.apply_op2_no_bwd(bias, &BiasActivation(activation));
    }
    let y = x.broadcast_add(bias)?;
    match activation {
        Activation::Gelu => y.gelu_erf(),
        Activation::GeluTanh => y.gelu(),
        Activation::Relu => y.relu(),
    }
}

struct BiasActivation(Activation);

/// Rows per parallel task: enough work to outweigh handing it to another thread.
const ROWS_PER_TASK: usize = 16;

impl CustomOp2 for BiasActivation {
    fn name(&self) -> &'static str {
        "bias-activation"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_values(x, x_layout)?;
        let bias = f32_values(bias, bias_layout)?;
        let n = bias.len();
        if n == 0 || !x.len().is_multiple_of(n) {
            candle_core::bail!("bias-activation: {} values are not rows of {n}", x.len());
        }
        let mut out = vec![0f32; x.len()];
        let activation = self.0;
        out.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(x.par_chunks(n * ROWS_PER_TASK))
            .for_each(|(out, x)| {
                for (out, x) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                    activate_row(out, x, bias, activation);
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// A layer norm's weights, kept as plain vectors for the fused step.
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
    weight_values: Vec<f32>,
    bias_values: Vec<f32>,
    eps: f32,
}

impl Norm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f32) -> candle_core::Result<Norm> {
        Ok(Norm {
            weight_values: weight.to_dtype(candle_core::DType::F32)?.to_vec1()?,
            bias_values: bias.to_dtype(candle_core::DType::F32)?.to_vec1()?,
            weight,
            bias,
            eps,
        })
    }

    /// The layer norm of `x` alone.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// `norm(x + bias + residual)` for `x` and `residual` `[rows, n]` and `bias` `[n]`.
    pub fn add(&self, x: &Tensor, bias: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() {
            return x.apply_op3_no_bwd(bias, residual, self);
        }
        self.forward(&(x.broadcast_add(bias)? + residual)?)
    }
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        "bias-residual-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_values(x, x_layout)?;
        let bias = f32_values(bias, bias_layout)?;
        let residual = f32_values(residual, residual_layout)?;
        let n = self.weight_values.len();
        if n == 0 || bias.len() != n || !x.len().is_multiple_of(n) || residual.len() != x.len() {
            candle_core::bail!(
                "bias-residual-norm: {} values and a residual of {} are not rows of {n} (bias {})",
                x.len(),
                residual.len(),
                bias.len()
            );
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(x.par_chunks(n * ROWS_PER_TASK))
            .zip(residual.par_chunks(n * ROWS_PER_TASK))
            .for_each(|((out, x), residual)| {
                let rows = out
                    .chunks_exact_mut(n)
                    .zip(x.chunks_exact(n))
                    .zip(residual.chunks_exact(n));
                for ((out, x), residual) in rows {
                    self.norm_row(out, x, bias, residual);
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

impl Norm {
    fn norm_row(&self, out: &mut [f32], x: &[f32], bias: &[f32], residual: &[f32]) {
        for ((o, x), (b, r)) in out.iter_mut().zip(x).zip(bias.iter().zip(residual)) {
            *o = x + b + r;
        }
        let n = out.len() as f32;
        let mean = out.iter().sum::<f32>() / n;
        let var = out.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv_std = 1.0 / (var + self.eps).sqrt();
        let weights = self.weight_values.iter().zip(&self.bias_values);
        for (o, (w, b)) in out.iter_mut().zip(weights) {
            *o = (*o - mean) * inv_std * w + b;
        }
    }
}

fn f32_values<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("the fused steps run on f32 tensors");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&values[start..end]),
        None => candle_core::bail!("the fused steps need contiguous tensors"),
    }
}

/// `softmax(scores + mask)` over the last dimension, for `scores` `[texts, heads, l, l]`
/// and `mask` `[texts, 1, 1, l]` (0 for a token, the lowest f32 for padding).
pub fn masked_softmax(scores: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    if scores.device().is_cpu() {
        return scores.apply_op2_no_bwd(mask, &MaskedSoftmax);
    }
    candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask)?)
}

struct MaskedSoftmax;

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        scores: &CpuStorage,
        scores_layout: &Layout,
        mask: &CpuStorage,
        mask_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let scores = f32_values(scores, scores_layout)?;
        let mask = f32_values(mask, mask_layout)?;
        let &[texts, heads, rows, l] = scores_layout.dims() else {
            candle_core::bail!("masked-softmax: scores are not [texts, heads, l, l]");
        };
        if mask.len() != texts * l || l == 0 {
            candle_core::bail!(
                "masked-softmax: a mask of {} for {texts} texts of {l}",
                mask.len()
            );
        }
        let per_text = heads * rows * l;
        let mut out = vec![0f32; scores.len()];
        out.par_chunks_mut(per_text)
            .zip(scores.par_chunks(per_text))
            .zip(mask.par_chunks(l))
            .for_each(|((out, scores), mask)| {
                for (out, scores) in out.chunks_exact_mut(l).zip(scores.chunks_exact(l)) {
                    let mut max = f32::MIN;
                    for ((o, s), m) in out.iter_mut().zip(scores).zip(mask) {
                        *o = s + m;
                        max = max.max(*o);
                    }
                    let mut sum = 0f32;
                    for o in out.iter_mut() {
                        *o = (*o - max).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    out.iter_mut().for_each(|o| *o *= inv);
                }
            });
        Ok((CpuStorage::F32(out), scores_layout.shape().clone()))
    }
}

fn activate_row(out: &mut [f32], x: &[f32], bias: &[f32], activation: Activation) {
    let values = out.iter_mut().zip(x).zip(bias);
    match activation {
        Activation::Gelu => values.for_each(|((o, x), b)| *o = gelu(x + b)),
        Activation::GeluTanh => values.for_each(|((o, x), b)| *o = gelu_tanh(x + b)),
        Activation::Relu => values.for_each(|((o, x), b)| *o = (x + b).max(0.0)),
    }
}

/// `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`, with tanh as `1 - 2/(1 + e^{2u})`.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

/// erf on f32 to within 5e-7 (a few ulp): an odd rational function of `x` clamped to [-4, 4]
/// (beyond, erf is ±1 in f32), `x·P(x²)/Q(x²)` with the numerator of degree 13 and the
/// denominator of degree 8 (the approximation Eigen and XLA use for float erf). Plain
/// multiply-adds, not `mul_add`: without FMA in the build's target features that is a
/// libm call per step, and the loop no longer vectorises.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329_3e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use candle_core::cpu::erf::erf_f64;
    use candle_core::{Device, Tensor};

    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("a");
        let b = b.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("b");
        assert_eq!(a.len(), b.len(), "shapes differ");
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn erf_is_within_a_few_ulp_of_the_f64_erf() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let err = (f64::from(erf(x)) - erf_f64(f64::from(x))).abs();
            worst = worst.max(err);
        }
        assert!(worst < 5e-7, "erf is off by up to {worst:e}");
        // Saturated: within one f32 ulp of ±1 (and never past it).
        assert!((1.0 - erf(9.0)) <= f32::EPSILON && erf(9.0) <= 1.0);
        assert!((1.0 + erf(-9.0)) <= f32::EPSILON && erf(-9.0) >= -1.0);
    }

    #[test]
    fn the_fused_step_matches_candles_ops() {
        let rows = 37;
        let n = 19;
        let x: Vec<f32> = (0..rows * n)
            .map(|i| (i as f32 * 0.37).sin() * 6.0)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 0.9).collect();
        let x = Tensor::from_vec(x, (rows, n), &Device::Cpu).expect("x");
        let bias = Tensor::from_vec(bias, n, &Device::Cpu).expect("bias");
        let plain = x.broadcast_add(&bias).expect("add");
        for (activation, expected) in [
            (Activation::Gelu, plain.gelu_erf()),
            (Activation::GeluTanh, plain.gelu()),
            (Activation::Relu, plain.relu()),
        ] {
            let fused = add_bias(&x, &bias, activation).expect("fused");
            let diff = max_abs_diff(&fused, &expected.expect("candle"));
            assert!(diff < 2e-6, "{activation:?} differs by {diff}");
        }
    }

    #[test]
    fn the_fused_norm_matches_candles_ops() {
        let (rows, n) = (23, 31);
        let values = |k: usize, f: f32| -> Vec<f32> {
            (0..k)
                .map(|i| ((i as f32 + f) * 0.71).cos() * 3.0)
                .collect()
        };
        let cpu = &Device::Cpu;
        let x = Tensor::from_vec(values(rows * n, 0.0), (rows, n), cpu).expect("x");
        let residual = Tensor::from_vec(values(rows * n, 5.0), (rows, n), cpu).expect("r");
        let bias = Tensor::from_vec(values(n, 9.0), n, cpu).expect("bias");
        let norm = Norm::new(
            Tensor::from_vec(values(n, 2.0), n, cpu).expect("w"),
            Tensor::from_vec(values(n, 3.0), n, cpu).expect("b"),
            1e-12,
        )
        .expect("norm");
        let fused = norm.add(&x, &bias, &residual).expect("fused");
        let plain = norm
            .forward(&(x.broadcast_add(&bias).expect("add") + &residual).expect("add"))
            .expect("plain");
        let diff = max_abs_diff(&fused, &plain);
        assert!(diff < 1e-5, "the fused norm differs by {diff}");
        let wrong = Tensor::zeros((rows, n + 1), candle_core::DType::F32, cpu).expect("w");
        assert!(norm.add(&wrong, &bias, &wrong).is_err());
    }

    #[test]
    fn the_masked_softmax_matches_candles_ops() {
        let (texts, heads, l) = (3, 2, 5);
        let cpu = &Device::Cpu;
        let scores: Vec<f32> = (0..texts * heads * l * l)
            .map(|i| (i as f32 * 0.37).sin() * 4.0)
            .collect();
        let scores = Tensor::from_vec(scores, (texts, heads, l, l), cpu).expect("scores");
        let lens = [5, 2, 4];
        let mask: Vec<f32> = lens
            .iter()
            .flat_map(|&n| (0..l).map(move |j| if j < n { 0.0 } else { f32::MIN }))
            .collect();
        let mask = Tensor::from_vec(mask, (texts, 1, 1, l), cpu).expect("mask");
        let fused = masked_softmax(&scores, &mask).expect("fused");
        let plain = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask).expect("add"))
            .expect("plain");
        let diff = max_abs_diff(&fused, &plain);
        assert!(diff < 1e-6, "the masked softmax differs by {diff}");
        // Padding gets no weight: the second text's positions 2.. are 0.
        let second = fused.get(1).expect("text").flatten_all().expect("flat");
        let second = second.to_vec1::<f32>().expect("values");
        assert!(
            second
                .chunks(l)
                .all(|row| row[2..].iter().all(|p| *p == 0.0))
        );
    }

    #[test]
    fn a_bias_that_is_not_a_row_is_an_error_not_a_panic() {
        let x = Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu).expect("x");
        let bias = Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).expect("bias");
        assert!(add_bias(&x, &bias, Activation::Gelu).is_err());
    }
}
