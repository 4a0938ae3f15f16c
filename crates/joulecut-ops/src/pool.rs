//! Max pooling with a square window and stride equal to the window, NCHW.
//!
//! The backward pass recomputes each window's argmax from the saved input (the
//! first maximum wins, as in PyTorch) and writes the gradient there; windows do
//! not overlap, so no accumulation is needed.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::storage::{cpu_f32, threads, view};

/// Input elements below which pooling stays on one thread.
const MIN_PAR_ELEMS: usize = 16 * 1024;

struct MaxPool2d {
    k: usize,
}

#[derive(Clone, Copy)]
struct PoolGeom {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl PoolGeom {
    fn new(dims: &[usize], k: usize) -> Result<Self> {
        let &[n, c, h, w] = dims else {
            bail!("max_pool2d: expected a 4-D input, got {dims:?}")
        };
        if k == 0 || h < k || w < k {
            bail!("max_pool2d: window {k} does not fit the input {h}x{w}")
        }
        Ok(Self {
            planes: n * c,
            h,
            w,
            oh: h / k,
            ow: w / k,
        })
    }
}

/// Whether `v` replaces `m` as a window's maximum: larger, or the first NaN. Bitwise `|`/`&` so the
/// comparison compiles to selects rather than branches (pooled values are ~random: a branch
/// mispredicts every other element).
#[inline(always)]
pub(crate) fn takes(v: f32, m: f32) -> bool {
    (v > m) | (v.is_nan() & !m.is_nan())
}

/// Index (inside the plane) of the first maximum of window `(oy, ox)`.
#[inline(always)]
fn argmax(plane: &[f32], g: &PoolGeom, k: usize, oy: usize, ox: usize) -> usize {
    let mut best = oy * k * g.w + ox * k;
    let mut m = plane[best];
    for dy in 0..k {
        let row = (oy * k + dy) * g.w + ox * k;
        for (dx, &v) in plane[row..row + k].iter().enumerate() {
            let t = takes(v, m);
            best = if t { row + dx } else { best };
            m = if t { v } else { m };
        }
    }
    best
}

/// One output row of a 2x2 pool: the same scan order and tie/NaN rule as [`argmax`], values only.
#[inline(always)]
fn pool2_row(r0: &[f32], r1: &[f32], o: &mut [f32]) {
    for (ox, o) in o.iter_mut().enumerate() {
        let mut m = r0[2 * ox];
        for v in [r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]] {
            m = if takes(v, m) { v } else { m };
        }
        *o = m;
    }
}

fn par_planes(
    out: &mut [f32],
    len: usize,
    total: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if total < MIN_PAR_ELEMS || threads() == 1 {
        out.chunks_exact_mut(len)
            .enumerate()
            .for_each(|(i, o)| f(i, o));
    } else {
        let min = (MIN_PAR_ELEMS / len.max(1)).max(1);
        out.par_chunks_exact_mut(len)
            .with_min_len(min)
            .enumerate()
            .for_each(|(i, o)| f(i, o));
    }
}

fn forward(x: &[f32], g: &PoolGeom, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; g.planes * g.oh * g.ow];
    let il = g.h * g.w;
    par_planes(&mut out, g.oh * g.ow, x.len(), |pi, o| {
        let plane = &x[pi * il..(pi + 1) * il];
        for oy in 0..g.oh {
            let orow = &mut o[oy * g.ow..(oy + 1) * g.ow];
            if k == 2 {
                let r0 = &plane[2 * oy * g.w..(2 * oy + 1) * g.w];
                let r1 = &plane[(2 * oy + 1) * g.w..(2 * oy + 2) * g.w];
                pool2_row(r0, r1, orow);
            } else {
                for (ox, v) in orow.iter_mut().enumerate() {
                    *v = plane[argmax(plane, g, k, oy, ox)];
                }
            }
        }
    });
    out
}

fn backward(x: &[f32], gy: &[f32], g: &PoolGeom, k: usize) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    let (il, ol) = (g.h * g.w, g.oh * g.ow);
    par_planes(&mut dx, il, x.len(), |pi, d| {
        let plane = &x[pi * il..(pi + 1) * il];
        let gp = &gy[pi * ol..(pi + 1) * ol];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                d[argmax(plane, g, k, oy, ox)] = gp[oy * g.ow + ox];
            }
        }
    });
    dx
}

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "joulecut-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = PoolGeom::new(l.dims(), self.k)?;
        let x = cpu_f32(s, l, self.name())?;
        let d = l.dims();
        Ok((
            CpuStorage::F32(forward(x, &g, self.k)),
            Shape::from((d[0], d[1], g.oh, g.ow)),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = PoolGeom::new(arg.dims(), self.k)?;
        let grad = grad.contiguous()?;
        let xv = view(arg, self.name())?;
        let gv = view(&grad, self.name())?;
        let dx = backward(xv.as_slice(), gv.as_slice(), &g, self.k);
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Max pooling over `k x k` windows with stride `k` (PyTorch's
/// `max_pool2d(x, k)`): `[n, c, h, w]` -> `[n, c, h / k, w / k]`, trailing rows
/// and columns that do not fill a window are dropped. Differentiable; f32. The
/// fused kernel runs on the CPU, other devices use candle's pool ([`crate::portable`]).
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    if !crate::portable::fused_kernels_on(x.device()) {
        return crate::portable::max_pool2d(x, k);
    }
    x.contiguous()?.apply_op1(MaxPool2d { k })
}
