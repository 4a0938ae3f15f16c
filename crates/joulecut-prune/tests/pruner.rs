//! The `Pruner` in a real candle training loop: masks survive many AdamW steps.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap, linear};
use joulecut_prune::{
    Granularity, PruneSpec, Pruner, Schedule, Scope, Selection, SensitivityConfig,
    sensitivity_varmap, varmap_tensors,
};

struct Mlp {
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
}

impl Mlp {
    fn new(varmap: &VarMap) -> Mlp {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        Mlp {
            fc1: linear(16, 32, vb.pp("fc1")).unwrap(),
            fc2: linear(32, 4, vb.pp("fc2")).unwrap(),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2
            .forward(&self.fc1.forward(x).unwrap().relu().unwrap())
            .unwrap()
    }
}

fn data() -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (64, 16), &dev).unwrap();
    let y: Vec<u32> = (0..64u32).map(|i| i % 4).collect();
    (x, Tensor::new(y.as_slice(), &dev).unwrap())
}

fn zeros(varmap: &VarMap) -> Vec<(String, Vec<bool>)> {
    varmap_tensors(varmap)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.values.iter().map(|v| *v == 0.0).collect()))
        .collect()
}

fn train(
    varmap: &VarMap,
    model: &Mlp,
    pruner: &mut Pruner,
    steps: usize,
    mut check: impl FnMut(usize, &Pruner),
) {
    let (x, y) = data();
    let params = ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut opt = AdamW::new(varmap.all_vars(), params).unwrap();
    for step in 0..steps {
        let loss = candle_nn::loss::cross_entropy(&model.forward(&x), &y).unwrap();
        opt.backward_step(&loss).unwrap();
        pruner.step(varmap, step).unwrap();
        check(step, pruner);
    }
}

#[test]
fn masks_survive_many_adamw_steps() {
    let varmap = VarMap::new();
    let model = Mlp::new(&varmap);
    let mut pruner = Pruner::new(
        PruneSpec::new(0.7).scope(Scope::Global),
        Schedule::one_shot(),
    )
    .unwrap();
    let mut first: Option<Vec<(String, Vec<bool>)>> = None;
    train(&varmap, &model, &mut pruner, 300, |step, _| {
        let z = zeros(&varmap);
        match &first {
            None => first = Some(z),
            Some(f) => {
                for ((name, was), (_, now)) in f.iter().zip(&z) {
                    if name.ends_with("weight") {
                        // Every pruned weight is still exactly zero.
                        assert!(
                            was.iter().zip(now).all(|(w, n)| !w || *n),
                            "{name} revived at step {step}"
                        );
                    }
                }
            }
        }
    });
    let report = pruner.report();
    assert_eq!(
        report.zeros,
        ((16 * 32 + 32 * 4) as f64 * 0.7).round() as usize
    );
    // The pruned weights are zero in the tensors the model reads.
    let w = model
        .fc1
        .weight()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mask = pruner.masks()["fc1.weight"].keep().to_vec();
    assert!(w.iter().zip(&mask).all(|(v, k)| *k || *v == 0.0));
    assert!(
        w.iter()
            .zip(&mask)
            .filter(|(_, k)| **k)
            .all(|(v, _)| *v != 0.0)
    );
}

#[test]
fn agp_reaches_the_target_and_structured_masks_cover_biases() {
    let varmap = VarMap::new();
    let model = Mlp::new(&varmap);
    let spec = PruneSpec::new(0.5)
        .granularity(Granularity::Rows)
        .selection(Selection::default().exclude("fc2.*"));
    let schedule = Schedule::agp(0.0, 10, 110, 20).unwrap();
    let mut pruner = Pruner::new(spec, schedule).unwrap();
    let mut updates = 0;
    train(&varmap, &model, &mut pruner, 200, |_, _| {});
    let t = varmap_tensors(&varmap).unwrap();
    let dead: Vec<usize> = (0..32)
        .filter(|r| {
            t["fc1.weight"].values[r * 16..(r + 1) * 16]
                .iter()
                .all(|v| *v == 0.0)
        })
        .collect();
    assert_eq!(dead.len(), 16);
    assert!(dead.iter().all(|r| t["fc1.bias"].values[*r] == 0.0));
    for step in 0..200 {
        if pruner.schedule().unwrap().updates_by(step)
            != pruner
                .schedule()
                .unwrap()
                .updates_by(step.saturating_sub(1))
        {
            updates += 1;
        }
    }
    assert_eq!(updates, 6); // 10, 30, 50, 70, 90, 110
}

#[test]
fn keep_zeros_freezes_an_already_pruned_model() {
    let varmap = VarMap::new();
    let model = Mlp::new(&varmap);
    joulecut_prune::prune_varmap(
        &varmap,
        &PruneSpec::new(0.9).granularity(Granularity::Unstructured),
    )
    .unwrap();
    let before = zeros(&varmap);
    let mut keeper = Pruner::keep_zeros(&varmap, &Selection::default()).unwrap();
    assert!((keeper.report().sparsity - 0.9).abs() < 1e-3);
    train(&varmap, &model, &mut keeper, 50, |_, _| {});
    for ((name, was), (_, now)) in before.iter().zip(&zeros(&varmap)) {
        if name.ends_with("weight") {
            assert_eq!(was, now, "{name}");
        }
    }
}

#[test]
fn iterative_schedule_prunes_in_rounds() {
    let varmap = VarMap::new();
    let model = Mlp::new(&varmap);
    let mut pruner = Pruner::new(
        PruneSpec::new(0.875),
        Schedule::iterative(3, 0, 40).unwrap(),
    )
    .unwrap();
    let mut seen = Vec::new();
    train(&varmap, &model, &mut pruner, 120, |step, p| {
        if step % 40 == 0 {
            seen.push(p.report().sparsity);
        }
    });
    assert!(
        (seen[0] - 0.5).abs() < 0.01
            && (seen[1] - 0.75).abs() < 0.01
            && (seen[2] - 0.875).abs() < 0.01,
        "{seen:?}"
    );
}

#[test]
fn sensitivity_restores_the_model() {
    let varmap = VarMap::new();
    let model = Mlp::new(&varmap);
    let (x, y) = data();
    let before = varmap_tensors(&varmap).unwrap();
    let cfg = SensitivityConfig {
        sparsities: vec![0.0, 0.5, 0.99],
        ..Default::default()
    };
    let report = sensitivity_varmap(&varmap, &cfg, |_| -> Result<f64, joulecut_prune::Error> {
        let pred = model.forward(&x).argmax(1).unwrap();
        let ok = pred
            .eq(&y)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .mean_all()
            .unwrap();
        Ok(ok.to_scalar::<f32>().unwrap() as f64)
    })
    .unwrap();
    assert_eq!(varmap_tensors(&varmap).unwrap(), before);
    assert_eq!(report.layers.len(), 2);
    assert_eq!(report.layers[0].points[0].accuracy, report.baseline);
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"baseline\""));
    assert!(report.to_string().contains("fc1.weight"));
}
