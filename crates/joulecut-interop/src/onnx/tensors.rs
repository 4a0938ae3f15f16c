//! Stored tensors as graph values: F32 initializers, or int8 initializers behind a
//! `DequantizeLinear` (per tensor, or per channel along the stored axis) — the QDQ weight form
//! ONNX Runtime and tract recognise.

use joulecut_checkpoint::{FloatType, Int8Tensor, TensorData};

use super::graph::{Attr, Graph};
use super::proto::tensor_proto::DataType;
use super::unsupported;
use crate::Result;

/// How a tensor enters the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// As stored (`Gemm` with `transB`, `Conv`, `Gather`, LayerNorm vectors).
    AsStored,
    /// A 2-D `[out, in]` weight stored as `[in, out]`, the right operand of a `MatMul`; a
    /// per-channel scale axis moves with it (output channels: axis 1).
    Transposed,
}

/// What happens to F16/BF16 tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Half {
    /// Refused (joulecut's MLPs and LeNet-5: the graph computes in F32).
    Refuse,
    /// Widened to F32 at export (exact: what joulecut's loader decodes them to).
    Widen,
}

/// A float value of the graph.
#[derive(Debug, Clone)]
pub(crate) struct Value {
    /// Its name in the graph (an initializer, or a `DequantizeLinear` output).
    pub name: String,
    /// Stored as int8.
    pub int8: bool,
    /// Smoothed int8 (`Int8Tensor::in_scales`): the name for the `[in]` initializer the layer's
    /// input is multiplied by before the product, and its values. [`smoothed_input`] writes it, so
    /// parts sharing one input (query, key, value) store it once.
    pub in_scale: Option<(String, Vec<f32>)>,
}

/// `x` as the input of a layer with weight `w`: multiplied by the weight's input scales when it
/// is smoothed (what joulecut's int8 layer does before quantizing the row; exact in F32 too, as
/// `(x ⊙ c) · Wₛᵀ = x · (Wₛ ⊙ c)ᵀ`).
pub(crate) fn smoothed_input(g: &mut Graph, x: &str, w: &Value, base: &str) -> String {
    match &w.in_scale {
        Some((name, values)) => {
            g.init_f32(name, &[values.len()], values);
            g.node("Mul", &format!("{base}_smooth"), &[x, name], vec![])
        }
        None => x.to_string(),
    }
}

fn transpose<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for c in 0..cols {
        out.extend((0..rows).map(|r| v[r * cols + c]));
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Adds tensor `name` (stored as `t`) to the graph as an F32 value.
pub(crate) fn float_value(
    g: &mut Graph,
    name: &str,
    t: TensorData,
    layout: Layout,
    half: Half,
) -> Result<Value> {
    let matrix = |shape: &[usize]| -> Result<(usize, usize)> {
        match shape {
            [r, c] => Ok((*r, *c)),
            _ => Err(unsupported(
                name,
                &format!("a {}-D tensor", shape.len()),
                "a linear weight must be a 2-D [out, in] matrix",
            )),
        }
    };
    match t {
        TensorData::Dense(d) if d.dtype == FloatType::F32 || half == Half::Widen => {
            let (shape, bytes) = match layout {
                Layout::AsStored if d.dtype == FloatType::F32 => (d.shape.clone(), d.bytes),
                Layout::AsStored => (d.shape.clone(), f32_bytes(&d.to_f32())),
                Layout::Transposed => {
                    let (r, c) = matrix(&d.shape)?;
                    (vec![c, r], f32_bytes(&transpose(&d.to_f32(), r, c)))
                }
            };
            g.init(name, DataType::Float, &shape, bytes);
            Ok(Value {
                name: name.to_string(),
                int8: false,
                in_scale: None,
            })
        }
        TensorData::Dense(d) => Err(unsupported(
            name,
            &format!("dense {}", d.dtype),
            "the graph computes in F32; half-precision weights would need a Cast joulecut does not write",
        )),
        TensorData::Int8(q) => int8_value(g, name, q, layout, matrix),
        TensorData::Sparse(_) => Err(unsupported(
            name,
            "sparse",
            "ONNX runtimes execute no packed sparse weights (a dense copy would throw the saving away)",
        )),
        _ => Err(unsupported(name, "an encoding", "unknown encoding")),
    }
}

fn int8_value(
    g: &mut Graph,
    name: &str,
    q: Int8Tensor,
    layout: Layout,
    matrix: impl Fn(&[usize]) -> Result<(usize, usize)>,
) -> Result<Value> {
    let (shape, values, axis) = match layout {
        Layout::AsStored => (q.shape.clone(), q.values, q.axis),
        Layout::Transposed => {
            let (r, c) = matrix(&q.shape)?;
            // axis 0 (rows of [out, in]) is axis 1 of [in, out], and the other way round
            (
                vec![c, r],
                transpose(&q.values, r, c),
                q.axis.map(|a| 1 - a),
            )
        }
    };
    let in_scale = q.in_scales.map(|f| (format!("{name}_in_scale"), f));
    let qname = format!("{name}_quantized");
    let sname = format!("{name}_scale");
    g.init(
        &qname,
        DataType::Int8,
        &shape,
        values.iter().map(|&v| v as u8).collect(),
    );
    let sdims: &[usize] = if axis.is_some() {
        &[q.scales.len()]
    } else {
        &[]
    };
    g.init_f32(&sname, sdims, &q.scales);
    let mut inputs = vec![qname, sname];
    if let Some(zp) = &q.zero_points {
        let bytes = zp
            .iter()
            .map(|&z| i8::try_from(z).map(|z| z as u8))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| {
                unsupported(
                    name,
                    "int8 with zero-points",
                    "a zero-point does not fit in int8",
                )
            })?;
        let zname = format!("{name}_zero_point");
        g.init(&zname, DataType::Int8, sdims, bytes);
        inputs.push(zname);
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let attrs = match axis {
        Some(a) => vec![("axis", Attr::Int(a as i64))],
        None => vec![],
    };
    let out = g.node(
        "DequantizeLinear",
        &format!("{name}_dequantize"),
        &refs,
        attrs,
    );
    Ok(Value {
        name: out,
        int8: true,
        in_scale,
    })
}
