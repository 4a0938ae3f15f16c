//! Whole training steps at batch 128 on the CPU: LeNet-300-100 (784-300-100-10)
//! and LeNet-5, plain candle (candle_nn conv2d/max_pool2d/cross_entropy/AdamW)
//! against the same model on joulecut's ops and fused Adam. Each model is
//! also timed by phase (batching, forward+loss, forward+loss+backward, full
//! step) — the profile in `docs/PERFORMANCE.md` is the difference of these.
//! Also MLP f32 inference at batch 256 and 1. The C allocator is tuned with
//! `joulecut_ops::tune_allocator` for both variants.
//!
//! `cargo bench -p joulecut-ops --bench train_step`

use std::hint::black_box;

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{Arch, BATCH, Data, Net, Opt};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench_model(c: &mut Criterion, arch: Arch, name: &str) {
    let mut g = c.benchmark_group(format!("cpu/train/{name}/b{BATCH}"));
    g.throughput(Throughput::Elements(BATCH as u64));
    for fast in [false, true] {
        let tag = if fast { "joulecut" } else { "candle" };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = Net::new(arch, fast, vb).unwrap();
        let mut opt = Opt::new(fast, &varmap).unwrap();
        let mut data = Data::new();
        g.bench_function(format!("{tag}/batch"), |b| {
            b.iter(|| black_box(data.batch()))
        });
        g.bench_function(format!("{tag}/forward"), |b| {
            b.iter(|| {
                let (x, t) = data.batch();
                black_box(net.loss(&x, &t).unwrap())
            })
        });
        g.bench_function(format!("{tag}/forward_backward"), |b| {
            b.iter(|| {
                let (x, t) = data.batch();
                black_box(net.loss(&x, &t).unwrap().backward().unwrap())
            })
        });
        g.bench_function(format!("{tag}/step"), |b| {
            b.iter(|| {
                let (x, t) = data.batch();
                opt.backward_step(&net.loss(&x, &t).unwrap()).unwrap()
            })
        });
    }
    g.finish();
}

fn bench_train(c: &mut Criterion) {
    bench_model(c, Arch::Mlp, "mlp");
    bench_model(c, Arch::LeNet5, "lenet5");
}

fn bench_infer(c: &mut Criterion) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let plain = Net::new(Arch::Mlp, false, vb.clone()).unwrap();
    let fast = Net::new(Arch::Mlp, true, vb).unwrap();
    for batch in [256usize, 1] {
        let mut g = c.benchmark_group(format!("cpu/infer/mlp/b{batch}"));
        g.throughput(Throughput::Elements(batch as u64));
        let x = Tensor::randn(0f32, 1., (batch, 784), &Device::Cpu).unwrap();
        g.bench_function("candle/forward", |b| {
            b.iter(|| black_box(plain.forward(&x).unwrap()))
        });
        g.bench_function("joulecut/forward", |b| {
            b.iter(|| black_box(fast.forward(&x).unwrap()))
        });
        g.finish();
    }
}

fn config() -> Criterion {
    // Both variants run with the tuned allocator (see `joulecut_ops::tune_allocator`).
    joulecut_ops::tune_allocator();
    Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3))
}

/// Criterion's generated entry point (the macro writes an undocumented `pub fn`).
#[allow(missing_docs)]
mod entry {
    use super::*;

    criterion_group! {
        name = benches;
        config = config();
        targets = bench_train, bench_infer
    }
}
criterion_main!(entry::benches);
