//! `joulecut-distill` through the harness's training loop (the adapter in `src/kd.rs`): a student
//! learns from a frozen teacher, cached or live, with and without hints; the teacher never changes.

use candle_core::Device;
use candle_nn::VarMap;
use joulecut_distill::{HintPair, Hints, KdConfig, KdObjective, TeacherLogits};
use joulecut_harness::{LrSchedule, TrainConfig, Trainer, data};
use joulecut_models::{Model, ModelConfig, init_varmap};
use joulecut_testkit::varmap::snapshot;

/// A small trained teacher and the data.
fn setup() -> (data::Splits, ModelConfig, VarMap, ModelConfig) {
    let splits = data::synthetic(600, 200, 16, 3, 7);
    let tcfg = ModelConfig::parse("mlp:16-48-32-3").unwrap();
    let tvm = init_varmap(&tcfg, 11, &Device::Cpu).unwrap();
    let teacher = Model::from_varmap(&tcfg, &tvm).unwrap();
    // Short runs on generated data: a higher rate than Fashion-MNIST's default.
    let tc = TrainConfig {
        epochs: 3,
        batch_size: 32,
        lr: 3e-3,
        ..Default::default()
    };
    Trainer::new(&teacher, &tvm, &tc)
        .run(&splits.train, &splits.test)
        .unwrap();
    (splits, tcfg, tvm, ModelConfig::parse("mlp:16-8-3").unwrap())
}

#[test]
fn cached_and_live_distillation_train_the_student_only() {
    let (splits, tcfg, tvm, scfg) = setup();
    let before = snapshot(&tvm);
    let teacher = Model::from_varmap(&tcfg, &tvm).unwrap();
    let cache = TeacherLogits::compute(&teacher, &splits.train, 128, "t", &Device::Cpu).unwrap();
    let tc = TrainConfig {
        epochs: 3,
        batch_size: 32,
        lr: 1e-2,
        ..Default::default()
    };
    let mut accs = Vec::new();
    let mut objectives = [
        KdObjective::cached(cache, &scfg, KdConfig::default()).unwrap(),
        KdObjective::live(teacher, &tcfg, &scfg, KdConfig::default()).unwrap(),
    ];
    let mut students = Vec::new();
    for kd in &mut objectives {
        let svm = init_varmap(&scfg, 0, &Device::Cpu).unwrap();
        let student = Model::from_varmap(&scfg, &svm).unwrap();
        let s_before = snapshot(&svm);
        let r = Trainer::new(&student, &svm, &tc)
            .objective(kd)
            .run(&splits.train, &splits.test)
            .unwrap();
        assert_ne!(snapshot(&svm), s_before, "student weights did not change");
        accs.push(r.accuracy);
        students.push(snapshot(&svm));
    }
    assert_eq!(snapshot(&tvm), before, "teacher weights changed");
    assert!(accs[0] > 0.8, "the distilled student learns: {accs:?}");
    // Same init, same batches, the same teacher outputs: the same student, up to f32 round-off.
    for ((n, a), (_, b)) in students[0].iter().zip(&students[1]) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "{n}: cached and live students differ by {d}");
    }
}

#[test]
fn hints_train_projection_and_student() {
    let (splits, tcfg, tvm, scfg) = setup();
    let teacher = Model::from_varmap(&tcfg, &tvm).unwrap();
    let svm = init_varmap(&scfg, 0, &Device::Cpu).unwrap();
    let student = Model::from_varmap(&scfg, &svm).unwrap();
    let pairs = vec![HintPair {
        student: 0,
        teacher: 1,
    }];
    let hints = Hints::new(pairs, 1.0, &scfg, &tcfg, &svm, 0, &Device::Cpu).unwrap();
    let proj_before = snapshot(&svm)
        .into_iter()
        .find(|(n, _)| n == "distill.hint0.weight")
        .unwrap();
    let mut kd = KdObjective::live(teacher, &tcfg, &scfg, KdConfig::default())
        .unwrap()
        .with_hints(hints)
        .unwrap();
    let tc = TrainConfig {
        epochs: 2,
        batch_size: 32,
        // Sized for a constant rate; cosine decay halves the average step.
        lr_schedule: LrSchedule::Constant,
        ..Default::default()
    };
    let r = Trainer::new(&student, &svm, &tc)
        .objective(&mut kd)
        .run(&splits.train, &splits.test)
        .unwrap();
    // 3 classes: chance is 1/3. The hint term competes with the labels for 2 short epochs.
    assert!(r.accuracy > 0.4, "{}", r.accuracy);
    let proj_after = snapshot(&svm)
        .into_iter()
        .find(|(n, _)| n == "distill.hint0.weight")
        .unwrap();
    assert_ne!(proj_before, proj_after, "the projection was not trained");
}
