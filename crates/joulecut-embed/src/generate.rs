//! Generated BERT model directories (random weights, a small WordPiece vocabulary) in exactly the
//! layout Hugging Face ships: `config.json`, `tokenizer.json`, `model.safetensors` with HF tensor
//! names and shapes. Tests and benches use them where no real model can be downloaded; they
//! exercise the same loading code as a real model.
//!
//! Embeddings follow BERT's initialisation (normal, std `initializer_range`). Weight matrices are
//! scaled like a trained network's rather than freshly initialised ones: std `weight_gain /
//! sqrt(fan_in)`, so every sub-layer moves the residual stream as much as it carries (with BERT's
//! 0.02 the layers would barely touch it and any perturbation of them would go unnoticed), times a
//! log-normal scale per output row, as trained projections show — that spread is what separates
//! per-channel from per-tensor int8 scales. Random weights carry no meaning, so cosines measured on
//! them say how faithfully compression preserves the function, not how well it preserves semantics.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, tensor::TensorView};
use serde_json::json;

use crate::error::{Error, Result};

/// Shape and seed of a generated BERT.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SyntheticBert {
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads (must divide `hidden_size`).
    pub num_attention_heads: usize,
    /// MLP width (BERT uses 4 × hidden).
    pub intermediate_size: usize,
    /// Position table length.
    pub max_position_embeddings: usize,
    /// Std of the embedding tables (BERT's `initializer_range`).
    pub initializer_range: f32,
    /// Weight matrices have std `weight_gain / sqrt(fan_in)` (before the row spread).
    pub weight_gain: f32,
    /// Log-normal sigma of the per-output-row scale of weight matrices (0 = i.i.d. weights).
    pub row_scale_spread: f32,
    /// Tensor-name prefix: `None` (as `BertModel` / sentence-transformers export) or `Some("bert")`.
    pub prefix: Option<String>,
    /// Also write the I64 `embeddings.position_ids` buffer older HF checkpoints carry.
    pub position_ids: bool,
    /// Seed of the weights.
    pub seed: u64,
}

impl Default for SyntheticBert {
    /// MiniLM-like proportions at a test-friendly size: hidden 192, 3 layers, 4 × MLP.
    fn default() -> Self {
        SyntheticBert {
            hidden_size: 192,
            num_hidden_layers: 3,
            num_attention_heads: 6,
            intermediate_size: 768,
            max_position_embeddings: 128,
            initializer_range: 0.02,
            weight_gain: 1.0,
            row_scale_spread: 0.5,
            prefix: None,
            position_ids: false,
            seed: 0,
        }
    }
}

const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

const WORDS: &str = "the a an of to in and is was for on with as by at from that this it be are \
    were has have had not but or if then than so very more most some any all each every no one two \
    three four five six seven eight nine ten first last new old good bad big small long short high low \
    energy power watt joule model network layer weight bias tensor matrix vector compress prune \
    quantize distill train test eval batch token sentence word text embed encoder decoder attention \
    head hidden output input float int cosine similar distance cat dog bird fish tree house car road \
    city river sea sky sun moon star rain snow wind day night time year people man woman child \
    friend book paper pen table chair door window water fire earth light dark red green blue white \
    black run walk read write speak see hear think know make take give find use work play sleep eat \
    drink go come sit stand open close start stop buy sell";

const SUFFIXES: [&str; 8] = ["s", "es", "ed", "ing", "ly", "er", "est", "ion"];

/// The WordPiece vocabulary of a generated model, id order.
pub fn vocabulary() -> Vec<String> {
    let mut v: Vec<String> = SPECIAL.iter().map(|s| s.to_string()).collect();
    let mut push = |t: String| {
        if !v.contains(&t) {
            v.push(t);
        }
    };
    for c in ('a'..='z').chain('0'..='9') {
        push(c.to_string());
    }
    for p in ".,;:!?'\"()-/".chars() {
        push(p.to_string());
    }
    for w in WORDS.split_whitespace() {
        push(w.to_string());
    }
    for c in ('a'..='z').chain('0'..='9') {
        push(format!("##{c}"));
    }
    for s in SUFFIXES {
        push(format!("##{s}"));
    }
    v
}

/// splitmix64 + Box–Muller: deterministic normals without a rand dependency.
struct Normal(u64);

impl Normal {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

impl SyntheticBert {
    /// The Hugging Face `config.json` of this model.
    pub fn config_json(&self) -> serde_json::Value {
        json!({
            "architectures": ["BertModel"],
            "attention_probs_dropout_prob": 0.1,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "hidden_size": self.hidden_size,
            "initializer_range": self.initializer_range,
            "intermediate_size": self.intermediate_size,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": self.max_position_embeddings,
            "model_type": "bert",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "type_vocab_size": 2,
            "use_cache": true,
            "vocab_size": vocabulary().len(),
        })
    }

    /// A `tokenizer.json` as HF's BERT fast tokenizer saves it (WordPiece, BERT normalizer and
    /// pre-tokenizer, `[CLS] … [SEP]` template, fixed-length padding as sentence-transformers ship).
    pub fn tokenizer_json(&self) -> serde_json::Value {
        let vocab = vocabulary();
        let id = |t: &str| vocab.iter().position(|v| v == t).expect("special token") as u32;
        let added: Vec<_> = SPECIAL
            .iter()
            .map(|t| {
                json!({"id": id(t), "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let map: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let (cls, sep) = (id("[CLS]"), id("[SEP]"));
        json!({
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": self.max_position_embeddings,
                           "strategy": "LongestFirst", "stride": 0},
            "padding": {"strategy": {"Fixed": self.max_position_embeddings}, "direction": "Right",
                        "pad_to_multiple_of": null, "pad_id": id("[PAD]"), "pad_type_id": 0,
                        "pad_token": "[PAD]"},
            "added_tokens": added,
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                           "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}},
                         {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [cls], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [sep], "tokens": ["[SEP]"]}
                }
            },
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": map}
        })
    }

    /// The f32 tensors of the model, by HF name (with the prefix), shapes as HF stores them.
    pub fn tensors(&self) -> Tensors {
        let (h, i, p) = (
            self.hidden_size,
            self.intermediate_size,
            self.max_position_embeddings,
        );
        let v = vocabulary().len();
        let mut rng = Normal(self.seed);
        let std = self.initializer_range;
        let mut out = BTreeMap::new();
        let pre = self
            .prefix
            .as_deref()
            .map(|p| format!("{p}."))
            .unwrap_or_default();
        let mut put = |name: String, shape: Vec<usize>, values: Vec<f32>| {
            out.insert(format!("{pre}{name}"), (shape, values));
        };
        // weight matrices [out, in], with per-row scales
        let matrix = |rng: &mut Normal, rows: usize, cols: usize| -> Vec<f32> {
            let mut w = Vec::with_capacity(rows * cols);
            let std = self.weight_gain / (cols as f32).sqrt();
            for _ in 0..rows {
                let s = std * (self.row_scale_spread * rng.sample()).exp();
                w.extend((0..cols).map(|_| s * rng.sample()));
            }
            w
        };
        let vector = |rng: &mut Normal, n: usize, base: f32, s: f32| -> Vec<f32> {
            (0..n).map(|_| base + s * rng.sample()).collect()
        };
        for (name, rows) in [
            ("word_embeddings", v),
            ("position_embeddings", p),
            ("token_type_embeddings", 2),
        ] {
            let w = vector(&mut rng, rows * h, 0.0, std);
            put(format!("embeddings.{name}.weight"), vec![rows, h], w);
        }
        let norm =
            |rng: &mut Normal, put: &mut dyn FnMut(String, Vec<usize>, Vec<f32>), at: &str| {
                put(
                    format!("{at}.weight"),
                    vec![h],
                    (0..h).map(|_| 1.0 + 0.05 * rng.sample()).collect(),
                );
                put(
                    format!("{at}.bias"),
                    vec![h],
                    (0..h).map(|_| 0.02 * rng.sample()).collect(),
                );
            };
        norm(&mut rng, &mut put, "embeddings.LayerNorm");
        for l in 0..self.num_hidden_layers {
            let at = format!("encoder.layer.{l}");
            let linears = [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", i, h),
                ("output.dense", h, i),
            ];
            for (name, rows, cols) in linears {
                let w = matrix(&mut rng, rows, cols);
                put(format!("{at}.{name}.weight"), vec![rows, cols], w);
                let b = vector(&mut rng, rows, 0.0, std);
                put(format!("{at}.{name}.bias"), vec![rows], b);
            }
            norm(
                &mut rng,
                &mut put,
                &format!("{at}.attention.output.LayerNorm"),
            );
            norm(&mut rng, &mut put, &format!("{at}.output.LayerNorm"));
        }
        // HF's BertModel exports carry a pooler the sentence encoder never uses
        let w = matrix(&mut rng, h, h);
        put("pooler.dense.weight".into(), vec![h, h], w);
        put("pooler.dense.bias".into(), vec![h], vec![0.0; h]);
        out
    }

    /// Writes `config.json`, `tokenizer.json` and `model.safetensors` into `dir` (created).
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(werr(dir))?;
        for (file, v) in [
            ("config.json", self.config_json()),
            ("tokenizer.json", self.tokenizer_json()),
        ] {
            let p = dir.join(file);
            let text = serde_json::to_string_pretty(&v).expect("JSON values serialise");
            std::fs::write(&p, text).map_err(werr(&p))?;
        }
        let buffer = self.position_ids.then(|| {
            let pre = self
                .prefix
                .as_deref()
                .map(|p| format!("{p}."))
                .unwrap_or_default();
            let ids = (0..self.max_position_embeddings as i64).collect();
            (
                format!("{pre}embeddings.position_ids"),
                vec![1, self.max_position_embeddings],
                ids,
            )
        });
        write_safetensors(
            &dir.join(crate::weights::WEIGHTS_FILE),
            &self.tensors(),
            buffer,
        )
    }
}

/// F32 tensors by name: shape and row-major values.
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Writes F32 tensors as a plain safetensors file (`__metadata__` `{"format": "pt"}`, as PyTorch
/// exports have it).
pub fn write_weights(path: &Path, tensors: &Tensors) -> Result<()> {
    write_safetensors(path, tensors, None)
}

fn write_safetensors(
    path: &Path,
    tensors: &Tensors,
    i64_buffer: Option<(String, Vec<usize>, Vec<i64>)>,
) -> Result<()> {
    let bytes: Vec<(&String, Dtype, &Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, v))| {
            (
                n,
                Dtype::F32,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .chain(i64_buffer.iter().map(|(n, s, v)| {
            (
                n,
                Dtype::I64,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        }))
        .collect();
    let views = bytes.iter().map(|(n, dtype, s, b)| {
        let view = TensorView::new(*dtype, s.to_vec(), b).expect("sizes match shapes");
        (n.as_str(), view)
    });
    let meta = [("format".to_string(), "pt".to_string())].into();
    let werr = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let data =
        safetensors::serialize(views, Some(meta)).map_err(|e| werr(std::io::Error::other(e)))?;
    std::fs::write(path, data).map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_unique_and_starts_with_the_special_tokens() {
        let v = vocabulary();
        assert_eq!(&v[..5], SPECIAL);
        let set: std::collections::HashSet<_> = v.iter().collect();
        assert_eq!(set.len(), v.len());
        assert!(v.len() > 250, "{}", v.len());
    }

    #[test]
    fn tensors_have_hf_names_and_shapes() {
        let g = SyntheticBert {
            num_hidden_layers: 2,
            ..SyntheticBert::default()
        };
        let t = g.tensors();
        let v = vocabulary().len();
        assert_eq!(t["embeddings.word_embeddings.weight"].0, [v, 192]);
        assert_eq!(t["encoder.layer.1.intermediate.dense.weight"].0, [768, 192]);
        assert_eq!(t["encoder.layer.1.output.dense.weight"].0, [192, 768]);
        assert_eq!(
            t["encoder.layer.0.attention.output.LayerNorm.bias"].0,
            [192]
        );
        assert!(!t.contains_key("encoder.layer.2.output.dense.weight"));
        // 5 embedding tensors + 16 per layer + pooler (2)
        assert_eq!(t.len(), 5 + 16 * 2 + 2);
        // seeded: same seed, same weights; another seed, others
        assert_eq!(t, g.tensors());
        let other = SyntheticBert {
            seed: 1,
            ..g.clone()
        }
        .tensors();
        assert_ne!(t["pooler.dense.weight"], other["pooler.dense.weight"]);
        // rows scaled around 1/sqrt(fan_in), log-normally spread
        let w = &t["encoder.layer.0.output.dense.weight"].1;
        let rms = |r: &[f32]| (r.iter().map(|x| x * x).sum::<f32>() / r.len() as f32).sqrt();
        let all = rms(w) * (768f32).sqrt();
        assert!((0.8..1.6).contains(&all), "{all}");
        let rows: Vec<f32> = w.chunks(768).map(rms).collect();
        let (lo, hi) = rows
            .iter()
            .fold((f32::MAX, 0f32), |(a, b), &r| (a.min(r), b.max(r)));
        assert!(hi / lo > 3.0, "row spread {lo}..{hi}");
        let e = &t["embeddings.word_embeddings.weight"].1;
        assert!((0.015..0.025).contains(&rms(e)), "{}", rms(e));
    }
}
