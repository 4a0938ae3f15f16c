//! [`ActivationGrid`]: the grid int8 layers quantize their input rows to at run time, as a
//! checkpoint records it (`joulecut.int8_activations`), a bench config names it and the command
//! line takes it. The tags (`s8`, `u7`, `u6`) and their meaning live here only.
//!
//! ```
//! use joulecut_quant::{ActivationGrid, ActivationQuant};
//! let g: ActivationGrid = "u6".parse().unwrap();
//! assert_eq!(g.to_string(), "u6");
//! assert_eq!(ActivationQuant::from(g), ActivationQuant::DynamicU6);
//! // A file without the tag runs on 8-bit rows; new int8 files record the 6-bit grid.
//! assert_eq!(ActivationGrid::default(), ActivationGrid::S8);
//! assert_eq!(ActivationGrid::RECOMMENDED, ActivationGrid::U6);
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gemm::ActivationQuant;

/// How int8 layers quantize their inputs at inference: per row for linear layers, per image for
/// convolutions, over `[min(x, 0), max(x, 0)]`. Serialised (and parsed, and displayed) as the
/// lowercase tag: `s8`, `u7`, `u6`.
///
/// **Default: [`ActivationGrid::S8`].** The default is what a checkpoint *without* a
/// `joulecut.int8_activations` tag means: int8 files written before the tag existed ran their
/// layers on 8-bit rows (docs/FORMAT.md: "absent = `s8`"), and so does an int8 layer built without
/// a grid. What `joulecut quantize --dtype int8` and the bench's int8 variants *write* when not told
/// otherwise is a separate choice, [`ActivationGrid::RECOMMENDED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ActivationGrid {
    /// 8-bit asymmetric ([`ActivationQuant::Dynamic`]): full resolution; the AVX2 kernel needs its
    /// sign handling.
    #[default]
    S8,
    /// 7-bit unsigned ([`ActivationQuant::DynamicU7`], PyTorch's `reduce_range`): half the
    /// resolution, no sign handling in the AVX2 kernel (about 1.4x faster than `s8`); on weights
    /// whose paired quads fit 16 bits (`PackedWeights::pairs_u7`: most transformer layers) the
    /// kernel's paired loop, as fast as `u6`.
    U7,
    /// 6-bit unsigned ([`ActivationQuant::DynamicU6`]): the AVX2 kernel adds two products in 16 bits
    /// before widening them, for any weights (about 1.15x faster than unpaired `u7`).
    U6,
}

impl ActivationGrid {
    /// Every grid, widest first.
    pub const ALL: [ActivationGrid; 3] =
        [ActivationGrid::S8, ActivationGrid::U7, ActivationGrid::U6];

    /// The grid new int8 files record when none is asked for: 6-bit unsigned, the AVX2 kernel's
    /// fastest loop, within 0.13 pt of f32 on Fashion-MNIST for the MLP and LeNet-5
    /// (docs/QUANT-KERNELS.md). Not the [`Default`], which keeps untagged files on `s8`.
    pub const RECOMMENDED: ActivationGrid = ActivationGrid::U6;

    /// The tag (`s8`, `u7`, `u6`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ActivationGrid::S8 => "s8",
            ActivationGrid::U7 => "u7",
            ActivationGrid::U6 => "u6",
        }
    }

    /// One line on what the grid trades, for `--help`.
    pub const fn describe(self) -> &'static str {
        match self {
            ActivationGrid::S8 => {
                "8-bit asymmetric (exact 8-bit; the AVX2 kernel needs its sign handling)"
            }
            ActivationGrid::U7 => {
                "7-bit unsigned (PyTorch's `reduce_range`): no sign handling, ~1.4x faster on AVX2; as fast as u6 where the weights pair"
            }
            ActivationGrid::U6 => {
                "6-bit unsigned: the AVX2 kernel adds two products in 16 bits before widening them"
            }
        }
    }

    /// The kernels' activation mode for this grid.
    pub const fn mode(self) -> ActivationQuant {
        match self {
            ActivationGrid::S8 => ActivationQuant::Dynamic,
            ActivationGrid::U7 => ActivationQuant::DynamicU7,
            ActivationGrid::U6 => ActivationQuant::DynamicU6,
        }
    }
}

impl From<ActivationGrid> for ActivationQuant {
    fn from(g: ActivationGrid) -> ActivationQuant {
        g.mode()
    }
}

impl std::fmt::Display for ActivationGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ActivationGrid {
    type Err = Error;

    /// The exact tag (case-sensitive, as stored in files).
    fn from_str(s: &str) -> Result<ActivationGrid> {
        ActivationGrid::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| {
                Error::BadConfig(format!(
                    "unknown int8 activation grid `{s}` (expected s8, u7 or u6)"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_from_str_display_and_serde() {
        for g in ActivationGrid::ALL {
            let tag = g.to_string();
            assert_eq!(tag, g.as_str());
            assert_eq!(tag.parse::<ActivationGrid>().unwrap(), g);
            let json = serde_json::to_string(&g).unwrap();
            assert_eq!(json, format!("\"{tag}\""));
            assert_eq!(serde_json::from_str::<ActivationGrid>(&json).unwrap(), g);
        }
        assert_eq!(
            ActivationGrid::ALL.map(ActivationGrid::as_str),
            ["s8", "u7", "u6"]
        );
    }

    #[test]
    fn unknown_tags_are_refused() {
        for bad in ["u9", "U6", "", "s8 ", "dynamic"] {
            assert!(bad.parse::<ActivationGrid>().is_err(), "{bad:?}");
            assert!(serde_json::from_str::<ActivationGrid>(&format!("\"{bad}\"")).is_err());
        }
    }

    /// Untagged files keep running on 8-bit rows; new files are written with the 6-bit grid.
    #[test]
    fn default_is_s8_and_new_files_get_u6() {
        assert_eq!(ActivationGrid::default(), ActivationGrid::S8);
        assert_eq!(ActivationGrid::default().mode(), ActivationQuant::default());
        assert_eq!(ActivationGrid::RECOMMENDED, ActivationGrid::U6);
    }

    #[test]
    fn modes_match_the_kernels_code_ranges() {
        let ranges = ActivationGrid::ALL.map(|g| g.mode().code_range());
        assert_eq!(ranges, [(-128, 127), (0, 127), (0, 63)]);
    }
}
