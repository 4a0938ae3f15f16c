//! Library use inside your own candle training loop: a meter window per epoch, a gradual (AGP)
//! pruner after every optimiser step, a knowledge-distillation loss from a teacher, then an epoch
//! of quantization-aware training with your own layers (`FakeQuantLinear`).
//!
//! ```sh
//! cargo run --release --example custom_loop            # Fashion-MNIST (dataset-fashion-mnist)
//! cargo run --release --example custom_loop -- --quick # a generated dataset, a few seconds
//! ```

use candle_core::{Device, Module, Tensor};
use candle_nn::{Optimizer, VarMap};
use joulecut::distill::{KdConfig, kd_loss};
use joulecut::energy::{Measurement, Meter, MeterConfig};
use joulecut::harness::{self, TrainConfig, Trainer};
use joulecut::models::{Model, ModelConfig, Rng, init_varmap};
use joulecut::prune::{PruneSpec, Pruner, Schedule, Scope};
use joulecut::quant::{FakeQuantLinear, Int8Config};

/// How a window's joules were obtained, from the typed measurement: `estimated (cpu: …)` or
/// `measured (package-0: rapl …)`.
fn provenance(m: &Measurement) -> String {
    let sources: Vec<String> = m
        .domains
        .iter()
        .map(|d| format!("{}: {}", d.name, d.source))
        .collect();
    format!("{} ({})", m.provenance(), sources.join("; "))
}

/// The student as your own module: the same variables, each layer trained for int8.
struct QatMlp {
    layers: Vec<FakeQuantLinear>,
}

impl QatMlp {
    fn over(vm: &VarMap, layers: usize, int8: Int8Config) -> Result<Self, candle_core::Error> {
        let vars = vm.data().lock().expect("VarMap lock");
        let get = |n: String| {
            vars.get(&n)
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| candle_core::Error::Msg(format!("no variable {n}")))
        };
        let layers = (1..=layers)
            .map(|i| {
                Ok(FakeQuantLinear::from_parts(
                    get(format!("fc{i}.weight"))?,
                    Some(get(format!("fc{i}.bias"))?),
                    int8,
                ))
            })
            .collect::<Result<_, candle_core::Error>>()?;
        Ok(QatMlp { layers })
    }
}

impl Module for QatMlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

fn accuracy(m: &dyn Module, x: &Tensor, y: &Tensor) -> Result<f64, candle_core::Error> {
    let pred = m.forward(x)?.argmax(1)?;
    let right = pred.eq(y)?.to_dtype(candle_core::DType::F32)?.sum_all()?;
    Ok(right.to_scalar::<f32>()? as f64 / y.dims()[0] as f64)
}

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
        Trainer::new(&teacher, &tvm, &tc).run(&data.train, &data.test)
    });
    println!(
        "teacher: accuracy {:.4}, {:.1} J, {}",
        r?.accuracy,
        e.total().0,
        provenance(&e)
    );

    // 2. A student in our own loop: KD loss, Adam, AGP pruning to 80% over the first half.
    let scfg = ModelConfig::parse("mlp:784-128-10")?;
    let vm = init_varmap(&scfg, 2, &dev)?;
    let student = Model::from_varmap(&scfg, &vm)?;
    let mut opt = joulecut::ops::optim::Adam::new(vm.all_vars(), Default::default())?;
    let (xs, ys) = data.train.tensors(&dev)?;
    let (test_x, test_y) = data.test.tensors(&dev)?;
    let (bs, epochs) = (128, 3);
    let steps_per_epoch = data.train.len().div_ceil(bs);
    // epochs 0 to 1.5 of 3, 20 mask updates: the schedule counts the steps
    let schedule = Schedule::agp_epochs(0.0, 0.0..=1.5, steps_per_epoch, 20)?;
    let mut pruner = Pruner::new(PruneSpec::new(0.8).scope(Scope::Global), schedule)?;
    let kd = KdConfig::default();
    let mut order: Vec<u32> = (0..data.train.len() as u32).collect();
    let mut rng = Rng::new(3);
    let mut step = 0;
    let mut run_epoch = |name: &str,
                         forward: &dyn Module,
                         opt: &mut joulecut::ops::optim::Adam,
                         pruner: &mut Pruner|
     -> Result<Measurement, Box<dyn std::error::Error>> {
        let window = meter.window(name);
        rng.shuffle(&mut order);
        for chunk in order.chunks(bs) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let (x, y) = (xs.index_select(&idx, 0)?, ys.index_select(&idx, 0)?);
            let t = teacher.forward(&x)?.detach(); // frozen teacher: no gradient
            let loss = kd_loss(&forward.forward(&x)?, &t, &y, &kd)?;
            opt.backward_step(&loss)?;
            pruner.step(&vm, step)?; // after the optimiser, so its moments can't revive weights
            step += 1;
        }
        Ok(window.finish())
    };
    for epoch in 1..=epochs {
        let m = run_epoch(&format!("epoch-{epoch}"), &student, &mut opt, &mut pruner)?;
        println!(
            "epoch {epoch}/{epochs}: accuracy {:.4}, sparsity {:.3}, {:.1} J, {}",
            accuracy(&student, &test_x, &test_y)?,
            pruner.report().sparsity,
            m.total().0,
            provenance(&m)
        );
    }

    // 3. One epoch of QAT through our own module, on the same variables: the weights learn the
    // int8 grid `joulecut quantize --dtype int8` will use, and the pruner keeps the zeros.
    let int8 = Int8Config::default();
    let qat = QatMlp::over(&vm, 2, int8)?;
    let before = accuracy(&qat, &test_x, &test_y)?;
    let m = run_epoch("qat", &qat, &mut opt, &mut pruner)?;
    println!(
        "qat: int8-grid accuracy {before:.4} -> {:.4}, sparsity {:.3}, {:.1} J, {}",
        accuracy(&qat, &test_x, &test_y)?,
        pruner.report().sparsity,
        m.total().0,
        provenance(&m)
    );
    Ok(())
}
