//! The few weights the AVX2 paired loop cannot hold, kept aside as a sparse residual.
//!
//! The AVX2 loop for non-negative activations multiplies groups `q` and `q + 1` with `vpmaddubsw`
//! and adds the two 16-bit pair sums before widening (3 multiply-port instructions per 128
//! products instead of 4). Lane `j` of that sum is `Σ a_i · w_i` over the four `k` in
//! `{4q + j, 4q + j + 1, 4q + 4 + j, 4q + 5 + j}` (`j` = 0 or 2), which fits 16 bits for every
//! activation in `0..=127` exactly when `127 · max(Σ w_i⁺, Σ w_i⁻) ≤ 32767`, i.e. the quad's
//! positive weights and its negative weights each add up to at most [`QUAD_SUM_MAX`] in magnitude.
//!
//! Real weights almost always do: on all-MiniLM-L6-v2's int8 layers (per-channel, smoothed)
//! 0.001-0.24 % of the quads do not, spread over most panels. Packing moves the largest same-sign weights of
//! each such quad out of the packed body into this residual (2 to 210 entries per layer there), so
//! the body fits the loop, and [`Corrected`] adds `a[r, k] · v` for each entry to the finished
//! tiles. The result is exact for every kernel; only [`super::Int8Kernel::Reference`], the oracle,
//! reads the original weights instead. Weights with more than one such weight in 1,024 (small
//! QAT-trained layers: LeNet-5's fc1 would move 3.4 %) keep no residual, and their 7-bit rows run
//! the unpaired loop ([`super::PackedWeights::pairs_u7`]).

use super::{GROUP_K, PANEL_N, TileSink};

/// The largest sum of same-sign weights in one paired quad (`⌊32767 / 127⌋`).
pub(super) const QUAD_SUM_MAX: i32 = 32767 / 127;

/// One weight moved out of the packed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) col: u32,
    pub(super) k: u32,
    pub(super) v: i8,
}

/// The moved weights in `(col, k)` order, so grouped by panel: panel `p`'s are
/// `entries[start[p]..start[p + 1]]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Residual {
    start: Vec<u32>,
    entries: Vec<Entry>,
}

impl Residual {
    /// Splits row-major `w` (`[n, k]`) into a body that fits the paired loop (returned, same
    /// layout) and the residual, for `n_pad / 16` panels.
    pub(super) fn split(w: &[i8], k: usize, n_pad: usize) -> (Vec<i8>, Residual) {
        let mut body = w.to_vec();
        let mut entries = Vec::new();
        let mut start = vec![0u32; n_pad / PANEL_N + 1];
        let kq = k.div_ceil(GROUP_K);
        for (col, row) in body.chunks_exact_mut(k).enumerate() {
            for q in (0..kq.saturating_sub(1)).step_by(2) {
                for j in [0, 2] {
                    let base = q * GROUP_K + j;
                    let quad = [base, base + 1, base + GROUP_K, base + GROUP_K + 1];
                    // The common case, one pass: both signs' sums within the bound.
                    let (mut pos, mut neg) = (0, 0);
                    for &kk in &quad {
                        let v = i32::from(row.get(kk).copied().unwrap_or(0));
                        (pos, neg) = (pos + v.max(0), neg + (-v).max(0));
                    }
                    if pos <= QUAD_SUM_MAX && neg <= QUAD_SUM_MAX {
                        continue;
                    }
                    for positive in [true, false] {
                        while let Some(kk) = over_bound(row, &quad, positive) {
                            entries.push(Entry {
                                col: col as u32,
                                k: kk as u32,
                                v: row[kk],
                            });
                            row[kk] = 0;
                        }
                    }
                }
            }
            start[col / PANEL_N + 1] = entries.len() as u32;
        }
        // In (col, k) order, for `get`'s binary search.
        entries.sort_unstable_by_key(|e| (e.col, e.k));
        // Panels after the last column's (padding) end where it did.
        for p in 1..start.len() {
            start[p] = start[p].max(start[p - 1]);
        }
        (body, Residual { start, entries })
    }

    /// Whether nothing was moved.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Moved weights.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entries of panels `p0..p1`.
    fn panels(&self, p0: usize, p1: usize) -> &[Entry] {
        if self.entries.is_empty() {
            // Also the `Default` residual, which has no panel starts.
            return &[];
        }
        &self.entries[self.start[p0] as usize..self.start[p1] as usize]
    }

    /// The moved weight at `(col, k)`, or 0.
    pub(super) fn get(&self, col: usize, k: usize) -> i8 {
        let p = col / PANEL_N;
        let es = self.panels(p, p + 1);
        es.binary_search_by_key(&(col as u32, k as u32), |e| (e.col, e.k))
            .map_or(0, |i| es[i].v)
    }
}

/// When the quad's weights of one sign add up past [`QUAD_SUM_MAX`], the largest of them (the one
/// to move); `None` once they fit. Indices past the row's end are padding (zero).
fn over_bound(row: &[i8], quad: &[usize; 4], positive: bool) -> Option<usize> {
    let mag = |kk: usize| {
        let v = i32::from(row.get(kk).copied().unwrap_or(0));
        if positive { v.max(0) } else { (-v).max(0) }
    };
    let sum: i32 = quad.iter().map(|&kk| mag(kk)).sum();
    (sum > QUAD_SUM_MAX).then(|| *quad.iter().max_by_key(|&&kk| mag(kk)).unwrap_or(&quad[0]))
}

/// Most i32s in one finished tile (the VNNI kernel's 8 rows × 32 columns).
const MAX_TILE: usize = 8 * 2 * PANEL_N;

/// A [`TileSink`] that adds the residual's products to each tile before passing it on. `a` and
/// `stride` are the activations the kernel reads (tile row `r` is `a[r · stride..]`).
pub(super) struct Corrected<'a, S> {
    pub(super) inner: &'a S,
    pub(super) a: &'a [i8],
    pub(super) stride: usize,
    pub(super) residual: &'a Residual,
}

impl<S: TileSink> TileSink for Corrected<'_, S> {
    #[inline(always)]
    fn tile(&self, r0: usize, rows: usize, c0: usize, width: usize, acc: &[i32]) {
        let p0 = c0 / PANEL_N;
        let entries = self.residual.panels(p0, p0 + width.div_ceil(PANEL_N));
        if entries.is_empty() {
            return self.inner.tile(r0, rows, c0, width, acc);
        }
        // The AVX2 tiles hold 64 i32s: zeroing a 256-entry buffer for each of them cost more
        // than the corrections (1.9 % of the int8 MiniLM's time).
        if rows * width <= SMALL_TILE {
            self.correct::<SMALL_TILE>(entries, r0, rows, c0, width, acc);
        } else {
            self.correct::<MAX_TILE>(entries, r0, rows, c0, width, acc);
        }
    }
}

/// i32s in one AVX2 or portable tile (4 × 16, 2 × 32).
const SMALL_TILE: usize = 4 * PANEL_N;

impl<S: TileSink> Corrected<'_, S> {
    #[inline(always)]
    fn correct<const N: usize>(
        &self,
        entries: &[Entry],
        r0: usize,
        rows: usize,
        c0: usize,
        width: usize,
        acc: &[i32],
    ) {
        assert!(rows * width <= N, "tile of {rows} × {width}");
        let mut buf = [0i32; N];
        let buf = &mut buf[..rows * width];
        buf.copy_from_slice(&acc[..rows * width]);
        for e in entries {
            let c = e.col as usize - c0;
            let v = i32::from(e.v);
            for r in 0..rows {
                buf[r * width + c] += i32::from(self.a[(r0 + r) * self.stride + e.k as usize]) * v;
            }
        }
        self.inner.tile(r0, rows, c0, width, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fits(body: &[i8], k: usize) -> bool {
        let kq = k.div_ceil(GROUP_K);
        body.chunks_exact(k).all(|row| {
            (0..kq.saturating_sub(1)).step_by(2).all(|q| {
                [0, 2].into_iter().all(|j| {
                    let b = q * GROUP_K + j;
                    let quad = [b, b + 1, b + GROUP_K, b + GROUP_K + 1];
                    over_bound(row, &quad, true).is_none()
                        && over_bound(row, &quad, false).is_none()
                })
            })
        })
    }

    #[test]
    fn body_plus_residual_is_the_weights_and_the_body_fits() {
        for &(n, k) in &[(1, 8), (17, 7), (33, 300), (40, 13), (3, 1)] {
            let w = joulecut_testkit::XorShift64::new(n as u64 * 31 + k as u64).i8_vec(n * k);
            let n_pad = n.next_multiple_of(PANEL_N);
            let (body, res) = Residual::split(&w, k, n_pad);
            assert!(fits(&body, k), "n={n} k={k}");
            for col in 0..n {
                for kk in 0..k {
                    let b = body[col * k + kk];
                    let r = res.get(col, kk);
                    assert!(b == 0 || r == 0, "a weight is in one place");
                    assert_eq!(b + r, w[col * k + kk], "n={n} k={k} ({col}, {kk})");
                }
            }
            let last = *res.start.last().unwrap() as usize;
            assert_eq!(last, res.len(), "every entry belongs to a panel");
        }
    }

    #[test]
    fn weights_within_the_bound_stay_in_the_body() {
        // 64 · 4 = 256 ≤ 258: nothing moves; 65 · 4 = 260 moves one weight per quad.
        let (_, res) = Residual::split(&[64i8; 16 * 8], 8, 16);
        assert!(res.is_empty());
        let (body, res) = Residual::split(&[-65i8; 16 * 8], 8, 16);
        assert_eq!(res.len(), 16 * 2);
        assert!(fits(&body, 8));
        // A lone odd last group is never paired: k = 4 has one group.
        let (_, res) = Residual::split(&[127i8; 16 * 4], 4, 16);
        assert!(res.is_empty());
    }
}
