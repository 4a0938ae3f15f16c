//! `joulecut export DIR --format onnx` of BERT-family encoders: the graph, run in-process by tract
//! on a padded batch, gives joulecut's own encoder's token states and mean-pooled sentence
//! embeddings — F32, F16, int8 per tensor (against joulecut's int8 decode, `--activations f32`), structurally
//! pruned (heads and FFN neurons removed, recorded in config.json) and shallower models.

mod common;

use std::path::Path;

use candle_core::Device;
use common::*;
use joulecut::embed::generate::SyntheticBert;
use joulecut::embed::{EncodeConfig, SentenceEncoder};
use joulecut::models::bert::Workspace;
use tract_onnx::prelude::*;

/// Largest |tract − joulecut| of an output value (states are LayerNorm outputs of order 1): the
/// two sum in different orders and joulecut's GELU and softmax use fast exp/erf.
const STATE_TOLERANCE: f32 = 2e-4;

const SENTENCES: [&str; 3] = [
    "the cat sat on the red chair by the window",
    "energy",
    "people read books at night",
];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn small(layers: usize) -> SyntheticBert {
    SyntheticBert {
        hidden_size: 64,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        intermediate_size: 128,
        max_position_embeddings: 32,
        position_ids: true,
        seed: 7,
        ..SyntheticBert::default()
    }
}

/// The tract outputs of `onnx` on the sentences, tokenized and padded as Hugging Face does:
/// (`last_hidden_state` `[3, seq, hidden]`, `sentence_embedding` `[3, hidden]`, the mask).
fn tract_outputs(onnx: &Path, enc: &SentenceEncoder) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
    let sentences: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    let b = enc.token_batch(&sentences).unwrap();
    let seq = *b.lengths.iter().max().unwrap();
    let n = b.lengths.len();
    let (mut ids, mut mask, mut types) =
        (vec![0i64; n * seq], vec![0i64; n * seq], vec![0; n * seq]);
    let mut t = 0;
    for (i, &len) in b.lengths.iter().enumerate() {
        for j in 0..len {
            ids[i * seq + j] = i64::from(b.ids[t]);
            types[i * seq + j] = i64::from(b.type_ids[t]);
            mask[i * seq + j] = 1;
            t += 1;
        }
    }
    let model = tract_onnx::onnx()
        .model_for_path(onnx)
        .unwrap()
        .with_input_fact(0, i64::fact([n, seq]).into())
        .unwrap()
        .with_input_fact(1, i64::fact([n, seq]).into())
        .unwrap()
        .with_input_fact(2, i64::fact([n, seq]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = |v: Vec<i64>| Tensor::from_shape(&[n, seq], &v).unwrap().into();
    let out = model
        .run(tvec!(input(ids), input(mask), input(types)))
        .unwrap();
    let flat = |i: usize| -> Vec<f32> {
        out[i]
            .to_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    };
    (flat(0), flat(1), b.lengths)
}

/// Exports `src` (with extra export args) and checks tract's outputs against joulecut's encoder
/// on `reference` (a model directory holding what the graph should compute); returns the worst
/// difference.
fn check(src: &Path, reference: &Path, extra: &[&str], tag: &str) -> (f32, serde_json::Value) {
    let onnx = scratch().join(format!("{tag}.onnx"));
    let mut args = vec![
        "export",
        s(src),
        "-o",
        s(&onnx),
        "--format",
        "onnx",
        "--json",
    ];
    args.extend_from_slice(extra);
    let e = json(&args);
    assert_eq!(e["arch"], "bert", "{e}");
    assert_eq!(
        e["outputs"],
        serde_json::json!(["last_hidden_state", "sentence_embedding"])
    );
    let enc = SentenceEncoder::load(reference, &Device::Cpu).unwrap();
    let (states, pooled, lengths) = tract_outputs(&onnx, &enc);
    let sentences: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    let want_pooled: Vec<f32> = enc
        .encode(&sentences, &EncodeConfig::default())
        .unwrap()
        .concat();
    let batch = enc.token_batch(&sentences).unwrap();
    let mut ws = Workspace::default();
    let want_states = enc
        .native()
        .unwrap()
        .hidden_states(&batch, &mut ws)
        .unwrap()
        .to_vec();
    let h = enc.dim();
    let seq = *lengths.iter().max().unwrap();
    assert_eq!(pooled.len(), want_pooled.len());
    assert_eq!(states.len(), lengths.len() * seq * h);
    let mut worst = pooled
        .iter()
        .zip(&want_pooled)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // token states: only the real tokens (padding rows are defined but meaningless)
    let mut t = 0;
    for (i, &len) in lengths.iter().enumerate() {
        for j in 0..len {
            let got = &states[(i * seq + j) * h..(i * seq + j + 1) * h];
            let want = &want_states[t * h..(t + 1) * h];
            for (a, b) in got.iter().zip(want) {
                worst = worst.max((a - b).abs());
            }
            t += 1;
        }
    }
    eprintln!("{tag}: max |tract - joulecut| = {worst:e}");
    assert!(worst <= STATE_TOLERANCE, "{tag}: max |Δ| {worst}");
    (worst, e)
}

fn cli(args: &[&str]) {
    let o = joulecut().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn tract_runs_bert_exports_with_joulecut_outputs() {
    let orig = scratch().join("bert");
    write_hf_bert(&small(2), &orig);
    let (_, e) = check(&orig, &orig, &[], "bert-f32");
    assert_eq!(e["int8"].as_array().unwrap().len(), 0);
    assert_eq!(
        e["inputs"],
        serde_json::json!(["input_ids", "attention_mask", "token_type_ids"])
    );

    // int8 per tensor: the graph with F32 activations is joulecut's int8 decode. (tract 0.22 runs
    // a per-channel `DequantizeLinear` with the first channel's scale for every channel — it
    // ignores `axis`; tract-onnx 0.23 fixed it — so per-channel exports are checked here for
    // their structure and by scripts/check-interop.py in ONNX Runtime.)
    let (q, dec) = int8_per_tensor(&orig, "bert-int8");
    let (_, e) = check(&q, &dec, &["--activations", "f32"], "bert-int8");
    // 2 layers x (query, key, value, attention output, intermediate, output)
    assert_eq!(e["int8"].as_array().unwrap().len(), 12, "{e}");
    assert_eq!(e["quantized_inputs"].as_array().unwrap().len(), 0);
    let f32_bytes = std::fs::metadata(scratch().join("bert-f32.onnx"))
        .unwrap()
        .len();
    assert!(
        e["bytes"].as_u64().unwrap() < f32_bytes,
        "int8 is smaller: {e}"
    );
    let qc = scratch().join("bert-int8-channel");
    cli(&["quantize", s(&orig), "-o", s(&qc), "--dtype", "int8"]);
    let onnx = scratch().join("bert-int8-channel.onnx");
    let e = json(&[
        "export",
        s(&qc),
        "-o",
        s(&onnx),
        "--format",
        "onnx",
        "--json",
    ]);
    assert_eq!(e["int8"].as_array().unwrap().len(), 12, "{e}");
    // the default puts joulecut's run-time grid on each int8 layer's input: one per sublayer
    // (query, key and value share theirs)
    assert_eq!(e["quantized_inputs"].as_array().unwrap().len(), 8, "{e}");

    // F16 weights are widened to F32 in the file: the graph is what joulecut decodes
    let half = scratch().join("bert-f16");
    cli(&["quantize", s(&orig), "-o", s(&half), "--dtype", "f16"]);
    let (_, e) = check(&half, &half, &[], "bert-f16");
    assert!(!e["widened"].as_array().unwrap().is_empty(), "{e}");
}

/// `src` quantized to int8 per tensor (scratch `tag`) and that model decompressed (`tag-decoded`).
fn int8_per_tensor(src: &Path, tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let q = scratch().join(tag);
    let dec = scratch().join(format!("{tag}-decoded"));
    cli(&[
        "quantize",
        s(src),
        "-o",
        s(&q),
        "--dtype",
        "int8",
        "--granularity",
        "tensor",
    ]);
    cli(&["decompress", s(&q), "-o", s(&dec)]);
    (q, dec)
}

/// Smoothed int8 (`:in_scale`, what a calibrated transformer quantize writes): the graph multiplies
/// each layer's input by the factors, and computes joulecut's decode of the file.
#[test]
fn tract_runs_smoothed_int8_bert_exports() {
    use joulecut::checkpoint::{HistoryEntry, Source};
    use joulecut::harness::pipeline::{Int8Activations, QuantizeJob, quantize_stream};
    use joulecut::quant::{ActivationGrid, Int8Config, ScaleGranularity, Target};
    let orig = scratch().join("bert-smooth-src");
    write_hf_bert(&small(2), &orig);
    // arbitrary positive factors; query, key and value share theirs (one product, one input)
    let factors = |k: usize, seed: usize| -> Vec<f32> {
        (0..k)
            .map(|i| 0.25 + ((i * 37 + seed * 11) % 16) as f32 / 8.0)
            .collect()
    };
    let mut in_scales = std::collections::BTreeMap::new();
    for l in 0..2 {
        let p = format!("encoder.layer.{l}");
        for m in ["query", "key", "value"] {
            in_scales.insert(format!("{p}.attention.self.{m}.weight"), factors(64, l));
        }
        in_scales.insert(format!("{p}.intermediate.dense.weight"), factors(64, l + 5));
        in_scales.insert(format!("{p}.output.dense.weight"), factors(128, l + 9));
    }
    let q = scratch().join("bert-int8-smoothed");
    let _ = std::fs::remove_dir_all(&q);
    let job = QuantizeJob {
        target: Target::Int8(Int8Config {
            granularity: ScaleGranularity::Tensor,
            ..Int8Config::default()
        }),
        selection: Default::default(),
        activations: Int8Activations::One(ActivationGrid::S8),
        in_scales,
        history: HistoryEntry::new("quantize", serde_json::json!({})),
        single_file: false,
    };
    quantize_stream(&Source::open(&orig).unwrap(), &q, &job).unwrap();
    let dec = scratch().join("bert-int8-smoothed-decoded");
    cli(&["decompress", s(&q), "-o", s(&dec)]);
    let (_, e) = check(&q, &dec, &["--activations", "f32"], "bert-int8-smoothed");
    assert_eq!(e["int8"].as_array().unwrap().len(), 12, "{e}");
    // compressed-tensors has no input scales: refused, with the way out named
    let out = joulecut()
        .args(["export", s(&q), "-o"])
        .arg(scratch().join("bert-int8-smoothed-ct"))
        .args(["--format", "compressed-tensors"])
        .output()
        .unwrap();
    assert_bad_input(&out, "--no-smoothing");
}

#[test]
fn tract_runs_structurally_pruned_and_shallower_bert_exports() {
    let orig = scratch().join("bert-3");
    write_hf_bert(&small(3), &orig);
    let calib = scratch().join("calib.txt");
    std::fs::write(
        &calib,
        "the cat sat on the red chair\nquantized weights save energy in a small network\n\
         people read books by the river at night\na dog and a bird sleep in the house\n",
    )
    .unwrap();
    let heads = scratch().join("bert-3-heads");
    cli(&[
        "prune",
        s(&orig),
        "-o",
        s(&heads),
        "--granularity",
        "heads",
        "--sparsity",
        "0.25",
        "--method",
        "wanda",
        "--calibration",
        s(&calib),
    ]);
    let pruned = scratch().join("bert-3-heads-neurons");
    cli(&[
        "prune",
        s(&heads),
        "-o",
        s(&pruned),
        "--granularity",
        "neurons",
        "--sparsity",
        "0.3",
    ]);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pruned.join("config.json")).unwrap()).unwrap();
    assert!(cfg["pruned_heads"].is_object(), "{cfg}");
    assert!(cfg["joulecut_intermediate_sizes"].is_array(), "{cfg}");
    check(&pruned, &pruned, &[], "bert-3-pruned");
    // and int8 on top of the smaller layers
    let (q, dec) = int8_per_tensor(&pruned, "bert-3-pruned-int8");
    check(&q, &dec, &["--activations", "f32"], "bert-3-pruned-int8");

    // a shallower model (one layer, as `distill --keep-layers 1` writes it)
    let one = scratch().join("bert-1");
    write_hf_bert(&small(1), &one);
    check(&one, &one, &[], "bert-1");
}

#[test]
fn bert_exports_that_cannot_be_written_are_refused() {
    let orig = scratch().join("bert-refuse");
    write_hf_bert(&small(1), &orig);
    let packed = scratch().join("bert-refuse-packed");
    cli(&[
        "prune",
        s(&orig),
        "-o",
        s(&packed),
        "--sparsity",
        "0.8",
        "--pack",
    ]);
    let no_config = scratch().join("bert-refuse-noconfig");
    std::fs::create_dir_all(&no_config).unwrap();
    for (input, needle) in [(&packed, "sparse"), (&no_config, "config.json")] {
        let out_path = scratch().join("refused.onnx");
        let out = joulecut()
            .args(["export", s(input), "-o", s(&out_path), "--format", "onnx"])
            .output()
            .unwrap();
        assert_bad_input(&out, needle);
        assert!(!out_path.exists(), "nothing is written");
    }
}
