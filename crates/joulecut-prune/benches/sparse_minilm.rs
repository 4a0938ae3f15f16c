//! The sparse kernel against the dense GEMM on all-MiniLM-L6-v2's linear shapes (out, in):
//! (1152, 384) fused q/k/v, (384, 384) attention output, (1536, 384) FFN up, (384, 1536) FFN down;
//! weights 50% unstructured (half of each row, by magnitude, as Wanda and SparseGPT leave them)
//! or 2:4; rows m = 470 (a batch of 32 unpadded sentences) and m = 15 (one sentence).
//!
//! The dense side is called exactly as `joulecut_models::bert::linear` does: `matmul_f32` on the
//! weights stored transposed, all threads once the product is large enough, bias left to the
//! caller. The sparse side is `CsrMatrix::matmul_into` with its bias. Groups
//! `minilm_m{M}/{out}x{in}` hold `dense`, `sparse50` and `sparse2of4`; compare within a group.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use joulecut_ops::{MatRef, matmul_f32};
use joulecut_prune::CsrMatrix;
use joulecut_testkit::XorShift64;

const SHAPES: [(usize, usize); 4] = [(1152, 384), (384, 384), (1536, 384), (384, 1536)];

/// Random `[n, k]` weights pruned to half of each row (`two_of_four`: 2 of every 4).
fn pruned(n: usize, k: usize, two_of_four: bool, seed: u64) -> Vec<f32> {
    let mut w = XorShift64::from_state(seed).signed_vec(n * k, 0.1);
    for row in w.chunks_mut(k) {
        let width = if two_of_four { 4 } else { k };
        for g in row.chunks_mut(width) {
            let mut mag: Vec<f32> = g.iter().map(|v| v.abs()).collect();
            mag.sort_by(f32::total_cmp);
            let keep = mag[g.len() / 2];
            for v in g.iter_mut() {
                if v.abs() < keep {
                    *v = 0.0;
                }
            }
        }
    }
    w
}

fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    for (r, row) in a.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

fn bench(c: &mut Criterion) {
    for m in [470usize, 15] {
        for (n, k) in SHAPES {
            let mut group = c.benchmark_group(format!("minilm_m{m}/{n}x{k}"));
            group.throughput(Throughput::Elements((m * n * k) as u64));
            let x = XorShift64::from_state(9).signed_vec(m * k, 1.0);
            let bias = XorShift64::from_state(7).signed_vec(n, 0.1);
            let mut y = vec![0f32; m * n];
            let dense_w = transpose(&XorShift64::from_state(3).signed_vec(n * k, 0.1), n, k);
            let threads = if m * n * k >= 1 << 18 {
                rayon::current_num_threads()
            } else {
                1
            };
            group.bench_function("dense", |b| {
                b.iter(|| {
                    matmul_f32(
                        (n, m, k),
                        black_box(&mut y),
                        n,
                        false,
                        MatRef::new(&dense_w, n, 1),
                        MatRef::new(black_box(&x), k, 1),
                        threads,
                    )
                })
            });
            for (name, two_of_four) in [("sparse50", false), ("sparse2of4", true)] {
                let w = pruned(n, k, two_of_four, (n * 31 + k) as u64);
                let csr = CsrMatrix::from_dense(n, k, &w).unwrap();
                group.bench_function(name, |b| {
                    b.iter(|| csr.matmul_into(black_box(&x), m, Some(&bias), black_box(&mut y)))
                });
            }
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
