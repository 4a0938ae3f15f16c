//! [`PackedWeights`]: int8 weights `[n, k]` packed once into the kernels' layout, panels of 16
//! output columns × 4 consecutive `k` (one 64-byte, 64-byte-aligned block each), with the column
//! sums the epilogue and the VNNI kernel need, and the [`Residual`] of weights the AVX2 paired loop
//! cannot hold.
//!
//! ```
//! use joulecut_quant::gemm::PackedWeights;
//! let w: Vec<i8> = (0..3 * 5).map(|i| i as i8 - 7).collect();
//! let p = PackedWeights::pack(&w, 3, 5).unwrap();
//! assert_eq!((p.n(), p.k(), p.k_padded()), (3, 5, 8));
//! assert_eq!(p.unpack(), w);
//! ```

use super::Signs;
use super::residual::Residual;
use crate::error::{Error, Result};

/// Output columns per packed panel.
pub const PANEL_N: usize = 16;
/// Consecutive `k` per packed group.
pub const GROUP_K: usize = 4;
/// At most one weight in this many may move to the residual for the 7-bit paired loop.
const MAX_RESIDUAL_SHARE: usize = 1024;

/// Bytes of one (panel, k-group) block.
pub(super) const BLOCK: usize = PANEL_N * GROUP_K;
const _: () = assert!(BLOCK == 64, "one block is one 512-bit vector");

/// Largest `k` for which the i32 epilogue (zero-point corrections included) cannot overflow.
pub const MAX_K: usize = 1 << 15;

/// One `[16][4]` block of packed weights, aligned so that no kernel load of it (32 bytes for
/// AVX2, 64 for AVX-512) straddles two cache lines: a split load costs a second load slot, and the
/// AVX2 paired loop issues close to two loads per cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(64))]
pub(super) struct Block([i8; BLOCK]);

/// int8 weights `[n, k]` packed for the kernels, with their column sums.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) k_pad: usize,
    pub(super) n_pad: usize,
    /// The body, `[n_pad / 16][k_pad / 4][16][4]`, one 64-byte block per `[16][4]`: the weights
    /// less those in `residual`.
    pub(super) data: Vec<Block>,
    /// The weights moved out of `data` (see [`Residual`]); the kernels add their products.
    pub(super) residual: Box<Residual>,
    /// `Σ_k w[n, k]` (all weights), padded with zeros to `n_pad`.
    pub(super) col_sums: Vec<i32>,
    /// `-128 · Σ_k body[n, k]`: the VNNI kernel's starting accumulators (it multiplies the body).
    pub(super) vnni_init: Vec<i32>,
    /// Whether some body weight is -128 (the AVX2 signed loop can't take those exactly).
    pub(super) has_min: bool,
    /// Whether the body keeps every paired quad within `residual::QUAD_SUM_MAX`, so 7-bit
    /// activations may take the AVX2 paired loop.
    pub(super) pairs_u7: bool,
}

impl PackedWeights {
    /// Packs row-major `w` of shape `[n, k]`.
    pub fn pack(w: &[i8], n: usize, k: usize) -> Result<PackedWeights> {
        if w.len() != n * k || n == 0 || k == 0 || k > MAX_K {
            return Err(Error::BadShape {
                name: "int8 weight".into(),
                shape: vec![n, k],
                reason: format!(
                    "{} values; need n·k of them with n, k ≥ 1 and k ≤ {MAX_K}",
                    w.len()
                ),
            });
        }
        let k_pad = k.next_multiple_of(GROUP_K);
        let n_pad = n.next_multiple_of(PANEL_N);
        let kq = k_pad / GROUP_K;
        // Split off the weights the paired 7-bit loop can't hold only when they are few: each
        // costs a scalar multiply-add per row, about 40 of the paired loop's (LeNet-5's fc1 would
        // move 3.4 % of its weights; all-MiniLM-L6-v2's layers at most 0.06 %).
        let (split, residual) = Residual::split(w, k, n_pad);
        let pairs_u7 = residual.len() * MAX_RESIDUAL_SHARE <= n * k;
        let (body, residual) = if pairs_u7 {
            (split, residual)
        } else {
            (w.to_vec(), Residual::default())
        };
        let mut data = vec![Block([0; BLOCK]); n_pad * k_pad / BLOCK];
        for (col, row) in body.chunks_exact(k).enumerate() {
            let (panel, c) = (col / PANEL_N, col % PANEL_N);
            for (kk, &v) in row.iter().enumerate() {
                data[panel * kq + kk / GROUP_K].0[c * GROUP_K + kk % GROUP_K] = v;
            }
        }
        let sums = |w: &[i8]| -> Vec<i32> {
            let mut s: Vec<i32> = w
                .chunks_exact(k)
                .map(|r| r.iter().map(|&v| i32::from(v)).sum())
                .collect();
            s.resize(n_pad, 0);
            s
        };
        let vnni_init = sums(&body).iter().map(|s| -128 * s).collect();
        Ok(PackedWeights {
            n,
            k,
            k_pad,
            n_pad,
            data,
            residual: Box::new(residual),
            col_sums: sums(w),
            vnni_init,
            has_min: body.contains(&i8::MIN),
            pairs_u7,
        })
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Depth (input features).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `k` rounded up to a multiple of 4: the row stride the kernels want for activations.
    pub fn k_padded(&self) -> usize {
        self.k_pad
    }

    /// `Σ_k w[c, k]` for each column `c`.
    pub fn col_sums(&self) -> &[i32] {
        &self.col_sums[..self.n]
    }

    /// The weight `w[col, kk]` (unpacked).
    pub fn get(&self, col: usize, kk: usize) -> i8 {
        let kq = self.k_pad / GROUP_K;
        let body = self.bytes_flat()[((col / PANEL_N) * kq + kk / GROUP_K) * BLOCK
            + (col % PANEL_N) * GROUP_K
            + kk % GROUP_K];
        // A weight is in the body or in the residual (the other holds 0).
        body.wrapping_add(self.residual.get(col, kk))
    }

    /// Weights kept outside the packed body (see the module docs of `residual.rs`).
    pub fn residual_len(&self) -> usize {
        self.residual.len()
    }

    /// Whether 7-bit activations take the AVX2 paired loop with these weights.
    pub fn pairs_u7(&self) -> bool {
        self.pairs_u7
    }

    /// Whether activations of these `signs` may take the AVX2 paired loop.
    pub(super) fn pairs(&self, signs: Signs) -> bool {
        match signs {
            Signs::SixBit => true,
            Signs::NonNegative => self.pairs_u7,
            Signs::Mixed => false,
        }
    }

    /// The weights back in `[n, k]` row-major order.
    pub fn unpack(&self) -> Vec<i8> {
        (0..self.n)
            .flat_map(|c| (0..self.k).map(move |kk| (c, kk)))
            .map(|(c, kk)| self.get(c, kk))
            .collect()
    }

    /// Bytes of packed weight data.
    pub fn bytes(&self) -> usize {
        self.data.len() * BLOCK
    }

    /// Panel `p`'s packed bytes: `k_pad / 4` blocks of 64.
    pub(super) fn panel(&self, p: usize) -> &[i8] {
        let len = (self.k_pad / GROUP_K) * BLOCK;
        &self.bytes_flat()[p * len..(p + 1) * len]
    }

    /// The packed bytes, 64-byte aligned.
    fn bytes_flat(&self) -> &[i8] {
        // SAFETY: `Block` is `[i8; 64]` with a larger alignment and no padding, so the blocks are
        // `64 · len` contiguous, initialised bytes.
        unsafe {
            std::slice::from_raw_parts(self.data.as_ptr().cast::<i8>(), self.data.len() * BLOCK)
        }
    }
}
