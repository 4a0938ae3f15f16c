//! Recovery of a compressed encoder on a small generated BERT: training brings a pruned student
//! back toward its teacher, pruned weights stay zero, a resumed run equals an uninterrupted one,
//! and a student with dropped layers is written as a directory that loads and runs the same.

use std::path::{Path, PathBuf};

use candle_core::Device;
use joulecut_embed::generate::{SyntheticBert, vocabulary};
use joulecut_embed::{EncodeConfig, Engine, SentenceEncoder};
use joulecut_energy::{Meter, MeterConfig};
use joulecut_harness::pipeline::transformer::prune_encoder;
use joulecut_harness::recover::{
    HeldOut, Quiet, RecoverConfig, Recovery, TeacherTargets, TrainState, mean_cosine, uniform_map,
    write_student,
};
use joulecut_models::bert::{StudentSpec, TrainableEncoder};
use joulecut_prune::{CalibratedSpec, Method};

fn sentences(n: usize, seed: u64) -> Vec<String> {
    let words: Vec<String> = vocabulary()
        .into_iter()
        .filter(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    let mut rng = joulecut_ops::Rng::new(seed);
    (0..n)
        .map(|_| {
            let len = 4 + rng.below(10);
            (0..len)
                .map(|_| words[rng.below(words.len())].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

struct Setup {
    tmp: tempfile::TempDir,
    teacher: PathBuf,
    student: PathBuf,
}

/// A small teacher and its 50% magnitude-pruned copy.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = tmp.path().join("teacher");
    SyntheticBert {
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 128,
        ..SyntheticBert::default()
    }
    .write_dir(&teacher)
    .unwrap();
    let student = tmp.path().join("student");
    let spec = CalibratedSpec::new(Method::Magnitude, 0.5);
    prune_encoder(&teacher, &sentences(16, 9), &spec)
        .unwrap()
        .write(&student, false)
        .unwrap();
    Setup {
        tmp,
        teacher,
        student,
    }
}

fn load(dir: &Path) -> SentenceEncoder {
    SentenceEncoder::load_with(dir, &Device::Cpu, Engine::Joulecut).unwrap()
}

fn trainable(enc: &SentenceEncoder, keep: Option<Vec<usize>>) -> TrainableEncoder {
    let spec = StudentSpec {
        keep_layers: keep,
        train_embeddings: false,
        qat: false,
    };
    TrainableEncoder::load(enc.bert_config(), &enc.tensors(), &spec, &Device::Cpu).unwrap()
}

fn targets(teacher: &SentenceEncoder, corpus: &[String], layers: &[usize]) -> TeacherTargets {
    TeacherTargets::compute(
        teacher,
        corpus,
        layers,
        ("t".into(), "c".into()),
        &mut |_, _| {},
    )
    .unwrap()
}

fn held_out(teacher: &SentenceEncoder) -> HeldOut {
    let s = sentences(24, 3);
    HeldOut {
        tokens: teacher.token_batch(&s).unwrap(),
        teacher: teacher
            .encode(&s, &EncodeConfig { batch_size: 8 })
            .unwrap()
            .concat(),
    }
}

fn cfg(epochs: usize) -> RecoverConfig {
    RecoverConfig {
        epochs,
        batch_size: 8,
        lr: 2e-3,
        map: uniform_map(2, 2),
        ..RecoverConfig::default()
    }
}

fn weights(s: &TrainableEncoder) -> Vec<(String, Vec<f32>)> {
    s.export()
        .unwrap()
        .into_iter()
        .map(|(n, _, v)| (n, v))
        .collect()
}

#[test]
fn training_brings_the_pruned_student_back_and_keeps_its_zeros() {
    let s = setup();
    let (teacher, source) = (load(&s.teacher), load(&s.student));
    let student = trainable(&source, None);
    assert!(
        student.masked() >= 8,
        "every pruned linear weight keeps a mask"
    );
    let zeros_before: Vec<Vec<bool>> = weights(&student)
        .iter()
        .map(|(_, v)| v.iter().map(|x| *x == 0.0).collect())
        .collect();
    let t = targets(&teacher, &sentences(96, 1), &[1, 2]);
    let ho = held_out(&teacher);
    let before = mean_cosine(&student, &ho, &Device::Cpu).unwrap();
    let mut r = Recovery::new(&student, &t, cfg(4)).unwrap();
    let meter = Meter::auto(MeterConfig::default()).unwrap();
    let records = r
        .run(&meter, Some(&ho), None, &mut Quiet, &mut |_, _| Ok(()))
        .unwrap();
    assert_eq!(records.len(), 4);
    let after = records.last().unwrap().eval_cosine.unwrap();
    assert!(
        after > before + 0.01 && records[3].loss < records[0].loss,
        "held-out cosine {before} -> {after}, loss {} -> {}",
        records[0].loss,
        records[3].loss
    );
    assert!(records.iter().all(|r| r.energy.total().0 > 0.0));
    // every weight that was zero is still zero; the others moved
    for ((name, v), z) in weights(&student).iter().zip(&zeros_before) {
        for (x, &was_zero) in v.iter().zip(z) {
            if was_zero && name.ends_with(".weight") && !name.contains("LayerNorm") {
                assert_eq!(*x, 0.0, "{name} lost a zero");
            }
        }
    }
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let s = setup();
    let (teacher, source) = (load(&s.teacher), load(&s.student));
    let t = targets(&teacher, &sentences(64, 4), &[1, 2]);
    let meter = Meter::auto(MeterConfig::default()).unwrap();

    let whole = trainable(&source, None);
    Recovery::new(&whole, &t, cfg(3))
        .unwrap()
        .run(&meter, None, None, &mut Quiet, &mut |_, _| Ok(()))
        .unwrap();

    let state = s.tmp.path().join("state.safetensors");
    let first = trainable(&source, None);
    let mut r = Recovery::new(&first, &t, cfg(3)).unwrap();
    let done = r
        .run(&meter, None, Some(1), &mut Quiet, &mut |_, st| {
            st.save(&state, "run")
        })
        .unwrap();
    assert_eq!((done.len(), r.epochs_done()), (1, 1));
    assert!(TrainState::load(&state, "another run").is_err());
    // a fresh process: the student from its source again, the state from disk
    let resumed = trainable(&source, None);
    let mut r = Recovery::resume(
        &resumed,
        &t,
        cfg(3),
        TrainState::load(&state, "run").unwrap(),
    )
    .unwrap();
    let rest = r
        .run(&meter, None, None, &mut Quiet, &mut |_, _| Ok(()))
        .unwrap();
    assert_eq!(rest.len(), 2);
    for ((n, a), (_, b)) in weights(&whole).iter().zip(weights(&resumed)) {
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "{n}: resumed differs by {d}");
    }
}

#[test]
fn a_student_with_dropped_layers_is_written_as_a_model_that_runs_the_same() {
    let s = setup();
    let (teacher, source) = (load(&s.teacher), load(&s.teacher));
    let student = trainable(&source, Some(vec![1]));
    assert_eq!(student.config().layers, 1);
    let t = targets(&teacher, &sentences(32, 5), &[2]);
    let c = RecoverConfig {
        map: uniform_map(1, 2),
        ..cfg(1)
    };
    Recovery::new(&student, &t, c)
        .unwrap()
        .run(
            &Meter::auto(MeterConfig::default()).unwrap(),
            None,
            None,
            &mut Quiet,
            &mut |_, _| Ok(()),
        )
        .unwrap();
    let out = s.tmp.path().join("one-layer");
    let h = joulecut_checkpoint::HistoryEntry::new("distill", serde_json::json!({}));
    write_student(&source, &student, &out, h).unwrap();
    let written = load(&out);
    assert_eq!(written.config().num_hidden_layers, 1);
    assert!(!written.routes().iter().any(|(m, _)| m.contains("layer.1.")));
    // the written model (joulecut's inference kernels) embeds as the trained student did
    let ho = held_out(&written);
    let agreement = mean_cosine(&student, &ho, &Device::Cpu).unwrap();
    assert!(
        agreement > 0.99999,
        "written model vs trained student: {agreement}"
    );
}

#[test]
fn quantization_aware_training_runs_through_the_int8_grid_and_still_recovers() {
    let s = setup();
    let (teacher, source) = (load(&s.teacher), load(&s.student));
    let plain = trainable(&source, None);
    let spec = StudentSpec {
        qat: true,
        ..StudentSpec::default()
    };
    let qat = TrainableEncoder::load(source.bert_config(), &source.tensors(), &spec, &Device::Cpu)
        .unwrap();
    let ho = held_out(&teacher);
    // the same weights, seen through fake int8: close to, but not exactly, the f32 student
    let (a, b) = (
        mean_cosine(&plain, &ho, &Device::Cpu).unwrap(),
        mean_cosine(&qat, &ho, &Device::Cpu).unwrap(),
    );
    assert!(a != b && (a - b).abs() < 0.02, "f32 {a} vs fake int8 {b}");
    let t = targets(&teacher, &sentences(96, 1), &[1, 2]);
    let records = Recovery::new(&qat, &t, cfg(3))
        .unwrap()
        .run(
            &Meter::auto(MeterConfig::default()).unwrap(),
            Some(&ho),
            None,
            &mut Quiet,
            &mut |_, _| Ok(()),
        )
        .unwrap();
    let after = records.last().unwrap().eval_cosine.unwrap();
    assert!(after > b + 0.01, "QAT held-out cosine {b} -> {after}");
}
