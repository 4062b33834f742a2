//! Text flows over a request-time input: `text.stats` and `text.hash_embed`.

use candle_core::{Device, Tensor};

use super::{SpecBuilder, input, param};
use crate::{Error, Flow, FlowInput, FlowSpec, Value, ValueType};

const STATS: &str = "chars, bytes, words, lines, mean_word_len, upper_ratio or digit_ratio";

/// One statistic of a text, chosen by the `stat` param.
#[derive(Debug)]
pub struct TextStats {
    spec: FlowSpec,
}

impl TextStats {
    pub fn new() -> Self {
        let spec = SpecBuilder::new("text.stats", 1, ValueType::F64, "a statistic of a text")
            .input(input("text", ValueType::String))
            .param(param("stat", Some("chars"), STATS))
            .build();
        TextStats { spec }
    }
}

impl Default for TextStats {
    fn default() -> Self {
        Self::new()
    }
}

fn stat(name: &str, text: &str) -> Result<f64, Error> {
    let chars = text.chars().count() as f64;
    let ratio = |pred: fn(&char) -> bool| {
        if chars == 0.0 {
            0.0
        } else {
            text.chars().filter(pred).count() as f64 / chars
        }
    };
    Ok(match name {
        "chars" => chars,
        "bytes" => text.len() as f64,
        "words" => text.split_whitespace().count() as f64,
        "lines" => text.lines().count() as f64,
        "mean_word_len" => {
            let words: Vec<&str> = text.split_whitespace().collect();
            if words.is_empty() {
                0.0
            } else {
                words.iter().map(|w| w.chars().count()).sum::<usize>() as f64 / words.len() as f64
            }
        }
        "upper_ratio" => ratio(char::is_ascii_uppercase),
        "digit_ratio" => ratio(char::is_ascii_digit),
        other => {
            return Err(Error::Permanent(format!(
                "param `stat` = `{other}` is not one of {STATS}"
            )));
        }
    })
}

impl Flow for TextStats {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn check_params(&self, params: &crate::Params) -> Result<(), Error> {
        self.spec.check_params(params)?;
        stat(params.str_or("stat", "chars"), "").map(|_| ())
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        batch
            .iter()
            .map(|item| {
                let text = item.value("text")?.as_str()?;
                Ok(Value::F64(stat(item.params.str_or("stat", "chars"), text)?))
            })
            .collect()
    }
}

/// A hashed bag of lower-cased words (the hashing trick with signed buckets), L2-normalised
/// on candle for the whole batch at once.
#[derive(Debug)]
pub struct HashEmbed {
    spec: FlowSpec,
}

const MAX_DIM: u64 = 4096;

impl HashEmbed {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "text.hash_embed",
            1,
            ValueType::Tensor,
            "hashed bag-of-words vector of a text, L2-normalised",
        )
        .input(input("text", ValueType::String))
        .param(param("dim", Some("64"), "vector length, 1 to 4096"))
        .build();
        HashEmbed { spec }
    }
}

impl Default for HashEmbed {
    fn default() -> Self {
        Self::new()
    }
}

fn dim(item_params: &crate::Params) -> Result<usize, Error> {
    let dim = item_params.u64_or("dim", 64)?;
    if dim == 0 || dim > MAX_DIM {
        return Err(Error::Permanent(format!(
            "param `dim` = {dim} is out of range 1..={MAX_DIM}"
        )));
    }
    Ok(dim as usize)
}

/// FNV-1a: stable across processes and releases, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn bag_of_words(text: &str, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = fnv1a(word.to_lowercase().as_bytes());
        let bucket = (h % dim as u64) as usize;
        v[bucket] += if h >> 63 == 0 { 1.0 } else { -1.0 };
    }
    v
}

impl Flow for HashEmbed {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn check_params(&self, params: &crate::Params) -> Result<(), Error> {
        self.spec.check_params(params)?;
        dim(params).map(|_| ())
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        // Items of one dim are normalised together as one [n, dim] matrix.
        let prepared: Vec<Result<(usize, Vec<f32>), Error>> = batch
            .iter()
            .map(|item| {
                let d = dim(&item.params)?;
                Ok((d, bag_of_words(item.value("text")?.as_str()?, d)))
            })
            .collect();
        let mut out: Vec<Option<Result<Value, Error>>> = vec![None; batch.len()];
        let mut dims: Vec<usize> = prepared
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|(d, _)| *d))
            .collect();
        dims.sort_unstable();
        dims.dedup();
        for d in dims {
            let idx: Vec<usize> = (0..batch.len())
                .filter(|i| matches!(&prepared[*i], Ok((pd, _)) if *pd == d))
                .collect();
            let rows: Vec<f32> = idx
                .iter()
                .flat_map(|i| match &prepared[*i] {
                    Ok((_, v)) => v.clone(),
                    Err(_) => Vec::new(),
                })
                .collect();
            match normalise_rows(rows, idx.len(), d) {
                Ok(values) => {
                    for (i, v) in idx.into_iter().zip(values) {
                        out[i] = Some(Ok(v));
                    }
                }
                Err(e) => {
                    for i in idx {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        prepared
            .into_iter()
            .zip(out)
            .map(|(p, o)| match (p, o) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(r)) => r,
                (Ok(_), None) => Err(Error::Permanent("item was not computed".to_string())),
            })
            .collect()
    }
}

/// Divides every row of an [n, d] matrix by its L2 norm (an all-zero row stays zero).
fn normalise_rows(rows: Vec<f32>, n: usize, d: usize) -> Result<Vec<Value>, Error> {
    let m = Tensor::from_vec(rows, (n, d), &Device::Cpu)?;
    let norms = m.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    let unit = m.broadcast_div(&norms)?;
    (0..n)
        .map(|i| Ok(Value::Tensor(unit.get(i)?)))
        .collect::<Result<Vec<_>, candle_core::Error>>()
        .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::testing::item;

    #[test]
    fn stats() {
        let text = Value::String("Hello big World\n42".into());
        let run = |s: &str| {
            TextStats::new().run(&[item(&[("text", text.clone())], &[("stat", s)])])[0]
                .as_ref()
                .map(|v| v.as_f64().ok())
                .ok()
                .flatten()
        };
        assert_eq!(run("words"), Some(4.0));
        assert_eq!(run("lines"), Some(2.0));
        assert_eq!(run("chars"), Some(18.0));
        assert!(
            TextStats::new()
                .check_params(
                    &[("stat".to_string(), "x".to_string())]
                        .into_iter()
                        .collect()
                )
                .is_err()
        );
    }

    #[test]
    fn hash_embed_is_unit_length_and_stable() {
        let out = HashEmbed::new().run(&[
            item(
                &[("text", Value::String("the cat sat".into()))],
                &[("dim", "16")],
            ),
            item(
                &[("text", Value::String("The CAT sat!".into()))],
                &[("dim", "16")],
            ),
            item(&[("text", Value::String("".into()))], &[("dim", "8")]),
        ]);
        let a = Value::tensor_parts(
            out[0]
                .as_ref()
                .ok()
                .and_then(|v| v.as_tensor().ok())
                .expect("tensor"),
        )
        .expect("parts");
        let b = Value::tensor_parts(
            out[1]
                .as_ref()
                .ok()
                .and_then(|v| v.as_tensor().ok())
                .expect("tensor"),
        )
        .expect("parts");
        assert_eq!(a.0, vec![16]);
        let norm: f32 = a.1.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        assert_eq!(a.1, b.1, "case and punctuation must not matter");
        let empty = Value::tensor_parts(
            out[2]
                .as_ref()
                .ok()
                .and_then(|v| v.as_tensor().ok())
                .expect("tensor"),
        )
        .expect("parts");
        assert_eq!(empty.1, vec![0.0; 8]);
    }
}
