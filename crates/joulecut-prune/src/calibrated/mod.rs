//! Activation-aware pruning of one linear layer from its calibration inputs, without retraining.
//!
//! * [`magnitude`]: the data-free baseline, the smallest `|W[i,j]|` of each output row.
//! * [`wanda`] (Sun et al., 2023): the smallest `|W[i,j]|·‖X[:,j]‖₂` of each output row, where
//!   `‖X[:,j]‖₂` is input feature `j`'s norm over the calibration tokens. No weight update.
//! * [`sparsegpt`] (Frantar & Alistarh, 2023): the layer's Hessian `H = (2/N) XᵀX`, masks chosen
//!   block by block from `w² / [H⁻¹]ⱼⱼ`, and an optimal-brain-surgeon update of the kept weights
//!   that compensates each pruned one.
//!
//! A weight is row-major `[out, in]` (PyTorch's `nn.Linear` layout) and is pruned in place; its
//! inputs are summarised by [`InputStats`]. Granularities are [`Granularity::Unstructured`] and
//! [`Granularity::Nm`] (groups of `m` consecutive inputs of one row); rows and channels are
//! structured pruning and are refused. The sparsity is ignored for N:M (the pattern fixes it) but
//! must still lie in `[0, 1)`. On any error the weight is left unchanged.
//!
//! Counts: magnitude and Wanda prune exactly `round(sparsity · in)` weights of every row;
//! SparseGPT prunes exactly `round(sparsity · out · b)` weights of every block of `b` columns (the
//! reference ranks each block's scores across all rows). Ties go to the lower index.
//!
//! ```
//! use joulecut_prune::{prune_layer, CalibratedSpec, Granularity, InputStats, Method};
//! let (out, inp) = (2, 4);
//! let mut stats = InputStats::new(inp);
//! // Feature 0 is large in every token, feature 3 tiny.
//! stats.add(&[10.0, 1.0, 1.0, 0.1, 8.0, -1.0, 1.0, 0.1], 2)?;
//! let mut w = vec![0.1, 0.5, 0.6, 0.7, 0.2, 0.5, -0.6, 0.8];
//! let spec = CalibratedSpec::new(Method::Wanda, 0.25);
//! let report = prune_layer("fc.weight", &mut w, [out, inp], Some(&stats), &spec)?;
//! assert_eq!(w, [0.1, 0.5, 0.6, 0.0, 0.2, 0.5, -0.6, 0.0]); // magnitude would drop w[.., 0]
//! assert_eq!(report.zeros, 2);
//! assert!(report.reconstruction_error.unwrap() < 0.01);
//! # Ok::<(), joulecut_prune::Error>(())
//! ```

mod linalg;
mod sparsegpt;
mod stats;
mod wanda;

#[cfg(test)]
mod compare_tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use sparsegpt::{SparseGptConfig, sparsegpt};
pub use stats::InputStats;
pub use wanda::{magnitude, wanda};

use crate::mask::check_sparsity;
use crate::{Error, Granularity, Result};

/// How a layer's weights are ranked (and, for SparseGPT, updated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Method {
    /// `|W|` per output row; needs no calibration.
    Magnitude,
    /// `|W|·‖X_j‖` per output row.
    Wanda,
    /// Second order: Hessian-based masks and OBS updates of the kept weights.
    SparseGpt,
}

impl Method {
    /// Every method, in the order of increasing cost.
    pub const ALL: [Method; 3] = [Method::Magnitude, Method::Wanda, Method::SparseGpt];

    /// Whether the method reads calibration inputs.
    pub fn needs_calibration(self) -> bool {
        !matches!(self, Method::Magnitude)
    }

    /// Whether the method needs the Gram matrix ([`InputStats::new`], not
    /// [`InputStats::norms_only`]).
    pub fn needs_gram(self) -> bool {
        matches!(self, Method::SparseGpt)
    }

    /// The name configs and the CLI spell it by.
    pub fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::SparseGpt => "sparsegpt",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;

    /// Parses `magnitude`, `wanda` or `sparsegpt`.
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::IncompatibleOptions {
                message: format!("pruning method `{s}` is not magnitude, wanda or sparsegpt"),
                hint: "use --method magnitude, wanda or sparsegpt".into(),
            })
    }
}

/// One layer's pruning: method, granularity, sparsity and SparseGPT's settings; serialisable so it
/// can be recorded with the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibratedSpec {
    /// How weights are ranked.
    pub method: Method,
    /// Unstructured or N:M, by name (`"unstructured"`, `"2:4"`).
    #[serde(with = "crate::granularity_name")]
    pub granularity: Granularity,
    /// Fraction of weights to remove, in `[0, 1)`; ignored for N:M.
    pub sparsity: f64,
    /// SparseGPT's block size and dampening (unused by the other methods).
    #[serde(default)]
    pub sparsegpt: SparseGptConfig,
}

impl CalibratedSpec {
    /// Unstructured pruning by `method` at `sparsity`, SparseGPT's defaults.
    pub fn new(method: Method, sparsity: f64) -> Self {
        CalibratedSpec {
            method,
            granularity: Granularity::Unstructured,
            sparsity,
            sparsegpt: SparseGptConfig::default(),
        }
    }

    /// Sets the granularity.
    pub fn granularity(mut self, g: Granularity) -> Self {
        self.granularity = g;
        self
    }

    /// Sets SparseGPT's settings.
    pub fn sparsegpt(mut self, cfg: SparseGptConfig) -> Self {
        self.sparsegpt = cfg;
        self
    }

    /// Checks the options on their own (before any layer is loaded): the sparsity, an unstructured
    /// or valid N:M granularity, and SparseGPT's settings.
    pub fn validate(&self) -> Result<()> {
        check_sparsity(self.sparsity, None)?;
        match self.granularity {
            Granularity::Unstructured => {}
            Granularity::Nm { n, m } => {
                Granularity::nm(n, m)?;
            }
            structured => return Err(refuse_structured(self.method, None, structured)),
        }
        self.sparsegpt.validate()
    }
}

/// What pruning one layer did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneStats {
    /// The method used.
    pub method: Method,
    /// The granularity used.
    #[serde(with = "crate::granularity_name")]
    pub granularity: Granularity,
    /// Zero weights after pruning (including any that were zero before).
    pub zeros: usize,
    /// Weights in the layer.
    pub total: usize,
    /// `‖(W − W′)Xᵀ‖² / ‖WXᵀ‖²` on the calibration inputs (see
    /// [`InputStats::reconstruction_error`]); `None` without a Gram matrix.
    pub reconstruction_error: Option<f64>,
    /// SparseGPT's relative dampening as used: the configured one, or the raised one of the retry
    /// (see [`sparsegpt`]); `None` for the other methods.
    pub damp: Option<f64>,
}

impl PruneStats {
    /// `zeros / total` (0 for an empty layer).
    pub fn sparsity(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.zeros as f64 / self.total as f64
        }
    }

    fn measure(
        method: Method,
        granularity: Granularity,
        original: &[f32],
        weight: &[f32],
        stats: Option<&InputStats>,
    ) -> Result<Self> {
        let reconstruction_error = match stats {
            Some(s) => s.reconstruction_error(original, weight)?,
            None => None,
        };
        Ok(PruneStats {
            method,
            granularity,
            zeros: weight.iter().filter(|v| **v == 0.0).count(),
            total: weight.len(),
            reconstruction_error,
            damp: None,
        })
    }
}

/// Prunes one layer by `spec.method`. `stats` may be `None` for [`Method::Magnitude`] (then no
/// reconstruction error is reported); the other methods need it.
pub fn prune_layer(
    name: &str,
    weight: &mut [f32],
    shape: [usize; 2],
    stats: Option<&InputStats>,
    spec: &CalibratedSpec,
) -> Result<PruneStats> {
    let (g, s) = (spec.granularity, spec.sparsity);
    let needs = || {
        stats.ok_or_else(|| Error::InvalidCalibration {
            name: name.into(),
            reason: format!(
                "{} needs calibration inputs and none were given",
                spec.method
            ),
            hint: "give calibration sentences (--calibration FILE), or use --method magnitude",
        })
    };
    match spec.method {
        Method::Magnitude => magnitude(name, weight, shape, stats, g, s),
        Method::Wanda => wanda(name, weight, shape, needs()?, g, s),
        Method::SparseGpt => sparsegpt(name, weight, shape, needs()?, g, s, &spec.sparsegpt),
    }
}

/// Checks a layer's size, sparsity and granularity against what these methods support.
fn check_layer(
    method: Method,
    name: &str,
    weight: &[f32],
    [out, in_]: [usize; 2],
    granularity: Granularity,
    sparsity: f64,
) -> Result<()> {
    if out.checked_mul(in_) != Some(weight.len()) {
        return Err(Error::ShapeMismatch {
            name: name.into(),
            expected: vec![out, in_],
            actual: vec![weight.len()],
        });
    }
    check_sparsity(sparsity, Some(name))?;
    match granularity {
        Granularity::Unstructured => Ok(()),
        Granularity::Nm { n, m } => {
            Granularity::nm(n, m)?;
            if in_ % m != 0 {
                return Err(Error::NmIndivisible {
                    name: name.into(),
                    shape: vec![out, in_],
                    dim: 1,
                    size: in_,
                    n,
                    m,
                });
            }
            Ok(())
        }
        structured => Err(refuse_structured(method, Some(name), structured)),
    }
}

fn refuse_structured(method: Method, name: Option<&str>, granularity: Granularity) -> Error {
    let layer = name.map(|n| format!("`{n}`: ")).unwrap_or_default();
    Error::IncompatibleOptions {
        message: format!(
            "{layer}{method} prunes single weights (unstructured or N:M), not {granularity}"
        ),
        hint: "use --granularity unstructured or N:M (e.g. 2:4); structured pruning of heads and \
               neurons is a separate step"
            .into(),
    }
}

/// Checks that `stats` describe this layer's inputs and can be ranked by.
fn check_stats(name: &str, in_: usize, stats: &InputStats, need_gram: bool) -> Result<()> {
    let fail = |reason: String, hint| {
        Err(Error::InvalidCalibration {
            name: name.into(),
            reason,
            hint,
        })
    };
    if stats.in_features() != in_ {
        return fail(
            format!(
                "the statistics describe {} input features, the weight has {in_}",
                stats.in_features()
            ),
            "collect each layer's inputs into its own InputStats::new(in_features)",
        );
    }
    if stats.tokens() == 0 {
        return fail(
            "no calibration tokens reached the layer".into(),
            "check that the calibration file holds sentences (one a line)",
        );
    }
    if need_gram && !stats.has_gram() {
        return fail(
            "SparseGPT needs the inputs' Gram matrix, which these statistics did not keep".into(),
            "collect the inputs with InputStats::new, not InputStats::norms_only",
        );
    }
    if !stats.is_finite() {
        return fail(
            "the calibration inputs hold NaN or infinite values".into(),
            "the model produced non-finite activations on the calibration text; check its weights",
        );
    }
    Ok(())
}

/// Marks the `m - n` lowest scores of one N:M group as pruned; ties go to the lower index.
fn prune_group(scores: &[f64], n: usize, pruned: &mut [bool]) {
    let m = scores.len();
    let mut order: Vec<usize> = (0..m).collect();
    // Stable: equal scores keep index order.
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    for j in &order[..m.saturating_sub(n)] {
        pruned[*j] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip_through_fromstr_display_and_serde() {
        for m in Method::ALL {
            assert_eq!(m.to_string().parse::<Method>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{m}\""));
            assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), m);
        }
        assert_eq!(Method::SparseGpt.to_string(), "sparsegpt");
        let e = "obs".parse::<Method>().unwrap_err();
        assert!(
            e.to_string().contains("magnitude, wanda or sparsegpt"),
            "{e}"
        );
        assert!(e.hint().unwrap().contains("--method"));
    }

    #[test]
    fn spec_serialises_granularity_by_name_and_defaults_sparsegpt() {
        let spec =
            CalibratedSpec::new(Method::SparseGpt, 0.0).granularity(Granularity::nm(2, 4).unwrap());
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["granularity"], "2:4");
        assert_eq!(json["method"], "sparsegpt");
        assert_eq!(json["sparsegpt"]["block_size"], 128);
        let back: CalibratedSpec = serde_json::from_str(
            r#"{"method":"wanda","granularity":"unstructured","sparsity":0.5}"#,
        )
        .unwrap();
        assert_eq!(back, CalibratedSpec::new(Method::Wanda, 0.5));
    }

    #[test]
    fn spec_validation_catches_each_bad_option() {
        assert!(CalibratedSpec::new(Method::Wanda, 0.5).validate().is_ok());
        let nm =
            CalibratedSpec::new(Method::SparseGpt, 0.0).granularity(Granularity::nm(2, 4).unwrap());
        assert!(nm.validate().is_ok());
        let bad = [
            (
                CalibratedSpec::new(Method::Wanda, 1.0),
                "invalid sparsity 1",
            ),
            (
                CalibratedSpec::new(Method::Wanda, f64::NAN),
                "invalid sparsity NaN",
            ),
            (
                CalibratedSpec::new(Method::Wanda, 0.5).granularity(Granularity::Rows),
                "wanda prunes single weights (unstructured or N:M), not rows",
            ),
            (
                CalibratedSpec::new(Method::Magnitude, 0.5)
                    .granularity(Granularity::Nm { n: 4, m: 4 }),
                "invalid N:M pattern 4:4",
            ),
            (
                CalibratedSpec::new(Method::SparseGpt, 0.5).sparsegpt(SparseGptConfig {
                    block_size: 0,
                    damp: 0.01,
                }),
                "block size",
            ),
        ];
        for (spec, needle) in bad {
            let e = spec.validate().unwrap_err();
            assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`");
            assert!(e.hint().is_some());
        }
    }

    #[test]
    fn prune_layer_dispatches_and_requires_calibration_where_needed() {
        let mut w: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let r = prune_layer(
            "w",
            &mut w,
            [2, 4],
            None,
            &CalibratedSpec::new(Method::Magnitude, 0.5),
        )
        .unwrap();
        assert_eq!(w, [0., 0., 3., 4., 0., 0., 7., 8.]);
        assert_eq!(
            (r.zeros, r.total, r.reconstruction_error, r.damp),
            (4, 8, None, None)
        );
        assert_eq!(r.sparsity(), 0.5);
        for method in [Method::Wanda, Method::SparseGpt] {
            let e = prune_layer("w", &mut w, [2, 4], None, &CalibratedSpec::new(method, 0.5))
                .unwrap_err();
            assert!(matches!(e, Error::InvalidCalibration { .. }), "{e}");
            assert!(e.hint().unwrap().contains("--calibration"));
        }
    }

    #[test]
    fn groups_prune_their_lowest_scores_with_ties_to_the_lower_index() {
        let mut p = [false; 4];
        prune_group(&[3.0, 1.0, 2.0, 0.5], 2, &mut p);
        assert_eq!(p, [false, true, false, true]);
        let mut p = [false; 4];
        prune_group(&[1.0; 4], 1, &mut p);
        assert_eq!(p, [true, true, true, false]);
    }
}
