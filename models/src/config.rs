//! Model configs: what `joulecut.model` records, and the architecture names of the CLI contract.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An architecture and its dimensions. Serialised into a checkpoint's `joulecut.model` metadata so
/// that `eval` and `inspect` rebuild the model from the file alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ModelConfig {
    /// ReLU MLP with layers `fc1..fcN`; `widths[0]` inputs, `widths[N]` classes.
    Mlp {
        /// Display name (`lenet-300-100`, `teacher-mlp`, `mlp:784-32-10`).
        name: String,
        /// Layer widths, input first.
        widths: Vec<usize>,
    },
    /// LeNet-5: conv1 (5x5, pad 2), ReLU, max-pool 2; conv2 (5x5), ReLU, max-pool 2; fc1..fcN.
    Lenet5 {
        /// Input channels (1 for Fashion-MNIST).
        in_channels: usize,
        /// Input height = width (28).
        image: usize,
        /// Output channels of conv1 and conv2 (6, 16; smaller after structured pruning).
        channels: [usize; 2],
        /// Widths of the hidden fully-connected layers (120, 84).
        hidden: Vec<usize>,
        /// Number of classes.
        classes: usize,
    },
}

/// The max-pooling window (and stride) after each LeNet-5 conv + ReLU: the `k` that
/// [`Layer::forward_relu_pool`](crate::Layer::forward_relu_pool) is called with, and so the one a
/// layer's fused conv + ReLU + pool variant must be built for.
pub const CONV_POOL: usize = 2;

/// The architecture names every `--model`/`--student` flag accepts.
pub const ARCH_NAMES: &str =
    "lenet-300-100, lenet5, teacher-mlp, or mlp:W0-W1-...-Wn (e.g. mlp:784-32-10)";

/// The most weights (and biases) a model may have: 2³⁰, 4 GiB of f32 (training holds three more
/// copies: gradients and Adam's moments).
pub const MAX_PARAMS: usize = 1 << 30;
/// The widest layer.
pub const MAX_WIDTH: usize = 1 << 24;

/// Weights and biases of an MLP of these widths, `None` when the count overflows.
fn mlp_params(widths: &[usize]) -> Option<usize> {
    widths.windows(2).try_fold(0usize, |acc, w| {
        w[0].checked_mul(w[1])?.checked_add(w[1])?.checked_add(acc)
    })
}

impl ModelConfig {
    /// Parses an architecture name (`lenet-300-100`, `lenet5`, `teacher-mlp`, `mlp:784-32-10`).
    pub fn parse(arch: &str) -> Result<Self> {
        let mlp = |name: &str, widths: Vec<usize>| ModelConfig::Mlp {
            name: name.to_string(),
            widths,
        };
        match arch {
            "lenet-300-100" => Ok(mlp(arch, vec![784, 300, 100, 10])),
            "teacher-mlp" => Ok(mlp(arch, vec![784, 1200, 1200, 10])),
            "lenet5" | "lenet-5" => Ok(ModelConfig::lenet5()),
            _ => {
                let Some(spec) = arch.strip_prefix("mlp:") else {
                    return Err(Error::UnknownArch {
                        arch: arch.to_string(),
                    });
                };
                let widths: Vec<usize> = spec
                    .split('-')
                    .map(|w| w.parse::<usize>().ok().filter(|&w| w > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| Error::UnknownArch {
                        arch: arch.to_string(),
                    })?;
                if widths.len() < 2 {
                    return Err(Error::UnknownArch {
                        arch: arch.to_string(),
                    });
                }
                let cfg = mlp(arch, widths);
                cfg.check_size()?;
                Ok(cfg)
            }
        }
    }

    /// LeNet-5 for 28x28 grey images and 10 classes.
    pub fn lenet5() -> Self {
        ModelConfig::Lenet5 {
            in_channels: 1,
            image: 28,
            channels: [6, 16],
            hidden: vec![120, 84],
            classes: 10,
        }
    }

    /// Reads the config from checkpoint metadata JSON.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let cfg: ModelConfig = serde_json::from_value(v.clone()).map_err(|e| Error::BadConfig {
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        cfg.check_size()?;
        Ok(cfg)
    }

    /// Refuses a model too large to allocate ([`MAX_PARAMS`], [`MAX_WIDTH`]) before anything is.
    pub fn check_size(&self) -> Result<()> {
        let widths: Vec<usize> = match self {
            ModelConfig::Mlp { widths, .. } => widths.clone(),
            ModelConfig::Lenet5 {
                channels,
                hidden,
                classes,
                in_channels,
                image,
            } => [*in_channels, channels[0], channels[1], *image, *classes]
                .into_iter()
                .chain(hidden.iter().copied())
                .collect(),
        };
        let too = |reason: String| {
            Err(Error::TooLarge {
                arch: self.name(),
                reason,
            })
        };
        if let Some(w) = widths.iter().find(|&&w| w > MAX_WIDTH) {
            return too(format!("a width of {w} is over the limit of {MAX_WIDTH}"));
        }
        if let ModelConfig::Mlp { widths, .. } = self {
            match mlp_params(widths) {
                Some(n) if n <= MAX_PARAMS => {}
                n => {
                    let n = n.map_or("more than 2^64".to_string(), |n| n.to_string());
                    return too(format!("{n} weights, over the limit of {MAX_PARAMS}"));
                }
            }
        }
        Ok(())
    }

    /// JSON for checkpoint metadata.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("config serialises")
    }

    fn validate(&self) -> Result<()> {
        let bad = |r: &str| {
            Err(Error::BadConfig {
                reason: r.to_string(),
            })
        };
        match self {
            ModelConfig::Mlp { widths, .. } if widths.len() < 2 || widths.contains(&0) => {
                bad("an MLP needs at least two non-zero widths")
            }
            ModelConfig::Lenet5 {
                image,
                channels,
                classes,
                in_channels,
                ..
            } if *image < 12 || channels.contains(&0) || *classes == 0 || *in_channels == 0 => {
                bad("LeNet-5 needs image >= 12 and non-zero channels and classes")
            }
            _ => Ok(()),
        }
    }

    /// A short human-readable name.
    pub fn name(&self) -> String {
        match self {
            ModelConfig::Mlp { name, .. } => name.clone(),
            ModelConfig::Lenet5 {
                channels, hidden, ..
            } => {
                if *channels == [6, 16] && *hidden == [120, 84] {
                    "lenet5".into()
                } else {
                    format!(
                        "lenet5[{}-{}|{}]",
                        channels[0],
                        channels[1],
                        hidden
                            .iter()
                            .map(|h| h.to_string())
                            .collect::<Vec<_>>()
                            .join("-")
                    )
                }
            }
        }
    }

    /// Features per input sample (flattened).
    pub fn input_dim(&self) -> usize {
        match self {
            ModelConfig::Mlp { widths, .. } => widths[0],
            ModelConfig::Lenet5 {
                in_channels, image, ..
            } => in_channels * image * image,
        }
    }

    /// Number of output logits.
    pub fn classes(&self) -> usize {
        match self {
            ModelConfig::Mlp { widths, .. } => *widths.last().expect("validated"),
            ModelConfig::Lenet5 { classes, .. } => *classes,
        }
    }

    /// Widths of the hidden activations [`crate::Model::forward_hidden`] returns: the outputs of
    /// every fully connected layer but the last (feature distillation compares them).
    pub fn hidden_widths(&self) -> Vec<usize> {
        let fc: Vec<usize> = self
            .param_shapes()
            .into_iter()
            .filter(|(n, _)| n.starts_with("fc") && n.ends_with(".weight"))
            .map(|(_, s)| s[0])
            .collect();
        fc[..fc.len().saturating_sub(1)].to_vec()
    }

    /// Spatial size after the conv stack (LeNet-5: 28 → 14 → 10 → 5).
    pub fn lenet5_feature_side(image: usize) -> usize {
        (image / CONV_POOL - 4) / CONV_POOL
    }

    /// Every parameter `(name, shape)` in PyTorch naming and layout, in order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let fc = |out: &mut Vec<(String, Vec<usize>)>, first: usize, widths: &[usize]| {
            let mut prev = first;
            for (i, &w) in widths.iter().enumerate() {
                out.push((format!("fc{}.weight", i + 1), vec![w, prev]));
                out.push((format!("fc{}.bias", i + 1), vec![w]));
                prev = w;
            }
        };
        match self {
            ModelConfig::Mlp { widths, .. } => fc(&mut out, widths[0], &widths[1..]),
            ModelConfig::Lenet5 {
                in_channels,
                image,
                channels,
                hidden,
                classes,
            } => {
                out.push(("conv1.weight".into(), vec![channels[0], *in_channels, 5, 5]));
                out.push(("conv1.bias".into(), vec![channels[0]]));
                out.push(("conv2.weight".into(), vec![channels[1], channels[0], 5, 5]));
                out.push(("conv2.bias".into(), vec![channels[1]]));
                let side = Self::lenet5_feature_side(*image);
                let mut widths = hidden.clone();
                widths.push(*classes);
                fc(&mut out, channels[1] * side * side, &widths);
            }
        }
        out
    }

    /// The prefixes (`conv1`, `fc1`, ...) of the layers in data-flow order.
    pub fn layer_names(&self) -> Vec<String> {
        self.param_shapes()
            .into_iter()
            .filter_map(|(n, _)| n.strip_suffix(".weight").map(str::to_string))
            .collect()
    }

    /// The same architecture with new output widths for its layers (in [`Self::layer_names`]
    /// order; the last layer's width must stay the number of classes), e.g. after structured
    /// pruning removed neurons or channels.
    pub fn resized(&self, widths: &[usize]) -> Result<Self> {
        let n = self.layer_names().len();
        if widths.len() != n || widths.contains(&0) || widths[n - 1] != self.classes() {
            return Err(Error::BadConfig {
                reason: format!(
                    "{} needs {n} non-zero layer widths ending in {}, got {widths:?}",
                    self.name(),
                    self.classes()
                ),
            });
        }
        Ok(match self {
            ModelConfig::Mlp { widths: w, .. } => {
                let mut nw = vec![w[0]];
                nw.extend_from_slice(widths);
                let name = format!(
                    "mlp:{}",
                    nw.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join("-")
                );
                ModelConfig::Mlp { name, widths: nw }
            }
            ModelConfig::Lenet5 {
                in_channels,
                image,
                classes,
                ..
            } => ModelConfig::Lenet5 {
                in_channels: *in_channels,
                image: *image,
                channels: [widths[0], widths[1]],
                hidden: widths[2..n - 1].to_vec(),
                classes: *classes,
            },
        })
    }

    /// Total parameter count.
    pub fn param_count(&self) -> usize {
        self.param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Infers an MLP from PyTorch-style tensor names `fc1.weight`, `fc2.weight`, ... (used when a
    /// foreign state dict has no `joulecut.model` metadata).
    pub fn infer_mlp(shapes: &[(String, Vec<usize>)]) -> Option<Self> {
        let get = |n: &str| shapes.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone());
        let mut widths = Vec::new();
        let mut i = 1;
        while let Some(s) = get(&format!("fc{i}.weight")) {
            if s.len() != 2 {
                return None;
            }
            if widths.is_empty() {
                widths.push(s[1]);
            } else if *widths.last()? != s[1] {
                return None;
            }
            widths.push(s[0]);
            i += 1;
        }
        if widths.len() < 2 || shapes.iter().any(|(k, _)| k.starts_with("conv")) {
            return None;
        }
        let name = format!(
            "mlp:{}",
            widths
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join("-")
        );
        Some(ModelConfig::Mlp { name, widths })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(
            ModelConfig::parse("lenet-300-100").unwrap().param_count(),
            266_610
        );
        assert_eq!(ModelConfig::parse("lenet5").unwrap().param_count(), 61_706);
        assert_eq!(
            ModelConfig::parse("teacher-mlp").unwrap().param_count(),
            2_395_210
        );
        assert_eq!(ModelConfig::parse("mlp:784-32-10").unwrap().classes(), 10);
        for bad in ["resnet", "mlp:", "mlp:784", "mlp:784-x-10", "mlp:784-0-10"] {
            assert!(ModelConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_round_trip_and_inference() {
        let c = ModelConfig::lenet5();
        assert_eq!(ModelConfig::from_json(&c.to_json()).unwrap(), c);
        let m = ModelConfig::parse("lenet-300-100").unwrap();
        let inferred = ModelConfig::infer_mlp(&m.param_shapes()).unwrap();
        assert_eq!(inferred.param_shapes(), m.param_shapes());
    }
}
