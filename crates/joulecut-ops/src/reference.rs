//! Plain, obviously-correct implementations of the kernels, used as test
//! oracles. Slow on purpose: direct loops, f64 accumulation, no tricks.
//!
//! ```
//! use joulecut_ops::reference::{ConvShape, conv2d_forward};
//! let s = ConvShape { n: 1, c: 1, h: 3, w: 3, o: 1, kh: 3, kw: 3, pad: 1 };
//! let y = conv2d_forward(&[1.; 9], &[1.; 9], None, &s);
//! assert_eq!(y[4], 9.); // centre pixel sees the whole image
//! assert_eq!(y[0], 4.); // corner sees a 2x2 patch
//! ```

/// Shapes of a stride-1 convolution (NCHW input, `[o, c, kh, kw]` weight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl ConvShape {
    /// Output height.
    pub fn oh(&self) -> usize {
        self.h + 2 * self.pad - self.kh + 1
    }

    /// Output width.
    pub fn ow(&self) -> usize {
        self.w + 2 * self.pad - self.kw + 1
    }

    /// Input pixel `(iy, ix)` read by output `(oy, ox)` at kernel tap `(ky, kx)`, if inside.
    fn tap(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy + ky).checked_sub(self.pad)?;
        let ix = (ox + kx).checked_sub(self.pad)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }

    /// Visits every `(x index, w index, y index)` triple of the convolution.
    fn each(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (oh, ow) = (self.oh(), self.ow());
        for n in 0..self.n {
            for o in 0..self.o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let yi = ((n * self.o + o) * oh + oy) * ow + ox;
                        for c in 0..self.c {
                            for ky in 0..self.kh {
                                for kx in 0..self.kw {
                                    if let Some((iy, ix)) = self.tap(oy, ox, ky, kx) {
                                        let xi = ((n * self.c + c) * self.h + iy) * self.w + ix;
                                        let wi = ((o * self.c + c) * self.kh + ky) * self.kw + kx;
                                        f(xi, wi, yi);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `y[n, o, oy, ox] = b[o] + sum x[n, c, oy+ky-p, ox+kx-p] * w[o, c, ky, kx]`.
pub fn conv2d_forward(x: &[f32], w: &[f32], b: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let plane = s.oh() * s.ow();
    let mut y = vec![0f64; s.n * s.o * plane];
    s.each(|xi, wi, yi| y[yi] += f64::from(x[xi]) * f64::from(w[wi]));
    if let Some(b) = b {
        for (i, v) in y.iter_mut().enumerate() {
            *v += f64::from(b[(i / plane) % s.o]);
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}

/// Gradients `(dx, dw, db)` of `sum(y * gy)` for [`conv2d_forward`].
pub fn conv2d_backward(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    s: &ConvShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f64; x.len()];
    let mut dw = vec![0f64; w.len()];
    s.each(|xi, wi, yi| {
        dx[xi] += f64::from(w[wi]) * f64::from(gy[yi]);
        dw[wi] += f64::from(x[xi]) * f64::from(gy[yi]);
    });
    let plane = s.oh() * s.ow();
    let mut db = vec![0f64; s.o];
    for (i, &g) in gy.iter().enumerate() {
        db[(i / plane) % s.o] += f64::from(g);
    }
    let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (f(dx), f(dw), f(db))
}

/// Max pooling of `planes` planes of `h x w` over `k x k` windows, stride `k`;
/// returns the output and, per output, the flat input index of the first maximum.
pub fn max_pool2d_forward(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    k: usize,
) -> (Vec<f32>, Vec<usize>) {
    let (oh, ow) = (h / k, w / k);
    let mut y = Vec::with_capacity(planes * oh * ow);
    let mut idx = Vec::with_capacity(planes * oh * ow);
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = None::<(usize, f32)>;
                for dy in 0..k {
                    for dx in 0..k {
                        let i = (p * h + oy * k + dy) * w + ox * k + dx;
                        if best.is_none_or(|(_, m)| x[i] > m) {
                            best = Some((i, x[i]));
                        }
                    }
                }
                let (i, m) = best.expect("k > 0");
                y.push(m);
                idx.push(i);
            }
        }
    }
    (y, idx)
}

/// Gradient of [`max_pool2d_forward`]: each output gradient goes to its argmax.
pub fn max_pool2d_backward(x_len: usize, idx: &[usize], gy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f32; x_len];
    for (&i, &g) in idx.iter().zip(gy) {
        dx[i] += g;
    }
    dx
}
