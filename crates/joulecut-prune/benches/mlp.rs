//! LeNet-300-100 (784-300-100-10, ReLU) inference on the CPU, three ways, side by side:
//! * `dense`: candle_nn::Linear (gemm with its AVX-512 kernels);
//! * `sparse90`: 90% global magnitude pruning, every layer a `SparseLinear` (CSR kernel);
//! * `rows50`: 50% of the hidden neurons removed by structured pruning + compaction (784-150-50-10),
//!   candle_nn::Linear.
//!
//! Groups: `mlp_batch1/cpu` (latency of one sample) and `mlp_batch256/cpu` (throughput in samples).
//! Medians are in `target/criterion/<group>/<name>/new/estimates.json`.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use candle_core::{Device, Module, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use joulecut_prune::{
    Chain, F32Tensor, Granularity, PruneSpec, Scope, Selection, SparseLinear, compact,
    prune_tensors,
};
use joulecut_testkit::{XorShift64, mlp_params};

const WIDTHS: [usize; 4] = [784, 300, 100, 10];

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

const NAMES: [&str; 3] = ["fc1", "fc2", "fc3"];

struct Mlp<L: Module>(Vec<L>);

impl<L: Module> Module for Mlp<L> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in self.0.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < self.0.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

fn dense(m: &BTreeMap<String, F32Tensor>) -> Mlp<candle_nn::Linear> {
    let dev = Device::Cpu;
    Mlp(NAMES
        .iter()
        .map(|n| {
            let w = m[&format!("{n}.weight")].to_candle(&dev).unwrap();
            let b = m[&format!("{n}.bias")].to_candle(&dev).unwrap();
            candle_nn::Linear::new(w, Some(b))
        })
        .collect())
}

fn sparse(m: &BTreeMap<String, F32Tensor>) -> Mlp<SparseLinear> {
    let dev = Device::Cpu;
    Mlp(NAMES
        .iter()
        .map(|n| {
            let w = m[&format!("{n}.weight")].to_candle(&dev).unwrap();
            let b = m[&format!("{n}.bias")].to_candle(&dev).unwrap();
            SparseLinear::from_tensors(n, &w, Some(&b)).unwrap()
        })
        .collect())
}

fn models() -> (
    Mlp<candle_nn::Linear>,
    Mlp<SparseLinear>,
    Mlp<candle_nn::Linear>,
) {
    let base = lenet();
    let mut s90 = base.clone();
    prune_tensors(&mut s90, &PruneSpec::new(0.9).scope(Scope::Global)).unwrap();
    let mut r50 = base.clone();
    let spec = PruneSpec::new(0.5)
        .granularity(Granularity::Rows)
        .selection(Selection::default().exclude("fc3.*"));
    prune_tensors(&mut r50, &spec).unwrap();
    let c = compact(&r50, &Chain::from_prefixes(&NAMES, &r50)).unwrap();
    assert_eq!(c.widths, [150, 50, 10]);
    // The three models agree with their dense, masked references.
    let x = Tensor::from_slice(&rand_vec(4 * 784, 5, 1.0), (4, 784), &Device::Cpu).unwrap();
    let diff = |a: &Tensor, b: &Tensor| {
        a.sub(b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(
        diff(
            &dense(&s90).forward(&x).unwrap(),
            &sparse(&s90).forward(&x).unwrap()
        ) < 1e-4
    );
    assert!(
        diff(
            &dense(&r50).forward(&x).unwrap(),
            &dense(&c.tensors).forward(&x).unwrap()
        ) < 1e-4
    );
    (dense(&base), sparse(&s90), dense(&c.tensors))
}

fn bench(c: &mut Criterion) {
    let (d, s, r) = models();
    eprintln!(
        "sparse kernel: {}; rayon threads: {}",
        joulecut_prune::simd_level(),
        rayon::current_num_threads()
    );
    for batch in [1usize, 256] {
        let mut g = c.benchmark_group(format!("mlp_batch{batch}/cpu"));
        g.throughput(Throughput::Elements(batch as u64));
        let x = Tensor::from_slice(&rand_vec(batch * 784, 42, 1.0), (batch, 784), &Device::Cpu)
            .unwrap();
        g.bench_function("dense", |b| {
            b.iter(|| black_box(d.forward(black_box(&x)).unwrap()))
        });
        g.bench_function("sparse90", |b| {
            b.iter(|| black_box(s.forward(black_box(&x)).unwrap()))
        });
        g.bench_function("rows50", |b| {
            b.iter(|| black_box(r.forward(black_box(&x)).unwrap()))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(40).warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
