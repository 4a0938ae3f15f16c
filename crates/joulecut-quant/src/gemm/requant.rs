//! [`Requant`]: the per-column requantisation epilogue of the fused GEMM (weight scales and
//! zero-points, bias, optional ReLU), built once per layer.

use super::PANEL_N;
use crate::error::{Error, Result};

/// Per-column requantisation: `y = sa[m] · sw[n] · (acc − za[m]·Σw[n] − zw[n]·Σa[m] + k·za[m]·zw[n]) + b[n]`,
/// then optional ReLU. Build once per layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Requant {
    /// Weight scale per output column (padded to a multiple of 16).
    pub(super) scales: Vec<f32>,
    /// Weight zero-point per output column; `None` when all are zero.
    pub(super) zeros: Option<Vec<i32>>,
    /// Bias per output column (zeros when there is none).
    pub(super) bias: Vec<f32>,
    /// Apply `max(y, 0)`.
    pub(super) relu: bool,
}

impl Requant {
    /// `scales` (one per column, or one for all), optional zero-points (same count), optional bias
    /// (one per column), ReLU on/off.
    pub fn new(
        n: usize,
        scales: &[f32],
        zero_points: Option<&[i32]>,
        bias: Option<&[f32]>,
        relu: bool,
    ) -> Result<Requant> {
        let bad = |reason: String| Error::BadParams {
            name: "int8 epilogue".into(),
            reason,
        };
        let n_pad = n.next_multiple_of(PANEL_N);
        let widen_i = |v: &[i32]| -> Result<Vec<i32>> {
            let mut out = match v.len() {
                1 => vec![v[0]; n],
                l if l == n => v.to_vec(),
                l => return Err(bad(format!("{l} zero-points for {n} columns"))),
            };
            out.resize(n_pad, 0);
            Ok(out)
        };
        let mut s = match scales.len() {
            1 => vec![scales[0]; n],
            l if l == n => scales.to_vec(),
            l => return Err(bad(format!("{l} scales for {n} columns"))),
        };
        s.resize(n_pad, 0.0);
        let zeros = match zero_points {
            Some(z) if z.iter().any(|&v| v != 0) => Some(widen_i(z)?),
            _ => None,
        };
        let mut b = match bias {
            Some(b) if b.len() == n => b.to_vec(),
            Some(b) => return Err(bad(format!("bias has {} values for {n} columns", b.len()))),
            None => vec![0.0; n],
        };
        b.resize(n_pad, 0.0);
        Ok(Requant {
            scales: s,
            zeros,
            bias: b,
            relu,
        })
    }

    /// Column `n`'s weight scale and zero-point.
    pub fn weight_grid(&self, n: usize) -> (f32, i32) {
        (self.scales[n], self.zeros.as_ref().map_or(0, |z| z[n]))
    }

    /// Column `n`'s bias (0 without one).
    pub fn bias(&self, n: usize) -> f32 {
        self.bias[n]
    }

    /// Whether the weights have non-zero zero-points (then the activations' row sums are needed).
    pub fn needs_row_sums(&self) -> bool {
        self.zeros.is_some()
    }

    /// The same epilogue with ReLU switched on or off.
    pub fn with_relu(mut self, relu: bool) -> Requant {
        self.relu = relu;
        self
    }

    /// Whether ReLU is applied.
    pub fn relu(&self) -> bool {
        self.relu
    }
}
