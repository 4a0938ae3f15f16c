//! Activation-aware pruning of a BERT encoder, layer by layer: each encoder layer's four linear
//! layers are calibrated on the inputs they see when the calibration sentences run through the
//! layers before them *already pruned*, then pruned by magnitude, Wanda or SparseGPT
//! (`joulecut_prune::prune_layer`), and the pruned layer's outputs become the next layer's
//! calibration inputs — the sequential schedule of the SparseGPT and Wanda papers.

use joulecut_prune::{CalibratedSpec, InputStats, PruneStats, prune_layer};

use super::layer::Sublayer;
use super::{BertEncoder, TokenBatch, Workspace};
use crate::error::{Error, Result};

/// What pruning one linear layer did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SublayerReport {
    /// Encoder layer index.
    pub layer: usize,
    /// Which of its linear layers.
    pub sublayer: Sublayer,
    /// The Hugging Face module names it covers (query, key, value for [`Sublayer::Qkv`]).
    pub modules: Vec<String>,
    /// Zeros, sparsity, reconstruction error on the calibration inputs.
    pub stats: PruneStats,
}

fn prune_err(name: &str, e: joulecut_prune::Error) -> Error {
    Error::Layer {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

impl BertEncoder {
    /// Prunes every encoder linear layer in place by `spec`, calibrated on `calib` (which must hold
    /// at least one token when the method needs calibration). The layers must be dense f32
    /// (prune before quantizing).
    pub fn prune_calibrated(
        &mut self,
        calib: &TokenBatch,
        spec: &CalibratedSpec,
    ) -> Result<Vec<SublayerReport>> {
        self.prune_calibrated_observed(calib, spec, &mut |_, _| {})
    }

    /// [`BertEncoder::prune_calibrated`], calling `on_layer(layers done, layers)` after each
    /// encoder layer (progress: SparseGPT takes seconds per layer).
    pub fn prune_calibrated_observed(
        &mut self,
        calib: &TokenBatch,
        spec: &CalibratedSpec,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<SublayerReport>> {
        let needs = spec.method.needs_calibration();
        if needs && calib.tokens() == 0 {
            return Err(Error::BadConfig {
                reason: format!(
                    "{} needs calibration sentences; none were given",
                    spec.method
                ),
            });
        }
        let (h, eps, act) = (self.cfg.hidden, self.cfg.eps, self.cfg.activation);
        let t = calib.tokens();
        let mut ws = Workspace::default();
        if t > 0 {
            self.embed(calib, &mut ws)?;
        }
        let mut reports = Vec::new();
        let mut x_in = vec![0f32; t * h];
        let n_layers = self.layers.len();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            x_in.copy_from_slice(&ws.x[..t * h]);
            let mut stats: Vec<Option<InputStats>> = vec![None, None, None, None];
            if needs {
                let mut failed = None;
                layer.forward(&mut ws, &calib.lengths, (eps, act), &mut |s, x, rows| {
                    let slot = &mut stats[s as usize];
                    let st = slot.get_or_insert_with(|| {
                        let cols = x.len() / rows.max(1);
                        if spec.method.needs_gram() {
                            InputStats::new(cols)
                        } else {
                            InputStats::norms_only(cols)
                        }
                    });
                    if let Err(e) = st.add(x, rows) {
                        failed.get_or_insert(e);
                    }
                });
                if let Some(e) = failed {
                    return Err(prune_err(&format!("encoder.layer.{i}"), e));
                }
            }
            for s in Sublayer::ALL {
                let modules = s.modules(i);
                let lin = layer.linear_mut(s);
                let shape = [lin.out_features(), lin.in_features()];
                let st = stats[s as usize].as_ref();
                let Some(pruned) =
                    lin.with_dense_mut(|w| prune_layer(&modules[0], w, shape, st, spec))
                else {
                    return Err(Error::Layer {
                        name: modules[0].clone(),
                        reason: "is not dense f32; prune the original model, then quantize".into(),
                    });
                };
                let stats = pruned.map_err(|e| prune_err(&modules[0], e))?;
                reports.push(SublayerReport {
                    layer: i,
                    sublayer: s,
                    modules,
                    stats,
                });
            }
            if t > 0 {
                // the next layer calibrates on this layer's pruned outputs
                ws.x[..t * h].copy_from_slice(&x_in);
                layer.forward(&mut ws, &calib.lengths, (eps, act), &mut |_, _, _| {});
            }
            on_layer(i + 1, n_layers);
        }
        Ok(reports)
    }

    /// The dense f32 weights of every encoder linear layer as Hugging Face tensors
    /// (`….weight`, shape, values), the fused query/key/value split back into its three parts;
    /// layers on int8 or sparse kernels are decoded.
    pub fn linear_weights(&self) -> Vec<(String, [usize; 2], Vec<f32>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for s in Sublayer::ALL {
                let lin = l.linear(s);
                let modules = s.modules(i);
                let (rows, cols) = (lin.out_features() / modules.len(), lin.in_features());
                let w = lin.to_dense();
                for (m, part) in modules.iter().zip(w.chunks_exact(rows * cols)) {
                    out.push((format!("{m}.weight"), [rows, cols], part.to_vec()));
                }
            }
        }
        out
    }
}
