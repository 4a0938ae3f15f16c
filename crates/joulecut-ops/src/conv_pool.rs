//! Convolution + ReLU + max pooling (window `k`, stride `k`) fused into one op: the conv blocks
//! of LeNet-style networks.
//!
//! Forward, per sample: the convolution ([`crate::conv`]'s im2col + gemm) writes into a
//! per-thread buffer that stays in cache; ReLU and pooling read it there and write the pooled
//! output plus one byte per window, the argmax's position inside the window. The full-size
//! activation never reaches memory, and neither does its gradient: the composed ops wrote it,
//! read it back to pool, and in the backward pass allocated, zero-filled, scattered into and
//! (candle's gradient accumulation) copied it again.
//!
//! Backward, per sample: the pooled gradient goes to each window's argmax in a per-thread buffer
//! (only where the pooled value is > 0: the ReLU's mask); from there the weight gradient
//! `gy · colsᵀ` accumulates per thread (dot-product tiles, no packing) and the input gradient is
//! `Wᵀ · gy` (one gemm) folded back onto the image (col2im).

use std::cell::RefCell;
use std::sync::Mutex;

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::conv::{COL, Geom, columns, conv_sample, operands};
use crate::matmul::{MatRef, matmul_f32};
use crate::pool::takes;
use crate::storage::{threads, view};

/// Largest pooling window: argmax positions are stored as bytes.
const MAX_K: usize = 16;

thread_local! {
    /// Per-thread conv output (forward) or its gradient (backward) of one sample.
    static ACT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread column-matrix gradient `Wᵀ · gy` of one sample.
    static DCOL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Pooled sizes on top of the convolution's geometry.
#[derive(Clone, Copy)]
struct Dims {
    g: Geom,
    k: usize,
    ph: usize,
    pw: usize,
}

impl Dims {
    fn new(x: &[usize], w: &[usize], pad: usize, k: usize) -> Result<Self> {
        let g = Geom::new(x, w, pad)?;
        if k == 0 || k > MAX_K || g.oh < k || g.ow < k {
            bail!(
                "conv2d_relu_pool2d: window {k} must be 1..={MAX_K} and fit the {}x{} conv output",
                g.oh,
                g.ow
            )
        }
        Ok(Self {
            g,
            k,
            ph: g.oh / k,
            pw: g.ow / k,
        })
    }

    /// Pooled outputs per sample.
    fn pooled_len(&self) -> usize {
        self.g.o * self.ph * self.pw
    }
}

/// ReLU then max pooling of one sample's conv output `y` (`o` planes of `oh x ow`). The ReLU is
/// applied first (as the composed ops do), so the maximum, its tie rule (first wins) and NaN
/// rule are [`crate::max_pool2d`]'s on the ReLU output.
#[inline(always)]
fn relu_pool(y: &[f32], d: &Dims, k: usize, out: &mut [f32], arg: &mut [u8]) {
    let (p, ow) = (d.g.p(), d.g.ow);
    let pp = d.ph * d.pw;
    for ((plane, o), a) in y
        .chunks_exact(p)
        .zip(out.chunks_exact_mut(pp))
        .zip(arg.chunks_exact_mut(pp))
    {
        for py in 0..d.ph {
            for px in 0..d.pw {
                let base = py * k * ow + px * k;
                let mut m = plane[base].max(0.);
                let mut best = 0u8;
                for dy in 0..k {
                    for dx in 0..k {
                        let v = plane[base + dy * ow + dx].max(0.);
                        let t = takes(v, m);
                        m = if t { v } else { m };
                        best = if t { (dy * k + dx) as u8 } else { best };
                    }
                }
                o[py * d.pw + px] = m;
                a[py * d.pw + px] = best;
            }
        }
    }
}

fn forward(x: &[f32], w: &[f32], b: Option<&[f32]>, d: &Dims, out: &mut [f32], arg: &mut [u8]) {
    let (il, ol, ql) = (d.g.in_len(), d.g.out_len(), d.pooled_len());
    let sample = |i: usize, o: &mut [f32], a: &mut [u8]| {
        ACT.with_borrow_mut(|y| {
            y.resize(ol, 0.);
            conv_sample(&x[i * il..(i + 1) * il], w, b, false, &d.g, y);
            // A literal window lets the compiler unroll the common 2x2 case.
            if d.k == 2 {
                relu_pool(y, d, 2, o, a)
            } else {
                relu_pool(y, d, d.k, o, a)
            }
        })
    };
    let n = d.g.n;
    if n <= 1 || threads() == 1 {
        out.chunks_exact_mut(ql)
            .zip(arg.chunks_exact_mut(ql))
            .enumerate()
            .for_each(|(i, (o, a))| sample(i, o, a));
    } else {
        let min = (n / (4 * threads())).max(1);
        out.par_chunks_exact_mut(ql)
            .zip(arg.par_chunks_exact_mut(ql))
            .with_min_len(min)
            .enumerate()
            .for_each(|(i, (o, a))| sample(i, o, a));
    }
}

/// Scatters one sample's pooled gradient `gp` to the argmaxes `a` of the conv-output gradient
/// `gy` (zeroed first), where the pooled value `yp` passed the ReLU; adds each plane's sum to `db`.
/// (Writing whole windows instead of zero-filling first measured slower.)
#[inline(always)]
fn unpool(gp: &[f32], yp: &[f32], a: &[u8], d: &Dims, k: usize, gy: &mut [f32], db: &mut [f32]) {
    let (p, ow) = (d.g.p(), d.g.ow);
    let pp = d.ph * d.pw;
    gy.fill(0.);
    for (c, plane) in gy.chunks_exact_mut(p).enumerate() {
        let (gp, yp, a) = (
            &gp[c * pp..(c + 1) * pp],
            &yp[c * pp..(c + 1) * pp],
            &a[c * pp..(c + 1) * pp],
        );
        let mut sum = 0f32;
        for py in 0..d.ph {
            for px in 0..d.pw {
                let q = py * d.pw + px;
                if yp[q] > 0. {
                    let at = a[q] as usize;
                    plane[(py * k + at / k) * ow + px * k + at % k] = gp[q];
                    sum += gp[q];
                }
            }
        }
        db[c] += sum;
    }
}

/// Adds the column-matrix gradient `dcol` (`[c*kh*kw, oh*ow]`) of one sample onto its input
/// gradient `dx` (`[c, h, w]`): the transpose of [`crate::conv`]'s im2col.
fn col2im(dcol: &[f32], g: &Geom, dx: &mut [f32]) {
    let p = g.p();
    let (ow, w) = (g.ow as isize, g.w as isize);
    for ci in 0..g.c {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &dcol[((ci * g.kh + ky) * g.kw + kx) * p..][..p];
                let shift = kx as isize - g.pad_x;
                let ox0 = (-shift).clamp(0, ow) as usize;
                let ox1 = (w - shift).clamp(0, ow) as usize;
                if ox0 >= ox1 {
                    continue;
                }
                for oy in 0..g.oh {
                    let iy = oy as isize + ky as isize - g.pad_y;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let start = iy as usize * g.w + (ox0 as isize + shift) as usize;
                    let dst = &mut plane[start..start + (ox1 - ox0)];
                    let src = &row[oy * g.ow + ox0..oy * g.ow + ox1];
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                }
            }
        }
    }
}

/// `dcol [k, p] = Wᵀ · gy` for one sample (`W` is `[o, k]`, `gy` is `[o, p]`).
fn dcols(w: &[f32], gy: &[f32], g: &Geom, dcol: &mut [f32]) {
    let (k, p) = (g.k(), g.p());
    // Column-major view: dst is p x k (cs = p); lhs gy is p x o (cs = p); rhs W is o x k
    // (cs = 1, rs = k).
    matmul_f32(
        (p, k, g.o),
        dcol,
        p,
        false,
        MatRef::new(gy, p, 1),
        MatRef::new(w, 1, k),
        1,
    );
}

/// What the backward pass computes.
struct Want {
    dw: bool,
    db: bool,
    dx: bool,
}

/// Gradients `(dx, dw, db)` (empty where not wanted) from the pooled output gradient `gp`.
fn backward(
    x: &[f32],
    w: &[f32],
    yp: &[f32],
    arg: &[u8],
    gp: &[f32],
    d: &Dims,
    want: &Want,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let g = &d.g;
    let (n, k, o) = (g.n, g.k(), g.o);
    let (il, ol, ql) = (g.in_len(), g.out_len(), d.pooled_len());
    if n == 0 {
        return (
            Vec::new(),
            vec![0f32; if want.dw { o * k } else { 0 }],
            vec![0f32; o],
        );
    }
    // A few chunks per thread so a briefly stalled core does not hold up the whole pass.
    let chunks = (4 * threads()).min(n);
    let per = n.div_ceil(chunks);
    let mut dx = vec![0f32; if want.dx { n * il } else { 0 }];
    let slices: Vec<&mut [f32]> = if want.dx {
        dx.chunks_mut(per * il).collect()
    } else {
        (0..n.div_ceil(per)).map(|_| &mut [][..]).collect()
    };
    let partial = |(ci, dxc): (usize, &mut [f32])| {
        let mut dw = vec![0f32; if want.dw { o * k } else { 0 }];
        let mut db = vec![0f32; o];
        ACT.with_borrow_mut(|gy| {
            gy.resize(ol, 0.);
            for s in ci * per..((ci + 1) * per).min(n) {
                let q = s * ql..(s + 1) * ql;
                let (gq, yq, aq) = (&gp[q.clone()], &yp[q.clone()], &arg[q]);
                // A literal window lets the compiler unroll the common 2x2 case.
                if d.k == 2 {
                    unpool(gq, yq, aq, d, 2, gy, &mut db)
                } else {
                    unpool(gq, yq, aq, d, d.k, gy, &mut db)
                }
                if want.dw {
                    COL.with_borrow_mut(|col| {
                        let cols = columns(&x[s * il..(s + 1) * il], g, col);
                        crate::dot::add_xwt(gy, o, cols, k, g.p(), &mut dw);
                    });
                }
                if want.dx {
                    DCOL.with_borrow_mut(|dcol| {
                        dcol.resize(k * g.p(), 0.);
                        dcols(w, gy, g, dcol);
                        let j = s - ci * per;
                        col2im(dcol, g, &mut dxc[j * il..(j + 1) * il]);
                    });
                }
            }
        });
        (dw, db)
    };
    let mut parts: Vec<(Vec<f32>, Vec<f32>)> = if threads() == 1 || slices.len() == 1 {
        slices.into_iter().enumerate().map(partial).collect()
    } else {
        slices
            .into_par_iter()
            .enumerate()
            .with_max_len(1)
            .map(partial)
            .collect()
    };
    let (mut dw, mut db) = parts.swap_remove(0);
    for (pw, pb) in parts {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dx, dw, db)
}

/// The custom op. `arg` keeps the forward's argmax positions for the backward pass: each call
/// builds its own op, so they belong to exactly one forward.
struct ConvReluPool {
    pad: usize,
    k: usize,
    arg: Mutex<Vec<u8>>,
}

const NAME: &str = "joulecut-conv2d-relu-pool2d";

impl ConvReluPool {
    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(x.1.dims(), w.1.dims(), self.pad, self.k)?;
        let (xs, ws, bs) = operands(x, w, b, d.g.o, NAME)?;
        let len = d.g.n * d.pooled_len();
        let mut out = vec![0f32; len];
        let mut arg = vec![0u8; len];
        forward(xs, ws, bs, &d, &mut out, &mut arg);
        *self.arg.lock().unwrap_or_else(|e| e.into_inner()) = arg;
        Ok((
            CpuStorage::F32(out),
            Shape::from((d.g.n, d.g.o, d.ph, d.pw)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = Dims::new(x.dims(), w.dims(), self.pad, self.k)?;
        let want = Want {
            dw: w.track_op(),
            db: b.is_some_and(|b| b.track_op()),
            dx: x.track_op(),
        };
        if !(want.dw || want.db || want.dx) {
            return Ok((None, None, None));
        }
        let arg = self.arg.lock().unwrap_or_else(|e| e.into_inner());
        if arg.len() != d.g.n * d.pooled_len() {
            bail!("{NAME}: backward without a matching forward pass")
        }
        let grad = grad.contiguous()?;
        let (xv, wv, rv, gv) = (
            view(x, NAME)?,
            view(w, NAME)?,
            view(res, NAME)?,
            view(&grad, NAME)?,
        );
        let (dx, dw, db) = backward(
            xv.as_slice(),
            wv.as_slice(),
            rv.as_slice(),
            &arg,
            gv.as_slice(),
            &d,
            &want,
        );
        let dev = x.device();
        Ok((
            want.dx
                .then(|| Tensor::from_vec(dx, x.shape(), dev))
                .transpose()?,
            want.dw
                .then(|| Tensor::from_vec(dw, w.shape(), dev))
                .transpose()?,
            want.db
                .then(|| Tensor::from_vec(db, d.g.o, dev))
                .transpose()?,
        ))
    }
}

crate::conv::bias_optional_op!(ConvReluPool, |_: &ConvReluPool| NAME);

/// `max_pool2d(relu(conv2d(x, w, b, padding)), k)`, fused (see the module docs): stride-1
/// convolution, ReLU, then max pooling over `k x k` windows with stride `k` (`k` ≤ 16).
/// `[n, in_c, h, w]` -> `[n, out_c, oh / k, ow / k]` with `oh = h + 2p - kh + 1` (likewise `ow`).
/// Differentiable with respect to all three inputs; same values and gradients as the composed
/// [`crate::conv2d_relu`] and [`crate::max_pool2d`]. f32; the fused kernel runs on the CPU,
/// other devices compose candle's ops ([`crate::portable`]).
pub fn conv2d_relu_pool2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    k: usize,
) -> Result<Tensor> {
    if !crate::portable::fused_kernels_on(x.device()) {
        let y = crate::portable::conv2d(x, w, b, padding, true)?;
        return crate::portable::max_pool2d(&y, k);
    }
    let op = ConvReluPool {
        pad: padding,
        k,
        arg: Mutex::new(Vec::new()),
    };
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}
