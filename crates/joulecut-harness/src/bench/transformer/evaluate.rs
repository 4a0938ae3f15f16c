//! Evaluating one model directory as `joulecut eval-embeddings` does: the evaluation sentences
//! embedded through joulecut's kernels inside an energy window, then the embeddings compared with
//! the baseline's (cosine, nearest-neighbour agreement).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use joulecut_embed::{EncodeConfig, Engine, Precision, SentenceEncoder, kernel_saves_compute};
use joulecut_energy::{Measurement, Meter};
use joulecut_models::bert::TensorSource;

use super::config::EmbedEvalConfig;
use super::result::LayerKernel;
use crate::Result;

/// One model's run over the evaluation sentences.
pub(super) struct Embedded {
    /// Embeddings of the first pass, in sentence order.
    pub embeddings: Vec<Vec<f32>>,
    /// Sentences/s over every pass in the window.
    pub sentences_per_second: f64,
    /// The window.
    pub energy: Measurement,
    /// Sentences embedded inside the window.
    pub sentences: usize,
    /// Bytes of the weight files.
    pub bytes: u64,
    /// The kernel of every linear layer.
    pub layers: Vec<LayerKernel>,
    /// Zeros over the linear weights.
    pub weight_sparsity: f64,
    /// Weights of the encoder's linear layers (fewer when heads or neurons were removed).
    pub linear_params: usize,
}

impl Embedded {
    /// Linear layers per kernel.
    pub fn kernels(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in &self.layers {
            *m.entry(l.kernel.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Whether the model runs differently from `base`: a compressed kernel (or dense products in
    /// half precision) runs some layer, or its layers are physically smaller.
    pub fn real_against(&self, base: &Embedded) -> bool {
        self.layers.iter().any(|l| kernel_saves_compute(&l.kernel))
            || self.linear_params < base.linear_params
    }

    /// Joules per 1,000 sentences.
    pub fn joules_per_1000(&self) -> f64 {
        self.energy.total().0 * 1000.0 / self.sentences.max(1) as f64
    }
}

/// Loads `dir` on `device` (joulecut's kernels on the CPU, the portable engine elsewhere: the
/// baseline in f32 whatever its storage, a variant as stored) and embeds `sentences`: one warm-up batch outside the window (first-touch allocation is not the
/// model's cost), then at least `cfg.repeats` passes, more until the window spans the meter's
/// shortest trustworthy window.
pub(super) fn embed(
    dir: &Path,
    sentences: &[String],
    cfg: &EmbedEvalConfig,
    meter: &Meter,
    label: &str,
    device: &Device,
    baseline: bool,
) -> Result<Embedded> {
    let engine = Engine::for_device(device);
    let precision = (baseline && engine == Engine::Portable).then_some(Precision::F32);
    let enc = SentenceEncoder::load_opts(dir, device, engine, precision)?;
    let layers: Vec<LayerKernel> = enc
        .kernels()
        .into_iter()
        .map(|(name, kernel)| LayerKernel { name, kernel })
        .collect();
    let count = |w: &[f32]| (w.iter().filter(|x| **x == 0.0).count(), w.len());
    // joulecut's engine holds the weights as its kernels see them; the portable engine keeps
    // them on the device, so they are decoded once more from the file
    let counts: Vec<(usize, usize)> = match enc.native() {
        Some(n) => n
            .linear_weights()
            .iter()
            .map(|(_, _, v)| count(v))
            .collect(),
        None => {
            let src = enc.tensors();
            let mut c = Vec::with_capacity(layers.len());
            for l in &layers {
                c.push(count(&src.tensor(&format!("{}.weight", l.name))?.to_f32()));
            }
            c
        }
    };
    let (zeros, total) = counts
        .iter()
        .fold((0, 0), |(z, t), (cz, ct)| (z + cz, t + ct));
    let ecfg = EncodeConfig {
        batch_size: cfg.batch_size,
    };
    enc.encode(&sentences[..cfg.batch_size.min(sentences.len())], &ecfg)?;
    let min_window = meter.min_window();
    let (res, energy) = meter.measure(label, || -> Result<_> {
        let t = Instant::now();
        let first = enc.encode(sentences, &ecfg)?;
        let mut passes = 1;
        while passes < cfg.repeats || t.elapsed() < min_window {
            enc.encode(sentences, &ecfg)?;
            passes += 1;
        }
        Ok((first, passes, t.elapsed()))
    });
    let (embeddings, passes, elapsed) = res?;
    let n = sentences.len() * passes;
    Ok(Embedded {
        embeddings,
        sentences_per_second: n as f64 / elapsed.as_secs_f64(),
        energy,
        sentences: n,
        bytes: enc.weight_bytes(),
        layers,
        weight_sparsity: zeros as f64 / total.max(1) as f64,
        linear_params: enc.linear_params(),
    })
}
