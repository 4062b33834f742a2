//! Tiny randomly initialised BERT folders, written as sentence-transformers saves a
//! model: config, modules, pooling config, tokenizer and safetensors weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::json;

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
pub(crate) struct Shape {
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) layers: usize,
    pub(crate) intermediate: usize,
    pub(crate) max_position: usize,
}

/// The weights as float64, by the names BERT checkpoints use (row-major, `[out, in]`).
pub(crate) type Weights = HashMap<String, (Vec<usize>, Vec<f64>)>;

pub(crate) fn random_weights(s: Shape, seed: u64) -> Weights {
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

pub(crate) fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json")).expect("write");
}

/// Writes a sentence-transformers folder as the library saves one.
pub(crate) fn write_folder(dir: &Path, s: Shape, w: &Weights, pooling: &str, normalize: bool) {
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
