//! Quantized layers that run through the int8 GEMM: [`Int8Linear`] and [`Int8Conv2d`].
//!
//! Both implement [`candle_core::Module`] on f32 CPU tensors: activations are quantized (per row at run
//! time, or with a calibrated static grid), multiplied by the packed int8 weights with i32
//! accumulation, and requantised to f32 with bias and optional ReLU in the same pass.
//!
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use joulecut_quant::{Int8Config, Int8Linear};
//! let w: Vec<f32> = (0..30).map(|i| (i as f32 - 15.0) / 10.0).collect(); // [3, 10]
//! let layer = Int8Linear::from_f32("fc", &w, 3, 10, Some(&[0.1, 0.2, 0.3]), &Int8Config::default()).unwrap();
//! let x = Tensor::ones((2, 10), candle_core::DType::F32, &Device::Cpu).unwrap();
//! let y = layer.forward(&x).unwrap();
//! assert_eq!(y.dims(), &[2, 3]);
//! ```

use std::cell::RefCell;

use candle_core::{DType, Device, Module, Tensor};
use joulecut_checkpoint::{Int8Tensor, numel};

use crate::conv_direct::{DirectConv, Padded};
use crate::error::{Error, Result};
use crate::gemm::{
    ActivationQuant, F32Out, Int8Kernel, PackedWeights, QuantizedRows, Requant, gemm_requant,
    quantize_gemm_requant, quantize_rows,
};
use crate::grid::QuantParams;
use crate::scheme::Int8Config;
use crate::tensor::{check_finite, quantize_tensor, validate_int8, validate_params};

thread_local! {
    /// Scratch for quantized activations, reused across calls on the same thread.
    static SCRATCH: RefCell<QuantizedRows> = RefCell::new(QuantizedRows::default());
}

/// A Linear layer `y = x · Wᵀ + b` with int8 weights `[out, in]`, run by the int8 GEMM.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    in_features: usize,
    out_features: usize,
    weights: PackedWeights,
    requant: Requant,
    activations: ActivationQuant,
    kernel: Int8Kernel,
    /// Per input column: the input is quantized as `x ⊙ in_scales` (smoothed weights, see
    /// `Int8Tensor::in_scales`).
    in_scales: Option<Vec<f32>>,
}

impl Int8Linear {
    /// From an int8 weight `[out, in]` (per tensor or per output channel, `axis` `None` or `Some(0)`,
    /// with or without input-column scales) and an optional f32 bias of `out` values.
    pub fn new(name: &str, weight: &Int8Tensor, bias: Option<&[f32]>) -> Result<Int8Linear> {
        Self::from_parts(
            name,
            &weight.shape,
            &weight.values,
            &weight.scales,
            weight.zero_points.as_deref(),
            weight.axis,
            bias,
        )?
        .with_input_scales(name, weight.in_scales.clone())
    }

    /// Multiplies each input column by `scales[i]` before quantizing it: the run-time half of
    /// SmoothQuant-style smoothing, whose weights were quantized as `W · diag(1/scales)`.
    /// `None` removes them.
    pub fn with_input_scales(mut self, name: &str, scales: Option<Vec<f32>>) -> Result<Int8Linear> {
        if let Some(f) = &scales {
            if f.len() != self.in_features {
                return Err(Error::BadShape {
                    name: format!("{name} in_scale"),
                    shape: vec![f.len()],
                    reason: format!("expected [{}]", self.in_features),
                });
            }
            if let Some(v) = f.iter().find(|v| !v.is_finite() || **v <= 0.0) {
                return Err(Error::BadParams {
                    name: name.to_string(),
                    reason: format!("input scale {v} is not a finite positive number"),
                });
            }
        }
        self.in_scales = scales;
        Ok(self)
    }

    /// The input-column scales, if the weights are smoothed.
    pub fn input_scales(&self) -> Option<&[f32]> {
        self.in_scales.as_deref()
    }

    /// From raw parts (the fields of a checkpoint's int8 tensor). `name` goes into errors.
    pub fn from_parts(
        name: &str,
        shape: &[usize],
        values: &[i8],
        scales: &[f32],
        zero_points: Option<&[i32]>,
        axis: Option<usize>,
        bias: Option<&[f32]>,
    ) -> Result<Int8Linear> {
        let bad_shape = |reason: &str| Error::BadShape {
            name: name.to_string(),
            shape: shape.to_vec(),
            reason: reason.into(),
        };
        let [out_features, in_features] = *shape else {
            return Err(bad_shape("a Linear weight must be [out, in]"));
        };
        if values.len() != out_features * in_features {
            return Err(bad_shape(&format!("{} values", values.len())));
        }
        if axis.is_some_and(|a| a != 0) {
            return Err(bad_shape(
                "per-channel Linear weights must be quantized along axis 0 (output channels)",
            ));
        }
        validate_params(name, shape, scales, zero_points, axis)?;
        if let Some(b) = bias {
            if b.len() != out_features {
                return Err(Error::BadShape {
                    name: format!("{name} bias"),
                    shape: vec![b.len()],
                    reason: format!("expected [{out_features}]"),
                });
            }
            check_finite(&format!("{name} bias"), b)?;
        }
        let weights =
            PackedWeights::pack(values, out_features, in_features).map_err(|e| rename(e, name))?;
        let requant = Requant::new(out_features, scales, zero_points, bias, false)
            .map_err(|e| rename(e, name))?;
        Ok(Int8Linear {
            in_features,
            out_features,
            weights,
            requant,
            activations: ActivationQuant::Dynamic,
            kernel: Int8Kernel::detect(),
            in_scales: None,
        })
    }

    /// Quantizes an f32 weight `[out, in]` (row-major) per `cfg` and builds the layer.
    pub fn from_f32(
        name: &str,
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<&[f32]>,
        cfg: &Int8Config,
    ) -> Result<Int8Linear> {
        let q = quantize_tensor(name, weight, &[out_features, in_features], cfg)?;
        Int8Linear::new(name, &q, bias)
    }

    /// Quantizes a candle Linear layer.
    pub fn from_linear(
        name: &str,
        linear: &candle_nn::Linear,
        cfg: &Int8Config,
    ) -> Result<Int8Linear> {
        let w = linear.weight();
        let (out_f, in_f) = w
            .dims2()
            .map_err(Error::candle(format!("read weight of `{name}`")))?;
        let wv: Vec<f32> = w
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(Error::candle(format!("read weight of `{name}`")))?;
        let bv: Option<Vec<f32>> = linear
            .bias()
            .map(|b| b.to_dtype(DType::F32).and_then(|t| t.to_vec1()))
            .transpose()
            .map_err(Error::candle(format!("read bias of `{name}`")))?;
        Int8Linear::from_f32(name, &wv, out_f, in_f, bv.as_deref(), cfg)
    }

    /// Applies ReLU to the output (fused into the GEMM's epilogue).
    pub fn with_relu(mut self, relu: bool) -> Int8Linear {
        self.requant = self.requant.with_relu(relu);
        self
    }

    /// Uses one calibrated grid for the input instead of per-row dynamic grids.
    pub fn with_static_input(mut self, params: QuantParams) -> Int8Linear {
        self.activations = ActivationQuant::Static(params);
        self
    }

    /// Sets how the input is quantized (dynamic 8-bit by default; see [`ActivationQuant`]).
    pub fn with_activation_quant(mut self, mode: ActivationQuant) -> Int8Linear {
        self.activations = mode;
        self
    }

    /// Forces a GEMM kernel (for tests and benchmarks); unavailable kernels fall back to portable code.
    pub fn with_kernel(mut self, kernel: Int8Kernel) -> Int8Linear {
        self.kernel = kernel;
        self
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// How the input is quantized.
    pub fn activation_quant(&self) -> ActivationQuant {
        self.activations
    }

    /// The weights the GEMM multiplies by, dequantized to f32 `[out, in]` row-major.
    pub fn dequantized_weight(&self) -> Vec<f32> {
        let q = self.weights.unpack();
        let k = self.in_features;
        let mut out = Vec::with_capacity(q.len());
        for (n, row) in q.chunks_exact(k.max(1)).enumerate() {
            let (s, z) = self.requant.weight_grid(n);
            match &self.in_scales {
                Some(f) => out.extend(
                    row.iter()
                        .zip(f)
                        .map(|(&v, &c)| (i32::from(v) - z) as f32 * s * c),
                ),
                None => out.extend(row.iter().map(|&v| (i32::from(v) - z) as f32 * s)),
            }
        }
        out
    }

    /// The forward pass on a row-major `[m, in]` slice; returns `[m, out]`.
    ///
    /// # Panics
    /// When `x.len() != m · in_features`.
    pub fn forward_slice(&self, x: &[f32], m: usize) -> Vec<f32> {
        let len = m * self.out_features;
        // Not zeroed first: the GEMM writes every element (zeroing was 1.7 % of the int8 MLP).
        let mut out = Vec::with_capacity(len);
        self.forward_any(x, m, &mut out.spare_capacity_mut()[..len]);
        // SAFETY: `forward_any` initialised all `len` elements.
        unsafe { out.set_len(len) };
        out
    }

    /// Like [`Int8Linear::forward_slice`], writing into `out` (`[m, out]`).
    pub fn forward_into(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.forward_any(x, m, out);
    }

    /// Writes every element of `out` (`[m, out]`).
    fn forward_any<O: F32Out + ?Sized>(&self, x: &[f32], m: usize, out: &mut O) {
        SCRATCH.with(|s| {
            quantize_gemm_requant(
                self.kernel,
                x,
                m,
                self.activations,
                self.in_scales.as_deref(),
                &self.weights,
                &self.requant,
                &mut s.borrow_mut(),
                out,
            );
        })
    }
}

fn rename(e: Error, name: &str) -> Error {
    match e {
        Error::BadShape { shape, reason, .. } => Error::BadShape {
            name: name.to_string(),
            shape,
            reason,
        },
        Error::BadParams { reason, .. } => Error::BadParams {
            name: name.to_string(),
            reason,
        },
        other => other,
    }
}

/// Runs `f` on the contiguous f32 CPU data of `x` (converting or copying only when needed).
fn with_cpu_f32<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    if !x.device().is_cpu() {
        candle_core::bail!(
            "int8 layers run on the CPU; move the input with `to_device(&Device::Cpu)`"
        );
    }
    let x = if x.dtype() == DType::F32 {
        x.contiguous()?
    } else {
        x.to_dtype(DType::F32)?.contiguous()?
    };
    Ok(f(joulecut_ops::view(&x, "int8 layer")?.as_slice()))
}

impl Module for Int8Linear {
    /// `[..., in]` f32 → `[..., out]` f32.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.last() != Some(&self.in_features) {
            candle_core::bail!(
                "Int8Linear expects [..., {}], got {dims:?}",
                self.in_features
            );
        }
        let m = dims[..dims.len() - 1].iter().product();
        let out = with_cpu_f32(x, |data| self.forward_slice(data, m))?;
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank ≥ 1") = self.out_features;
        Tensor::from_vec(out, out_dims, &Device::Cpu)
    }
}

/// A 2-D convolution (NCHW, weight `[out, in, kh, kw]`, stride, zero padding) run as im2col + the int8
/// GEMM. Each image's input gets one dynamic asymmetric grid (or the static one), so the im2col copy
/// moves int8 values.
#[derive(Debug, Clone)]
pub struct Int8Conv2d {
    in_channels: usize,
    out_channels: usize,
    kernel_size: (usize, usize),
    padding: usize,
    stride: usize,
    weights: PackedWeights,
    requant: Requant,
    activations: ActivationQuant,
    kernel: Int8Kernel,
    /// `k × k` max pooling (stride `k`) fused into the output's layout change; 1 = none.
    pool: usize,
    /// The weights laid out for the direct kernel (`crate::conv_direct`), where it applies.
    direct: Option<DirectConv>,
}

thread_local! {
    /// [`Int8Conv2d::forward_slice`]'s im2col rows and GEMM output, reused across calls: fresh
    /// zeroed buffers of this size (5.6 MB of im2col for LeNet-5's conv1 at batch 256) cost a
    /// memset and page faults on every call.
    static CONV_SCRATCH: std::cell::RefCell<(Vec<i8>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

impl Int8Conv2d {
    /// From an int8 weight `[out, in, kh, kw]` (per tensor or per output channel) and optional bias.
    pub fn new(
        name: &str,
        weight: &Int8Tensor,
        bias: Option<&[f32]>,
        padding: usize,
        stride: usize,
    ) -> Result<Int8Conv2d> {
        let shape = &weight.shape;
        let [out_c, in_c, kh, kw] = shape[..] else {
            return Err(Error::BadShape {
                name: name.to_string(),
                shape: shape.clone(),
                reason: "a conv weight must be [out, in, kh, kw]".into(),
            });
        };
        if stride == 0 {
            return Err(Error::BadConfig(format!("`{name}`: stride must be ≥ 1")));
        }
        if weight.axis.is_some_and(|a| a != 0) {
            return Err(Error::BadShape {
                name: name.to_string(),
                shape: shape.clone(),
                reason: "per-channel conv weights must be quantized along axis 0".into(),
            });
        }
        validate_int8(name, weight, numel(shape))?;
        if weight.in_scales.is_some() {
            return Err(Error::BadShape {
                name: name.to_string(),
                shape: shape.clone(),
                reason: "input-column scales apply to Linear weights only".into(),
            });
        }
        if let Some(b) = bias {
            if b.len() != out_c {
                return Err(Error::BadShape {
                    name: format!("{name} bias"),
                    shape: vec![b.len()],
                    reason: format!("expected [{out_c}]"),
                });
            }
            check_finite(&format!("{name} bias"), b)?;
        }
        let weights = PackedWeights::pack(&weight.values, out_c, in_c * kh * kw)
            .map_err(|e| rename(e, name))?;
        let requant = Requant::new(
            out_c,
            &weight.scales,
            weight.zero_points.as_deref(),
            bias,
            false,
        )
        .map_err(|e| rename(e, name))?;
        let direct = (stride == 1 && !requant.needs_row_sums())
            .then(|| DirectConv::new(&weight.values, out_c, in_c, kh, kw))
            .flatten();
        Ok(Int8Conv2d {
            direct,
            in_channels: in_c,
            out_channels: out_c,
            kernel_size: (kh, kw),
            padding,
            stride,
            weights,
            requant,
            activations: ActivationQuant::Dynamic,
            kernel: Int8Kernel::detect(),
            pool: 1,
        })
    }

    /// Quantizes an f32 weight `[out, in, kh, kw]` per `cfg` and builds the layer.
    pub fn from_f32(
        name: &str,
        weight: &[f32],
        shape: [usize; 4],
        bias: Option<&[f32]>,
        padding: usize,
        stride: usize,
        cfg: &Int8Config,
    ) -> Result<Int8Conv2d> {
        let q = quantize_tensor(name, weight, &shape, cfg)?;
        Int8Conv2d::new(name, &q, bias, padding, stride)
    }

    /// Applies ReLU to the output (fused).
    pub fn with_relu(mut self, relu: bool) -> Int8Conv2d {
        self.requant = self.requant.with_relu(relu);
        self
    }

    /// How the input is quantized (one grid per image; e.g. [`ActivationQuant::DynamicU7`] for
    /// the AVX2 kernel's sign-free loop).
    pub fn with_activation_quant(mut self, mode: ActivationQuant) -> Int8Conv2d {
        self.activations = mode;
        self
    }

    /// Uses one calibrated grid for the input instead of one dynamic grid per image.
    pub fn with_static_input(mut self, params: QuantParams) -> Int8Conv2d {
        self.activations = ActivationQuant::Static(params);
        self
    }

    /// Forces a GEMM kernel.
    pub fn with_kernel(mut self, kernel: Int8Kernel) -> Int8Conv2d {
        self.kernel = kernel;
        self
    }

    /// Max-pools the output over `k × k` windows (stride `k`, partial windows dropped, as
    /// `joulecut_ops::max_pool2d`), fused into the GEMM output's change of layout, so the
    /// full-size activation is never written out. `k = 1` turns it off.
    pub fn with_pool(mut self, k: usize) -> Int8Conv2d {
        self.pool = k.max(1);
        self
    }

    /// Output spatial size for an `h × w` input (after the fused pooling, if any).
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (oh, ow) = self.conv_size(h, w);
        (oh / self.pool, ow / self.pool)
    }

    /// The convolution's spatial size, before pooling.
    fn conv_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (kh, kw) = self.kernel_size;
        (
            (h + 2 * self.padding - kh) / self.stride + 1,
            (w + 2 * self.padding - kw) / self.stride + 1,
        )
    }

    /// The forward pass on NCHW data `[n, in, h, w]`; returns `[n, out, oh, ow]` row-major
    /// (`oh`, `ow` as [`Int8Conv2d::output_size`]: pooled when [`Int8Conv2d::with_pool`] is set).
    pub fn forward_slice(&self, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        // Taken out of the cell for the call, not borrowed: a rayon worker waiting inside this
        // call may steal another layer call on the same thread, which then starts from empty
        // buffers instead of finding the cell borrowed.
        let (mut im2col, mut y) = CONV_SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let out = self.forward_scratch(x, n, h, w, &mut im2col, &mut y);
        CONV_SCRATCH.with(|s| *s.borrow_mut() = (im2col, y));
        out
    }

    fn forward_scratch(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        im2col: &mut Vec<i8>,
        y: &mut Vec<f32>,
    ) -> Vec<f32> {
        let (c, (kh, kw), pad, st) = (
            self.in_channels,
            self.kernel_size,
            self.padding,
            self.stride,
        );
        assert_eq!(x.len(), n * c * h * w, "input length");
        let (oh, ow) = self.conv_size(h, w);
        let k = c * kh * kw;
        let stride = self.weights.k_padded();
        let rows_per_img = oh * ow;
        let m = n * rows_per_img;
        // Quantize each image once (one grid per image), then im2col the int8 values.
        let mut qimg = QuantizedRows::default();
        quantize_rows(
            x,
            n,
            c * h * w,
            c * h * w,
            self.activations,
            false,
            &mut qimg,
        );
        #[cfg(target_arch = "x86_64")]
        if let Some(out) = self.forward_direct(&qimg, n, h, w) {
            return out;
        }
        // Every byte of the im2col rows is written below (the padding columns by `image`), so
        // the reused buffer needs no clearing.
        im2col.resize(m * stride, 0);
        let mut rows = QuantizedRows {
            m,
            stride,
            data: std::mem::take(im2col),
            scales: Vec::with_capacity(m),
            zeros: Vec::with_capacity(m),
            sums: vec![0; m],
        };
        let need_sums = self.requant.needs_row_sums();
        // Each image is copied once into a border of its zero-point (the code of 0.0), so the
        // im2col below copies `kw`-byte runs with no bounds checks.
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let mut padded = vec![0i8; c * ph * pw];
        let g = Im2col {
            c,
            kh,
            kw,
            st,
            ow,
            pw,
            ph,
            stride,
        };
        for b in 0..n {
            let img = &qimg.data[b * c * h * w..(b + 1) * c * h * w];
            let zp = qimg.zeros[b] as i8;
            padded.fill(zp);
            for ci in 0..c {
                for iy in 0..h {
                    let src = &img[(ci * h + iy) * w..(ci * h + iy + 1) * w];
                    let at = (ci * ph + iy + pad) * pw + pad;
                    padded[at..at + w].copy_from_slice(src);
                }
            }
            rows.scales
                .extend(std::iter::repeat_n(qimg.scales[b], rows_per_img));
            rows.zeros
                .extend(std::iter::repeat_n(qimg.zeros[b], rows_per_img));
            let r0 = b * rows_per_img;
            let data = &mut rows.data[r0 * stride..(r0 + rows_per_img) * stride];
            // Fixed-size runs compile to plain moves instead of `memmove` calls.
            match kw {
                3 => g.image(&padded, data, oh, |d, s| d[..3].copy_from_slice(&s[..3])),
                5 => g.image(&padded, data, oh, |d, s| d[..5].copy_from_slice(&s[..5])),
                _ => g.image(&padded, data, oh, |d, s| d[..kw].copy_from_slice(&s[..kw])),
            }
            if need_sums {
                for (r, row) in data.chunks_exact(stride).enumerate() {
                    rows.sums[r0 + r] = row[..k].iter().map(|&v| i32::from(v)).sum();
                }
            }
        }
        let oc = self.out_channels;
        // Every element of `y` is written by the GEMM.
        y.resize(m * oc, 0.0);
        gemm_requant(self.kernel, &rows, &self.weights, &self.requant, y);
        *im2col = rows.data;
        // [n, oh·ow, oc] → [n, oc, oh/k, ow/k], pooling on the way: each window's `k²` rows of
        // `oc` channels are reduced with one element-wise max over the contiguous channel run.
        let k = self.pool;
        let (ph, pw) = (oh / k, ow / k);
        let plane = ph * pw;
        let mut out = vec![0f32; n * oc * plane];
        let mut best = vec![0f32; oc];
        for (img, dst) in y
            .chunks_exact(rows_per_img * oc)
            .zip(out.chunks_exact_mut(oc * plane))
        {
            for py in 0..ph {
                for px in 0..pw {
                    let at = |dy: usize, dx: usize| ((py * k + dy) * ow + px * k + dx) * oc;
                    best.copy_from_slice(&img[at(0, 0)..at(0, 0) + oc]);
                    for dy in 0..k {
                        for dx in (0..k).filter(|&dx| dy + dx > 0) {
                            let src = &img[at(dy, dx)..at(dy, dx) + oc];
                            for (b, &v) in best.iter_mut().zip(src) {
                                *b = b.max(v);
                            }
                        }
                    }
                    let p = py * pw + px;
                    for (o, &v) in best.iter().enumerate() {
                        dst[o * plane + p] = v;
                    }
                }
            }
        }
        out
    }
}

impl Int8Conv2d {
    /// The direct kernel's forward pass (`crate::conv_direct`) over the quantized images, when it
    /// applies: an AVX2-class kernel, stride 1, a narrow enough kernel, symmetric weights,
    /// activation codes in `0..=127`, pooling 1 or 2.
    #[cfg(target_arch = "x86_64")]
    fn forward_direct(
        &self,
        qimg: &QuantizedRows,
        n: usize,
        h: usize,
        w: usize,
    ) -> Option<Vec<f32>> {
        let d = self.direct.as_ref()?;
        let (lo, hi) = self.activations.code_range();
        let simd = matches!(self.kernel, Int8Kernel::Avx2 | Int8Kernel::Avx512Vnni);
        if !simd || lo < 0 || hi > 127 || self.pool > 2 || self.stride != 1 {
            return None;
        }
        let (c, (kh, _), pad) = (self.in_channels, self.kernel_size, self.padding);
        let (oh, ow) = self.conv_size(h, w);
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        debug_assert_eq!(ph, oh + kh - 1);
        let stride = d.row_stride(pw, ow);
        let mut padded = vec![0i8; c * ph * stride];
        let per_img = self.out_channels * (oh / self.pool) * (ow / self.pool);
        let mut out = vec![0f32; n * per_img];
        for (b, dst) in out.chunks_exact_mut(per_img.max(1)).enumerate().take(n) {
            let img = &qimg.data[b * c * h * w..(b + 1) * c * h * w];
            // The zero-point is the code of 0.0: the padding, and the bytes past each row's end
            // (read only for positions that are dropped or taps that are zero).
            padded.fill(qimg.zeros[b] as i8);
            for ci in 0..c {
                for iy in 0..h {
                    let at = (ci * ph + iy + pad) * stride + pad;
                    padded[at..at + w].copy_from_slice(&img[(ci * h + iy) * w..][..w]);
                }
            }
            let grid = (qimg.scales[b], qimg.zeros[b]);
            let src = Padded {
                data: &padded,
                ph,
                stride,
            };
            // SAFETY: both kernels imply AVX2 (`Int8Kernel::is_available`); the codes are in
            // `lo..=hi` ⊂ `0..=127`; `padded` has the stride and rows `image` asks for.
            unsafe {
                d.image(&src, oh, ow, self.pool, grid, hi <= 63, &self.requant, dst);
            }
        }
        Some(out)
    }
}

/// im2col geometry of one zero-point-padded image (`c × ph × pw` int8).
struct Im2col {
    c: usize,
    kh: usize,
    kw: usize,
    st: usize,
    ow: usize,
    pw: usize,
    ph: usize,
    /// Row stride of the output (the weights' padded `k`).
    stride: usize,
}

impl Im2col {
    /// Writes one row of `c·kh·kw` bytes per output position into `out`, and zeros up to the row
    /// stride (the buffer is reused, so the padding columns hold old bytes); `copy` moves one
    /// `kw`-byte run.
    #[inline(always)]
    fn image(&self, padded: &[i8], out: &mut [i8], oh: usize, copy: impl Fn(&mut [i8], &[i8])) {
        let Im2col {
            c,
            kh,
            kw,
            st,
            ow,
            pw,
            ph,
            stride,
        } = *self;
        for oy in 0..oh {
            for ox in 0..ow {
                let dst = &mut out[(oy * ow + ox) * stride..];
                let mut j = 0;
                for ci in 0..c {
                    for dy in 0..kh {
                        let at = (ci * ph + oy * st + dy) * pw + ox * st;
                        copy(&mut dst[j..], &padded[at..]);
                        j += kw;
                    }
                }
                dst[j..stride].fill(0);
            }
        }
    }
}

impl Module for Int8Conv2d {
    /// `[n, in, h, w]` f32 → `[n, out, oh, ow]` f32.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.in_channels {
            candle_core::bail!(
                "Int8Conv2d expects {} input channels, got {c}",
                self.in_channels
            );
        }
        let (kh, kw) = self.kernel_size;
        if h + 2 * self.padding < kh || w + 2 * self.padding < kw {
            candle_core::bail!("input {h}x{w} is smaller than the {kh}x{kw} kernel");
        }
        let (oh, ow) = self.output_size(h, w);
        let out = with_cpu_f32(x, |data| self.forward_slice(data, n, h, w))?;
        Tensor::from_vec(out, (n, self.out_channels, oh, ow), &Device::Cpu)
    }
}
