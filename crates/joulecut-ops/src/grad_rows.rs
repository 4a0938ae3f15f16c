//! The row-wise ops of a transformer layer as differentiable candle ops: LayerNorm, softmax over
//! the last dimension and the exact (erf) GELU, each with a forward and a backward kernel.
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` have no backward pass, and its composed
//! versions spend five to eight tensor ops (and allocations) per call; training an encoder runs
//! each of these a dozen times per layer and step. Forward passes reuse [`crate::rows`]; the
//! backward passes recompute what they need from the input (LayerNorm's mean and variance) or the
//! output (softmax), so nothing is kept between the passes. Parameter gradients (LayerNorm's
//! gamma and beta) are summed over fixed blocks of rows and then in block order, so a step's
//! result does not depend on the number of threads.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let x = Var::from_tensor(&Tensor::new(&[[1f32, 2.0, 4.0], [0.5, -1.0, 3.0]], &dev)?)?;
//! let g = Tensor::ones(3, candle_core::DType::F32, &dev)?;
//! let b = Tensor::zeros(3, candle_core::DType::F32, &dev)?;
//! let y = joulecut_ops::layer_norm(x.as_tensor(), &g, &b, 1e-12)?;
//! let p = joulecut_ops::softmax_last_dim(&joulecut_ops::gelu(&y)?)?;
//! let grads = p.sqr()?.sum_all()?.backward()?;
//! assert_eq!(grads.get(&x).unwrap().dims(), &[2, 3]);
//! # Ok(()) }
//! ```

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::isa::Isa;
use crate::rows::{
    LayerNorm, centred_sq, dispatch, erf_fast, exp_fast, gelu as gelu_scalar, rows_per_task, sum,
};
use crate::storage::{cpu_f32, view};

/// Rows per block of a parameter-gradient reduction (fixed, so the sum's order is too).
const REDUCE_ROWS: usize = 64;

fn last_dim(shape: &[usize], op: &str) -> Result<usize> {
    match shape.last() {
        Some(&w) if w > 0 => Ok(w),
        _ => bail!("{op}: expected a non-empty last dimension, got {shape:?}"),
    }
}

// ---- LayerNorm ----

struct LayerNormOp {
    eps: f32,
}

#[inline(always)]
fn ln_fwd_body(x: &[f32], y: &mut [f32], ln: &LayerNorm<'_>) {
    y.copy_from_slice(x);
    let w = ln.gamma.len();
    for row in y.chunks_exact_mut(w) {
        let n = w as f32;
        let mean = sum(row) / n;
        let inv = 1.0 / (centred_sq(row, mean) / n + ln.eps).sqrt();
        for ((v, &g), &b) in row.iter_mut().zip(ln.gamma).zip(ln.beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// One block of rows of LayerNorm's backward pass: writes `dx`, adds into `dgamma`/`dbeta`.
#[inline(always)]
fn ln_bwd_body(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    eps: f32,
    (dx, dgamma, dbeta): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let w = gamma.len();
    let n = w as f32;
    for ((xr, gr), dxr) in x
        .chunks_exact(w)
        .zip(dy.chunks_exact(w))
        .zip(dx.chunks_exact_mut(w))
    {
        let mean = sum(xr) / n;
        let inv = 1.0 / (centred_sq(xr, mean) / n + eps).sqrt();
        // with x̂ = (x - mean)·inv and ĝ = dy·gamma:
        // dx = inv · (ĝ - mean(ĝ) - x̂ · mean(ĝ · x̂))
        let (mut s_g, mut s_gx) = (0f32, 0f32);
        for i in 0..w {
            let xh = (xr[i] - mean) * inv;
            let g = gr[i] * gamma[i];
            s_g += g;
            s_gx += g * xh;
            dgamma[i] += gr[i] * xh;
            dbeta[i] += gr[i];
        }
        let (m_g, m_gx) = (s_g / n, s_gx / n);
        for i in 0..w {
            let xh = (xr[i] - mean) * inv;
            dxr[i] = inv * (gr[i] * gamma[i] - m_g - xh * m_gx);
        }
    }
}

dispatch!(ln_fwd_isa, ln_fwd_avx2, ln_fwd_body, (x: &[f32], y: &mut [f32], ln: &LayerNorm<'_>));
dispatch!(
    ln_bwd_isa,
    ln_bwd_avx2,
    ln_bwd_body,
    (x: &[f32], dy: &[f32], gamma: &[f32], eps: f32, out: (&mut [f32], &mut [f32], &mut [f32]))
);

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "joulecut-layer-norm"
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
        let name = self.name();
        let w = last_dim(l1.dims(), name)?;
        if l2.dims() != [w] || l3.dims() != [w] {
            bail!(
                "{name}: gamma and beta must be [{w}], got {:?} and {:?}",
                l2.dims(),
                l3.dims()
            );
        }
        let (x, gamma, beta) = (
            cpu_f32(s1, l1, name)?,
            cpu_f32(s2, l2, name)?,
            cpu_f32(s3, l3, name)?,
        );
        let ln = LayerNorm {
            gamma,
            beta,
            eps: self.eps,
        };
        let mut y = vec![0f32; x.len()];
        let isa = Isa::detected();
        let per = rows_per_task(x.len() / w, w) * w;
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .for_each(|(yc, xc)| ln_fwd_isa(isa, xc, yc, &ln));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let w = last_dim(x.dims(), name)?;
        let grad = grad.contiguous()?;
        let (xv, gv, gam) = (view(x, name)?, view(&grad, name)?, view(gamma, name)?);
        let (xs, gs, gamma_s) = (xv.as_slice(), gv.as_slice(), gam.as_slice());
        let mut dx = vec![0f32; xs.len()];
        let block = REDUCE_ROWS * w;
        let isa = Isa::detected();
        let eps = self.eps;
        // one (dgamma, dbeta) partial per fixed block of rows, summed in block order below
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(block)
            .zip(xs.par_chunks(block).zip(gs.par_chunks(block)))
            .map(|(dxc, (xc, gc))| {
                let (mut dg, mut db) = (vec![0f32; w], vec![0f32; w]);
                ln_bwd_isa(isa, xc, gc, gamma_s, eps, (dxc, &mut dg, &mut db));
                (dg, db)
            })
            .collect();
        let (mut dgamma, mut dbeta) = (vec![0f32; w], vec![0f32; w]);
        for (dg, db) in &partials {
            dgamma.iter_mut().zip(dg).for_each(|(a, b)| *a += b);
            dbeta.iter_mut().zip(db).for_each(|(a, b)| *a += b);
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dgamma, w, dev)?),
            Some(Tensor::from_vec(dbeta, w, dev)?),
        ))
    }
}

/// LayerNorm over the last dimension, `(x - mean) / sqrt(var + eps) · gamma + beta` (biased
/// variance, as PyTorch), differentiable in `x`, `gamma` and `beta`. f32; the fused kernels run on
/// the CPU, other devices use candle's ops ([`crate::portable`]).
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    if !crate::portable::fused_kernels_on(x.device()) {
        return crate::portable::layer_norm(x, gamma, beta, eps);
    }
    x.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        LayerNormOp { eps },
    )
}

// ---- softmax ----

struct SoftmaxOp;

#[inline(always)]
fn softmax_bwd_body(y: &[f32], dy: &[f32], dx: &mut [f32], w: usize) {
    for ((yr, gr), dr) in y
        .chunks_exact(w)
        .zip(dy.chunks_exact(w))
        .zip(dx.chunks_exact_mut(w))
    {
        let mut s = 0f32;
        for i in 0..w {
            s += yr[i] * gr[i];
        }
        for i in 0..w {
            dr[i] = yr[i] * (gr[i] - s);
        }
    }
}

dispatch!(softmax_bwd_isa, softmax_bwd_avx2, softmax_bwd_body, (y: &[f32], dy: &[f32], dx: &mut [f32], w: usize));

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "joulecut-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = last_dim(l.dims(), self.name())?;
        let mut y = cpu_f32(s, l, self.name())?.to_vec();
        let isa = Isa::detected();
        let per = rows_per_task(y.len() / w, w) * w;
        y.par_chunks_mut(per).for_each(|c| {
            for row in c.chunks_exact_mut(w) {
                crate::rows::softmax_with(isa, row);
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let name = self.name();
        let w = last_dim(res.dims(), name)?;
        let grad = grad.contiguous()?;
        let (yv, gv) = (view(res, name)?, view(&grad, name)?);
        let mut dx = vec![0f32; yv.as_slice().len()];
        let isa = Isa::detected();
        let per = rows_per_task(dx.len() / w, w) * w;
        dx.par_chunks_mut(per)
            .zip(
                yv.as_slice()
                    .par_chunks(per)
                    .zip(gv.as_slice().par_chunks(per)),
            )
            .for_each(|(d, (y, g))| softmax_bwd_isa(isa, y, g, d, w));
        Ok(Some(Tensor::from_vec(dx, res.shape(), res.device())?))
    }
}

/// Softmax over the last dimension, differentiable (candle-nn's `softmax_last_dim` is not).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !crate::portable::fused_kernels_on(x.device()) {
        return candle_core::Tensor::exp(
            &x.broadcast_sub(&x.max_keepdim(candle_core::D::Minus1)?)?,
        )
        .and_then(|e| e.broadcast_div(&e.sum_keepdim(candle_core::D::Minus1)?));
    }
    x.contiguous()?.apply_op1(SoftmaxOp)
}

// ---- GELU ----

struct GeluOp;

#[inline(always)]
fn gelu_fwd_body(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = gelu_scalar(x);
    }
}

/// `dx = dy · (Φ(x) + x·φ(x))`, the derivative of `x·Φ(x)`.
#[inline(always)]
fn gelu_bwd_body(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
        let cdf = 0.5 * (1.0 + erf_fast(x * std::f32::consts::FRAC_1_SQRT_2));
        let pdf = exp_fast(-0.5 * x * x) * INV_SQRT_2PI;
        *d = g * (cdf + x * pdf);
    }
}

dispatch!(gelu_fwd_isa, gelu_fwd_avx2, gelu_fwd_body, (x: &[f32], y: &mut [f32]));
dispatch!(gelu_bwd_isa, gelu_bwd_avx2, gelu_bwd_body, (x: &[f32], dy: &[f32], dx: &mut [f32]));

/// Chunk length for an element-wise pass over `n` values.
fn elementwise_chunk(n: usize) -> usize {
    rows_per_task(n.div_ceil(64), 64) * 64
}

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "joulecut-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        let isa = Isa::detected();
        let per = elementwise_chunk(x.len());
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .for_each(|(y, x)| gelu_fwd_isa(isa, x, y));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let name = self.name();
        let grad = grad.contiguous()?;
        let (xv, gv) = (view(arg, name)?, view(&grad, name)?);
        let mut dx = vec![0f32; xv.as_slice().len()];
        let isa = Isa::detected();
        let per = elementwise_chunk(dx.len());
        dx.par_chunks_mut(per)
            .zip(
                xv.as_slice()
                    .par_chunks(per)
                    .zip(gv.as_slice().par_chunks(per)),
            )
            .for_each(|(d, (x, g))| gelu_bwd_isa(isa, x, g, d));
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// The exact GELU, `x·Φ(x)` (BERT's `gelu`), differentiable, through the vectorised `erf`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !crate::portable::fused_kernels_on(x.device()) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(GeluOp)
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Var};

    use super::*;

    fn input(rows: usize, w: usize, seed: usize) -> Tensor {
        let v: Vec<f32> = (0..rows * w)
            .map(|i| (((i * 37 + seed * 11) % 101) as f32 - 50.0) / 17.0)
            .collect();
        Tensor::from_vec(v, (rows, w), &Device::Cpu).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let d = d.to_scalar::<f32>().unwrap();
        assert!(d < tol, "max abs diff {d}");
    }

    /// Each op and its gradients against the same maths in candle's own (differentiable) ops.
    #[test]
    fn ops_and_gradients_match_candle() {
        let (rows, w) = (150, 23);
        let x = Var::from_tensor(&input(rows, w, 1)).unwrap();
        let gamma = input(1, w, 2).squeeze(0).unwrap().affine(0.3, 1.0).unwrap();
        let gamma = Var::from_tensor(&gamma).unwrap();
        let beta = Var::from_tensor(&input(1, w, 3).squeeze(0).unwrap()).unwrap();
        let weights = input(rows, w, 4);
        let loss = |y: &Tensor| (y * &weights).unwrap().sum_all().unwrap();

        let ours = layer_norm(&x, &gamma, &beta, 1e-5).unwrap();
        let plain = crate::portable::layer_norm(&x, &gamma, &beta, 1e-5).unwrap();
        close(&ours, &plain, 1e-5);
        let (g1, g2) = (
            loss(&ours).backward().unwrap(),
            loss(&plain).backward().unwrap(),
        );
        for v in [&x, &gamma, &beta] {
            close(g1.get(v).unwrap(), g2.get(v).unwrap(), 2e-4);
        }

        let ours = softmax_last_dim(&x).unwrap();
        let plain = candle_nn_softmax(&x);
        close(&ours, &plain, 1e-6);
        let (g1, g2) = (
            loss(&ours).backward().unwrap(),
            loss(&plain).backward().unwrap(),
        );
        close(g1.get(&x).unwrap(), g2.get(&x).unwrap(), 1e-5);

        let ours = gelu(&x).unwrap();
        let plain = x.gelu_erf().unwrap();
        close(&ours, &plain, 1e-5);
        let (g1, g2) = (
            loss(&ours).backward().unwrap(),
            loss(&plain).backward().unwrap(),
        );
        close(g1.get(&x).unwrap(), g2.get(&x).unwrap(), 1e-4);
    }

    fn candle_nn_softmax(x: &Tensor) -> Tensor {
        let e = x
            .broadcast_sub(&x.max_keepdim(D::Minus1).unwrap())
            .unwrap()
            .exp()
            .unwrap();
        e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
    }

    #[test]
    fn layer_norm_gradients_do_not_depend_on_threads() {
        let x = Var::from_tensor(&input(300, 31, 5)).unwrap();
        let gamma = Var::from_tensor(&input(1, 31, 6).squeeze(0).unwrap()).unwrap();
        let beta = Var::from_tensor(&input(1, 31, 7).squeeze(0).unwrap()).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = layer_norm(&x, &gamma, &beta, 1e-12).unwrap();
                let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                g.get(&gamma).unwrap().to_vec1::<f32>().unwrap()
            })
        };
        assert_eq!(run(1), run(3));
    }
}
