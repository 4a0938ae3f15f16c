//! Losses: Hinton knowledge distillation (soft targets at a temperature, mixed with the label
//! loss) and feature ("hint") distillation.
//!
//! The KD loss of a batch is
//! `alpha * T² * KL(softmax(t/T) ‖ softmax(s/T)) + (1 - alpha) * CE(s, y)`, both terms averaged over
//! the batch (PyTorch's `kl_div(..., reduction="batchmean")` and `cross_entropy`). The `T²` factor
//! keeps the soft term's gradient on the same scale as the hard term's when `T` changes.
//!
//! On CPU [`kd_loss`] runs a fused kernel (one pass per row forward, one backward, teacher
//! logits never differentiated); [`kd_loss_reference`] builds the same value from candle ops, works
//! on every device and is the tests' oracle.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use joulecut_distill::{KdConfig, kd_loss};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let s = Tensor::new(&[[1f32, 0.0, -1.0]], &dev)?;
//! let t = Tensor::new(&[[2f32, 0.5, -1.0]], &dev)?;
//! let y = Tensor::new(&[0u32], &dev)?;
//! let cfg = KdConfig { temperature: 2.0, alpha: 0.5, ..KdConfig::default() };
//! let loss = kd_loss(&s, &t, &y, &cfg)?.to_scalar::<f32>()?;
//! assert!(loss > 0.0);
//! # Ok(()) }
//! ```

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, D, DType, Layout, Shape, Tensor, bail};
use candle_nn::ops::{log_softmax, softmax_last_dim};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings of the Hinton KD loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KdConfig {
    /// Softmax temperature `T` (> 0) applied to both teacher and student logits in the soft term.
    pub temperature: f64,
    /// Weight of the soft (teacher) term, in [0, 1]; `1 - alpha` weighs the label term.
    pub alpha: f64,
    /// Label smoothing of the hard (label) term, in [0, 1) (PyTorch's `label_smoothing`).
    pub label_smoothing: f64,
}

/// Default temperature, chosen by experiment on Fashion-MNIST (docs/DISTILLATION.md): with
/// 5-epoch budgets, T = 1 beat T = 2 and T = 4 for every student tried; the textbook T = 4 lost
/// accuracy against the student trained alone.
pub const DEFAULT_TEMPERATURE: f64 = 1.0;
/// Default weight of the teacher term (docs/DISTILLATION.md): 0.9 at T = 1.
pub const DEFAULT_ALPHA: f64 = 0.9;

impl Default for KdConfig {
    fn default() -> Self {
        KdConfig {
            temperature: DEFAULT_TEMPERATURE,
            alpha: DEFAULT_ALPHA,
            label_smoothing: 0.0,
        }
    }
}

impl KdConfig {
    /// Checks ranges: `T > 0` and finite, `alpha` in [0, 1], label smoothing in [0, 1).
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::BadTemperature(self.temperature));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::BadAlpha(self.alpha));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::BadSetting(format!(
                "label smoothing must be in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        Ok(())
    }
}

/// The KD loss of a batch (a scalar), differentiable with respect to `student` only: `student` and
/// `teacher` are logits `[batch, classes]`, `targets` class indices `[batch]` (u32). The teacher's
/// logits are detached. Fused on CPU; elsewhere [`kd_loss_reference`].
pub fn kd_loss(
    student: &Tensor,
    teacher: &Tensor,
    targets: &Tensor,
    cfg: &KdConfig,
) -> Result<Tensor> {
    cfg.validate()?;
    check_shapes(student, teacher, targets)?;
    if !student.device().is_cpu() {
        return kd_loss_reference(student, teacher, targets, cfg);
    }
    let op = FusedKd {
        t: cfg.temperature as f32,
        alpha: cfg.alpha as f32,
        eps: cfg.label_smoothing as f32,
    };
    let s = student
        .to_dtype(DType::F32)
        .and_then(|s| s.contiguous())
        .map_err(Error::candle("prepare student logits"))?;
    let t = teacher
        .detach()
        .to_dtype(DType::F32)
        .and_then(|t| t.contiguous())
        .map_err(Error::candle("prepare teacher logits"))?;
    let y = targets
        .contiguous()
        .map_err(Error::candle("prepare targets"))?;
    s.apply_op3(&t, &y, op)
        .map_err(Error::candle("distillation loss"))
}

/// The KD loss from plain candle ops (any device, any float dtype): the reference for [`kd_loss`].
pub fn kd_loss_reference(
    student: &Tensor,
    teacher: &Tensor,
    targets: &Tensor,
    cfg: &KdConfig,
) -> Result<Tensor> {
    cfg.validate()?;
    check_shapes(student, teacher, targets)?;
    let soft = soft_kl(student, teacher, cfg.temperature)?;
    let hard = smoothed_cross_entropy(student, targets, cfg.label_smoothing)?;
    let t2 = cfg.temperature * cfg.temperature;
    ((soft * (cfg.alpha * t2)).and_then(|s| s + (hard * (1.0 - cfg.alpha))?))
        .map_err(Error::candle("distillation loss"))
}

/// `KL(softmax(teacher/T) ‖ softmax(student/T))` averaged over the batch (no `T²` factor); the
/// teacher is detached.
pub fn soft_kl(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let f = || -> candle_core::Result<Tensor> {
        let b = student.dim(0)? as f64;
        let log_ps = log_softmax(&(student / temperature)?, D::Minus1)?;
        let tt = (teacher.detach() / temperature)?;
        let log_pt = log_softmax(&tt, D::Minus1)?;
        let pt = softmax_last_dim(&tt.contiguous()?)?;
        let kl = (pt * (log_pt - log_ps)?)?.sum_all()?;
        kl / b
    };
    f().map_err(Error::candle("soft-target KL divergence"))
}

/// Mean cross-entropy against labels smoothed by `eps` (`(1 - eps) * onehot + eps / classes`).
pub fn smoothed_cross_entropy(logits: &Tensor, targets: &Tensor, eps: f64) -> Result<Tensor> {
    let f = || -> candle_core::Result<Tensor> {
        let ce = candle_nn::loss::cross_entropy(logits, targets)?;
        if eps == 0.0 {
            return Ok(ce);
        }
        let logp = log_softmax(logits, D::Minus1)?;
        let uniform = (logp.mean(D::Minus1)?.mean_all()? * -1.0)?;
        (ce * (1.0 - eps))? + (uniform * eps)?
    };
    f().map_err(Error::candle("cross-entropy"))
}

fn check_shapes(student: &Tensor, teacher: &Tensor, targets: &Tensor) -> Result<()> {
    let ok = student.rank() == 2 && student.dims() == teacher.dims() && {
        let d = targets.dims();
        d.len() == 1 && d[0] == student.dims()[0]
    };
    if !ok || student.dims()[1] == 0 {
        return Err(Error::BadSetting(format!(
            "distillation loss: expected student and teacher logits [batch, classes] and targets [batch], got {:?}, {:?} and {:?}",
            student.dims(),
            teacher.dims(),
            targets.dims()
        )));
    }
    Ok(())
}

/// The fused CPU kernel: `(student, teacher, targets) -> loss`.
struct FusedKd {
    t: f32,
    alpha: f32,
    eps: f32,
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(d) = s else {
        bail!("kd_loss: expected f32 logits, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&d[a..b]),
        None => bail!("kd_loss: expected contiguous logits"),
    }
}

fn u32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [u32]> {
    let CpuStorage::U32(d) = s else {
        bail!("kd_loss: targets must be u32, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&d[a..b]),
        None => bail!("kd_loss: expected contiguous targets"),
    }
}

/// Writes `softmax(row * scale)` into `out` and returns `log(sum(exp(row * scale)))`.
fn softmax_into(row: &[f32], scale: f32, out: &mut [f32]) -> f32 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v * scale));
    let mut sum = 0f32;
    for (o, &v) in out.iter_mut().zip(row) {
        *o = (v * scale - m).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
    m + sum.ln()
}

impl FusedKd {
    /// Per-row loss and (optionally) its gradient with respect to the student row.
    fn row(
        &self,
        s: &[f32],
        t: &[f32],
        y: usize,
        scratch: &mut [f32],
        grad: Option<(&mut [f32], f32)>,
    ) -> f32 {
        let c = s.len();
        let inv_t = 1.0 / self.t;
        let (pt, rest) = scratch.split_at_mut(c);
        let (ps_t, ps) = rest.split_at_mut(c);
        let lse_t = softmax_into(t, inv_t, pt);
        let lse_st = softmax_into(s, inv_t, ps_t);
        let lse_s = softmax_into(s, 1.0, ps);
        // KL(pt || ps_T) = sum pt * (log pt - log ps_T)
        let mut kl = 0f32;
        for i in 0..c {
            if pt[i] > 0.0 {
                let log_pt = t[i] * inv_t - lse_t;
                let log_ps = s[i] * inv_t - lse_st;
                kl += pt[i] * (log_pt - log_ps);
            }
        }
        let mean_s = s.iter().sum::<f32>() / c as f32;
        let ce = (1.0 - self.eps) * (lse_s - s[y]) + self.eps * (lse_s - mean_s);
        let t2 = self.t * self.t;
        if let Some((d, g)) = grad {
            let soft = self.alpha * self.t * g;
            let hard = (1.0 - self.alpha) * g;
            let smooth = self.eps / c as f32;
            for i in 0..c {
                let target = if i == y { 1.0 - self.eps } else { 0.0 } + smooth;
                d[i] = soft * (ps_t[i] - pt[i]) + hard * (ps[i] - target);
            }
        }
        self.alpha * t2 * kl + (1.0 - self.alpha) * ce
    }
}

fn class(y: u32, c: usize) -> candle_core::Result<usize> {
    if (y as usize) >= c {
        bail!("kd_loss: target {y} out of range for {c} classes")
    }
    Ok(y as usize)
}

impl CustomOp3 for FusedKd {
    fn name(&self) -> &'static str {
        "joulecut-kd-loss"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c) = l1.shape().dims2()?;
        let (s, t, y) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, u32_slice(s3, l3)?);
        let mut scratch = vec![0f32; 3 * c];
        let mut total = 0f64;
        for ((sr, tr), &yi) in s.chunks_exact(c).zip(t.chunks_exact(c)).zip(y) {
            total += f64::from(self.row(sr, tr, class(yi, c)?, &mut scratch, None));
        }
        Ok((
            CpuStorage::F32(vec![(total / b as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, c) = student.dims2()?;
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()? / b as f32;
        let s = student.flatten_all()?.to_vec1::<f32>()?;
        let t = teacher.flatten_all()?.to_vec1::<f32>()?;
        let y = targets.to_vec1::<u32>()?;
        let mut scratch = vec![0f32; 3 * c];
        let mut dx = vec![0f32; b * c];
        for (((sr, tr), &yi), d) in s
            .chunks_exact(c)
            .zip(t.chunks_exact(c))
            .zip(&y)
            .zip(dx.chunks_exact_mut(c))
        {
            self.row(sr, tr, class(yi, c)?, &mut scratch, Some((d, g)));
        }
        Ok((
            Some(Tensor::from_vec(dx, (b, c), student.device())?),
            None,
            None,
        ))
    }
}

/// Mean squared error between a student's hidden activation (optionally projected to the
/// teacher's width) and the teacher's (detached) — the hint loss of FitNets.
pub fn hint_mse(
    student_hidden: &Tensor,
    teacher_hidden: &Tensor,
    projection: Option<&candle_nn::Linear>,
) -> Result<Tensor> {
    let f = || -> candle_core::Result<Tensor> {
        let h = match projection {
            Some(p) => candle_core::Module::forward(p, student_hidden)?,
            None => student_hidden.clone(),
        };
        (h - teacher_hidden.detach())?.sqr()?.mean_all()
    };
    f().map_err(Error::candle("hint loss"))
}
