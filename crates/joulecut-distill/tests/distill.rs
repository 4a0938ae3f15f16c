//! The KD loss against hand-computed values, gradient flow (student only), cached vs live teacher,
//! the logit cache on disk, and the fused kernel against its reference. The networks are small
//! candle-nn MLPs defined here: distillation needs no joulecut model (the harness's tests run it
//! on `joulecut_models::Model`).

use candle_core::{Device, Module, Tensor, Var};
use candle_nn::{Linear, VarMap};
use joulecut_distill::{
    Arch, Error, HiddenModule, HintPair, Hints, KdConfig, KdObjective, Samples, TeacherLogits,
    distill_step, ensemble_id, kd_loss, kd_loss_reference,
};
use joulecut_testkit::varmap::snapshot;

/// f32 round-off across a handful of exp/log ops on tiny tensors.
const TOL: f32 = 1e-5;

fn softmax(v: &[f64], t: f64) -> Vec<f64> {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = v.iter().map(|x| ((x - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// The loss by the formula, in f64, with nothing shared with the implementation.
fn by_hand(s: &[[f64; 3]], t: &[[f64; 3]], y: &[usize], temp: f64, alpha: f64, eps: f64) -> f64 {
    let mut total = 0.0;
    for ((sr, tr), &yi) in s.iter().zip(t).zip(y) {
        let (pt, ps_t, ps) = (softmax(tr, temp), softmax(sr, temp), softmax(sr, 1.0));
        let kl: f64 = (0..3).map(|i| pt[i] * (pt[i].ln() - ps_t[i].ln())).sum();
        let target: Vec<f64> = (0..3)
            .map(|i| if i == yi { 1.0 - eps } else { 0.0 } + eps / 3.0)
            .collect();
        let ce: f64 = -(0..3).map(|i| target[i] * ps[i].ln()).sum::<f64>();
        total += alpha * temp * temp * kl + (1.0 - alpha) * ce;
    }
    total / s.len() as f64
}

const S: [[f64; 3]; 2] = [[0.5, -0.2, 0.1], [1.0, 2.0, -1.0]];
const T: [[f64; 3]; 2] = [[2.0, -1.0, 0.0], [0.0, 3.0, -2.0]];

fn tensor(v: &[[f64; 3]]) -> Tensor {
    let flat: Vec<f32> = v.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_vec(flat, (v.len(), 3), &Device::Cpu).unwrap()
}

#[test]
fn kd_loss_equals_hand_computed_value() {
    let y = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    for (temp, alpha, eps) in [
        (1.0, 0.5, 0.0),
        (4.0, 0.9, 0.0),
        (2.0, 0.3, 0.1),
        (0.5, 1.0, 0.0),
        (3.0, 0.0, 0.0),
    ] {
        let cfg = KdConfig {
            temperature: temp,
            alpha,
            label_smoothing: eps,
        };
        let want = by_hand(&S, &T, &[0, 1], temp, alpha, eps) as f32;
        let fused = kd_loss(&tensor(&S), &tensor(&T), &y, &cfg)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let reference = kd_loss_reference(&tensor(&S), &tensor(&T), &y, &cfg)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (fused - want).abs() < TOL,
            "T={temp} a={alpha}: fused {fused} vs hand {want}"
        );
        assert!(
            (reference - want).abs() < TOL,
            "T={temp} a={alpha}: reference {reference} vs hand {want}"
        );
    }
    // A worked number for the record: T = 1, alpha = 0.5 on these tensors.
    let v = by_hand(&S, &T, &[0, 1], 1.0, 0.5, 0.0);
    assert!((v - 0.408_364).abs() < 1e-5, "{v}");
}

#[test]
fn fused_gradient_matches_reference_and_finite_differences() {
    let y = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    for cfg in [
        KdConfig {
            temperature: 2.0,
            alpha: 0.5,
            label_smoothing: 0.0,
        },
        KdConfig {
            temperature: 4.0,
            alpha: 0.9,
            label_smoothing: 0.1,
        },
    ] {
        let s1 = Var::from_tensor(&tensor(&S)).unwrap();
        let s2 = Var::from_tensor(&tensor(&S)).unwrap();
        let t = tensor(&T);
        let g1 = kd_loss(s1.as_tensor(), &t, &y, &cfg)
            .unwrap()
            .backward()
            .unwrap();
        let g2 = kd_loss_reference(s2.as_tensor(), &t, &y, &cfg)
            .unwrap()
            .backward()
            .unwrap();
        let a = g1
            .get(s1.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = g2
            .get(s2.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (i, (x, z)) in a.iter().zip(&b).enumerate() {
            assert!((x - z).abs() < TOL, "grad[{i}]: fused {x} vs reference {z}");
            // central finite difference of the f64 formula
            let h = 1e-5;
            let (mut sp, mut sm) = (S, S);
            sp[i / 3][i % 3] += h;
            sm[i / 3][i % 3] -= h;
            let (tp, al, e) = (cfg.temperature, cfg.alpha, cfg.label_smoothing);
            let fd = (by_hand(&sp, &T, &[0, 1], tp, al, e) - by_hand(&sm, &T, &[0, 1], tp, al, e))
                / (2.0 * h);
            assert!(
                (f64::from(*x) - fd).abs() < 1e-4,
                "grad[{i}]: {x} vs finite difference {fd}"
            );
        }
    }
}

#[test]
fn bad_settings_are_bad_input() {
    let y = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    for (temp, alpha) in [
        (0.0, 0.5),
        (-1.0, 0.5),
        (f64::NAN, 0.5),
        (2.0, -0.1),
        (2.0, 1.5),
    ] {
        let cfg = KdConfig {
            temperature: temp,
            alpha,
            label_smoothing: 0.0,
        };
        let e = kd_loss(&tensor(&S), &tensor(&T), &y, &cfg).unwrap_err();
        assert!(e.is_bad_input() && e.hint().is_some(), "{e}");
        assert!(
            matches!(e, Error::BadTemperature(_) | Error::BadAlpha(_)),
            "{e}"
        );
    }
    let e = "1-2".parse::<HintPair>().unwrap_err();
    assert!(e.is_bad_input());
}

/// A seeded generator for the test data and weights (SplitMix64).
struct Gen(u64);

impl Gen {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A ReLU MLP of candle-nn linear layers whose variables live in its `VarMap`, with
/// deterministic PyTorch-style initial weights.
#[derive(Clone)]
struct Mlp {
    layers: Vec<Linear>,
    arch: Arch,
}

impl Mlp {
    fn new(widths: &[usize], seed: u64) -> (Mlp, VarMap) {
        let vm = VarMap::new();
        let mut g = Gen(seed);
        let mut layers = Vec::new();
        for (i, w) in widths.windows(2).enumerate() {
            let bound = 1.0 / (w[0] as f32).sqrt();
            let mut var = |name: String, shape: &[usize]| {
                let n = shape.iter().product();
                let vals = (0..n).map(|_| (g.next_f32() * 2.0 - 1.0) * bound).collect();
                let v = Var::from_vec(vals, shape, &Device::Cpu).unwrap();
                vm.data().lock().unwrap().insert(name, v.clone());
                v.as_tensor().clone()
            };
            let weight = var(format!("fc{}.weight", i + 1), &[w[1], w[0]]);
            let bias = var(format!("fc{}.bias", i + 1), &[w[1]]);
            layers.push(Linear::new(weight, Some(bias)));
        }
        let name = format!(
            "mlp:{}",
            widths
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("-")
        );
        let hidden = widths[1..widths.len() - 1].to_vec();
        let arch = Arch::new(name, widths[0], widths[widths.len() - 1]).with_hidden(hidden);
        (Mlp { layers, arch }, vm)
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_hidden(x)?.0)
    }
}

impl HiddenModule for Mlp {
    fn forward_hidden(&self, x: &Tensor) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let (mut h, mut hidden) = (x.clone(), Vec::new());
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
                hidden.push(h.clone());
            }
        }
        Ok((h, hidden))
    }
}

/// Generated data: 3 Gaussian blobs in 16 dimensions (`(inputs, labels)`).
fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Gen(seed);
    let (mut x, mut y) = (Vec::with_capacity(n * 16), Vec::with_capacity(n));
    for i in 0..n {
        let c = (i % 3) as u32;
        for d in 0..16 {
            let centre = if d % 3 == c as usize { 1.5 } else { 0.0 };
            x.push(centre + rng.next_f32() * 2.0 - 1.0);
        }
        y.push(c);
    }
    (x, y)
}

/// A teacher (untrained: the objective tests compare losses and gradients, not accuracy) with
/// its variables, and the training data.
fn setup() -> ((Vec<f32>, Vec<u32>), Mlp, VarMap) {
    let (teacher, tvm) = Mlp::new(&[16, 48, 32, 3], 11);
    (blobs(600, 7), teacher, tvm)
}

/// The student every test distils into.
fn student() -> (Mlp, VarMap) {
    Mlp::new(&[16, 8, 3], 0)
}

fn samples(d: &(Vec<f32>, Vec<u32>)) -> Samples<'_> {
    Samples {
        inputs: &d.0,
        labels: &d.1,
        dim: 16,
        classes: 3,
    }
}

fn tensors(d: &(Vec<f32>, Vec<u32>)) -> (Tensor, Tensor) {
    let n = d.1.len();
    (
        Tensor::from_slice(&d.0, (n, 16), &Device::Cpu).unwrap(),
        Tensor::from_slice(&d.1, n, &Device::Cpu).unwrap(),
    )
}

#[test]
fn gradients_flow_to_the_student_only() {
    let (data, teacher, tvm) = setup();
    let before = snapshot(&tvm);
    let (student, svm) = student();
    let tarch = teacher.arch.clone();
    let kd = KdObjective::live(teacher, tarch, &student.arch, KdConfig::default()).unwrap();
    let (xs, ys) = tensors(&data);
    let (x, y) = (xs.narrow(0, 0, 64).unwrap(), ys.narrow(0, 0, 64).unwrap());
    let idx: Vec<u32> = (0..64).collect();
    let (loss, _) = kd.batch_loss(&student, &x, &y, &idx).unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in tvm.data().lock().unwrap().iter() {
        assert!(
            grads.get(var.as_tensor()).is_none(),
            "teacher var {name} got a gradient"
        );
    }
    for (name, var) in svm.data().lock().unwrap().iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("student var {name} has no gradient"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0, "student var {name} has a zero gradient");
    }
    assert_eq!(snapshot(&tvm), before, "teacher weights changed");
}

#[test]
fn distill_step_updates_only_the_optimised_student() {
    let (data, teacher, tvm) = setup();
    let before = snapshot(&tvm);
    let (student, svm) = student();
    let mut opt = candle_nn::AdamW::new_lr(svm.all_vars(), 1e-2).unwrap();
    let (xs, ys) = tensors(&data);
    let (x, y) = (xs.narrow(0, 0, 128).unwrap(), ys.narrow(0, 0, 128).unwrap());
    let cfg = KdConfig::default();
    let first = distill_step(&mut opt, &student, &teacher, &x, &y, &cfg).unwrap();
    let mut last = first;
    for _ in 0..30 {
        last = distill_step(&mut opt, &student, &teacher, &x, &y, &cfg).unwrap();
    }
    assert!(last.loss < first.loss, "{} -> {}", first.loss, last.loss);
    assert_eq!(snapshot(&tvm), before);
}

#[test]
fn cached_and_live_teacher_give_the_same_loss() {
    let (data, teacher, _) = setup();
    let cache = TeacherLogits::compute(&teacher, &samples(&data), 97, "t", &Device::Cpu).unwrap();
    assert_eq!((cache.len(), cache.classes()), (600, 3));
    let (student, _) = student();
    let tarch = teacher.arch.clone();
    let live = KdObjective::live(teacher, tarch, &student.arch, KdConfig::default()).unwrap();
    let cached = KdObjective::cached(cache.clone(), &student.arch, KdConfig::default()).unwrap();
    let (xs, ys) = tensors(&data);
    let idx: Vec<u32> = vec![5, 599, 0, 17, 300, 42, 123];
    let it = Tensor::new(idx.as_slice(), &Device::Cpu).unwrap();
    let (x, y) = (
        xs.index_select(&it, 0).unwrap(),
        ys.index_select(&it, 0).unwrap(),
    );
    let (l1, _) = live.batch_loss(&student, &x, &y, &idx).unwrap();
    let (l2, _) = cached.batch_loss(&student, &x, &y, &idx).unwrap();
    let (l1, l2) = (
        l1.to_scalar::<f32>().unwrap(),
        l2.to_scalar::<f32>().unwrap(),
    );
    assert!((l1 - l2).abs() < TOL, "live {l1} vs cached {l2}");

    // Round trip through the disk cache, and refusal of a cache for another teacher or data.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("logits.safetensors");
    cache.save(&p).unwrap();
    let back = TeacherLogits::load(&p, "t", &samples(&data), &Device::Cpu).unwrap();
    let (a, b) = (
        cache
            .logits()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        back.logits()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
    );
    assert_eq!(a, b);
    let e = TeacherLogits::load(&p, "other", &samples(&data), &Device::Cpu).unwrap_err();
    assert!(
        matches!(e, Error::StaleCache { .. }) && e.is_bad_input(),
        "{e}"
    );
    let other = blobs(200, 8);
    let e = TeacherLogits::load(&p, "t", &samples(&other), &Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::StaleCache { .. }), "{e}");
    std::fs::write(&p, b"not safetensors").unwrap();
    let e = TeacherLogits::load(&p, "t", &samples(&data), &Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::BadCache { .. }), "{e}");
}

#[test]
fn ensemble_logits_are_the_mean_of_the_teachers() {
    let (data, t1, _) = setup();
    let (t2, _) = Mlp::new(&[16, 48, 32, 3], 12);
    let c1 = TeacherLogits::compute(&t1, &samples(&data), 64, "a", &Device::Cpu).unwrap();
    let c2 = TeacherLogits::compute(&t2, &samples(&data), 64, "b", &Device::Cpu).unwrap();
    let rows = |c: &TeacherLogits| c.logits().to_vec2::<f32>().unwrap();
    let (r1, r2) = (rows(&c1), rows(&c2));
    assert_ne!(r1, r2, "two differently initialised teachers");
    let m = TeacherLogits::mean(vec![c1.clone(), c2.clone()]).unwrap();
    assert_eq!(m.teacher_id(), "mean(a+b)");
    assert_eq!((m.len(), m.classes()), (600, 3));
    for (i, row) in rows(&m).iter().enumerate() {
        for (k, v) in row.iter().enumerate() {
            let want = (r1[i][k] + r2[i][k]) / 2.0;
            assert!(
                (v - want).abs() <= 1e-6 * want.abs().max(1.0),
                "[{i},{k}] {v} vs {want}"
            );
        }
    }
    // One teacher: unchanged, same id (old single-teacher caches stay valid).
    let one = TeacherLogits::mean(vec![c1.clone()]).unwrap();
    assert_eq!((one.teacher_id(), rows(&one)), ("a", r1));
    assert_eq!(ensemble_id(&["a".into()]), "a");
    assert!(TeacherLogits::mean(vec![]).unwrap_err().is_bad_input());

    // Different widths or training sets are refused.
    let (t5, _) = Mlp::new(&[16, 8, 5], 0);
    let c5 = TeacherLogits::compute(&t5, &samples(&data), 64, "c", &Device::Cpu).unwrap();
    let e = TeacherLogits::mean(vec![c1.clone(), c5]).unwrap_err();
    assert!(
        e.is_bad_input() && e.to_string().contains("output width"),
        "{e}"
    );
    let other = blobs(600, 9);
    let c3 = TeacherLogits::compute(&t2, &samples(&other), 64, "b", &Device::Cpu).unwrap();
    let e = TeacherLogits::mean(vec![c1, c3]).unwrap_err();
    assert!(
        e.is_bad_input() && e.to_string().contains("different training sets"),
        "{e}"
    );
}

#[test]
fn width_mismatch_is_refused() {
    let (teacher, _) = Mlp::new(&[16, 32, 5], 0);
    let (student, _) = student();
    let tarch = teacher.arch.clone();
    let e = KdObjective::live(teacher, tarch, &student.arch, KdConfig::default()).unwrap_err();
    assert!(
        matches!(e, Error::WidthMismatch { what: "output", .. }) && e.is_bad_input(),
        "{e}"
    );
}

#[test]
fn hints_project_student_features_and_need_the_live_teacher() {
    let (data, teacher, tvm) = setup();
    let (student, svm) = student();
    let (tarch, sarch) = (teacher.arch.clone(), student.arch.clone());
    let pairs = vec![HintPair {
        student: 0,
        teacher: 1,
    }];
    let hints = Hints::new(pairs, 1.0, &sarch, &tarch, &svm, 0, &Device::Cpu).unwrap();
    // Student hidden 0 is 8 wide, teacher hidden 1 is 32 wide: a learned 8 -> 32 projection.
    let proj = svm.data().lock().unwrap()["distill.hint0.weight"].clone();
    assert_eq!(proj.dims(), &[32, 8]);
    let kd = KdObjective::live(teacher.clone(), &tarch, &sarch, KdConfig::default())
        .unwrap()
        .with_hints(hints)
        .unwrap();
    let plain = KdObjective::live(teacher.clone(), &tarch, &sarch, KdConfig::default()).unwrap();
    let (xs, ys) = tensors(&data);
    let (x, y) = (xs.narrow(0, 0, 64).unwrap(), ys.narrow(0, 0, 64).unwrap());
    let idx: Vec<u32> = (0..64).collect();
    let (with, _) = kd.batch_loss_with_hidden(&student, &x, &y, &idx).unwrap();
    let (without, _) = plain.batch_loss(&student, &x, &y, &idx).unwrap();
    // Without hints both entry points agree; with hints the plain one cannot see the student's
    // hidden activations and refuses.
    let (same, _) = plain
        .batch_loss_with_hidden(&student, &x, &y, &idx)
        .unwrap();
    assert_eq!(
        same.to_scalar::<f32>().unwrap(),
        without.to_scalar::<f32>().unwrap()
    );
    assert!(kd.batch_loss(&student, &x, &y, &idx).is_err());
    // A student that shows fewer hidden activations than the hints name is an error, not a panic.
    let opaque = |x: &Tensor| student.forward(x);
    let e = kd
        .batch_loss_with_hidden(&opaque, &x, &y, &idx)
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let (a, b) = (
        with.to_scalar::<f32>().unwrap(),
        without.to_scalar::<f32>().unwrap(),
    );
    assert!(a > b, "the hint term adds a positive MSE: {a} vs {b}");
    // The projection is in the graph: it receives a gradient, the teacher does not.
    let grads = with.backward().unwrap();
    assert!(grads.get(proj.as_tensor()).is_some());
    for (name, var) in tvm.data().lock().unwrap().iter() {
        assert!(grads.get(var.as_tensor()).is_none(), "teacher {name}");
    }
    let bad = Hints::new(
        vec![HintPair {
            student: 3,
            teacher: 0,
        }],
        1.0,
        &sarch,
        &tarch,
        &svm,
        0,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(bad, Error::NoSuchHiddenLayer { .. }), "{bad}");
    // Hints need the live teacher.
    let cache = TeacherLogits::compute(&teacher, &samples(&data), 100, "t", &Device::Cpu).unwrap();
    let h = Hints::new(
        vec![HintPair {
            student: 0,
            teacher: 0,
        }],
        1.0,
        &sarch,
        &tarch,
        &svm,
        0,
        &Device::Cpu,
    )
    .unwrap();
    assert!(
        KdObjective::cached(cache, &sarch, KdConfig::default())
            .unwrap()
            .with_hints(h)
            .is_err()
    );
}

#[test]
fn teacher_logits_dtype_and_detach() {
    // Teacher logits that require grad (a Var) are detached: no gradient reaches them.
    let t = Var::from_tensor(&tensor(&T)).unwrap();
    let s = Var::from_tensor(&tensor(&S)).unwrap();
    let y = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    for f in [kd_loss, kd_loss_reference] {
        let g = f(s.as_tensor(), t.as_tensor(), &y, &KdConfig::default())
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(t.as_tensor()).is_none());
        assert!(g.get(s.as_tensor()).is_some());
    }
}
