//! The teacher-student objective: the student learns from a frozen teacher that is either run
//! live (without gradients) or replaced by its cached logits. [`KdObjective::batch_loss`] is the
//! loss of one batch for any candle student, so a hand-written loop calls it directly (below);
//! `joulecut_harness` implements its `Objective` trait with [`KdObjective::batch_loss_with_hidden`]
//! (which adds the hint term), so `joulecut_harness::train` distils.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{Optimizer, VarBuilder, VarMap, linear, seq};
//! use joulecut_distill::{Arch, KdConfig, KdObjective, Samples, TeacherLogits};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! // 256 samples of 16 features, 3 classes: the class is the sign pattern of two features.
//! let inputs: Vec<f32> = (0..256 * 16).map(|i| ((i * 7919 % 101) as f32 / 50.0) - 1.0).collect();
//! let labels: Vec<u32> = (0..256).map(|i| u32::from(inputs[i * 16] > 0.0) + u32::from(inputs[i * 16 + 1] > 0.5)).collect();
//! let data = Samples { inputs: &inputs, labels: &labels, dim: 16, classes: 3 };
//! // Plain candle-nn networks: a teacher (untrained here, for brevity) and a small student.
//! let mlp = |vm: &VarMap, hidden: usize| -> candle_core::Result<_> {
//!     let vb = VarBuilder::from_varmap(vm, DType::F32, &dev);
//!     Ok(seq().add(linear(16, hidden, vb.pp("fc1"))?).add(|x: &Tensor| x.relu()).add(linear(hidden, 3, vb.pp("fc2"))?))
//! };
//! let teacher = mlp(&VarMap::new(), 64)?;
//! // The teacher's logits over the training set, once.
//! let cache = TeacherLogits::compute(&teacher, &data, 128, "doc-teacher", &dev)?;
//! // The student, in your own loop: gather the batch, take the loss, step.
//! let svm = VarMap::new();
//! let student = mlp(&svm, 8)?;
//! let kd = KdObjective::cached(cache, Arch::new("student", 16, 3), KdConfig::default())?;
//! let mut opt = candle_nn::AdamW::new_lr(svm.all_vars(), 1e-2)?;
//! let xs = Tensor::from_slice(&inputs, (256, 16), &dev)?;
//! let ys = Tensor::from_slice(&labels, 256, &dev)?;
//! let idx: Vec<u32> = (0..64).collect(); // the batch's positions in the training set
//! let it = Tensor::from_slice(&idx, 64, &dev)?;
//! let (x, y) = (xs.index_select(&it, 0)?, ys.index_select(&it, 0)?);
//! let (first, _) = kd.batch_loss(&student, &x, &y, &idx)?;
//! opt.backward_step(&first)?;
//! for _ in 0..20 {
//!     let (loss, _) = kd.batch_loss(&student, &x, &y, &idx)?;
//!     opt.backward_step(&loss)?;
//! }
//! let (last, _) = kd.batch_loss(&student, &x, &y, &idx)?;
//! assert!(last.to_scalar::<f32>()? < first.to_scalar::<f32>()?);
//! # Ok(()) }
//! ```

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Linear, VarMap};

use crate::loss::{KdConfig, hint_mse, kd_loss};
use crate::network::{Arch, HiddenModule, check_compatible};
use crate::{Error, Result, TeacherLogits};
use joulecut_ops::Rng;

/// Where the teacher's outputs come from.
#[non_exhaustive]
pub enum Teacher {
    /// The teacher network, run at every step on the batch, without gradients.
    Live(Box<dyn HiddenModule + Send + Sync>),
    /// Its logits over the training set, computed once.
    Cached(TeacherLogits),
}

impl std::fmt::Debug for Teacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Teacher::Live(_) => f.write_str("Live(..)"),
            Teacher::Cached(c) => f.debug_tuple("Cached").field(c).finish(),
        }
    }
}

/// One hint pair: student hidden layer `student` imitates teacher hidden layer `teacher`
/// (0-based indices into [`HiddenModule::forward_hidden`]'s list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HintPair {
    /// Student hidden layer.
    pub student: usize,
    /// Teacher hidden layer.
    pub teacher: usize,
}

impl std::str::FromStr for HintPair {
    type Err = Error;
    /// Parses `S:T`, e.g. `0:1`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::BadSetting(format!(
                "bad hint pair `{s}`: expected STUDENT:TEACHER hidden-layer indices, e.g. 0:1"
            ))
        };
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        Ok(HintPair {
            student: a.trim().parse().map_err(|_| bad())?,
            teacher: b.trim().parse().map_err(|_| bad())?,
        })
    }
}

/// Feature distillation: MSE between chosen student and teacher hidden activations, through a
/// learned linear projection (student width -> teacher width) where the widths differ. The
/// projections live in the student's `VarMap` under `distill.hint{i}.*`, so the optimiser that
/// trains the student trains them too; they are not part of the student's architecture.
#[derive(Debug)]
pub struct Hints {
    pairs: Vec<HintPair>,
    projections: Vec<Option<Linear>>,
    weight: f64,
}

impl Hints {
    /// Builds the hint term for `pairs`, weighted by `weight`, creating projections in `vm`
    /// (PyTorch's default init, from `seed`). The layer indices are checked against the
    /// architectures' [`Arch::hidden`] widths.
    pub fn new(
        pairs: Vec<HintPair>,
        weight: f64,
        student: impl Into<Arch>,
        teacher: impl Into<Arch>,
        vm: &VarMap,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(Error::BadSetting(format!(
                "hint weight must be >= 0, got {weight}"
            )));
        }
        let (sw, tw) = (student.into().hidden, teacher.into().hidden);
        let mut rng = Rng::new(seed ^ 0x4849_4e54);
        let mut projections = Vec::new();
        for (i, p) in pairs.iter().enumerate() {
            let s = *sw.get(p.student).ok_or(Error::NoSuchHiddenLayer {
                which: "student",
                layer: p.student,
                available: sw.len(),
            })?;
            let t = *tw.get(p.teacher).ok_or(Error::NoSuchHiddenLayer {
                which: "teacher",
                layer: p.teacher,
                available: tw.len(),
            })?;
            if s == t {
                projections.push(None);
                continue;
            }
            let bound = 1.0 / (s as f32).sqrt();
            let mut uniform = |n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                    .collect()
            };
            let w = Var::from_vec(uniform(t * s), (t, s), device)
                .map_err(Error::candle("create hint projection"))?;
            let b = Var::from_vec(uniform(t), t, device)
                .map_err(Error::candle("create hint projection"))?;
            let mut data = vm.data().lock().expect("VarMap lock");
            data.insert(format!("distill.hint{i}.weight"), w.clone());
            data.insert(format!("distill.hint{i}.bias"), b.clone());
            projections.push(Some(Linear::new(
                w.as_tensor().clone(),
                Some(b.as_tensor().clone()),
            )));
        }
        Ok(Hints {
            pairs,
            projections,
            weight,
        })
    }

    /// The pairs.
    pub fn pairs(&self) -> &[HintPair] {
        &self.pairs
    }

    /// `weight * mean over pairs of MSE(project(student_hidden[s]), teacher_hidden[t])`.
    pub fn loss<'a>(
        &self,
        student_hidden: &'a [Tensor],
        teacher_hidden: &'a [Tensor],
    ) -> Result<Tensor> {
        let mut total: Option<Tensor> = None;
        // A network may return fewer activations than its `Arch` listed: an error, not a panic.
        let get = |which, hidden: &'a [Tensor], layer: usize| {
            hidden.get(layer).ok_or(Error::NoSuchHiddenLayer {
                which,
                layer,
                available: hidden.len(),
            })
        };
        for (p, proj) in self.pairs.iter().zip(&self.projections) {
            let l = hint_mse(
                get("student", student_hidden, p.student)?,
                get("teacher", teacher_hidden, p.teacher)?,
                proj.as_ref(),
            )?;
            total = Some(match total {
                None => l,
                Some(t) => (t + l).map_err(Error::candle("hint loss"))?,
            });
        }
        let n = self.pairs.len().max(1) as f64;
        match total {
            Some(t) => (t * (self.weight / n)).map_err(Error::candle("hint loss")),
            None => Err(Error::BadSetting("no hint pairs".into())),
        }
    }
}

/// The KD objective: Hinton loss against the teacher's logits, plus optional hints.
#[derive(Debug)]
pub struct KdObjective {
    teacher: Teacher,
    cfg: KdConfig,
    hints: Option<Hints>,
}

impl KdObjective {
    /// Distils from a live teacher (run every step, without gradients): any candle forward, e.g.
    /// `joulecut_models::Model`, or a closure over a candle-nn network. Checks that the two
    /// architectures agree on the input and output widths.
    pub fn live(
        teacher: impl HiddenModule + Send + Sync + 'static,
        teacher_arch: impl Into<Arch>,
        student: impl Into<Arch>,
        cfg: KdConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        check_compatible(teacher_arch, student)?;
        Ok(KdObjective {
            teacher: Teacher::Live(Box::new(teacher)),
            cfg,
            hints: None,
        })
    }

    /// Distils from cached teacher logits. Checks the number of classes.
    pub fn cached(logits: TeacherLogits, student: impl Into<Arch>, cfg: KdConfig) -> Result<Self> {
        cfg.validate()?;
        let student = student.into();
        if logits.classes() != student.classes {
            return Err(Error::WidthMismatch {
                what: "output",
                teacher: format!("(cached logits {})", logits.teacher_id()),
                teacher_width: logits.classes(),
                student: student.name,
                student_width: student.classes,
            });
        }
        Ok(KdObjective {
            teacher: Teacher::Cached(logits),
            cfg,
            hints: None,
        })
    }

    /// Adds feature distillation; needs a live teacher (hidden activations are not cached).
    pub fn with_hints(mut self, hints: Hints) -> Result<Self> {
        if !matches!(self.teacher, Teacher::Live(_)) {
            return Err(Error::BadSetting(
                "hint (feature) distillation needs the live teacher: its hidden activations are not cached".into(),
            ));
        }
        self.hints = Some(hints);
        Ok(self)
    }

    /// The loss settings.
    pub fn config(&self) -> &KdConfig {
        &self.cfg
    }

    /// The teacher source.
    pub fn teacher(&self) -> &Teacher {
        &self.teacher
    }

    /// The teacher's (detached) logits for a batch: `x` for a live teacher, `indices` (positions
    /// in the training set) for cached logits.
    pub fn teacher_logits(&self, x: &Tensor, indices: &[u32]) -> candle_core::Result<Tensor> {
        match &self.teacher {
            Teacher::Live(m) => Ok(m.forward(x)?.detach()),
            Teacher::Cached(c) => c.gather(indices)?.to_device(x.device()),
        }
    }
}

impl KdObjective {
    /// The loss of one batch and the student's logits, for any candle `student`: `x`/`y` the
    /// batch, `indices` its samples' positions in the training set (used by cached logits). Only
    /// the student's variables are in the graph; the teacher's outputs are detached. With hints,
    /// use [`KdObjective::batch_loss_with_hidden`]: this one cannot see the student's hidden
    /// activations and refuses.
    pub fn batch_loss(
        &self,
        student: &(impl Module + ?Sized),
        x: &Tensor,
        y: &Tensor,
        indices: &[u32],
    ) -> candle_core::Result<(Tensor, Tensor)> {
        if self.hints.is_some() {
            candle_core::bail!(
                "hint (feature) distillation needs the student's hidden activations: call batch_loss_with_hidden"
            );
        }
        self.logit_loss(student, x, y, indices)
    }

    /// [`KdObjective::batch_loss`] for a student that shows its hidden activations, plus the hint
    /// term when hints are set (the projections are in the graph too).
    pub fn batch_loss_with_hidden(
        &self,
        student: &(impl HiddenModule + ?Sized),
        x: &Tensor,
        y: &Tensor,
        indices: &[u32],
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let wrap = candle_core::Error::wrap;
        match (&self.hints, &self.teacher) {
            (Some(h), Teacher::Live(t)) => {
                let (logits, sh) = student.forward_hidden(x)?;
                let (tl, th) = t.forward_hidden(x)?;
                let th: Vec<Tensor> = th.iter().map(Tensor::detach).collect();
                let kd = kd_loss(&logits, &tl.detach(), y, &self.cfg).map_err(wrap)?;
                let hint = h.loss(&sh, &th).map_err(wrap)?;
                Ok(((kd + hint)?, logits))
            }
            _ => self.logit_loss(student, x, y, indices),
        }
    }

    fn logit_loss(
        &self,
        student: &(impl Module + ?Sized),
        x: &Tensor,
        y: &Tensor,
        indices: &[u32],
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let logits = student.forward(x)?;
        let t = self.teacher_logits(x, indices)?;
        let loss = kd_loss(&logits, &t, y, &self.cfg).map_err(candle_core::Error::wrap)?;
        Ok((loss, logits))
    }
}

/// What one [`distill_step`] did.
#[derive(Debug, Clone, Copy)]
pub struct StepOutput {
    /// The batch loss before the update.
    pub loss: f32,
    /// Correct student predictions in the batch, before the update.
    pub correct: usize,
}

/// One teacher-student step for a user's own candle loop: runs the teacher without gradients,
/// the student forward, the KD loss, and `opt.backward_step`. Only the variables the optimiser
/// was built with (the student's) change.
///
/// ```
/// use candle_core::{DType, Device, Module, Tensor};
/// use candle_nn::{Optimizer, VarBuilder, VarMap, linear};
/// use joulecut_distill::{KdConfig, distill_step};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dev = Device::Cpu;
/// let (tvm, svm) = (VarMap::new(), VarMap::new());
/// let teacher = linear(4, 3, VarBuilder::from_varmap(&tvm, DType::F32, &dev).pp("t"))?;
/// let student = linear(4, 3, VarBuilder::from_varmap(&svm, DType::F32, &dev).pp("s"))?;
/// let mut opt = candle_nn::SGD::new(svm.all_vars(), 0.5)?;
/// let x = Tensor::randn(0f32, 1.0, (16, 4), &dev)?;
/// let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0], &dev)?;
/// let cfg = KdConfig::default();
/// let first = distill_step(&mut opt, &student, &teacher, &x, &y, &cfg)?;
/// let mut last = first;
/// for _ in 0..50 {
///     last = distill_step(&mut opt, &student, &teacher, &x, &y, &cfg)?;
/// }
/// assert!(last.loss < first.loss);
/// # Ok(()) }
/// ```
pub fn distill_step<O: candle_nn::Optimizer>(
    opt: &mut O,
    student: &dyn Module,
    teacher: &dyn Module,
    x: &Tensor,
    y: &Tensor,
    cfg: &KdConfig,
) -> Result<StepOutput> {
    let t = teacher
        .forward(x)
        .map_err(Error::candle("teacher forward pass"))?
        .detach();
    let s = student
        .forward(x)
        .map_err(Error::candle("student forward pass"))?;
    let loss = kd_loss(&s, &t, y, cfg)?;
    opt.backward_step(&loss)
        .map_err(Error::candle("backward pass / optimiser step"))?;
    let correct = s
        .argmax(candle_core::D::Minus1)
        .and_then(|p| p.eq(y))
        .and_then(|e| e.to_dtype(DType::U32))
        .and_then(|e| e.sum_all())
        .and_then(|e| e.to_scalar::<u32>())
        .map_err(Error::candle("batch accuracy"))? as usize;
    Ok(StepOutput {
        loss: loss
            .to_scalar::<f32>()
            .map_err(Error::candle("read loss"))?,
        correct,
    })
}
