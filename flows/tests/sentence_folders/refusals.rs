//! Folders the flow cannot serve are refused when it is opened, with what to fix.

use std::path::Path;

use serde_json::json;

use super::open;
use super::tiny_bert::{Shape, random_weights, write_folder, write_json};

#[test]
fn folders_the_flow_cannot_serve_are_refused_with_what_to_fix() {
    let shape = Shape {
        hidden: 8,
        heads: 2,
        layers: 1,
        intermediate: 16,
        max_position: 16,
    };
    let weights = random_weights(shape, 7);
    let refused = |mutate: &dyn Fn(&Path), says: &str| {
        let dir = tempfile::tempdir().expect("temp dir");
        write_folder(dir.path(), shape, &weights, "mean", true);
        mutate(dir.path());
        let e = open(dir.path(), "text.bad").expect_err(says);
        assert!(e.to_string().contains(says), "{e}");
        assert!(
            e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        );
    };
    refused(
        &|d| std::fs::remove_file(d.join("tokenizer.json")).expect("rm"),
        "has no tokenizer.json",
    );
    refused(
        &|d| std::fs::remove_file(d.join("model.safetensors")).expect("rm"),
        "has no model.safetensors",
    );
    refused(
        &|d| {
            let path = d.join("config.json");
            let mut c: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
            c["model_type"] = json!("roberta");
            write_json(&path, &c);
        },
        "holds a `roberta` model",
    );
    refused(
        &|d| {
            write_json(
                &d.join("1_Pooling/config.json"),
                &json!({"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true}),
            )
        },
        "several pooling modes",
    );
    refused(
        &|d| {
            write_json(
                &d.join("sentence_bert_config.json"),
                &json!({"max_seq_length": 4096}),
            )
        },
        "max_seq_length 4096",
    );
    let e = open(Path::new("/nowhere/model"), "text.bad").expect_err("no folder");
    assert!(e.to_string().contains("does not exist"), "{e}");
}
