//! End to end: one training step of LeNet-300-100 and LeNet-5 at batch 128 on the CPU, as
//! `joulecut train` runs it — the model from `joulecut-models` (PyTorch init), the harness's
//! cross-entropy objective, joulecut-ops' Adam with `joulecut train`'s defaults, a batch gathered
//! by index from generated data (`joulecut_harness::data::synthetic`). The allocator is tuned as
//! the binary tunes it. Kernel-level training benches live in `crates/joulecut-ops/benches`.
//!
//! `cargo bench --bench train_step`

use std::hint::black_box;

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use joulecut::harness::{CrossEntropy, Objective, TrainConfig, data};
use joulecut::models::{Model, ModelConfig, init_varmap};
use joulecut::ops::optim::{Adam, AdamConfig};

/// Samples per step (`joulecut train`'s default).
const BATCH: usize = 128;
/// Batches of generated data the steps cycle through.
const BATCHES: usize = 8;

fn bench_arch(c: &mut Criterion, arch: &str) {
    let dev = Device::Cpu;
    let cfg = ModelConfig::parse(arch).unwrap();
    let splits = data::synthetic(BATCH * BATCHES, 1, cfg.input_dim(), cfg.classes(), 0);
    let (xs, ys) = splits.train.tensors(&dev).unwrap();
    let vm = init_varmap(&cfg, 0, &dev).unwrap();
    let model = Model::from_varmap(&cfg, &vm).unwrap();
    let tc = TrainConfig::default();
    let adam = AdamConfig {
        lr: tc.lr,
        weight_decay: tc.weight_decay,
        ..Default::default()
    };
    let mut opt = Adam::new(vm.all_vars(), adam).unwrap();
    // A fixed shuffle: the step gathers scattered rows, as the training loop does.
    let order: Vec<u32> = (0..(BATCH * BATCHES) as u32)
        .map(|i| (i * 389) % (BATCH * BATCHES) as u32)
        .collect();
    let mut next = 0;

    let mut g = c.benchmark_group(format!("cpu/train_step/{arch}"));
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(format!("b{BATCH}"), |b| {
        b.iter(|| {
            let chunk = &order[next * BATCH..(next + 1) * BATCH];
            next = (next + 1) % BATCHES;
            let idx = Tensor::from_slice(chunk, BATCH, &dev).unwrap();
            let x = xs.index_select(&idx, 0).unwrap();
            let y = ys.index_select(&idx, 0).unwrap();
            let (loss, _) = CrossEntropy.loss(&model, &x, &y, chunk).unwrap();
            opt.backward_step(&loss).unwrap();
            black_box(loss)
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    joulecut::ops::tune_allocator();
    bench_arch(c, "lenet-300-100");
    bench_arch(c, "lenet5");
}

/// Criterion's generated entry point (the macro writes an undocumented `pub fn`).
#[allow(missing_docs)]
mod entry {
    use super::*;

    criterion_group!(benches, bench);
}
criterion_main!(entry::benches);
