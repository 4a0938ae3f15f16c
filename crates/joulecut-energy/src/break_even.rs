//! The break-even point of a compressed model: after how many inferences the joules spent making
//! it (calibration, teacher outputs, fine-tuning, distillation) are paid back by the joules each
//! inference saves against the model it replaces.
//!
//! *Items* are whatever one inference processes: sentences for a sentence encoder, samples for an
//! image classifier. Savings are stated per 1,000 items.
//!
//! ```
//! use joulecut_energy::{TotalProvenance, break_even};
//!
//! // 50 J of fine-tuning; the baseline takes 4 J per 1,000 items, the compressed model 1.5 J.
//! let b = break_even(50.0, TotalProvenance::Measured, 4.0, 1.5, TotalProvenance::Estimated).unwrap();
//! assert_eq!(b.saved_joules_per_1000, 2.5);
//! assert_eq!(b.break_even_items, Some(20_000.0)); // 50 J / (2.5 J / 1,000 items)
//! assert_eq!(b.provenance, TotalProvenance::Mixed);
//! assert_eq!(b.describe("sentences"), "20.0 k sentences");
//!
//! // A variant that costs more per inference than the baseline never pays for itself.
//! let never = break_even(50.0, TotalProvenance::Measured, 4.0, 4.2, TotalProvenance::Measured).unwrap();
//! assert_eq!(never.break_even_items, None);
//! assert_eq!(never.describe("sentences"), "never");
//! ```

use serde::{Deserialize, Serialize};

use crate::TotalProvenance;

/// What a compression cost, what it saves per 1,000 items, and when it has paid for itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BreakEven {
    /// Joules spent making the compressed model from the one it replaces (≥ 0).
    pub compression_joules: f64,
    /// Inference joules saved per 1,000 items: the original's joules minus the compressed
    /// model's. Negative when the compressed model costs more per inference.
    pub saved_joules_per_1000: f64,
    /// Items after which the saved inference joules equal the compression joules:
    /// `compression_joules / saved_joules_per_1000 × 1000`. `0` when the compression cost
    /// nothing and saves something; `None` (*never*) when it saves nothing or costs more, or the
    /// count is too large for an `f64`.
    pub break_even_items: Option<f64>,
    /// Provenance of the figures together: `measured` only when the compression joules and both
    /// inference figures were measured, `estimated` when all were estimated, else `mixed`.
    pub provenance: TotalProvenance,
}

/// The break-even point of a compressed model against the model it replaces.
///
/// `compression_joules` is what making the compressed model cost (with its provenance);
/// `baseline_joules_per_1000` and `variant_joules_per_1000` are the inference joules per 1,000
/// items of the original and the compressed model, measured the same way (`inference_provenance`
/// covers both). Returns `None` when a figure is not finite or the compression joules are
/// negative: there is no break-even to report then, and a report should print nothing rather
/// than `NaN`.
pub fn break_even(
    compression_joules: f64,
    compression_provenance: TotalProvenance,
    baseline_joules_per_1000: f64,
    variant_joules_per_1000: f64,
    inference_provenance: TotalProvenance,
) -> Option<BreakEven> {
    if !(baseline_joules_per_1000.is_finite() && variant_joules_per_1000.is_finite()) {
        return None;
    }
    BreakEven::from_saving(
        compression_joules,
        baseline_joules_per_1000 - variant_joules_per_1000,
        compression_provenance.combine(inference_provenance),
    )
}

impl BreakEven {
    /// The break-even point from a saving already known per 1,000 items (e.g. a median over
    /// seeds), with the provenance of all the figures. `None` under the same conditions as
    /// [`break_even()`].
    pub fn from_saving(
        compression_joules: f64,
        saved_joules_per_1000: f64,
        provenance: TotalProvenance,
    ) -> Option<BreakEven> {
        if !(compression_joules.is_finite()
            && compression_joules >= 0.0
            && saved_joules_per_1000.is_finite())
        {
            return None;
        }
        let items = (saved_joules_per_1000 > 0.0)
            // divided first, so the count overflows only when the answer does
            .then(|| compression_joules / saved_joules_per_1000 * 1000.0)
            // a saving so small that the count overflows is never paid back in practice
            .filter(|n| n.is_finite());
        Some(BreakEven {
            // +0.0: a compression that cost nothing must not print as "-0.0"
            compression_joules: compression_joules + 0.0,
            saved_joules_per_1000: saved_joules_per_1000 + 0.0,
            break_even_items: items,
            provenance,
        })
    }

    /// The same figures with no payback (`break_even_items = None`, *never*): for a saving that
    /// is not real (the compressed model computes exactly what the original does), whose measured
    /// difference in joules is noise.
    pub fn without_payback(self) -> BreakEven {
        BreakEven {
            break_even_items: None,
            ..self
        }
    }

    /// The break-even count for people: `740 samples`, `20.0 k sentences`, `1.2 M sentences`,
    /// `never`.
    pub fn describe(&self, unit: &str) -> String {
        match self.break_even_items {
            None => "never".to_string(),
            Some(n) => format!("{} {unit}", count(n)),
        }
    }
}

/// A count rounded up to whole items, with k / M / G prefixes past 1,000.
fn count(n: f64) -> String {
    // the compression is paid back only once the last (partial) item has run
    let n = n.ceil();
    if n < 1e3 {
        format!("{n:.0}")
    } else if n < 1e6 {
        format!("{:.1} k", n / 1e3)
    } else if n < 1e9 {
        format!("{:.1} M", n / 1e6)
    } else if n < 1e12 {
        format!("{:.1} G", n / 1e9)
    } else {
        format!("{n:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TotalProvenance::{Estimated, Measured, Mixed};

    /// Relative tolerance of the arithmetic checks.
    const TOL: f64 = 1e-12;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= TOL * b.abs().max(1.0)
    }

    #[test]
    fn pays_back_after_compression_over_saving_per_item() {
        let b = break_even(120.0, Measured, 3.0, 0.6, Measured).unwrap();
        assert!(close(b.saved_joules_per_1000, 2.4));
        // 120 J / (2.4 J / 1,000) = 50,000 items
        assert!(close(b.break_even_items.unwrap(), 50_000.0));
        assert_eq!(b.compression_joules, 120.0);
        assert_eq!(b.provenance, Measured);
    }

    #[test]
    fn no_saving_or_a_loss_never_pays_back() {
        let same = break_even(10.0, Estimated, 2.0, 2.0, Estimated).unwrap();
        assert_eq!(same.saved_joules_per_1000, 0.0);
        assert_eq!(same.break_even_items, None);
        let worse = break_even(10.0, Estimated, 2.0, 2.5, Estimated).unwrap();
        assert!(close(worse.saved_joules_per_1000, -0.5));
        assert_eq!(worse.break_even_items, None);
        // even a free compression never pays back what it does not save
        let free_worse = break_even(0.0, Estimated, 2.0, 2.5, Estimated).unwrap();
        assert_eq!(free_worse.break_even_items, None);
        assert_eq!(free_worse.describe("samples"), "never");
    }

    #[test]
    fn a_free_compression_that_saves_pays_back_at_once() {
        let b = break_even(0.0, Measured, 2.0, 1.0, Measured).unwrap();
        assert_eq!(b.break_even_items, Some(0.0));
        assert_eq!(b.describe("samples"), "0 samples");
        // -0.0 J (an empty float sum) reads as 0, not as a negative cost
        let b = break_even(-0.0, Measured, 2.0, 1.0, Measured).unwrap();
        assert!(b.compression_joules.is_sign_positive());
        assert_eq!(b.break_even_items, Some(0.0));
    }

    #[test]
    fn provenance_is_measured_only_when_everything_is() {
        let p = |c, i| break_even(1.0, c, 2.0, 1.0, i).unwrap().provenance;
        assert_eq!(p(Measured, Measured), Measured);
        assert_eq!(p(Estimated, Estimated), Estimated);
        assert_eq!(p(Measured, Estimated), Mixed);
        assert_eq!(p(Estimated, Measured), Mixed);
        assert_eq!(p(Mixed, Measured), Mixed);
        assert_eq!(p(Estimated, Mixed), Mixed);
    }

    #[test]
    fn figures_that_are_not_finite_give_no_break_even() {
        for (c, base, var) in [
            (f64::NAN, 2.0, 1.0),
            (f64::INFINITY, 2.0, 1.0),
            (-1.0, 2.0, 1.0),
            (1.0, f64::NAN, 1.0),
            (1.0, 2.0, f64::NAN),
            (1.0, f64::INFINITY, 1.0),
            (1.0, 2.0, f64::NEG_INFINITY),
        ] {
            assert_eq!(
                break_even(c, Measured, base, var, Measured),
                None,
                "{c} {base} {var}"
            );
        }
        assert_eq!(BreakEven::from_saving(1.0, f64::NAN, Measured), None);
        // finite inputs whose difference overflows are refused too
        assert_eq!(
            break_even(1.0, Measured, f64::MAX, -f64::MAX, Measured),
            None
        );
    }

    #[test]
    fn a_vanishing_saving_is_never_rather_than_infinite() {
        let b = BreakEven::from_saving(1e300, 1e-300, Measured).unwrap();
        assert_eq!(b.break_even_items, None);
        assert_eq!(b.describe("sentences"), "never");
    }

    #[test]
    fn counts_read_with_prefixes_and_round_up() {
        let d = |n: f64| {
            BreakEven::from_saving(n, 1000.0, Measured)
                .unwrap()
                .describe("sentences")
        };
        assert_eq!(d(739.2), "740 sentences");
        assert_eq!(d(20_000.0), "20.0 k sentences");
        assert_eq!(d(1_234_567.0), "1.2 M sentences");
        assert_eq!(d(3.4e9), "3.4 G sentences");
        assert_eq!(d(5e13), "5.0e13 sentences");
    }

    #[test]
    fn never_serialises_as_null() {
        let b = break_even(1.0, Measured, 1.0, 1.0, Estimated).unwrap();
        let v = serde_json::to_value(b).unwrap();
        assert_eq!(v["break_even_items"], serde_json::Value::Null);
        assert_eq!(v["provenance"], "mixed");
        let back: BreakEven = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }
}
