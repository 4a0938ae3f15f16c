//! Fully connected layer `y = x·Wᵀ + b` (optionally followed by a ReLU) as one
//! custom op.
//!
//! Against candle's `Linear` (matmul, broadcast add, then relu as separate
//! ops) this saves the bias and ReLU passes forward and backward, and skips
//! the input gradient when the input needs none (a network's first layer:
//! 784x300 of the MLP's 266k weights). All three products are single `gemm`
//! calls on the row-major buffers, no transposed copies.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};

use crate::matmul::{MatRef, matmul_f32};
use crate::storage::{cpu_f32, threads, view};

/// Multiply-adds below which a product runs on one thread.
const PAR_MACS: usize = 1 << 18;

/// Threads for a product of `macs` multiply-adds: 1 (the calling thread) below [`PAR_MACS`].
fn par(macs: usize) -> usize {
    if macs >= PAR_MACS && threads() > 1 {
        threads()
    } else {
        1
    }
}

/// `dst (m x n, col-major with column stride dcs) = lhs · rhs`, with explicit strides
/// (`cs`, `rs`) for both operands.
fn mm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dcs: usize,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
) {
    matmul_f32(
        (m, n, k),
        dst,
        dcs,
        false,
        MatRef::new(lhs.0, lhs.1, lhs.2),
        MatRef::new(rhs.0, rhs.1, rhs.2),
        par(m * n * k),
    );
}

struct Linear {
    relu: bool,
}

fn dims(x: &[usize], w: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
    match (x, w, b) {
        (&[batch, i], &[o, wi], &[bo]) if i == wi && o == bo => Ok((batch, i, o)),
        _ => bail!("linear: expected x [batch, in], w [out, in], b [out], got {x:?}, {w:?}, {b:?}"),
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        if self.relu {
            "joulecut-linear-relu"
        } else {
            "joulecut-linear"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, i, o) = dims(l1.dims(), l2.dims(), l3.dims())?;
        let (x, b) = (cpu_f32(s1, l1, self.name())?, cpu_f32(s3, l3, self.name())?);
        let mut y = vec![0f32; n * o];
        // Weights may be stored in half precision (inference): the kernel widens them as it reads.
        let Some((start, end)) = l2.contiguous_offsets() else {
            bail!("{}: expected a contiguous weight", self.name())
        };
        match s2 {
            CpuStorage::F32(w) => {
                crate::dot::xwt(x, n, &w[start..end], (o, i), b, self.relu, &mut y)
            }
            CpuStorage::F16(w) => {
                crate::dot::xwt(x, n, &w[start..end], (o, i), b, self.relu, &mut y)
            }
            CpuStorage::BF16(w) => {
                crate::dot::xwt(x, n, &w[start..end], (o, i), b, self.relu, &mut y)
            }
            other => bail!(
                "{}: weights must be f32, f16 or bf16, got {:?}",
                self.name(),
                other.dtype()
            ),
        }
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let (n, i, o) = dims(x.dims(), w.dims(), b.dims())?;
        let grad = grad.contiguous()?;
        let gv = view(&grad, name)?;
        let masked;
        let gy: &[f32] = if self.relu {
            let rv = view(res, name)?;
            masked = gv
                .as_slice()
                .iter()
                .zip(rv.as_slice())
                .map(|(&d, &r)| if r > 0. { d } else { 0. })
                .collect::<Vec<f32>>();
            &masked
        } else {
            gv.as_slice()
        };
        let dev = x.device();
        let dw = if w.track_op() {
            let xv = view(x, name)?;
            let mut dw = vec![0f32; o * i];
            // dWᵀ (i x o, cs = i) = xᵀ (i x n: cs i, rs 1) · gy (n x o: cs 1, rs o).
            mm((i, o, n), &mut dw, i, (xv.as_slice(), i, 1), (gy, 1, o));
            Some(Tensor::from_vec(dw, (o, i), dev)?)
        } else {
            None
        };
        let db = if b.track_op() {
            let mut db = vec![0f32; o];
            for row in gy.chunks_exact(o) {
                db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
            }
            Some(Tensor::from_vec(db, o, dev)?)
        } else {
            None
        };
        let dx = if x.track_op() {
            let wv = view(w, name)?;
            let mut dx = vec![0f32; n * i];
            // dxᵀ (i x n, cs = i) = Wᵀ (i x o: cs i, rs 1) · gyᵀ (o x n: cs o, rs 1).
            mm((i, n, o), &mut dx, i, (wv.as_slice(), i, 1), (gy, o, 1));
            Some(Tensor::from_vec(dx, (n, i), dev)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

fn apply(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    if !crate::portable::fused_kernels_on(x.device()) {
        // candle's matmul wants one dtype: half-precision weights are widened first
        return crate::portable::linear(x, &w.to_dtype(candle_core::DType::F32)?, b, relu);
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear { relu })
}

/// `x·wᵀ + b` for `x` `[batch, in]`, `w` `[out, in]` (candle's and PyTorch's
/// `Linear` layout) and `b` `[out]`; differentiable. f32; the fused kernel runs on the CPU, other
/// devices use candle's matmul ([`crate::portable`]). On the CPU `w` may also be f16 or bf16
/// (inference: no gradient for it), read as stored and widened in registers.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    apply(x, w, b, false)
}

/// `relu(x·wᵀ + b)`, fused: see [`linear`].
pub fn linear_relu(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    apply(x, w, b, true)
}
