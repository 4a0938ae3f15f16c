//! `joulecut compare A B`: per-tensor fidelity of a checkpoint against another (typically its
//! compressed version) — relative L2 error, max abs error, cosine similarity, SNR in dB — and totals.
//! Works across encodings (int8, sparse, f16/bf16 are decoded) and on sharded checkpoints; tensors
//! are read in parallel blocks straight from the mmaps, one tensor at a time.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use joulecut::checkpoint::{Source, TensorRef, Values};
use rayon::prelude::*;

use super::error::bad_input;
use super::output::print_json;

/// Arguments of `joulecut compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Reference checkpoint (file, index.json or directory).
    a: PathBuf,
    /// Checkpoint compared against it (same tensor names and shapes).
    b: PathBuf,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Sums over the elements of one or more tensors.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    d2: f64,
    a2: f64,
    b2: f64,
    ab: f64,
    max_abs: f64,
    n: u64,
    /// Element pairs with a NaN or an infinity on either side: left out of the sums above (one
    /// would make every figure NaN or infinite), counted and reported instead.
    non_finite: u64,
}

impl Sums {
    fn merge(self, o: Sums) -> Sums {
        Sums {
            d2: self.d2 + o.d2,
            a2: self.a2 + o.a2,
            b2: self.b2 + o.b2,
            ab: self.ab + o.ab,
            max_abs: self.max_abs.max(o.max_abs),
            n: self.n + o.n,
            non_finite: self.non_finite + o.non_finite,
        }
    }

    fn rel_l2(&self) -> f64 {
        if self.a2 > 0.0 {
            (self.d2 / self.a2).sqrt()
        } else {
            self.d2.sqrt()
        }
    }

    fn cosine(&self) -> f64 {
        if self.a2 == 0.0 && self.b2 == 0.0 {
            1.0
        } else if self.a2 == 0.0 || self.b2 == 0.0 {
            0.0
        } else {
            self.ab / (self.a2.sqrt() * self.b2.sqrt())
        }
    }

    /// Signal-to-noise ratio in dB; `None` when identical (infinite).
    fn snr_db(&self) -> Option<f64> {
        (self.d2 > 0.0).then(|| 10.0 * (self.a2 / self.d2).log10())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "rel_l2": self.rel_l2(),
            "max_abs": self.max_abs,
            "cosine": self.cosine(),
            "snr_db": self.snr_db(),
            "non_finite": self.non_finite,
        })
    }
}

const CHUNK: usize = 1 << 16;

fn compare_values(a: &Values<'_>, b: &Values<'_>) -> Sums {
    let n = a.len();
    (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|k| {
            let (start, end) = (k * CHUNK, ((k + 1) * CHUNK).min(n));
            let mut x = vec![0f32; end - start];
            let mut y = vec![0f32; end - start];
            a.read(start, &mut x);
            b.read(start, &mut y);
            let mut s = Sums {
                n: (end - start) as u64,
                ..Sums::default()
            };
            for (&p, &q) in x.iter().zip(&y) {
                if !(p.is_finite() && q.is_finite()) {
                    s.non_finite += 1;
                    continue;
                }
                let (p, q) = (f64::from(p), f64::from(q));
                let d = p - q;
                s.d2 += d * d;
                s.a2 += p * p;
                s.b2 += q * q;
                s.ab += p * q;
                s.max_abs = s.max_abs.max(d.abs());
            }
            s
        })
        .reduce(Sums::default, Sums::merge)
}

fn shapes(src: &Source) -> anyhow::Result<Vec<(String, Vec<usize>)>> {
    src.names()
        .iter()
        .map(|n| {
            let t = TensorRef {
                checkpoint: src.shard_of(n),
                name: n,
            };
            Ok((n.clone(), t.shape()?))
        })
        .collect()
}

pub fn run(a: CompareArgs) -> anyhow::Result<ExitCode> {
    let sa = Source::open(&a.a)?;
    let sb = Source::open(&a.b)?;
    let (ta, tb) = (shapes(&sa)?, shapes(&sb)?);
    let only = |x: &[(String, Vec<usize>)], y: &Source| -> Vec<String> {
        x.iter()
            .filter(|(n, _)| y.shard_index(n).is_none())
            .map(|(n, _)| n.clone())
            .collect()
    };
    for (missing, from, other) in [(only(&ta, &sb), &a.a, &a.b), (only(&tb, &sa), &a.b, &a.a)] {
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(5).map(|n| format!("`{n}`")).collect();
            return Err(bad_input(
                format!(
                    "{} tensor(s) of {} are not in {}: {}{}",
                    missing.len(),
                    from.display(),
                    other.display(),
                    shown.join(", "),
                    if missing.len() > 5 { ", ..." } else { "" }
                ),
                "compare a checkpoint with a compressed version of itself (same tensor names); `joulecut inspect` lists them",
            ));
        }
    }
    let mut rows = Vec::new();
    let mut total = Sums::default();
    let mut worst: Option<(String, f64)> = None;
    let (mut changed, mut skipped) = (0usize, Vec::new());
    for (name, shape) in &ta {
        let (cka, ckb) = (sa.shard_of(name), sb.shard_of(name));
        let shape_b = TensorRef {
            checkpoint: ckb,
            name,
        }
        .shape()?;
        if *shape != shape_b {
            return Err(bad_input(
                format!(
                    "tensor `{name}` has shape {shape:?} in {} but {shape_b:?} in {}",
                    a.a.display(),
                    a.b.display()
                ),
                "structured pruning (--compact) changes shapes; compare checkpoints of the same architecture",
            ));
        }
        let (ra, rb) = (
            TensorRef {
                checkpoint: cka,
                name,
            },
            TensorRef {
                checkpoint: ckb,
                name,
            },
        );
        if ra.float_type().is_none() || rb.float_type().is_none() {
            // Integer tensors (token ids, masks): only exact equality is meaningful.
            let same = ra.stored_dtype() == rb.stored_dtype()
                && cka.stored_bytes(cka.stored_info(name)?)
                    == ckb.stored_bytes(ckb.stored_info(name)?);
            skipped.push(serde_json::json!({ "name": name, "identical": same }));
            continue;
        }
        let s = compare_values(&cka.values(name)?, &ckb.values(name)?);
        for (ck, r) in [(cka, &ra), (ckb, &rb)] {
            for p in r.stored()? {
                ck.release(p);
            }
        }
        if s.d2 > 0.0 {
            changed += 1;
        }
        if worst.as_ref().is_none_or(|w| s.rel_l2() > w.1) {
            worst = Some((name.clone(), s.rel_l2()));
        }
        total = total.merge(s);
        let mut row = s.json();
        row["name"] = name.clone().into();
        row["shape"] = serde_json::json!(shape);
        row["encoding_a"] = enc(&ra).into();
        row["encoding_b"] = enc(&rb).into();
        rows.push(row);
    }
    if a.json {
        let mut totals = total.json();
        totals["tensors"] = rows.len().into();
        totals["changed"] = changed.into();
        totals["params"] = total.n.into();
        totals["worst"] = serde_json::json!(worst.as_ref().map(|w| &w.0));
        print_json(&serde_json::json!({
            "a": a.a,
            "b": a.b,
            "tensors": rows,
            "totals": totals,
            "non_float": skipped,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<48} {:>11} {:>11} {:>10} {:>10} {:>9}",
        "tensor", "encoding", "rel_l2", "max_abs", "cosine", "snr_db"
    );
    let snr = |v: &serde_json::Value| {
        v.as_f64()
            .map_or_else(|| "inf".to_string(), |x| format!("{x:.1}"))
    };
    for r in &rows {
        println!(
            "{:<48} {:>11} {:>11.3e} {:>10.3e} {:>10.6} {:>9}",
            r["name"].as_str().unwrap_or_default(),
            r["encoding_b"].as_str().unwrap_or_default(),
            r["rel_l2"].as_f64().unwrap_or(0.0),
            r["max_abs"].as_f64().unwrap_or(0.0),
            r["cosine"].as_f64().unwrap_or(0.0),
            snr(&r["snr_db"]),
        );
    }
    let t = total.json();
    println!(
        "total: {} tensors ({changed} changed), {} params: rel_l2 {:.3e}, max_abs {:.3e}, cosine {:.6}, snr {} dB{}",
        rows.len(),
        total.n,
        total.rel_l2(),
        total.max_abs,
        total.cosine(),
        snr(&t["snr_db"]),
        worst
            .map(|(n, e)| format!("; worst `{n}` (rel_l2 {e:.3e})"))
            .unwrap_or_default()
    );
    for r in rows
        .iter()
        .filter(|r| r["non_finite"].as_u64().unwrap_or(0) > 0)
    {
        println!(
            "`{}`: {} element(s) NaN or infinite on one side, left out of its figures",
            r["name"].as_str().unwrap_or_default(),
            r["non_finite"]
        );
    }
    if !skipped.is_empty() {
        println!(
            "{} integer tensor(s) compared for equality only",
            skipped.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn enc(t: &TensorRef<'_>) -> String {
    match t.encoding() {
        None => t.stored_dtype().unwrap_or("?").to_lowercase(),
        Some(e) => e.kind().to_string(),
    }
}
