//! Choosing each int8 layer's activation grid from calibration error.
//!
//! A transformer's layers differ: the FFN's second layer sees GELU outputs (nearly non-negative,
//! heavy-tailed), the query/key/value projection sees LayerNorm outputs with a few outlier
//! channels. One grid for all either loses accuracy (6 bits everywhere costs ~7x the error of 8 on
//! all-MiniLM-L6-v2) or speed (8 bits everywhere). So each layer gets the fastest grid whose
//! relative output error on the calibration sentences, `‖(Q(X) − X)·Wᵀ‖² / ‖X·Wᵀ‖²`, stays within
//! a budget.

use std::collections::BTreeMap;

use joulecut_ops::{MatRef, matmul_f32};
use joulecut_quant::ActivationGrid;
use joulecut_quant::gemm::{QuantizedRows, quantize_rows};

use super::layer::Sublayer;
use super::{BertEncoder, TokenBatch, Workspace};
use crate::error::{Error, Result};

/// How [`choose_grids`] trades error for speed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GridPolicy {
    /// The largest relative output error a layer may take from its activation grid.
    pub max_error: f64,
}

impl Default for GridPolicy {
    /// 2e-4: on all-MiniLM-L6-v2, about the error 8-bit rows give the worst layers.
    fn default() -> Self {
        GridPolicy { max_error: 2e-4 }
    }
}

/// One linear layer's relative output error under each grid.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GridErrors {
    /// Encoder layer.
    pub layer: usize,
    /// Which linear layer.
    pub sublayer: Sublayer,
    /// Its module names (the query, key and value share their input, so their grid).
    pub modules: Vec<String>,
    /// `(grid, error)` for every grid, widest first.
    pub errors: Vec<(ActivationGrid, f64)>,
}

impl GridErrors {
    /// The fastest grid within `policy` (the widest when none is).
    pub fn choose(&self, policy: &GridPolicy) -> ActivationGrid {
        // ALL is widest first, so the last grid within budget is the fastest
        self.errors
            .iter()
            .filter(|(_, e)| *e <= policy.max_error)
            .map(|(g, _)| *g)
            .next_back()
            .unwrap_or(ActivationGrid::S8)
    }
}

/// `‖(Q(X) − X)·Wᵀ‖² / ‖X·Wᵀ‖²` for `x` `[rows, k]`, `w` `[n, k]`.
fn output_error(x: &[f32], rows: usize, w: &[f32], n: usize, grid: ActivationGrid) -> f64 {
    let k = x.len() / rows.max(1);
    let mut q = QuantizedRows::default();
    quantize_rows(x, rows, k, k, grid.mode(), false, &mut q);
    let mut d = vec![0f32; x.len()];
    for (r, (dr, xr)) in d.chunks_exact_mut(k).zip(x.chunks_exact(k)).enumerate() {
        let (s, z) = (q.scales[r], q.zeros[r]);
        for ((dv, &xv), &qv) in dr.iter_mut().zip(xr).zip(&q.data[r * k..(r + 1) * k]) {
            *dv = (i32::from(qv) - z) as f32 * s - xv;
        }
    }
    let product = |a: &[f32]| -> f64 {
        let mut y = vec![0f32; rows * n];
        matmul_f32(
            (n, rows, k),
            &mut y,
            n,
            false,
            MatRef::new(w, 1, k),
            MatRef::new(a, k, 1),
            rayon::current_num_threads(),
        );
        y.iter().map(|v| f64::from(*v) * f64::from(*v)).sum()
    };
    let signal = product(x);
    if signal == 0.0 {
        return 0.0;
    }
    product(&d) / signal
}

impl BertEncoder {
    /// Every linear layer's error under each activation grid, on the calibration sentences run
    /// through this (unquantized) encoder.
    pub fn activation_grid_errors(&self, calib: &TokenBatch) -> Result<Vec<GridErrors>> {
        if calib.tokens() == 0 {
            return Err(Error::BadConfig {
                reason: "choosing activation grids needs calibration sentences".into(),
            });
        }
        let (eps, act) = (self.cfg.eps, self.cfg.activation);
        let mut ws = Workspace::default();
        self.embed(calib, &mut ws)?;
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let weights: Vec<Vec<f32>> = Sublayer::ALL
                .iter()
                .map(|&s| layer.linear(s).to_dense())
                .collect();
            layer.forward(&mut ws, &calib.lengths, (eps, act), &mut |s, x, rows| {
                let n = layer.linear(s).out_features();
                let errors = ActivationGrid::ALL
                    .iter()
                    .map(|&g| (g, output_error(x, rows, &weights[s as usize], n, g)))
                    .collect();
                out.push(GridErrors {
                    layer: i,
                    sublayer: s,
                    modules: s.modules(i),
                    errors,
                });
            });
        }
        Ok(out)
    }

    /// Sets each named int8 layer's activation grid (module name → grid, as
    /// `joulecut.int8_activations.layers` stores them); the query, key and value share one
    /// product, so the query's entry speaks for the three.
    pub fn set_activation_grids(&mut self, grids: &BTreeMap<String, ActivationGrid>) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for s in Sublayer::ALL {
                if let Some(g) = grids.get(&s.modules(i)[0]) {
                    layer.linear_mut(s).set_activation_quant(g.mode());
                }
            }
        }
    }
}

/// The grid of every module under `policy`, as `joulecut.int8_activations.layers` stores them.
pub fn choose_grids(
    errors: &[GridErrors],
    policy: &GridPolicy,
) -> BTreeMap<String, ActivationGrid> {
    let mut m = BTreeMap::new();
    for e in errors {
        let g = e.choose(policy);
        for module in &e.modules {
            m.insert(module.clone(), g);
        }
    }
    m
}
