//! The pruning vocabulary: what is removed together ([`Granularity`]), how units are ranked
//! ([`Criterion`]) and where the threshold is chosen ([`Scope`]), each with the names configs and
//! reports spell them by (`"unstructured"`, `"2:4"`, `"global"`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The unit that is removed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Granularity {
    /// Single weights, ranked by magnitude.
    Unstructured,
    /// Output rows (neurons) of a weight `[out, in, ...]`, ranked by their norm.
    Rows,
    /// Output channels of a conv kernel `[out, in, kh, kw]`, ranked by their norm. The same operation as
    /// [`Granularity::Rows`] (slices along dimension 0); the name says what the user means.
    Channels,
    /// At most `n` non-zeros in every group of `m` consecutive weights along the input dimension
    /// (dimension 1; dimension 0 for a 1-D tensor). For a conv kernel `[out, in, kh, kw]` the groups
    /// run over input channels at a fixed kernel position, as NVIDIA's 2:4 sparsity does.
    Nm {
        /// Weights kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
}

impl Granularity {
    /// An N:M granularity; fails unless `1 <= n < m`.
    pub fn nm(n: usize, m: usize) -> Result<Self> {
        if n == 0 || n >= m {
            return Err(Error::InvalidNm { n, m });
        }
        Ok(Granularity::Nm { n, m })
    }

    /// Whether whole output units (rows, channels) are removed.
    pub fn is_structured(self) -> bool {
        matches!(self, Granularity::Rows | Granularity::Channels)
    }

    /// The sparsity an N:M pattern implies (`1 - n/m`); `None` for the other granularities.
    pub fn implied_sparsity(self) -> Option<f64> {
        match self {
            Granularity::Nm { n, m } => Some(1.0 - n as f64 / m as f64),
            _ => None,
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Granularity::Unstructured => f.write_str("unstructured"),
            Granularity::Rows => f.write_str("rows"),
            Granularity::Channels => f.write_str("channels"),
            Granularity::Nm { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

impl std::str::FromStr for Granularity {
    type Err = Error;

    /// Parses the names [`Display`](fmt::Display) writes: `unstructured`, `rows`, `channels` or
    /// `N:M` (e.g. `2:4`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "unstructured" => Ok(Granularity::Unstructured),
            "rows" => Ok(Granularity::Rows),
            "channels" => Ok(Granularity::Channels),
            nm => {
                let parsed = nm
                    .split_once(':')
                    .and_then(|(n, m)| Some((n.trim().parse().ok()?, m.trim().parse().ok()?)));
                let (n, m) = parsed.ok_or_else(|| Error::IncompatibleOptions {
                    message: format!(
                        "granularity `{nm}` is not unstructured, rows, channels or N:M"
                    ),
                    hint: "use unstructured, rows, channels or N:M (e.g. 2:4)".into(),
                })?;
                Granularity::nm(n, m)
            }
        }
    }
}

/// Serde by name (`"unstructured"`, `"2:4"`, ...) for configs and reports that spell a
/// granularity as a string: `#[serde(with = "joulecut_prune::granularity_name")]`.
pub mod granularity_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Granularity;

    /// Writes the name.
    pub fn serialize<S: Serializer>(g: &Granularity, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(g)
    }

    /// Reads the name.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Granularity, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Layer => "layer",
            Scope::Global => "global",
        })
    }
}

impl std::str::FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "layer" => Ok(Scope::Layer),
            "global" => Ok(Scope::Global),
            other => Err(Error::IncompatibleOptions {
                message: format!("scope `{other}` is not layer or global"),
                hint: "use layer (the same fraction per tensor) or global (one threshold)".into(),
            }),
        }
    }
}

/// How units are ranked. For single weights both are the magnitude `|w|`; for rows and channels the
/// norm of the slice divided by its length (L1: mean `|w|`; L2: root mean square), so that units of
/// layers with different fan-in are comparable under a global scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Criterion {
    /// Sum of absolute values.
    #[default]
    L1,
    /// Euclidean norm.
    L2,
}

/// Where the threshold is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Scope {
    /// Each tensor loses its own fraction (the same everywhere, or per layer).
    #[default]
    Layer,
    /// One threshold across all selected tensors: the smallest units anywhere go first.
    Global,
}
