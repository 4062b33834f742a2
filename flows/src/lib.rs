//! Pure compute for fstore: the [`Flow`] trait, flow specs and the built-in flows.
//!
//! A flow turns a batch of inputs into a batch of outputs. Tensors are candle tensors;
//! errors say whether a retry can help ([`Error::Transient`]) or not
//! ([`Error::Permanent`]). This crate knows nothing of queues, caches, NATS, gRPC or
//! tokio: the substrate decides when and where a flow runs.
//!
//! Layout:
//! - [`value`]: typed values and value types
//! - [`spec`]: flow identity and declared inputs, output and params
//! - [`params`]: typed access to a feature's string params
//! - [`catalog`]: the flows a process can run, by `name@version`
//! - [`model`]: lazily loaded, unloadable models and what operators see of them
//! - [`sentence`]: sentence embeddings from a sentence-transformers model folder
//!   (configured model flows, and `text.minilm`)
//! - [`builtin`]: the built-in flows

pub mod builtin;
pub mod catalog;
pub mod error;
pub mod model;
pub mod params;
pub mod sentence;
pub mod spec;
pub mod value;

// Not called here: depended on for its `x86-v4` feature, which gives candle's matmuls
// (through the same gemm) AVX-512 kernels on CPUs that have them.
use gemm as _;

pub use catalog::Catalog;
pub use error::Error;
pub use model::{LazyModel, ModelInfo};
pub use params::Params;
pub use spec::{FlowId, FlowSpec, InputSpec, ParamSpec};
pub use value::{Value, ValueType};

use std::collections::BTreeMap;

/// One item of a batch: the entity it is for, the feature's params and the named inputs.
#[derive(Debug, Clone)]
pub struct FlowInput {
    pub entity_id: String,
    pub params: Params,
    pub values: BTreeMap<String, Value>,
    /// 1 on the first try, counting up on each retry.
    pub attempt: u32,
}

impl FlowInput {
    /// The named input, or a permanent error naming it.
    pub fn value(&self, name: &str) -> Result<&Value, Error> {
        self.values
            .get(name)
            .ok_or_else(|| Error::Permanent(format!("input `{name}` is missing")))
    }
}

/// A unit of compute. Implementations must be cheap to share between threads: a worker
/// calls [`Flow::run`] from a blocking pool, possibly from several threads at once.
pub trait Flow: Send + Sync + 'static {
    fn spec(&self) -> &FlowSpec;

    /// Refuses params the flow cannot run with, at registration time.
    fn check_params(&self, params: &Params) -> Result<(), Error> {
        self.spec().check_params(params)
    }

    /// Computes one output per input, in order. One item's error fails only that item.
    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>>;

    /// The model behind the flow, if it has one, as loaded in this process now.
    fn model(&self) -> Option<ModelInfo> {
        None
    }

    /// Frees the flow's model; the next batch loads it again.
    fn unload(&self) {}
}
