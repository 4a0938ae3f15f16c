//! 2-D convolution (stride 1, NCHW, PyTorch weight layout) as a candle custom op.
//!
//! Forward: per sample, im2col into a reused per-thread buffer, then one `gemm`
//! call whose strides read the column matrix and the `[out_c, in_c*kh*kw]`
//! weight in place and write straight into the NCHW output (no transposes).
//! Backward: the weight gradient is a per-sample `gemm` over the same column
//! matrix accumulated per thread; the input gradient is a forward convolution
//! of the output gradient with the flipped, transposed kernel (computed only
//! when the input needs a gradient, e.g. not for the network's input images).

use std::cell::RefCell;

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::matmul::{MatRef, matmul_f32};
use crate::storage::{cpu_f32, threads, view};

/// Implements candle's `CustomOp2` (no bias) and `CustomOp3` (with bias) for a conv-like op
/// whose inherent `fwd(x, w, Option<b>)` and `bwd(x, w, Option<&b>, res, grad)` take the bias as an
/// option, so the two traits don't each repeat the plumbing.
macro_rules! bias_optional_op {
    ($op:ty, $name:expr) => {
        impl candle_core::CustomOp2 for $op {
            fn name(&self) -> &'static str {
                ($name)(self)
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                self.fwd((s1, l1), (s2, l2), None)
            }

            fn bwd(
                &self,
                x: &candle_core::Tensor,
                w: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)>
            {
                let (dx, dw, _) = <$op>::bwd(self, x, w, None, res, grad)?;
                Ok((dx, dw))
            }
        }

        impl candle_core::CustomOp3 for $op {
            fn name(&self) -> &'static str {
                ($name)(self)
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::CpuStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                self.fwd((s1, l1), (s2, l2), Some((s3, l3)))
            }

            #[allow(clippy::type_complexity)] // candle's signature
            fn bwd(
                &self,
                x: &candle_core::Tensor,
                w: &candle_core::Tensor,
                b: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
            )> {
                <$op>::bwd(self, x, w, Some(b), res, grad)
            }
        }
    };
}
pub(crate) use bias_optional_op;

/// The f32 slices of a conv op's input, weight and optional bias (checked to be `[out_c]`).
#[allow(clippy::type_complexity)] // three borrowed operands
pub(crate) fn operands<'a>(
    x: (&'a CpuStorage, &Layout),
    w: (&'a CpuStorage, &Layout),
    b: Option<(&'a CpuStorage, &Layout)>,
    out_c: usize,
    name: &str,
) -> Result<(&'a [f32], &'a [f32], Option<&'a [f32]>)> {
    let bs = match b {
        Some((s, l)) => {
            if l.dims() != [out_c] {
                bail!("{name}: bias shape {:?}, expected [{out_c}]", l.dims())
            }
            Some(cpu_f32(s, l, name)?)
        }
        None => None,
    };
    Ok((cpu_f32(x.0, x.1, name)?, cpu_f32(w.0, w.1, name)?, bs))
}

thread_local! {
    /// Per-thread im2col buffer, reused across calls so the hot path does not allocate.
    pub(crate) static COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Shapes of one stride-1 convolution. Paddings may be negative (a crop), which
/// the input-gradient pass uses when `padding > kernel - 1`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub pad_y: isize,
    pub pad_x: isize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    pub(crate) fn new(x: &[usize], w: &[usize], pad: usize) -> Result<Self> {
        let (&[n, c, h, wd], &[o, wc, kh, kw]) = (x, w) else {
            bail!("conv2d: expected a 4-D input and weight, got {x:?} and {w:?}")
        };
        if c != wc {
            bail!("conv2d: input has {c} channels but the weight expects {wc} ({x:?} vs {w:?})")
        }
        if h + 2 * pad < kh || wd + 2 * pad < kw || kh == 0 || kw == 0 {
            bail!("conv2d: kernel {kh}x{kw} larger than the padded input {h}x{wd} (padding {pad})")
        }
        Ok(Self {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            pad_y: pad as isize,
            pad_x: pad as isize,
            oh: h + 2 * pad - kh + 1,
            ow: wd + 2 * pad - kw + 1,
        })
    }

    /// Reduction length of the gemm: `c * kh * kw`.
    pub(crate) fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per channel.
    pub(crate) fn p(&self) -> usize {
        self.oh * self.ow
    }

    pub(crate) fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }

    pub(crate) fn out_len(&self) -> usize {
        self.o * self.p()
    }

    /// A 1x1 unpadded convolution reads its input as the column matrix directly.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.pad_y == 0 && self.pad_x == 0
    }

    /// Geometry of the input-gradient pass: a convolution of the output
    /// gradient with the flipped kernel, padding `k - 1 - pad`.
    fn transposed(&self) -> Self {
        Self {
            n: self.n,
            c: self.o,
            h: self.oh,
            w: self.ow,
            o: self.c,
            kh: self.kh,
            kw: self.kw,
            pad_y: self.kh as isize - 1 - self.pad_y,
            pad_x: self.kw as isize - 1 - self.pad_x,
            oh: self.h,
            ow: self.w,
        }
    }
}

/// Writes the `[c*kh*kw, oh*ow]` column matrix of one sample into `col`.
fn im2col(x: &[f32], g: &Geom, col: &mut [f32]) {
    let p = g.p();
    let (ow, w) = (g.ow as isize, g.w as isize);
    for ci in 0..g.c {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut col[((ci * g.kh + ky) * g.kw + kx) * p..][..p];
                let shift = kx as isize - g.pad_x;
                // Output columns whose input column ox + shift lies inside the image.
                let ox0 = (-shift).clamp(0, ow) as usize;
                let ox1 = (w - shift).clamp(0, ow) as usize;
                for oy in 0..g.oh {
                    let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    let iy = oy as isize + ky as isize - g.pad_y;
                    if iy < 0 || iy >= g.h as isize || ox0 >= ox1 {
                        dst.fill(0.);
                        continue;
                    }
                    dst[..ox0].fill(0.);
                    dst[ox1..].fill(0.);
                    let start = iy as usize * g.w + (ox0 as isize + shift) as usize;
                    dst[ox0..ox1].copy_from_slice(&plane[start..start + (ox1 - ox0)]);
                }
            }
        }
    }
}

/// Column matrix of one sample: the input itself for 1x1 convolutions, else
/// im2col into `col`.
pub(crate) fn columns<'a>(x: &'a [f32], g: &Geom, col: &'a mut Vec<f32>) -> &'a [f32] {
    if g.is_pointwise() {
        return x;
    }
    col.resize(g.k() * g.p(), 0.);
    im2col(x, g, col);
    col
}

/// One sample's forward pass: `out[o, p] = bias[o] + sum_k w[o, k] * col[k, p]`.
pub(crate) fn conv_sample(
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    g: &Geom,
    out: &mut [f32],
) {
    let (k, p) = (g.k(), g.p());
    COL.with_borrow_mut(|col| {
        let cols = columns(x, g, col);
        if let Some(b) = bias {
            for (row, &bo) in out.chunks_exact_mut(p).zip(b) {
                row.fill(bo);
            }
        }
        // Column-major view: dst is p x o (cs = p), lhs is p x k (cs = p), rhs is k x o (cs = k).
        matmul_f32(
            (p, g.o, k),
            out,
            p,
            bias.is_some(),
            MatRef::new(cols, p, 1),
            MatRef::new(wt, k, 1),
            1,
        );
    });
    if relu {
        for v in out.iter_mut() {
            *v = v.max(0.);
        }
    }
}

/// Runs `f(sample, out_chunk)` for every sample, in parallel when it pays.
pub(crate) fn for_each_sample(
    out: &mut [f32],
    len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let n = out.len() / len.max(1);
    if n <= 1 || threads() == 1 {
        out.chunks_exact_mut(len)
            .enumerate()
            .for_each(|(i, o)| f(i, o));
    } else {
        let min = (n / (4 * threads())).max(1);
        out.par_chunks_exact_mut(len)
            .with_min_len(min)
            .enumerate()
            .for_each(|(i, o)| f(i, o));
    }
}

/// Batched forward convolution (also used for the input gradient).
pub(crate) fn conv_forward(
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    g: &Geom,
) -> Vec<f32> {
    let mut out = vec![0f32; g.n * g.out_len()];
    let il = g.in_len();
    for_each_sample(&mut out, g.out_len(), |i, o| {
        conv_sample(&x[i * il..(i + 1) * il], wt, bias, relu, g, o)
    });
    out
}

/// Weight gradient `[o, c*kh*kw]` and bias gradient `[o]` from the input and
/// the (already relu-masked) output gradient.
fn conv_weight_grad(x: &[f32], gy: &[f32], g: &Geom, want_bias: bool) -> (Vec<f32>, Vec<f32>) {
    let (k, p, o) = (g.k(), g.p(), g.o);
    let (il, ol) = (g.in_len(), g.out_len());
    let chunks = threads().min(g.n).max(1);
    let per = g.n.div_ceil(chunks);
    let partial = |ci: usize| {
        let mut dw = vec![0f32; o * k];
        let mut db = vec![0f32; if want_bias { o } else { 0 }];
        COL.with_borrow_mut(|col| {
            for s in ci * per..((ci + 1) * per).min(g.n) {
                let cols = columns(&x[s * il..(s + 1) * il], g, col);
                let gys = &gy[s * ol..(s + 1) * ol];
                // dst: dw as k x o column-major (cs = k); lhs: col as k x p (rs = p);
                // rhs: gy as p x o (cs = p).
                matmul_f32(
                    (k, o, p),
                    &mut dw,
                    k,
                    s != ci * per,
                    MatRef::new(cols, 1, p),
                    MatRef::new(gys, p, 1),
                    1,
                );
                for (d, row) in db.iter_mut().zip(gys.chunks_exact(p)) {
                    *d += row.iter().sum::<f32>();
                }
            }
        });
        (dw, db)
    };
    let mut parts: Vec<(Vec<f32>, Vec<f32>)> = if chunks == 1 {
        vec![partial(0)]
    } else {
        (0..chunks).into_par_iter().map(partial).collect()
    };
    let (mut dw, mut db) = parts.swap_remove(0);
    for (pw, pb) in parts {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dw, db)
}

/// `w[o, c, ky, kx]` -> `w'[c, o, kh-1-ky, kw-1-kx]`.
fn flip_transpose(wt: &[f32], g: &Geom) -> Vec<f32> {
    let kk = g.kh * g.kw;
    let mut out = vec![0f32; wt.len()];
    for o in 0..g.o {
        for c in 0..g.c {
            let src = &wt[(o * g.c + c) * kk..][..kk];
            let dst = &mut out[(c * g.o + o) * kk..][..kk];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    out
}

/// The custom op; `relu` fuses a ReLU after the bias.
struct Conv2d {
    pad: usize,
    relu: bool,
}

impl Conv2d {
    fn name(&self) -> &'static str {
        if self.relu {
            "joulecut-conv2d-relu"
        } else {
            "joulecut-conv2d"
        }
    }

    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let g = Geom::new(x.1.dims(), w.1.dims(), self.pad)?;
        let (xs, ws, bs) = operands(x, w, b, g.o, name)?;
        let out = conv_forward(xs, ws, bs, self.relu, &g);
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let g = Geom::new(x.dims(), w.dims(), self.pad)?;
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
        let want_b = b.is_some_and(|b| b.track_op());
        let (dw, db) = if w.track_op() || want_b {
            let xv = view(x, name)?;
            let (dw, db) = conv_weight_grad(xv.as_slice(), gy, &g, want_b);
            let dw = w
                .track_op()
                .then(|| Tensor::from_vec(dw, w.shape(), dev))
                .transpose()?;
            let db = want_b.then(|| Tensor::from_vec(db, g.o, dev)).transpose()?;
            (dw, db)
        } else {
            (None, None)
        };
        let dx = if x.track_op() {
            let wv = view(w, name)?;
            let wt = flip_transpose(wv.as_slice(), &g);
            let gt = g.transposed();
            Some(Tensor::from_vec(
                conv_forward(gy, &wt, None, false, &gt),
                x.shape(),
                dev,
            )?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

bias_optional_op!(Conv2d, Conv2d::name);

fn apply(x: &Tensor, w: &Tensor, b: Option<&Tensor>, padding: usize, relu: bool) -> Result<Tensor> {
    if !crate::portable::fused_kernels_on(x.device()) {
        return crate::portable::conv2d(x, w, b, padding, relu);
    }
    let op = Conv2d { pad: padding, relu };
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

/// 2-D convolution, stride 1, `padding` zeros on every side.
///
/// `x` is `[n, in_c, h, w]`, `w` is `[out_c, in_c, kh, kw]` (PyTorch layout), `b`
/// is `[out_c]`; the result is `[n, out_c, h + 2p - kh + 1, w + 2p - kw + 1]`.
/// Differentiable with respect to all three. f32; the fused kernel runs on the CPU, other devices
/// use candle's conv ([`crate::portable`]).
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    apply(x, w, b, padding, false)
}

/// [`conv2d`] followed by a ReLU, fused: one pass over the output forward, and
/// the ReLU mask folded into the backward pass.
pub fn conv2d_relu(x: &Tensor, w: &Tensor, b: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    apply(x, w, b, padding, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column matrix by definition, one element at a time.
    fn naive_im2col(x: &[f32], g: &Geom) -> Vec<f32> {
        let mut col = vec![0f32; g.k() * g.p()];
        for ci in 0..g.c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let iy = oy as isize + ky as isize - g.pad_y;
                            let ix = ox as isize + kx as isize - g.pad_x;
                            let inside =
                                (0..g.h as isize).contains(&iy) && (0..g.w as isize).contains(&ix);
                            col[((ci * g.kh + ky) * g.kw + kx) * g.p() + oy * g.ow + ox] = if inside
                            {
                                x[(ci * g.h + iy as usize) * g.w + ix as usize]
                            } else {
                                0.
                            };
                        }
                    }
                }
            }
        }
        col
    }

    /// Both copy paths (same-width block copies, short row copies under and over 8 floats) and
    /// the crops of the input-gradient geometry, into a buffer holding stale values.
    #[test]
    fn im2col_matches_definition() {
        for c in [1, 2] {
            for (h, w) in [(28, 28), (14, 14), (5, 9), (1, 3), (10, 17)] {
                for (kh, kw) in [(5, 5), (3, 3), (1, 1), (3, 2), (2, 5)] {
                    for pad in 0..4 {
                        let x_dims = [2, c, h, w];
                        let Ok(g) = Geom::new(&x_dims, &[3, c, kh, kw], pad) else {
                            continue;
                        };
                        for g in [g, g.transposed()] {
                            let x: Vec<f32> = (0..g.in_len()).map(|i| i as f32 + 1.).collect();
                            let mut col = vec![f32::NAN; g.k() * g.p()];
                            im2col(&x, &g, &mut col);
                            assert_eq!(col, naive_im2col(&x, &g), "{g:?}");
                        }
                    }
                }
            }
        }
    }
}
