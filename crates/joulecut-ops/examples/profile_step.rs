//! Where a training step spends its time: batching, forward + loss, backward,
//! optimizer, for LeNet-300-100 and LeNet-5 at batch 128, plain candle vs
//! joulecut's ops. Prints the median of each phase over `STEPS` steps.
//!
//! `cargo run --release -p joulecut-ops --example profile_step [steps]`
//! (set `RAYON_NUM_THREADS` to change the thread count, `JOULECUT_TUNE_ALLOC=1`
//! to call `joulecut_ops::tune_allocator` first). This is a
//! diagnostic; the figures quoted as results come from the criterion benches.

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use common::{Arch, Data, Net, Opt};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let only = std::env::args().nth(2).unwrap_or_default();
    let tuned = std::env::var("JOULECUT_TUNE_ALLOC").is_ok_and(|v| v != "0")
        && joulecut_ops::tune_allocator();
    println!(
        "threads: {}, allocator tuned: {tuned}",
        rayon::current_num_threads()
    );
    println!(
        "| model | ops | batch ms | forward+loss ms | backward ms | optimizer ms | step ms | samples/s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (arch, name) in [(Arch::Mlp, "mlp"), (Arch::LeNet5, "lenet5")] {
        for fast in [false, true] {
            let tag = if fast { "joulecut" } else { "candle" };
            if !only.is_empty() && only != format!("{name}/{tag}") {
                continue;
            }
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            let net = Net::new(arch, fast, vb)?;
            let mut opt = Opt::new(fast, &varmap)?;
            let mut data = Data::new();
            let mut t: [Vec<f64>; 5] = Default::default();
            for i in 0..steps + 3 {
                let t0 = Instant::now();
                let (x, y) = data.batch();
                let t1 = Instant::now();
                let loss = net.loss(&x, &y)?;
                let t2 = Instant::now();
                let grads = loss.backward()?;
                let t3 = Instant::now();
                opt.step(&grads)?;
                drop(grads);
                let t4 = Instant::now();
                if i >= 3 {
                    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
                    for (v, d) in t.iter_mut().zip([
                        ms(t0, t1),
                        ms(t1, t2),
                        ms(t2, t3),
                        ms(t3, t4),
                        ms(t0, t4),
                    ]) {
                        v.push(d);
                    }
                }
            }
            let m: Vec<f64> = t.iter_mut().map(|v| median(v)).collect();
            println!(
                "| {name} | {tag} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                common::BATCH as f64 / m[4] * 1e3
            );
        }
    }
    Ok(())
}
