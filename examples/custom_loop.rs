//! Library use inside your own candle training loop: a meter window per epoch, a gradual (AGP)
//! pruner after every optimiser step, and a knowledge-distillation loss from a teacher.
//!
//! ```sh
//! cargo run --release --example custom_loop            # Fashion-MNIST (dataset-fashion-mnist)
//! cargo run --release --example custom_loop -- --quick # a generated dataset, a few seconds
//! ```

use candle_core::{Device, Module, Tensor};
use candle_nn::Optimizer;
use joulecut::distill::{KdConfig, kd_loss};
use joulecut::energy::{Meter, MeterConfig};
use joulecut::harness::{self, CrossEntropy, NoHook, Silent, TrainConfig};
use joulecut::models::{Model, ModelConfig, Rng, init_varmap};
use joulecut::prune::{PruneSpec, Pruner, Schedule, Scope};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let dev = Device::Cpu;
    let data = if quick {
        harness::data::synthetic(2_000, 500, 784, 10, 0)
    } else {
        harness::data::load_fashion_mnist(None)?
    };
    let meter = Meter::auto(MeterConfig::from_env()?)?;
    for s in meter.skipped() {
        eprintln!("energy probe skipped: {} ({})", s.probe, s.reason);
    }

    // 1. A teacher, trained with the harness's loop.
    let tcfg = ModelConfig::parse("lenet-300-100")?;
    let tvm = init_varmap(&tcfg, 1, &dev)?;
    let teacher = Model::from_varmap(&tcfg, &tvm)?;
    let tc = TrainConfig {
        epochs: if quick { 2 } else { 3 },
        ..Default::default()
    };
    let (r, e) = meter.measure("teacher", || {
        harness::train(
            &teacher,
            &tvm,
            &data.train,
            &data.test,
            &tc,
            &mut CrossEntropy,
            &mut NoHook,
            &mut Silent,
            &dev,
        )
    });
    println!(
        "teacher: accuracy {:.4}, {:.1} J ({:?})",
        r?.accuracy,
        e.total().0,
        e.provenance
    );

    // 2. A student in our own loop: KD loss, Adam, AGP pruning to 80% over the first half.
    let scfg = ModelConfig::parse("mlp:784-128-10")?;
    let vm = init_varmap(&scfg, 2, &dev)?;
    let student = Model::from_varmap(&scfg, &vm)?;
    let mut opt = joulecut::ops::optim::Adam::new(vm.all_vars(), Default::default())?;
    let (xs, ys) = data.train.tensors(&dev)?;
    let (bs, epochs) = (128, 3);
    let steps = data.train.len().div_ceil(bs);
    let schedule = Schedule::Agp {
        initial_sparsity: 0.0,
        start: 0,
        end: steps * epochs / 2,
        frequency: 20,
    };
    let mut pruner = Pruner::new(PruneSpec::new(0.8).scope(Scope::Global), schedule)?;
    let kd = KdConfig::default();
    let mut order: Vec<u32> = (0..data.train.len() as u32).collect();
    let mut rng = Rng::new(3);
    let mut step = 0;
    for epoch in 1..=epochs {
        let window = meter.window(&format!("epoch-{epoch}"));
        rng.shuffle(&mut order);
        for chunk in order.chunks(bs) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let (x, y) = (xs.index_select(&idx, 0)?, ys.index_select(&idx, 0)?);
            let t = teacher.forward(&x)?.detach(); // frozen teacher: no gradient
            let loss = kd_loss(&student.forward(&x)?, &t, &y, &kd)?;
            opt.backward_step(&loss)?;
            pruner.step(&vm, step)?; // after the optimiser, so its moments can't revive weights
            step += 1;
        }
        let m = window.finish();
        let acc = harness::evaluate(&student, &data.test, 1000, &dev)?.accuracy;
        println!(
            "epoch {epoch}: accuracy {acc:.4}, sparsity {:.3}, {:.1} J ({:?}, {})",
            pruner.report().sparsity,
            m.total().0,
            m.provenance,
            serde_json::to_value(&m)?["domains"][0]["source"]
        );
    }
    Ok(())
}
