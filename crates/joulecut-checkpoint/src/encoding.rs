//! The `joulecut.encodings` metadata: logical tensor name → how it is stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tensor::{FloatType, SparseValues, TensorData};

/// How one logical tensor is stored (absent from the map = dense).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "encoding", rename_all = "lowercase")]
#[non_exhaustive]
pub enum TensorEncoding {
    /// I8 values under the logical name, `NAME:scale` F32, optional `NAME:zero_point` I32,
    /// optional `NAME:in_scale` F32 (per input column, see `Int8Tensor::in_scales`).
    Int8 {
        /// Channel axis of the scales; `None` = per tensor.
        axis: Option<usize>,
        /// Whether `NAME:zero_point` exists (asymmetric scheme).
        zero_point: bool,
        /// Float type before quantisation.
        dtype: FloatType,
        /// Whether `NAME:in_scale` exists (smoothed weights); absent in files without it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        in_scale: bool,
    },
    /// `NAME:bitmap` U8 + `NAME:values` (float, or I8 with `NAME:scale` [+ `NAME:zero_point`]).
    Sparse {
        /// Logical shape.
        shape: Vec<usize>,
        /// Stored value dtype: `F32`, `F16`, `BF16` or `I8`.
        values: String,
        /// int8 values: channel axis of the scales.
        #[serde(default)]
        axis: Option<usize>,
        /// int8 values: whether a zero-point is stored.
        #[serde(default)]
        zero_point: bool,
        /// Float type of the logical tensor.
        dtype: FloatType,
    },
}

impl TensorEncoding {
    /// Short name (`int8`, `sparse`).
    pub fn kind(&self) -> &'static str {
        match self {
            TensorEncoding::Int8 { .. } => "int8",
            TensorEncoding::Sparse { .. } => "sparse",
        }
    }

    /// Names of the stored safetensors entries that make up logical tensor `name`.
    pub fn stored_names(&self, name: &str) -> Vec<String> {
        let mut v = Vec::new();
        match self {
            TensorEncoding::Int8 {
                zero_point,
                in_scale,
                ..
            } => {
                v.push(name.to_string());
                v.push(format!("{name}:scale"));
                if *zero_point {
                    v.push(format!("{name}:zero_point"));
                }
                if *in_scale {
                    v.push(format!("{name}:in_scale"));
                }
            }
            TensorEncoding::Sparse {
                values, zero_point, ..
            } => {
                v.push(format!("{name}:bitmap"));
                v.push(format!("{name}:values"));
                if values == "I8" {
                    v.push(format!("{name}:scale"));
                    if *zero_point {
                        v.push(format!("{name}:zero_point"));
                    }
                }
            }
        }
        v
    }

    /// The encoding describing `data`, or `None` for dense.
    pub fn of(data: &TensorData) -> Option<Self> {
        match data {
            TensorData::Dense(_) => None,
            TensorData::Int8(q) => Some(TensorEncoding::Int8 {
                axis: q.axis,
                zero_point: q.zero_points.is_some(),
                dtype: q.orig_dtype,
                in_scale: q.in_scales.is_some(),
            }),
            TensorData::Sparse(s) => Some(match &s.values {
                SparseValues::Float { dtype, .. } => TensorEncoding::Sparse {
                    shape: s.shape.clone(),
                    values: dtype.to_string(),
                    axis: None,
                    zero_point: false,
                    dtype: *dtype,
                },
                SparseValues::Int8(q) => TensorEncoding::Sparse {
                    shape: s.shape.clone(),
                    values: "I8".into(),
                    axis: q.axis,
                    zero_point: q.zero_points.is_some(),
                    dtype: q.orig_dtype,
                },
            }),
        }
    }
}

/// The parsed `joulecut.encodings` map.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encodings {
    map: BTreeMap<String, TensorEncoding>,
    owner: BTreeMap<String, String>,
}

impl Encodings {
    /// Parses the metadata value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let map: BTreeMap<String, TensorEncoding> =
            serde_json::from_str(s).map_err(|e| e.to_string())?;
        Ok(Self::from_map(map))
    }

    fn from_map(map: BTreeMap<String, TensorEncoding>) -> Self {
        let mut owner = BTreeMap::new();
        for (name, enc) in &map {
            for part in enc.stored_names(name) {
                owner.insert(part, name.clone());
            }
        }
        Encodings { map, owner }
    }

    /// Adds an entry.
    pub fn insert(&mut self, name: String, enc: TensorEncoding) {
        for part in enc.stored_names(&name) {
            self.owner.insert(part, name.clone());
        }
        self.map.insert(name, enc);
    }

    /// The encoding of a logical tensor (`None` = dense).
    pub fn get(&self, name: &str) -> Option<&TensorEncoding> {
        self.map.get(name)
    }

    /// The logical tensor a stored entry belongs to.
    pub fn owner_of(&self, stored: &str) -> Option<&str> {
        self.owner.get(stored).map(|s| s.as_str())
    }

    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &TensorEncoding)> {
        self.map.iter()
    }

    /// Whether no tensor is encoded.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// JSON for the metadata value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.map).expect("encodings serialise")
    }
}
