//! An example flow, `text.keyword_score@1`: how often a set of keywords occurs in a
//! text, weighted, squashed into 0..1. It shows each part a flow author writes: the
//! spec (inputs, output, params), param checks at registration, and a batched `run`
//! that fails items one by one. See docs/flows.md.

use candle_core::{Device, Tensor};
use fstore_flows::{
    Error, Flow, FlowId, FlowInput, FlowSpec, InputSpec, ParamSpec, Params, Value, ValueType,
};

/// `1 - exp(-weight * hits / words)`: near 0 for no keyword, towards 1 for many.
#[derive(Debug)]
pub struct KeywordScore {
    spec: FlowSpec,
}

impl KeywordScore {
    pub fn new() -> Self {
        KeywordScore {
            spec: FlowSpec {
                id: FlowId::new("text.keyword_score", 1),
                description: "weighted share of keywords in a text, in 0..1".to_string(),
                inputs: vec![InputSpec {
                    name: "text".to_string(),
                    value_type: ValueType::String,
                    optional: false,
                }],
                output: ValueType::F64,
                params: vec![
                    ParamSpec {
                        name: "keywords".to_string(),
                        default: None,
                        doc: "comma-separated keywords (required)".to_string(),
                    },
                    ParamSpec {
                        name: "weight".to_string(),
                        default: Some("10".to_string()),
                        doc: "how fast the score rises with the keyword share".to_string(),
                    },
                ],
                entity_types: Vec::new(),
                batchable: true,
            },
        }
    }
}

impl Default for KeywordScore {
    fn default() -> Self {
        Self::new()
    }
}

fn keywords(params: &Params) -> Result<Vec<String>, Error> {
    let list: Vec<String> = params
        .get("keywords")
        .unwrap_or("")
        .split(',')
        .map(|k| k.trim().to_lowercase())
        .filter(|k| !k.is_empty())
        .collect();
    if list.is_empty() {
        return Err(Error::Permanent(
            "param `keywords` needs at least one keyword".into(),
        ));
    }
    Ok(list)
}

impl Flow for KeywordScore {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn check_params(&self, params: &Params) -> Result<(), Error> {
        self.spec.check_params(params)?;
        keywords(params)?;
        params.f64_or("weight", 10.0).map(|_| ())
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        // Count per item (cheap, scalar), then squash the whole batch in one expression.
        let shares: Vec<Result<(f64, f64), Error>> = batch
            .iter()
            .map(|item| {
                let words: Vec<String> = item
                    .value("text")?
                    .as_str()?
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(str::to_lowercase)
                    .collect();
                let keys = keywords(&item.params)?;
                let hits = words.iter().filter(|w| keys.contains(w)).count() as f64;
                let share = if words.is_empty() {
                    0.0
                } else {
                    hits / words.len() as f64
                };
                Ok((share, item.params.f64_or("weight", 10.0)?))
            })
            .collect();
        let ok: Vec<(f64, f64)> = shares
            .iter()
            .filter_map(|s| s.as_ref().ok().copied())
            .collect();
        let scores = squash(&ok);
        let mut scores = match scores {
            Ok(s) => s.into_iter(),
            Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
        };
        shares
            .into_iter()
            .map(|s| {
                s?;
                scores
                    .next()
                    .map(Value::F64)
                    .ok_or_else(|| Error::Permanent("batch result is short".into()))
            })
            .collect()
    }
}

/// `1 - exp(-weight * share)` for the whole batch on candle.
fn squash(items: &[(f64, f64)]) -> Result<Vec<f64>, Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let dev = Device::Cpu;
    let share = Tensor::from_iter(items.iter().map(|i| i.0), &dev)?;
    let weight = Tensor::from_iter(items.iter().map(|i| i.1), &dev)?;
    let score = share.mul(&weight)?.neg()?.exp()?.affine(-1.0, 1.0)?;
    Ok(score.to_vec1::<f64>()?)
}

/// The registration file of the example feature.
pub const FEATURES: &str = r#"
[[feature]]
name = "review.about_battery"
entity_type = "review"
flow = "text.keyword_score@1"
ttl = "1h"
owner = "examples"
description = "how much a review talks about the battery"
params = { keywords = "battery,charge,charging,power", weight = 8 }
inputs = { text = { request = "text" } }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn scores_and_refuses() {
        let item = |text: &str, kw: &str| FlowInput {
            entity_id: "r".into(),
            params: [("keywords".to_string(), kw.to_string())]
                .into_iter()
                .collect(),
            values: BTreeMap::from([("text".to_string(), Value::String(text.into()))]),
            attempt: 1,
        };
        let out = KeywordScore::new().run(&[
            item("battery battery", "battery"),
            item("nothing here", "battery"),
            item("x", ""),
        ]);
        let v = |i: usize| out[i].as_ref().ok().and_then(|v| v.as_f64().ok());
        assert!(v(0).is_some_and(|x| (x - (1.0 - (-10f64).exp())).abs() < 1e-12));
        assert_eq!(v(1), Some(0.0));
        assert!(out[2].is_err());
    }
}
