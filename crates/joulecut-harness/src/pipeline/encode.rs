//! Storage steps: how a weight is written (packed sparse, int8, f16/bf16). One packing rule and one
//! mapping from a `quantize` step to the quant crate's encoders, for `joulecut prune --pack` and the
//! bench's `pack` / `quantize` steps.

use joulecut_checkpoint::{DenseTensor, FloatType, SparseTensor, SparseValues, TensorData};
use joulecut_quant::ActivationGrid;

use super::step::{QuantTarget, Step};
use crate::Result;

/// Bytes of a tensor's payload as it would be written.
pub fn data_bytes(t: &TensorData) -> usize {
    match t {
        TensorData::Dense(d) => d.bytes.len(),
        TensorData::Sparse(s) => {
            s.bitmap.len()
                + match &s.values {
                    SparseValues::Float { bytes, .. } => bytes.len(),
                    SparseValues::Int8(q) => q.values.len() + 4 * q.scales.len(),
                }
        }
        TensorData::Int8(q) => {
            q.values.len() + 4 * (q.scales.len() + q.in_scales.as_ref().map_or(0, Vec::len))
        }
        _ => 0,
    }
}

/// The packed sparse encoding of a weight, when it pays: at least half its values are zero (below
/// that the sparse kernel loses to the dense one, so the variant would be slower for a few bytes)
/// and the bitmap plus the non-zeros are smaller than the dense bytes.
pub fn pack_if_pays(shape: &[usize], values: &[f32], dtype: FloatType) -> Option<TensorData> {
    let zeros = values.iter().filter(|v| **v == 0.0).count();
    if shape.len() < 2 || zeros * 2 < values.len() {
        return None;
    }
    let packed = TensorData::Sparse(SparseTensor::pack_f32(shape.to_vec(), values, dtype));
    let dense_bytes = values.len() * dtype.size();
    (data_bytes(&packed) < dense_bytes).then_some(packed)
}

/// The storage steps that give a retrained weight the float encoding `name` had in `ck`: packed
/// sparse (`[pack]`, then the values' half type if they were half) or dense f16/bf16. Empty for
/// dense f32 and for int8, which is a quantization decision to take again after training
/// (`joulecut quantize`, or QAT), not a storage detail to copy.
pub fn storage_steps_of(ck: &joulecut_checkpoint::Checkpoint, name: &str) -> Vec<Step> {
    let half = |dtype: &str| match dtype {
        "F16" => Some(QuantTarget::F16),
        "BF16" => Some(QuantTarget::Bf16),
        _ => None,
    };
    let cast = |t: QuantTarget| Step::Quantize {
        dtype: t,
        granularity: Default::default(),
        activations: None,
    };
    match ck.encodings().get(name) {
        Some(joulecut_checkpoint::TensorEncoding::Sparse { values, .. }) if values != "I8" => {
            std::iter::once(Step::Pack)
                .chain(half(values).map(cast))
                .collect()
        }
        Some(_) => Vec::new(),
        None => ck
            .stored_info(name)
            .ok()
            .and_then(|i| half(&i.dtype))
            .map(cast)
            .into_iter()
            .collect(),
    }
}

/// Applies the storage steps (pack, quantize) to one weight, in order. Tensors of rank < 2
/// (biases) stay dense f32.
pub fn encode(
    name: &str,
    shape: Vec<usize>,
    values: &[f32],
    storage: &[Step],
) -> Result<TensorData> {
    let mut data = TensorData::Dense(DenseTensor::from_f32(shape.clone(), values));
    if shape.len() < 2 {
        return Ok(data);
    }
    for s in storage {
        data = match s {
            Step::Pack if matches!(data, TensorData::Dense(_)) => {
                pack_if_pays(&shape, values, FloatType::F32).unwrap_or(data)
            }
            Step::Quantize {
                dtype: QuantTarget::Int8,
                granularity,
                ..
            } => {
                let cfg = joulecut_quant::Int8Config {
                    granularity: *granularity,
                    ..Default::default()
                };
                joulecut_quant::quantize_data(name, &data, &cfg)?
            }
            Step::Quantize { dtype, .. } => {
                let ft = if *dtype == QuantTarget::Bf16 {
                    FloatType::BF16
                } else {
                    FloatType::F16
                };
                joulecut_quant::cast_data(name, &data, ft)?
            }
            _ => data,
        };
    }
    Ok(data)
}

/// The int8 activation grid the storage steps ask the file to record, if they quantize to int8.
pub fn int8_activations(storage: &[Step]) -> Option<ActivationGrid> {
    storage.iter().rev().find_map(|s| match s {
        Step::Quantize {
            dtype: QuantTarget::Int8,
            activations,
            ..
        } => Some(activations.unwrap_or(ActivationGrid::RECOMMENDED)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_pays_only_from_half_zeros() {
        let mut v = vec![1.0f32; 64];
        v[..31].fill(0.0);
        assert!(pack_if_pays(&[8, 8], &v, FloatType::F32).is_none());
        v[31] = 0.0;
        let p = pack_if_pays(&[8, 8], &v, FloatType::F32).expect("half zeros pack");
        assert!(matches!(p, TensorData::Sparse(_)));
        assert!(data_bytes(&p) < 64 * 4);
        assert!(pack_if_pays(&[64], &[0.0; 64], FloatType::F32).is_none());
    }

    #[test]
    fn storage_steps_apply_in_order_and_leave_biases_dense() {
        let v: Vec<f32> = (0..64)
            .map(|i| if i % 4 == 0 { i as f32 } else { 0.0 })
            .collect();
        let steps: Vec<Step> = serde_json::from_str(
            r#"[{"op":"pack"},{"op":"quantize","dtype":"int8","activations":"u7"}]"#,
        )
        .unwrap();
        let t = encode("fc1.weight", vec![8, 8], &v, &steps).unwrap();
        assert!(
            matches!(&t, TensorData::Sparse(s) if matches!(s.values, SparseValues::Int8(_))),
            "{t:?}"
        );
        let b = encode("fc1.bias", vec![64], &v, &steps).unwrap();
        assert!(matches!(b, TensorData::Dense(_)));
        assert_eq!(int8_activations(&steps), Some(ActivationGrid::U7));
        assert_eq!(int8_activations(&steps[..1]), None);
    }
}
