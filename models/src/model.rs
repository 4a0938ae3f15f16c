//! The model: layers built from a `VarMap` (training) or from a checkpoint in any encoding (eval).

use candle_core::{Device, Module, Tensor};
use candle_nn::VarMap;
use joulecut_checkpoint::{Checkpoint, TensorData};

use crate::{Error, ModelConfig, Result};

/// How a layer computes: through a kernel that exploits its compression (*real* saving), or densely
/// (*nominal*: e.g. a masked dense matrix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerPath {
    /// Plain f32 dense kernels; the stored tensor was dense.
    Dense,
    /// The stored tensor was compressed but is decoded to dense f32 for compute (nominal saving).
    Decoded,
    /// int8 GEMM kernels.
    Int8,
    /// Sparse (CSR) kernels.
    Sparse,
    /// f16/bf16 weights read as stored by the dense kernel at batch 1, widened in registers (CPU
    /// linear layers): half the weight bytes per call. Batches run an f32 copy (nominal there).
    Half,
    /// 2:4 weights (at most 2 non-zeros in each group of 4 inputs) run by joulecut-prune's 2:4
    /// kernel for batches of up to `TwoFourMatrix::MAX_BATCH` rows: half the weight bytes and
    /// multiply-adds per call. Larger batches run the dense f32 copy (nominal there).
    TwoFour,
}

/// A fully-connected or convolution layer as the model runs it.
pub struct Layer {
    /// Weight name without `.weight` (`fc1`, `conv2`).
    pub name: String,
    /// Which kernels run it.
    pub path: LayerPath,
    module: Box<dyn Module + Send + Sync>,
    /// Dense linear weights, kept so the forward pass can fuse the following ReLU.
    dense: Option<(Tensor, Tensor)>,
    /// The same weight in f16/bf16 as stored ([`LayerPath::Half`]), which single-row calls read.
    half: Option<Tensor>,
    /// The same weight in 2:4 form ([`LayerPath::TwoFour`]), which small batches run.
    two_four: Option<std::sync::Arc<(joulecut_prune::TwoFourMatrix, Vec<f32>)>>,
    /// Dense conv weight, bias and padding, kept so the forward pass can fuse ReLU and pooling.
    conv: Option<(Tensor, Option<Tensor>, usize)>,
    /// The same layer with the following ReLU fused in (e.g. into an int8 GEMM's epilogue).
    fused_relu: Option<Box<dyn Module + Send + Sync>>,
    /// The same layer with ReLU and `k × k` max pooling fused in, and its `k`.
    fused_relu_pool: Option<(usize, Box<dyn Module + Send + Sync>)>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

impl Layer {
    /// Wraps any module (a compressed kernel from `joulecut-quant` or `joulecut-prune`).
    pub fn new(
        name: impl Into<String>,
        path: LayerPath,
        module: Box<dyn Module + Send + Sync>,
    ) -> Self {
        Layer {
            name: name.into(),
            path,
            module,
            dense: None,
            half: None,
            two_four: None,
            conv: None,
            fused_relu: None,
            fused_relu_pool: None,
        }
    }

    /// Gives the layer a variant with the following ReLU fused in, which [`Layer::forward_act`]
    /// runs instead of the layer and a separate ReLU.
    pub fn with_fused_relu(mut self, module: Box<dyn Module + Send + Sync>) -> Self {
        self.fused_relu = Some(module);
        self
    }

    /// Gives the layer a variant with the following ReLU and `k × k` max pooling (stride `k`) fused
    /// in, which [`Layer::forward_relu_pool`] runs for that `k`.
    pub fn with_fused_relu_pool(mut self, k: usize, module: Box<dyn Module + Send + Sync>) -> Self {
        self.fused_relu_pool = Some((k, module));
        self
    }

    /// A dense fully-connected layer `y = x·Wᵀ + b` (W is [out, in], PyTorch layout).
    pub fn dense_linear(
        name: impl Into<String>,
        w: Tensor,
        b: Option<Tensor>,
        path: LayerPath,
    ) -> Self {
        let mut l = Layer::new(
            name,
            path,
            Box::new(candle_nn::Linear::new(w.clone(), b.clone())),
        );
        if let Some(b) = b {
            l.dense = Some((w, b));
        }
        l
    }

    /// Gives a dense linear layer the 2:4 form of its weight, which batches of up to
    /// `TwoFourMatrix::MAX_BATCH` rows run instead.
    pub fn with_two_four(mut self, m: joulecut_prune::TwoFourMatrix, bias: Vec<f32>) -> Self {
        self.two_four = Some(std::sync::Arc::new((m, bias)));
        self
    }

    /// Runs the layer, then a ReLU when `relu`. Dense layers on CPU use joulecut-ops' fused
    /// `x·Wᵀ + b` (+ ReLU) kernel; layers given [`Layer::with_fused_relu`] run that variant.
    pub fn forward_act(&self, x: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        if let Some((w, b)) = &self.dense {
            if x.device().is_cpu() && x.rank() == 2 {
                if let Some(tf) = &self.two_four
                    && x.dim(0)? <= joulecut_prune::TwoFourMatrix::MAX_BATCH
                {
                    return two_four_forward(&tf.0, x, &tf.1, relu);
                }
                // one row is bound by reading the weights: read the 16-bit copy if there is one
                let w = match &self.half {
                    Some(h) if x.dim(0)? == 1 => h,
                    _ => w,
                };
                return if relu {
                    joulecut_ops::linear_relu(x, w, b)
                } else {
                    joulecut_ops::linear(x, w, b)
                };
            }
        }
        if let (true, Some(m)) = (relu, &self.fused_relu) {
            return m.forward(x);
        }
        let y = self.module.forward(x)?;
        if relu { y.relu() } else { Ok(y) }
    }

    /// Runs the layer, a ReLU and `k x k` max pooling (stride `k`). Dense conv layers run
    /// joulecut-ops' fused kernel, which keeps the full-size activation and its gradient out of
    /// memory.
    pub fn forward_relu_pool(&self, x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
        if let Some((w, b, padding)) = &self.conv {
            return joulecut_ops::conv2d_relu_pool2d(x, w, b.as_ref(), *padding, k);
        }
        if let Some((pk, m)) = &self.fused_relu_pool
            && *pk == k
        {
            return m.forward(x);
        }
        // Routes by device itself (candle's own max_pool2d has a wrong backward).
        joulecut_ops::max_pool2d(&self.forward_act(x, true)?, k)
    }

    /// A dense conv layer (stride 1), weight [out, in, kh, kw].
    pub fn dense_conv(
        name: impl Into<String>,
        w: Tensor,
        b: Option<Tensor>,
        padding: usize,
        path: LayerPath,
    ) -> Self {
        let fused = DenseConv {
            w: w.clone(),
            b: b.clone(),
            padding,
            relu: true,
        };
        let conv = Some((w.clone(), b.clone(), padding));
        let mut l = Layer::new(
            name,
            path,
            Box::new(DenseConv {
                w,
                b,
                padding,
                relu: false,
            }),
        )
        .with_fused_relu(Box::new(fused));
        l.conv = conv;
        l
    }

    /// Runs the layer.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.module.forward(x)
    }
}

/// `x · Wᵀ + b` (+ ReLU) through the 2:4 kernel, for a CPU f32 `x` `[batch, in]`.
fn two_four_forward(
    m: &joulecut_prune::TwoFourMatrix,
    x: &Tensor,
    bias: &[f32],
    relu: bool,
) -> candle_core::Result<Tensor> {
    let x = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
    let batch = x.dim(0)?;
    if x.dim(1)? != m.cols() {
        candle_core::bail!(
            "2:4 layer: input {:?} does not have {} features",
            x.dims(),
            m.cols()
        )
    }
    let mut y = vec![0f32; batch * m.rows()];
    let xv = joulecut_ops::view(&x, "2:4 layer")?;
    m.matmul_into(xv.as_slice(), batch, Some(bias), relu, &mut y);
    drop(xv);
    Tensor::from_vec(y, (batch, m.rows()), &Device::Cpu)
}

struct DenseConv {
    w: Tensor,
    b: Option<Tensor>,
    padding: usize,
    /// Apply the following ReLU inside the conv kernel.
    relu: bool,
}

impl Module for DenseConv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // joulecut-ops' im2col + gemm kernels are CPU-only; other devices use candle's conv.
        if x.device().is_cpu() {
            return if self.relu {
                joulecut_ops::conv2d_relu(x, &self.w, self.b.as_ref(), self.padding)
            } else {
                joulecut_ops::conv2d(x, &self.w, self.b.as_ref(), self.padding)
            };
        }
        let y = x.conv2d(&self.w, self.padding, 1, 1, 1)?;
        let y = match &self.b {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
            None => y,
        };
        if self.relu { y.relu() } else { Ok(y) }
    }
}

/// Builds layers for compressed tensors. The default builds everything densely; the root crate
/// supplies one that routes int8 and sparse tensors to real kernels.
pub trait LayerFactory {
    /// A fully-connected layer from its stored weight and f32 bias, or `None` to decode densely.
    fn linear(
        &self,
        name: &str,
        weight: &TensorData,
        bias: Option<&[f32]>,
        device: &Device,
    ) -> Result<Option<Layer>>;
    /// A conv layer (stride 1, `padding`), or `None` to decode densely.
    fn conv(
        &self,
        name: &str,
        weight: &TensorData,
        bias: Option<&[f32]>,
        padding: usize,
        device: &Device,
    ) -> Result<Option<Layer>>;
}

/// Decodes every tensor to dense f32.
#[derive(Debug, Default, Clone, Copy)]
pub struct DenseFactory;

impl LayerFactory for DenseFactory {
    fn linear(
        &self,
        _: &str,
        _: &TensorData,
        _: Option<&[f32]>,
        _: &Device,
    ) -> Result<Option<Layer>> {
        Ok(None)
    }
    fn conv(
        &self,
        _: &str,
        _: &TensorData,
        _: Option<&[f32]>,
        _: usize,
        _: &Device,
    ) -> Result<Option<Layer>> {
        Ok(None)
    }
}

/// A runnable model.
#[derive(Debug)]
pub struct Model {
    cfg: ModelConfig,
    convs: Vec<Layer>,
    fcs: Vec<Layer>,
    /// Inference model (loaded from a checkpoint): CPU batches are split by rows across threads.
    row_parallel: bool,
}

/// Smallest batch [`Model::forward`] splits by rows; smaller ones (latency) parallelise inside
/// each layer instead.
const ROW_SPLIT_MIN: usize = 32;

/// Padding of LeNet-5's conv layers.
const CONV_PADDING: [usize; 2] = [2, 0];

impl Model {
    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// All layers, input first.
    pub fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.convs.iter().chain(self.fcs.iter())
    }

    /// Whether a call of `batch` rows runs some layer through a kernel that its compression
    /// makes cheaper than the dense f32 one: int8 or sparse kernels at any batch, 16-bit weights
    /// read as stored at batch 1, 2:4 weights up to `TwoFourMatrix::MAX_BATCH` rows. (A model
    /// with physically smaller layers saves too; that is the caller's comparison to make.)
    pub fn saves_compute(&self, batch: usize) -> bool {
        self.layers().any(|l| match l.path {
            LayerPath::Int8 | LayerPath::Sparse => true,
            LayerPath::Half => batch == 1,
            LayerPath::TwoFour => batch <= joulecut_prune::TwoFourMatrix::MAX_BATCH,
            LayerPath::Dense | LayerPath::Decoded => false,
        })
    }

    /// A model whose layers alias the `VarMap`'s variables (so optimiser updates are seen).
    pub fn from_varmap(cfg: &ModelConfig, vm: &VarMap) -> Result<Self> {
        let data = vm.data().lock().expect("VarMap lock");
        Self::from_fn(cfg, |n| data.get(n).map(|v| v.as_tensor().clone()))
    }

    /// A dense model from a tensor per parameter name (e.g. fake-quantised weights for QAT, which
    /// stay differentiable with respect to the variables they were computed from).
    pub fn from_fn(cfg: &ModelConfig, lookup: impl Fn(&str) -> Option<Tensor>) -> Result<Self> {
        let get = |n: &str| -> Result<Tensor> {
            lookup(n).ok_or_else(|| Error::MissingTensor { name: n.into() })
        };
        let mut convs = Vec::new();
        let mut fcs = Vec::new();
        for (name, _) in cfg
            .param_shapes()
            .iter()
            .filter(|(n, _)| n.ends_with(".weight"))
        {
            let base = name.trim_end_matches(".weight");
            let (w, b) = (get(name)?, get(&format!("{base}.bias"))?);
            if base.starts_with("conv") {
                convs.push(Layer::dense_conv(
                    base,
                    w,
                    Some(b),
                    CONV_PADDING[convs.len()],
                    LayerPath::Dense,
                ));
            } else {
                fcs.push(Layer::dense_linear(base, w, Some(b), LayerPath::Dense));
            }
        }
        Ok(Model {
            cfg: cfg.clone(),
            convs,
            fcs,
            row_parallel: false,
        })
    }

    /// The architecture of a checkpoint: its `joulecut.model` metadata, else `fallback`, else an
    /// MLP inferred from PyTorch-style names.
    pub fn config_of(ck: &Checkpoint, fallback: Option<&ModelConfig>) -> Result<ModelConfig> {
        if let Some(v) = ck.model_config()? {
            return ModelConfig::from_json(&v);
        }
        if let Some(c) = fallback {
            return Ok(c.clone());
        }
        let shapes: Vec<(String, Vec<usize>)> = ck
            .names()
            .iter()
            .map(|n| Ok((n.clone(), ck.get(n)?.shape().to_vec())))
            .collect::<Result<_>>()?;
        ModelConfig::infer_mlp(&shapes).ok_or_else(|| Error::NoConfig {
            path: ck.path().display().to_string(),
        })
    }

    /// Loads a model from a checkpoint in any encoding. `factory` decides which compressed
    /// tensors run through real kernels; the rest are decoded to dense f32.
    pub fn load(
        ck: &Checkpoint,
        cfg: &ModelConfig,
        device: &Device,
        factory: &dyn LayerFactory,
    ) -> Result<Self> {
        let expected = cfg.param_shapes();
        for name in ck.names() {
            if !expected.iter().any(|(n, _)| n == name) {
                return Err(Error::UnexpectedTensor { name: name.clone() });
            }
        }
        let mut convs = Vec::new();
        let mut fcs = Vec::new();
        for (wname, wshape) in expected.iter().filter(|(n, _)| n.ends_with(".weight")) {
            let base = wname.trim_end_matches(".weight");
            let bname = format!("{base}.bias");
            let w = get_checked(ck, wname, wshape)?;
            let bshape = [wshape[0]];
            let b = get_checked(ck, &bname, &bshape)?;
            let bias = finite(&bname, b.to_f32())?;
            let is_conv = base.starts_with("conv");
            let padding = if is_conv {
                CONV_PADDING[convs.len()]
            } else {
                0
            };
            let custom = if is_conv {
                factory.conv(base, &w, Some(&bias), padding, device)?
            } else {
                factory.linear(base, &w, Some(&bias), device)?
            };
            let layer = match custom {
                Some(l) => l,
                None if !is_conv && device.is_cpu() && half_dtype(&w).is_some() => {
                    half_linear(base, wname, &w, bias, wshape)?
                }
                None => {
                    let path = if matches!(w, TensorData::Dense(_)) {
                        LayerPath::Dense
                    } else {
                        LayerPath::Decoded
                    };
                    let wt = Tensor::from_vec(finite(wname, w.to_f32())?, wshape.clone(), device)
                        .map_err(Error::candle("build weight"))?;
                    let bt = Tensor::from_vec(bias, bshape.to_vec(), device)
                        .map_err(Error::candle("build bias"))?;
                    if is_conv {
                        Layer::dense_conv(base, wt, Some(bt), padding, path)
                    } else {
                        Layer::dense_linear(base, wt, Some(bt), path)
                    }
                }
            };
            if is_conv {
                convs.push(layer);
            } else {
                fcs.push(layer);
            }
        }
        Ok(Model {
            cfg: cfg.clone(),
            convs,
            fcs,
            row_parallel: true,
        })
    }

    /// Logits for a batch `[B, input_dim]`, plus the hidden activations after each ReLU
    /// (for feature distillation).
    pub fn forward_hidden(&self, x: &Tensor) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let mut hidden = Vec::new();
        let mut h = x.clone();
        if let ModelConfig::Lenet5 {
            in_channels, image, ..
        } = &self.cfg
        {
            let b = x.dim(0)?;
            h = h.reshape((b, *in_channels, *image, *image))?;
            for conv in &self.convs {
                h = conv.forward_relu_pool(&h, crate::config::CONV_POOL)?;
            }
            h = h.flatten_from(1)?;
        }
        let n = self.fcs.len();
        for (i, fc) in self.fcs.iter().enumerate() {
            let relu = i + 1 < n;
            h = fc.forward_act(&h, relu)?;
            if relu {
                hidden.push(h.clone());
            }
        }
        Ok((h, hidden))
    }
}

impl Model {
    /// Runs a CPU batch as one row chunk per rayon thread, each chunk through the whole network on
    /// its own thread; `None` when the batch should run layer by layer.
    ///
    /// Samples are independent in every layer, so this needs no synchronisation between layers:
    /// one fork and one join per batch instead of one (or more) per layer, and each thread's
    /// activations stay in its own cache from one layer to the next. Inside the chunks the kernels
    /// see that they run on a rayon worker and stay single-threaded.
    fn forward_row_parallel(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let threads = rayon::current_num_threads();
        let b = x.dim(0)?;
        if !self.row_parallel
            || !x.device().is_cpu()
            || threads < 2
            || b < ROW_SPLIT_MIN
            || rayon::current_thread_index().is_some()
        {
            return Ok(None);
        }
        self.forward_row_chunks(x, threads).map(Some)
    }

    /// Logits of `x` computed as `chunks` row chunks (multiples of 4 rows) in parallel on rayon's
    /// pool, each through the whole network, concatenated. Equal to the layer-by-layer forward
    /// (every kernel computes each sample independently of the others in its batch).
    pub fn forward_row_chunks(&self, x: &Tensor, chunks: usize) -> candle_core::Result<Tensor> {
        use rayon::prelude::*;
        let b = x.dim(0)?;
        // Multiples of 4 rows keep the int8 micro-tiles full.
        let per = b.div_ceil(chunks.max(1)).next_multiple_of(4).max(4);
        let outs = (0..b)
            .step_by(per)
            .collect::<Vec<_>>()
            .into_par_iter()
            .with_max_len(1)
            .map(|r0| {
                self.forward_hidden(&x.narrow(0, r0, per.min(b - r0))?)
                    .map(|(y, _)| y)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&outs, 0)
    }
}

impl Module for Model {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(y) = self.forward_row_parallel(x)? {
            return Ok(y);
        }
        Ok(self.forward_hidden(x)?.0)
    }
}

fn get_checked(ck: &Checkpoint, name: &str, shape: &[usize]) -> Result<TensorData> {
    if !ck.names().iter().any(|n| n == name) {
        return Err(Error::MissingTensor {
            name: name.to_string(),
        });
    }
    let t = ck.get(name)?;
    if t.shape() != shape {
        return Err(Error::ShapeMismatch {
            name: name.to_string(),
            expected: shape.to_vec(),
            found: t.shape().to_vec(),
        });
    }
    Ok(t)
}

fn finite(name: &str, v: Vec<f32>) -> Result<Vec<f32>> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Checkpoint(joulecut_checkpoint::Error::BadTensor {
            name: name.to_string(),
            reason: format!("element {i} is {} (NaN/Inf weights)", v[i]),
        }));
    }
    Ok(v)
}

/// The candle dtype of a dense f16/bf16 weight, `None` for any other encoding.
fn half_dtype(w: &TensorData) -> Option<candle_core::DType> {
    match w {
        TensorData::Dense(d) if d.dtype == joulecut_checkpoint::FloatType::F16 => {
            Some(candle_core::DType::F16)
        }
        TensorData::Dense(d) if d.dtype == joulecut_checkpoint::FloatType::BF16 => {
            Some(candle_core::DType::BF16)
        }
        _ => None,
    }
}

/// A CPU linear layer keeping its f16/bf16 weight as stored ([`LayerPath::Half`]): joulecut-ops'
/// dense kernel widens it as it reads, so a call streams half the bytes of the f32 layer.
fn half_linear(
    base: &str,
    wname: &str,
    w: &TensorData,
    bias: Vec<f32>,
    wshape: &[usize],
) -> Result<Layer> {
    let TensorData::Dense(d) = w else {
        unreachable!("half_dtype checked a dense tensor")
    };
    let wide = finite(wname, w.to_f32())?;
    let dtype = half_dtype(w).expect("checked by the caller");
    let half = Tensor::from_raw_buffer(&d.bytes, dtype, wshape, &Device::Cpu)
        .map_err(Error::candle("build weight"))?;
    let wt = Tensor::from_vec(wide, wshape.to_vec(), &Device::Cpu)
        .map_err(Error::candle("build weight"))?;
    let bt =
        Tensor::from_vec(bias, wshape[0], &Device::Cpu).map_err(Error::candle("build bias"))?;
    let mut l = Layer::dense_linear(base, wt, Some(bt), LayerPath::Half);
    l.half = Some(half);
    Ok(l)
}
