//! ONNX export of the models joulecut runs (any MLP, LeNet-300-100, LeNet-5): one `.onnx` file
//! whose graph takes the flat, normalised input rows joulecut's models take (`input`, F32
//! `[batch, features]`) and gives the logits (`logits`, F32 `[batch, classes]`). Dense F32 weights
//! are F32 initializers; int8 weights are stored as int8 and dequantized in the graph
//! (`DequantizeLinear`, per output channel with `axis = 0` where joulecut is per channel): the
//! QDQ form ONNX Runtime and tract recognise. The protobuf is written by prost from the ONNX
//! schema (`proto/onnx.proto`), atomically through joulecut-checkpoint's [`atomic_write`].
//!
//! ```no_run
//! # fn main() -> joulecut_interop::Result<()> {
//! joulecut_interop::onnx::export("lenet-int8.safetensors".as_ref(), "lenet-int8.onnx".as_ref())?;
//! # Ok(()) }
//! ```

mod arch;
mod graph;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use std::io::Write;
use std::path::{Path, PathBuf};

use joulecut_checkpoint::{
    Checkpoint, FloatType, TensorData, atomic_write, input::not_regular, refuse_input,
};
use prost::Message;

use arch::{Arch, CONV_PADDING, KERNEL, POOL};
use graph::{Attr, Graph};
use proto::tensor_proto::DataType;

use crate::{Error, Result};

/// Name of the graph's input (F32 `[batch, features]`, normalised as joulecut's datasets are).
pub const INPUT: &str = "input";
/// Name of the graph's output (F32 `[batch, classes]`).
pub const OUTPUT: &str = "logits";
/// The default-domain opset the graph uses (`DequantizeLinear` with `axis` needs 13).
pub const OPSET: i64 = 13;

const FORMAT: &str = "ONNX";

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The architecture (`mlp`, `lenet5`).
    pub arch: &'static str,
    /// Weights stored as int8 with a `DequantizeLinear`.
    pub int8: Vec<String>,
    /// Nodes in the graph.
    pub nodes: usize,
}

fn unsupported(tensor: &str, encoding: &str, reason: &str) -> Error {
    Error::Unsupported {
        tensor: tensor.to_string(),
        encoding: encoding.to_string(),
        format: FORMAT,
        reason: reason.to_string(),
        can: "ONNX export writes dense F32 tensors and int8 weights (per tensor or per output channel) \
              of joulecut's MLPs and LeNet-5; `joulecut decompress --f32` the model first, or \
              export it with --format compressed-tensors"
            .into(),
    }
}

/// The float name of weight `name` in the graph: an F32 initializer, or the output of a
/// `DequantizeLinear` of its int8 values.
fn weight(g: &mut Graph, ck: &Checkpoint, name: &str, int8: &mut Vec<String>) -> Result<String> {
    match ck.get(name)? {
        TensorData::Dense(d) if d.dtype == FloatType::F32 => {
            g.init(name, DataType::Float, &d.shape, d.bytes);
            Ok(name.to_string())
        }
        TensorData::Dense(d) => Err(unsupported(
            name,
            &format!("dense {}", d.dtype),
            "the graph computes in F32; half-precision weights would need a Cast joulecut does not write",
        )),
        TensorData::Int8(q) => {
            let per_channel = match q.axis {
                None => false,
                Some(0) => true,
                Some(a) => {
                    return Err(unsupported(
                        name,
                        &format!("int8 per-channel on axis {a}"),
                        "DequantizeLinear scales run along the output channels (axis 0) here",
                    ));
                }
            };
            let qname = format!("{name}_quantized");
            let sname = format!("{name}_scale");
            g.init(
                &qname,
                DataType::Int8,
                &q.shape,
                q.values.iter().map(|&v| v as u8).collect(),
            );
            let sdims: &[usize] = if per_channel { &[q.scales.len()] } else { &[] };
            g.init_f32(&sname, sdims, &q.scales);
            let mut inputs = vec![qname.clone(), sname];
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
            let attrs = if per_channel {
                vec![("axis", Attr::Int(0))]
            } else {
                vec![]
            };
            int8.push(name.to_string());
            Ok(g.node(
                "DequantizeLinear",
                &format!("{name}_dequantize"),
                &refs,
                attrs,
            ))
        }
        TensorData::Sparse(_) => Err(unsupported(
            name,
            "sparse",
            "ONNX runtimes execute no packed sparse weights (a dense copy would throw the saving away)",
        )),
        _ => Err(unsupported(name, "an encoding", "unknown encoding")),
    }
}

/// A bias: dense F32 only.
fn bias(g: &mut Graph, ck: &Checkpoint, name: &str) -> Result<String> {
    match ck.get(name)? {
        TensorData::Dense(d) if d.dtype == FloatType::F32 => {
            g.init(name, DataType::Float, &d.shape, d.bytes);
            Ok(name.to_string())
        }
        other => Err(unsupported(
            name,
            other.encoding_name(),
            "biases are exported as F32",
        )),
    }
}

/// Builds the graph of `arch` from the checkpoint's tensors.
fn build(ck: &Checkpoint, arch: &Arch) -> Result<(Graph, Vec<String>, usize)> {
    let mut g = Graph::default();
    let mut int8 = Vec::new();
    let mut h = INPUT.to_string();
    if let Arch::Lenet5 {
        in_channels, image, ..
    } = arch
    {
        let side = *image as i64;
        g.init(
            "image_shape",
            DataType::Int64,
            &[4],
            [-1, *in_channels as i64, side, side]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        );
        h = g.node("Reshape", "to_image", &[&h, "image_shape"], vec![]);
        for (i, pad) in CONV_PADDING.iter().enumerate() {
            let base = format!("conv{}", i + 1);
            let w = weight(&mut g, ck, &format!("{base}.weight"), &mut int8)?;
            let b = bias(&mut g, ck, &format!("{base}.bias"))?;
            let attrs = vec![
                ("kernel_shape", Attr::Ints(vec![KERNEL, KERNEL])),
                ("pads", Attr::Ints(vec![*pad; 4])),
            ];
            h = g.node("Conv", &base, &[&h, &w, &b], attrs);
            h = g.node("Relu", &format!("{base}_relu"), &[&h], vec![]);
            let pool = vec![
                ("kernel_shape", Attr::Ints(vec![POOL, POOL])),
                ("strides", Attr::Ints(vec![POOL, POOL])),
            ];
            h = g.node("MaxPool", &format!("{base}_pool"), &[&h], pool);
        }
        h = g.node("Flatten", "flatten", &[&h], vec![("axis", Attr::Int(1))]);
    }
    let n = arch.fc_layers();
    let mut classes = 0;
    for i in 1..=n {
        let base = format!("fc{i}");
        let wname = format!("{base}.weight");
        classes = ck
            .stored_info(&wname)
            .map(|s| s.shape[0])
            .or_else(|_| ck.get(&wname).map(|t| t.shape()[0]))?;
        let w = weight(&mut g, ck, &wname, &mut int8)?;
        let b = bias(&mut g, ck, &format!("{base}.bias"))?;
        h = g.node("Gemm", &base, &[&h, &w, &b], vec![("transB", Attr::Int(1))]);
        if i < n {
            h = g.node("Relu", &format!("{base}_relu"), &[&h], vec![]);
        }
    }
    g.rename_last_output(OUTPUT);
    Ok((g, int8, classes))
}

/// Exports a joulecut model file (one `.safetensors` with `joulecut.model`) to an ONNX file.
pub fn export(input: &Path, out: &Path) -> Result<Exported> {
    if let Some(kind) = not_regular(input) {
        return Err(Error::BadInput {
            path: input.to_path_buf(),
            reason: format!("it is {kind}"),
            hint: "ONNX export takes one joulecut model file (.safetensors): an MLP or LeNet-5"
                .into(),
        });
    }
    let ck = Checkpoint::open(input)?;
    let cfg = ck.model_config()?.ok_or_else(|| Error::BadInput {
        path: input.to_path_buf(),
        reason: "the file has no `joulecut.model`, so its architecture is unknown".into(),
        hint: "ONNX export takes models written by joulecut (train, prune, quantize, distill)"
            .into(),
    })?;
    let arch = Arch::from_json(&cfg).map_err(|e| Error::BadInput {
        path: input.to_path_buf(),
        reason: format!("`joulecut.model` is not an MLP or LeNet-5 ({e})"),
        hint: "ONNX export knows joulecut's MLPs and LeNet-5; transformers are exported with --format compressed-tensors".into(),
    })?;
    refuse_input(out, &[input])?;
    let (g, int8, classes) = build(&ck, &arch)?;
    let nodes = g.nodes.len();
    let model = graph::model(
        g.finish(INPUT, arch.input_features(), OUTPUT, classes),
        OPSET,
    );
    let bytes = model.encode_to_vec();
    let written = atomic_write(out, |f| f.write_all(&bytes))?;
    Ok(Exported {
        path: out.to_path_buf(),
        bytes: written,
        arch: match arch {
            Arch::Mlp { .. } => "mlp",
            Arch::Lenet5 { .. } => "lenet5",
        },
        int8,
        nodes,
    })
}
