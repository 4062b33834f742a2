//! `kind = "sentence-transformer"` against an independent reference: tiny randomly
//! initialised BERT folders written here (their own hidden size, heads, layers, pooling
//! and normalisation), and a plain float64 implementation of BERT and of each pooling in
//! this file. Every component of every embedding is within 1e-5 of the reference, for
//! texts of different lengths in one padded batch. Folders the flow cannot serve are
//! refused when it is opened, with what to fix.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use fstore_flows::sentence::{Options, SentenceTransformer};
use fstore_flows::{Flow, FlowInput, Params, Value};
use serde_json::json;

const TOLERANCE: f64 = 1e-5;

/// The tiny vocabulary: specials first, as BERT's.
const VOCAB: [&str; 14] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "##s",
    "big",
];

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn values(&mut self, n: usize, scale: f64, around: f64) -> Vec<f64> {
        (0..n).map(|_| around + scale * self.uniform()).collect()
    }
}

#[derive(Clone, Copy)]
struct Shape {
    hidden: usize,
    heads: usize,
    layers: usize,
    intermediate: usize,
    max_position: usize,
}

/// The weights as float64, by the names BERT checkpoints use (row-major, `[out, in]`).
type Weights = HashMap<String, (Vec<usize>, Vec<f64>)>;

fn random_weights(s: Shape, seed: u64) -> Weights {
    let mut rng = Rng(seed);
    let mut w = Weights::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f64, around: f64, rng: &mut Rng| {
        let n = shape.iter().product();
        w.insert(name, (shape, rng.values(n, scale, around)));
    };
    let h = s.hidden;
    put(
        "embeddings.word_embeddings.weight".into(),
        vec![VOCAB.len(), h],
        1.0,
        0.0,
        &mut rng,
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        vec![s.max_position, h],
        0.5,
        0.0,
        &mut rng,
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, h],
        0.5,
        0.0,
        &mut rng,
    );
    put(
        "embeddings.LayerNorm.weight".into(),
        vec![h],
        0.2,
        1.0,
        &mut rng,
    );
    put(
        "embeddings.LayerNorm.bias".into(),
        vec![h],
        0.1,
        0.0,
        &mut rng,
    );
    for l in 0..s.layers {
        let p = format!("encoder.layer.{l}");
        for part in ["query", "key", "value"] {
            put(
                format!("{p}.attention.self.{part}.weight"),
                vec![h, h],
                0.6,
                0.0,
                &mut rng,
            );
            put(
                format!("{p}.attention.self.{part}.bias"),
                vec![h],
                0.1,
                0.0,
                &mut rng,
            );
        }
        put(
            format!("{p}.attention.output.dense.weight"),
            vec![h, h],
            0.5,
            0.0,
            &mut rng,
        );
        put(
            format!("{p}.attention.output.dense.bias"),
            vec![h],
            0.1,
            0.0,
            &mut rng,
        );
        put(
            format!("{p}.attention.output.LayerNorm.weight"),
            vec![h],
            0.2,
            1.0,
            &mut rng,
        );
        put(
            format!("{p}.attention.output.LayerNorm.bias"),
            vec![h],
            0.1,
            0.0,
            &mut rng,
        );
        put(
            format!("{p}.intermediate.dense.weight"),
            vec![s.intermediate, h],
            0.5,
            0.0,
            &mut rng,
        );
        put(
            format!("{p}.intermediate.dense.bias"),
            vec![s.intermediate],
            0.1,
            0.0,
            &mut rng,
        );
        put(
            format!("{p}.output.dense.weight"),
            vec![h, s.intermediate],
            0.5,
            0.0,
            &mut rng,
        );
        put(
            format!("{p}.output.dense.bias"),
            vec![h],
            0.1,
            0.0,
            &mut rng,
        );
        put(
            format!("{p}.output.LayerNorm.weight"),
            vec![h],
            0.2,
            1.0,
            &mut rng,
        );
        put(
            format!("{p}.output.LayerNorm.bias"),
            vec![h],
            0.1,
            0.0,
            &mut rng,
        );
    }
    w
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json")).expect("write");
}

/// Writes a sentence-transformers folder as the library saves one.
fn write_folder(dir: &Path, s: Shape, w: &Weights, pooling: &str, normalize: bool) {
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("folder");
    write_json(
        &dir.join("config.json"),
        &json!({
            "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
            "hidden_size": s.hidden, "num_attention_heads": s.heads,
            "num_hidden_layers": s.layers, "intermediate_size": s.intermediate,
            "max_position_embeddings": s.max_position, "vocab_size": VOCAB.len(),
            "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02, "position_embedding_type": "absolute"
        }),
    );
    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if normalize {
        modules.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
    }
    write_json(&dir.join("modules.json"), &json!(modules));
    write_json(
        &dir.join("1_Pooling/config.json"),
        &json!({
            "word_embedding_dimension": s.hidden,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": pooling == "max",
            "pooling_mode_mean_sqrt_len_tokens": false
        }),
    );
    write_json(
        &dir.join("sentence_bert_config.json"),
        &json!({"max_seq_length": s.max_position, "do_lower_case": false}),
    );
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    let special = |id: usize| {
        json!({"id": id, "content": VOCAB[id], "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    write_json(
        &dir.join("tokenizer.json"),
        &json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(0), special(1), special(2), special(3)],
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                           "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab}
        }),
    );
    let tensors: HashMap<String, Tensor> = w
        .iter()
        .map(|(name, (shape, data))| {
            let data: Vec<f32> = data.iter().map(|x| *x as f32).collect();
            let t = Tensor::from_vec(data, shape.as_slice(), &Device::Cpu).expect("tensor");
            (name.clone(), t)
        })
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).expect("safetensors");
}

// ---- the float64 reference -------------------------------------------------------

/// erf by its Maclaurin series (|x| < 3, where it converges to f64 precision) and its
/// limit beyond (|1 - erf(3)| < 2.3e-5 would matter: the continued fraction then).
fn erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc by a continued fraction (Lentz), accurate far past 1e-12 for |x| >= 3.
        let z = x.abs();
        let mut f = z;
        for k in (1..60).rev() {
            f = z + (k as f64 / 2.0) / f;
        }
        let erfc = (-z * z).exp() / (f * std::f64::consts::PI.sqrt());
        (1.0 - erfc).copysign(x)
    }
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn get<'a>(w: &'a Weights, name: &str) -> &'a [f64] {
    &w.get(name).unwrap_or_else(|| panic!("no weight {name}")).1
}

/// `x [n, in] · Wᵀ + b` with `W [out, in]`.
fn linear(x: &[Vec<f64>], w: &[f64], b: &[f64]) -> Vec<Vec<f64>> {
    let out = b.len();
    x.iter()
        .map(|row| {
            (0..out)
                .map(|o| {
                    b[o] + row
                        .iter()
                        .zip(&w[o * row.len()..])
                        .map(|(a, c)| a * c)
                        .sum::<f64>()
                })
                .collect()
        })
        .collect()
}

fn layer_norm(x: &[Vec<f64>], gamma: &[f64], beta: &[f64]) -> Vec<Vec<f64>> {
    x.iter()
        .map(|row| {
            let n = row.len() as f64;
            let mean = row.iter().sum::<f64>() / n;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let sd = (var + 1e-12).sqrt();
            row.iter()
                .enumerate()
                .map(|(i, v)| (v - mean) / sd * gamma[i] + beta[i])
                .collect()
        })
        .collect()
}

fn add(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + q).collect())
        .collect()
}

/// BERT's last hidden states for one unpadded sequence.
fn bert(w: &Weights, s: Shape, ids: &[u32]) -> Vec<Vec<f64>> {
    let h = s.hidden;
    let row = |name: &str, i: usize| get(w, name)[i * h..(i + 1) * h].to_vec();
    let embedded: Vec<Vec<f64>> = ids
        .iter()
        .enumerate()
        .map(|(pos, id)| {
            let word = row("embeddings.word_embeddings.weight", *id as usize);
            let position = row("embeddings.position_embeddings.weight", pos);
            let kind = row("embeddings.token_type_embeddings.weight", 0);
            (0..h).map(|i| word[i] + position[i] + kind[i]).collect()
        })
        .collect();
    let mut x = layer_norm(
        &embedded,
        get(w, "embeddings.LayerNorm.weight"),
        get(w, "embeddings.LayerNorm.bias"),
    );
    let head = h / s.heads;
    for l in 0..s.layers {
        let p = |n: &str| format!("encoder.layer.{l}.{n}");
        let proj = |n: &str| {
            linear(
                &x,
                get(w, &p(&format!("attention.self.{n}.weight"))),
                get(w, &p(&format!("attention.self.{n}.bias"))),
            )
        };
        let (q, k, v) = (proj("query"), proj("key"), proj("value"));
        let mut context = vec![vec![0.0; h]; ids.len()];
        for hd in 0..s.heads {
            let r = hd * head..(hd + 1) * head;
            for i in 0..ids.len() {
                let scores: Vec<f64> = (0..ids.len())
                    .map(|j| {
                        q[i][r.clone()]
                            .iter()
                            .zip(&k[j][r.clone()])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (head as f64).sqrt()
                    })
                    .collect();
                let top = scores.iter().cloned().fold(f64::MIN, f64::max);
                let exp: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                let total: f64 = exp.iter().sum();
                for (j, e) in exp.iter().enumerate() {
                    for d in r.clone() {
                        context[i][d] += e / total * v[j][d];
                    }
                }
            }
        }
        let attended = linear(
            &context,
            get(w, &p("attention.output.dense.weight")),
            get(w, &p("attention.output.dense.bias")),
        );
        x = layer_norm(
            &add(&attended, &x),
            get(w, &p("attention.output.LayerNorm.weight")),
            get(w, &p("attention.output.LayerNorm.bias")),
        );
        let inner: Vec<Vec<f64>> = linear(
            &x,
            get(w, &p("intermediate.dense.weight")),
            get(w, &p("intermediate.dense.bias")),
        )
        .into_iter()
        .map(|r| r.into_iter().map(gelu).collect())
        .collect();
        let out = linear(
            &inner,
            get(w, &p("output.dense.weight")),
            get(w, &p("output.dense.bias")),
        );
        x = layer_norm(
            &add(&out, &x),
            get(w, &p("output.LayerNorm.weight")),
            get(w, &p("output.LayerNorm.bias")),
        );
    }
    x
}

fn reference(w: &Weights, s: Shape, ids: &[u32], pooling: &str, normalize: bool) -> Vec<f64> {
    let hidden = bert(w, s, ids);
    let pooled: Vec<f64> = match pooling {
        "mean" => (0..s.hidden)
            .map(|d| hidden.iter().map(|t| t[d]).sum::<f64>() / hidden.len() as f64)
            .collect(),
        "cls" => hidden[0].clone(),
        "max" => (0..s.hidden)
            .map(|d| hidden.iter().map(|t| t[d]).fold(f64::MIN, f64::max))
            .collect(),
        other => panic!("no pooling {other}"),
    };
    if !normalize {
        return pooled;
    }
    let norm = pooled.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
    pooled.iter().map(|v| v / norm).collect()
}

// ---- the tests -------------------------------------------------------------------

fn item(text: &str) -> FlowInput {
    FlowInput {
        entity_id: "e".to_string(),
        params: Params::default(),
        values: [("text".to_string(), Value::String(text.to_string()))].into(),
        attempt: 1,
    }
}

fn open(dir: &Path, name: &str) -> Result<SentenceTransformer, fstore_flows::Error> {
    SentenceTransformer::open(&Options {
        name: name.to_string(),
        version: 1,
        folder: dir.to_path_buf(),
        model: None,
        description: None,
    })
}

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

#[test]
fn the_reference_erf_is_exact_enough() {
    // Values from the definition (Abramowitz and Stegun, table 7.1).
    for (x, want) in [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.5, 0.999_999_256_901_627_7),
    ] {
        assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
        assert!((erf(-x) + want).abs() < 1e-14);
    }
}

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
