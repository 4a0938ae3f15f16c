//! [`ErrorStats`]: the error of a quantize or cast pass against its input, accumulated on the way.
//!
//! ```
//! use joulecut_quant::ErrorStats;
//! let a = ErrorStats { sum_sq_err: 1.0, sum_sq: 8.0, max_abs: 0.5 };
//! let b = ErrorStats { sum_sq_err: 3.0, sum_sq: 8.0, max_abs: 1.5 };
//! let s = a.merge(b);
//! assert_eq!((s.rel_l2(), s.max_abs), (0.5, 1.5)); // sqrt(4 / 16)
//! ```

use serde::{Deserialize, Serialize};

/// Error of a quantize (or cast) pass against its input, accumulated while quantizing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorStats {
    /// Σ (x − x̂)².
    pub sum_sq_err: f64,
    /// Σ x².
    pub sum_sq: f64,
    /// max |x − x̂|.
    pub max_abs: f64,
}

impl ErrorStats {
    /// Relative L2 error ‖x − x̂‖ / ‖x‖ (the absolute error when x is all zeros).
    pub fn rel_l2(&self) -> f64 {
        if self.sum_sq > 0.0 {
            (self.sum_sq_err / self.sum_sq).sqrt()
        } else {
            self.sum_sq_err.sqrt()
        }
    }

    /// Both accumulations together.
    pub fn merge(self, o: ErrorStats) -> ErrorStats {
        ErrorStats {
            sum_sq_err: self.sum_sq_err + o.sum_sq_err,
            sum_sq: self.sum_sq + o.sum_sq,
            max_abs: self.max_abs.max(o.max_abs),
        }
    }
}
