//! Routes compressed tensors to the kernels that make their savings real: int8 weights to
//! `joulecut-quant`'s integer GEMM, packed sparse weights to `joulecut-prune`'s CSR kernel.
//!
//! Both kernels run on the CPU. On another device (CUDA) such a layer is decoded to dense f32 there
//! instead: the same maths on the GPU's dense kernels, but not the integer or sparse saving. That
//! substitution is a [`Route::Fallback`], and [`RealKernels::fallbacks`] lists every one, so the
//! commands can say so (stderr and a `fallbacks` field in their JSON).
//!
//! ```no_run
//! use candle_core::Device;
//! use joulecut_checkpoint::Checkpoint;
//! use joulecut_models::Model;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ck = Checkpoint::open("mlp-int8.safetensors")?;
//! let cfg = Model::config_of(&ck, None)?;
//! let model = Model::load(&ck, &cfg, &Device::Cpu, &joulecut_models::RealKernels::default())?;
//! # Ok(()) }
//! ```

use crate::{Layer, LayerFactory, LayerPath, Model, Result};
use candle_core::Device;
use joulecut_checkpoint::{Checkpoint, DenseTensor, SparseValues, TensorData};
use joulecut_quant::ActivationGrid;
use serde::Serialize;

/// Picks real kernels for compressed layers on CPU; everything else is decoded to dense f32.
#[derive(Debug, Clone, Copy)]
pub struct RealKernels {
    /// Use the sparse kernel only below this density (fraction of non-zeros): above it the dense
    /// GEMM is faster, and the layer is reported as a nominal saving instead.
    pub max_sparse_density: f64,
    /// The same bound for the fully-connected layers of MLP and CNN models ([`Model::load`]),
    /// whose small layers are cheap to run dense: LeNet-300-100's 41 %-dense second layer (90 %
    /// global pruning) made the whole model 1.2-1.3x faster at batch 1 dense than through the CSR
    /// kernel. BERT-family encoders keep [`RealKernels::max_sparse_density`]. Packed 2:4 layers
    /// above it run the 2:4 kernel for small batches; below it they stay on the CSR kernel.
    pub fc_max_sparse_density: f64,
    /// How int8 layers quantize their inputs at run time. The default is the grid's own
    /// ([`ActivationGrid::S8`], what a file without `joulecut.int8_activations` means);
    /// [`RealKernels::for_checkpoint`] takes the file's.
    pub int8_activations: ActivationGrid,
}

impl Default for RealKernels {
    fn default() -> Self {
        RealKernels {
            max_sparse_density: 0.5,
            fc_max_sparse_density: 0.25,
            int8_activations: ActivationGrid::default(),
        }
    }
}

fn layer_err(name: &str, e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Layer {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

/// The decoded values of a sparse float weight.
fn sparse_float_values(w: &TensorData) -> Option<Vec<f32>> {
    let TensorData::Sparse(s) = w else {
        return None;
    };
    let SparseValues::Float { dtype, bytes } = &s.values else {
        return None;
    };
    let mut values = Vec::new();
    dtype.decode(bytes, &mut values);
    Some(values)
}

fn is_int8(w: &TensorData) -> bool {
    matches!(w, TensorData::Int8(_))
        || matches!(w, TensorData::Sparse(s) if matches!(s.values, SparseValues::Int8(_)))
}

/// A kernel that runs a compressed layer's encoding directly (CPU only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kernel {
    /// joulecut-quant's int8 GEMM / conv.
    Int8,
    /// joulecut-prune's CSR matmul.
    Sparse,
}

impl Kernel {
    fn describe(self) -> &'static str {
        match self {
            Kernel::Int8 => "int8 GEMM",
            Kernel::Sparse => "sparse CSR matmul",
        }
    }
}

/// How [`RealKernels`] runs one stored weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through a compression kernel (a real saving).
    Kernel(Kernel),
    /// Decoded to dense f32 by design: the tensor is dense, or too dense for the sparse kernel to
    /// win, or an encoding no kernel reads (a nominal saving).
    Dense,
    /// Decoded to dense f32 on the device because this kernel runs on the CPU only.
    Fallback(Kernel),
}

/// A layer that ran without the kernel its encoding calls for, as the JSON reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fallback {
    /// Layer name (`fc1`, `conv2`).
    pub layer: String,
    /// The kernel the CPU would use.
    pub wanted: Kernel,
    /// What ran instead.
    pub used: String,
    /// Why, in one line.
    pub reason: String,
}

impl RealKernels {
    /// The defaults, with the int8 activation grid the checkpoint asks for
    /// (`joulecut.int8_activations`; [`ActivationGrid::default`], 8-bit, when absent).
    pub fn for_checkpoint(ck: &Checkpoint) -> Result<RealKernels> {
        let mut k = RealKernels::default();
        if let Some(tag) = ck
            .metadata()
            .get(joulecut_checkpoint::meta::INT8_ACTIVATIONS)
        {
            k.int8_activations = tag.parse().map_err(|_| crate::Error::BadConfig {
                reason: format!(
                    "{}: `{}` is `{tag}`, not s8, u7 or u6",
                    ck.path().display(),
                    joulecut_checkpoint::meta::INT8_ACTIVATIONS
                ),
            })?;
        }
        Ok(k)
    }

    /// The route for a stored weight of a linear (`conv == false`) or conv layer on a device;
    /// `on_cpu` is `device.is_cpu()`.
    pub fn route(&self, w: &TensorData, conv: bool, on_cpu: bool) -> Route {
        let wanted = if is_int8(w) {
            Some(Kernel::Int8)
        } else if let (TensorData::Sparse(s), false) = (w, conv) {
            let (rows, cols) = (s.shape[0], s.shape[1..].iter().product::<usize>());
            let density = s.nnz() as f64 / (rows * cols).max(1) as f64;
            let float = matches!(s.values, SparseValues::Float { .. });
            (float && density <= self.max_sparse_density).then_some(Kernel::Sparse)
        } else {
            None
        };
        match (wanted, on_cpu) {
            (None, _) => Route::Dense,
            (Some(k), true) => Route::Kernel(k),
            (Some(k), false) => Route::Fallback(k),
        }
    }

    /// Every layer of `model` (loaded from `ck` with these kernels on `device`) that fell back to
    /// dense f32 because its kernel does not run on that device; empty on the CPU.
    pub fn fallbacks(
        &self,
        model: &Model,
        ck: &Checkpoint,
        device: &Device,
    ) -> Result<Vec<Fallback>> {
        let mut out = Vec::new();
        if device.is_cpu() {
            return Ok(out);
        }
        for l in model.layers().filter(|l| l.path == LayerPath::Decoded) {
            let w = ck.get(&format!("{}.weight", l.name))?;
            let conv = w.shape().len() == 4;
            if let Route::Fallback(k) = self.route(&w, conv, false) {
                out.push(Fallback {
                    layer: l.name.clone(),
                    wanted: k,
                    used: format!("dense f32 on {}", device_name(device)),
                    reason: format!(
                        "joulecut's {} runs on the CPU only; decoded to dense f32 on the device",
                        k.describe()
                    ),
                });
            }
        }
        Ok(out)
    }
}

/// Whether a dense tensor's stored values keep at most 2 non-zeros in each run of 4, read from
/// the bytes (zero: every bit but the sign clear), so that a trained dense layer is turned away at
/// its first group instead of being decoded here and again by the dense path.
fn stored_fits_two_four(d: &DenseTensor) -> bool {
    let e = d.dtype.size();
    let zero = |v: &[u8]| v[..e - 1].iter().all(|&b| b == 0) && v[e - 1] & 0x7f == 0;
    d.bytes
        .chunks_exact(4 * e)
        .all(|g| g.chunks_exact(e).filter(|v| !zero(v)).count() <= 2)
}

/// A float linear weight (dense, or packed sparse) whose every group of 4 inputs keeps at most 2
/// values: a dense f32 layer that runs small batches through the 2:4 kernel. `None` for any other,
/// and for packed weights sparse enough for the CSR kernel (`max_density`), which touches fewer.
fn two_four_linear(
    name: &str,
    w: &TensorData,
    bias: Option<&[f32]>,
    max_density: f64,
) -> Result<Option<Layer>> {
    let shape = w.shape();
    if shape.len() != 2 || shape[1] % 4 != 0 {
        return Ok(None);
    }
    let candidate = match w {
        TensorData::Dense(d) => stored_fits_two_four(d),
        TensorData::Sparse(s) => {
            let density = s.nnz() as f64 / s.shape.iter().product::<usize>().max(1) as f64;
            matches!(s.values, SparseValues::Float { .. }) && density > max_density
        }
        _ => false,
    };
    if !candidate {
        return Ok(None);
    }
    let (rows, cols) = (shape[0], shape[1]);
    let dense = w.to_f32();
    if !joulecut_prune::TwoFourMatrix::fits(rows, cols, &dense)
        || dense.iter().any(|v| !v.is_finite())
    {
        return Ok(None);
    }
    let m = joulecut_prune::TwoFourMatrix::from_dense(rows, cols, &dense)
        .map_err(|e| layer_err(name, e))?;
    let bias = bias.map_or_else(|| vec![0.0; rows], <[f32]>::to_vec);
    let wt = candle_core::Tensor::from_vec(dense, (rows, cols), &Device::Cpu)
        .map_err(crate::Error::candle("build weight"))?;
    let bt = candle_core::Tensor::from_vec(bias.clone(), rows, &Device::Cpu)
        .map_err(crate::Error::candle("build bias"))?;
    Ok(Some(
        Layer::dense_linear(name, wt, Some(bt), LayerPath::TwoFour).with_two_four(m, bias),
    ))
}

/// `cpu`, `cuda:N` or `metal:N`: a device as reports name it.
pub fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

impl LayerFactory for RealKernels {
    fn linear(
        &self,
        name: &str,
        w: &TensorData,
        bias: Option<&[f32]>,
        device: &Device,
    ) -> Result<Option<Layer>> {
        if device.is_cpu()
            && let Some(l) = two_four_linear(name, w, bias, self.fc_max_sparse_density)?
        {
            return Ok(Some(l));
        }
        // The integer and CSR kernels run on host memory; elsewhere `None` decodes to dense f32
        // on the device ([`RealKernels::fallbacks`] reports it).
        match self.route(w, false, device.is_cpu()) {
            Route::Kernel(Kernel::Int8) => {
                let l = joulecut_quant::Int8Linear::from_data(name, w, bias)
                    .map_err(|e| layer_err(name, e))?
                    .with_activation_quant(self.int8_activations.mode());
                // A following ReLU runs in the GEMM's epilogue, not as a separate candle op.
                let relu = Box::new(l.clone().with_relu(true));
                Ok(Some(
                    Layer::new(name, LayerPath::Int8, Box::new(l)).with_fused_relu(relu),
                ))
            }
            Route::Kernel(Kernel::Sparse) => {
                let (TensorData::Sparse(s), Some(values)) = (w, sparse_float_values(w)) else {
                    return Ok(None);
                };
                let (rows, cols) = (s.shape[0], s.shape[1..].iter().product::<usize>());
                if s.nnz() as f64 > self.fc_max_sparse_density * (rows * cols) as f64 {
                    return Ok(None);
                }
                let csr = joulecut_prune::CsrMatrix::from_bitmap(rows, cols, &s.bitmap, &values)
                    .map_err(|e| layer_err(name, e))?;
                let l = joulecut_prune::SparseLinear::new(csr, bias.map(|b| b.to_vec()))
                    .map_err(|e| layer_err(name, e))?;
                // A following ReLU runs on the kernel's output, not as a separate candle op.
                let relu = Box::new(l.clone().with_relu(true));
                Ok(Some(
                    Layer::new(name, LayerPath::Sparse, Box::new(l)).with_fused_relu(relu),
                ))
            }
            Route::Dense | Route::Fallback(_) => Ok(None),
        }
    }

    fn conv(
        &self,
        name: &str,
        w: &TensorData,
        bias: Option<&[f32]>,
        padding: usize,
        device: &Device,
    ) -> Result<Option<Layer>> {
        if self.route(w, true, device.is_cpu()) == Route::Kernel(Kernel::Int8) {
            let l = joulecut_quant::Int8Conv2d::from_data(name, w, bias, padding, 1)
                .map_err(|e| layer_err(name, e))?
                .with_activation_quant(self.int8_activations.mode());
            // As for linear layers: the following ReLU runs in the GEMM's epilogue; the models'
            // conv blocks max-pool after it, which the int8 conv fuses into its output layout.
            let relu = l.clone().with_relu(true);
            let k = crate::CONV_POOL;
            let relu_pool = Box::new(relu.clone().with_pool(k));
            return Ok(Some(
                Layer::new(name, LayerPath::Int8, Box::new(l))
                    .with_fused_relu(Box::new(relu))
                    .with_fused_relu_pool(k, relu_pool),
            ));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Module, Tensor};
    use joulecut_checkpoint::{DenseTensor, FloatType, Int8Tensor, SparseTensor};

    use super::*;

    fn int8(shape: Vec<usize>) -> TensorData {
        let n = shape.iter().product();
        TensorData::Int8(Int8Tensor {
            shape,
            values: vec![1; n],
            scales: vec![0.5],
            zero_points: None,
            axis: None,
            orig_dtype: FloatType::F32,
            in_scales: None,
        })
    }

    /// A sparse float weight of `shape` whose first `nnz` values are stored.
    fn sparse_of(shape: Vec<usize>, nnz: usize) -> TensorData {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| if i < nnz { 1.0 } else { 0.0 }).collect();
        TensorData::Sparse(SparseTensor::pack_f32(shape, &v, FloatType::F32))
    }

    /// A 4x8 sparse float weight with `nnz` stored values.
    fn sparse(nnz: usize) -> TensorData {
        sparse_of(vec![4, 8], nnz)
    }

    #[test]
    fn cpu_routes_compressed_layers_to_their_kernels() {
        let k = RealKernels::default();
        assert_eq!(
            k.route(&int8(vec![4, 8]), false, true),
            Route::Kernel(Kernel::Int8)
        );
        assert_eq!(
            k.route(&int8(vec![2, 1, 3, 3]), true, true),
            Route::Kernel(Kernel::Int8)
        );
        assert_eq!(
            k.route(&sparse(8), false, true),
            Route::Kernel(Kernel::Sparse)
        );
        // Too dense for the CSR kernel, a sparse conv, a dense tensor: decoded by design.
        assert_eq!(k.route(&sparse(20), false, true), Route::Dense);
        let dense = TensorData::Dense(DenseTensor::from_f32(vec![4, 8], &[0.5; 32]));
        assert_eq!(k.route(&dense, false, true), Route::Dense);
    }

    #[test]
    fn other_devices_fall_back_and_only_where_a_kernel_was_wanted() {
        let k = RealKernels::default();
        assert_eq!(
            k.route(&int8(vec![4, 8]), false, false),
            Route::Fallback(Kernel::Int8)
        );
        assert_eq!(
            k.route(&int8(vec![2, 1, 3, 3]), true, false),
            Route::Fallback(Kernel::Int8)
        );
        assert_eq!(
            k.route(&sparse(8), false, false),
            Route::Fallback(Kernel::Sparse)
        );
        assert_eq!(k.route(&sparse(20), false, false), Route::Dense);
        let dense = TensorData::Dense(DenseTensor::from_f32(vec![4, 8], &[0.5; 32]));
        assert_eq!(k.route(&dense, false, false), Route::Dense);
    }

    /// Writes `cfg` with every parameter dense (random) except the names in `int8_names`, loads it
    /// through the real kernels.
    fn model_with(cfg: &crate::ModelConfig, int8_names: &[&str], tag: &str) -> Model {
        let dir = std::env::temp_dir().join(format!("jc-rows-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        let mut w = joulecut_checkpoint::CheckpointWriter::new();
        w.set_model_config(cfg.to_json());
        let mut rng = joulecut_testkit::Lcg32::new(1);
        for (name, shape) in cfg.param_shapes() {
            let t = if int8_names.contains(&name.as_str()) {
                int8(shape)
            } else {
                let n: usize = shape.iter().product();
                let v: Vec<f32> = (0..n).map(|_| (rng.next_f32() - 0.5) * 0.4).collect();
                TensorData::Dense(DenseTensor::from_f32(shape, &v))
            };
            w.insert(name, t);
        }
        w.write(&path, &[]).unwrap();
        let ck = Checkpoint::open(&path).unwrap();
        let model = Model::load(&ck, cfg, &Device::Cpu, &RealKernels::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        model
    }

    #[test]
    fn row_chunked_forward_equals_layer_by_layer() {
        let mlp = crate::ModelConfig::parse("mlp:8-4-3").unwrap();
        let lenet = crate::ModelConfig::lenet5();
        let cases = [
            (model_with(&mlp, &["fc1.weight"], "mlp"), 8),
            (
                model_with(&lenet, &["conv2.weight", "fc2.weight"], "lenet"),
                784,
            ),
            (model_with(&lenet, &[], "lenet-f32"), 784),
        ];
        for (model, width) in &cases {
            for (batch, chunks) in [(70, 3), (5, 2), (64, 2), (96, 6)] {
                let x = Tensor::randn(0f32, 1., (batch, *width), &Device::Cpu).unwrap();
                let whole = model.forward_hidden(&x).unwrap().0;
                let split = model.forward_row_chunks(&x, chunks).unwrap();
                assert_eq!(split.dims(), whole.dims());
                let (a, b) = (
                    whole.to_vec2::<f32>().unwrap(),
                    split.to_vec2::<f32>().unwrap(),
                );
                for (ra, rb) in a.iter().zip(&b) {
                    for (va, vb) in ra.iter().zip(rb) {
                        assert!((va - vb).abs() <= 1e-5 * (1.0 + va.abs()), "{va} vs {vb}");
                    }
                }
                // The public forward (row-parallel on a multi-thread pool) agrees as well.
                let fwd = model.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                assert_eq!(fwd.len(), batch);
                for (ra, rf) in a.iter().zip(&fwd) {
                    for (va, vf) in ra.iter().zip(rf) {
                        assert!((va - vf).abs() <= 1e-5 * (1.0 + va.abs()), "{va} vs {vf}");
                    }
                }
            }
        }
    }

    /// f16 and bf16 linear weights stay 16-bit for single rows (`LayerPath::Half`) and the model
    /// computes what the same weights widened to f32 compute, at batch 1 and in batches; convs
    /// (LeNet-5) are decoded as before.
    #[test]
    fn half_precision_linear_layers_read_their_weights_as_stored() {
        use joulecut_checkpoint::FloatType;
        for (cfg, width) in [
            (
                crate::ModelConfig::parse("mlp:784-300-100-10").unwrap(),
                784,
            ),
            (crate::ModelConfig::lenet5(), 784),
        ] {
            let dir =
                std::env::temp_dir().join(format!("jc-half-{}-{}", cfg.name(), std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut rng = joulecut_testkit::Lcg32::new(5);
            let params: Vec<(String, Vec<usize>, Vec<f32>)> = cfg
                .param_shapes()
                .into_iter()
                .map(|(n, shape)| {
                    let len: usize = shape.iter().product();
                    let v = (0..len).map(|_| (rng.next_f32() - 0.5) * 0.2).collect();
                    (n, shape, v)
                })
                .collect();
            for dtype in [FloatType::F16, FloatType::BF16] {
                let write = |half: bool, file: &str| {
                    let mut w = joulecut_checkpoint::CheckpointWriter::new();
                    w.set_model_config(cfg.to_json());
                    for (n, shape, v) in &params {
                        let d = DenseTensor::from_f32(shape.clone(), v);
                        // the f32 file holds the 16-bit values widened: the same numbers
                        let d = DenseTensor {
                            dtype,
                            bytes: dtype.encode(&d.to_f32()),
                            shape: shape.clone(),
                        };
                        let d = if half {
                            d
                        } else {
                            DenseTensor::from_f32(shape.clone(), &d.to_f32())
                        };
                        w.insert(n, TensorData::Dense(d));
                    }
                    let path = dir.join(file);
                    w.write(&path, &[]).unwrap();
                    let ck = Checkpoint::open(&path).unwrap();
                    Model::load(&ck, &cfg, &Device::Cpu, &RealKernels::default()).unwrap()
                };
                let (half, wide) = (
                    write(true, "half.safetensors"),
                    write(false, "wide.safetensors"),
                );
                let fc_paths: Vec<LayerPath> = half
                    .layers()
                    .filter(|l| l.name.starts_with("fc"))
                    .map(|l| l.path)
                    .collect();
                assert!(
                    fc_paths.iter().all(|p| *p == LayerPath::Half),
                    "{fc_paths:?}"
                );
                assert!(wide.layers().all(|l| l.path == LayerPath::Dense));
                for batch in [1, 5] {
                    let x = Tensor::randn(0f32, 1., (batch, width), &Device::Cpu).unwrap();
                    let a = half.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                    let b = wide.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                    for (ra, rb) in a.iter().zip(&b) {
                        for (va, vb) in ra.iter().zip(rb) {
                            assert!(
                                (va - vb).abs() <= 1e-4 * (1.0 + vb.abs()),
                                "{dtype} batch {batch}: {va} vs {vb}"
                            );
                        }
                    }
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_cpu_model_reports_no_fallbacks_and_runs_its_kernels() {
        let dir = std::env::temp_dir().join(format!("jc-kernels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        let cfg = crate::ModelConfig::parse("mlp:8-4-3").unwrap();
        let mut w = joulecut_checkpoint::CheckpointWriter::new();
        w.set_model_config(cfg.to_json());
        w.insert("fc1.weight".to_string(), int8(vec![4, 8]));
        w.insert(
            "fc1.bias".to_string(),
            TensorData::Dense(DenseTensor::from_f32(vec![4], &[0.0; 4])),
        );
        w.insert("fc2.weight".to_string(), sparse_of(vec![3, 4], 3));
        w.insert(
            "fc2.bias".to_string(),
            TensorData::Dense(DenseTensor::from_f32(vec![3], &[0.0; 3])),
        );
        w.write(&path, &[]).unwrap();
        let ck = Checkpoint::open(&path).unwrap();
        let k = RealKernels::default();
        let model = Model::load(&ck, &cfg, &Device::Cpu, &k).unwrap();
        let paths: Vec<_> = model.layers().map(|l| l.path).collect();
        assert_eq!(paths, [LayerPath::Int8, LayerPath::Sparse]);
        assert!(k.fallbacks(&model, &ck, &Device::Cpu).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file without `joulecut.int8_activations` runs on the grid's default (8-bit, as int8 files
    /// did before the tag existed); a tagged file on its tag; an unknown tag is refused.
    #[test]
    fn the_activation_grid_comes_from_the_file_and_defaults_to_s8() {
        let dir = std::env::temp_dir().join(format!("jc-grid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let grid_of = |tag: Option<&str>| {
            let path = dir.join(format!("{}.safetensors", tag.unwrap_or("none")));
            let mut w = joulecut_checkpoint::CheckpointWriter::new();
            w.insert("fc1.weight".to_string(), int8(vec![4, 8]));
            if let Some(t) = tag {
                w.set_metadata(joulecut_checkpoint::meta::INT8_ACTIVATIONS, t);
            }
            w.write(&path, &[]).unwrap();
            RealKernels::for_checkpoint(&Checkpoint::open(&path).unwrap())
                .map(|k| k.int8_activations)
        };
        assert_eq!(RealKernels::default().int8_activations, ActivationGrid::S8);
        assert_eq!(grid_of(None).unwrap(), ActivationGrid::S8);
        assert_eq!(grid_of(Some("u6")).unwrap(), ActivationGrid::U6);
        assert_eq!(grid_of(Some("u7")).unwrap(), ActivationGrid::U7);
        assert_eq!(grid_of(Some("s8")).unwrap(), ActivationGrid::S8);
        let e = grid_of(Some("u9")).unwrap_err().to_string();
        assert!(
            e.contains("joulecut.int8_activations") && e.contains("u9"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Linear weights with at most 2 non-zeros in each group of 4 inputs (stored dense or packed)
    /// run the 2:4 kernel for batches of 1-2 rows and their dense copy above; every batch size
    /// computes what the dense model computes. A weight that breaks the pattern stays dense.
    #[test]
    fn two_four_linear_layers_run_their_kernel_at_small_batches() {
        let cfg = crate::ModelConfig::parse("mlp:784-300-100-10").unwrap();
        let dir = std::env::temp_dir().join(format!("jc-24-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = joulecut_testkit::Lcg32::new(9);
        let write = |file: &str, pack: bool, break_fc3: bool, rng: &mut joulecut_testkit::Lcg32| {
            let mut w = joulecut_checkpoint::CheckpointWriter::new();
            w.set_model_config(cfg.to_json());
            for (n, shape) in cfg.param_shapes() {
                let len: usize = shape.iter().product();
                let mut v: Vec<f32> = (0..len).map(|_| (rng.next_f32() - 0.5) * 0.2).collect();
                if shape.len() == 2 {
                    for (g, group) in v.chunks_exact_mut(4).enumerate() {
                        // two of the four zeroed, at positions that vary from group to group
                        group[(g * 7) % 4] = 0.0;
                        group[(g * 7 + 1) % 4] = 0.0;
                    }
                    if break_fc3 && n == "fc3.weight" {
                        v[..4].fill(1.0);
                    }
                }
                let t = if pack && shape.len() == 2 {
                    TensorData::Sparse(SparseTensor::pack_f32(shape, &v, FloatType::F32))
                } else {
                    TensorData::Dense(DenseTensor::from_f32(shape, &v))
                };
                w.insert(n, t);
            }
            let path = dir.join(file);
            w.write(&path, &[]).unwrap();
            Checkpoint::open(&path).unwrap()
        };
        for pack in [false, true] {
            let ck = write("w.safetensors", pack, false, &mut rng);
            let fast = Model::load(&ck, &cfg, &Device::Cpu, &RealKernels::default()).unwrap();
            let plain = Model::load(&ck, &cfg, &Device::Cpu, &crate::DenseFactory).unwrap();
            assert!(
                fast.layers().all(|l| l.path == LayerPath::TwoFour),
                "{pack}"
            );
            assert!(fast.saves_compute(1) && fast.saves_compute(2) && !fast.saves_compute(3));
            assert!(!plain.saves_compute(1));
            for batch in [1, 2, 3, 64] {
                let x = Tensor::randn(0f32, 1., (batch, 784), &Device::Cpu).unwrap();
                let a = fast.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                let b = plain.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                for (va, vb) in a.iter().flatten().zip(b.iter().flatten()) {
                    assert!(
                        (va - vb).abs() <= 1e-4 * (1.0 + vb.abs()),
                        "b{batch}: {va} vs {vb}"
                    );
                }
            }
        }
        let ck = write("broken.safetensors", false, true, &mut rng);
        let m = Model::load(&ck, &cfg, &Device::Cpu, &RealKernels::default()).unwrap();
        let paths: Vec<_> = m.layers().map(|l| l.path).collect();
        assert_eq!(
            paths,
            [LayerPath::TwoFour, LayerPath::TwoFour, LayerPath::Dense]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The byte-level pre-check agrees with the decoded values: signed zeros count as zeros, in
    /// every float type, and a third non-zero in a group rules the tensor out.
    #[test]
    fn the_stored_pattern_check_reads_zeros_in_every_float_type() {
        for dtype in [FloatType::F32, FloatType::F16, FloatType::BF16] {
            let fits = [1.0f32, -0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0];
            let breaks = [1.0f32, -0.0, 3.0, -2.0, 0.0, 0.0, 0.0, 0.0];
            let dense = |v: &[f32]| DenseTensor {
                dtype,
                bytes: dtype.encode(v),
                shape: vec![2, 4],
            };
            assert!(stored_fits_two_four(&dense(&fits)), "{dtype}");
            assert!(!stored_fits_two_four(&dense(&breaks)), "{dtype}");
        }
    }
}
