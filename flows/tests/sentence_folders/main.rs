//! `kind = "sentence-transformer"` against an independent reference: tiny randomly
//! initialised BERT folders written here (their own hidden size, heads, layers, pooling
//! and normalisation), and a plain float64 implementation of BERT and of each pooling.
//! Every component of every embedding is within 1e-5 of the reference, for texts of
//! different lengths in one padded batch. Folders the flow cannot serve are refused when
//! it is opened, with what to fix.
//!
//! - `tiny_bert`: the folders, as sentence-transformers saves them
//! - `reference`: BERT and the poolings in float64
//! - `matching`: each pooling and size against the reference
//! - `refusals`: folders the flow refuses

mod matching;
mod reference;
mod refusals;
mod tiny_bert;

use std::path::Path;

use fstore_flows::sentence::{Options, SentenceTransformer};
use fstore_flows::{FlowInput, Params, Value};

pub(crate) fn item(text: &str) -> FlowInput {
    FlowInput {
        entity_id: "e".to_string(),
        params: Params::default(),
        values: [("text".to_string(), Value::String(text.to_string()))].into(),
        attempt: 1,
    }
}

pub(crate) fn open(dir: &Path, name: &str) -> Result<SentenceTransformer, fstore_flows::Error> {
    SentenceTransformer::open(&Options {
        name: name.to_string(),
        version: 1,
        folder: dir.to_path_buf(),
        model: None,
        description: None,
    })
}
