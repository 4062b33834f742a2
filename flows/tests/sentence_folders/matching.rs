//! Each pooling, normalised or not, at other hidden sizes than MiniLM's, against the
//! float64 reference: texts of different lengths in one padded batch.

use fstore_flows::{Flow, Value};

use super::reference::reference;
use super::tiny_bert::{Shape, random_weights, write_folder};
use super::{item, open};

/// Every component of every embedding is this close to the reference.
const TOLERANCE: f64 = 1e-5;

/// Texts of different lengths in one batch, so padding must be masked out right.
const TEXTS: [(&str, &[u32]); 4] = [
    ("the cat sat", &[2, 4, 5, 6, 3]),
    ("A big dog ran on the mat", &[2, 9, 13, 10, 11, 7, 4, 8, 3]),
    ("cats", &[2, 5, 12, 3]),
    ("the zebra", &[2, 4, 1, 3]),
];

fn check(shape: Shape, pooling: &str, normalize: bool, seed: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = random_weights(shape, seed);
    write_folder(dir.path(), shape, &weights, pooling, normalize);
    let flow = open(dir.path(), "text.tiny").expect("a valid folder opens");
    let dim = shape.hidden;
    assert!(
        flow.spec().description.contains(&format!("[{dim}]")),
        "{}",
        flow.spec().description
    );
    for (text, ids) in TEXTS {
        assert_eq!(flow.token_ids(text, 64).expect("tokens"), ids, "{text:?}");
    }
    let out = flow.run(&TEXTS.map(|(t, _)| item(t)));
    let mut worst = 0.0f64;
    for ((text, ids), got) in TEXTS.iter().zip(&out) {
        let got = got.as_ref().unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let (got_shape, got) =
            Value::tensor_parts(got.as_tensor().expect("tensor")).expect("tensor data");
        assert_eq!(got_shape, vec![dim]);
        let want = reference(&weights, shape, ids, pooling, normalize);
        for (g, w) in got.iter().zip(&want) {
            worst = worst.max((*g as f64 - w).abs());
        }
        if normalize {
            let norm: f64 = want.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-9);
        }
    }
    eprintln!("{pooling} pooling, normalise {normalize}, hidden {dim}: max |diff| {worst:e}");
    assert!(worst <= TOLERANCE, "max |diff| {worst:e} > {TOLERANCE:e}");
}

#[test]
fn mean_pooling_normalised_matches_the_float64_reference() {
    let shape = Shape {
        hidden: 12,
        heads: 3,
        layers: 2,
        intermediate: 20,
        max_position: 32,
    };
    check(shape, "mean", true, 0x5eed_0001);
}

#[test]
fn cls_pooling_unnormalised_matches_the_float64_reference() {
    let shape = Shape {
        hidden: 8,
        heads: 2,
        layers: 1,
        intermediate: 16,
        max_position: 16,
    };
    check(shape, "cls", false, 0x5eed_0002);
}

#[test]
fn max_pooling_matches_the_float64_reference() {
    let shape = Shape {
        hidden: 16,
        heads: 4,
        layers: 3,
        intermediate: 24,
        max_position: 24,
    };
    check(shape, "max", false, 0x5eed_0003);
}
