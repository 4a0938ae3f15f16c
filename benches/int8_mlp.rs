//! LeNet-300-100 (784-300-100-10, ReLU) forward, int8 against joulecut's f32, at batch 256 and 1.
//!
//! Every arm runs through `joulecut_models::Layer::forward_act`, the path `joulecut eval` takes:
//! * `f32`: dense layers (joulecut-ops' fused `x·Wᵀ + b` + ReLU on gemm);
//! * `int8`: [`Int8Linear`] (per-channel weights, dynamic 8-bit per-row activations) built as the
//!   harness's `RealKernels` builds it: a following ReLU runs in the GEMM epilogue
//!   (`Layer::with_fused_relu`);
//! * `int8_u7`: the same with 7-bit unsigned dynamic activations (the AVX2 kernel's sign-free loop);
//! * `int8_u6`: 6-bit unsigned dynamic activations (the AVX2 kernel's paired loop).
//!
//! The allocator is tuned as the `joulecut` binary tunes it. After the criterion groups, an interleaved run (f32 and int8 alternating, best of rounds: robust
//! on a shared, loaded machine) prints samples/s and the int8 / f32 ratios side by side.
//! Then the raw int8 GEMM of the first layer, per available kernel.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::Instant;

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use joulecut_models::{Layer, LayerPath};
use joulecut_quant::gemm::{ActivationQuant, PackedWeights, gemm_i32};
use joulecut_quant::{Int8Config, Int8Kernel, Int8Linear};

const WIDTHS: [usize; 4] = [784, 300, 100, 10];

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    joulecut_testkit::XorShift64::new(seed).signed_vec(n, scale)
}

/// Standardised-image-like input: mostly the background value, some pixels up to ~2.
fn input(batch: usize) -> Tensor {
    let v: Vec<f32> = values(batch * 784, 7, 1.0)
        .into_iter()
        .map(|u| if u < 0.0 { -0.81 } else { -0.81 + 2.83 * u })
        .collect();
    Tensor::from_vec(v, (batch, 784), &Device::Cpu).unwrap()
}

/// One network as the model runs it.
struct Net {
    layers: Vec<Layer>,
}

impl Net {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward_act(&h, i < last).unwrap();
        }
        h
    }
}

#[derive(Clone, Copy)]
enum Arm {
    F32,
    Int8,
    Int8U7,
    Int8U6,
}

impl Arm {
    const ALL: [Arm; 4] = [Arm::F32, Arm::Int8, Arm::Int8U7, Arm::Int8U6];

    fn name(self) -> String {
        let k = Int8Kernel::detect();
        match self {
            Arm::F32 => "f32".into(),
            Arm::Int8 => format!("int8_{k}"),
            Arm::Int8U7 => format!("int8_{k}_u7"),
            Arm::Int8U6 => format!("int8_{k}_u6"),
        }
    }
}

fn net(arm: Arm) -> Net {
    let mut layers = Vec::new();
    for (i, w) in WIDTHS.windows(2).enumerate() {
        let (inp, out) = (w[0], w[1]);
        let name = format!("fc{}", i + 1);
        let wv = values(inp * out, i as u64 + 1, (6.0 / (inp + out) as f32).sqrt());
        let bv = values(out, i as u64 + 100, 0.05);
        let mode = match arm {
            Arm::Int8U7 => ActivationQuant::DynamicU7,
            Arm::Int8U6 => ActivationQuant::DynamicU6,
            _ => ActivationQuant::Dynamic,
        };
        let int8 = Int8Linear::from_f32(&name, &wv, out, inp, Some(&bv), &Int8Config::default())
            .unwrap()
            .with_activation_quant(mode);
        layers.push(match arm {
            Arm::F32 => Layer::dense_linear(
                &name,
                Tensor::from_vec(wv.clone(), (out, inp), &Device::Cpu).unwrap(),
                Some(Tensor::from_vec(bv.clone(), out, &Device::Cpu).unwrap()),
                LayerPath::Dense,
            ),
            Arm::Int8 | Arm::Int8U7 | Arm::Int8U6 => {
                let relu = Box::new(int8.clone().with_relu(true));
                Layer::new(&name, LayerPath::Int8, Box::new(int8)).with_fused_relu(relu)
            }
        });
    }
    Net { layers }
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let d: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    (d / a.iter().map(|x| x * x).sum::<f32>()).sqrt()
}

fn bench_mlp(c: &mut Criterion) {
    // As `joulecut` does at start-up: recycle large tensor buffers instead of page-faulting them in.
    joulecut_ops::tune_allocator();
    let nets: Vec<(Arm, Net)> = Arm::ALL.into_iter().map(|a| (a, net(a))).collect();
    for batch in [256usize, 1] {
        let x = input(batch);
        let mut g = c.benchmark_group(format!("mlp_784_300_100_10/cpu/batch{batch}"));
        g.throughput(Throughput::Elements(batch as u64));
        for (arm, n) in &nets {
            g.bench_function(arm.name(), |b| b.iter(|| n.forward(&x)));
        }
        g.finish();
    }
    side_by_side(&nets);
}

/// Alternates the arms for a few rounds and keeps each arm's best round: on a shared machine the
/// best of interleaved rounds compares like with like far better than back-to-back groups.
fn side_by_side(nets: &[(Arm, Net)]) {
    let x256 = input(256);
    let reference = nets[0].1.forward(&x256);
    for (arm, n) in &nets[1..] {
        eprintln!(
            "{}: relative L2 error of the output against f32: {:.5}",
            arm.name(),
            rel_l2(&reference, &n.forward(&x256))
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "side by side, best of 15 interleaved rounds, {} rayon threads, load average {}",
        rayon::current_num_threads(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (batch, iters) in [(256usize, 20), (1, 2000)] {
        let x = input(batch);
        let mut best = vec![f64::MAX; nets.len()];
        for _ in 0..15 {
            for (i, (_, n)) in nets.iter().enumerate() {
                let t = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(n.forward(&x));
                }
                best[i] = best[i].min(t.elapsed().as_secs_f64() / iters as f64);
            }
        }
        for (i, (arm, _)) in nets.iter().enumerate() {
            eprintln!(
                "  batch {batch:>3} {:<28} {:>9.1} us/call {:>11.0} samples/s   {:.2}x f32",
                arm.name(),
                best[i] * 1e6,
                batch as f64 / best[i],
                best[0] / best[i]
            );
        }
    }
}

fn bench_gemm(c: &mut Criterion) {
    let (m, n, k) = (256usize, 300usize, 784usize);
    let a: Vec<i8> = values(m * k, 3, 127.0).iter().map(|v| *v as i8).collect();
    let w: Vec<i8> = values(n * k, 4, 127.0).iter().map(|v| *v as i8).collect();
    let packed = PackedWeights::pack(&w, n, k).unwrap();
    let mut out = vec![0i32; m * n];
    let mut g = c.benchmark_group("gemm_i8/cpu/256x300x784");
    g.throughput(Throughput::Elements((m * n * k) as u64));
    for kernel in Int8Kernel::available()
        .into_iter()
        .filter(|k| *k != Int8Kernel::Reference)
    {
        g.bench_with_input(
            BenchmarkId::from_parameter(kernel),
            &kernel,
            |b, &kernel| b.iter(|| gemm_i32(kernel, &a, m, &packed, &mut out)),
        );
    }
    // Non-negative activations (0..=127): the AVX2 kernel's sign-free loop.
    let a7: Vec<i8> = a.iter().map(|v| v.unsigned_abs().min(127) as i8).collect();
    if Int8Kernel::Avx2.is_available() {
        g.bench_function("avx2_non_negative", |b| {
            b.iter(|| gemm_i32(Int8Kernel::Avx2, &a7, m, &packed, &mut out))
        });
        // 0..=63: the paired loop.
        let a6: Vec<i8> = a7.iter().map(|v| v >> 1).collect();
        g.bench_function("avx2_six_bit", |b| {
            b.iter(|| gemm_i32(Int8Kernel::Avx2, &a6, m, &packed, &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_mlp, bench_gemm);
criterion_main!(benches);
