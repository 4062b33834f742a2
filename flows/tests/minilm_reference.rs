//! `text.minilm@1`, and a flow configured over the same folder (`kind =
//! "sentence-transformer"`), against the reference embeddings of sentence-transformers
//! (`flows/tests/data/minilm/minilm-public.json`, provenance in the README beside it):
//! exact token ids, and every embedding component within 1e-5, one text per call and all
//! texts as one padded batch.
//!
//! Needs the model files: run `scripts/fetch-model` first (the tests fail, not skip,
//! without them).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use fstore_flows::builtin::minilm_from_env;
use fstore_flows::sentence::SentenceTransformer;
use fstore_flows::{Flow, FlowInput, Params, Value};

/// The package's directory as the test runner gives it at run time (`cargo test` and
/// nextest set `CARGO_MANIFEST_DIR`), else as it was at build time: a test binary may be
/// reused from a build in another clone that shares the target directory.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}

const TOLERANCE: f32 = 1e-5;

struct Item {
    text: String,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Vec<Item> {
    let path = manifest_dir()
        .as_path()
        .join("tests/data/minilm/minilm-public.json");
    let raw = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read the reference {} ({e})", path.display()));
    let json: serde_json::Value = serde_json::from_slice(&raw).expect("reference is json");
    let items = json["items"].as_array().expect("reference has items");
    assert!(!items.is_empty(), "reference has no items");
    items
        .iter()
        .map(|item| Item {
            text: item["text"].as_str().expect("text").to_string(),
            token_ids: item["token_ids"]
                .as_array()
                .expect("token_ids")
                .iter()
                .map(|v| u32::try_from(v.as_u64().expect("token id")).expect("u32 token id"))
                .collect(),
            embedding: item["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|v| v.as_f64().expect("embedding component") as f32)
                .collect(),
        })
        .collect()
}

/// One flow for every test of this file, so the model loads once.
fn flow() -> &'static SentenceTransformer {
    static FLOW: OnceLock<SentenceTransformer> = OnceLock::new();
    FLOW.get_or_init(|| {
        let flow = minilm_from_env();
        let folder = flow.model_folder();
        for file in ["model.safetensors", "tokenizer.json"] {
            assert!(
                folder.join(file).is_file(),
                "{} is missing: run scripts/fetch-model (or set FSTORE_MODEL_DIR to the folder \
                 that holds all-minilm-l6-v2/)",
                folder.join(file).display()
            );
        }
        flow
    })
}

fn item(text: &str) -> FlowInput {
    FlowInput {
        entity_id: "e1".to_string(),
        params: Params::default(),
        values: BTreeMap::from([("text".to_string(), Value::String(text.to_string()))]),
        attempt: 1,
    }
}

fn embedding(result: &Result<Value, fstore_flows::Error>) -> Vec<f32> {
    let value = result
        .as_ref()
        .unwrap_or_else(|e| panic!("text.minilm failed: {e}"));
    let (shape, data) =
        Value::tensor_parts(value.as_tensor().expect("a tensor")).expect("tensor data");
    assert_eq!(shape, vec![384]);
    data
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn token_ids_match_reference() {
    let started = Instant::now();
    let flow = flow();
    for (i, item) in reference().iter().enumerate() {
        let ids = flow
            .token_ids(&item.text, 256)
            .unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(ids, item.token_ids, "item {i}: {:?}", item.text);
    }
    eprintln!("token ids: {:.2?}", started.elapsed());
}

#[test]
fn embeddings_match_reference_one_by_one_and_batched() {
    let started = Instant::now();
    let flow = flow();
    let reference = reference();

    let mut worst_single = 0f32;
    for (i, item) in reference.iter().enumerate() {
        let out = flow.run(&[self::item(&item.text)]);
        assert_eq!(out.len(), 1);
        let diff = max_abs_diff(&embedding(&out[0]), &item.embedding);
        assert!(
            diff <= TOLERANCE,
            "item {i} ({:?}): max abs difference {diff:e} > {TOLERANCE:e}",
            item.text
        );
        worst_single = worst_single.max(diff);
    }
    let single = started.elapsed();

    let batch: Vec<FlowInput> = reference.iter().map(|r| self::item(&r.text)).collect();
    let out = flow.run(&batch);
    assert_eq!(out.len(), reference.len());
    let mut worst_batched = 0f32;
    for (i, (result, item)) in out.iter().zip(&reference).enumerate() {
        let diff = max_abs_diff(&embedding(result), &item.embedding);
        assert!(
            diff <= TOLERANCE,
            "item {i} ({:?}) in a batch: max abs difference {diff:e} > {TOLERANCE:e}",
            item.text
        );
        worst_batched = worst_batched.max(diff);
    }
    eprintln!(
        "max abs difference: single {worst_single:e}, batched {worst_batched:e} \
         ({} items; one by one {single:.2?}, batch {:.2?})",
        reference.len(),
        started.elapsed() - single
    );
    let info = flow.model().expect("model info");
    eprintln!("model load: {} ms", info.load_ms);
    assert!(info.loaded);
    assert_eq!(
        info.sha256,
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    );
}

#[test]
fn max_length_truncates_and_unload_loads_again() {
    let started = Instant::now();
    let flow = fstore_flows::builtin::minilm(
        flow()
            .model_folder()
            .parent()
            .expect("model dir")
            .to_path_buf(),
    );
    let long = "word ".repeat(300);
    let ids = flow.token_ids(&long, 16).expect("tokens");
    assert_eq!(ids.len(), 16);
    assert_eq!((ids[0], ids[15]), (101, 102), "[CLS] … [SEP]");
    assert_eq!(flow.token_ids(&long, 1).expect("tokens"), vec![101, 102]);
    assert_eq!(flow.token_ids(&long, 256).expect("tokens").len(), 256);

    let mut short = item(&long);
    short.params = [("max_length".to_string(), "16".to_string())]
        .into_iter()
        .collect();
    let out = flow.run(&[short, item(&long)]);
    let (a, b) = (embedding(&out[0]), embedding(&out[1]));
    assert!(
        max_abs_diff(&a, &b) > 1e-4,
        "max_length must change the input"
    );

    assert_eq!(flow.model().expect("info").loads, 1);
    flow.unload();
    assert!(!flow.model().expect("info").loaded);
    let again = flow.run(&[item("again")]);
    embedding(&again[0]);
    let info = flow.model().expect("info");
    assert!(info.loaded);
    assert_eq!(info.loads, 2);
    eprintln!("max_length and reload: {:.2?}", started.elapsed());
}

/// A flow configured over the MiniLM folder (`kind = "sentence-transformer"`, no code)
/// reads its pooling and normalisation from the folder and matches the reference too.
#[test]
fn a_configured_flow_over_the_folder_matches_the_reference() {
    use fstore_flows::sentence::Options;
    let configured = SentenceTransformer::open(&Options {
        name: "text.configured".to_string(),
        version: 3,
        folder: flow().model_folder().to_path_buf(),
        model: None,
        description: None,
    })
    .expect("the MiniLM folder is a sentence-transformers folder");
    assert_eq!(configured.spec().id.to_string(), "text.configured@3");
    assert!(
        configured
            .spec()
            .description
            .contains("[384], mean pooling, L2-normalised"),
        "{}",
        configured.spec().description
    );
    let reference = reference();
    let batch: Vec<FlowInput> = reference.iter().map(|r| item(&r.text)).collect();
    let out = configured.run(&batch);
    for (i, (r, got)) in reference.iter().zip(&out).enumerate() {
        let diff = max_abs_diff(&embedding(got), &r.embedding);
        assert!(diff <= TOLERANCE, "item {i}: max |diff| {diff:e}");
    }
}
