//! The one-sample sparse kernel: a [`crate::CsrMatrix`]'s rows again in sliced ELLPACK (SELL-8).
//!
//! Rows are sorted by their non-zero count, longest first, and cut into slices of 8. Step `k` of a
//! slice holds the `k`-th non-zero of each of its 8 rows: 8 `u16` column indices and 8 values
//! (rows shorter than the slice's longest are padded with index 0 and value 0; sorted, that is
//! about 2 % at LeNet-300-100's densities). One step is then one 8-lane FMA: the values are one
//! vector load, and the 8 inputs are fetched with scalar loads from two 8-byte index words and
//! assembled in registers.
//!
//! Why not the CSR row gather: each row's non-zeros are summed in one lane group and reduced
//! horizontally, and each non-zero costs three loads (index, value, input). Here the value costs
//! an eighth of a load, an index a quarter, and no row is reduced. Measured on Zen 3 on a
//! 300 x 784 matrix at 5.7 % density (LeNet-300-100's first layer after 90 % global pruning):
//! CSR gather 4.9-5.1 µs, this kernel 3.2-3.3 µs, `vgatherdps` on the same layout 6.2-6.4 µs,
//! the same layout with scalar FMAs 4.9-5.3 µs, unsorted rows (22 % padding) 3.9-4.0 µs.
//!
//! The portable loop walks the same layout; the tests hold both to
//! [`crate::CsrMatrix::matmul_reference`].

use joulecut_ops::Isa;
use rayon::prelude::*;

/// Rows per slice (the lanes of one AVX2 vector).
const C: usize = 8;

/// The SELL-8 copy of a CSR matrix with at most 65,536 columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sell {
    /// Output row of slot `s * C + l` (slice `s`, lane `l`), for the real rows only.
    rows: Vec<u32>,
    /// Slice `s` covers steps `ptr[s]..ptr[s + 1]`.
    ptr: Vec<usize>,
    /// `C` column indices per step.
    idx: Vec<u16>,
    /// `C` values per step.
    val: Vec<f32>,
}

impl Sell {
    /// Columns this layout can index.
    pub(crate) const MAX_COLS: usize = 1 << 16;

    /// The layout of CSR arrays; `None` when `cols` exceeds [`Sell::MAX_COLS`].
    pub(crate) fn new(
        cols: usize,
        row_ptr: &[usize],
        col_idx: &[u32],
        values: &[f32],
    ) -> Option<Self> {
        if cols > Self::MAX_COLS {
            return None;
        }
        let rows = row_ptr.len().saturating_sub(1);
        let len = |r: usize| row_ptr[r + 1] - row_ptr[r];
        let mut order: Vec<u32> = (0..rows as u32).collect();
        order.sort_by_key(|&r| std::cmp::Reverse(len(r as usize)));
        let mut s = Sell {
            ptr: vec![0],
            ..Sell::default()
        };
        for slice in order.chunks(C) {
            let steps = slice.iter().map(|&r| len(r as usize)).max().unwrap_or(0);
            for k in 0..steps {
                for l in 0..C {
                    let nz = slice
                        .get(l)
                        .map(|&r| r as usize)
                        .filter(|&r| k < len(r))
                        .map(|r| row_ptr[r] + k);
                    match nz {
                        Some(i) => {
                            s.idx.push(col_idx[i] as u16);
                            s.val.push(values[i]);
                        }
                        None => {
                            s.idx.push(0);
                            s.val.push(0.0);
                        }
                    }
                }
            }
            s.ptr.push(s.ptr.last().copied().unwrap_or(0) + steps);
        }
        s.rows = order;
        Some(s)
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.rows.len() * 4
            + self.ptr.len() * size_of::<usize>()
            + self.idx.len() * 2
            + self.val.len() * 4
    }

    /// `y[r] = Σ_c w[r, c] · x[c] (+ b[r])` for one sample. `x` must have the matrix's columns
    /// (every stored index is below its length), `y` its rows. `parallel`: split the slices over
    /// rayon (the caller judges whether the work pays for it).
    pub(crate) fn matvec(&self, x: &[f32], bias: Option<&[f32]>, y: &mut [f32], parallel: bool) {
        debug_assert_eq!(y.len(), self.rows.len());
        debug_assert!(self.idx.iter().all(|&c| (c as usize) < x.len()));
        let isa = Isa::detected();
        let slices = self.ptr.len() - 1;
        let out = OutPtr(y.as_mut_ptr());
        // Slices s0..s1: each writes only the rows it holds, and every row is in one slice.
        let run = |s0: usize, s1: usize| {
            for s in s0..s1 {
                let sums = self.slice(isa, s, x);
                for (l, &r) in self.rows[s * C..].iter().take(C).enumerate() {
                    let r = r as usize;
                    // SAFETY: r < rows = y.len(), and no other slice holds row r.
                    unsafe { *out.at(r) = sums[l] + bias.map_or(0.0, |b| b[r]) };
                }
            }
        };
        if parallel {
            let per = slices.div_ceil(rayon::current_num_threads() * 4).max(1);
            (0..slices.div_ceil(per))
                .into_par_iter()
                .for_each(|c| run(c * per, ((c + 1) * per).min(slices)));
        } else {
            run(0, slices);
        }
    }

    /// The 8 lanes' sums of slice `s`.
    #[inline]
    fn slice(&self, isa: Isa, s: usize, x: &[f32]) -> [f32; C] {
        let (k0, k1) = (self.ptr[s], self.ptr[s + 1]);
        let (idx, val) = (&self.idx[k0 * C..k1 * C], &self.val[k0 * C..k1 * C]);
        #[cfg(target_arch = "x86_64")]
        if isa.avx2_fma() {
            // SAFETY: AVX2 + FMA detected; idx and val hold whole steps; every index is below
            // x.len() (checked when the CSR matrix was built, and x has its columns).
            return unsafe { x86::slice(idx, val, x) };
        }
        let _ = isa;
        let mut acc = [0f32; C];
        for (i, v) in idx.chunks_exact(C).zip(val.chunks_exact(C)) {
            for l in 0..C {
                acc[l] = v[l].mul_add(x[i[l] as usize], acc[l]);
            }
        }
        acc
    }
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

impl OutPtr {
    /// A method, so that closures capture the `Sync` wrapper rather than its raw pointer field.
    fn at(&self, r: usize) -> *mut f32 {
        self.0.wrapping_add(r)
    }
}
// SAFETY: slices write disjoint rows (see `Sell::matvec`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::C;

    /// The inputs at 4 indices packed in `q` (16 bits each) as an xmm.
    #[inline(always)]
    unsafe fn gather4(x: *const f32, q: u64) -> __m128 {
        // SAFETY: each index is in bounds per the caller.
        let g = |l: u32| unsafe { *x.add((q >> (16 * l) & 0xFFFF) as usize) };
        // SAFETY: plain register construction.
        unsafe { _mm_setr_ps(g(0), g(1), g(2), g(3)) }
    }

    /// The inputs of one step's 8 indices at `i`.
    #[inline(always)]
    unsafe fn gather8(x: *const f32, i: *const u16) -> __m256 {
        // SAFETY: 8 indices readable at i (one step), each in bounds per the caller.
        unsafe {
            let lo = gather4(x, (i as *const u64).read_unaligned());
            let hi = gather4(x, (i.add(4) as *const u64).read_unaligned());
            _mm256_set_m128(hi, lo)
        }
    }

    /// # Safety
    /// AVX2 + FMA; `idx` and `val` hold the same whole number of steps; every index < `x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn slice(idx: &[u16], val: &[f32], x: &[f32]) -> [f32; C] {
        let steps = val.len() / C;
        let (ip, vp, xp) = (idx.as_ptr(), val.as_ptr(), x.as_ptr());
        // Two sums, so that consecutive steps' FMAs do not wait on each other.
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut k = 0;
        // SAFETY (whole body): k + 1 < steps inside the loop, k < steps after it.
        unsafe {
            while k + 2 <= steps {
                let w0 = _mm256_loadu_ps(vp.add(k * C));
                let w1 = _mm256_loadu_ps(vp.add(k * C + C));
                a0 = _mm256_fmadd_ps(gather8(xp, ip.add(k * C)), w0, a0);
                a1 = _mm256_fmadd_ps(gather8(xp, ip.add(k * C + C)), w1, a1);
                k += 2;
            }
            if k < steps {
                let w0 = _mm256_loadu_ps(vp.add(k * C));
                a0 = _mm256_fmadd_ps(gather8(xp, ip.add(k * C)), w0, a0);
            }
            let mut out = [0f32; C];
            _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(a0, a1));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::CsrMatrix;

    /// Random matrices with uneven rows (empty, full, lone), every column count up to the
    /// index limit: the kernel equals the CSR reference within float rounding, with and
    /// without bias, on one thread and split.
    #[test]
    fn sell_matvec_matches_the_csr_reference() {
        let mut lcg = joulecut_testkit::Lcg32::new(5);
        let mut rnd = move || lcg.next_f32();
        for &(rows, cols, density) in &[
            (300, 784, 0.057),
            (1, 1, 1.0),
            (7, 3, 0.5),
            (9, 17, 0.3),
            (100, 300, 0.42),
            (33, 65536, 0.001),
            (2000, 40, 0.9),
        ] {
            let mut dense: Vec<f32> = (0..rows * cols)
                .map(|_| {
                    if (rnd() as f64) < density {
                        rnd() - 0.5
                    } else {
                        0.0
                    }
                })
                .collect();
            // one empty row and one full row
            if rows > 2 {
                dense[..cols].iter_mut().for_each(|v| *v = 0.0);
                dense[cols..2 * cols]
                    .iter_mut()
                    .for_each(|v| *v = rnd() + 0.1);
            }
            let m = CsrMatrix::from_dense(rows, cols, &dense).unwrap();
            let x: Vec<f32> = (0..cols).map(|_| rnd() - 0.5).collect();
            let bias: Vec<f32> = (0..rows).map(|_| rnd()).collect();
            let sell = m.sell().expect("cols fit u16 indices");
            for b in [None, Some(&bias[..])] {
                let want = m.matmul_reference(&x, 1, b);
                for parallel in [false, true] {
                    let mut y = vec![f32::NAN; rows];
                    sell.matvec(&x, b, &mut y, parallel);
                    for (r, (a, e)) in y.iter().zip(&want).enumerate() {
                        let scale: f32 =
                            (0..cols).map(|c| (dense[r * cols + c] * x[c]).abs()).sum();
                        assert!(
                            (a - e).abs() <= 1e-5 * (1.0 + scale),
                            "{rows}x{cols} row {r}: {a} vs {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wider_matrices_keep_the_csr_gather() {
        let m = CsrMatrix::from_dense(1, 65537, &vec![1.0; 65537]).unwrap();
        assert!(m.sell().is_none());
        let x = vec![1.0; 65537];
        let mut y = [0.0];
        m.matmul_into(&x, 1, None, &mut y);
        assert_eq!(y, [65537.0]);
    }
}
