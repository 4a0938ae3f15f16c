//! Structured pruning of a BERT encoder: a fraction of each layer's attention heads and FFN neurons
//! removed, leaving physically smaller dense layers (a real saving on every kernel).
//!
//! With calibration ([`UnitScore::Activation`]) layers are processed in order, as in
//! [`BertEncoder::prune_calibrated`]: each layer is scored on the activations the already pruned
//! layers before it produce, heads first; when neurons are removed too, the FFN is scored again
//! on the head-pruned layer's activations; the removed units' mean contributions are folded into
//! the biases; the compacted layer's outputs feed the next layer. Without calibration
//! ([`UnitScore::Magnitude`]) each layer is scored by its weights alone. Scores are compared within
//! a layer only, so every layer loses the same fraction (rounded to whole units); at least one
//! head and one neuron stay in every layer.

use super::compact::dense_linear_check;
use super::importance::{UnitImportance, UnitStats, keep_top, magnitude_importance};
use super::layer::Sublayer;
use super::{BertEncoder, TokenBatch, Workspace};
use crate::error::{Error, Result};

/// How heads and neurons are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnitScore {
    /// The L2 norm of the unit's weights (no data).
    Magnitude,
    /// The unit's output change on calibration activations, its mean folded into the bias.
    Activation,
}

/// What structured pruning removes from every encoder layer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StructuredSpec {
    /// Fraction of each layer's attention heads removed, in `[0, 1)`.
    pub heads: f64,
    /// Fraction of each layer's FFN neurons removed, in `[0, 1)`.
    pub neurons: f64,
    /// The ranking.
    pub score: UnitScore,
}

impl StructuredSpec {
    /// Checks both fractions are in `[0, 1)` and something is removed.
    pub fn validate(&self) -> Result<()> {
        for (what, f) in [("heads", self.heads), ("neurons", self.neurons)] {
            if !(0.0..1.0).contains(&f) {
                return Err(Error::BadConfig {
                    reason: format!(
                        "the fraction of {what} to remove must be in [0, 1), got {f}; a layer keeps at least one"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// What structured pruning did to one encoder layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StructuredReport {
    /// Encoder layer index.
    pub layer: usize,
    /// Heads before.
    pub heads_before: usize,
    /// Indices (into the heads before) of the heads removed, ascending.
    pub removed_heads: Vec<usize>,
    /// FFN neurons before.
    pub neurons_before: usize,
    /// FFN neurons after.
    pub neurons_after: usize,
    /// Relative output change of the removed heads (their scores' root sum of squares over all
    /// heads'), when calibrated.
    pub head_score_removed: Option<f64>,
    /// The same for the removed neurons.
    pub neuron_score_removed: Option<f64>,
}

/// Units to remove: `fraction` of `count`, rounded, leaving at least one.
fn removals(fraction: f64, count: usize) -> usize {
    ((fraction * count as f64).round() as usize).min(count.saturating_sub(1))
}

fn complement(keep: &[usize], count: usize) -> Vec<usize> {
    (0..count)
        .filter(|i| keep.binary_search(i).is_err())
        .collect()
}

/// Root sum of squares of the removed scores over that of all scores.
fn removed_share(scores: &[f64], removed: &[usize]) -> f64 {
    let all: f64 = scores.iter().map(|s| s * s).sum();
    let gone: f64 = removed.iter().map(|&i| scores[i] * scores[i]).sum();
    if all > 0.0 { (gone / all).sqrt() } else { 0.0 }
}

impl BertEncoder {
    /// Statistics of one sublayer's input in layer `i` on the hidden states in `ws` (left
    /// unchanged).
    pub(super) fn unit_stats(
        &self,
        i: usize,
        ws: &mut Workspace,
        calib: &TokenBatch,
        which: Sublayer,
    ) -> UnitStats {
        let (h, t) = (self.cfg.hidden, calib.tokens());
        let l = &self.layers[i];
        let mut st = match which {
            Sublayer::AttentionOutput => UnitStats::new(l.heads, l.head_dim),
            _ => UnitStats::new(l.intermediate.out_features(), 1),
        };
        let saved = ws.x[..t * h].to_vec();
        l.forward(
            ws,
            &calib.lengths,
            (self.cfg.eps, self.cfg.activation),
            &mut |s, x, rows| {
                if s == which {
                    st.add(x, rows);
                }
            },
        );
        ws.x[..t * h].copy_from_slice(&saved);
        st
    }

    /// Activation-aware importance of every layer's heads and neurons on the current model (one
    /// forward of `calib`, nothing changed), or magnitude importance when `calib` is `None`.
    pub fn unit_importance(&self, calib: Option<&TokenBatch>) -> Result<Vec<UnitImportance>> {
        let Some(calib) = calib else {
            return Ok(self.layers.iter().map(magnitude_importance).collect());
        };
        if calib.tokens() == 0 {
            return Err(no_calibration());
        }
        let mut ws = Workspace::default();
        self.embed(calib, &mut ws)?;
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let heads = self.unit_stats(i, &mut ws, calib, Sublayer::AttentionOutput);
            let ffn = self.unit_stats(i, &mut ws, calib, Sublayer::Output);
            out.push(UnitImportance {
                heads: heads.output_change(&l.attention_output.to_dense()),
                neurons: ffn.output_change(&l.output.to_dense()),
            });
            let (eps, act) = (self.cfg.eps, self.cfg.activation);
            l.forward(&mut ws, &calib.lengths, (eps, act), &mut |_, _, _| {});
        }
        Ok(out)
    }

    /// Removes `spec.heads` of every layer's attention heads and `spec.neurons` of its FFN
    /// neurons, compacting the layers in place; `calib` (at least one token) is needed for
    /// [`UnitScore::Activation`]. Every encoder linear layer must be dense f32 (prune before
    /// quantizing); nothing changes when one is not.
    pub fn prune_structured(
        &mut self,
        calib: &TokenBatch,
        spec: &StructuredSpec,
    ) -> Result<Vec<StructuredReport>> {
        spec.validate()?;
        dense_linear_check(self)?;
        let calibrated = spec.score == UnitScore::Activation;
        if calibrated && calib.tokens() == 0 {
            return Err(no_calibration());
        }
        let mut ws = Workspace::default();
        if calibrated {
            self.embed(calib, &mut ws)?;
        }
        let mut reports = Vec::with_capacity(self.layers.len());
        for i in 0..self.layers.len() {
            let heads_before = self.layers[i].heads;
            let neurons_before = self.layers[i].intermediate.out_features();
            let mut report = StructuredReport {
                layer: i,
                heads_before,
                removed_heads: Vec::new(),
                neurons_before,
                neurons_after: neurons_before,
                head_score_removed: None,
                neuron_score_removed: None,
            };
            let n_heads = removals(spec.heads, heads_before);
            if n_heads > 0 {
                let (scores, mean) = if calibrated {
                    let st = self.unit_stats(i, &mut ws, calib, Sublayer::AttentionOutput);
                    let w = self.layers[i].attention_output.to_dense();
                    (st.output_change(&w), Some(st.means()))
                } else {
                    (magnitude_importance(&self.layers[i]).heads, None)
                };
                let keep = keep_top(&scores, n_heads);
                report.removed_heads = complement(&keep, heads_before);
                report.head_score_removed =
                    calibrated.then(|| removed_share(&scores, &report.removed_heads));
                self.keep_heads(i, &keep, mean.as_deref())?;
            }
            let n_neurons = removals(spec.neurons, neurons_before);
            if n_neurons > 0 {
                let (scores, mean) = if calibrated {
                    let st = self.unit_stats(i, &mut ws, calib, Sublayer::Output);
                    (
                        st.output_change(&self.layers[i].output.to_dense()),
                        Some(st.means()),
                    )
                } else {
                    (magnitude_importance(&self.layers[i]).neurons, None)
                };
                let keep = keep_top(&scores, n_neurons);
                report.neuron_score_removed =
                    calibrated.then(|| removed_share(&scores, &complement(&keep, neurons_before)));
                self.keep_neurons(i, &keep, mean.as_deref())?;
                report.neurons_after = keep.len();
            }
            if calibrated {
                // the next layer is scored on this layer's compacted outputs
                let (eps, act) = (self.cfg.eps, self.cfg.activation);
                self.layers[i].forward(&mut ws, &calib.lengths, (eps, act), &mut |_, _, _| {});
            }
            reports.push(report);
        }
        Ok(reports)
    }
}

fn no_calibration() -> Error {
    Error::BadConfig {
        reason:
            "activation-aware head and neuron scores need calibration sentences; none were given"
                .into(),
    }
}
