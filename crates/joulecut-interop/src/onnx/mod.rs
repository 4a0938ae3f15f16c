//! ONNX export of the models joulecut runs: one `.onnx` file, default-domain opset 17.
//!
//! - **MLPs and LeNet-5** (one joulecut `.safetensors` file): input `input` (F32 `[batch,
//!   features]`, the flat, normalised rows joulecut's models take), output `logits` (F32
//!   `[batch, classes]`).
//! - **BERT-family encoders** (a Hugging Face model directory, [`bert`]): inputs `input_ids`,
//!   `attention_mask`, `token_type_ids` (INT64 `[batch, sequence]`), outputs `last_hidden_state`
//!   and the masked mean-pooled `sentence_embedding`.
//!
//! Dense F32 weights are F32 initializers; int8 weights are stored as int8 and dequantized in the
//! graph (`DequantizeLinear`, per output channel where joulecut is): the QDQ form ONNX Runtime
//! and tract recognise. With [`Activations::Grid`] (the default) each int8 layer's input is also
//! quantized and dequantized on the grid joulecut's int8 kernels use at run time ([`act`]), so
//! the graph computes what `joulecut eval` runs; [`Activations::Float`] leaves activations in
//! F32 (joulecut's *decoded* model). The protobuf is written by prost from the ONNX schema
//! (`proto/onnx.proto`), atomically through joulecut-checkpoint's [`atomic_write`].
//!
//! ```no_run
//! use joulecut_interop::onnx::{Activations, OnnxOptions};
//! # fn main() -> joulecut_interop::Result<()> {
//! let opts = OnnxOptions { activations: Activations::Grid };
//! joulecut_interop::onnx::export("lenet-int8.safetensors".as_ref(), "lenet-int8.onnx".as_ref(), &opts)?;
//! joulecut_interop::onnx::export("minilm-int8".as_ref(), "minilm-int8.onnx".as_ref(), &opts)?;
//! # Ok(()) }
//! ```

mod act;
mod arch;
pub mod bert;
mod graph;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
mod tensors;

use std::io::Write;
use std::path::{Path, PathBuf};

use joulecut_checkpoint::{
    Checkpoint, FloatType, TensorData, atomic_write, input::not_regular, refuse_input,
};
use joulecut_quant::ActivationGrid;
use prost::Message;

use arch::{Arch, CONV_PADDING, KERNEL, POOL};
use graph::{Attr, Dim, Graph};
use proto::tensor_proto::DataType;
use tensors::{Half, Layout, Value, float_value, smoothed_input};

use crate::{Error, Result};

/// Name of an MLP's or LeNet-5's input (F32 `[batch, features]`, normalised as joulecut's
/// datasets are).
pub const INPUT: &str = "input";
/// Name of an MLP's or LeNet-5's output (F32 `[batch, classes]`).
pub const OUTPUT: &str = "logits";
/// The default-domain opset every graph uses (`LayerNormalization` needs 17).
pub const OPSET: i64 = 17;

const FORMAT: &str = "ONNX";

/// What an int8 layer's input is in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// Quantized and dequantized per row (per image for convolutions) on the grid joulecut's
    /// int8 kernels use (`joulecut.int8_activations`, and for transformers the per-layer
    /// `joulecut.int8_activations.layers`): the graph computes what joulecut runs.
    #[default]
    Grid,
    /// Left in F32: the graph computes joulecut's decoded model (weights `scale · (q − zp)`).
    Float,
}

/// Settings of [`export`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnnxOptions {
    /// What int8 layers' inputs are.
    pub activations: Activations,
}

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The architecture (`mlp`, `lenet5`, `bert`).
    pub arch: &'static str,
    /// The graph's inputs.
    pub inputs: Vec<&'static str>,
    /// The graph's outputs.
    pub outputs: Vec<&'static str>,
    /// Weights stored as int8 with a `DequantizeLinear`.
    pub int8: Vec<String>,
    /// Layers (module names) whose input the graph quantizes, with the grid
    /// ([`Activations::Grid`]; empty otherwise).
    pub quantized_inputs: Vec<(String, ActivationGrid)>,
    /// Tensors stored as F16/BF16 and widened to F32 in the file.
    pub widened: Vec<String>,
    /// Nodes in the graph.
    pub nodes: usize,
}

pub(crate) fn unsupported(tensor: &str, encoding: &str, reason: &str) -> Error {
    Error::Unsupported {
        tensor: tensor.to_string(),
        encoding: encoding.to_string(),
        format: FORMAT,
        reason: reason.to_string(),
        can: "ONNX export writes dense F32 tensors and int8 weights (per tensor or per output channel) \
              of joulecut's MLPs, LeNet-5 and BERT-family encoders (which also take F16/BF16); \
              `joulecut decompress` the model first, or export it with --format compressed-tensors"
            .into(),
    }
}

/// The grid a checkpoint's int8 layers quantize their inputs to (`joulecut.int8_activations`;
/// `s8` when absent, as joulecut reads it).
fn file_grid(ck: &Checkpoint) -> Result<ActivationGrid> {
    let key = joulecut_checkpoint::meta::INT8_ACTIVATIONS;
    match ck.metadata().get(key) {
        None => Ok(ActivationGrid::default()),
        Some(tag) => tag.parse().map_err(|_| Error::BadInput {
            path: ck.path().to_path_buf(),
            reason: format!("`{key}` is `{tag}`, not s8, u7 or u6"),
            hint: "the file's metadata is damaged; re-run `joulecut quantize`".into(),
        }),
    }
}

/// The summary of a built graph.
#[derive(Debug, Default)]
pub(crate) struct Built {
    pub int8: Vec<String>,
    pub quantized_inputs: Vec<(String, ActivationGrid)>,
    pub widened: Vec<String>,
}

/// Weight `name` of an MLP or LeNet-5 as a graph value (int8 scales must run along the output
/// channels, as joulecut's int8 kernels store them).
fn weight(g: &mut Graph, ck: &Checkpoint, name: &str) -> Result<Value> {
    let t = ck.get(name)?;
    if let TensorData::Int8(q) = &t
        && let Some(a @ 1..) = q.axis
    {
        return Err(unsupported(
            name,
            &format!("int8 per-channel on axis {a}"),
            "DequantizeLinear scales run along the output channels (axis 0) here",
        ));
    }
    float_value(g, name, t, Layout::AsStored, Half::Refuse)
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
fn build(ck: &Checkpoint, arch: &Arch, opts: &OnnxOptions) -> Result<(Graph, Built)> {
    let mut g = Graph::default();
    let mut b = Built::default();
    let grid = file_grid(ck)?;
    let mut h = INPUT.to_string();
    // A layer's input, quantized on the run-time grid when its weight is int8.
    let layer_input =
        |g: &mut Graph, b: &mut Built, h: &str, w: &Value, base: &str, axes: &[i64]| {
            if !w.int8 {
                return h.to_string();
            }
            let h = &smoothed_input(g, h, w, base);
            b.int8.push(format!("{base}.weight"));
            if opts.activations == Activations::Float {
                return h.to_string();
            }
            b.quantized_inputs.push((base.to_string(), grid));
            act::quantize_input(g, h, grid, axes, base)
        };
    if let Arch::Lenet5 {
        in_channels, image, ..
    } = arch
    {
        let side = *image as i64;
        g.init_i64("image_shape", &[4], &[-1, *in_channels as i64, side, side]);
        h = g.node("Reshape", "to_image", &[&h, "image_shape"], vec![]);
        for (i, pad) in CONV_PADDING.iter().enumerate() {
            let base = format!("conv{}", i + 1);
            let w = weight(&mut g, ck, &format!("{base}.weight"))?;
            let bias = bias(&mut g, ck, &format!("{base}.bias"))?;
            let x = layer_input(&mut g, &mut b, &h, &w, &base, &[1, 2, 3]);
            let attrs = vec![
                ("kernel_shape", Attr::Ints(vec![KERNEL, KERNEL])),
                ("pads", Attr::Ints(vec![*pad; 4])),
            ];
            h = g.node("Conv", &base, &[&x, &w.name, &bias], attrs);
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
        let w = weight(&mut g, ck, &wname)?;
        let bias = bias(&mut g, ck, &format!("{base}.bias"))?;
        let x = layer_input(&mut g, &mut b, &h, &w, &base, &[1]);
        h = g.node(
            "Gemm",
            &base,
            &[&x, &w.name, &bias],
            vec![("transB", Attr::Int(1))],
        );
        if i < n {
            h = g.node("Relu", &format!("{base}_relu"), &[&h], vec![]);
        }
    }
    g.rename_last_output(OUTPUT);
    let batch = Dim::Dynamic("batch");
    g.input(
        INPUT,
        DataType::Float,
        &[batch, Dim::Fixed(arch.input_features())],
    );
    g.output(OUTPUT, DataType::Float, &[batch, Dim::Fixed(classes)]);
    Ok((g, b))
}

/// Exports a joulecut model to an ONNX file: a joulecut model file (one `.safetensors` with
/// `joulecut.model`: an MLP or LeNet-5), or a Hugging Face BERT-family model directory.
pub fn export(input: &Path, out: &Path, opts: &OnnxOptions) -> Result<Exported> {
    if input.is_dir() {
        refuse_input(out, &[input])?;
        let (g, b) = bert::build(input, opts)?;
        return write(
            g,
            b,
            out,
            "bert",
            bert::INPUTS.to_vec(),
            bert::OUTPUTS.to_vec(),
        );
    }
    if let Some(kind) = not_regular(input) {
        return Err(Error::BadInput {
            path: input.to_path_buf(),
            reason: format!("it is {kind}"),
            hint: "ONNX export takes one joulecut model file (.safetensors: an MLP or LeNet-5) \
                   or a BERT-family model directory"
                .into(),
        });
    }
    let ck = Checkpoint::open(input)?;
    let cfg = ck.model_config()?.ok_or_else(|| Error::BadInput {
        path: input.to_path_buf(),
        reason: "the file has no `joulecut.model`, so its architecture is unknown".into(),
        hint: "ONNX export takes models written by joulecut (train, prune, quantize, distill), \
               or a BERT-family encoder as its model directory"
            .into(),
    })?;
    let arch = Arch::from_json(&cfg).map_err(|e| Error::BadInput {
        path: input.to_path_buf(),
        reason: format!("`joulecut.model` is not an MLP or LeNet-5 ({e})"),
        hint: "ONNX export knows joulecut's MLPs and LeNet-5 as files, and BERT-family encoders \
               as model directories"
            .into(),
    })?;
    refuse_input(out, &[input])?;
    let (g, b) = build(&ck, &arch, opts)?;
    let name = match arch {
        Arch::Mlp { .. } => "mlp",
        Arch::Lenet5 { .. } => "lenet5",
    };
    write(g, b, out, name, vec![INPUT], vec![OUTPUT])
}

fn write(
    g: Graph,
    b: Built,
    out: &Path,
    arch: &'static str,
    inputs: Vec<&'static str>,
    outputs: Vec<&'static str>,
) -> Result<Exported> {
    let nodes = g.nodes.len();
    let bytes = graph::model(g.finish(), OPSET).encode_to_vec();
    let written = atomic_write(out, |f| f.write_all(&bytes))?;
    Ok(Exported {
        path: out.to_path_buf(),
        bytes: written,
        arch,
        inputs,
        outputs,
        int8: b.int8,
        quantized_inputs: b.quantized_inputs,
        widened: b.widened,
        nodes,
    })
}
