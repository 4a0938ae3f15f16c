//! Whole training steps at batch 128 on the CPU: LeNet-300-100 (784-300-100-10)
//! and LeNet-5, plain candle (candle_nn conv2d/max_pool2d/cross_entropy/AdamW)
//! against the same model on joulecut's ops and fused Adam. Each model is
//! also timed by phase (batching, forward+loss, forward+loss+backward, full
//! step) — the profile in `docs/PERFORMANCE.md` is the difference of these.
//! Also MLP f32 inference at batch 256 and 1.
//!
//! `cargo bench -p joulecut-ops --bench train_step`

use std::hint::black_box;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2d, Linear, Optimizer, VarBuilder, VarMap};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 128;
/// Samples in the synthetic in-memory dataset the batches are cut from.
const DATA: usize = 2048;

#[derive(Clone, Copy, PartialEq)]
enum Arch {
    Mlp,
    LeNet5,
}

/// A small model whose forward pass runs on plain candle or on joulecut's ops.
struct Net {
    arch: Arch,
    fast: bool,
    convs: Vec<Conv2d>,
    fcs: Vec<Linear>,
}

impl Net {
    fn new(arch: Arch, fast: bool, vb: VarBuilder) -> Result<Self> {
        let (convs, dims) = match arch {
            Arch::Mlp => (vec![], vec![784, 300, 100, 10]),
            Arch::LeNet5 => {
                let pad2 = candle_nn::Conv2dConfig {
                    padding: 2,
                    ..Default::default()
                };
                let c1 = candle_nn::conv2d(1, 6, 5, pad2, vb.pp("conv1"))?;
                let c2 = candle_nn::conv2d(6, 16, 5, Default::default(), vb.pp("conv2"))?;
                (vec![c1, c2], vec![400, 120, 84, 10])
            }
        };
        let fcs = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| candle_nn::linear(d[0], d[1], vb.pp(format!("fc{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            arch,
            fast,
            convs,
            fcs,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        if self.arch == Arch::LeNet5 {
            x = x.reshape(((), 1, 28, 28))?;
            for (conv, pad) in self.convs.iter().zip([2, 0]) {
                x = if self.fast {
                    let y = joulecut_ops::conv2d_relu(&x, conv.weight(), conv.bias(), pad)?;
                    joulecut_ops::max_pool2d(&y, 2)?
                } else {
                    conv.forward(&x)?.relu()?.max_pool2d(2)?
                };
            }
            x = x.flatten_from(1)?;
        }
        let last = self.fcs.len() - 1;
        for (i, fc) in self.fcs.iter().enumerate() {
            x = fc.forward(&x)?;
            if i < last {
                x = x.relu()?;
            }
        }
        Ok(x)
    }

    fn loss(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let logits = self.forward(x)?;
        if self.fast {
            joulecut_ops::cross_entropy(&logits, t)
        } else {
            candle_nn::loss::cross_entropy(&logits, t)
        }
    }
}

/// Adam with PyTorch's defaults: candle's AdamW with zero decay, or joulecut's fused Adam.
enum Opt {
    Candle(candle_nn::AdamW),
    Fused(joulecut_ops::optim::Adam),
}

impl Opt {
    fn new(fast: bool, varmap: &VarMap) -> Result<Self> {
        Ok(if fast {
            Opt::Fused(joulecut_ops::optim::Adam::new(
                varmap.all_vars(),
                Default::default(),
            )?)
        } else {
            let cfg = candle_nn::ParamsAdamW {
                lr: 1e-3,
                weight_decay: 0.,
                ..Default::default()
            };
            Opt::Candle(candle_nn::AdamW::new(varmap.all_vars(), cfg)?)
        })
    }

    fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        match self {
            Opt::Candle(o) => o.backward_step(loss),
            Opt::Fused(o) => o.backward_step(loss),
        }
    }
}

/// The whole dataset as one tensor; a batch is a zero-copy `narrow` of it.
struct Data {
    x: Tensor,
    y: Tensor,
    next: usize,
}

impl Data {
    fn new() -> Self {
        let x = Tensor::randn(0f32, 1., (DATA, 784), &Device::Cpu).unwrap();
        let y: Vec<u32> = (0..DATA as u32).map(|i| i % 10).collect();
        let y = Tensor::from_vec(y, DATA, &Device::Cpu).unwrap();
        Self { x, y, next: 0 }
    }

    fn batch(&mut self) -> (Tensor, Tensor) {
        let i = self.next;
        self.next = (self.next + BATCH) % (DATA - BATCH + 1);
        (
            self.x.narrow(0, i, BATCH).unwrap(),
            self.y.narrow(0, i, BATCH).unwrap(),
        )
    }
}

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
    let net = Net::new(Arch::Mlp, true, vb).unwrap();
    for batch in [256usize, 1] {
        let mut g = c.benchmark_group(format!("cpu/infer/mlp/b{batch}"));
        g.throughput(Throughput::Elements(batch as u64));
        let x = Tensor::randn(0f32, 1., (batch, 784), &Device::Cpu).unwrap();
        g.bench_function("candle/forward", |b| {
            b.iter(|| black_box(net.forward(&x).unwrap()))
        });
        g.finish();
    }
}

fn config() -> Criterion {
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
