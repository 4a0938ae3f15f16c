//! End to end: the forward pass of LeNet-300-100 on the CPU at batches 1, 2, 4, 8 and 256, for
//! every storage encoding — dense f32, f16, bf16, int8, 90 % packed sparse and 2:4 (stored dense;
//! the 2:4 kernel runs batches 1-2) — and of LeNet-5 in f32 and int8 (the
//! int8 convolutions against the f32 ones). Each checkpoint is written the way
//! `joulecut bench` writes its variants (the pipeline's typed storage steps through
//! `pipeline::encode`, the int8 activation grid in the metadata) and loaded the way `joulecut eval`
//! loads one (`Model::load` with `RealKernels::for_checkpoint`), so each encoding runs its real
//! kernel. Weights are PyTorch's init, not trained: speed does not depend on their values.
//!
//! `cargo bench --bench eval`

use std::hint::black_box;
use std::path::Path;

use candle_core::{Device, Module, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use joulecut::checkpoint::{Checkpoint, CheckpointWriter, meta};
use joulecut::harness::pipeline::{
    QuantTarget, Step, encode, int8_activations, prune_spec, varmap_params,
};
use joulecut::harness::{RealKernels, data};
use joulecut::models::{Model, ModelConfig, init_varmap};
use joulecut::prune::{Granularity, Scope};

const BATCHES: [usize; 5] = [1, 2, 4, 8, 256];
/// The sparse variant's global sparsity over the weights.
const SPARSITY: f64 = 0.9;

/// How a variant's weights are pruned first: none, 90 % unstructured (global), or 2:4.
type Pruning = Option<(f64, Granularity)>;

/// The encodings of `arch`, by bench name: how the weights are pruned first, and the storage steps.
fn encodings(arch: &str) -> Vec<(&'static str, Pruning, Vec<Step>)> {
    let quantize = |dtype| Step::Quantize {
        dtype,
        granularity: Default::default(),
        activations: None,
    };
    let mut all = vec![
        ("f32", None, vec![]),
        ("int8", None, vec![quantize(QuantTarget::Int8)]),
    ];
    if arch == "lenet-300-100" {
        let unstructured = Some((SPARSITY, Granularity::Unstructured));
        all.push(("f16", None, vec![quantize(QuantTarget::F16)]));
        all.push(("bf16", None, vec![quantize(QuantTarget::Bf16)]));
        all.push(("sparse90", unstructured, vec![Step::Pack]));
        all.push(("nm24", Some((0.5, Granularity::Nm { n: 2, m: 4 })), vec![]));
    }
    all
}

/// Writes `cfg`'s initial weights (pruned as `prune` says) with the `storage` steps to `path`, and
/// loads the file through the real kernels.
fn model(cfg: &ModelConfig, prune: Pruning, storage: &[Step], path: &Path) -> Model {
    let dev = Device::Cpu;
    let vm = init_varmap(cfg, 0, &dev).unwrap();
    if let Some((sparsity, granularity)) = prune {
        let scope = match granularity {
            Granularity::Nm { .. } => Scope::Layer,
            _ => Scope::Global,
        };
        let spec = prune_spec(sparsity, granularity, scope);
        joulecut::prune::prune_varmap(&vm, &spec).unwrap();
    }
    let mut w = CheckpointWriter::new();
    w.set_model_config(cfg.to_json());
    for (n, shape, v) in varmap_params(cfg, &vm).unwrap() {
        let t = encode(&n, shape, &v, storage).unwrap();
        w.insert(n, t);
    }
    if let Some(grid) = int8_activations(storage) {
        w.set_metadata(meta::INT8_ACTIVATIONS, grid.as_str());
    }
    w.write(path, &[]).unwrap();
    let ck = Checkpoint::open(path).unwrap();
    Model::load(&ck, cfg, &dev, &RealKernels::for_checkpoint(&ck).unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    joulecut::ops::tune_allocator();
    let dir = tempfile::tempdir().unwrap();
    for arch in ["lenet-300-100", "lenet5"] {
        let cfg = ModelConfig::parse(arch).unwrap();
        let max = *BATCHES.iter().max().unwrap();
        let splits = data::synthetic(max, 1, cfg.input_dim(), cfg.classes(), 0);
        let (xs, _) = splits.train.tensors(&Device::Cpu).unwrap();
        let mut g = c.benchmark_group(format!("cpu/eval/{arch}"));
        for (name, prune, storage) in encodings(arch) {
            let m = model(
                &cfg,
                prune,
                &storage,
                &dir.path().join(format!("{arch}-{name}.safetensors")),
            );
            for batch in BATCHES {
                let x: Tensor = xs.narrow(0, 0, batch).unwrap().contiguous().unwrap();
                g.throughput(Throughput::Elements(batch as u64));
                g.bench_with_input(BenchmarkId::new(name, format!("b{batch}")), &x, |b, x| {
                    b.iter(|| black_box(m.forward(x).unwrap()))
                });
            }
        }
        g.finish();
    }
}

/// Criterion's generated entry point (the macro writes an undocumented `pub fn`).
#[allow(missing_docs)]
mod entry {
    use super::*;

    criterion_group!(benches, bench);
}
criterion_main!(entry::benches);
