//! The built-in flows. Each lives in its own module with its spec and its tests.
//!
//! | flow | inputs | output |
//! |---|---|---|
//! | `num.affine@1` | x: f64 | f64: `fn(scale * x + offset)` |
//! | `num.combine@1` | x: f64, y: f64 | f64: `x op y` |
//! | `text.stats@1` | text: string | f64: a statistic of the text |
//! | `text.hash_embed@1` | text: string | tensor [dim]: hashed bag of words, L2-normalised |
//! | `vec.mean_pool@1` | a: tensor, b: tensor | tensor: element-wise mean |
//! | `vec.cosine@1` | a: tensor, b: tensor | f64: cosine similarity |
//! | `test.probe@1` | x: f64 (optional) | f64: `value + x`, with delay and failure modes |

mod numeric;
mod probe;
mod text;
mod vector;

use std::sync::Arc;

pub use numeric::{Affine, Combine};
pub use probe::Probe;
pub use text::{HashEmbed, TextStats};
pub use vector::{Cosine, MeanPool};

use crate::spec::{FlowId, FlowSpec, InputSpec, ParamSpec};
use crate::{Flow, ValueType};

/// One instance of every built-in flow.
pub fn all() -> Vec<Arc<dyn Flow>> {
    vec![
        Arc::new(Affine::new()),
        Arc::new(Combine::new()),
        Arc::new(TextStats::new()),
        Arc::new(HashEmbed::new()),
        Arc::new(MeanPool::new()),
        Arc::new(Cosine::new()),
        Arc::new(Probe::new()),
    ]
}

fn input(name: &str, value_type: ValueType) -> InputSpec {
    InputSpec {
        name: name.to_string(),
        value_type,
        optional: false,
    }
}

fn param(name: &str, default: Option<&str>, doc: &str) -> ParamSpec {
    ParamSpec {
        name: name.to_string(),
        default: default.map(str::to_string),
        doc: doc.to_string(),
    }
}

struct SpecBuilder(FlowSpec);

impl SpecBuilder {
    fn new(name: &str, version: u32, output: ValueType, description: &str) -> Self {
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

    fn input(mut self, input: InputSpec) -> Self {
        self.0.inputs.push(input);
        self
    }

    fn param(mut self, p: ParamSpec) -> Self {
        self.0.params.push(p);
        self
    }

    fn build(self) -> FlowSpec {
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
