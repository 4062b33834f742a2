//! The float64 reference: BERT's forward pass and each pooling, written plainly from
//! the weights, with an erf of its own (exact GELU).

use super::tiny_bert::{Shape, Weights};

/// erf by its Maclaurin series (|x| < 3, where it converges to f64 precision) and its
/// limit beyond (|1 - erf(3)| < 2.3e-5 would matter: the continued fraction then).
pub(crate) fn erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc by a continued fraction (Lentz), accurate far past 1e-12 for |x| >= 3.
        let z = x.abs();
        let mut f = z;
        for k in (1..60).rev() {
            f = z + (k as f64 / 2.0) / f;
        }
        let erfc = (-z * z).exp() / (f * std::f64::consts::PI.sqrt());
        (1.0 - erfc).copysign(x)
    }
}

pub(crate) fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

pub(crate) fn get<'a>(w: &'a Weights, name: &str) -> &'a [f64] {
    &w.get(name).unwrap_or_else(|| panic!("no weight {name}")).1
}

/// `x [n, in] · Wᵀ + b` with `W [out, in]`.
pub(crate) fn linear(x: &[Vec<f64>], w: &[f64], b: &[f64]) -> Vec<Vec<f64>> {
    let out = b.len();
    x.iter()
        .map(|row| {
            (0..out)
                .map(|o| {
                    b[o] + row
                        .iter()
                        .zip(&w[o * row.len()..])
                        .map(|(a, c)| a * c)
                        .sum::<f64>()
                })
                .collect()
        })
        .collect()
}

pub(crate) fn layer_norm(x: &[Vec<f64>], gamma: &[f64], beta: &[f64]) -> Vec<Vec<f64>> {
    x.iter()
        .map(|row| {
            let n = row.len() as f64;
            let mean = row.iter().sum::<f64>() / n;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let sd = (var + 1e-12).sqrt();
            row.iter()
                .enumerate()
                .map(|(i, v)| (v - mean) / sd * gamma[i] + beta[i])
                .collect()
        })
        .collect()
}

pub(crate) fn add(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + q).collect())
        .collect()
}

/// BERT's last hidden states for one unpadded sequence.
pub(crate) fn bert(w: &Weights, s: Shape, ids: &[u32]) -> Vec<Vec<f64>> {
    let h = s.hidden;
    let row = |name: &str, i: usize| get(w, name)[i * h..(i + 1) * h].to_vec();
    let embedded: Vec<Vec<f64>> = ids
        .iter()
        .enumerate()
        .map(|(pos, id)| {
            let word = row("embeddings.word_embeddings.weight", *id as usize);
            let position = row("embeddings.position_embeddings.weight", pos);
            let kind = row("embeddings.token_type_embeddings.weight", 0);
            (0..h).map(|i| word[i] + position[i] + kind[i]).collect()
        })
        .collect();
    let mut x = layer_norm(
        &embedded,
        get(w, "embeddings.LayerNorm.weight"),
        get(w, "embeddings.LayerNorm.bias"),
    );
    let head = h / s.heads;
    for l in 0..s.layers {
        let p = |n: &str| format!("encoder.layer.{l}.{n}");
        let proj = |n: &str| {
            linear(
                &x,
                get(w, &p(&format!("attention.self.{n}.weight"))),
                get(w, &p(&format!("attention.self.{n}.bias"))),
            )
        };
        let (q, k, v) = (proj("query"), proj("key"), proj("value"));
        let mut context = vec![vec![0.0; h]; ids.len()];
        for hd in 0..s.heads {
            let r = hd * head..(hd + 1) * head;
            for i in 0..ids.len() {
                let scores: Vec<f64> = (0..ids.len())
                    .map(|j| {
                        q[i][r.clone()]
                            .iter()
                            .zip(&k[j][r.clone()])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (head as f64).sqrt()
                    })
                    .collect();
                let top = scores.iter().cloned().fold(f64::MIN, f64::max);
                let exp: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                let total: f64 = exp.iter().sum();
                for (j, e) in exp.iter().enumerate() {
                    for d in r.clone() {
                        context[i][d] += e / total * v[j][d];
                    }
                }
            }
        }
        let attended = linear(
            &context,
            get(w, &p("attention.output.dense.weight")),
            get(w, &p("attention.output.dense.bias")),
        );
        x = layer_norm(
            &add(&attended, &x),
            get(w, &p("attention.output.LayerNorm.weight")),
            get(w, &p("attention.output.LayerNorm.bias")),
        );
        let inner: Vec<Vec<f64>> = linear(
            &x,
            get(w, &p("intermediate.dense.weight")),
            get(w, &p("intermediate.dense.bias")),
        )
        .into_iter()
        .map(|r| r.into_iter().map(gelu).collect())
        .collect();
        let out = linear(
            &inner,
            get(w, &p("output.dense.weight")),
            get(w, &p("output.dense.bias")),
        );
        x = layer_norm(
            &add(&out, &x),
            get(w, &p("output.LayerNorm.weight")),
            get(w, &p("output.LayerNorm.bias")),
        );
    }
    x
}

pub(crate) fn reference(
    w: &Weights,
    s: Shape,
    ids: &[u32],
    pooling: &str,
    normalize: bool,
) -> Vec<f64> {
    let hidden = bert(w, s, ids);
    let pooled: Vec<f64> = match pooling {
        "mean" => (0..s.hidden)
            .map(|d| hidden.iter().map(|t| t[d]).sum::<f64>() / hidden.len() as f64)
            .collect(),
        "cls" => hidden[0].clone(),
        "max" => (0..s.hidden)
            .map(|d| hidden.iter().map(|t| t[d]).fold(f64::MIN, f64::max))
            .collect(),
        other => panic!("no pooling {other}"),
    };
    if !normalize {
        return pooled;
    }
    let norm = pooled.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
    pooled.iter().map(|v| v / norm).collect()
}

#[test]
fn the_reference_erf_is_exact_enough() {
    // Values from the definition (Abramowitz and Stegun, table 7.1).
    for (x, want) in [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.5, 0.999_999_256_901_627_7),
    ] {
        assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
        assert!((erf(-x) + want).abs() < 1e-14);
    }
}
