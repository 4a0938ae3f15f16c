//! The architectures ONNX export knows, read from a checkpoint's `joulecut.model` (the JSON that
//! `joulecut-models::ModelConfig` writes: `{"arch": "mlp", "widths": [...]}` or
//! `{"arch": "lenet5", "in_channels", "image", "channels", "hidden", "classes"}`).

use serde::Deserialize;

/// Padding of LeNet-5's two convolutions (joulecut-models' `CONV_PADDING`).
pub(crate) const CONV_PADDING: [i64; 2] = [2, 0];
/// Max-pool window and stride after each convolution (joulecut-models' `CONV_POOL`).
pub(crate) const POOL: i64 = 2;
/// Convolution kernel side.
pub(crate) const KERNEL: i64 = 5;

/// A model joulecut runs, as ONNX export needs it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
pub(crate) enum Arch {
    /// A ReLU MLP: `fc1 … fcN`, widths inputs first.
    Mlp { widths: Vec<usize> },
    /// LeNet-5: conv1 (5×5, pad 2) → ReLU → max-pool 2 → conv2 (5×5) → ReLU → max-pool 2 →
    /// flatten → fc1 … fcN.
    Lenet5 {
        in_channels: usize,
        image: usize,
        hidden: Vec<usize>,
    },
}

impl Arch {
    /// Parses `joulecut.model`.
    pub(crate) fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(v.clone()).map_err(|e| e.to_string())
    }

    /// Input features per sample (the flat row joulecut's models take).
    pub(crate) fn input_features(&self) -> usize {
        match self {
            Arch::Mlp { widths } => widths[0],
            Arch::Lenet5 {
                in_channels, image, ..
            } => in_channels * image * image,
        }
    }

    /// Number of fully-connected layers.
    pub(crate) fn fc_layers(&self) -> usize {
        match self {
            Arch::Mlp { widths } => widths.len().saturating_sub(1),
            Arch::Lenet5 { hidden, .. } => hidden.len() + 1,
        }
    }
}
