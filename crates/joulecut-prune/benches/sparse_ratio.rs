//! Interleaved timing of the sparse kernel against the dense GEMM on MiniLM shapes; prints the
//! median ratio sparse/dense per shape.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use joulecut_ops::{MatRef, matmul_f32};
use joulecut_prune::CsrMatrix;
use joulecut_testkit::XorShift64;

fn pruned(n: usize, k: usize, pattern: &str, seed: u64) -> Vec<f32> {
    let mut w = XorShift64::from_state(seed).signed_vec(n * k, 0.1);
    for row in w.chunks_mut(k) {
        if pattern == "2:4" {
            for g in row.chunks_mut(4) {
                let mut idx = [0usize, 1, 2, 3];
                idx.sort_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()));
                g[idx[0]] = 0.0;
                g[idx[1]] = 0.0;
            }
        } else {
            let mut a: Vec<f32> = row.iter().map(|v| v.abs()).collect();
            a.sort_by(f32::total_cmp);
            let t = a[k / 2];
            for v in row.iter_mut() {
                if v.abs() < t {
                    *v = 0.0;
                }
            }
        }
    }
    w
}

fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

fn main() {
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(301);
    for &m in &[470usize, 15] {
        for &(n, k) in &[(1152usize, 384usize), (384, 384), (1536, 384), (384, 1536)] {
            for pattern in ["50%", "2:4"] {
                let w = pruned(n, k, pattern, (n * 31 + k) as u64);
                let wt = transpose(&w, n, k);
                let bias = XorShift64::from_state(7).signed_vec(n, 0.1);
                let csr = CsrMatrix::from_dense(n, k, &w).unwrap();
                let x = XorShift64::from_state(9).signed_vec(m * k, 1.0);
                let mut y = vec![0f32; m * n];
                let threads = if m * n * k >= 1 << 18 {
                    rayon::current_num_threads()
                } else {
                    1
                };
                let dense = |y: &mut [f32]| {
                    matmul_f32(
                        (n, m, k),
                        y,
                        n,
                        false,
                        MatRef::new(&wt, n, 1),
                        MatRef::new(&x, k, 1),
                        threads,
                    );
                };
                let sparse = |y: &mut [f32]| csr.matmul_into(&x, m, Some(&bias), y);
                dense(&mut y);
                sparse(&mut y);
                // Single calls, alternating: noise from other processes only adds time, so the
                // lower quartile and the minimum say most about the kernels themselves.
                let (mut ds, mut ss) = (Vec::new(), Vec::new());
                for _ in 0..reps {
                    let t = Instant::now();
                    dense(black_box(&mut y));
                    ds.push(t.elapsed().as_secs_f64());
                    let t = Instant::now();
                    sparse(black_box(&mut y));
                    ss.push(t.elapsed().as_secs_f64());
                }
                ds.sort_by(f64::total_cmp);
                ss.sort_by(f64::total_cmp);
                let q = |v: &[f64], f: f64| v[((v.len() - 1) as f64 * f) as usize];
                println!(
                    "m={m:4} n={n:5} k={k:5} {pattern:>4}: sparse/dense median {:.3} q1 {:.3} min {:.3}",
                    q(&ss, 0.5) / q(&ds, 0.5),
                    q(&ss, 0.25) / q(&ds, 0.25),
                    ss[0] / ds[0]
                );
            }
        }
    }
}
