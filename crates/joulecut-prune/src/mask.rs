//! Importance criteria, granularities, scopes and the masks they produce.
//!
//! A [`PruneSpec`] says *what* to prune (a [`Selection`]), *how much* (a sparsity, optionally per
//! layer), *at which granularity* ([`Granularity`]), *ranked by what* ([`Criterion`]) and *over which
//! scope* ([`Scope`]). [`compute_masks`] turns it into one [`Mask`] per tensor.
//!
//! Exactness: with a target sparsity `s`, a tensor with `n` prunable units (elements for
//! unstructured pruning, output rows or channels for structured pruning) loses exactly
//! `round(s * n)` units (per layer), or the selected tensors together lose `round(s * N)` (global).
//! The smallest scores go first; ties are broken by position (the earlier tensor, then the lower
//! index, is pruned first), so the result is deterministic.
//!
//! Structured pruning also masks the bias entry of each pruned unit (the bias of `x.weight` is
//! `x.bias`, when it exists and has one entry per output unit): a pruned neuron then outputs exactly
//! zero, which is what lets [`crate::compact`] remove it without changing the model's outputs.
//!
//! ```
//! use std::collections::BTreeMap;
//! use joulecut_prune::{compute_masks, F32Tensor, Granularity, PruneSpec};
//! let mut t = BTreeMap::new();
//! t.insert("fc.weight".to_string(), F32Tensor::new(vec![2, 4], vec![1., -2., 3., -4., 5., -6., 7., -8.])?);
//! let masks = compute_masks(&t, &PruneSpec::new(0.5))?;
//! assert_eq!(masks["fc.weight"].pruned(), 4); // |1|, |2|, |3|, |4|
//! let masks = compute_masks(&t, &PruneSpec::new(0.0).granularity(Granularity::nm(2, 4)?))?;
//! assert_eq!(masks["fc.weight"].keep(), &[false, false, true, true, false, false, true, true]);
//! # Ok::<(), joulecut_prune::Error>(())
//! ```

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Selection;
use crate::tensor::F32Tensor;
use crate::vocab::{Criterion, Granularity, Scope};
use crate::{Error, Result};

/// A complete description of one pruning pass; serialisable so it can be recorded next to results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneSpec {
    /// Fraction of units to remove, in `[0, 1)`. Ignored for N:M (the pattern fixes it).
    pub sparsity: f64,
    /// Per-tensor overrides of `sparsity` (scope [`Scope::Layer`] only); keys are exact tensor names.
    #[serde(default)]
    pub per_layer: BTreeMap<String, f64>,
    /// What is removed together.
    pub granularity: Granularity,
    /// How units are ranked.
    pub criterion: Criterion,
    /// Per layer or global threshold.
    pub scope: Scope,
    /// Which tensors are pruned.
    #[serde(default)]
    pub selection: Selection,
}

impl PruneSpec {
    /// Unstructured L1 magnitude pruning of the default selection, per layer, at `sparsity`.
    pub fn new(sparsity: f64) -> Self {
        PruneSpec {
            sparsity,
            per_layer: BTreeMap::new(),
            granularity: Granularity::Unstructured,
            criterion: Criterion::L1,
            scope: Scope::Layer,
            selection: Selection::default(),
        }
    }

    /// Sets the granularity.
    pub fn granularity(mut self, g: Granularity) -> Self {
        self.granularity = g;
        self
    }

    /// Sets the criterion.
    pub fn criterion(mut self, c: Criterion) -> Self {
        self.criterion = c;
        self
    }

    /// Sets the scope.
    pub fn scope(mut self, s: Scope) -> Self {
        self.scope = s;
        self
    }

    /// Sets the selection.
    pub fn selection(mut self, s: Selection) -> Self {
        self.selection = s;
        self
    }

    /// Overrides the sparsity of one tensor.
    pub fn layer_sparsity(mut self, name: impl Into<String>, sparsity: f64) -> Self {
        self.per_layer.insert(name.into(), sparsity);
        self
    }

    /// Checks the options on their own (not against any tensors).
    pub fn validate(&self) -> Result<()> {
        check_sparsity(self.sparsity, None)?;
        for (name, s) in &self.per_layer {
            check_sparsity(*s, Some(name))?;
        }
        if let Granularity::Nm { n, m } = self.granularity {
            Granularity::nm(n, m)?;
            if self.scope == Scope::Global {
                return Err(Error::IncompatibleOptions {
                    message: format!(
                        "{n}:{m} sparsity is decided within each group of {m}; it has no global scope"
                    ),
                    hint: "drop --scope global for N:M pruning".into(),
                });
            }
        }
        if self.scope == Scope::Global && !self.per_layer.is_empty() {
            return Err(Error::IncompatibleOptions {
                message: "per-layer sparsities and a global threshold exclude each other".into(),
                hint: "use --scope layer with per-layer sparsities".into(),
            });
        }
        Ok(self.selection.validate()?)
    }

    /// The final sparsity of tensor `name` under this spec.
    pub fn target_for(&self, name: &str) -> f64 {
        if let Some(s) = self.granularity.implied_sparsity() {
            return s;
        }
        self.per_layer.get(name).copied().unwrap_or(self.sparsity)
    }
}

/// Fails unless `0 <= s < 1`.
pub fn check_sparsity(s: f64, tensor: Option<&str>) -> Result<()> {
    if !(0.0..1.0).contains(&s) {
        return Err(Error::InvalidSparsity {
            value: s,
            tensor: tensor.map(str::to_string),
        });
    }
    Ok(())
}

/// Which elements of a tensor survive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    shape: Vec<usize>,
    keep: Vec<bool>,
}

impl Mask {
    /// A mask that keeps everything.
    pub fn full(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Mask {
            shape,
            keep: vec![true; n],
        }
    }

    /// A mask from explicit keep flags (row-major).
    pub fn from_keep(shape: Vec<usize>, keep: Vec<bool>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != keep.len() {
            return Err(Error::ShapeMismatch {
                name: "<mask>".into(),
                expected: shape,
                actual: vec![keep.len()],
            });
        }
        Ok(Mask { shape, keep })
    }

    /// The mask that keeps exactly the non-zero values of `t` (freezes an already-pruned tensor).
    pub fn from_nonzeros(t: &F32Tensor) -> Self {
        Mask {
            shape: t.shape.clone(),
            keep: t.values.iter().map(|v| *v != 0.0).collect(),
        }
    }

    /// Shape of the masked tensor.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Keep flags, row-major.
    pub fn keep(&self) -> &[bool] {
        &self.keep
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.keep.len()
    }

    /// Number of pruned elements.
    pub fn pruned(&self) -> usize {
        self.keep.iter().filter(|k| !**k).count()
    }

    /// Fraction of pruned elements (0 for an empty mask).
    pub fn sparsity(&self) -> f64 {
        if self.keep.is_empty() {
            0.0
        } else {
            self.pruned() as f64 / self.numel() as f64
        }
    }

    /// Whether each dimension-0 slice (row, channel) keeps at least one element.
    pub fn rows_kept(&self) -> Vec<bool> {
        let rows = self.shape.first().copied().unwrap_or(1);
        if rows == 0 {
            return Vec::new();
        }
        let len = self.keep.len() / rows;
        if len == 0 {
            return vec![false; rows];
        }
        self.keep
            .chunks(len)
            .map(|c| c.iter().any(|k| *k))
            .collect()
    }

    /// Sets the pruned elements of `values` to zero.
    pub fn apply(&self, values: &mut [f32]) {
        debug_assert_eq!(values.len(), self.keep.len());
        for (v, k) in values.iter_mut().zip(&self.keep) {
            if !*k {
                *v = 0.0;
            }
        }
    }

    /// The mask as a candle tensor of 0.0/1.0 in `dtype` on `device`.
    pub fn to_candle(
        &self,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let v: Vec<f32> = self
            .keep
            .iter()
            .map(|k| if *k { 1.0 } else { 0.0 })
            .collect();
        candle_core::Tensor::from_vec(v, self.shape.as_slice(), device)?.to_dtype(dtype)
    }
}

/// Marks the `k` smallest scores; ties go to the lower index. Returns pruned flags.
pub(crate) fn smallest_k<T: Copy>(
    scores: &[T],
    k: usize,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> Vec<bool> {
    let n = scores.len();
    if k == 0 {
        return vec![false; n];
    }
    if k >= n {
        return vec![true; n];
    }
    let mut tmp = scores.to_vec();
    let (_, thr, _) = tmp.select_nth_unstable_by(k - 1, &cmp);
    let thr = *thr;
    let less = scores
        .iter()
        .filter(|s| cmp(s, &thr) == Ordering::Less)
        .count();
    let mut equal_left = k - less;
    scores
        .iter()
        .map(|s| match cmp(s, &thr) {
            Ordering::Less => true,
            Ordering::Equal if equal_left > 0 => {
                equal_left -= 1;
                true
            }
            _ => false,
        })
        .collect()
}

/// Number of units to prune out of `n` at sparsity `s`.
pub(crate) fn units_to_prune(s: f64, n: usize) -> usize {
    ((s * n as f64).round() as usize).min(n)
}

/// Per-unit scores of dimension-0 slices: mean |w| (L1) or root mean square (L2).
fn unit_scores(t: &F32Tensor, criterion: Criterion) -> Vec<f64> {
    let rows = t.rows();
    let len = t.row_len();
    if len == 0 {
        return vec![0.0; rows];
    }
    t.values
        .chunks(len)
        .map(|row| match criterion {
            Criterion::L1 => row.iter().map(|v| v.abs() as f64).sum::<f64>() / len as f64,
            Criterion::L2 => {
                (row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / len as f64).sqrt()
            }
        })
        .collect()
}

fn rows_to_mask(t: &F32Tensor, pruned_rows: &[bool]) -> Mask {
    let len = t.row_len();
    let keep = pruned_rows
        .iter()
        .flat_map(|p| std::iter::repeat_n(!*p, len))
        .collect();
    Mask {
        shape: t.shape.clone(),
        keep,
    }
}

fn abs_f32(a: &f32, b: &f32) -> Ordering {
    a.abs().total_cmp(&b.abs())
}

/// The N:M mask of one tensor.
fn nm_mask(name: &str, t: &F32Tensor, n: usize, m: usize) -> Result<Mask> {
    if t.rank() == 0 {
        return Err(Error::RankTooLow {
            name: name.into(),
            shape: t.shape.clone(),
            granularity: format!("{n}:{m}"),
        });
    }
    let dim = if t.rank() == 1 { 0 } else { 1 };
    let size = t.shape[dim];
    if size % m != 0 {
        return Err(Error::NmIndivisible {
            name: name.into(),
            shape: t.shape.clone(),
            dim,
            size,
            n,
            m,
        });
    }
    let stride: usize = t.shape[dim + 1..].iter().product();
    let outer: usize = t.shape[..dim].iter().product();
    let mut keep = vec![true; t.numel()];
    let mut order: Vec<usize> = (0..m).collect();
    for o in 0..outer {
        for g in 0..size / m {
            for s in 0..stride {
                let idx = |j: usize| (o * size + g * m + j) * stride + s;
                order.iter_mut().enumerate().for_each(|(i, v)| *v = i);
                // Stable sort: equal magnitudes keep index order, so the lower index is pruned first.
                order.sort_by(|a, b| abs_f32(&t.values[idx(*a)], &t.values[idx(*b)]));
                for j in &order[..m - n] {
                    keep[idx(*j)] = false;
                }
            }
        }
    }
    Ok(Mask {
        shape: t.shape.clone(),
        keep,
    })
}

/// The mask of one tensor pruned on its own at `sparsity` (per-layer scope).
pub fn mask_tensor(
    name: &str,
    t: &F32Tensor,
    granularity: Granularity,
    criterion: Criterion,
    sparsity: f64,
) -> Result<Mask> {
    check_sparsity(sparsity, Some(name))?;
    match granularity {
        Granularity::Unstructured => {
            let pruned = smallest_k(&t.values, units_to_prune(sparsity, t.numel()), abs_f32);
            Ok(Mask {
                shape: t.shape.clone(),
                keep: pruned.into_iter().map(|p| !p).collect(),
            })
        }
        Granularity::Rows | Granularity::Channels => {
            if t.rank() < 2 {
                return Err(Error::RankTooLow {
                    name: name.into(),
                    shape: t.shape.clone(),
                    granularity: granularity.to_string(),
                });
            }
            let scores = unit_scores(t, criterion);
            let pruned = smallest_k(&scores, units_to_prune(sparsity, t.rows()), |a, b| {
                a.total_cmp(b)
            });
            Ok(rows_to_mask(t, &pruned))
        }
        Granularity::Nm { n, m } => {
            Granularity::nm(n, m)?;
            nm_mask(name, t, n, m)
        }
    }
}

/// The name of the bias that belongs to weight `name` (`x.weight` → `x.bias`), if the naming allows.
pub fn companion_bias(name: &str) -> Option<String> {
    name.strip_suffix("weight").map(|p| format!("{p}bias"))
}

/// Computes the masks of a pruning pass at the spec's final sparsity.
///
/// `tensors` holds every tensor of the model (unselected ones are needed for the glob checks and for
/// the companion biases of structured pruning). The result has one mask per selected tensor, plus, for
/// structured pruning, one per companion bias.
pub fn compute_masks(
    tensors: &BTreeMap<String, F32Tensor>,
    spec: &PruneSpec,
) -> Result<BTreeMap<String, Mask>> {
    compute_masks_with(tensors, spec, &|s| s)
}

/// Like [`compute_masks`], but each tensor's target is `schedule(final target)` (used by schedules).
pub(crate) fn compute_masks_with(
    tensors: &BTreeMap<String, F32Tensor>,
    spec: &PruneSpec,
    schedule: &dyn Fn(f64) -> f64,
) -> Result<BTreeMap<String, Mask>> {
    spec.validate()?;
    let names = spec.selection.select(
        tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape.as_slice())),
    )?;
    for name in spec.per_layer.keys() {
        if !names.contains(name) {
            return Err(Error::UnknownTensor { name: name.clone() });
        }
    }
    let selected: Vec<(&str, &F32Tensor)> =
        names.iter().map(|n| (n.as_str(), &tensors[n])).collect();
    let mut masks = BTreeMap::new();
    match (spec.scope, spec.granularity) {
        (_, Granularity::Nm { .. }) | (Scope::Layer, _) => {
            for (name, t) in &selected {
                let target = match spec.granularity {
                    // N:M is all or nothing: the pattern applies as soon as the schedule prunes at all.
                    Granularity::Nm { .. } if schedule(1.0) <= 0.0 => continue,
                    Granularity::Nm { .. } => 0.0,
                    _ => schedule(spec.target_for(name)).clamp(0.0, spec.target_for(name)),
                };
                masks.insert(
                    name.to_string(),
                    mask_tensor(name, t, spec.granularity, spec.criterion, target)?,
                );
            }
        }
        (Scope::Global, Granularity::Unstructured) => {
            let target = schedule(spec.sparsity).clamp(0.0, spec.sparsity);
            let all: Vec<f32> = selected
                .iter()
                .flat_map(|(_, t)| t.values.iter().copied())
                .collect();
            let pruned = smallest_k(&all, units_to_prune(target, all.len()), abs_f32);
            let mut offset = 0;
            for (name, t) in &selected {
                let keep = pruned[offset..offset + t.numel()]
                    .iter()
                    .map(|p| !*p)
                    .collect();
                offset += t.numel();
                masks.insert(
                    name.to_string(),
                    Mask {
                        shape: t.shape.clone(),
                        keep,
                    },
                );
            }
        }
        (Scope::Global, g) => {
            let target = schedule(spec.sparsity).clamp(0.0, spec.sparsity);
            let mut all = Vec::new();
            for (name, t) in &selected {
                if t.rank() < 2 {
                    return Err(Error::RankTooLow {
                        name: name.to_string(),
                        shape: t.shape.clone(),
                        granularity: g.to_string(),
                    });
                }
                all.extend(unit_scores(t, spec.criterion));
            }
            let pruned = smallest_k(&all, units_to_prune(target, all.len()), |a, b| {
                a.total_cmp(b)
            });
            let mut offset = 0;
            for (name, t) in &selected {
                masks.insert(
                    name.to_string(),
                    rows_to_mask(t, &pruned[offset..offset + t.rows()]),
                );
                offset += t.rows();
            }
        }
    }
    if spec.granularity.is_structured() {
        add_companion_biases(tensors, &mut masks);
    }
    Ok(masks)
}

/// For every weight mask, masks the bias entries of fully pruned rows (when the bias exists, has one
/// entry per row and has no mask of its own).
pub(crate) fn add_companion_biases(
    tensors: &BTreeMap<String, F32Tensor>,
    masks: &mut BTreeMap<String, Mask>,
) {
    let mut extra = Vec::new();
    for (name, mask) in masks.iter() {
        let Some(bias) = companion_bias(name) else {
            continue;
        };
        let Some(b) = tensors.get(&bias) else {
            continue;
        };
        if masks.contains_key(&bias)
            || b.shape.len() != 1
            || mask.shape().len() < 2
            || b.shape[0] != mask.shape()[0]
        {
            continue;
        }
        extra.push((
            bias,
            Mask {
                shape: b.shape.clone(),
                keep: mask.rows_kept(),
            },
        ));
    }
    masks.extend(extra);
}

/// Sets the pruned elements of each masked tensor to zero; fails on an unknown name or a shape mismatch.
pub fn apply_masks(
    tensors: &mut BTreeMap<String, F32Tensor>,
    masks: &BTreeMap<String, Mask>,
) -> Result<()> {
    for (name, mask) in masks {
        let t = tensors
            .get_mut(name)
            .ok_or_else(|| Error::UnknownTensor { name: name.clone() })?;
        if t.shape != mask.shape {
            return Err(Error::ShapeMismatch {
                name: name.clone(),
                expected: mask.shape.clone(),
                actual: t.shape.clone(),
            });
        }
        mask.apply(&mut t.values);
    }
    Ok(())
}

/// Computes the masks of `spec` and applies them; returns the masks.
pub fn prune_tensors(
    tensors: &mut BTreeMap<String, F32Tensor>,
    spec: &PruneSpec,
) -> Result<BTreeMap<String, Mask>> {
    let masks = compute_masks(tensors, spec)?;
    apply_masks(tensors, &masks)?;
    Ok(masks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> F32Tensor {
        F32Tensor::new(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn smallest_k_breaks_ties_by_index() {
        let p = smallest_k(&[1.0f32, 0.5, 0.5, 0.5, 2.0], 2, abs_f32);
        assert_eq!(p, [false, true, true, false, false]);
        assert_eq!(smallest_k(&[3.0f32, 1.0], 0, abs_f32), [false, false]);
        assert_eq!(smallest_k(&[3.0f32, 1.0], 5, abs_f32), [true, true]);
    }

    #[test]
    fn rows_prune_the_weakest_neurons_and_their_bias() {
        let mut m = BTreeMap::new();
        m.insert(
            "l.weight".to_string(),
            t(&[3, 2], &[1., 1., 0.1, 0.1, 5., 5.]),
        );
        m.insert("l.bias".to_string(), t(&[3], &[1., 2., 3.]));
        let masks =
            compute_masks(&m, &PruneSpec::new(0.34).granularity(Granularity::Rows)).unwrap();
        assert_eq!(
            masks["l.weight"].keep(),
            &[true, true, false, false, true, true]
        );
        assert_eq!(masks["l.bias"].keep(), &[true, false, true]);
    }

    #[test]
    fn global_scope_uses_one_threshold() {
        let mut m = BTreeMap::new();
        m.insert("a.weight".to_string(), t(&[2, 2], &[1., 2., 3., 4.]));
        m.insert("b.weight".to_string(), t(&[2, 2], &[10., 20., 30., 40.]));
        let masks = compute_masks(&m, &PruneSpec::new(0.5).scope(Scope::Global)).unwrap();
        assert_eq!(masks["a.weight"].pruned(), 4);
        assert_eq!(masks["b.weight"].pruned(), 0);
    }

    #[test]
    fn nm_over_conv_input_channels() {
        // [out=1, in=4, kh=1, kw=2]: groups of 4 input channels at each kernel position.
        let mut m = BTreeMap::new();
        m.insert(
            "c.weight".to_string(),
            t(&[1, 4, 1, 2], &[1., 8., 2., 7., 3., 6., 4., 5.]),
        );
        let masks = compute_masks(
            &m,
            &PruneSpec::new(0.0).granularity(Granularity::nm(2, 4).unwrap()),
        )
        .unwrap();
        assert_eq!(
            masks["c.weight"].keep(),
            &[false, true, false, true, true, false, true, false]
        );
    }

    #[test]
    fn bad_options_are_bad_input() {
        let mut m = BTreeMap::new();
        m.insert("fc.weight".to_string(), t(&[2, 3], &[1.; 6]));
        m.insert("fc.bias".to_string(), t(&[2], &[1.; 2]));
        for s in [-0.1, 1.0, f64::NAN] {
            let e = compute_masks(&m, &PruneSpec::new(s)).unwrap_err();
            assert!(matches!(e, Error::InvalidSparsity { .. }) && e.is_bad_input());
        }
        assert!(matches!(
            Granularity::nm(4, 4),
            Err(Error::InvalidNm { .. })
        ));
        let e = compute_masks(
            &m,
            &PruneSpec::new(0.5).granularity(Granularity::Nm { n: 2, m: 4 }),
        )
        .unwrap_err();
        assert!(matches!(e, Error::NmIndivisible { size: 3, .. }), "{e}");
        let sel = Selection::default().include("fc.*");
        let e = compute_masks(
            &m,
            &PruneSpec::new(0.5)
                .granularity(Granularity::Rows)
                .selection(sel),
        )
        .unwrap_err();
        assert!(matches!(e, Error::RankTooLow { .. }), "{e}");
        assert!(e.hint().unwrap().contains("--exclude 'fc.bias'"));
        let e = compute_masks(&m, &PruneSpec::new(0.5).layer_sparsity("nope", 0.1)).unwrap_err();
        assert!(matches!(e, Error::UnknownTensor { .. }));
    }
}
