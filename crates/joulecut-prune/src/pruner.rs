//! [`Pruner`]: pruning inside the user's own candle training loop.
//!
//! Call [`Pruner::step`] after every optimizer step. At the schedule's update steps it recomputes the
//! masks from the current weights; at every step it sets the pruned weights back to exactly zero. An
//! optimizer such as AdamW keeps non-zero moments for pruned weights and moves them off zero at each
//! step; re-applying the mask right after the step means the forward pass never sees them. On the CPU
//! the mask is applied in place (no allocation, one pass over the masked tensors); on other devices
//! through `Var::set` with a cached 0/1 tensor.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{linear, AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
//! use joulecut_prune::{Pruner, PruneSpec, Schedule};
//!
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let model = linear(8, 4, VarBuilder::from_varmap(&varmap, DType::F32, &dev).pp("fc"))?;
//! let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW::default())?;
//! let mut pruner = Pruner::new(PruneSpec::new(0.75), Schedule::agp(0.0, 0, 20, 5)?)?;
//! let x = Tensor::randn(0f32, 1., (16, 8), &dev)?;
//! for step in 0..30 {
//!     let loss = model.forward(&x)?.sqr()?.mean_all()?;
//!     opt.backward_step(&loss)?;
//!     pruner.step(&varmap, step)?;
//! }
//! let w = varmap.data().lock().unwrap()["fc.weight"].as_tensor().flatten_all()?.to_vec1::<f32>()?;
//! assert_eq!(w.iter().filter(|v| **v == 0.0).count(), 24);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp1, Layout, Tensor, Var};
use candle_nn::VarMap;
use serde::Serialize;

use crate::Selection;
use crate::mask::{Mask, PruneSpec, add_companion_biases, compute_masks_with};
use crate::report::SparsityReport;
use crate::schedule::Schedule;
use crate::tensor::F32Tensor;
use crate::{Error, Result};

/// Copies every float variable of `varmap` to the host, by name.
pub fn varmap_tensors(varmap: &VarMap) -> Result<BTreeMap<String, F32Tensor>> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    data.iter()
        .filter(|(_, v)| v.dtype().is_float())
        .map(|(n, v)| Ok((n.clone(), F32Tensor::from_candle(n, v.as_tensor())?)))
        .collect()
}

/// Zeroes the masked positions of a CPU tensor in place.
struct ZeroPruned<'a> {
    keep: &'a [bool],
}

fn zero_where<T: Copy>(v: &mut [T], keep: &[bool], zero: T) {
    for (x, k) in v.iter_mut().zip(keep) {
        if !*k {
            *x = zero;
        }
    }
}

impl InplaceOp1 for ZeroPruned<'_> {
    fn name(&self) -> &'static str {
        "joulecut-zero-pruned"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("cannot mask a non-contiguous variable")
        };
        if b - a != self.keep.len() {
            candle_core::bail!(
                "mask of {} elements for a tensor of {}",
                self.keep.len(),
                b - a
            )
        }
        match storage {
            CpuStorage::F32(v) => zero_where(&mut v[a..b], self.keep, 0.0),
            CpuStorage::F64(v) => zero_where(&mut v[a..b], self.keep, 0.0),
            CpuStorage::F16(v) => zero_where(&mut v[a..b], self.keep, half::f16::ZERO),
            CpuStorage::BF16(v) => zero_where(&mut v[a..b], self.keep, half::bf16::ZERO),
            other => candle_core::bail!("cannot mask a {:?} tensor", other.dtype()),
        }
        Ok(())
    }
}

/// A mask bound to its variable.
struct Enforced {
    name: String,
    var: Var,
    mask: Mask,
    /// 0/1 tensor for non-CPU devices, built on first use.
    device_mask: Option<Tensor>,
}

impl Enforced {
    fn apply(&mut self) -> Result<()> {
        let t = self.var.as_tensor();
        if t.device().is_cpu() {
            t.inplace_op1(&ZeroPruned {
                keep: self.mask.keep(),
            })
            .map_err(Error::candle("masking", &self.name))
        } else {
            if self.device_mask.is_none() {
                let m = self
                    .mask
                    .to_candle(t.dtype(), t.device())
                    .map_err(Error::candle("masking", &self.name))?;
                self.device_mask = Some(m);
            }
            let m = self.device_mask.as_ref().expect("built above");
            let masked = t.mul(m).map_err(Error::candle("masking", &self.name))?;
            self.var
                .set(&masked)
                .map_err(Error::candle("masking", &self.name))
        }
    }
}

/// What [`Pruner::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PruneStep {
    /// The step passed in.
    pub step: usize,
    /// The scheduled sparsity of the default target at this step.
    pub target_sparsity: f64,
    /// Whether the masks were recomputed at this step.
    pub updated: bool,
}

/// Keeps a `VarMap`'s pruned weights at zero during training, following a [`Schedule`].
pub struct Pruner {
    spec: PruneSpec,
    schedule: Option<Schedule>,
    updates_done: usize,
    masks: Vec<Enforced>,
}

impl std::fmt::Debug for Pruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pruner")
            .field("spec", &self.spec)
            .field("schedule", &self.schedule)
            .field("updates_done", &self.updates_done)
            .field(
                "masked",
                &self.masks.iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Pruner {
    /// A pruner for `spec` following `schedule`; validates both.
    pub fn new(spec: PruneSpec, schedule: Schedule) -> Result<Self> {
        spec.validate()?;
        schedule.validate()?;
        Ok(Pruner {
            spec,
            schedule: Some(schedule),
            updates_done: 0,
            masks: Vec::new(),
        })
    }

    /// A pruner that never prunes more but keeps the current zeros of the selected tensors at zero
    /// (fine-tuning a pruned checkpoint). With structured zeros (whole rows), the zero bias entries of
    /// those rows are kept too.
    pub fn keep_zeros(varmap: &VarMap, selection: &Selection) -> Result<Self> {
        let tensors = varmap_tensors(varmap)?;
        let names = selection.select(
            tensors
                .iter()
                .map(|(n, t)| (n.as_str(), t.shape.as_slice())),
        )?;
        let mut masks: BTreeMap<String, Mask> = names
            .iter()
            .map(|n| (n.clone(), Mask::from_nonzeros(&tensors[n])))
            .collect();
        add_companion_biases(&tensors, &mut masks);
        // A companion bias keeps only the entries that are zero *and* belong to an all-zero row.
        for (name, m) in masks.iter_mut() {
            if names.contains(name) {
                continue;
            }
            let values = &tensors[name].values;
            let keep = m
                .keep()
                .iter()
                .zip(values)
                .map(|(k, v)| *k || *v != 0.0)
                .collect();
            *m = Mask::from_keep(m.shape().to_vec(), keep)?;
        }
        let mut p = Pruner {
            spec: PruneSpec::new(0.0).selection(selection.clone()),
            schedule: None,
            updates_done: 0,
            masks: Vec::new(),
        };
        p.bind(varmap, masks)?;
        Ok(p)
    }

    /// The pruning spec.
    pub fn spec(&self) -> &PruneSpec {
        &self.spec
    }

    /// The schedule (`None` for [`Pruner::keep_zeros`]).
    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }

    /// The scheduled sparsity of the default target at `step`.
    pub fn target_sparsity(&self, step: usize) -> f64 {
        match &self.schedule {
            Some(s) => s.sparsity_at(self.spec.sparsity, step),
            None => 0.0,
        }
    }

    fn bind(&mut self, varmap: &VarMap, masks: BTreeMap<String, Mask>) -> Result<()> {
        let data = varmap.data().lock().expect("VarMap lock poisoned");
        self.masks = masks
            .into_iter()
            .filter(|(_, m)| m.pruned() > 0)
            .map(|(name, mask)| {
                let var = data
                    .get(&name)
                    .ok_or_else(|| Error::UnknownTensor { name: name.clone() })?
                    .clone();
                Ok(Enforced {
                    name,
                    var,
                    mask,
                    device_mask: None,
                })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Call after each optimizer step: recomputes the masks when the schedule says so, then zeroes the
    /// pruned weights.
    pub fn step(&mut self, varmap: &VarMap, step: usize) -> Result<PruneStep> {
        let mut updated = false;
        if let Some(schedule) = self.schedule.clone() {
            let due = schedule.updates_by(step);
            if due != self.updates_done {
                let tensors = varmap_tensors(varmap)?;
                let masks =
                    compute_masks_with(&tensors, &self.spec, &|f| schedule.sparsity_at(f, step))?;
                self.bind(varmap, masks)?;
                self.updates_done = due;
                updated = true;
            }
        }
        self.enforce()?;
        Ok(PruneStep {
            step,
            target_sparsity: self.target_sparsity(step),
            updated,
        })
    }

    /// Zeroes the pruned weights with the current masks (without consulting the schedule).
    pub fn enforce(&mut self) -> Result<()> {
        self.masks.iter_mut().try_for_each(Enforced::apply)
    }

    /// The current masks, by tensor name (tensors without pruned elements are omitted).
    pub fn masks(&self) -> BTreeMap<&str, &Mask> {
        self.masks
            .iter()
            .map(|e| (e.name.as_str(), &e.mask))
            .collect()
    }

    /// Sparsity of the current masks.
    pub fn report(&self) -> SparsityReport {
        SparsityReport::from_masks(self.masks.iter().map(|e| (e.name.as_str(), &e.mask)))
    }
}

/// One-shot pruning of a `VarMap` in place; returns the masks (to keep them during fine-tuning, build
/// a [`Pruner::keep_zeros`] or keep using a [`Pruner`]).
pub fn prune_varmap(varmap: &VarMap, spec: &PruneSpec) -> Result<BTreeMap<String, Mask>> {
    let tensors = varmap_tensors(varmap)?;
    let masks = crate::mask::compute_masks(&tensors, spec)?;
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    for (name, mask) in &masks {
        let var = data
            .get(name)
            .ok_or_else(|| Error::UnknownTensor { name: name.clone() })?
            .clone();
        Enforced {
            name: name.clone(),
            var,
            mask: mask.clone(),
            device_mask: None,
        }
        .apply()?;
    }
    Ok(masks)
}
