//! Fused log-softmax + negative log-likelihood (mean cross-entropy).
//!
//! One pass per row forward (max, log-sum-exp, pick the target), one pass per
//! row backward (`(softmax - onehot) * g / batch`), instead of candle's chain
//! of ~8 tensor ops each way.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};

use candle_core::backend::BackendStorage;

use crate::storage::{cpu_f32, view};

struct CrossEntropy;

fn targets_u32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    let CpuStorage::U32(data) = s else {
        bail!("cross_entropy: targets must be u32, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("cross_entropy: targets must be contiguous"),
    }
}

fn dims(logits: &[usize], targets: &[usize]) -> Result<(usize, usize)> {
    match (logits, targets) {
        (&[b, c], &[bt]) if b == bt && c > 0 => Ok((b, c)),
        _ => bail!(
            "cross_entropy: expected logits [batch, classes] and targets [batch], got {logits:?} and {targets:?}"
        ),
    }
}

/// `log(sum(exp(row)))`, computed stably.
fn log_sum_exp(row: &[f32]) -> f32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m + row.iter().map(|&v| (v - m).exp()).sum::<f32>().ln()
}

fn class(t: u32, c: usize) -> Result<usize> {
    let t = t as usize;
    if t >= c {
        bail!("cross_entropy: target {t} out of range for {c} classes")
    }
    Ok(t)
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "joulecut-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, c) = dims(l1.dims(), l2.dims())?;
        let x = cpu_f32(s1, l1, self.name())?;
        let t = targets_u32(s2, l2)?;
        let mut total = 0f64;
        for (row, &ti) in x.chunks_exact(c).zip(t) {
            total += f64::from(log_sum_exp(row) - row[class(ti, c)?]);
        }
        Ok((
            CpuStorage::F32(vec![(total / b as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, c) = dims(logits.dims(), targets.dims())?;
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()? / b as f32;
        let t = targets.to_vec1::<u32>()?;
        let xv = view(logits, self.name())?;
        let mut dx = vec![0f32; b * c];
        for ((row, d), &ti) in xv
            .as_slice()
            .chunks_exact(c)
            .zip(dx.chunks_exact_mut(c))
            .zip(&t)
        {
            let lse = log_sum_exp(row);
            for (dv, &v) in d.iter_mut().zip(row) {
                *dv = (v - lse).exp() * g;
            }
            d[class(ti, c)?] -= g;
        }
        Ok((Some(Tensor::from_vec(dx, (b, c), logits.device())?), None))
    }
}

/// Mean cross-entropy of `logits` `[batch, classes]` against class indices
/// `targets` `[batch]` (u32), as a scalar; equal to
/// `candle_nn::loss::cross_entropy` and PyTorch's `F.cross_entropy`.
/// Differentiable with respect to the logits. The fused kernel runs on the CPU; other devices use
/// candle's ops ([`crate::portable`]).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if !crate::portable::fused_kernels_on(logits.device()) {
        return crate::portable::cross_entropy(logits, targets);
    }
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropy)
}
