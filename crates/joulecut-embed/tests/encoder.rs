//! Loading generated BERT directories and embedding with them: padding is masked out, the `bert.`
//! prefix and TF-era LayerNorm names load, and broken weights fail with typed errors naming the
//! tensor.

use std::path::Path;

use candle_core::Device;
use joulecut_embed::generate::{SyntheticBert, Tensors, write_weights};
use joulecut_embed::{CosineSummary, EncodeConfig, Error, SentenceEncoder, cosine};

/// Same sentence, different batch composition: only float summation order may differ.
const BATCH_INVARIANCE_TOL: f64 = 1e-5;

fn small() -> SyntheticBert {
    SyntheticBert {
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 256,
        max_position_embeddings: 64,
        ..SyntheticBert::default()
    }
}

fn sentences() -> Vec<String> {
    [
        "the cat sat on the chair",
        "a model was trained to compress energy",
        "joules",
        "Zebras walking by the river at night, reading books!",
        "the dog and the bird",
        "one two three four five six seven eight nine ten one two three four five six seven",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn write(g: &SyntheticBert, dir: &Path) {
    g.write_dir(dir).unwrap();
}

#[test]
fn embeddings_do_not_depend_on_the_batch() {
    let d = tempfile::tempdir().unwrap();
    write(&small(), d.path());
    let enc = SentenceEncoder::load(d.path(), &Device::Cpu).unwrap();
    assert_eq!(enc.dim(), 64);
    assert_eq!(enc.prefix(), "");
    let s = sentences();
    let one = enc.encode(&s, &EncodeConfig { batch_size: 1 }).unwrap();
    let all = enc.encode(&s, &EncodeConfig { batch_size: 16 }).unwrap();
    assert_eq!(one.len(), s.len());
    assert!(
        one.iter()
            .all(|e| e.len() == 64 && e.iter().all(|x| x.is_finite()))
    );
    // batch 16 pads the short sentences: the mask must keep padding out of the mean
    let c = CosineSummary::of(&one, &all).unwrap();
    assert!(c.min >= 1.0 - BATCH_INVARIANCE_TOL, "{c:?}");
    // fixed padding in tokenizer.json is replaced by padding to the longest sentence
    let counts = enc.token_counts(&s).unwrap();
    assert_eq!(counts[2], 4, "[CLS] joule ##s [SEP]: {counts:?}");
    assert!(counts[5] > counts[0]);
    // different sentences give different embeddings
    assert!(
        cosine(&one[0], &one[1]) < 0.95,
        "{}",
        cosine(&one[0], &one[1])
    );
}

#[test]
fn bert_prefix_and_gamma_beta_names_load_the_same_weights() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(&small(), a.path());
    let g = SyntheticBert {
        prefix: Some("bert".into()),
        position_ids: true,
        ..small()
    };
    write(&g, b.path());
    // rename LayerNorm weight/bias to gamma/beta, as TF-converted checkpoints have them
    let renamed: Tensors = g
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let n = n
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
            (n, t)
        })
        .collect();
    write_weights(&b.path().join("model.safetensors"), &renamed).unwrap();
    let ea = SentenceEncoder::load(a.path(), &Device::Cpu).unwrap();
    let eb = SentenceEncoder::load(b.path(), &Device::Cpu).unwrap();
    assert_eq!(eb.prefix(), "bert.");
    let cfg = EncodeConfig::default();
    let c = CosineSummary::of(
        &ea.encode(&sentences(), &cfg).unwrap(),
        &eb.encode(&sentences(), &cfg).unwrap(),
    )
    .unwrap();
    assert!(c.min > 1.0 - 1e-6, "{c:?}");
}

#[test]
fn missing_and_misshapen_tensors_are_typed_errors() {
    let d = tempfile::tempdir().unwrap();
    write(&small(), d.path());
    let gone = "encoder.layer.1.attention.self.key.bias";
    let t: Tensors = small()
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != gone)
        .collect();
    write_weights(&d.path().join("model.safetensors"), &t).unwrap();
    match SentenceEncoder::load(d.path(), &Device::Cpu) {
        Err(e @ Error::MissingTensor { .. }) => {
            assert!(e.to_string().contains(gone), "{e}");
            assert!(e.is_bad_input() && e.hint().is_some());
        }
        other => panic!("{other:?}"),
    }
    // embeddings of the wrong width
    let t: Tensors = small()
        .tensors()
        .into_iter()
        .map(|(n, (s, v))| {
            if n == "embeddings.token_type_embeddings.weight" {
                (n, (vec![1, 128], v))
            } else {
                (n, (s, v))
            }
        })
        .collect();
    write_weights(&d.path().join("model.safetensors"), &t).unwrap();
    match SentenceEncoder::load(d.path(), &Device::Cpu) {
        Err(Error::WrongShape {
            name,
            expected,
            found,
            ..
        }) => {
            assert_eq!(name, "embeddings.token_type_embeddings.weight");
            assert_eq!((expected, found), (vec![2, 64], vec![1, 128]));
        }
        other => panic!("{other:?}"),
    }
    // no embeddings at all: not a BERT checkpoint
    write_weights(&d.path().join("model.safetensors"), &Tensors::new()).unwrap();
    assert!(matches!(
        SentenceEncoder::load(d.path(), &Device::Cpu),
        Err(Error::MissingTensor { .. })
    ));
}

#[test]
fn a_tokenizer_larger_than_the_vocabulary_is_refused() {
    let d = tempfile::tempdir().unwrap();
    write(&small(), d.path());
    let p = d.path().join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["vocab_size"] = serde_json::json!(50);
    std::fs::write(&p, v.to_string()).unwrap();
    match SentenceEncoder::load(d.path(), &Device::Cpu) {
        Err(e @ Error::Tokenizer { .. }) => assert!(e.to_string().contains("vocab_size 50"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// joulecut's engine (unpadded, its own kernels) embeds like candle-transformers' BERT, at batch 1
/// and with padding in play, for both tensor-name layouts.
#[test]
fn joulecut_engine_matches_candle_transformers() {
    use joulecut_embed::Engine;
    for g in [
        small(),
        SyntheticBert {
            prefix: Some("bert".into()),
            position_ids: true,
            ..SyntheticBert::default()
        },
    ] {
        let d = tempfile::tempdir().unwrap();
        write(&g, d.path());
        let ours = SentenceEncoder::load_with(d.path(), &Device::Cpu, Engine::Joulecut).unwrap();
        let theirs = SentenceEncoder::load_with(d.path(), &Device::Cpu, Engine::Candle).unwrap();
        assert_eq!(
            (ours.engine(), theirs.engine()),
            (Engine::Joulecut, Engine::Candle)
        );
        assert!(
            ours.routes()
                .iter()
                .all(|(_, k)| *k == joulecut_embed::LinearKind::Dense)
        );
        assert_eq!(ours.routes().len(), 6 * g.num_hidden_layers);
        let s = sentences();
        for batch_size in [1, 4] {
            let cfg = EncodeConfig { batch_size };
            let c = CosineSummary::of(
                &ours.encode(&s, &cfg).unwrap(),
                &theirs.encode(&s, &cfg).unwrap(),
            )
            .unwrap();
            assert!(c.min >= 0.99999, "batch {batch_size}: {c:?}");
        }
    }
}

/// Calibrated pruning through the native encoder: every linear layer gets the asked sparsity or
/// N:M pattern, the fused query/key/value split back into three tensors, and SparseGPT's weight
/// updates keep the calibration outputs close.
#[test]
fn calibrated_pruning_prunes_every_linear_layer_as_asked() {
    use joulecut_embed::Engine;
    use joulecut_prune::{CalibratedSpec, Granularity, Method};
    let d = tempfile::tempdir().unwrap();
    write(&small(), d.path());
    let load = || SentenceEncoder::load_with(d.path(), &Device::Cpu, Engine::Joulecut).unwrap();
    let calib: Vec<String> = sentences().into_iter().chain(sentences()).collect();
    let err_of = |method: Method| {
        let mut enc = load();
        let batch = enc.token_batch(&calib).unwrap();
        let spec = CalibratedSpec::new(method, 0.5);
        let reports = enc
            .native_mut()
            .unwrap()
            .prune_calibrated(&batch, &spec)
            .unwrap();
        assert_eq!(reports.len(), 4 * 2);
        for r in &reports {
            assert!((r.stats.sparsity() - 0.5).abs() < 0.01, "{r:?}");
        }
        let w = enc.native().unwrap().linear_weights();
        assert_eq!(w.len(), 6 * 2);
        assert!(
            w.iter()
                .any(|(n, s, _)| n.ends_with("attention.self.key.weight") && *s == [64, 64])
        );
        reports
            .iter()
            .map(|r| r.stats.reconstruction_error.unwrap_or(f64::NAN))
            .collect::<Vec<_>>()
    };
    let sgpt = err_of(Method::SparseGpt);
    let mean = sgpt.iter().sum::<f64>() / sgpt.len() as f64;
    eprintln!("SparseGPT 50% relative reconstruction errors {sgpt:?}");
    assert!(sgpt.iter().all(|e| e.is_finite()), "{sgpt:?}");
    // Removing the smallest half of Gaussian weights alone would lose ~0.1 of the output energy;
    // the OBS updates of the kept weights recover most of it.
    assert!(mean < 0.05, "mean reconstruction error {mean}");
    // 2:4 holds in every group of four inputs
    let mut enc = load();
    let batch = enc.token_batch(&calib).unwrap();
    let spec = CalibratedSpec::new(Method::Wanda, 0.5).granularity(Granularity::nm(2, 4).unwrap());
    enc.native_mut()
        .unwrap()
        .prune_calibrated(&batch, &spec)
        .unwrap();
    for (n, [_, cols], v) in enc.native().unwrap().linear_weights() {
        for row in v.chunks_exact(cols) {
            for g in row.chunks_exact(4) {
                assert!(g.iter().filter(|x| **x == 0.0).count() >= 2, "{n}");
            }
        }
    }
}

/// Per-layer activation grids: errors grow as the grid narrows, the choice is the fastest grid
/// within the budget, and an int8 model loads its recorded grids.
#[test]
fn activation_grid_errors_order_and_choice() {
    use joulecut_embed::Engine;
    use joulecut_models::bert::{GridPolicy, choose_grids};
    use joulecut_quant::ActivationGrid;
    let d = tempfile::tempdir().unwrap();
    write(&small(), d.path());
    let enc = SentenceEncoder::load_with(d.path(), &Device::Cpu, Engine::Joulecut).unwrap();
    let batch = enc.token_batch(&sentences()).unwrap();
    let errors = enc
        .native()
        .unwrap()
        .activation_grid_errors(&batch, &joulecut_quant::Int8Config::default())
        .unwrap();
    assert_eq!(errors.len(), 4 * 2);
    for e in &errors {
        let v: Vec<f64> = e.errors.iter().map(|(_, x)| *x).collect();
        assert!(v[0] < v[1] && v[1] < v[2], "s8 < u7 < u6: {e:?}");
    }
    let strict = GridPolicy {
        max_error: 0.0,
        smoothing: false,
    };
    let all_s8 = choose_grids(&errors, &strict);
    assert!(all_s8.values().all(|g| *g == ActivationGrid::S8));
    assert_eq!(all_s8.len(), 6 * 2);
    let loose = GridPolicy {
        max_error: 1.0,
        smoothing: false,
    };
    // Everything within budget: the fastest rows, u7 (more accurate, as fast) where the weights
    // pair, else u6.
    let fastest = choose_grids(&errors, &loose);
    for e in &errors {
        let want = if e.pairs_u7 {
            ActivationGrid::U7
        } else {
            ActivationGrid::U6
        };
        assert!(e.modules.iter().all(|m| fastest[m] == want), "{e:?}");
    }
}
