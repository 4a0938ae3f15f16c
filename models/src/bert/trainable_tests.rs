//! The trainable encoder against the inference engine (same embeddings, padding or not) and the
//! distillation loss's gradient through the whole encoder against finite differences.

use candle_core::{Device, Tensor};
use joulecut_distill::{EmbeddingLoss, embedding_loss};

use super::structured_tests::{batch, cfg, dense_mem, load, tensors};
use super::{PaddedBatch, StudentSpec, TrainableEncoder, Workspace};

fn student(seed: u64) -> TrainableEncoder {
    TrainableEncoder::load(
        cfg(),
        &dense_mem(&tensors(seed)),
        &StudentSpec::default(),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn padded_training_forward_equals_the_unpadded_inference_engine() {
    let t = tensors(3);
    let b = batch();
    let want = load(&t).encode(&b, &mut Workspace::default()).unwrap();
    let s = student(3);
    let out = s
        .forward(&PaddedBatch::new(&b, &Device::Cpu).unwrap(), &[1, 2])
        .unwrap();
    let got: Vec<f32> = out.pooled.flatten_all().unwrap().to_vec1().unwrap();
    let d = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-4, "pooled embeddings differ by {d}");
    // hidden states: real tokens only, one row each
    assert_eq!(out.hidden.len(), 2);
    assert_eq!(out.hidden[0].dims(), &[b.tokens(), cfg().hidden]);
}

#[test]
fn the_loss_gradient_through_the_encoder_matches_finite_differences() {
    let b = batch();
    let pb = PaddedBatch::new(&b, &Device::Cpu).unwrap();
    // the teacher: another random encoder of the same shape
    let teacher = student(11);
    let t_out = teacher.forward(&pb, &[1, 2]).unwrap();
    let w = EmbeddingLoss {
        cosine: 1.0,
        mse: 0.5,
        hidden: 0.3,
    };
    let s = student(5);
    let loss = |s: &TrainableEncoder| {
        let o = s.forward(&pb, &[1, 2]).unwrap();
        let pairs: Vec<(Tensor, Tensor)> = o
            .hidden
            .iter()
            .cloned()
            .zip(t_out.hidden.iter().map(Tensor::detach))
            .collect();
        embedding_loss(&o.pooled, &t_out.pooled.detach(), &pairs, &w)
            .unwrap()
            .total
    };
    let grads = loss(&s).backward().unwrap();
    let named = s.named_vars().to_vec();
    let mut checked = 0;
    for (name, var) in &named {
        if name.starts_with("embeddings.") {
            assert!(grads.get(var).is_none(), "{name} is frozen");
            continue;
        }
        let g: Vec<f32> = grads
            .get(var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let v0: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        // a few entries of every variable, the largest gradients among them
        for i in [0, v0.len() / 3, v0.len() - 1] {
            let eps = 1e-2f32;
            let at = |delta: f32| {
                let mut v = v0.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
                    .unwrap();
                let l = f64::from(loss(&s).to_scalar::<f32>().unwrap());
                var.set(&Tensor::from_vec(v0.clone(), var.dims(), &Device::Cpu).unwrap())
                    .unwrap();
                l
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
            let got = f64::from(g[i]);
            assert!(
                (got - fd).abs() <= 2e-3 + 0.05 * fd.abs(),
                "{name}[{i}]: autograd {got} vs finite difference {fd}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3 * 16, "checked {checked} entries");
}

#[test]
fn trained_embeddings_get_gradients_and_are_exported() {
    let spec = StudentSpec {
        train_embeddings: true,
        ..StudentSpec::default()
    };
    let s = TrainableEncoder::load(cfg(), &dense_mem(&tensors(5)), &spec, &Device::Cpu).unwrap();
    let pb = PaddedBatch::new(&batch(), &Device::Cpu).unwrap();
    let out = s.forward(&pb, &[]).unwrap();
    let grads = out
        .pooled
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let (frozen, trained) = (student(5).trainable_vars().len(), s.trainable_vars().len());
    assert_eq!(
        trained,
        frozen + 5,
        "word, position, type tables and their LayerNorm"
    );
    for (name, var) in s.named_vars() {
        if name.starts_with("embeddings.") {
            assert!(grads.get(var).is_some(), "{name} has no gradient");
        }
    }
    let exported = s.export().unwrap();
    assert!(
        exported
            .iter()
            .any(|(n, _, _)| n == "embeddings.word_embeddings.weight")
    );
    assert!(
        !student(5)
            .export()
            .unwrap()
            .iter()
            .any(|(n, _, _)| n.starts_with("embeddings."))
    );
}
