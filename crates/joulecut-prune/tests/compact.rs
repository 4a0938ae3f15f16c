//! Compacted and masked models compute the same outputs (MLP and conv nets).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use joulecut_prune::{Chain, F32Tensor, Granularity, PruneSpec, Selection, compact, prune_tensors};
use joulecut_testkit::XorShift64;
use proptest::prelude::*;

/// The acceptance bound on the outputs of the masked vs the compacted model.
const MAX_ABS_DIFF: f32 = 1e-5;

fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    XorShift64::from_state(seed).signed_vec(n, scale)
}

fn t(name: &str, m: &BTreeMap<String, F32Tensor>) -> Tensor {
    m[name].to_candle(&Device::Cpu).unwrap()
}

fn mlp_forward(m: &BTreeMap<String, F32Tensor>, layers: usize, x: &Tensor) -> Vec<f32> {
    let mut h = x.clone();
    for i in 0..layers {
        let w = t(&format!("fc{i}.weight"), m);
        h = h
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&t(&format!("fc{i}.bias"), m))
            .unwrap();
        if i + 1 < layers {
            h = h.relu().unwrap();
        }
    }
    h.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn mlp(widths: &[usize], seed: u64) -> BTreeMap<String, F32Tensor> {
    let mut m = BTreeMap::new();
    for i in 0..widths.len() - 1 {
        let (inp, out) = (widths[i], widths[i + 1]);
        let w = rand_vec(out * inp, seed + i as u64, 0.5);
        m.insert(
            format!("fc{i}.weight"),
            F32Tensor::new(vec![out, inp], w).unwrap(),
        );
        m.insert(
            format!("fc{i}.bias"),
            F32Tensor::new(vec![out], rand_vec(out, seed + 100 + i as u64, 0.1)).unwrap(),
        );
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn compacted_mlp_equals_masked(
        widths in prop::collection::vec(1usize..24, 3..6), s in 0.0f64..0.95, seed in 1u64..1000,
        unstructured in any::<bool>(), batch in 1usize..9,
    ) {
        let layers = widths.len() - 1;
        let mut m = mlp(&widths, seed);
        let last = format!("fc{}.*", layers - 1);
        // Rows of every hidden layer; or unstructured (which may leave whole columns zero).
        let g = if unstructured { Granularity::Unstructured } else { Granularity::Rows };
        let spec = PruneSpec::new(s).granularity(g).selection(Selection::default().exclude(last));
        prune_tensors(&mut m, &spec).unwrap();
        let prefixes: Vec<String> = (0..layers).map(|i| format!("fc{i}")).collect();
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let c = compact(&m, &Chain::from_prefixes(&prefixes, &m)).unwrap();
        prop_assert_eq!(c.widths[layers - 1], widths[layers]);
        if !unstructured {
            for i in 0..layers - 1 {
                let rows = widths[i + 1];
                let pruned = ((s * rows as f64).round() as usize).min(rows);
                prop_assert!(c.widths[i] <= (rows - pruned).max(1), "layer {i}: {:?}", c.widths);
            }
        }
        let x = Tensor::from_slice(&rand_vec(batch * widths[0], seed + 7, 1.0), (batch, widths[0]), &Device::Cpu).unwrap();
        let d = max_diff(&mlp_forward(&m, layers, &x), &mlp_forward(&c.tensors, layers, &x));
        prop_assert!(d <= MAX_ABS_DIFF, "max abs diff {d}");
    }
}

/// conv(1→c1, 3x3, pad 1) → relu → maxpool 2 → conv(c1→c2, 3x3, pad 1) → relu → maxpool 2 → flatten →
/// fc(c2*2*2 → h) → relu → fc(h → 3), on 8x8 inputs.
fn convnet_forward(m: &BTreeMap<String, F32Tensor>, x: &Tensor) -> Vec<f32> {
    let conv = |h: &Tensor, name: &str| {
        let b = t(&format!("{name}.bias"), m);
        let c = b.dims()[0];
        h.conv2d(&t(&format!("{name}.weight"), m), 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap()
            .max_pool2d(2)
            .unwrap()
    };
    let h = conv(&conv(x, "conv1"), "conv2");
    let h = h.flatten_from(1).unwrap();
    let fc = |h: &Tensor, name: &str| {
        h.matmul(&t(&format!("{name}.weight"), m).t().unwrap())
            .unwrap()
            .broadcast_add(&t(&format!("{name}.bias"), m))
            .unwrap()
    };
    let h = fc(&h, "fc1").relu().unwrap();
    fc(&h, "fc2").flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn compacted_convnet_equals_masked() {
    let (c1, c2, h) = (6, 8, 12);
    let mut m = BTreeMap::new();
    let mut add = |name: &str, shape: Vec<usize>, seed: u64, scale: f32| {
        let n = shape.iter().product();
        m.insert(
            name.to_string(),
            F32Tensor::new(shape, rand_vec(n, seed, scale)).unwrap(),
        );
    };
    add("conv1.weight", vec![c1, 1, 3, 3], 1, 0.5);
    add("conv1.bias", vec![c1], 2, 0.1);
    add("conv2.weight", vec![c2, c1, 3, 3], 3, 0.3);
    add("conv2.bias", vec![c2], 4, 0.1);
    add("fc1.weight", vec![h, c2 * 4], 5, 0.3);
    add("fc1.bias", vec![h], 6, 0.1);
    add("fc2.weight", vec![3, h], 7, 0.3);
    add("fc2.bias", vec![3], 8, 0.1);
    let spec = PruneSpec::new(0.5)
        .granularity(Granularity::Channels)
        .selection(Selection::default().exclude("fc2.*"));
    prune_tensors(&mut m, &spec).unwrap();
    let chain = Chain::from_prefixes(&["conv1", "conv2", "fc1", "fc2"], &m);
    let c = compact(&m, &chain).unwrap();
    assert_eq!(c.widths, [3, 4, 6, 3]);
    assert_eq!(c.tensors["conv2.weight"].shape, [4, 3, 3, 3]);
    assert_eq!(c.tensors["fc1.weight"].shape, [6, 16]);
    let x = Tensor::from_slice(&rand_vec(2 * 64, 9, 1.0), (2, 1, 8, 8), &Device::Cpu).unwrap();
    let d = max_diff(&convnet_forward(&m, &x), &convnet_forward(&c.tensors, &x));
    assert!(d <= MAX_ABS_DIFF, "max abs diff {d}");
}

#[test]
fn a_chain_with_mismatched_layers_is_rejected() {
    let m = mlp(&[4, 5, 3], 1);
    let chain = Chain::from_prefixes(&["fc1", "fc0"], &m);
    let e = compact(&m, &chain).unwrap_err();
    assert!(
        e.is_bad_input() && e.to_string().contains("fc0.weight"),
        "{e}"
    );
}
