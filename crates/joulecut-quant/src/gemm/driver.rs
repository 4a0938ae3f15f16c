//! The GEMM entry points: [`gemm_i32`] (exact i32 products), [`gemm_requant`] (fused f32
//! epilogue) and [`quantize_gemm_requant`] (activation quantization, GEMM and epilogue in one
//! parallel pass per layer), plus [`gemm_reference`], the oracle.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::act::{self, ActivationQuant, QuantizedRows};
use super::kernel::{Int8Kernel, Signs, effective};
use super::pack::PackedWeights;
use super::plan::{Task, plan, rows_per_task};
use super::requant::Requant;
use super::residual::Corrected;
use super::sink::{F32Sink, I32Sink, SharedPtr, TileSink};
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{PANEL_N, portable};

thread_local! {
    /// One smoothed input row of [`quantize_gemm_requant`], reused across calls.
    static SMOOTHED_ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs one task with an already [`effective`] kernel, adding the weights' residual to its tiles.
#[inline]
fn exec<S: TileSink>(
    kernel: Int8Kernel,
    a: &[i8],
    stride: usize,
    w: &PackedWeights,
    t: Task,
    signs: Signs,
    sink: &S,
) {
    // The oracle reads whole weights through `PackedWeights::get`; the others multiply the body.
    if w.residual.is_empty() || kernel == Int8Kernel::Reference {
        return exec_body(kernel, a, stride, w, t, signs, sink);
    }
    let corrected = Corrected {
        inner: sink,
        a,
        stride,
        residual: &w.residual,
    };
    exec_body(kernel, a, stride, w, t, signs, &corrected);
}

#[inline]
fn exec_body<S: TileSink>(
    kernel: Int8Kernel,
    a: &[i8],
    stride: usize,
    w: &PackedWeights,
    t: Task,
    signs: Signs,
    sink: &S,
) {
    match kernel {
        Int8Kernel::Reference => portable::reference_task(a, stride, w, t, sink),
        Int8Kernel::Portable => portable::task(a, stride, w, t, sink),
        // SAFETY: availability (and the -128 rule) was checked by `effective`.
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => unsafe { x86::task_avx2(a, stride, w, t, signs, sink) },
        // SAFETY: availability was checked by `effective`.
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni => unsafe { x86::task_vnni(a, stride, w, t, signs, sink) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => portable::task(a, stride, w, t, sink),
    }
}

fn run<S: TileSink>(
    kernel: Int8Kernel,
    a: &[i8],
    stride: usize,
    m: usize,
    w: &PackedWeights,
    sink: &S,
) {
    let signs = Signs::of(kernel, &a[..m * stride]);
    let kernel = effective(kernel, w, signs);
    let tasks = plan(m, w);
    if tasks.len() == 1 {
        exec(kernel, a, stride, w, tasks[0], signs, sink);
    } else {
        tasks
            .par_iter()
            .for_each(|t| exec(kernel, a, stride, w, *t, signs, sink));
    }
}

/// `out[m, n] = Σ_k a[m, k] · w[n, k]` exactly, for row-major `a` of shape `[m, w.k()]`.
///
/// # Panics
/// When `a.len() != m · w.k()` or `out.len() != m · w.n()`.
pub fn gemm_i32(kernel: Int8Kernel, a: &[i8], m: usize, w: &PackedWeights, out: &mut [i32]) {
    assert_eq!(a.len(), m * w.k, "activation length");
    assert_eq!(out.len(), m * w.n, "output length");
    if m == 0 {
        return;
    }
    let sink = I32Sink {
        out: SharedPtr(out.as_mut_ptr()),
        n: w.n,
    };
    if w.k == w.k_pad {
        return run(kernel, a, w.k_pad, m, w, &sink);
    }
    PAD_SCRATCH.with(|p| {
        let mut p = p.borrow_mut();
        p.resize(m * w.k_pad, 0);
        for (dst, src) in p.chunks_exact_mut(w.k_pad).zip(a.chunks_exact(w.k)) {
            dst[..w.k].copy_from_slice(src);
            dst[w.k..].fill(0);
        }
        run(kernel, &p[..m * w.k_pad], w.k_pad, m, w, &sink);
    });
}

thread_local! {
    /// [`gemm_i32`]'s copy of activations whose `k` is not a multiple of 4, reused across calls.
    static PAD_SCRATCH: RefCell<Vec<i8>> = const { RefCell::new(Vec::new()) };
}

/// The fused int8 GEMM + requantisation: `out[m, n]` (f32) from quantized rows and packed weights.
///
/// # Panics
/// When the rows' stride is not `w.k_padded()`, `out.len() != rows.m · w.n()`, or row sums are
/// needed and missing.
pub fn gemm_requant(
    kernel: Int8Kernel,
    rows: &QuantizedRows,
    w: &PackedWeights,
    rq: &Requant,
    out: &mut [f32],
) {
    assert_eq!(rows.stride, w.k_pad, "activation row stride");
    assert_eq!(rows.data.len(), rows.m * w.k_pad, "activation length");
    assert_eq!(out.len(), rows.m * w.n, "output length");
    assert_eq!(rq.scales.len(), w.n_pad, "epilogue width");
    assert!(
        !rq.needs_row_sums() || rows.sums.len() == rows.m,
        "row sums"
    );
    if rows.m == 0 {
        return;
    }
    let sink = F32Sink {
        out: SharedPtr(out.as_mut_ptr()),
        n: w.n,
        k: w.k as i32,
        scales: &rows.scales,
        zeros: &rows.zeros,
        sums: &rows.sums,
        col_sums: &w.col_sums,
        rq,
    };
    run(kernel, &rows.data, rows.stride, rows.m, w, &sink);
}
/// An output buffer of f32s: initialised (`[f32]`) or not (`[MaybeUninit<f32>]`, e.g. a `Vec`'s
/// spare capacity — the GEMM writes every element, so callers that allocate need not zero it).
pub trait F32Out {
    /// The buffer as possibly-uninitialised f32s; only initialised f32s are written through it.
    fn as_uninit(&mut self) -> &mut [MaybeUninit<f32>];
}

impl F32Out for [f32] {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<f32>] {
        // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and every write through the result is a
        // valid f32.
        unsafe { &mut *(self as *mut [f32] as *mut [MaybeUninit<f32>]) }
    }
}

impl F32Out for [MaybeUninit<f32>] {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<f32>] {
        self
    }
}

/// Quantizes f32 rows `x` (`[m, w.k()]`) per `mode` (each row first multiplied by `smooth`, one
/// factor per column, when given) and multiplies them by `w` with the fused requantisation,
/// writing every element of `out[m, n]`. Each rayon task quantizes its own rows and
/// runs them through every panel, so there is one parallel pass per layer; `scratch` holds the int8
/// rows (reused across calls, no allocation once it is large enough).
///
/// # Panics
/// When `x.len() != m · w.k()`, `out.len() != m · w.n()`, or `rq` was built for another width.
#[allow(clippy::too_many_arguments)] // the GEMM's operands, the epilogue, and the caller's scratch
pub fn quantize_gemm_requant<O: F32Out + ?Sized>(
    kernel: Int8Kernel,
    x: &[f32],
    m: usize,
    mode: ActivationQuant,
    smooth: Option<&[f32]>,
    w: &PackedWeights,
    rq: &Requant,
    scratch: &mut QuantizedRows,
    out: &mut O,
) {
    let out = out.as_uninit();
    assert_eq!(x.len(), m * w.k, "activation length");
    assert!(smooth.is_none_or(|f| f.len() == w.k), "smoothing width");
    assert_eq!(out.len(), m * w.n, "output length");
    assert_eq!(rq.scales.len(), w.n_pad, "epilogue width");
    let stride = w.k_pad;
    scratch.m = m;
    scratch.stride = stride;
    scratch.data.resize(m * stride, 0);
    scratch.scales.resize(m, 0.0);
    scratch.zeros.resize(m, 0);
    scratch.sums.resize(m, 0);
    if m == 0 {
        return;
    }
    let signs = Signs::of_mode(mode);
    let kernel = effective(kernel, w, signs);
    let need_sums = rq.needs_row_sums();
    let panels = w.n_pad / PANEL_N;
    let per = rows_per_task(m, w);
    let body = |(((xs, q), ((sc, zp), sm)), o): TaskChunk<'_>| {
        let rows = sc.len();
        let rows_in = xs.chunks_exact(w.k).zip(q.chunks_exact_mut(stride));
        match smooth {
            None => {
                for (i, (row, d)) in rows_in.enumerate() {
                    (sc[i], zp[i], sm[i]) = act::quantize_one(row, d, mode, need_sums);
                }
            }
            // Smoothing costs one multiply per element, into a row reused per thread.
            Some(f) => SMOOTHED_ROW.with(|buf| {
                let mut buf = buf.borrow_mut();
                for (i, (row, d)) in rows_in.enumerate() {
                    buf.clear();
                    buf.extend(row.iter().zip(f).map(|(x, c)| x * c));
                    (sc[i], zp[i], sm[i]) = act::quantize_one(&buf, d, mode, need_sums);
                }
            }),
        }
        let sink = F32Sink {
            out: SharedPtr(o.as_mut_ptr().cast::<f32>()),
            n: w.n,
            k: w.k as i32,
            scales: sc,
            zeros: zp,
            sums: sm,
            col_sums: &w.col_sums,
            rq,
        };
        let t = Task {
            r0: 0,
            r1: rows,
            p0: 0,
            p1: panels,
        };
        exec(kernel, q, stride, w, t, signs, &sink);
    };
    if per >= m {
        body((
            (
                (x, &mut scratch.data[..]),
                (
                    (&mut scratch.scales[..], &mut scratch.zeros[..]),
                    &mut scratch.sums[..],
                ),
            ),
            out,
        ));
    } else {
        x.par_chunks(per * w.k)
            .zip(scratch.data.par_chunks_mut(per * stride))
            .zip(
                scratch
                    .scales
                    .par_chunks_mut(per)
                    .zip(scratch.zeros.par_chunks_mut(per))
                    .zip(scratch.sums.par_chunks_mut(per)),
            )
            .zip(out.par_chunks_mut(per * w.n))
            .with_max_len(1)
            .for_each(body);
    }
}

/// One task's share of [`quantize_gemm_requant`]: ((f32 rows, int8 rows), ((scales, zero-points),
/// row sums)), output rows.
type TaskChunk<'a> = (
    (
        (&'a [f32], &'a mut [i8]),
        ((&'a mut [f32], &'a mut [i32]), &'a mut [i32]),
    ),
    &'a mut [MaybeUninit<f32>],
);

/// The oracle: `Σ_k a[m, k] · w[n, k]` by a plain triple loop over unpacked row-major inputs.
pub fn gemm_reference(a: &[i8], w: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
    let mut out = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|kk| i32::from(a[i * k + kk]) * i32::from(w[j * k + kk]))
                .sum();
        }
    }
    out
}
