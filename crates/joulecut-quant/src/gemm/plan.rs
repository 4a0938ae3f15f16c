//! Splitting a GEMM over the rayon pool: rectangles of rows × panels ([`Task`]), or whole row
//! chunks for the fused quantize + GEMM; small products stay on the calling thread.

use joulecut_ops::pool_threads;

use super::{PANEL_N, PackedWeights};

/// Work (m·n·k multiply-adds) below which a GEMM runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 21;

/// A rectangle of work: rows `r0..r1`, panels `p0..p1`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Task {
    pub r0: usize,
    pub r1: usize,
    pub p0: usize,
    pub p1: usize,
}

/// Splits `m × panels` into tasks for the rayon pool.
pub(super) fn plan(m: usize, w: &PackedWeights) -> Vec<Task> {
    let panels = w.n_pad / PANEL_N;
    let work = m * w.n_pad * w.k_pad;
    let threads = pool_threads();
    if work < PARALLEL_MIN_WORK || threads == 1 {
        return vec![Task {
            r0: 0,
            r1: m,
            p0: 0,
            p1: panels,
        }];
    }
    let target = 4 * threads;
    let row_chunks = (m / 16).clamp(1, target);
    let col_groups = target.div_ceil(row_chunks).min(panels);
    let rows_per = m.div_ceil(row_chunks).next_multiple_of(8);
    let panels_per = panels.div_ceil(col_groups);
    let mut tasks = Vec::new();
    for r0 in (0..m).step_by(rows_per) {
        for p0 in (0..panels).step_by(panels_per) {
            tasks.push(Task {
                r0,
                r1: (r0 + rows_per).min(m),
                p0,
                p1: (p0 + panels_per).min(panels),
            });
        }
    }
    tasks
}

/// Rows per task of [`quantize_gemm_requant`], or `m` when the product should stay on the calling
/// thread (small batches: batch-1 latency must not pay for a rayon round trip).
pub(super) fn rows_per_task(m: usize, w: &PackedWeights) -> usize {
    let threads = pool_threads();
    if m * w.n_pad * w.k_pad < PARALLEL_MIN_WORK || threads == 1 || m < 2 * MIN_TASK_ROWS {
        return m;
    }
    // Two tasks per thread: enough slack for work stealing on a busy machine, few enough that each
    // task's tiles stay large. Multiples of 4 keep the AVX2 micro-tiles full.
    m.div_ceil(2 * threads)
        .next_multiple_of(4)
        .max(MIN_TASK_ROWS)
}

/// Fewest rows worth a rayon task.
const MIN_TASK_ROWS: usize = 8;
