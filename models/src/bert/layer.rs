//! One encoder layer: fused query/key/value projection, attention, output projection with residual
//! and LayerNorm, then the GELU feed-forward block with its residual and LayerNorm.

use joulecut_ops::rows::{LayerNorm, residual_layer_norm};

use super::attention::{Heads, attention};
use super::linear::LinearOp;
use super::{Activation, Workspace, buf};

/// The four linear layers of an encoder layer, as calibration sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sublayer {
    /// Query, key and value projections (one product; they share their input).
    Qkv,
    /// `attention.output.dense`.
    AttentionOutput,
    /// `intermediate.dense` (the FFN's first layer).
    Intermediate,
    /// `output.dense` (the FFN's second layer).
    Output,
}

impl Sublayer {
    /// All four, in forward order.
    pub const ALL: [Sublayer; 4] = [
        Sublayer::Qkv,
        Sublayer::AttentionOutput,
        Sublayer::Intermediate,
        Sublayer::Output,
    ];

    /// The Hugging Face module names (without `.weight`) of this sublayer in layer `i`; the query,
    /// key and value are stacked in this order along the output dimension.
    pub fn modules(self, i: usize) -> Vec<String> {
        let p = format!("encoder.layer.{i}");
        match self {
            Sublayer::Qkv => ["query", "key", "value"]
                .iter()
                .map(|m| format!("{p}.attention.self.{m}"))
                .collect(),
            Sublayer::AttentionOutput => vec![format!("{p}.attention.output.dense")],
            Sublayer::Intermediate => vec![format!("{p}.intermediate.dense")],
            Sublayer::Output => vec![format!("{p}.output.dense")],
        }
    }
}

/// LayerNorm weights of one layer.
#[derive(Debug, Clone)]
pub(super) struct Norm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

impl Norm {
    fn with_eps(&self, eps: f32) -> LayerNorm<'_> {
        LayerNorm {
            gamma: &self.gamma,
            beta: &self.beta,
            eps,
        }
    }
}

/// One transformer encoder layer.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub(super) qkv: LinearOp,
    pub(super) heads: usize,
    pub(super) head_dim: usize,
    pub(super) attention_output: LinearOp,
    pub(super) attention_norm: Norm,
    pub(super) intermediate: LinearOp,
    pub(super) output: LinearOp,
    pub(super) output_norm: Norm,
}

impl EncoderLayer {
    /// Attention heads this layer runs (fewer than the config's after head pruning).
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The linear layer behind a sublayer.
    pub fn linear(&self, s: Sublayer) -> &LinearOp {
        match s {
            Sublayer::Qkv => &self.qkv,
            Sublayer::AttentionOutput => &self.attention_output,
            Sublayer::Intermediate => &self.intermediate,
            Sublayer::Output => &self.output,
        }
    }

    /// The linear layer behind a sublayer, to change its weights or activation grid.
    pub fn linear_mut(&mut self, s: Sublayer) -> &mut LinearOp {
        match s {
            Sublayer::Qkv => &mut self.qkv,
            Sublayer::AttentionOutput => &mut self.attention_output,
            Sublayer::Intermediate => &mut self.intermediate,
            Sublayer::Output => &mut self.output,
        }
    }

    /// Runs the layer on `ws`'s hidden states in place. `observe(sublayer, input, rows)` sees each
    /// linear layer's input just before it runs (calibration; a no-op closure otherwise).
    pub fn forward(
        &self,
        ws: &mut Workspace,
        lengths: &[usize],
        (eps, act): (f32, Activation),
        observe: &mut dyn FnMut(Sublayer, &[f32], usize),
    ) {
        let Workspace {
            x,
            qkv,
            ctx,
            proj,
            ffn,
            ..
        } = ws;
        let t: usize = lengths.iter().sum();
        let h = self.attention_output.out_features();
        let w = self.heads * self.head_dim;
        let inter = self.intermediate.out_features();
        let x = &mut x[..t * h];

        observe(Sublayer::Qkv, x, t);
        let qkv = buf(qkv, t * 3 * w);
        self.qkv.forward(x, t, qkv, true);
        let ctx = buf(ctx, t * w);
        let heads = Heads {
            count: self.heads,
            dim: self.head_dim,
        };
        attention(qkv, ctx, lengths, heads);

        observe(Sublayer::AttentionOutput, ctx, t);
        let proj = buf(proj, t * h);
        self.attention_output.forward(ctx, t, proj, false);
        let ln = self.attention_norm.with_eps(eps);
        residual_layer_norm(x, proj, self.attention_output.pending_bias(), &ln);

        observe(Sublayer::Intermediate, x, t);
        let ffn = buf(ffn, t * inter);
        self.intermediate.forward(x, t, ffn, false);
        act.apply(ffn, inter, self.intermediate.pending_bias().unwrap_or(&[]));

        observe(Sublayer::Output, ffn, t);
        self.output.forward(ffn, t, proj, false);
        let ln = self.output_norm.with_eps(eps);
        residual_layer_norm(x, proj, self.output.pending_bias(), &ln);
    }
}
