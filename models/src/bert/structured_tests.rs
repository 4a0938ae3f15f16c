//! Structured pruning on a tiny random BERT held in memory: compaction is exact when the removed
//! units contribute nothing, importance finds silenced units, and bad requests change nothing.

use std::collections::BTreeMap;

use joulecut_checkpoint::{DenseTensor, FloatType, Int8Tensor, TensorData};
use joulecut_testkit::XorShift64;

use super::layer::Sublayer;
use super::{
    Activation, BertConfig, BertEncoder, StructuredSpec, TensorSource, TokenBatch, UnitScore,
    Workspace,
};
use crate::RealKernels;

/// Compacting away units whose output is zero changes only float summation order.
const EXACT_TOL: f32 = 1e-5;

pub(super) struct Mem(pub(super) BTreeMap<String, TensorData>);

impl TensorSource for Mem {
    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn tensor(&self, name: &str) -> crate::Result<TensorData> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| crate::Error::MissingTensor { name: name.into() })
    }
}

pub(super) fn cfg() -> BertConfig {
    BertConfig {
        hidden: 16,
        heads: 4,
        intermediate: 24,
        layers: 2,
        vocab: 30,
        max_positions: 16,
        type_vocab: 2,
        eps: 1e-12,
        activation: Activation::Gelu,
    }
}

/// Random weights (std ~ 1/sqrt(fan_in)) by HF name; `edit` may change them before loading.
pub(super) fn tensors(seed: u64) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    tensors_for(&cfg(), seed)
}

/// [`tensors`] for another configuration.
pub(super) fn tensors_for(c: &BertConfig, seed: u64) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let (h, i) = (c.hidden, c.intermediate);
    let mut rng = XorShift64::new(seed);
    let mut t = BTreeMap::new();
    let mut put = |n: String, shape: Vec<usize>, scale: f32, rng: &mut XorShift64| {
        let v = rng.signed_vec(shape.iter().product(), scale);
        t.insert(n, (shape, v));
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        vec![c.vocab, h],
        1.0,
        &mut rng,
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        vec![c.max_positions, h],
        0.5,
        &mut rng,
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        vec![c.type_vocab, h],
        0.5,
        &mut rng,
    );
    for l in 0..c.layers {
        let p = format!("encoder.layer.{l}");
        for (m, rows, cols) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            let s = 1.7 / (cols as f32).sqrt();
            put(format!("{p}.{m}.weight"), vec![rows, cols], s, &mut rng);
            put(format!("{p}.{m}.bias"), vec![rows], 0.1, &mut rng);
        }
    }
    let mut out = t;
    let mut norms = Vec::new();
    for m in
        std::iter::once("embeddings.LayerNorm".to_string()).chain((0..c.layers).flat_map(|l| {
            [
                format!("encoder.layer.{l}.attention.output.LayerNorm"),
                format!("encoder.layer.{l}.output.LayerNorm"),
            ]
        }))
    {
        norms.push((format!("{m}.weight"), vec![1.0f32; h]));
        norms.push((format!("{m}.bias"), vec![0.0f32; h]));
    }
    for (n, v) in norms {
        out.insert(n, (vec![h], v));
    }
    out
}

/// The tensors as dense f32 checkpoint tensors.
pub(super) fn dense_mem(t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Mem {
    Mem(t
        .iter()
        .map(|(n, (s, v))| {
            (
                n.clone(),
                TensorData::Dense(DenseTensor::from_f32(s.clone(), v)),
            )
        })
        .collect())
}

pub(super) fn load(t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> BertEncoder {
    BertEncoder::load(cfg(), &dense_mem(t), &RealKernels::default()).unwrap()
}

pub(super) fn batch() -> TokenBatch {
    let mut b = TokenBatch::default();
    let mut rng = XorShift64::new(7);
    for len in [5usize, 9, 1, 13, 7, 11] {
        let ids: Vec<u32> = (0..len).map(|_| (rng.next_u64() % 30) as u32).collect();
        b.push(&ids, &vec![0; len]);
    }
    b
}

fn states(enc: &BertEncoder, b: &TokenBatch) -> Vec<f32> {
    enc.hidden_states(b, &mut Workspace::default())
        .unwrap()
        .to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Zeroes head `head`'s output-projection columns and FFN neuron `neuron`'s output column in
/// layer `layer`: both then contribute nothing.
fn silence(
    t: &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    layer: usize,
    head: usize,
    neuron: usize,
) {
    let (h, i, d) = (16, 24, 4);
    let ao = &mut t
        .get_mut(&format!(
            "encoder.layer.{layer}.attention.output.dense.weight"
        ))
        .unwrap()
        .1;
    for r in 0..h {
        ao[r * h + head * d..r * h + head * d + d].fill(0.0);
    }
    let o = &mut t
        .get_mut(&format!("encoder.layer.{layer}.output.dense.weight"))
        .unwrap()
        .1;
    for r in 0..h {
        o[r * i + neuron] = 0.0;
    }
}

#[test]
fn compacting_away_silent_units_keeps_the_outputs() {
    let mut t = tensors(1);
    silence(&mut t, 0, 2, 5);
    silence(&mut t, 1, 0, 17);
    let b = batch();
    let full = load(&t);
    let want = states(&full, &b);
    for mean in [false, true] {
        let mut enc = full.clone();
        let ctx_mean = [0.3f32; 16];
        let ffn_mean = [-0.2f32; 24];
        enc.keep_heads(0, &[0, 1, 3], mean.then_some(&ctx_mean[..]))
            .unwrap();
        enc.keep_heads(1, &[1, 2, 3], None).unwrap();
        let keep0: Vec<usize> = (0..24).filter(|&j| j != 5).collect();
        let keep1: Vec<usize> = (0..24).filter(|&j| j != 17).collect();
        enc.keep_neurons(0, &keep0, mean.then_some(&ffn_mean[..]))
            .unwrap();
        enc.keep_neurons(1, &keep1, None).unwrap();
        assert_eq!(enc.layers()[0].heads(), 3);
        assert_eq!(enc.layers()[1].linear(Sublayer::Qkv).out_features(), 3 * 12);
        assert_eq!(
            enc.layers()[1]
                .linear(Sublayer::AttentionOutput)
                .in_features(),
            12
        );
        assert_eq!(
            enc.layers()[0]
                .linear(Sublayer::Intermediate)
                .out_features(),
            23
        );
        assert_eq!(enc.layers()[0].linear(Sublayer::Output).in_features(), 23);
        let got = states(&enc, &b);
        assert!(
            max_diff(&want, &got) < EXACT_TOL,
            "{}",
            max_diff(&want, &got)
        );
        // the tensors it writes have the new shapes and rebuild the same model
        let mut t2 = t.clone();
        for (n, s, v) in enc.dense_linear_tensors().unwrap() {
            t2.insert(n, (s, v));
        }
        assert_eq!(t2["encoder.layer.0.attention.self.key.weight"].0, [12, 16]);
        assert_eq!(t2["encoder.layer.0.attention.self.value.bias"].0, [12]);
        assert_eq!(t2["encoder.layer.1.output.dense.weight"].0, [16, 23]);
        let reloaded = load(&t2);
        assert_eq!(reloaded.layers()[0].heads(), 3);
        assert!(max_diff(&got, &states(&reloaded, &b)) < EXACT_TOL);
    }
}

#[test]
fn removing_a_live_unit_changes_the_outputs_and_the_mean_fold_helps() {
    // the test above could pass if compaction did nothing to the output: check it can fail
    let t = tensors(2);
    let b = batch();
    let full = load(&t);
    let want = states(&full, &b);
    let mut cut = full.clone();
    cut.keep_neurons(0, &(1..24).collect::<Vec<_>>(), None)
        .unwrap();
    assert!(max_diff(&want, &states(&cut, &b)) > 1e-3);
    // folding the removed neurons' mean (on this very batch) into the bias loses less
    let mean = full.unit_stats_for_test(&b);
    let keep: Vec<usize> = (0..24).step_by(2).collect();
    let err = |m: Option<&[f32]>| {
        let mut e = full.clone();
        e.keep_neurons(0, &keep, m).unwrap();
        let got = states(&e, &b);
        want.iter()
            .zip(&got)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
    };
    let (folded, plain) = (err(Some(&mean)), err(None));
    assert!(folded < plain, "folded {folded} vs plain {plain}");
}

impl BertEncoder {
    /// Mean FFN activation of the first layer on `b`.
    fn unit_stats_for_test(&self, b: &TokenBatch) -> Vec<f32> {
        let mut ws = Workspace::default();
        self.embed(b, &mut ws).unwrap();
        self.unit_stats(0, &mut ws, b, Sublayer::Output).means()
    }
}

#[test]
fn importance_ranks_a_silenced_unit_lowest() {
    let mut t = tensors(3);
    silence(&mut t, 1, 1, 9);
    let enc = load(&t);
    let imp = enc.unit_importance(Some(&batch())).unwrap();
    assert_eq!(imp.len(), 2);
    let argmin = |v: &[f64]| (0..v.len()).min_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    assert_eq!(argmin(&imp[1].heads), 1, "{:?}", imp[1].heads);
    assert!(imp[1].heads[1] < 1e-9 && imp[1].heads.iter().all(|s| s.is_finite()));
    assert_eq!(argmin(&imp[1].neurons), 9);
    assert!(imp[0].heads.iter().all(|&s| s > 1e-3), "{:?}", imp[0].heads);

    // magnitude sees weights only: zero every weight a unit owns
    let mut t = tensors(4);
    let h = 16;
    for m in ["query", "key", "value"] {
        let w = &mut t
            .get_mut(&format!("encoder.layer.0.attention.self.{m}.weight"))
            .unwrap()
            .1;
        w[3 * 4 * h..4 * 4 * h].fill(0.0);
    }
    silence(&mut t, 0, 3, 11);
    t.get_mut("encoder.layer.0.intermediate.dense.weight")
        .unwrap()
        .1[11 * h..12 * h]
        .fill(0.0);
    let imp = load(&t).unwrap_importance_magnitude();
    assert_eq!(argmin(&imp[0].heads), 3);
    assert_eq!(imp[0].heads[3], 0.0);
    assert_eq!(argmin(&imp[0].neurons), 11);
}

impl BertEncoder {
    fn unwrap_importance_magnitude(&self) -> Vec<super::UnitImportance> {
        self.unit_importance(None).unwrap()
    }
}

#[test]
fn prune_structured_removes_the_silent_units_first_and_reports_them() {
    let mut t = tensors(5);
    silence(&mut t, 0, 2, 4);
    silence(&mut t, 1, 0, 20);
    let b = batch();
    for score in [UnitScore::Activation, UnitScore::Magnitude] {
        let mut enc = load(&t);
        let spec = StructuredSpec {
            heads: 0.25,
            neurons: 0.5,
            score,
        };
        let r = enc.prune_structured(&b, &spec).unwrap();
        assert_eq!(r.len(), 2);
        for (i, l) in enc.layers().iter().enumerate() {
            assert_eq!(l.heads(), 3);
            assert_eq!(l.linear(Sublayer::Intermediate).out_features(), 12);
            assert_eq!(
                (r[i].heads_before, r[i].neurons_before, r[i].neurons_after),
                (4, 24, 12)
            );
            assert_eq!(r[i].removed_heads.len(), 1);
        }
        if score == UnitScore::Activation {
            assert_eq!(r[0].removed_heads, [2]);
            assert_eq!(r[1].removed_heads, [0]);
            let share = r[0].neuron_score_removed.unwrap();
            assert!(share > 0.0 && share < 1.0, "{share}");
        } else {
            assert!(r[0].head_score_removed.is_none());
        }
        assert!(states(&enc, &b).iter().all(|v| v.is_finite()));
    }
    // 99% of 4 heads still leaves one
    let mut enc = load(&t);
    let spec = StructuredSpec {
        heads: 0.99,
        neurons: 0.0,
        score: UnitScore::Magnitude,
    };
    enc.prune_structured(&b, &spec).unwrap();
    assert!(enc.layers().iter().all(|l| l.heads() == 1));
    assert!(states(&enc, &b).iter().all(|v| v.is_finite()));
}

#[test]
fn the_calibrated_score_beats_magnitude_on_the_output() {
    // the point of calibration: a smaller change of the final hidden states than magnitude's
    let t = tensors(6);
    let b = batch();
    let full = load(&t);
    let want = states(&full, &b);
    let err = |score| {
        let mut enc = full.clone();
        let spec = StructuredSpec {
            heads: 0.25,
            neurons: 0.5,
            score,
        };
        enc.prune_structured(&b, &spec).unwrap();
        let got = states(&enc, &b);
        want.iter()
            .zip(&got)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
    };
    let (cal, mag) = (err(UnitScore::Activation), err(UnitScore::Magnitude));
    assert!(cal < mag, "calibrated {cal} vs magnitude {mag}");
}

#[test]
fn bad_requests_are_errors_that_change_nothing() {
    let t = tensors(8);
    let b = batch();
    let enc = load(&t);
    let bad = |e: crate::Error, what: &str| {
        let m = e.to_string();
        assert!(m.contains(what), "{m}");
    };
    for f in [1.0, 1.5, -0.1, f64::NAN] {
        let mut e = enc.clone();
        let spec = StructuredSpec {
            heads: f,
            neurons: 0.0,
            score: UnitScore::Magnitude,
        };
        bad(e.prune_structured(&b, &spec).unwrap_err(), "[0, 1)");
    }
    let mut e = enc.clone();
    let spec = StructuredSpec {
        heads: 0.5,
        neurons: 0.0,
        score: UnitScore::Activation,
    };
    bad(
        e.prune_structured(&TokenBatch::default(), &spec)
            .unwrap_err(),
        "calibration",
    );
    bad(e.keep_heads(0, &[], None).unwrap_err(), "at least one");
    bad(e.keep_heads(0, &[2, 1], None).unwrap_err(), "ascending");
    bad(e.keep_heads(0, &[0, 4], None).unwrap_err(), "below 4");
    bad(e.keep_neurons(5, &[0], None).unwrap_err(), "no such layer");
    bad(
        e.keep_neurons(0, &[0], Some(&[0.0; 3])).unwrap_err(),
        "wrong length",
    );
    assert_eq!(states(&e, &b), states(&enc, &b));

    // an int8 layer: refused before anything changes
    let mut mem: BTreeMap<String, TensorData> = t
        .iter()
        .map(|(n, (s, v))| {
            (
                n.clone(),
                TensorData::Dense(DenseTensor::from_f32(s.clone(), v)),
            )
        })
        .collect();
    let name = "encoder.layer.1.intermediate.dense.weight";
    let shape = t[name].0.clone();
    let q = Int8Tensor {
        values: vec![1; shape.iter().product()],
        shape,
        scales: vec![0.01],
        zero_points: None,
        axis: None,
        orig_dtype: FloatType::F32,
        in_scales: None,
    };
    mem.insert(name.into(), TensorData::Int8(q));
    let mut e = BertEncoder::load(cfg(), &Mem(mem), &RealKernels::default()).unwrap();
    let before = states(&e, &b);
    let spec = StructuredSpec {
        heads: 0.5,
        neurons: 0.5,
        score: UnitScore::Magnitude,
    };
    bad(
        e.prune_structured(&b, &spec).unwrap_err(),
        "encoder.layer.1.intermediate.dense",
    );
    assert_eq!(e.layers()[0].heads(), 4);
    assert_eq!(states(&e, &b), before);
}
