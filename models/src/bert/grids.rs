//! Choosing each int8 layer's activation grid, and its smoothing, from calibration error.
//!
//! A transformer's layers differ: the FFN's second layer sees GELU outputs (nearly non-negative,
//! heavy-tailed), the query/key/value projection sees LayerNorm outputs with a few outlier
//! channels. One grid for all either loses accuracy (6 bits everywhere costs ~7x the error of 8 on
//! all-MiniLM-L6-v2) or speed (8 bits everywhere). So each product is measured on the calibration
//! sentences under every grid, plain and smoothed ([`super::smooth`]), as the relative output error
//! of the whole int8 product (weights on the int8 grid too), `‖Q(X/s)·Q(W·s)ᵀ − X·Wᵀ‖² / ‖X·Wᵀ‖²`,
//! and gets the fastest grid whose best option stays within a budget.

use std::borrow::Cow;
use std::collections::BTreeMap;

use joulecut_ops::{MatRef, matmul_f32};
use joulecut_quant::gemm::{PackedWeights, QuantizedRows, quantize_rows};
use joulecut_quant::{ActivationGrid, Int8Config, quantize_tensor};

use super::layer::Sublayer;
use super::linear::LinearKind;
use super::smooth::{ALPHAS, column_absmax, factors, scale_columns};
use super::{BertEncoder, TokenBatch, Workspace};
use crate::error::{Error, Result};

/// `(grid, error)` for every grid, widest first.
type GridErrorList = Vec<(ActivationGrid, f64)>;

/// Calibration rows (tokens) used per product at most: evenly spaced beyond it, which bounds the
/// calibration's cost on long files.
const MAX_ROWS: usize = 4096;

/// How [`choose_grids`] trades error for speed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GridPolicy {
    /// The largest relative output error a layer's int8 product may have.
    pub max_error: f64,
    /// Whether a product may be smoothed (`Int8Tensor::in_scales`) when that lowers its error.
    pub smoothing: bool,
}

impl Default for GridPolicy {
    /// 6e-4 with smoothing: on all-MiniLM-L6-v2 all 36 linear layers then run on 7-bit rows, all
    /// on the AVX2 paired loop, at a mean embedding cosine of 0.9988 (min 0.9953). 3e-4 keeps 6
    /// layers on 8-bit rows (the slower signed loop) for 0.9989 (min 0.9975), about 7 % fewer
    /// sentences/s.
    fn default() -> Self {
        GridPolicy {
            max_error: 6e-4,
            smoothing: true,
        }
    }
}

/// One product's errors under one smoothing strength.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SmoothedErrors {
    /// SmoothQuant's α.
    pub alpha: f32,
    /// `(grid, error)` for every grid, widest first.
    pub errors: Vec<(ActivationGrid, f64)>,
    /// Whether the smoothed int8 weights take the AVX2 paired loop with 7-bit rows
    /// (`PackedWeights::pairs_u7`): then u7 runs as fast as u6.
    pub pairs_u7: bool,
    /// The factors `s` (one per input column); the layer stores `1/s` as its input scales.
    #[serde(skip)]
    factors: Vec<f32>,
}

/// One linear product's relative output error under each grid, plain and smoothed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GridErrors {
    /// Encoder layer.
    pub layer: usize,
    /// Which linear layer.
    pub sublayer: Sublayer,
    /// Its module names (the query, key and value share their input, so their grid).
    pub modules: Vec<String>,
    /// `(grid, error)` for every grid without smoothing, widest first.
    pub errors: Vec<(ActivationGrid, f64)>,
    /// Whether the plain int8 weights take the AVX2 paired loop with 7-bit rows.
    pub pairs_u7: bool,
    /// The same under each smoothing strength tried; empty when the product's weights are not
    /// dense f32 (packed sparse or already quantized weights are not smoothed).
    pub smoothed: Vec<SmoothedErrors>,
}

/// What [`GridErrors::choose`] picked for one product.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ProductChoice {
    /// The activation grid.
    pub grid: ActivationGrid,
    /// The smoothing strength, `None` for none.
    pub alpha: Option<f32>,
    /// The product's relative output error with both.
    pub error: f64,
}

impl GridErrors {
    /// The fastest option (grid, plain or smoothed where `policy` allows) within
    /// `policy.max_error`, the lower error among equally fast ones; the widest grid's best option
    /// when none is within. Speed is the AVX2 kernel's (`speed_tier`): u7 is as fast as u6 on
    /// weights that pair, so it wins there on its lower error.
    pub fn choose(&self, policy: &GridPolicy) -> ProductChoice {
        let plain = self.errors.iter().map(|&(grid, error)| {
            let c = ProductChoice {
                grid,
                alpha: None,
                error,
            };
            (c, speed_tier(grid, self.pairs_u7))
        });
        let smoothed = self
            .smoothed
            .iter()
            .filter(|_| policy.smoothing)
            .flat_map(|s| {
                s.errors.iter().map(|&(grid, error)| {
                    let c = ProductChoice {
                        grid,
                        alpha: Some(s.alpha),
                        error,
                    };
                    (c, speed_tier(grid, s.pairs_u7))
                })
            });
        let options: Vec<(ProductChoice, u8)> = plain.chain(smoothed).collect();
        let lower = |a: &&(ProductChoice, u8), b: &&(ProductChoice, u8)| {
            a.1.cmp(&b.1).then(b.0.error.total_cmp(&a.0.error))
        };
        options
            .iter()
            .filter(|(c, _)| c.error <= policy.max_error)
            .max_by(lower)
            .or_else(|| {
                options
                    .iter()
                    .filter(|(c, _)| c.grid == ActivationGrid::S8)
                    .min_by(|a, b| a.0.error.total_cmp(&b.0.error))
            })
            .map_or(
                ProductChoice {
                    grid: ActivationGrid::S8,
                    alpha: None,
                    error: f64::INFINITY,
                },
                |(c, _)| *c,
            )
    }

    /// The input scales (`1/s`) a choice stores, `None` when it is not smoothed.
    pub fn in_scales(&self, choice: &ProductChoice) -> Option<Vec<f32>> {
        let alpha = choice.alpha?;
        self.smoothed
            .iter()
            .find(|s| s.alpha == alpha)
            .map(|s| s.factors.iter().map(|f| 1.0 / f).collect())
    }
}

/// How fast the AVX2 int8 kernel runs a grid (higher is faster): s8 needs its sign handling; u7
/// takes the unpaired loop, or the paired one where the weights allow it; u6 always pairs.
fn speed_tier(grid: ActivationGrid, pairs_u7: bool) -> u8 {
    match grid {
        ActivationGrid::S8 => 0,
        ActivationGrid::U7 if !pairs_u7 => 1,
        _ => 2,
    }
}

/// Up to [`MAX_ROWS`] evenly spaced rows of `x` `[rows, k]`.
fn sample_rows(x: &[f32], rows: usize, k: usize) -> (Cow<'_, [f32]>, usize) {
    if rows <= MAX_ROWS {
        return (Cow::Borrowed(x), rows);
    }
    let picked: Vec<f32> = (0..MAX_ROWS)
        .flat_map(|i| {
            let r = i * rows / MAX_ROWS;
            x[r * k..(r + 1) * k].iter().copied()
        })
        .collect();
    (Cow::Owned(picked), MAX_ROWS)
}

/// `a · wᵀ` for `a` `[rows, k]`, `w` `[n, k]` (element order is only compared, never read out).
fn product(a: &[f32], rows: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
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
    y
}

/// `x` `[rows, k]` quantized per row on `grid` and decoded back to f32.
fn fake_quant_rows(x: &[f32], rows: usize, k: usize, grid: ActivationGrid) -> Vec<f32> {
    let mut q = QuantizedRows::default();
    quantize_rows(x, rows, k, k, grid.mode(), false, &mut q);
    let mut d = vec![0f32; x.len()];
    for (r, dr) in d.chunks_exact_mut(k).enumerate() {
        let (s, z) = (q.scales[r], q.zeros[r]);
        for (dv, &qv) in dr.iter_mut().zip(&q.data[r * k..(r + 1) * k]) {
            *dv = (i32::from(qv) - z) as f32 * s;
        }
    }
    d
}

/// One product's inputs and reference output, and how its weights are quantized.
struct Product<'a> {
    x: &'a [f32],
    rows: usize,
    k: usize,
    w: &'a [f32],
    n: usize,
    reference: Vec<f32>,
    signal: f64,
    weights: &'a Int8Config,
}

impl Product<'_> {
    /// Every grid's error with the weights stored as `W · s` and the input quantized as `X / s`
    /// (`s` = 1 without smoothing).
    fn errors(&self, s: Option<&[f32]>) -> Result<(GridErrorList, bool)> {
        let (k, n) = (self.k, self.n);
        let scaled;
        let w = match s {
            Some(s) => {
                scaled = scale_columns(self.w, s);
                &scaled[..]
            }
            None => self.w,
        };
        let q = quantize_tensor("calibration", w, &[n, k], self.weights).map_err(|e| {
            Error::BadConfig {
                reason: format!("quantizing weights for calibration: {e}"),
            }
        })?;
        let pairs_u7 = PackedWeights::pack(&q.values, n, k)
            .map_err(|e| Error::BadConfig {
                reason: format!("packing weights for calibration: {e}"),
            })?
            .pairs_u7();
        let wq = q.dequantize();
        let xs: Cow<'_, [f32]> = match s {
            Some(s) => self
                .x
                .chunks_exact(k)
                .flat_map(|row| row.iter().zip(s).map(|(v, f)| v / f))
                .collect(),
            None => Cow::Borrowed(self.x),
        };
        let errors = ActivationGrid::ALL
            .iter()
            .map(|&g| {
                let y = product(&fake_quant_rows(&xs, self.rows, k, g), self.rows, k, &wq, n);
                let err: f64 = y
                    .iter()
                    .zip(&self.reference)
                    .map(|(a, b)| {
                        let d = f64::from(*a) - f64::from(*b);
                        d * d
                    })
                    .sum();
                (
                    g,
                    if self.signal == 0.0 {
                        0.0
                    } else {
                        err / self.signal
                    },
                )
            })
            .collect();
        Ok((errors, pairs_u7))
    }
}

impl BertEncoder {
    /// Every linear product's error under each activation grid, plain and (for dense f32 weights)
    /// smoothed, on the calibration sentences run through this (unquantized) encoder; `weights` is
    /// how the weights will be quantized.
    pub fn activation_grid_errors(
        &self,
        calib: &TokenBatch,
        weights: &Int8Config,
    ) -> Result<Vec<GridErrors>> {
        if calib.tokens() == 0 {
            return Err(Error::BadConfig {
                reason: "choosing activation grids needs calibration sentences".into(),
            });
        }
        let (eps, act) = (self.cfg.eps, self.cfg.activation);
        let mut ws = Workspace::default();
        self.embed(calib, &mut ws)?;
        let mut out = Vec::new();
        let mut failed = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let dense: Vec<(Vec<f32>, bool)> = Sublayer::ALL
                .iter()
                .map(|&s| {
                    let l = layer.linear(s);
                    (l.to_dense(), l.kind() == LinearKind::Dense)
                })
                .collect();
            layer.forward(&mut ws, &calib.lengths, (eps, act), &mut |s, x, rows| {
                if failed.is_some() {
                    return;
                }
                let (w, smoothable) = &dense[s as usize];
                let n = layer.linear(s).out_features();
                let k = x.len() / rows.max(1);
                match product_errors(x, rows, k, w, n, *smoothable, weights) {
                    Ok(((errors, pairs_u7), smoothed)) => out.push(GridErrors {
                        layer: i,
                        sublayer: s,
                        modules: s.modules(i),
                        errors,
                        pairs_u7,
                        smoothed,
                    }),
                    Err(e) => failed = Some(e),
                }
            });
            if let Some(e) = failed.take() {
                return Err(e);
            }
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

/// One product's plain errors and, when `smoothable`, its errors under each strength in
/// [`ALPHAS`].
fn product_errors(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    smoothable: bool,
    weights: &Int8Config,
) -> Result<((GridErrorList, bool), Vec<SmoothedErrors>)> {
    let (x, rows) = sample_rows(x, rows, k);
    let reference = product(&x, rows, k, w, n);
    let signal = reference
        .iter()
        .map(|v| f64::from(*v) * f64::from(*v))
        .sum();
    let p = Product {
        x: &x,
        rows,
        k,
        w,
        n,
        reference,
        signal,
        weights,
    };
    let plain = p.errors(None)?;
    let mut smoothed = Vec::new();
    if smoothable {
        let x_max = column_absmax(&x, k);
        for alpha in ALPHAS {
            let s = factors(&x_max, w, alpha);
            let (errors, pairs_u7) = p.errors(Some(&s))?;
            smoothed.push(SmoothedErrors {
                alpha,
                errors,
                pairs_u7,
                factors: s,
            });
        }
    }
    Ok((plain, smoothed))
}

/// The grid of every module under `policy`, as `joulecut.int8_activations.layers` stores them.
pub fn choose_grids(
    errors: &[GridErrors],
    policy: &GridPolicy,
) -> BTreeMap<String, ActivationGrid> {
    let mut m = BTreeMap::new();
    for e in errors {
        let g = e.choose(policy).grid;
        for module in &e.modules {
            m.insert(module.clone(), g);
        }
    }
    m
}

/// The input scales of every module `policy` smooths (module name → `1/s`, one per input
/// column), which the quantizer stores as `NAME.weight:in_scale`.
pub fn choose_in_scales(errors: &[GridErrors], policy: &GridPolicy) -> BTreeMap<String, Vec<f32>> {
    let mut m = BTreeMap::new();
    for e in errors {
        if let Some(f) = e.in_scales(&e.choose(policy)) {
            for module in &e.modules {
                m.insert(module.clone(), f.clone());
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(u6_plain: f64, u6_smooth: f64) -> GridErrors {
        paired(u6_plain, u6_smooth, false)
    }

    fn paired(u6_plain: f64, u6_smooth: f64, pairs_u7: bool) -> GridErrors {
        GridErrors {
            layer: 0,
            sublayer: Sublayer::Intermediate,
            modules: vec!["encoder.layer.0.intermediate.dense".into()],
            errors: vec![
                (ActivationGrid::S8, 1e-4),
                (ActivationGrid::U7, 3e-4),
                (ActivationGrid::U6, u6_plain),
            ],
            pairs_u7,
            smoothed: vec![SmoothedErrors {
                alpha: 0.5,
                errors: vec![
                    (ActivationGrid::S8, 2e-4),
                    (ActivationGrid::U7, 2.5e-4),
                    (ActivationGrid::U6, u6_smooth),
                ],
                pairs_u7,
                factors: vec![2.0, 4.0],
            }],
        }
    }

    #[test]
    fn the_fastest_grid_within_budget_takes_the_lower_error_option() {
        let policy = GridPolicy {
            max_error: 4e-4,
            smoothing: true,
        };
        // smoothing brings 6-bit rows within budget
        let e = errors(2e-3, 3e-4);
        let c = e.choose(&policy);
        assert_eq!((c.grid, c.alpha), (ActivationGrid::U6, Some(0.5)));
        assert_eq!(e.in_scales(&c), Some(vec![0.5, 0.25]));
        // without it the same product gets 7 bits, plain
        let off = GridPolicy {
            smoothing: false,
            ..policy
        };
        let c = e.choose(&off);
        assert_eq!((c.grid, c.alpha), (ActivationGrid::U7, None));
        assert_eq!(e.in_scales(&c), None);
        // 8-bit rows are better plain: the plain option is kept
        let tight = GridPolicy {
            max_error: 1.5e-4,
            smoothing: true,
        };
        let c = e.choose(&tight);
        assert_eq!((c.grid, c.alpha, c.error), (ActivationGrid::S8, None, 1e-4));
        // nothing within budget: the widest grid's best option
        let c = e.choose(&GridPolicy {
            max_error: 1e-9,
            smoothing: true,
        });
        assert_eq!(c.grid, ActivationGrid::S8);
        let m = choose_in_scales(std::slice::from_ref(&e), &policy);
        assert_eq!(m["encoder.layer.0.intermediate.dense"], vec![0.5, 0.25]);
    }

    #[test]
    fn on_weights_that_pair_u7_is_as_fast_as_u6_and_wins_on_error() {
        let policy = GridPolicy {
            max_error: 4e-4,
            smoothing: true,
        };
        // Both 6- and 7-bit rows within budget: u6 only where u7 would run unpaired.
        let c = errors(3.5e-4, 3e-4).choose(&policy);
        assert_eq!((c.grid, c.alpha), (ActivationGrid::U6, Some(0.5)));
        let c = paired(3.5e-4, 3e-4, true).choose(&policy);
        assert_eq!(
            (c.grid, c.alpha, c.error),
            (ActivationGrid::U7, Some(0.5), 2.5e-4)
        );
        // u7 out of budget: u6 still beats s8.
        let tight = GridPolicy {
            max_error: 2e-4,
            smoothing: false,
        };
        let c = paired(1.9e-4, 1e-3, true).choose(&tight);
        assert_eq!((c.grid, c.alpha), (ActivationGrid::U6, None));
    }
}
