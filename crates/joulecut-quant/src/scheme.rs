//! An int8 scheme: which grid ([`Symmetry`]), how many scales ([`ScaleGranularity`]) and how the
//! clipping range is chosen ([`Calibration`]), together as [`Int8Config`].
//!
//! ```
//! use joulecut_quant::{Int8Config, ScaleGranularity, Symmetry, scheme::channel_axis};
//! let cfg = Int8Config::default();
//! assert_eq!((cfg.symmetry, cfg.granularity), (Symmetry::Symmetric, ScaleGranularity::Channel));
//! assert_eq!(channel_axis(&[10, 784], cfg.granularity), Some(0));
//! assert_eq!(channel_axis(&[10], cfg.granularity), None); // biases: one scale
//! ```

use serde::{Deserialize, Serialize};

use crate::calibrate::Calibration;
use crate::error::Result;
use crate::grid::Symmetry;

/// How many scales a weight gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ScaleGranularity {
    /// One scale (and zero-point) for the whole tensor.
    Tensor,
    /// One per output channel (axis 0: rows of a `[out, in]` Linear weight, filters of a conv weight).
    /// Tensors of rank < 2 (biases, norms) fall back to per tensor.
    #[default]
    Channel,
}

/// Settings for quantizing a tensor to int8.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Int8Config {
    /// Symmetric or asymmetric grid.
    pub symmetry: Symmetry,
    /// Per tensor or per output channel.
    pub granularity: ScaleGranularity,
    /// How the clipping range is chosen.
    pub calibration: Calibration,
}

impl Default for Int8Config {
    fn default() -> Self {
        Int8Config {
            symmetry: Symmetry::Symmetric,
            granularity: ScaleGranularity::Channel,
            calibration: Calibration::MinMax,
        }
    }
}

impl Int8Config {
    /// Checks the config's values (e.g. the percentile).
    pub fn validate(&self) -> Result<()> {
        self.calibration.validate()
    }
}

/// The axis a config quantizes along for `shape`: `Some(0)` for per-channel on rank ≥ 2.
pub fn channel_axis(shape: &[usize], granularity: ScaleGranularity) -> Option<usize> {
    match granularity {
        ScaleGranularity::Channel if shape.len() >= 2 => Some(0),
        _ => None,
    }
}
