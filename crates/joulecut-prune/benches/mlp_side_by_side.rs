//! The three LeNet-300-100 variants of `benches/mlp.rs` (dense, 90%-sparse CSR, 50%-rows compacted),
//! timed *interleaved*: each round runs every variant once, so load from other processes on a shared
//! machine hits all of them alike and the ratios stay meaningful. Prints medians and ratios.
//!
//! `cargo bench -p joulecut-prune --bench mlp_side_by_side [-- ROUNDS]`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use candle_core::{Device, Module, Tensor};
use joulecut_prune::{
    Chain, F32Tensor, Granularity, PruneSpec, Scope, Selection, SparseLinear, compact,
    prune_tensors,
};
use joulecut_testkit::{XorShift64, mlp_params};

const WIDTHS: [usize; 4] = [784, 300, 100, 10];
const NAMES: [&str; 3] = ["fc1", "fc2", "fc3"];

fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    XorShift64::from_state(seed).signed_vec(n, scale)
}

/// LeNet-300-100 with random weights (see `joulecut_testkit::mlp_params`).
fn lenet() -> BTreeMap<String, F32Tensor> {
    mlp_params(&WIDTHS)
        .into_iter()
        .map(|(n, shape, v)| (n, F32Tensor::new(shape, v).unwrap()))
        .collect()
}

fn layers<L>(m: &BTreeMap<String, F32Tensor>, f: impl Fn(&str, Tensor, Tensor) -> L) -> Vec<L> {
    NAMES
        .iter()
        .map(|n| {
            let w = m[&format!("{n}.weight")].to_candle(&Device::Cpu).unwrap();
            let b = m[&format!("{n}.bias")].to_candle(&Device::Cpu).unwrap();
            f(n, w, b)
        })
        .collect()
}

fn forward<L: Module>(layers: &[L], x: &Tensor) -> Tensor {
    let mut h = x.clone();
    for (i, l) in layers.iter().enumerate() {
        h = l.forward(&h).unwrap();
        if i + 1 < layers.len() {
            h = h.relu().unwrap();
        }
    }
    h
}

/// The sparse MLP on host slices: the kernels without candle's per-op overhead.
fn forward_slices(layers: &[SparseLinear], x: &[f32], batch: usize) -> Vec<f32> {
    let mut h = x.to_vec();
    for (i, l) in layers.iter().enumerate() {
        h = l.forward_slice(&h, batch);
        if i + 1 < layers.len() {
            h.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
    h
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let base = lenet();
    let mut s90 = base.clone();
    prune_tensors(&mut s90, &PruneSpec::new(0.9).scope(Scope::Global)).unwrap();
    let mut r50 = base.clone();
    let sel = Selection::default().exclude("fc3.*");
    let spec = PruneSpec::new(0.5)
        .granularity(Granularity::Rows)
        .selection(sel);
    prune_tensors(&mut r50, &spec).unwrap();
    let c = compact(&r50, &Chain::from_prefixes(&NAMES, &r50)).unwrap();
    let linear = |_: &str, w, b| candle_nn::Linear::new(w, Some(b));
    let dense = layers(&base, linear);
    let sparse = layers(&s90, |n, w, b| {
        SparseLinear::from_tensors(n, &w, Some(&b)).unwrap()
    });
    let rows = layers(&c.tensors, linear);
    println!(
        "kernel {}, rayon threads {}, {rounds} interleaved rounds",
        joulecut_prune::simd_level(),
        rayon::current_num_threads()
    );
    for batch in [1usize, 256] {
        let x = Tensor::from_slice(&rand_vec(batch * 784, 42, 1.0), (batch, 784), &Device::Cpu)
            .unwrap();
        let inner = if batch == 1 { 20 } else { 1 };
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for round in 0..rounds + rounds / 10 {
            let time = |f: &dyn Fn() -> Tensor| {
                let t0 = Instant::now();
                for _ in 0..inner {
                    black_box(f());
                }
                t0.elapsed().as_secs_f64() / inner as f64
            };
            let d = time(&|| forward(&dense, black_box(&x)));
            let s = time(&|| forward(&sparse, black_box(&x)));
            let r = time(&|| forward(&rows, black_box(&x)));
            let t0 = Instant::now();
            for _ in 0..inner {
                black_box(forward_slices(&sparse, black_box(&xs), batch));
            }
            let k = t0.elapsed().as_secs_f64() / inner as f64;
            if round >= rounds / 10 {
                t[0].push(d);
                t[1].push(s);
                t[2].push(r);
                t[3].push(k);
            }
        }
        let [d, s, r, k] = t.map(|mut v| median(&mut v));
        println!(
            "batch {batch:>3}: dense {:>9.1} us | sparse90 {:>9.1} us ({:.2}x) | rows50 {:>9.1} us ({:.2}x) | \
             samples/s dense {:.0} sparse90 {:.0} rows50 {:.0}",
            d * 1e6,
            s * 1e6,
            d / s,
            r * 1e6,
            d / r,
            batch as f64 / d,
            batch as f64 / s,
            batch as f64 / r
        );
        println!(
            "           sparse90 kernels alone (host slices, no candle tensors): {:>9.1} us ({:.2}x dense)",
            k * 1e6,
            d / k
        );
    }
}
