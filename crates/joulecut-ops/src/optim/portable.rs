//! The fused kernels' update rules in candle tensor ops, for variables off the CPU: the state lives
//! on the variable's device and each step is a handful of element-wise ops there. Same f32 scalars
//! and operation order as `kernels.rs`.

use candle_core::{Result, Tensor, Var};

use super::kernels::{AdamStep, SgdStep};

/// `g + l2 * p` (the coupled weight decay), or `g`.
fn with_l2(var: &Var, g: &Tensor, l2: f32) -> Result<Tensor> {
    if l2 == 0. {
        Ok(g.clone())
    } else {
        g + var.as_tensor().detach().affine(l2 as f64, 0.)?
    }
}

/// One Adam/AdamW step of `var`; `m` and `v` are its moments on the same device.
pub(crate) fn adam(
    var: &Var,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    s: &AdamStep,
) -> Result<()> {
    let p = var.as_tensor().detach();
    let g = with_l2(var, g, s.l2)?;
    // exp_avg.lerp_(grad, 1 - beta1)
    let mi = (&*m + (&g - &*m)?.affine(s.one_minus_b1 as f64, 0.)?)?;
    // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    let vi = (m_scale(v, s.beta2)? + g.sqr()?.affine(s.one_minus_b2 as f64, 0.)?)?;
    let denom = vi.sqrt()?.affine(1. / s.bc2_sqrt as f64, s.eps as f64)?;
    let upd = (&mi / denom)?.affine(s.step_size as f64, 0.)?;
    let p = if s.decay == 1. {
        p
    } else {
        p.affine(s.decay as f64, 0.)?
    };
    var.set(&(p - upd)?)?;
    *m = mi.detach();
    *v = vi.detach();
    Ok(())
}

fn m_scale(t: &Tensor, k: f32) -> Result<Tensor> {
    t.affine(k as f64, 0.)
}

/// One SGD step of `var`; `buf` is its momentum buffer (`None` before the first step, and always
/// when momentum is 0).
pub(crate) fn sgd(var: &Var, g: &Tensor, buf: &mut Option<Tensor>, s: &SgdStep) -> Result<()> {
    let g = with_l2(var, g, s.l2)?;
    let d = if s.momentum == 0. {
        g
    } else {
        let b = match (buf.take(), s.first) {
            (Some(b), false) => {
                (m_scale(&b, s.momentum)? + g.affine(s.one_minus_damp as f64, 0.)?)?
            }
            _ => g.clone(),
        }
        .detach();
        *buf = Some(b.clone());
        if s.nesterov {
            (g + m_scale(&b, s.momentum)?)?
        } else {
            b
        }
    };
    let p = var.as_tensor().detach();
    var.set(&(p - d.affine(s.lr as f64, 0.)?)?)
}
