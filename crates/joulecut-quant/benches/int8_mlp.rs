//! LeNet-300-100 (784-300-100-10, ReLU) forward: int8 (`Int8Linear`, dynamic per-row activations,
//! per-channel weights) vs candle f32 (`candle_nn::Linear`, gemm with x86-v4), at batch 256 and 1.
//! Also the raw int8 GEMM of the first layer, per available kernel.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use joulecut_quant::gemm::{PackedWeights, gemm_i32};
use joulecut_quant::{Int8Config, Int8Linear, Kernel};

const WIDTHS: [usize; 4] = [784, 300, 100, 10];

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

struct Mlp {
    f32_layers: Vec<Linear>,
    int8_layers: Vec<Int8Linear>,
}

fn mlp() -> Mlp {
    let mut f32_layers = Vec::new();
    let mut int8_layers = Vec::new();
    for (i, w) in WIDTHS.windows(2).enumerate() {
        let (inp, out) = (w[0], w[1]);
        let wv = values(inp * out, i as u64 + 1, (6.0 / (inp + out) as f32).sqrt());
        let bv = values(out, i as u64 + 100, 0.05);
        let wt = Tensor::from_vec(wv.clone(), (out, inp), &Device::Cpu).unwrap();
        let bt = Tensor::from_vec(bv.clone(), out, &Device::Cpu).unwrap();
        f32_layers.push(Linear::new(wt, Some(bt)));
        let relu = i + 2 < WIDTHS.len();
        int8_layers.push(
            Int8Linear::from_f32(
                &format!("fc{i}"),
                &wv,
                out,
                inp,
                Some(&bv),
                &Int8Config::default(),
            )
            .unwrap()
            .with_relu(relu),
        );
    }
    Mlp {
        f32_layers,
        int8_layers,
    }
}

fn forward_f32(m: &Mlp, x: &Tensor) -> Tensor {
    let mut h = x.clone();
    let last = m.f32_layers.len() - 1;
    for (i, l) in m.f32_layers.iter().enumerate() {
        h = l.forward(&h).unwrap();
        if i < last {
            h = h.relu().unwrap();
        }
    }
    h
}

fn forward_int8(m: &Mlp, x: &Tensor) -> Tensor {
    let mut h = x.clone();
    for l in &m.int8_layers {
        h = l.forward(&h).unwrap();
    }
    h
}

fn bench_mlp(c: &mut Criterion) {
    let model = mlp();
    for batch in [256usize, 1] {
        let x = Tensor::from_vec(values(batch * 784, 7, 1.5), (batch, 784), &Device::Cpu).unwrap();
        let mut g = c.benchmark_group(format!("mlp_784_300_100_10/cpu/batch{batch}"));
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function("f32_candle", |b| b.iter(|| forward_f32(&model, &x)));
        g.bench_function(format!("int8_{}", Kernel::detect()), |b| {
            b.iter(|| forward_int8(&model, &x))
        });
        g.finish();
    }
    // Sanity: the int8 output is close to f32 (printed, not asserted, in the bench).
    let x = Tensor::from_vec(values(256 * 784, 7, 1.5), (256, 784), &Device::Cpu).unwrap();
    let a = forward_f32(&model, &x);
    let b = forward_int8(&model, &x);
    let err = (a.clone() - b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
        / a.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
    eprintln!("int8 vs f32 relative L2 error of the MLP output: {err:.5}");
}

fn bench_gemm(c: &mut Criterion) {
    let (m, n, k) = (256usize, 300usize, 784usize);
    let a: Vec<i8> = values(m * k, 3, 127.0).iter().map(|v| *v as i8).collect();
    let w: Vec<i8> = values(n * k, 4, 127.0).iter().map(|v| *v as i8).collect();
    let packed = PackedWeights::pack(&w, n, k).unwrap();
    let mut out = vec![0i32; m * n];
    let mut g = c.benchmark_group("gemm_i8/cpu/256x300x784");
    g.throughput(Throughput::Elements((m * n * k) as u64));
    for kernel in Kernel::available()
        .into_iter()
        .filter(|k| *k != Kernel::Reference)
    {
        g.bench_with_input(
            BenchmarkId::from_parameter(kernel),
            &kernel,
            |b, &kernel| b.iter(|| gemm_i32(kernel, &a, m, &packed, &mut out)),
        );
    }
    g.finish();
}

criterion_group!(benches, bench_mlp, bench_gemm);
criterion_main!(benches);
