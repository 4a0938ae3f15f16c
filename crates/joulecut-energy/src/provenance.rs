//! The provenance vocabulary: how a joule figure was obtained. [`Provenance`] labels one domain,
//! [`TotalProvenance`] a whole measurement. Both print and parse the same lowercase words that
//! their serde form uses, so reports, CLIs and other crates share one spelling and compare types,
//! not strings.
//!
//! ```
//! use joulecut_energy::{Provenance, TotalProvenance};
//!
//! let p: TotalProvenance = "mixed".parse().unwrap();
//! assert_eq!(p, TotalProvenance::Mixed);
//! assert_eq!(p.to_string(), "mixed");
//! assert_eq!(Provenance::Integrated.as_str(), "integrated");
//! assert!("guessed".parse::<TotalProvenance>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a probe obtains its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// Read from an energy counter at the window edges.
    Measured,
    /// Power samples integrated over time (trapezoid), e.g. NVML on pre-Volta GPUs.
    Integrated,
    /// Computed from a model (CPU time × watts per core, ...), not read from hardware.
    Estimated,
}

/// Provenance of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TotalProvenance {
    /// Every domain measured (or integrated from measured power).
    Measured,
    /// Every domain estimated.
    Estimated,
    /// Both kinds; see `measured_joules` and `estimated_joules`.
    Mixed,
}

/// A word that is not a provenance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct ParseProvenanceError {
    /// Which vocabulary was parsed (`provenance` or `total provenance`).
    pub kind: &'static str,
    /// The text given.
    pub value: String,
    /// The accepted words, comma-separated.
    pub expected: &'static str,
}

impl Provenance {
    /// Every variant, in declaration order.
    pub const ALL: [Provenance; 3] = [
        Provenance::Measured,
        Provenance::Integrated,
        Provenance::Estimated,
    ];

    /// The serialised word: `measured`, `integrated` or `estimated`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provenance::Measured => "measured",
            Provenance::Integrated => "integrated",
            Provenance::Estimated => "estimated",
        }
    }
}

impl TotalProvenance {
    /// Every variant, in declaration order.
    pub const ALL: [TotalProvenance; 3] = [
        TotalProvenance::Measured,
        TotalProvenance::Estimated,
        TotalProvenance::Mixed,
    ];

    /// The serialised word: `measured`, `estimated` or `mixed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TotalProvenance::Measured => "measured",
            TotalProvenance::Estimated => "estimated",
            TotalProvenance::Mixed => "mixed",
        }
    }

    /// The provenance of a figure computed from two others: the same word when both agree,
    /// else `mixed` (an estimate combined with a measurement is never called measured).
    #[must_use]
    pub const fn combine(self, other: TotalProvenance) -> TotalProvenance {
        match (self, other) {
            (TotalProvenance::Measured, TotalProvenance::Measured) => TotalProvenance::Measured,
            (TotalProvenance::Estimated, TotalProvenance::Estimated) => TotalProvenance::Estimated,
            _ => TotalProvenance::Mixed,
        }
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for TotalProvenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provenance {
    type Err = ParseProvenanceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provenance::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ParseProvenanceError {
                kind: "provenance",
                value: s.to_string(),
                expected: "measured, integrated, estimated",
            })
    }
}

impl FromStr for TotalProvenance {
    type Err = ParseProvenanceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TotalProvenance::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ParseProvenanceError {
                kind: "total provenance",
                value: s.to_string(),
                expected: "measured, estimated, mixed",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_round_trips_through_display_fromstr_and_serde() {
        for p in TotalProvenance::ALL {
            let word = p.to_string();
            assert_eq!(word.parse::<TotalProvenance>().unwrap(), p);
            // Display and serde must spell it the same way.
            assert_eq!(serde_json::to_value(p).unwrap(), word.as_str());
            let back: TotalProvenance = serde_json::from_value(word.clone().into()).unwrap();
            assert_eq!(back, p);
        }
        let words: Vec<String> = TotalProvenance::ALL
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(words, ["measured", "estimated", "mixed"]);
    }

    #[test]
    fn combining_is_mixed_unless_both_agree() {
        use TotalProvenance::{Estimated, Measured, Mixed};
        for a in TotalProvenance::ALL {
            for b in TotalProvenance::ALL {
                let want = if a == b { a } else { Mixed };
                assert_eq!(a.combine(b), want, "{a} + {b}");
                assert_eq!(b.combine(a), want, "{b} + {a}");
            }
        }
        assert_eq!(Measured.combine(Estimated), Mixed);
    }

    #[test]
    fn domain_round_trips_through_display_fromstr_and_serde() {
        for p in Provenance::ALL {
            let word = p.to_string();
            assert_eq!(word.parse::<Provenance>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), word.as_str());
            let back: Provenance = serde_json::from_value(word.clone().into()).unwrap();
            assert_eq!(back, p);
        }
        let words: Vec<String> = Provenance::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(words, ["measured", "integrated", "estimated"]);
    }

    #[test]
    fn unknown_words_are_refused() {
        // Parsing is exact: the serialised words only, no case folding or aliases.
        for bad in ["", "Measured", "MIXED", " measured", "integrated"] {
            assert!(bad.parse::<TotalProvenance>().is_err(), "{bad:?}");
        }
        for bad in ["", "Estimated", "mixed", "estimate"] {
            assert!(bad.parse::<Provenance>().is_err(), "{bad:?}");
        }
        let e = "guess".parse::<TotalProvenance>().unwrap_err();
        assert_eq!(e.value, "guess");
        assert!(e.to_string().contains("measured, estimated, mixed"), "{e}");
    }
}
