//! Sparse inference: a CSR weight and [`SparseLinear`], a drop-in `candle_core::Module` for a pruned
//! linear layer.
//!
//! `y = x · Wᵀ + b` with `W` `[out, in]` in CSR (row = output unit) and `x` `[batch, in]`:
//! * batch < 4: each sample through the SELL-8 copy of the rows (`sell.rs`: 8 rows per FMA, the
//!   inputs gathered by scalar loads); a gather-dot per row where the columns exceed its `u16`
//!   indices;
//! * larger batches: the blocked kernel in `spmm.rs` (weights laid out once at construction
//!   in interleaved groups of 4 rows and column blocks; `x` transposed tile by tile, T = 16 or 32
//!   samples, into aligned per-thread scratch). It is compiled for AVX-512 and for AVX2+FMA and
//!   picked at run time from [`joulecut_ops::Isa`] (no `target-cpu=native` needed); other CPUs get
//!   the portable loop.
//! * rayon splits the work over batch tiles (or over row groups at small batch) once there is enough
//!   of it to pay for the threads.
//!
//! [`CsrMatrix::matmul_reference`] is the plain triple loop the tests use as the oracle.
//!
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use joulecut_prune::SparseLinear;
//! let dev = Device::Cpu;
//! let w = Tensor::new(&[[1f32, 0., 0.], [0., 0., 2.]], &dev)?;
//! let b = Tensor::new(&[0.5f32, -1.], &dev)?;
//! let layer = SparseLinear::from_tensors("fc", &w, Some(&b))?;
//! assert_eq!(layer.weight().nnz(), 2);
//! let y = layer.forward(&Tensor::new(&[[1f32, 2., 3.]], &dev)?)?;
//! assert_eq!(y.to_vec2::<f32>()?, [[1.5, 5.0]]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use candle_core::{DType, Device, Module, Tensor};
use joulecut_ops::Isa;
use rayon::prelude::*;

use crate::sell::Sell;
use crate::spmm::{self, Blocked, GROUP, Out};
use crate::{Error, Result};

/// A compressed-sparse-row `f32` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    rows: usize,
    cols: usize,
    /// `rows + 1` offsets into `col_idx` / `values`.
    row_ptr: Vec<usize>,
    col_idx: Vec<u32>,
    values: Vec<f32>,
    /// The same weights grouped and blocked for the tile kernel (built once, here).
    blocked: Blocked,
    /// The same weights in SELL-8 for one sample at a time (`None` past 65,536 columns).
    sell: Option<Sell>,
}

impl CsrMatrix {
    /// The non-zeros of a dense row-major `[rows, cols]` matrix.
    pub fn from_dense(rows: usize, cols: usize, dense: &[f32]) -> Result<Self> {
        check_dense_len(rows, cols, dense)?;
        check_cols(cols)?;
        let mut m = CsrMatrix {
            rows,
            cols,
            row_ptr: Vec::with_capacity(rows + 1),
            col_idx: Vec::new(),
            values: Vec::new(),
            blocked: Blocked::default(),
            sell: None,
        };
        m.row_ptr.push(0);
        for row in dense.chunks(cols.max(1)).take(rows) {
            for (c, v) in row.iter().enumerate() {
                if *v != 0.0 {
                    m.col_idx.push(c as u32);
                    m.values.push(*v);
                }
            }
            m.row_ptr.push(m.values.len());
        }
        if cols == 0 {
            m.row_ptr.resize(rows + 1, 0);
        }
        Ok(m.with_blocked())
    }

    /// From the checkpoint's `sparse` encoding: a bitmap (bit `i % 8` of byte `i / 8`, LSB first,
    /// row-major, set where an element is stored) and the stored values in row-major order. Stored
    /// zeros are dropped.
    pub fn from_bitmap(rows: usize, cols: usize, bitmap: &[u8], values: &[f32]) -> Result<Self> {
        let numel = rows * cols;
        let invalid = |reason: String| Error::InvalidSparse {
            name: "<bitmap>".into(),
            reason,
        };
        if bitmap.len() != numel.div_ceil(8) {
            return Err(invalid(format!(
                "bitmap of {} bytes for {numel} elements",
                bitmap.len()
            )));
        }
        check_cols(cols)?;
        let set: usize = bitmap.iter().map(|b| b.count_ones() as usize).sum();
        if set != values.len() {
            return Err(invalid(format!(
                "{set} bits set but {} values",
                values.len()
            )));
        }
        let mut m = CsrMatrix {
            rows,
            cols,
            row_ptr: Vec::with_capacity(rows + 1),
            col_idx: Vec::new(),
            values: Vec::new(),
            blocked: Blocked::default(),
            sell: None,
        };
        m.row_ptr.push(0);
        let mut next = values.iter();
        for r in 0..rows {
            for c in 0..cols {
                let i = r * cols + c;
                if bitmap[i / 8] >> (i % 8) & 1 == 1 {
                    let v = *next
                        .next()
                        .ok_or_else(|| invalid("bits set beyond the element count".into()))?;
                    if v != 0.0 {
                        m.col_idx.push(c as u32);
                        m.values.push(v);
                    }
                }
            }
            m.row_ptr.push(m.values.len());
        }
        Ok(m.with_blocked())
    }

    fn with_blocked(mut self) -> Self {
        self.blocked = Blocked::new(
            self.rows,
            self.cols,
            &self.row_ptr,
            &self.col_idx,
            &self.values,
        );
        self.sell = Sell::new(self.cols, &self.row_ptr, &self.col_idx, &self.values);
        self
    }

    /// The one-sample layout, where the columns fit it.
    #[cfg(test)]
    pub(crate) fn sell(&self) -> Option<&Sell> {
        self.sell.as_ref()
    }

    /// Rows (output units).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of stored non-zeros.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Fraction of non-zeros (0 for an empty matrix).
    pub fn density(&self) -> f64 {
        let n = self.rows * self.cols;
        if n == 0 {
            0.0
        } else {
            self.nnz() as f64 / n as f64
        }
    }

    /// Bytes held in memory: the CSR arrays, their blocked copy for the tile kernel and their
    /// SELL-8 copy for single samples.
    pub fn memory_bytes(&self) -> usize {
        self.row_ptr.len() * size_of::<usize>()
            + self.col_idx.len() * 4
            + self.values.len() * 4
            + self.blocked.memory_bytes()
            + self.sell.as_ref().map_or(0, Sell::memory_bytes)
    }

    /// The dense row-major matrix.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut d = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            for k in self.row_ptr[r]..self.row_ptr[r + 1] {
                d[r * self.cols + self.col_idx[k] as usize] = self.values[k];
            }
        }
        d
    }

    /// Reference `y = x · Wᵀ (+ b)` for `x` `[batch, cols]`: plain loops, the oracle for the tests.
    pub fn matmul_reference(&self, x: &[f32], batch: usize, bias: Option<&[f32]>) -> Vec<f32> {
        assert_eq!(x.len(), batch * self.cols, "x must be [batch, cols]");
        let mut y = vec![0.0; batch * self.rows];
        for b in 0..batch {
            for r in 0..self.rows {
                let mut acc = 0.0f32;
                for k in self.row_ptr[r]..self.row_ptr[r + 1] {
                    acc += self.values[k] * x[b * self.cols + self.col_idx[k] as usize];
                }
                y[b * self.rows + r] = acc + bias.map_or(0.0, |bias| bias[r]);
            }
        }
        y
    }

    /// Optimised `y = x · Wᵀ (+ b)`: `x` is `[batch, cols]`, `y` is `[batch, rows]` (overwritten).
    ///
    /// # Panics
    /// When the slice lengths do not match the shapes.
    pub fn matmul_into(&self, x: &[f32], batch: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        assert_eq!(x.len(), batch * self.cols, "x must be [batch, cols]");
        assert_eq!(y.len(), batch * self.rows, "y must be [batch, rows]");
        if let Some(b) = bias {
            assert_eq!(b.len(), self.rows, "bias must be [rows]");
        }
        if batch == 0 || self.rows == 0 {
            return;
        }
        let work = self.nnz().max(self.rows) * batch;
        // Already on a rayon worker (a row chunk of a batch the model split): stay on this thread.
        let parallel = work >= PARALLEL_WORK
            && rayon::current_num_threads() > 1
            && rayon::current_thread_index().is_none();
        if batch < TILE_MIN_BATCH {
            for (xb, yb) in x.chunks(self.cols.max(1)).zip(y.chunks_mut(self.rows)) {
                self.gather_rows(xb, bias, yb, parallel);
            }
        } else if batch > 16 {
            self.tiled::<32>(x, batch, bias, y, parallel);
        } else {
            self.tiled::<16>(x, batch, bias, y, parallel);
        }
    }

    /// One sample: `y[r] = Σ w[r, c] x[c]`, rows split over threads when `parallel`.
    fn gather_rows(&self, x: &[f32], bias: Option<&[f32]>, y: &mut [f32], parallel: bool) {
        assert_eq!(x.len(), self.cols, "x must be one row of `cols`");
        if let Some(sell) = &self.sell {
            sell.matvec(x, bias, y, parallel);
            return;
        }
        let isa = Isa::detected();
        let body = |r0: usize, ys: &mut [f32]| {
            for (i, yr) in ys.iter_mut().enumerate() {
                let r = r0 + i;
                let (a, b) = (self.row_ptr[r], self.row_ptr[r + 1]);
                *yr = gather_dot(isa, &self.values[a..b], &self.col_idx[a..b], x)
                    + bias.map_or(0.0, |bias| bias[r]);
            }
        };
        if parallel {
            let chunk = self.rows.div_ceil(rayon::current_num_threads() * 4).max(1);
            y.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, ys)| body(i * chunk, ys));
        } else {
            body(0, y);
        }
    }

    /// Batch tiles of `T` samples through the blocked kernel. In parallel, tiles are split over
    /// the threads when there are enough of them, else row groups are (each thread stages its
    /// rows for all samples, copied into `y` at the end).
    fn tiled<const T: usize>(
        &self,
        x: &[f32],
        batch: usize,
        bias: Option<&[f32]>,
        y: &mut [f32],
        parallel: bool,
    ) {
        let isa = Isa::detected();
        let bl = &self.blocked;
        let (rows, cols) = (self.rows, self.cols);
        let groups = spmm::group_count(bl);
        let xt_len = bl.tile_len::<T>();
        // Tiles `t0..` into `yc` (their rows of y), row groups `g0..g1`.
        let run = |t0: usize, (g0, g1): (usize, usize), yc: &mut [f32], stride: usize| {
            let tiles = yc.len().div_ceil(T * stride);
            spmm::with_scratch(xt_len, spmm::part_len::<T>(), |xt, part| {
                for i in 0..tiles {
                    let b0 = (t0 + i) * T;
                    let nb = (batch - b0).min(T);
                    bl.transpose_tile::<T>(&x[b0 * cols..(b0 + nb) * cols], nb, xt);
                    let mut out = Out {
                        y: &mut yc[i * T * stride..],
                        stride,
                        row0: g0 * GROUP,
                    };
                    spmm::tile_dispatch::<T>(isa, bl, xt, (g0, g1), bias, part, nb, &mut out);
                }
            })
        };
        let tiles = batch.div_ceil(T);
        let threads = rayon::current_num_threads();
        if !parallel {
            run(0, (0, groups), y, rows);
        } else if tiles >= 2 * threads {
            // Small pieces: a thread that other processes hold up takes fewer of them.
            let per = tiles.div_ceil(threads * 4);
            y.par_chunks_mut(per * T * rows)
                .enumerate()
                .for_each(|(c, yc)| run(c * per, (0, groups), yc, rows));
        } else {
            let per = groups.div_ceil(threads * 2);
            let chunk_rows = per * GROUP;
            spmm::STAGING.with(|st| {
                let mut st = st.borrow_mut();
                if st.len() < batch * rows {
                    st.resize(batch * rows, 0.0);
                }
                let st = &mut st[..batch * rows];
                st.par_chunks_mut(batch * chunk_rows)
                    .enumerate()
                    .for_each(|(c, buf)| {
                        let g0 = c * per;
                        let stride = buf.len() / batch;
                        run(0, (g0, (g0 + per).min(groups)), buf, stride);
                    });
                for (c, buf) in st.chunks(batch * chunk_rows).enumerate() {
                    let w = buf.len() / batch;
                    for (yr, br) in y.chunks_exact_mut(rows).zip(buf.chunks_exact(w)) {
                        yr[c * chunk_rows..c * chunk_rows + w].copy_from_slice(br);
                    }
                }
            });
        }
    }
}

fn check_cols(cols: usize) -> Result<()> {
    if cols > u32::MAX as usize {
        return Err(Error::InvalidSparse {
            name: "<csr>".into(),
            reason: format!("{cols} columns exceed u32 indices"),
        });
    }
    Ok(())
}

/// `dense` holds a row-major `[rows, cols]` matrix.
pub(crate) fn check_dense_len(rows: usize, cols: usize, dense: &[f32]) -> Result<()> {
    if dense.len() != rows * cols {
        return Err(Error::ShapeMismatch {
            name: "<dense>".into(),
            expected: vec![rows, cols],
            actual: vec![dense.len()],
        });
    }
    Ok(())
}

/// Batches below this use the per-sample gather kernel.
const TILE_MIN_BATCH: usize = 4;
/// Multiply-adds below which threads cost more than they save.
const PARALLEL_WORK: usize = 1 << 17;

/// `Σ values[k] * x[cols[k]]`, scalar: on the project's AMD EPYC an AVX2 `vgatherdps` version
/// measured 2x slower, and interleaving values with indices (one 8-byte load per non-zero) 1.8x
/// slower. With AVX2 + FMA the loop is compiled for them (fused multiply-adds, eight sums,
/// no bounds checks: 1.25x the plain loop on LeNet-300-100's first layer).
///
/// Every index in `cols` is below `x.len()` (a [`CsrMatrix`] checks its indices when it is built,
/// and its callers pass rows of `cols` inputs).
#[inline]
fn gather_dot(isa: Isa, values: &[f32], cols: &[u32], x: &[f32]) -> f32 {
    debug_assert_eq!(values.len(), cols.len());
    #[cfg(target_arch = "x86_64")]
    if isa.avx2_fma() {
        debug_assert!(cols.iter().all(|&c| (c as usize) < x.len()));
        // SAFETY: FMA was detected; the indices are in bounds (above).
        return unsafe { gather_dot_fma(values, cols, x) };
    }
    let _ = isa;
    let mut acc = [0.0f32; 4];
    let mut vc = values.chunks_exact(4);
    let mut cc = cols.chunks_exact(4);
    for (v, c) in (&mut vc).zip(&mut cc) {
        for l in 0..4 {
            acc[l] += v[l] * x[c[l] as usize];
        }
    }
    let mut tail = 0.0;
    for (v, c) in vc.remainder().iter().zip(cc.remainder()) {
        tail += v * x[*c as usize];
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// # Safety
/// FMA must be present, `values` and `cols` the same length, and every index below `x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_dot_fma(values: &[f32], cols: &[u32], x: &[f32]) -> f32 {
    let (vp, cp, xp) = (values.as_ptr(), cols.as_ptr(), x.as_ptr());
    let n = values.len();
    let mut acc = [0.0f32; 8];
    let mut k = 0;
    while k + 8 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: k + l < n, and the index is in bounds (the caller's contract).
            unsafe { *acc = (*vp.add(k + l)).mul_add(*xp.add(*cp.add(k + l) as usize), *acc) };
        }
        k += 8;
    }
    let mut tail = 0.0f32;
    while k < n {
        // SAFETY: as above.
        unsafe { tail = (*vp.add(k)).mul_add(*xp.add(*cp.add(k) as usize), tail) };
        k += 1;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// Which tile kernel this CPU runs (for reports and benchmarks): `avx512`, `avx2` or `portable`.
pub fn simd_level() -> &'static str {
    let isa = Isa::detected();
    if isa.avx512f_fma() {
        "avx512"
    } else if isa.avx2_fma() {
        "avx2"
    } else {
        "portable"
    }
}

/// A linear layer `y = x · Wᵀ + b` whose weight is stored sparse (CSR). Runs on the CPU in `f32`;
/// inputs on another device or in another float dtype are moved and converted (and the output moved
/// back).
#[derive(Debug, Clone, PartialEq)]
pub struct SparseLinear {
    /// Shared, so the ReLU-fused copy of a layer costs no second matrix.
    weight: std::sync::Arc<CsrMatrix>,
    bias: Option<Vec<f32>>,
    /// Apply `max(y, 0)` to the output (the following ReLU, fused).
    relu: bool,
}

impl SparseLinear {
    /// A layer from a CSR weight `[out, in]` and an optional bias `[out]`.
    pub fn new(weight: CsrMatrix, bias: Option<Vec<f32>>) -> Result<Self> {
        if let Some(b) = &bias
            && b.len() != weight.rows
        {
            return Err(Error::ShapeMismatch {
                name: "<bias>".into(),
                expected: vec![weight.rows],
                actual: vec![b.len()],
            });
        }
        Ok(SparseLinear {
            weight: std::sync::Arc::new(weight),
            bias,
            relu: false,
        })
    }

    /// The same layer with the following ReLU applied to its output (or not).
    pub fn with_relu(mut self, relu: bool) -> Self {
        self.relu = relu;
        self
    }

    /// A layer from candle tensors: the weight `[out, in]`'s non-zeros and the bias `[out]`.
    /// `name` is the layer's name, for errors.
    pub fn from_tensors(name: &str, weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let w = crate::F32Tensor::from_candle(name, weight)?;
        if w.rank() != 2 {
            return Err(Error::ShapeMismatch {
                name: name.into(),
                expected: vec![0, 0],
                actual: w.shape.clone(),
            });
        }
        let csr = CsrMatrix::from_dense(w.shape[0], w.shape[1], &w.values)?;
        let bias = bias
            .map(|b| crate::F32Tensor::from_candle(name, b).map(|b| b.values))
            .transpose()?;
        SparseLinear::new(csr, bias)
    }

    /// The weight.
    pub fn weight(&self) -> &CsrMatrix {
        &self.weight
    }

    /// The bias.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.cols
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.rows
    }

    /// The forward pass on a host slice `x` `[batch, in]`; returns `[batch, out]`.
    pub fn forward_slice(&self, x: &[f32], batch: usize) -> Vec<f32> {
        let mut y = vec![0.0; batch * self.weight.rows];
        self.weight
            .matmul_into(x, batch, self.bias.as_deref(), &mut y);
        if self.relu {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        y
    }
}

impl Module for SparseLinear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let dims = xs.dims();
        let Some(&k) = dims.last() else {
            candle_core::bail!("SparseLinear: input is a scalar")
        };
        if k != self.weight.cols {
            candle_core::bail!(
                "SparseLinear: input {:?} does not end in {} features",
                dims,
                self.weight.cols
            )
        }
        let (device, dtype) = (xs.device().clone(), xs.dtype());
        let x = xs
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .contiguous()?;
        let batch = x.elem_count() / k.max(1);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("non-empty") = self.weight.rows;
        let y = self.forward_slice(joulecut_ops::view(&x, "SparseLinear")?.as_slice(), batch);
        Tensor::from_vec(y, out_dims, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(&device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relu_fused_layer_equals_the_layer_then_relu() {
        let w = [1f32, 0., -2., 0., 0., 3., 0., -1., 0.5, 0., 0., 0.];
        let m = CsrMatrix::from_dense(4, 3, &w).unwrap();
        let l = SparseLinear::new(m, Some(vec![0.1, -0.2, 0.3, -0.4])).unwrap();
        let x = [1f32, -2., 0.5, -1., 3., 2.];
        let plain = l.forward_slice(&x, 2);
        let fused = l.clone().with_relu(true).forward_slice(&x, 2);
        let want: Vec<f32> = plain.iter().map(|v| v.max(0.0)).collect();
        assert_eq!(fused, want);
        assert!(plain.iter().any(|v| *v < 0.0), "{plain:?}");
    }

    #[test]
    fn bitmap_round_trip() {
        let dense = [0., 1., 0., 2., 3., 0., 0., 0., 4.];
        let bitmap = [0b0001_1010u8, 0b0000_0001];
        let m = CsrMatrix::from_bitmap(3, 3, &bitmap, &[1., 2., 3., 4.]).unwrap();
        assert_eq!(m.to_dense(), dense);
        assert_eq!(m, CsrMatrix::from_dense(3, 3, &dense).unwrap());
        assert!(CsrMatrix::from_bitmap(3, 3, &bitmap, &[1., 2.]).is_err());
    }

    #[test]
    fn kernels_agree_with_the_reference() {
        let (rows, cols) = (13, 37);
        let dense: Vec<f32> = (0..rows * cols)
            .map(|i| if i % 3 == 0 { (i as f32).sin() } else { 0.0 })
            .collect();
        let m = CsrMatrix::from_dense(rows, cols, &dense).unwrap();
        let bias: Vec<f32> = (0..rows).map(|i| i as f32 * 0.1).collect();
        for batch in [1, 3, 4, 17, 64, 130, 300] {
            let x: Vec<f32> = (0..batch * cols).map(|i| (i as f32 * 0.37).cos()).collect();
            let want = m.matmul_reference(&x, batch, Some(&bias));
            let mut got = vec![f32::NAN; batch * rows];
            m.matmul_into(&x, batch, Some(&bias), &mut got);
            for (a, b) in want.iter().zip(&got) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                    "batch {batch}: {a} vs {b}"
                );
            }
        }
    }

    /// Every instruction-set path, both tile widths, several column blocks, a part of the row
    /// groups (as one thread of a split runs them), rows that pad their group.
    #[test]
    fn every_tile_path_agrees_with_the_reference() {
        use joulecut_ops::IsaLevel;
        fn check<const T: usize>(isa: Isa, m: &CsrMatrix, x: &[f32], nb: usize, bias: &[f32]) {
            let (rows, cols) = (m.rows, m.cols);
            let want = m.matmul_reference(x, nb, Some(bias));
            let bl = &m.blocked;
            let mut xt = vec![f32::NAN; bl.tile_len::<T>()];
            bl.transpose_tile::<T>(x, nb, &mut xt);
            let groups = spmm::group_count(bl);
            // Groups 1.. only, staged with their own stride.
            let (g0, g1) = (1, groups);
            let stride = rows - GROUP;
            let mut got = vec![f32::NAN; nb * stride];
            let mut part = vec![f32::NAN; spmm::part_len::<T>()];
            let mut out = Out {
                y: &mut got,
                stride,
                row0: GROUP,
            };
            spmm::tile_dispatch::<T>(isa, bl, &xt, (g0, g1), Some(bias), &mut part, nb, &mut out);
            for j in 0..nb {
                for r in GROUP..rows {
                    let (a, b) = (want[j * rows + r], got[j * stride + r - GROUP]);
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                        "{isa:?} T={T} cols={cols} sample {j} row {r}: {a} vs {b}"
                    );
                }
            }
        }
        let all = Isa::detected();
        for cols in [21, 700, 1000] {
            let rows = 11;
            let dense: Vec<f32> = (0..rows * cols)
                .map(|i| {
                    // Row 6 empty, row 7 dense, the others a third.
                    let r = i / cols;
                    if r != 6 && (r == 7 || i % 3 == 1) {
                        (i as f32).cos()
                    } else {
                        0.0
                    }
                })
                .collect();
            let m = CsrMatrix::from_dense(rows, cols, &dense).unwrap();
            assert!(m.blocked.blocks() == cols.div_ceil(192));
            let bias: Vec<f32> = (0..rows).map(|i| 0.5 - i as f32 * 0.1).collect();
            for isa in [all, all.capped(IsaLevel::Avx2), Isa::PORTABLE] {
                for nb in [1, 11, 16] {
                    let x: Vec<f32> = (0..nb * cols).map(|i| (i as f32 * 0.61).sin()).collect();
                    check::<16>(isa, &m, &x, nb, &bias);
                }
                let x: Vec<f32> = (0..29 * cols).map(|i| (i as f32 * 0.61).sin()).collect();
                check::<32>(isa, &m, &x, 29, &bias);
            }
        }
    }

    /// `matmul_into` on MiniLM-like shapes (odd sizes, several column blocks) through every
    /// batch path: gather, one tile, row groups split over threads, tiles split over threads.
    #[test]
    fn large_products_agree_with_the_reference() {
        let (rows, cols) = (389, 401);
        let wave = |i: usize| ((i * 7919 % 1009) as f32 / 504.5 - 1.0) * 0.1;
        type Keep = fn(usize, usize) -> bool;
        let patterns: [(&str, Keep); 4] = [
            // Half of each row, scattered.
            ("50%", |r, c| (r * 31 + c * 17) % 97 < 48),
            ("2:4", |r, c| (c + r) % 4 < 2),
            // Rows 0..40 empty, row 50 dense, the rest a tenth.
            ("uneven", |r, c| r >= 40 && (r == 50 || (r + c) % 10 == 0)),
            ("zero", |_, _| false),
        ];
        let bias: Vec<f32> = (0..rows).map(|i| wave(i + 5)).collect();
        for (name, keep) in &patterns {
            let dense: Vec<f32> = (0..rows * cols)
                .map(|i| {
                    if keep(i / cols, i % cols) {
                        wave(i)
                    } else {
                        0.0
                    }
                })
                .collect();
            let m = CsrMatrix::from_dense(rows, cols, &dense).unwrap();
            for batch in [1, 5, 15, 16, 17, 33, 470] {
                let x: Vec<f32> = (0..batch * cols).map(|i| wave(i * 3 + 1) * 10.0).collect();
                for bias in [None, Some(&bias[..])] {
                    let want = m.matmul_reference(&x, batch, bias);
                    let mut got = vec![f32::NAN; batch * rows];
                    m.matmul_into(&x, batch, bias, &mut got);
                    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                            "{name} batch {batch} element {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
