//! Kernel benchmarks on the CPU: joulecut's conv2d, max-pool, cross-entropy
//! and fused optimizers against candle's own ops, at LeNet-5 and MLP shapes.
//!
//! `cargo bench -p joulecut-ops --bench ops`; medians are quoted in
//! `docs/PERFORMANCE.md`.

use std::hint::black_box;

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1., shape, &Device::Cpu).unwrap()
}

/// LeNet-5's two convolutions: (name, in_c, out_c, size, padding).
const CONVS: [(&str, usize, usize, usize, usize); 2] =
    [("conv1", 1, 6, 28, 2), ("conv2", 6, 16, 14, 0)];

fn candle_conv(x: &Tensor, w: &Tensor, b: &Tensor, pad: usize) -> Result<Tensor> {
    x.conv2d(w, pad, 1, 1, 1)?
        .broadcast_add(&b.reshape((1, (), 1, 1))?)
}

fn bench_conv(c: &mut Criterion) {
    for (name, ic, oc, size, pad) in CONVS {
        for batch in [128usize, 1] {
            let mut g = c.benchmark_group(format!("cpu/conv/{name}/b{batch}"));
            g.throughput(Throughput::Elements(batch as u64));
            let x = randn(&[batch, ic, size, size]);
            // conv2's input is an activation, so it needs a gradient too.
            let xv = Var::from_tensor(&x).unwrap();
            let xin = if name == "conv2" {
                xv.as_tensor().clone()
            } else {
                x.clone()
            };
            let w = Var::from_tensor(&(randn(&[oc, ic, 5, 5]) * 0.1).unwrap()).unwrap();
            let b = Var::from_tensor(&randn(&[oc])).unwrap();
            g.bench_function("candle/fwd", |bn| {
                bn.iter(|| black_box(candle_conv(&x, &w, &b, pad).unwrap()))
            });
            g.bench_function("joulecut/fwd", |bn| {
                bn.iter(|| black_box(joulecut_ops::conv2d(&x, &w, Some(&b), pad).unwrap()))
            });
            g.bench_function("candle/fwd_bwd", |bn| {
                bn.iter(|| {
                    let y = candle_conv(&xin, &w, &b, pad).unwrap();
                    black_box(y.sum_all().unwrap().backward().unwrap())
                })
            });
            g.bench_function("joulecut/fwd_bwd", |bn| {
                bn.iter(|| {
                    let y = joulecut_ops::conv2d(&xin, &w, Some(&b), pad).unwrap();
                    black_box(y.sum_all().unwrap().backward().unwrap())
                })
            });
            g.bench_function("candle/fwd_relu_bwd", |bn| {
                bn.iter(|| {
                    let y = candle_conv(&xin, &w, &b, pad).unwrap().relu().unwrap();
                    black_box(y.sum_all().unwrap().backward().unwrap())
                })
            });
            g.bench_function("joulecut/fwd_relu_bwd", |bn| {
                bn.iter(|| {
                    let y = joulecut_ops::conv2d_relu(&xin, &w, Some(&b), pad).unwrap();
                    black_box(y.sum_all().unwrap().backward().unwrap())
                })
            });
            g.finish();
        }
    }
}

fn bench_pool(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/maxpool/6x28x28/b128");
    g.throughput(Throughput::Elements(128));
    let x = Var::from_tensor(&randn(&[128, 6, 28, 28])).unwrap();
    g.bench_function("candle/fwd", |b| {
        b.iter(|| black_box(x.max_pool2d(2).unwrap()))
    });
    g.bench_function("joulecut/fwd", |b| {
        b.iter(|| black_box(joulecut_ops::max_pool2d(&x, 2).unwrap()))
    });
    g.bench_function("candle/fwd_bwd", |b| {
        b.iter(|| {
            black_box(
                x.max_pool2d(2)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap(),
            )
        })
    });
    g.bench_function("joulecut/fwd_bwd", |b| {
        b.iter(|| {
            let y = joulecut_ops::max_pool2d(&x, 2).unwrap();
            black_box(y.sum_all().unwrap().backward().unwrap())
        })
    });
    g.finish();
}

fn bench_loss(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/cross_entropy/128x10");
    g.throughput(Throughput::Elements(128));
    let x = Var::from_tensor(&randn(&[128, 10])).unwrap();
    let t: Vec<u32> = (0..128).map(|i| i % 10).collect();
    let t = Tensor::new(t.as_slice(), &Device::Cpu).unwrap();
    g.bench_function("candle/fwd_bwd", |b| {
        b.iter(|| {
            black_box(
                candle_nn::loss::cross_entropy(&x, &t)
                    .unwrap()
                    .backward()
                    .unwrap(),
            )
        })
    });
    g.bench_function("joulecut/fwd_bwd", |b| {
        b.iter(|| {
            black_box(
                joulecut_ops::cross_entropy(&x, &t)
                    .unwrap()
                    .backward()
                    .unwrap(),
            )
        })
    });
    g.finish();
}

/// A VarMap with an MLP's parameters, and a gradient for each of them.
fn mlp_params(dims: &[usize]) -> (VarMap, candle_core::backprop::GradStore, usize) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let layers: Vec<_> = dims
        .windows(2)
        .enumerate()
        .map(|(i, d)| candle_nn::linear(d[0], d[1], vb.pp(format!("fc{i}"))).unwrap())
        .collect();
    let mut x = randn(&[4, dims[0]]);
    for l in &layers {
        x = l.forward(&x).unwrap();
    }
    let grads = x.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let n = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    (varmap, grads, n)
}

fn bench_optim(c: &mut Criterion) {
    for (name, dims) in [
        ("mlp266k", &[784, 300, 100, 10][..]),
        ("teacher2.4M", &[784, 1200, 1200, 10][..]),
    ] {
        let (varmap, grads, n) = mlp_params(dims);
        let mut g = c.benchmark_group(format!("cpu/optim/{name}"));
        g.throughput(Throughput::Elements(n as u64));
        let cfg = candle_nn::ParamsAdamW {
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut opt = candle_nn::AdamW::new(varmap.all_vars(), cfg).unwrap();
        g.bench_function("candle_adamw/step", |b| {
            b.iter(|| opt.step(&grads).unwrap())
        });
        let mut opt =
            joulecut_ops::optim::AdamW::new(varmap.all_vars(), Default::default()).unwrap();
        g.bench_function("joulecut_adamw/step", |b| {
            b.iter(|| opt.step(&grads).unwrap())
        });
        let mut opt =
            joulecut_ops::optim::Adam::new(varmap.all_vars(), Default::default()).unwrap();
        g.bench_function("joulecut_adam/step", |b| {
            b.iter(|| opt.step(&grads).unwrap())
        });
        let mut opt = candle_nn::SGD::new(varmap.all_vars(), 1e-3).unwrap();
        g.bench_function("candle_sgd/step", |b| b.iter(|| opt.step(&grads).unwrap()));
        let cfg = joulecut_ops::optim::SgdConfig {
            momentum: 0.9,
            ..Default::default()
        };
        let mut opt = joulecut_ops::optim::Sgd::new(varmap.all_vars(), cfg).unwrap();
        g.bench_function("joulecut_sgd_momentum/step", |b| {
            b.iter(|| opt.step(&grads).unwrap())
        });
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
}

/// Criterion's generated entry point (the macro writes an undocumented `pub fn`).
#[allow(missing_docs)]
mod entry {
    use super::*;

    criterion_group! {
        name = benches;
        config = config();
        targets = bench_conv, bench_pool, bench_loss, bench_optim
    }
}
criterion_main!(entry::benches);
