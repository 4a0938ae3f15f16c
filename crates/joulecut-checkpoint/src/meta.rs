//! joulecut's `__metadata__` keys and the history record.

use serde::{Deserialize, Serialize};

/// Format version key.
pub const FORMAT: &str = "joulecut.format";
/// Model config key (JSON).
pub const MODEL: &str = "joulecut.model";
/// Encodings key (JSON map).
pub const ENCODINGS: &str = "joulecut.encodings";
/// History key (JSON list).
pub const HISTORY: &str = "joulecut.history";
/// How int8 layers should quantize their input activations at inference: `s8` (8-bit, the
/// default when absent) or `u7` (7-bit unsigned). Written by `joulecut quantize`.
pub const INT8_ACTIVATIONS: &str = "joulecut.int8_activations";
/// Per-layer exceptions to [`INT8_ACTIVATIONS`]: a JSON object from module name (the weight's
/// name without `.weight`) to grid tag, chosen from calibration error (`quantize --calibration`).
pub const INT8_ACTIVATIONS_LAYERS: &str = "joulecut.int8_activations.layers";
/// The format version this crate writes.
pub const FORMAT_VERSION: &str = "1";

/// One step applied to a checkpoint (`joulecut.history`, newest last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// joulecut version that applied the step.
    pub tool: String,
    /// The command (`train`, `prune`, `quantize`, ...).
    pub command: String,
    /// Its parameters.
    #[serde(default)]
    pub params: serde_json::Value,
}

impl HistoryEntry {
    /// A history entry stamped with this crate's version.
    pub fn new(command: impl Into<String>, params: serde_json::Value) -> Self {
        HistoryEntry {
            tool: format!("joulecut {}", env!("CARGO_PKG_VERSION")),
            command: command.into(),
            params,
        }
    }
}
