//! Sensitivity analysis: how much accuracy each layer loses when it alone is pruned to a range of
//! sparsities (Distiller's and NNI's per-layer scan). Layers that barely react can be pruned harder.
//!
//! The caller supplies the evaluation as a closure, so any data set and metric work. The model is
//! restored after every point.
//!
//! ```
//! use std::collections::BTreeMap;
//! use joulecut_prune::{sensitivity_tensors, F32Tensor, SensitivityConfig};
//! let mut t = BTreeMap::new();
//! t.insert("fc.weight".to_string(), F32Tensor::new(vec![2, 2], vec![1., 2., 3., 4.])?);
//! // A stand-in "accuracy": the fraction of weights left.
//! let cfg = SensitivityConfig { sparsities: vec![0.25, 0.5], ..Default::default() };
//! let report = sensitivity_tensors(&t, &cfg, |m| {
//!     Ok::<_, joulecut_prune::Error>(1.0 - m["fc.weight"].sparsity())
//! })?;
//! assert_eq!(report.layers[0].points[1].accuracy, 0.5);
//! println!("{report}");
//! # Ok::<(), joulecut_prune::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::Selection;
use crate::mask::{Mask, add_companion_biases, check_sparsity, mask_tensor};
use crate::pruner::varmap_tensors;
use crate::tensor::F32Tensor;
use crate::vocab::{Criterion, Granularity};
use crate::{Error, Result};

/// What to sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityConfig {
    /// Sparsities to try on each layer, each in `[0, 1)`. Ignored for N:M (one point at its sparsity).
    pub sparsities: Vec<f64>,
    /// Granularity of the pruning.
    pub granularity: Granularity,
    /// Ranking criterion.
    pub criterion: Criterion,
    /// Layers to analyse.
    pub selection: Selection,
}

impl Default for SensitivityConfig {
    fn default() -> Self {
        SensitivityConfig {
            sparsities: vec![0.5, 0.7, 0.8, 0.9, 0.95],
            granularity: Granularity::Unstructured,
            criterion: Criterion::L1,
            selection: Selection::default(),
        }
    }
}

/// One evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SensitivityPoint {
    /// Sparsity of the layer.
    pub sparsity: f64,
    /// The metric returned by the evaluation closure.
    pub accuracy: f64,
}

/// The sweep of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSensitivity {
    /// Tensor name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// One point per sparsity.
    pub points: Vec<SensitivityPoint>,
}

/// The result of a sensitivity analysis; serialises to JSON, displays as a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityReport {
    /// The metric of the unpruned model.
    pub baseline: f64,
    /// Granularity used.
    pub granularity: Granularity,
    /// Criterion used.
    pub criterion: Criterion,
    /// Per layer.
    pub layers: Vec<LayerSensitivity>,
}

impl fmt::Display for SensitivityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(0)
            .max(5);
        writeln!(
            f,
            "sensitivity ({} {:?}), baseline {:.4}",
            self.granularity, self.criterion, self.baseline
        )?;
        write!(f, "{:<w$}", "layer")?;
        if let Some(first) = self.layers.first() {
            for p in &first.points {
                write!(f, "  {:>7}", format!("{:.0}%", 100.0 * p.sparsity))?;
            }
        }
        for l in &self.layers {
            write!(f, "\n{:<w$}", l.name)?;
            for p in &l.points {
                write!(f, "  {:>7.4}", p.accuracy)?;
            }
        }
        Ok(())
    }
}

/// The masks (the tensor's and, for structured pruning, its bias's) of pruning `name` alone.
fn layer_masks(
    tensors: &BTreeMap<String, F32Tensor>,
    name: &str,
    cfg: &SensitivityConfig,
    sparsity: f64,
) -> Result<BTreeMap<String, Mask>> {
    let mut masks = BTreeMap::new();
    masks.insert(
        name.to_string(),
        mask_tensor(
            name,
            &tensors[name],
            cfg.granularity,
            cfg.criterion,
            sparsity,
        )?,
    );
    if cfg.granularity.is_structured() {
        add_companion_biases(tensors, &mut masks);
    }
    Ok(masks)
}

fn plan(
    tensors: &BTreeMap<String, F32Tensor>,
    cfg: &SensitivityConfig,
) -> Result<(Vec<String>, Vec<f64>)> {
    let names = cfg.selection.select(
        tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape.as_slice())),
    )?;
    let sparsities = match cfg.granularity.implied_sparsity() {
        Some(s) => vec![s],
        None => {
            cfg.sparsities
                .iter()
                .try_for_each(|s| check_sparsity(*s, None))?;
            cfg.sparsities.clone()
        }
    };
    // Fail on a bad tensor before spending time on evaluations.
    for name in &names {
        layer_masks(tensors, name, cfg, 0.0)?;
    }
    Ok((names, sparsities))
}

/// The evaluations a sweep of `tensors` makes after the unpruned baseline, in order: each layer
/// at each sparsity. Lets a caller name what its `eval` callback is evaluating (progress).
pub fn sensitivity_probes(
    tensors: &BTreeMap<String, F32Tensor>,
    cfg: &SensitivityConfig,
) -> Result<Vec<(String, f64)>> {
    let (names, sparsities) = plan(tensors, cfg)?;
    Ok(names
        .into_iter()
        .flat_map(|n| sparsities.iter().map(move |&s| (n.clone(), s)))
        .collect())
}

/// Sensitivity analysis over plain tensors; `eval` sees the whole model with one layer pruned.
pub fn sensitivity_tensors<E, F>(
    tensors: &BTreeMap<String, F32Tensor>,
    cfg: &SensitivityConfig,
    mut eval: F,
) -> std::result::Result<SensitivityReport, E>
where
    E: From<Error>,
    F: FnMut(&BTreeMap<String, F32Tensor>) -> std::result::Result<f64, E>,
{
    let (names, sparsities) = plan(tensors, cfg)?;
    let baseline = eval(tensors)?;
    let mut work = tensors.clone();
    let mut layers = Vec::new();
    for name in names {
        let mut points = Vec::new();
        for &s in &sparsities {
            let masks = layer_masks(tensors, &name, cfg, s)?;
            for (n, m) in &masks {
                m.apply(&mut work.get_mut(n).expect("mask of a known tensor").values);
            }
            points.push(SensitivityPoint {
                sparsity: s,
                accuracy: eval(&work)?,
            });
            for n in masks.keys() {
                work.insert(n.clone(), tensors[n].clone());
            }
        }
        layers.push(LayerSensitivity {
            shape: tensors[&name].shape.clone(),
            name,
            points,
        });
    }
    Ok(SensitivityReport {
        baseline,
        granularity: cfg.granularity,
        criterion: cfg.criterion,
        layers,
    })
}

/// Sensitivity analysis of a `VarMap` in place (restored afterwards); `eval` runs the user's model.
pub fn sensitivity_varmap<E, F>(
    varmap: &VarMap,
    cfg: &SensitivityConfig,
    mut eval: F,
) -> std::result::Result<SensitivityReport, E>
where
    E: From<Error>,
    F: FnMut(&VarMap) -> std::result::Result<f64, E>,
{
    let tensors = varmap_tensors(varmap)?;
    let set = |name: &str, t: &F32Tensor| -> Result<()> {
        let data = varmap.data().lock().expect("VarMap lock poisoned");
        let var = data
            .get(name)
            .ok_or_else(|| Error::UnknownTensor { name: name.into() })?;
        let v = var.as_tensor();
        let new = t
            .to_candle(v.device())
            .and_then(|n| n.to_dtype(v.dtype()))
            .map_err(Error::candle("setting", name))?;
        var.set(&new).map_err(Error::candle("setting", name))
    };
    let (names, sparsities) = plan(&tensors, cfg)?;
    let baseline = eval(varmap)?;
    let mut layers = Vec::new();
    for name in names {
        let mut points = Vec::new();
        for &s in &sparsities {
            let masks = layer_masks(&tensors, &name, cfg, s)?;
            for (n, m) in &masks {
                let mut t = tensors[n].clone();
                m.apply(&mut t.values);
                set(n, &t)?;
            }
            let accuracy = eval(varmap);
            for n in masks.keys() {
                set(n, &tensors[n])?;
            }
            points.push(SensitivityPoint {
                sparsity: s,
                accuracy: accuracy?,
            });
        }
        layers.push(LayerSensitivity {
            shape: tensors[&name].shape.clone(),
            name,
            points,
        });
    }
    Ok(SensitivityReport {
        baseline,
        granularity: cfg.granularity,
        criterion: cfg.criterion,
        layers,
    })
}
