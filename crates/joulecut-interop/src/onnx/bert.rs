//! ONNX export of a BERT-family encoder laid out as Hugging Face ships it (`config.json` and
//! `model.safetensors` or its shards, any joulecut encoding): the maths of joulecut's own encoder
//! (joulecut-models' `bert`), with padding masked instead of removed.
//!
//! The config is read and checked by joulecut-embed ([`read_config`], [`Structure`],
//! [`check_structured_weights`]), so a model joulecut refuses to run is refused here too, and a
//! structurally pruned one (`pruned_heads`, `joulecut_intermediate_sizes`) or a layer-dropped one
//! (`num_hidden_layers`) exports with its smaller layers.
//!
//! - inputs [`INPUTS`]: INT64 `[batch, sequence]` (dynamic axes); positions are `0..sequence`
//!   (the first `sequence` rows of the position table, `Slice`d);
//! - embeddings: `Gather` of the word and type tables, plus the positions, `LayerNormalization`;
//! - each layer: query/key/value `MatMul` (+ bias) → heads (`Reshape`, `Transpose`) →
//!   `MatMul`·(1/√d) → `Where(mask, scores, f32::MIN)` → `Softmax` → `MatMul` → output `MatMul`
//!   (+ bias) + residual → `LayerNormalization`; FFN `MatMul` (+ bias) → GELU (exact, from `Erf`;
//!   or the tanh form, or `Relu`, as `hidden_act` says) → `MatMul` (+ bias) + residual →
//!   `LayerNormalization`;
//! - outputs [`OUTPUTS`]: every token's final state, and the mean over the tokens the mask keeps
//!   (not normalised: what `joulecut eval-embeddings` compares).
//!
//! Linear weights are stored transposed (`[in, out]`, the `MatMul` operand); int8 ones as int8
//! with `DequantizeLinear` along axis 1 (the output channels) when per channel. F16/BF16 tensors
//! are widened to F32 in the file (exact: joulecut decodes them so too).

use std::collections::BTreeMap;
use std::path::Path;

use candle_transformers::models::bert::HiddenAct;
use joulecut_checkpoint::TensorData;
use joulecut_embed::{Structure, Weights, check_structured_weights, read_config};
use joulecut_quant::ActivationGrid;

use super::graph::{Attr, Dim, Graph};
use super::proto::tensor_proto::DataType;
use super::tensors::{Half, Layout, Value, float_value, smoothed_input};
use super::{Activations, Built, OnnxOptions, act};
use crate::{Error, Result};

/// The graph's inputs: token ids, the attention mask (1 = token, 0 = padding), token types.
pub const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];
/// The graph's outputs: `[batch, sequence, hidden]` states and `[batch, hidden]` mean-pooled
/// sentence embeddings.
pub const OUTPUTS: [&str; 2] = ["last_hidden_state", "sentence_embedding"];

/// Where the encoder's tensors live: `BertModel` exports have no prefix, task models `bert.`.
const PREFIXES: [&str; 2] = ["", "bert."];
const PROBE: &str = "embeddings.word_embeddings.weight";

/// The graph under construction and where its tensors come from.
struct Builder<'a> {
    g: Graph,
    b: Built,
    weights: &'a Weights,
    prefix: &'static str,
    /// Run-time input grids: the file's, and per module where `quantize --calibration` chose.
    grid: ActivationGrid,
    layer_grids: BTreeMap<String, ActivationGrid>,
    activations: Activations,
}

impl Builder<'_> {
    /// Stored tensor `name` (encoder name, no prefix) as an F32 value.
    fn tensor(&mut self, name: &str, layout: Layout) -> Result<Value> {
        let full = format!("{}{name}", self.prefix);
        let t = self.weights.stored(&full)?;
        if let TensorData::Dense(d) = &t
            && d.dtype != joulecut_checkpoint::FloatType::F32
        {
            self.b.widened.push(full.clone());
        }
        let v = float_value(&mut self.g, &full, t, layout, Half::Widen)?;
        if v.int8 {
            self.b.int8.push(full);
        }
        Ok(v)
    }

    /// A LayerNorm module: `weight`/`bias`, or the `gamma`/`beta` of older exports.
    fn layer_norm(&mut self, x: &str, module: &str, eps: f32) -> Result<String> {
        let gamma = format!("{}{module}.gamma", self.prefix);
        let (g, b) = if self.weights.contains(&gamma) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        let gamma = self.tensor(&format!("{module}.{g}"), Layout::AsStored)?;
        let beta = self.tensor(&format!("{module}.{b}"), Layout::AsStored)?;
        Ok(self.g.node(
            "LayerNormalization",
            module,
            &[x, &gamma.name, &beta.name],
            vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))],
        ))
    }

    /// `x` as the input of an int8 layer `module` (joulecut's run-time grid applied when asked).
    fn layer_input(&mut self, x: &str, int8: bool, module: &str) -> String {
        if !int8 || self.activations == Activations::Float {
            return x.to_string();
        }
        let grid = self.layer_grids.get(module).copied().unwrap_or(self.grid);
        self.b.quantized_inputs.push((module.to_string(), grid));
        act::quantize_input(&mut self.g, x, grid, &[2], module)
    }

    /// `x · Wᵀ + b` of module `module` whose weight is already in the graph.
    fn matmul_bias(&mut self, x: &str, w: &Value, module: &str) -> Result<String> {
        let bias = self.tensor(&format!("{module}.bias"), Layout::AsStored)?;
        let y = self
            .g
            .node("MatMul", &format!("{module}_matmul"), &[x, &w.name], vec![]);
        Ok(self
            .g
            .node("Add", &format!("{module}_bias"), &[&y, &bias.name], vec![]))
    }

    fn weight(&mut self, module: &str) -> Result<Value> {
        self.tensor(&format!("{module}.weight"), Layout::Transposed)
    }

    /// A single linear layer, its input quantized when its weight is int8.
    fn linear(&mut self, x: &str, module: &str) -> Result<String> {
        let w = self.weight(module)?;
        let x = smoothed_input(&mut self.g, x, &w, module);
        let x = self.layer_input(&x, w.int8, module);
        self.matmul_bias(&x, &w, module)
    }
}

/// Runs `op` elementwise; returns the output.
fn unary(g: &mut Graph, op: &str, name: &str, x: &str) -> String {
    g.node(op, name, &[x], vec![])
}

/// The feed-forward activation `hidden_act` names.
fn activation(g: &mut Graph, act: HiddenAct, x: &str, p: &str) -> String {
    let n = |s: &str| format!("{p}_{s}");
    match act {
        HiddenAct::Relu => unary(g, "Relu", &n("relu"), x),
        HiddenAct::Gelu => {
            // 0.5 · x · (1 + erf(x / √2))
            let sqrt2 = g.scalar_f32(&n("sqrt2"), std::f32::consts::SQRT_2);
            let (one, half) = (g.scalar_f32(&n("one"), 1.0), g.scalar_f32(&n("half"), 0.5));
            let t = g.node("Div", &n("gelu_div"), &[x, &sqrt2], vec![]);
            let t = unary(g, "Erf", &n("gelu_erf"), &t);
            let t = g.node("Add", &n("gelu_add"), &[&t, &one], vec![]);
            let t = g.node("Mul", &n("gelu_mul"), &[x, &t], vec![]);
            g.node("Mul", &n("gelu"), &[&t, &half], vec![])
        }
        HiddenAct::GeluApproximate => {
            // 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))
            let c = g.scalar_f32(&n("gelu_c"), 0.797_884_6);
            let k = g.scalar_f32(&n("gelu_k"), 0.044_715);
            let (one, half) = (g.scalar_f32(&n("one"), 1.0), g.scalar_f32(&n("half"), 0.5));
            let x2 = g.node("Mul", &n("gelu_x2"), &[x, x], vec![]);
            let x3 = g.node("Mul", &n("gelu_x3"), &[&x2, x], vec![]);
            let t = g.node("Mul", &n("gelu_kx3"), &[&x3, &k], vec![]);
            let t = g.node("Add", &n("gelu_inner"), &[x, &t], vec![]);
            let t = g.node("Mul", &n("gelu_scaled"), &[&t, &c], vec![]);
            let t = unary(g, "Tanh", &n("gelu_tanh"), &t);
            let t = g.node("Add", &n("gelu_add"), &[&t, &one], vec![]);
            let t = g.node("Mul", &n("gelu_mul"), &[x, &t], vec![]);
            g.node("Mul", &n("gelu"), &[&t, &half], vec![])
        }
    }
}

/// Builds the graph of the encoder in model directory `dir`.
pub(crate) fn build(dir: &Path, opts: &OnnxOptions) -> Result<(Graph, Built)> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(Error::BadInput {
            path: dir.to_path_buf(),
            reason: "the directory has no config.json".into(),
            hint: "ONNX export of a directory takes a BERT-family model as Hugging Face ships it \
                   (config.json, model.safetensors); a joulecut MLP or LeNet-5 is one file"
                .into(),
        });
    }
    let config = read_config(&config_path)?;
    let structure = Structure::read(&config_path, &config)?;
    let weights = Weights::open_dir(dir)?;
    check_structured_weights(&config_path, &config, &structure, &weights)?;
    let prefix = PREFIXES
        .into_iter()
        .find(|p| weights.contains(&format!("{p}{PROBE}")))
        .ok_or_else(|| Error::BadInput {
            path: weights.path().to_path_buf(),
            reason: format!("no `{PROBE}` (nor `bert.{PROBE}`)"),
            hint: "the weights are not a BERT encoder's (Hugging Face `BertModel` names)".into(),
        })?;
    let mut m = Builder {
        g: Graph::default(),
        b: Built::default(),
        prefix,
        grid: weights.kernels()?.int8_activations,
        layer_grids: weights
            .layer_grids()?
            .into_iter()
            .map(|(k, v)| (k.strip_prefix(prefix).unwrap_or(&k).to_string(), v))
            .collect(),
        weights: &weights,
        activations: opts.activations,
    };
    let eps = config.layer_norm_eps as f32;
    let (ids, mask, types) = (INPUTS[0], INPUTS[1], INPUTS[2]);
    let tokens = [Dim::Dynamic("batch"), Dim::Dynamic("sequence")];
    for name in INPUTS {
        m.g.input(name, DataType::Int64, &tokens);
    }

    // embeddings
    let word = m.tensor("embeddings.word_embeddings.weight", Layout::AsStored)?;
    let pos = m.tensor("embeddings.position_embeddings.weight", Layout::AsStored)?;
    let typ = m.tensor("embeddings.token_type_embeddings.weight", Layout::AsStored)?;
    let g = &mut m.g;
    let w = g.node("Gather", "word_embeddings", &[&word.name, ids], vec![]);
    // positions 0..sequence: the first `sequence` rows of the table
    let shape = g.node("Shape", "ids_shape", &[ids], vec![]);
    g.init_i64("zero_1d", &[1], &[0]);
    g.init_i64("one_1d", &[1], &[1]);
    g.init_i64("two_1d", &[1], &[2]);
    let seq = g.node(
        "Slice",
        "sequence_length",
        &[&shape, "one_1d", "two_1d", "zero_1d"],
        vec![],
    );
    let p = g.node(
        "Slice",
        "position_embeddings",
        &[&pos.name, "zero_1d", &seq, "zero_1d"],
        vec![],
    );
    let t = g.node(
        "Gather",
        "token_type_embeddings",
        &[&typ.name, types],
        vec![],
    );
    let e = g.node("Add", "word_plus_position", &[&w, &p], vec![]);
    let e = g.node("Add", "embeddings_sum", &[&e, &t], vec![]);
    let mut x = m.layer_norm(&e, "embeddings.LayerNorm", eps)?;

    // the attention mask: keep[b, 1, 1, j] = mask[b, j] != 0
    let g = &mut m.g;
    let to = |t: DataType| vec![("to", Attr::Int(t as i64))];
    let keep = g.node("Cast", "mask_bool", &[mask], to(DataType::Bool));
    g.init_i64("mask_axes", &[2], &[1, 2]);
    let keep = g.node("Unsqueeze", "mask_keys", &[&keep, "mask_axes"], vec![]);
    let masked = g.scalar_f32("masked_score", f32::MIN);

    let h = config.hidden_size;
    let d = h / config.num_attention_heads;
    for l in 0..config.num_hidden_layers {
        let heads = structure.heads(l, &config);
        let width = heads * d;
        let p = format!("encoder.layer.{l}");
        let a = format!("{p}.attention.self");
        let (wq, wk, wv) = (
            m.weight(&format!("{a}.query"))?,
            m.weight(&format!("{a}.key"))?,
            m.weight(&format!("{a}.value"))?,
        );
        // query, key and value share one quantized input (joulecut runs them as one product),
        // so they must share its smoothing too
        let scales = |w: &Value| w.in_scale.as_ref().map(|(_, f)| f.clone());
        if scales(&wq) != scales(&wk) || scales(&wq) != scales(&wv) {
            return Err(super::unsupported(
                &format!("{a}.query.weight"),
                "query, key and value with different input scales",
                "joulecut runs them as one product with one input; quantize them together",
            ));
        }
        // (a new name: `x` is also the residual)
        let xs = smoothed_input(&mut m.g, &x, &wq, &format!("{a}.query"));
        let xin = m.layer_input(&xs, wq.int8 || wk.int8 || wv.int8, &format!("{a}.query"));
        let q = m.matmul_bias(&xin, &wq, &format!("{a}.query"))?;
        let k = m.matmul_bias(&xin, &wk, &format!("{a}.key"))?;
        let v = m.matmul_bias(&xin, &wv, &format!("{a}.value"))?;
        let g = &mut m.g;
        let split = format!("{p}_heads_shape");
        g.init_i64(&split, &[4], &[0, 0, heads as i64, d as i64]);
        let perm = |v: [i64; 4]| vec![("perm", Attr::Ints(v.to_vec()))];
        let n = |s: &str| format!("{a}_{s}");
        let q = g.node("Reshape", &n("q_split"), &[&q, &split], vec![]);
        let q = g.node("Transpose", &n("q_heads"), &[&q], perm([0, 2, 1, 3]));
        let k = g.node("Reshape", &n("k_split"), &[&k, &split], vec![]);
        let k = g.node("Transpose", &n("k_heads"), &[&k], perm([0, 2, 3, 1]));
        let v = g.node("Reshape", &n("v_split"), &[&v, &split], vec![]);
        let v = g.node("Transpose", &n("v_heads"), &[&v], perm([0, 2, 1, 3]));
        let s = g.node("MatMul", &n("scores"), &[&q, &k], vec![]);
        let scale = g.scalar_f32(&n("scale"), 1.0 / (d as f32).sqrt());
        let s = g.node("Mul", &n("scaled_scores"), &[&s, &scale], vec![]);
        let s = g.node("Where", &n("masked_scores"), &[&keep, &s, &masked], vec![]);
        let s = g.node("Softmax", &n("probs"), &[&s], vec![("axis", Attr::Int(-1))]);
        let c = g.node("MatMul", &n("context_heads"), &[&s, &v], vec![]);
        let c = g.node("Transpose", &n("context_t"), &[&c], perm([0, 2, 1, 3]));
        let merge = format!("{p}_merge_shape");
        g.init_i64(&merge, &[3], &[0, 0, width as i64]);
        let c = g.node("Reshape", &n("context"), &[&c, &merge], vec![]);

        let o = m.linear(&c, &format!("{p}.attention.output.dense"))?;
        let o =
            m.g.node("Add", &format!("{p}_attention_residual"), &[&o, &x], vec![]);
        x = m.layer_norm(&o, &format!("{p}.attention.output.LayerNorm"), eps)?;

        let f = m.linear(&x, &format!("{p}.intermediate.dense"))?;
        let f = activation(
            &mut m.g,
            config.hidden_act,
            &f,
            &format!("{p}.intermediate"),
        );
        let o = m.linear(&f, &format!("{p}.output.dense"))?;
        let o =
            m.g.node("Add", &format!("{p}_output_residual"), &[&o, &x], vec![]);
        x = m.layer_norm(&o, &format!("{p}.output.LayerNorm"), eps)?;
    }

    // outputs: the states, and their mean over the kept tokens (count clamped as
    // sentence-transformers does, so an all-padding row gives zeros)
    let g = &mut m.g;
    let (states, pooled) = (OUTPUTS[0], OUTPUTS[1]);
    g.node_to("Identity", states, &[&x], vec![], states);
    let mf = g.node("Cast", "mask_float", &[mask], to(DataType::Float));
    g.init_i64("pool_axis", &[1], &[2]);
    let mf = g.node("Unsqueeze", "mask_tokens", &[&mf, "pool_axis"], vec![]);
    g.init_i64("sequence_axis", &[1], &[1]);
    let keep_dims = || vec![("keepdims", Attr::Int(0))];
    let kept = g.node("Mul", "masked_states", &[&x, &mf], vec![]);
    let sum = g.node(
        "ReduceSum",
        "state_sum",
        &[&kept, "sequence_axis"],
        keep_dims(),
    );
    let count = g.node(
        "ReduceSum",
        "token_count",
        &[&mf, "sequence_axis"],
        keep_dims(),
    );
    let floor = g.scalar_f32("count_floor", 1e-9);
    let count = g.node("Max", "token_count_floor", &[&count, &floor], vec![]);
    g.node_to("Div", pooled, &[&sum, &count], vec![], pooled);
    let hid = Dim::Fixed(h);
    g.output(states, DataType::Float, &[tokens[0], tokens[1], hid]);
    g.output(pooled, DataType::Float, &[tokens[0], hid]);
    Ok((m.g, m.b))
}
