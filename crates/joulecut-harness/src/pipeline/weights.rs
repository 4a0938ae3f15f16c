//! A model's weights as the pipeline moves them: a config plus a candle `VarMap` while training,
//! named f32 tensors while pruning and compacting, checkpoint tensors when writing. The
//! conversions live here once, for the CLI and the bench.

use std::collections::BTreeMap;

use candle_core::Device;
use candle_nn::VarMap;
use joulecut_checkpoint::{Checkpoint, DenseTensor, TensorData};
use joulecut_models::{ModelConfig, init_varmap, load_into_varmap};
use joulecut_prune::{Chain, F32Tensor};

use crate::{Error, Result};

/// A parameter: name, shape, f32 values.
pub type Param = (String, Vec<usize>, Vec<f32>);

/// Every parameter of `cfg` from `vm`, in architecture order.
pub fn varmap_params(cfg: &ModelConfig, vm: &VarMap) -> Result<Vec<Param>> {
    let mut all = joulecut_prune::varmap_tensors(vm)?;
    cfg.param_shapes()
        .into_iter()
        .map(|(n, _)| {
            let t = all
                .remove(&n)
                .ok_or_else(|| Error::Mismatch(format!("parameter {n} missing")))?;
            Ok((n, t.shape, t.values))
        })
        .collect()
}

/// Every parameter as a dense F32 checkpoint tensor, in architecture order.
pub fn dense_tensors(cfg: &ModelConfig, vm: &VarMap) -> Result<Vec<(String, TensorData)>> {
    Ok(varmap_params(cfg, vm)?
        .into_iter()
        .map(|(n, shape, v)| (n, TensorData::Dense(DenseTensor::from_f32(shape, &v))))
        .collect())
}

/// A fresh `VarMap` for `cfg` holding the same values as `src`.
pub fn copy_varmap(cfg: &ModelConfig, src: &VarMap, device: &Device) -> Result<VarMap> {
    let vm = init_varmap(cfg, 0, device)?;
    load_into_varmap(&vm, varmap_params(cfg, src)?)?;
    Ok(vm)
}

/// A `VarMap` for `cfg` holding a checkpoint's values (any encoding, decoded to f32); `seed`
/// initialises what the checkpoint does not hold.
pub fn varmap_from_checkpoint(
    cfg: &ModelConfig,
    ck: &Checkpoint,
    seed: u64,
    device: &Device,
) -> Result<VarMap> {
    let vm = init_varmap(cfg, seed, device)?;
    let tensors = ck
        .names()
        .iter()
        .map(|n| ck.get_f32(n).map(|(s, v)| (n.clone(), s, v)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    load_into_varmap(&vm, tensors)?;
    Ok(vm)
}

/// A model made physically smaller by removing its all-zero neurons and channels.
#[derive(Debug, Clone)]
pub struct CompactedModel {
    /// The smaller architecture.
    pub cfg: ModelConfig,
    /// Every tensor, the chain's layers compacted.
    pub tensors: BTreeMap<String, F32Tensor>,
    /// Output units of each layer before.
    pub widths_before: Vec<usize>,
    /// Output units of each layer after.
    pub widths_after: Vec<usize>,
    /// Units removed in all.
    pub removed_units: usize,
}

impl CompactedModel {
    /// The JSON the CLI reports (`widths_before`, `widths_after`, `removed_units`, `model`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "widths_before": self.widths_before,
            "widths_after": self.widths_after,
            "removed_units": self.removed_units,
            "model": self.cfg.to_json(),
        })
    }
}

/// Removes the all-zero output units of `cfg`'s layers (in data-flow order) and the inputs of the
/// next layer that read them.
pub fn compact_model(
    cfg: &ModelConfig,
    tensors: &BTreeMap<String, F32Tensor>,
) -> Result<CompactedModel> {
    let names = cfg.layer_names();
    let prefixes: Vec<&str> = names.iter().map(String::as_str).collect();
    let c = joulecut_prune::compact(tensors, &Chain::from_prefixes(&prefixes, tensors))?;
    Ok(CompactedModel {
        cfg: cfg.resized(&c.widths)?,
        removed_units: c.removed_units(),
        widths_before: c.original_widths,
        widths_after: c.widths,
        tensors: c.tensors,
    })
}
