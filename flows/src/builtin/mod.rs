//! The built-in flows. Each lives in its own module with its spec and its tests.
//!
//! | flow | inputs | output |
//! |---|---|---|
//! | `num.affine@1` | x: f64 | f64: `fn(scale * x + offset)` |
//! | `num.combine@1` | x: f64, y: f64 | f64: `x op y` |
//! | `num.zscore@1` | x: f64, mean: f64, std: f64 | f64: `(x - mean) / std` |
//! | `text.stats@1` | text: string | f64: a statistic of the text |
//! | `text.hash_embed@1` | text: string | tensor [dim]: hashed bag of words, L2-normalised |
//! | `text.minilm@1` | text: string | tensor [384]: all-MiniLM-L6-v2 sentence embedding, L2-normalised (model from `scripts/fetch-model`) |
//! | `vec.mean_pool@1` | a: tensor, b: tensor | tensor: element-wise mean |
//! | `vec.cosine@1` | a: tensor, b: tensor | f64: cosine similarity |
//! | `image.phash@1` | image: bytes | tensor [64]: DCT perceptual hash bits (0/1) |
//! | `image.color_hist@1` | image: bytes | tensor [bins³]: joint RGB histogram, sums to 1 |
//! | `image.hamming@1` | a: tensor, b: tensor | f64: number of differing hash bits |
//! | `image.near_duplicate@1` | a: tensor, b: tensor | bool: hamming ≤ `max_distance` |
//! | `sku.order_qty@1` | demand_mean: tensor, demand_std: tensor, service_level, lead_time, pack_size, moq: f64 | tensor [n_skus]: order quantity per sku |
//! | `test.probe@1` | x: f64 (optional) | f64: `value + x`, with delay and failure modes |
//! | `rel.ids@1` | ids: relation | relation: the ids, each once (a relation feature) |
//! | `vec.normalize@1` | v: tensor | tensor: `v / |v|` |

mod image;
mod minilm;
mod numeric;
mod optimise;
mod probe;
mod relation;
mod text;
mod vector;

use std::sync::Arc;

pub use self::image::{ColorHist, Hamming, NearDuplicate, PHash};
pub use minilm::{minilm, minilm_from_env};
pub use numeric::{Affine, Combine, ZScore};
pub use optimise::OrderQty;
pub use probe::Probe;
pub use relation::{Normalize, RelationIds};
pub use text::{HashEmbed, TextStats};
pub use vector::{Cosine, MeanPool};

use crate::spec::{FlowId, FlowSpec, InputSpec, ParamSpec};
use crate::{Flow, ValueType};

/// One instance of every built-in flow.
pub fn all() -> Vec<Arc<dyn Flow>> {
    vec![
        Arc::new(Affine::new()),
        Arc::new(Combine::new()),
        Arc::new(ZScore::new()),
        Arc::new(TextStats::new()),
        Arc::new(HashEmbed::new()),
        Arc::new(minilm_from_env()),
        Arc::new(MeanPool::new()),
        Arc::new(Cosine::new()),
        Arc::new(PHash::new()),
        Arc::new(ColorHist::new()),
        Arc::new(Hamming::new()),
        Arc::new(NearDuplicate::new()),
        Arc::new(OrderQty::new()),
        Arc::new(Probe::new()),
        Arc::new(RelationIds::new()),
        Arc::new(Normalize::new()),
    ]
}

pub(crate) fn input(name: &str, value_type: ValueType) -> InputSpec {
    InputSpec {
        name: name.to_string(),
        value_type,
        optional: false,
    }
}

pub(crate) fn param(name: &str, default: Option<&str>, doc: &str) -> ParamSpec {
    ParamSpec {
        name: name.to_string(),
        default: default.map(str::to_string),
        doc: doc.to_string(),
    }
}

pub(crate) struct SpecBuilder(FlowSpec);

impl SpecBuilder {
    pub(crate) fn new(name: &str, version: u32, output: ValueType, description: &str) -> Self {
        SpecBuilder(FlowSpec {
            id: FlowId::new(name, version),
            description: description.to_string(),
            inputs: Vec::new(),
            output,
            params: Vec::new(),
            entity_types: Vec::new(),
            batchable: true,
        })
    }

    pub(crate) fn input(mut self, input: InputSpec) -> Self {
        self.0.inputs.push(input);
        self
    }

    pub(crate) fn param(mut self, p: ParamSpec) -> Self {
        self.0.params.push(p);
        self
    }

    pub(crate) fn build(self) -> FlowSpec {
        self.0
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;

    use crate::{FlowInput, Params, Value};

    pub fn item(values: &[(&str, Value)], params: &[(&str, &str)]) -> FlowInput {
        FlowInput {
            entity_id: "e1".to_string(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Params>(),
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            attempt: 1,
        }
    }
}
