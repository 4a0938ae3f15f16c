//! Compaction of an encoder layer: attention heads and FFN neurons removed, so every tensor they
//! touched is physically smaller and the dense kernels do proportionally less work.
//!
//! Removing head `h` drops its `d` rows from each of the query, key and value projections (and
//! their biases) and the matching `d` input columns of `attention.output.dense`; removing FFN
//! neuron `j` drops row `j` of `intermediate.dense` (and its bias entry) and input column `j` of
//! `output.dense`. When the mean of a removed unit's output over calibration tokens is known, its
//! mean contribution `W[:, j] · x̄_j` is folded into the next layer's bias (FLAP's bias
//! compensation), so only the unit's fluctuation around its mean is lost.

use super::BertEncoder;
use super::layer::Sublayer;
use super::linear::LinearOp;
use crate::error::{Error, Result};

/// A tensor by name: shape and row-major f32 values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

fn layer_err(name: String, reason: impl Into<String>) -> Error {
    Error::Layer {
        name,
        reason: reason.into(),
    }
}

/// A dense layer's weights `[out, in]` and bias (zeros when it has none).
fn dense_parts(lin: &LinearOp, name: &str) -> Result<(Vec<f32>, Vec<f32>)> {
    match lin {
        LinearOp::Dense { bias, out, .. } => Ok((
            lin.to_dense(),
            bias.clone().unwrap_or_else(|| vec![0.0; *out]),
        )),
        _ => Err(not_dense(name)),
    }
}

fn not_dense(name: &str) -> Error {
    layer_err(
        name.to_string(),
        "is not dense f32; remove heads and neurons from the original model, then quantize or pack",
    )
}

/// Checks that every encoder linear layer is dense f32, naming the first that is not.
pub(super) fn dense_linear_check(enc: &BertEncoder) -> Result<()> {
    for (i, l) in enc.layers.iter().enumerate() {
        for s in Sublayer::ALL {
            if !matches!(l.linear(s), LinearOp::Dense { .. }) {
                return Err(not_dense(&s.modules(i)[0]));
            }
        }
    }
    Ok(())
}

/// Rows `rows` of `w` (`[_, cols]` row-major).
fn take_rows(w: &[f32], cols: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * cols);
    for &r in rows {
        out.extend_from_slice(&w[r * cols..(r + 1) * cols]);
    }
    out
}

/// Columns `keep` of `w` (`[rows, cols]` row-major).
fn take_cols(w: &[f32], cols: usize, keep: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(w.len() / cols.max(1) * keep.len());
    for row in w.chunks_exact(cols) {
        out.extend(keep.iter().map(|&c| row[c]));
    }
    out
}

/// `bias[r] += Σ_{c ∉ keep} w[r, c] · mean[c]`: the removed inputs' mean contribution.
fn fold_means(bias: &mut [f32], w: &[f32], cols: usize, keep: &[usize], mean: &[f32]) {
    let mut kept = vec![false; cols];
    keep.iter().for_each(|&c| kept[c] = true);
    for (b, row) in bias.iter_mut().zip(w.chunks_exact(cols)) {
        let add: f64 = (0..cols)
            .filter(|&c| !kept[c])
            .map(|c| f64::from(row[c]) * f64::from(mean[c]))
            .sum();
        *b = (f64::from(*b) + add) as f32;
    }
}

/// Checks that `keep` is strictly ascending, inside `0..count` and not empty.
fn check_keep(name: String, what: &str, keep: &[usize], count: usize) -> Result<()> {
    if keep.is_empty() {
        return Err(layer_err(
            name,
            format!("would keep no {what}; at least one must stay"),
        ));
    }
    if keep.windows(2).any(|p| p[0] >= p[1]) || keep.last().is_some_and(|&k| k >= count) {
        return Err(layer_err(
            name,
            format!("{what} to keep must be ascending indices below {count}, got {keep:?}"),
        ));
    }
    Ok(())
}

/// Expands kept units of width `width` into their column indices.
fn unit_columns(keep: &[usize], width: usize) -> Vec<usize> {
    keep.iter()
        .flat_map(|&u| u * width..(u + 1) * width)
        .collect()
}

impl BertEncoder {
    /// Keeps only the attention heads `keep` of encoder layer `layer` (ascending indices into its
    /// current heads, at least one). `context_mean` — the mean attention context over calibration
    /// tokens, `heads · head_dim` values — folds the removed heads' mean contribution into the
    /// output projection's bias. The layer's four linear layers must be dense f32.
    pub fn keep_heads(
        &mut self,
        layer: usize,
        keep: &[usize],
        context_mean: Option<&[f32]>,
    ) -> Result<()> {
        let name = format!("encoder.layer.{layer}.attention");
        let l = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| layer_err(name.clone(), "no such layer"))?;
        check_keep(name.clone(), "attention heads", keep, l.heads)?;
        let (d, w) = (l.head_dim, l.heads * l.head_dim);
        if context_mean.is_some_and(|m| m.len() != w) {
            return Err(layer_err(
                name,
                format!("context mean has the wrong length (want {w})"),
            ));
        }
        let modules = Sublayer::Qkv.modules(layer);
        let (qkv, qkv_b) = dense_parts(&l.qkv, &modules[0])?;
        let ao_name = &Sublayer::AttentionOutput.modules(layer)[0];
        let (ao, mut ao_b) = dense_parts(&l.attention_output, ao_name)?;
        let hidden = l.qkv.in_features();
        let cols = unit_columns(keep, d);
        // query, key and value blocks each keep the same head rows
        let rows: Vec<usize> = (0..3)
            .flat_map(|p| cols.iter().map(move |&c| p * w + c))
            .collect();
        let qkv_w = take_rows(&qkv, hidden, &rows);
        let qkv_bias = rows.iter().map(|&r| qkv_b[r]).collect();
        if let Some(mean) = context_mean {
            fold_means(&mut ao_b, &ao, w, &cols, mean);
        }
        let ao_w = take_cols(&ao, w, &cols);
        let out = l.attention_output.out_features();
        l.qkv = LinearOp::dense(qkv_w, Some(qkv_bias), rows.len(), hidden);
        l.attention_output = LinearOp::dense(ao_w, Some(ao_b), out, cols.len());
        l.heads = keep.len();
        Ok(())
    }

    /// Keeps only the FFN neurons `keep` of encoder layer `layer` (ascending indices into its
    /// current `intermediate.dense` rows, at least one). `ffn_mean` — the mean activation of each
    /// neuron over calibration tokens — folds the removed neurons' mean contribution into
    /// `output.dense`'s bias. Both FFN layers must be dense f32.
    pub fn keep_neurons(
        &mut self,
        layer: usize,
        keep: &[usize],
        ffn_mean: Option<&[f32]>,
    ) -> Result<()> {
        let name = format!("encoder.layer.{layer}.intermediate");
        let l = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| layer_err(name.clone(), "no such layer"))?;
        let inter = l.intermediate.out_features();
        check_keep(name.clone(), "FFN neurons", keep, inter)?;
        if ffn_mean.is_some_and(|m| m.len() != inter) {
            return Err(layer_err(
                name,
                format!("FFN mean has the wrong length (want {inter})"),
            ));
        }
        let (wi, bi) = dense_parts(&l.intermediate, &Sublayer::Intermediate.modules(layer)[0])?;
        let (wo, mut bo) = dense_parts(&l.output, &Sublayer::Output.modules(layer)[0])?;
        let hidden = l.intermediate.in_features();
        if let Some(mean) = ffn_mean {
            fold_means(&mut bo, &wo, inter, keep, mean);
        }
        let wi = take_rows(&wi, hidden, keep);
        let bi = keep.iter().map(|&r| bi[r]).collect();
        let wo = take_cols(&wo, inter, keep);
        let out = l.output.out_features();
        l.intermediate = LinearOp::dense(wi, Some(bi), keep.len(), hidden);
        l.output = LinearOp::dense(wo, Some(bo), out, keep.len());
        Ok(())
    }

    /// Weights and biases of every encoder linear layer as Hugging Face tensors (`….weight`
    /// `[out, in]`, `….bias` `[out]`), the fused query/key/value split back into its three
    /// parts: what a compacted model writes. Every layer must be dense f32.
    pub fn dense_linear_tensors(&self) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for s in Sublayer::ALL {
                let modules = s.modules(i);
                let lin = l.linear(s);
                let (w, b) = dense_parts(lin, &modules[0])?;
                let (rows, cols) = (lin.out_features() / modules.len(), lin.in_features());
                let parts = w.chunks_exact(rows * cols).zip(b.chunks_exact(rows));
                for (m, (pw, pb)) in modules.iter().zip(parts) {
                    out.push((format!("{m}.weight"), vec![rows, cols], pw.to_vec()));
                    out.push((format!("{m}.bias"), vec![rows], pb.to_vec()));
                }
            }
        }
        Ok(out)
    }
}
