//! BERT's encoder, as sentence-transformers runs it, over *packed* sequences: the texts
//! of a batch are laid end to end as one `[tokens, hidden]` matrix, so every dense
//! layer (≈ 95% of the work) multiplies real tokens only, never padding. Attention,
//! the one step that mixes tokens, gathers the packed rows into `[texts, longest,
//! hidden]` with a mask and scatters the result back.
//!
//! The weights are those of Hugging Face's `BertModel` (keys with or without a `bert.`
//! prefix; the pooler is not read). Query, key and value are one `[hidden, 3 hidden]`
//! matrix, and the query's `1/sqrt(head_dim)` is folded into it at load; dense weights
//! are stored transposed (`[in, out]`, row-major), so a layer is one matmul.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::Deserialize;

use super::kernels::{Activation, Norm, add_bias, masked_softmax};

/// What `config.json` says of a BERT-family model; fields BERT does not need are not read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "bert_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn two() -> usize {
    2
}

fn bert_eps() -> f64 {
    1e-12
}

fn absolute() -> String {
    "absolute".into()
}

impl Config {
    /// Why this encoder cannot run the model, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Some(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Some(format!(
                "position_embedding_type `{}`: only absolute position embeddings are supported",
                self.position_embedding_type
            ));
        }
        if self.type_vocab_size == 0 {
            return Some("type_vocab_size 0: BERT needs at least one token type".into());
        }
        None
    }
}

/// `x · w + b` with `w` stored `[in, out]`.
struct Dense {
    w: Tensor,
    b: Tensor,
}

impl Dense {
    fn load(vb: &VarBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Dense> {
        Ok(Dense {
            w: vb.get((outputs, inputs), "weight")?.t()?.contiguous()?,
            b: vb.get(outputs, "bias")?,
        })
    }

    /// Query, key and value as one layer; the query scaled by `scale`.
    fn load_qkv(vb: &VarBuilder, hidden: usize, scale: f64) -> candle_core::Result<Dense> {
        let q = Dense::load(&vb.pp("query"), hidden, hidden)?;
        let k = Dense::load(&vb.pp("key"), hidden, hidden)?;
        let v = Dense::load(&vb.pp("value"), hidden, hidden)?;
        Ok(Dense {
            w: Tensor::cat(&[(q.w * scale)?, k.w, v.w], 1)?,
            b: Tensor::cat(&[(q.b * scale)?, k.b, v.b], 0)?,
        })
    }

    /// `x · w` without the bias, for callers that fuse it into the next step.
    fn matmul(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.w)
    }
}

/// A layer norm's weights (old checkpoints name them gamma and beta).
fn load_norm(vb: &VarBuilder, hidden: usize, eps: f64) -> candle_core::Result<Norm> {
    let get = |name: &str, old: &str| {
        vb.get(hidden, name)
            .or_else(|e| vb.get(hidden, old).map_err(|_| e))
    };
    Norm::new(get("weight", "gamma")?, get("bias", "beta")?, eps as f32)
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    out: Dense,
    out_norm: Norm,
}

/// The encoder of a BERT-family model.
pub struct Bert {
    word: Tensor,
    position: Tensor,
    /// Token type 0's embedding: a sentence is one segment.
    token_type: Tensor,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    activation: Activation,
    device: Device,
}

/// Where each text's tokens sit in the packed matrix.
pub struct Packing {
    /// Each text's first row and token count.
    pub spans: Vec<(usize, usize)>,
}

impl Packing {
    pub fn new(seqs: &[&[u32]]) -> Packing {
        let mut start = 0;
        let spans = seqs
            .iter()
            .map(|s| {
                let span = (start, s.len());
                start += s.len();
                span
            })
            .collect();
        Packing { spans }
    }

    pub fn tokens(&self) -> usize {
        self.spans.last().map_or(0, |(start, len)| start + len)
    }
}

impl Bert {
    pub fn load(vb: VarBuilder, config: &Config) -> candle_core::Result<Bert> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = config.hidden_size;
        let heads = config.num_attention_heads;
        let eps = config.layer_norm_eps;
        let e = vb.pp("embeddings");
        let scale = 1.0 / ((h / heads) as f64).sqrt();
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention");
                Ok(Layer {
                    qkv: Dense::load_qkv(&a.pp("self"), h, scale)?,
                    attention_out: Dense::load(&a.pp("output.dense"), h, h)?,
                    attention_norm: load_norm(&a.pp("output.LayerNorm"), h, eps)?,
                    intermediate: Dense::load(
                        &l.pp("intermediate.dense"),
                        h,
                        config.intermediate_size,
                    )?,
                    out: Dense::load(&l.pp("output.dense"), config.intermediate_size, h)?,
                    out_norm: load_norm(&l.pp("output.LayerNorm"), h, eps)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Bert {
            word: e.get((config.vocab_size, h), "word_embeddings.weight")?,
            position: e.get(
                (config.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            token_type: e
                .get((config.type_vocab_size, h), "token_type_embeddings.weight")?
                .get(0)?,
            embeddings_norm: load_norm(&e.pp("LayerNorm"), h, eps)?,
            layers,
            heads,
            hidden: h,
            activation: config.hidden_act,
            device: vb.device().clone(),
        })
    }

    /// The last hidden states of `seqs` (token ids, [CLS] … [SEP]), packed as `packing`
    /// lays them out: `[tokens, hidden]`.
    pub fn forward(&self, seqs: &[&[u32]], packing: &Packing) -> candle_core::Result<Tensor> {
        let tokens = packing.tokens();
        let ids: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        let positions: Vec<u32> = seqs.iter().flat_map(|s| 0..s.len() as u32).collect();
        let ids = Tensor::from_vec(ids, tokens, &self.device)?;
        let positions = Tensor::from_vec(positions, tokens, &self.device)?;
        let x = (self.word.index_select(&ids, 0)? + self.position.index_select(&positions, 0)?)?
            .broadcast_add(&self.token_type)?;
        let mut x = self.embeddings_norm.forward(&x)?;
        let attention = Attention::new(packing, self.heads, self.hidden, &self.device)?;
        for layer in &self.layers {
            let qkv = layer.qkv.matmul(&x)?.broadcast_add(&layer.qkv.b)?;
            let context = attention.forward(&qkv)?;
            let a = layer.attention_norm.add(
                &layer.attention_out.matmul(&context)?,
                &layer.attention_out.b,
                &x,
            )?;
            let i = add_bias(
                &layer.intermediate.matmul(&a)?,
                &layer.intermediate.b,
                self.activation,
            )?;
            x = layer
                .out_norm
                .add(&layer.out.matmul(&i)?, &layer.out.b, &a)?;
        }
        Ok(x)
    }
}

/// Self-attention over packed rows, in groups of consecutive texts that run on rayon's
/// threads side by side: each group gathers its rows into `[texts, longest]` (padding
/// masked out), computes every head, and scatters back. A group's matmuls are many small
/// ones (a text and a head each), which gemm runs on the calling thread; without the
/// groups one core would do all of attention while the others wait.
struct Attention {
    groups: Vec<Group>,
    heads: usize,
    hidden: usize,
}

struct Group {
    texts: usize,
    longest: usize,
    /// The qkv row of each padded position (padding points at the group's first row;
    /// masked). None when the group is one text: its rows are already in place.
    gather: Option<Tensor>,
    /// First packed row and row count of the group.
    rows: (usize, usize),
    /// The padded position of each of the group's rows.
    scatter: Option<Tensor>,
    /// `[texts, 1, 1, longest]`: 0 for a token, the lowest f32 for padding.
    mask: Option<Tensor>,
}

impl Attention {
    fn new(
        packing: &Packing,
        heads: usize,
        hidden: usize,
        device: &Device,
    ) -> candle_core::Result<Attention> {
        let threads = if device.is_cpu() {
            rayon::current_num_threads()
        } else {
            1
        };
        let groups = split(&packing.spans, threads)
            .into_iter()
            .map(|spans| Group::new(spans, device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Attention {
            groups,
            heads,
            hidden,
        })
    }

    /// `qkv` `[tokens, 3 hidden]` (the query pre-scaled) to the context `[tokens, hidden]`.
    fn forward(&self, qkv: &Tensor) -> candle_core::Result<Tensor> {
        let contexts = self
            .groups
            .par_iter()
            .map(|g| g.forward(qkv, self.heads, self.hidden))
            .collect::<candle_core::Result<Vec<_>>>()?;
        match contexts.as_slice() {
            [one] => Ok(one.clone()),
            _ => Tensor::cat(&contexts, 0),
        }
    }
}

/// Texts cut into at most `parts` runs of consecutive texts with about as many tokens each.
fn split(spans: &[(usize, usize)], parts: usize) -> Vec<&[(usize, usize)]> {
    let total: usize = spans.iter().map(|s| s.1).sum();
    let parts = parts.clamp(1, spans.len().max(1));
    let mut groups = Vec::with_capacity(parts);
    let (mut start, mut sum) = (0, 0);
    for (i, span) in spans.iter().enumerate() {
        sum += span.1;
        if sum * parts >= total * (groups.len() + 1) && groups.len() + 1 < parts {
            groups.push(&spans[start..=i]);
            start = i + 1;
        }
    }
    if start < spans.len() {
        groups.push(&spans[start..]);
    }
    groups
}

impl Group {
    fn new(spans: &[(usize, usize)], device: &Device) -> candle_core::Result<Group> {
        let texts = spans.len();
        let longest = spans.iter().map(|s| s.1).max().unwrap_or(0);
        let first = spans.first().map_or(0, |s| s.0);
        let rows = spans.iter().map(|s| s.1).sum();
        let mut group = Group {
            texts,
            longest,
            gather: None,
            rows: (first, rows),
            scatter: None,
            mask: None,
        };
        if texts > 1 {
            let mut gather = vec![first as u32; texts * longest];
            let mut scatter = Vec::with_capacity(rows);
            let mut mask = vec![f32::MIN; texts * longest];
            for (t, &(start, len)) in spans.iter().enumerate() {
                for j in 0..len {
                    gather[t * longest + j] = (start + j) as u32;
                    scatter.push((t * longest + j) as u32);
                    mask[t * longest + j] = 0.0;
                }
            }
            group.gather = Some(Tensor::from_vec(gather, texts * longest, device)?);
            group.scatter = Some(Tensor::from_vec(scatter, rows, device)?);
            group.mask = Some(Tensor::from_vec(mask, (texts, 1, 1, longest), device)?);
        }
        Ok(group)
    }

    /// The context of the group's rows, `[rows, hidden]`.
    fn forward(&self, qkv: &Tensor, heads: usize, hidden: usize) -> candle_core::Result<Tensor> {
        let (n, l) = (self.texts, self.longest);
        let d = hidden / heads;
        let padded = match &self.gather {
            Some(g) => qkv.index_select(g, 0)?,
            None => qkv.narrow(0, self.rows.0, self.rows.1)?,
        };
        // [n, l, 3, heads, d] -> [3, n, heads, l, d]
        let parts = padded
            .reshape((n, l, 3, heads, d))?
            .permute((2, 0, 3, 1, 4))?;
        let q = parts.get(0)?.contiguous()?;
        let k = parts.get(1)?.contiguous()?;
        let v = parts.get(2)?.contiguous()?;
        let scores = q.matmul(&k.t()?)?; // [n, heads, l, l]
        let probs = match &self.mask {
            Some(m) => masked_softmax(&scores, m)?,
            None => candle_nn::ops::softmax_last_dim(&scores)?,
        };
        let context = probs
            .matmul(&v)? // [n, heads, l, d]
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n * l, hidden))?;
        match &self.scatter {
            Some(s) => context.index_select(s, 0),
            None => Ok(context),
        }
    }
}

/// One `[hidden]` vector per text from packed hidden states: the mean or max over its
/// tokens, or its first ([CLS]) token's.
pub fn pool(
    hidden: &Tensor,
    packing: &Packing,
    pooling: super::Pooling,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let h = hidden.dim(D::Minus1)?;
    let rows = hidden
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(packing
        .spans
        .iter()
        .map(|&(start, len)| {
            let tokens = rows[start * h..(start + len) * h].chunks_exact(h);
            match pooling {
                super::Pooling::Cls => rows[start * h..(start + 1) * h].to_vec(),
                super::Pooling::Mean => {
                    let mut sum = vec![0f32; h];
                    for t in tokens {
                        sum.iter_mut().zip(t).for_each(|(s, x)| *s += x);
                    }
                    let n = len.max(1) as f32;
                    sum.iter_mut().for_each(|s| *s /= n);
                    sum
                }
                super::Pooling::Max => {
                    let mut max = vec![f32::MIN; h];
                    for t in tokens {
                        max.iter_mut().zip(t).for_each(|(m, x)| *m = m.max(*x));
                    }
                    max
                }
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn attention_groups_are_consecutive_texts_with_about_equal_tokens() {
        let spans = [(0, 10), (10, 10), (20, 10), (30, 10)];
        assert_eq!(split(&spans, 2), vec![&spans[..2], &spans[2..]]);
        assert_eq!(split(&spans, 1), vec![&spans[..]]);
        // More parts than texts: one text each.
        assert_eq!(split(&spans[..2], 8).len(), 2);
        // Sorted lengths: the long texts' group has fewer of them.
        let sorted = [(0, 2), (2, 2), (4, 2), (6, 2), (8, 8)];
        assert_eq!(split(&sorted, 2), vec![&sorted[..4], &sorted[4..]]);
        assert!(split(&[], 2).is_empty());
    }
}
