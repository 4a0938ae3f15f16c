//! One linear layer of a transformer, `y = x · Wᵀ + b` on raw row-major slices, run by the kernel
//! its stored encoding calls for ([`RealKernels::route`]): dense f32 through the `gemm` crate,
//! int8 through joulecut-quant's integer GEMM, packed sparse through joulecut-prune's CSR kernel.

use joulecut_checkpoint::{Int8Tensor, SparseValues, TensorData};
use joulecut_ops::{MatRef, matmul_f32};
use joulecut_prune::{CsrMatrix, SparseLinear};
use joulecut_quant::{ActivationQuant, Int8Linear};

use crate::error::{Error, Result};
use crate::kernels::{Kernel, RealKernels, Route};

/// Multiply-adds below which a dense product runs on the calling thread.
const PAR_MACS: usize = 1 << 18;

/// The kernel a [`LinearOp`] runs on, as reports name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinearKind {
    /// Dense f32 GEMM (the original, or a compressed encoding decoded at load: a nominal saving).
    Dense,
    /// The int8 GEMM.
    Int8,
    /// The CSR sparse kernel.
    Sparse,
}

/// A linear layer on one of joulecut's kernels.
#[derive(Debug, Clone)]
pub enum LinearOp {
    /// Dense f32 weights, stored transposed (`[in, out]` row-major): the GEMM then reads them
    /// in place at small batches instead of repacking them on every call.
    Dense {
        /// The weights, `[in, out]`.
        weight_t: Vec<f32>,
        /// The bias (`out` values), if any.
        bias: Option<Vec<f32>>,
        /// Output features.
        out: usize,
        /// Input features.
        inp: usize,
    },
    /// int8 weights through the integer GEMM (bias fused into its epilogue).
    Int8(Int8Linear),
    /// CSR weights through the sparse kernel.
    Sparse(SparseLinear),
}

fn layer_err(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Layer {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

impl LinearOp {
    /// A dense f32 layer.
    ///
    /// # Panics
    /// When `weight.len() != out · inp` or the bias is not `out` long.
    pub fn dense(weight: Vec<f32>, bias: Option<Vec<f32>>, out: usize, inp: usize) -> LinearOp {
        assert_eq!(weight.len(), out * inp, "dense weight size");
        assert!(bias.as_ref().is_none_or(|b| b.len() == out), "bias size");
        LinearOp::Dense {
            weight_t: transpose(&weight, out, inp),
            bias,
            out,
            inp,
        }
    }

    /// Builds the layer for stored weights `ws` (stacked along the output dimension, as the query,
    /// key and value projections are fused into one product) and their biases. The stored
    /// encodings pick the kernel; parts that disagree are decoded to dense f32 together.
    pub fn from_parts(
        name: &str,
        ws: &[&TensorData],
        biases: &[Option<Vec<f32>>],
        kernels: &RealKernels,
    ) -> Result<LinearOp> {
        let inp = ws[0].shape().get(1).copied().unwrap_or(0);
        for w in ws {
            if w.shape().len() != 2 || w.shape()[1] != inp {
                return Err(layer_err(
                    name,
                    format!("weight shape {:?} is not [out, {inp}]", w.shape()),
                ));
            }
        }
        let out: usize = ws.iter().map(|w| w.shape()[0]).sum();
        let bias = if biases.iter().all(Option::is_none) {
            None
        } else {
            let mut b = Vec::with_capacity(out);
            for (w, bi) in ws.iter().zip(biases) {
                match bi {
                    Some(v) if v.len() == w.shape()[0] => b.extend_from_slice(v),
                    Some(v) => {
                        return Err(layer_err(
                            name,
                            format!("bias has {} values for {} outputs", v.len(), w.shape()[0]),
                        ));
                    }
                    None => b.extend(std::iter::repeat_n(0.0, w.shape()[0])),
                }
            }
            Some(b)
        };
        let mut routes: Vec<Route> = ws.iter().map(|w| kernels.route(w, false, true)).collect();
        // Parts fused into one product are judged together: packed float parts whose combined
        // density suits the sparse kernel run on it even if one part alone is a little denser.
        let packed_float = |w: &&TensorData| matches!(w, TensorData::Sparse(s) if matches!(s.values, SparseValues::Float { .. }));
        if ws.len() > 1 && ws.iter().all(packed_float) {
            let nnz: usize = ws
                .iter()
                .map(|w| match w {
                    TensorData::Sparse(s) => s.nnz(),
                    _ => 0,
                })
                .sum();
            if nnz as f64 <= kernels.max_sparse_density * (out * inp) as f64 {
                routes.fill(Route::Kernel(Kernel::Sparse));
            }
        }
        let same = routes.windows(2).all(|p| p[0] == p[1]);
        match (routes[0], same) {
            (Route::Kernel(Kernel::Int8), true) => {
                let l = if let [w] = ws {
                    Int8Linear::from_data(name, w, bias.as_deref())
                } else {
                    Int8Linear::new(name, &stack_int8(name, ws)?, bias.as_deref())
                };
                let l = l.map_err(|e| layer_err(name, e))?;
                Ok(LinearOp::Int8(
                    l.with_activation_quant(kernels.int8_activations.mode()),
                ))
            }
            (Route::Kernel(Kernel::Sparse), true) => {
                let dense = stack_f32(ws);
                let csr =
                    CsrMatrix::from_dense(out, inp, &dense).map_err(|e| layer_err(name, e))?;
                let l = SparseLinear::new(csr, bias).map_err(|e| layer_err(name, e))?;
                Ok(LinearOp::Sparse(l))
            }
            _ => Ok(LinearOp::dense(stack_f32(ws), bias, out, inp)),
        }
    }

    /// Which kernel runs this layer.
    pub fn kind(&self) -> LinearKind {
        match self {
            LinearOp::Dense { .. } => LinearKind::Dense,
            LinearOp::Int8(_) => LinearKind::Int8,
            LinearOp::Sparse(_) => LinearKind::Sparse,
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        match self {
            LinearOp::Dense { out, .. } => *out,
            LinearOp::Int8(l) => l.out_features(),
            LinearOp::Sparse(l) => l.out_features(),
        }
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        match self {
            LinearOp::Dense { inp, .. } => *inp,
            LinearOp::Int8(l) => l.in_features(),
            LinearOp::Sparse(l) => l.in_features(),
        }
    }

    /// Sets how an int8 layer quantizes its input; other kinds ignore it.
    pub fn set_activation_quant(&mut self, mode: ActivationQuant) {
        if let LinearOp::Int8(l) = self {
            *l = l.clone().with_activation_quant(mode);
        }
    }

    /// `out[m, out] = x[m, in] · Wᵀ + b`. The int8 and sparse kernels add the bias themselves;
    /// the dense path adds it when `with_bias`, else leaves it for the caller to fuse into its
    /// next pass (see [`LinearOp::pending_bias`]).
    ///
    /// # Panics
    /// When the slices do not hold `m` rows of the layer's widths.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32], with_bias: bool) {
        match self {
            LinearOp::Dense {
                weight_t,
                bias,
                out: n,
                inp: k,
            } => {
                let (n, k) = (*n, *k);
                assert_eq!(x.len(), m * k, "input rows");
                assert_eq!(out.len(), m * n, "output rows");
                let threads = if m * n * k >= PAR_MACS {
                    joulecut_ops::pool_threads()
                } else {
                    1
                };
                // out (row-major [m, n]) is column-major [n, m]: out = W · xᵀ
                matmul_f32(
                    (n, m, k),
                    out,
                    n,
                    false,
                    MatRef::new(weight_t, n, 1),
                    MatRef::new(x, k, 1),
                    threads,
                );
                if let (true, Some(b)) = (with_bias, bias) {
                    for row in out.chunks_exact_mut(n) {
                        for (y, &b) in row.iter_mut().zip(b) {
                            *y += b;
                        }
                    }
                }
            }
            LinearOp::Int8(l) => l.forward_into(x, m, out),
            LinearOp::Sparse(l) => l.weight().matmul_into(x, m, l.bias(), out),
        }
    }

    /// The bias [`LinearOp::forward`] leaves out when `with_bias` is false (dense layers only).
    pub fn pending_bias(&self) -> Option<&[f32]> {
        match self {
            LinearOp::Dense { bias, .. } => bias.as_deref(),
            _ => None,
        }
    }

    /// Runs `f` on the dense weights (`[out, in]` row-major) and keeps what it leaves there, for
    /// calibrated compression; `None` for int8 and sparse layers.
    pub fn with_dense_mut<R>(&mut self, f: impl FnOnce(&mut [f32]) -> R) -> Option<R> {
        match self {
            LinearOp::Dense {
                weight_t, out, inp, ..
            } => {
                let mut w = transpose(weight_t, *inp, *out);
                let r = f(&mut w);
                *weight_t = transpose(&w, *out, *inp);
                Some(r)
            }
            _ => None,
        }
    }

    /// The weights as dense f32 `[out, in]` (decoded from whatever kernel holds them).
    pub fn to_dense(&self) -> Vec<f32> {
        match self {
            LinearOp::Dense {
                weight_t, out, inp, ..
            } => transpose(weight_t, *inp, *out),
            LinearOp::Int8(l) => l.dequantized_weight(),
            LinearOp::Sparse(l) => l.weight().to_dense(),
        }
    }
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    for (r, row) in a.chunks_exact(cols.max(1)).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

fn stack_f32(ws: &[&TensorData]) -> Vec<f32> {
    let mut v = Vec::with_capacity(
        ws.iter()
            .map(|w| joulecut_checkpoint::numel(w.shape()))
            .sum(),
    );
    for w in ws {
        v.extend_from_slice(&w.to_f32());
    }
    v
}

/// Stacks int8 weights along the output dimension with per-output-channel scales (a per-tensor
/// scale becomes one scale per row), so the fused product keeps each part's grid.
fn stack_int8(name: &str, ws: &[&TensorData]) -> Result<Int8Tensor> {
    let mut values = Vec::new();
    let mut scales = Vec::new();
    let mut zeros: Vec<i32> = Vec::new();
    let mut any_zero = false;
    let mut orig = None;
    for w in ws {
        let TensorData::Int8(t) = w else {
            return Err(layer_err(name, "a part is not a dense int8 tensor"));
        };
        let rows = t.shape[0];
        values.extend_from_slice(&t.values);
        let per_row = |v: &[f32]| -> Vec<f32> {
            if v.len() == 1 {
                vec![v[0]; rows]
            } else {
                v.to_vec()
            }
        };
        if t.axis.is_some_and(|a| a != 0) {
            return Err(layer_err(name, "int8 scales along the input axis"));
        }
        scales.extend(per_row(&t.scales));
        match &t.zero_points {
            Some(z) => {
                any_zero = true;
                zeros.extend(if z.len() == 1 {
                    vec![z[0]; rows]
                } else {
                    z.clone()
                });
            }
            None => zeros.extend(std::iter::repeat_n(0, rows)),
        }
        orig = Some(t.orig_dtype);
    }
    // One product quantizes one input row: its parts must agree on how that row is smoothed.
    let in_scales = match ws[0] {
        TensorData::Int8(t) => t.in_scales.clone(),
        _ => None,
    };
    if ws
        .iter()
        .any(|w| !matches!(w, TensorData::Int8(t) if t.in_scales == in_scales))
    {
        return Err(layer_err(
            name,
            "the fused parts carry different input scales (smoothing); quantize them together",
        ));
    }
    let out = scales.len();
    let inp = ws[0].shape()[1];
    Ok(Int8Tensor {
        shape: vec![out, inp],
        values,
        scales,
        zero_points: any_zero.then_some(zeros),
        axis: Some(0),
        orig_dtype: orig.expect("at least one part"),
        in_scales,
    })
}

#[cfg(test)]
mod tests {
    use joulecut_checkpoint::{DenseTensor, FloatType, SparseTensor};

    use super::*;

    fn weight(rows: usize, cols: usize, zero_every: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                if i % zero_every == 0 {
                    0.0
                } else {
                    (i as f32 * 0.37).sin()
                }
            })
            .collect()
    }

    fn packed(rows: usize, cols: usize, v: &[f32]) -> TensorData {
        TensorData::Sparse(SparseTensor::pack_f32(vec![rows, cols], v, FloatType::F32))
    }

    /// Fused parts are routed together: packed parts whose combined density suits the sparse
    /// kernel run on it though one alone is denser than half; a dense part sends all to dense f32;
    /// every route computes the same product.
    #[test]
    fn fused_parts_route_together_and_agree() {
        let (r, c) = (8, 12);
        let sparse_a = weight(r, c, 1); // all zero
        let dense_b = weight(r, c, 4); // 25% zero: denser than half
        let parts = [packed(r, c, &sparse_a), packed(r, c, &dense_b)];
        let k = RealKernels::default();
        let bias = [Some(vec![0.5; r]), None];
        let op = LinearOp::from_parts("qkv", &[&parts[0], &parts[1]], &bias, &k).unwrap();
        assert_eq!(op.kind(), LinearKind::Sparse);
        let mixed = [
            packed(r, c, &sparse_a),
            TensorData::Dense(DenseTensor::from_f32(vec![r, c], &dense_b)),
        ];
        let op2 = LinearOp::from_parts("qkv", &[&mixed[0], &mixed[1]], &bias, &k).unwrap();
        assert_eq!(op2.kind(), LinearKind::Dense);
        let x: Vec<f32> = (0..3 * c).map(|i| (i as f32 * 0.11).cos()).collect();
        let (mut y1, mut y2) = (vec![0f32; 3 * 2 * r], vec![0f32; 3 * 2 * r]);
        op.forward(&x, 3, &mut y1, true);
        op2.forward(&x, 3, &mut y2, true);
        for (a, b) in y1.iter().zip(&y2) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // the first part's bias, zeros for the second
        assert!((y1[0] - 0.5).abs() < 1e-6 && y1[r].abs() > 0.0);
        assert_eq!(op.to_dense()[r * c..], dense_b[..]);
    }
}
