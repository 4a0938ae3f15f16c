//! Int8Linear / Int8Conv2d against f32 candle, fake-quant gradients.

use candle_core::{DType, Device, Module, Tensor, Var};
use joulecut_quant::{
    Int8Config, Int8Conv2d, Int8Kernel, Int8Linear, RangeObserver, ScaleGranularity, Symmetry,
    fake_quant, fake_quant_rows,
};

/// Relative L2 error of an int8 layer's output vs f32 (int8 weights and activations).
const LINEAR_REL_TOL: f32 = 0.02;

fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    joulecut_testkit::XorShift64::new(seed).signed_vec(n, scale)
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let n = a
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (d / n).sqrt()
}

#[test]
fn int8_linear_is_close_to_f32() {
    for &(batch, inp, out) in &[
        (1usize, 784usize, 300usize),
        (3, 784, 10),
        (257, 300, 100),
        (8, 5, 3),
    ] {
        let w = values(inp * out, 1, 0.1);
        let b = values(out, 2, 0.1);
        let x = Tensor::from_vec(values(batch * inp, 3, 2.0), (batch, inp), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), (out, inp), &Device::Cpu).unwrap();
        let bt = Tensor::from_vec(b.clone(), out, &Device::Cpu).unwrap();
        let want = candle_nn::Linear::new(wt, Some(bt)).forward(&x).unwrap();
        for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
            for granularity in [ScaleGranularity::Tensor, ScaleGranularity::Channel] {
                let cfg = Int8Config {
                    symmetry,
                    granularity,
                    ..Int8Config::default()
                };
                for kernel in Int8Kernel::available() {
                    let layer = Int8Linear::from_f32("fc", &w, out, inp, Some(&b), &cfg)
                        .unwrap()
                        .with_kernel(kernel);
                    let got = layer.forward(&x).unwrap();
                    assert_eq!(got.dims(), &[batch, out]);
                    let e = rel_l2(&want, &got);
                    assert!(
                        e < LINEAR_REL_TOL,
                        "{kernel} {cfg:?} {batch}x{inp}x{out}: rel err {e}"
                    );
                }
                // ReLU is fused.
                let relu = Int8Linear::from_f32("fc", &w, out, inp, Some(&b), &cfg)
                    .unwrap()
                    .with_relu(true);
                let got = relu.forward(&x).unwrap();
                assert!(rel_l2(&want.relu().unwrap(), &got) < LINEAR_REL_TOL);
                assert!(
                    got.flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .all(|v| *v >= 0.0)
                );
            }
        }
    }
}

/// Smoothed weights (`in_scales`): the layer decodes to the smoothed tensor's weights, its forward
/// pass multiplies the input columns by the factors before quantizing them, and on an input with an
/// outlier channel that beats the plain layer on 7-bit rows.
#[test]
fn smoothed_int8_linear_quantizes_scaled_inputs() {
    let (batch, inp, out) = (33usize, 64usize, 24usize);
    let w = values(inp * out, 11, 0.1);
    let mut x = values(batch * inp, 12, 1.0);
    for r in 0..batch {
        x[r * inp + 5] *= 60.0; // one outlier channel, as after a transformer's LayerNorm
    }
    // SmoothQuant's factors at α = 0.5, stored inverted as the input scales
    let col_max = |v: &[f32], rows: usize| -> Vec<f32> {
        (0..inp)
            .map(|j| (0..rows).map(|r| v[r * inp + j].abs()).fold(0f32, f32::max))
            .collect()
    };
    let (xm, wm) = (col_max(&x, batch), col_max(&w, out));
    let in_scales: Vec<f32> = xm.iter().zip(&wm).map(|(a, b)| (b / a).sqrt()).collect();
    let cfg = Int8Config::default();
    let q = joulecut_quant::quantize_smoothed("fc", &w, &[out, inp], &in_scales, &cfg).unwrap();
    assert_eq!(q.in_scales.as_deref(), Some(&in_scales[..]));
    let xt = Tensor::from_vec(x.clone(), (batch, inp), &Device::Cpu).unwrap();
    let wt = Tensor::from_vec(w.clone(), (out, inp), &Device::Cpu).unwrap();
    let want = xt.matmul(&wt.t().unwrap()).unwrap();
    let plain = Int8Linear::from_f32("fc", &w, out, inp, None, &cfg).unwrap();
    for kernel in Int8Kernel::available() {
        let smoothed = Int8Linear::new("fc", &q, None).unwrap().with_kernel(kernel);
        assert_eq!(smoothed.input_scales(), Some(&in_scales[..]));
        for (a, b) in smoothed.dequantized_weight().iter().zip(q.dequantize()) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
        }
        let u7 = joulecut_quant::ActivationQuant::DynamicU7;
        let e_smooth = rel_l2(
            &want,
            &smoothed
                .clone()
                .with_activation_quant(u7)
                .forward(&xt)
                .unwrap(),
        );
        let e_plain = rel_l2(
            &want,
            &plain
                .clone()
                .with_kernel(kernel)
                .with_activation_quant(u7)
                .forward(&xt)
                .unwrap(),
        );
        assert!(
            e_smooth < e_plain / 2.0,
            "{kernel}: smoothed {e_smooth} vs plain {e_plain}"
        );
    }
    // the factors must fit the layer
    assert!(
        Int8Linear::new("fc", &q, None)
            .unwrap()
            .with_input_scales("fc", Some(vec![1.0; inp + 1]))
            .is_err()
    );
    assert!(
        joulecut_quant::quantize_smoothed("fc", &w, &[out, inp], &vec![0.0; inp], &cfg).is_err()
    );
}

#[test]
fn int8_linear_static_input_grid() {
    let (batch, inp, out) = (16, 64, 8);
    let w = values(inp * out, 4, 0.2);
    let xv: Vec<f32> = values(batch * inp, 5, 1.0)
        .iter()
        .map(|v| v.abs())
        .collect();
    let mut obs = RangeObserver::new(joulecut_quant::Calibration::MinMax, Symmetry::Asymmetric);
    obs.observe(&xv);
    let layer = Int8Linear::from_f32("fc", &w, out, inp, None, &Int8Config::default())
        .unwrap()
        .with_static_input(obs.params().unwrap());
    let x = Tensor::from_vec(xv, (batch, inp), &Device::Cpu).unwrap();
    let wt = Tensor::from_vec(w, (out, inp), &Device::Cpu).unwrap();
    let want = candle_nn::Linear::new(wt, None).forward(&x).unwrap();
    assert!(rel_l2(&want, &layer.forward(&x).unwrap()) < LINEAR_REL_TOL);
}

#[test]
fn int8_linear_rejects_bad_parts() {
    let vals = vec![1i8; 6];
    assert!(
        Int8Linear::from_parts("fc", &[2, 3], &vals, &[0.1, 0.1, 0.1], None, Some(0), None)
            .is_err()
    );
    assert!(Int8Linear::from_parts("fc", &[2, 3], &vals, &[0.1], None, Some(0), None).is_err());
    assert!(Int8Linear::from_parts("fc", &[2, 3], &vals, &[f32::NAN], None, None, None).is_err());
    assert!(
        Int8Linear::from_parts("fc", &[2, 3], &vals, &[0.1], None, None, Some(&[1.0])).is_err()
    );
    assert!(Int8Linear::from_parts("fc", &[6], &vals, &[0.1], None, None, None).is_err());
    assert!(
        Int8Linear::from_parts(
            "fc",
            &[2, 3],
            &vals,
            &[0.1, 0.2],
            Some(&[0, 300]),
            Some(0),
            None
        )
        .is_err()
    );
    let ok = Int8Linear::from_parts(
        "fc",
        &[2, 3],
        &vals,
        &[0.1, 0.2],
        Some(&[0, 3]),
        Some(0),
        None,
    )
    .unwrap();
    let x = Tensor::ones((1, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(ok.forward(&x).is_err());
}

#[test]
fn int8_conv2d_is_close_to_f32() {
    for &(n, c, h, o, k, pad, stride) in &[
        (2usize, 1usize, 28usize, 6usize, 5usize, 2usize, 1usize),
        (3, 6, 14, 16, 5, 0, 1),
        (1, 3, 9, 4, 3, 1, 2),
    ] {
        let w = values(o * c * k * k, 11, 0.3);
        let b = values(o, 12, 0.1);
        let x =
            Tensor::from_vec(values(n * c * h * h, 13, 1.0), (n, c, h, h), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), (o, c, k, k), &Device::Cpu).unwrap();
        let want = x
            .conv2d(&wt, pad, stride, 1, 1)
            .unwrap()
            .broadcast_add(&Tensor::from_vec(b.clone(), (1, o, 1, 1), &Device::Cpu).unwrap())
            .unwrap();
        let layer = Int8Conv2d::from_f32(
            "conv",
            &w,
            [o, c, k, k],
            Some(&b),
            pad,
            stride,
            &Int8Config::default(),
        )
        .unwrap();
        let got = layer.forward(&x).unwrap();
        assert_eq!(got.dims(), want.dims());
        let e = rel_l2(&want, &got);
        assert!(
            e < LINEAR_REL_TOL,
            "conv {n}x{c}x{h} -> {o} k{k} p{pad} s{stride}: rel err {e}"
        );
        // 7-bit unsigned input grid (half the resolution; padding is the code of 0.0).
        let u7 = layer
            .clone()
            .with_activation_quant(joulecut_quant::gemm::ActivationQuant::DynamicU7);
        let e7 = rel_l2(&want, &u7.forward(&x).unwrap());
        assert!(
            e7 < 2.0 * LINEAR_REL_TOL,
            "u7 conv k{k} p{pad} s{stride}: rel err {e7}"
        );
        // 6-bit unsigned input grid (the AVX2 kernel's paired loop).
        let u6 = layer
            .clone()
            .with_activation_quant(joulecut_quant::gemm::ActivationQuant::DynamicU6);
        let e6 = rel_l2(&want, &u6.forward(&x).unwrap());
        assert!(
            e6 < 4.0 * LINEAR_REL_TOL,
            "u6 conv k{k} p{pad} s{stride}: rel err {e6}"
        );
        // The fused ReLU is exactly the ReLU of the same output.
        let fused = layer.clone().with_relu(true).forward(&x).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&fused), flat(&got.relu().unwrap()));
        // The fused pooling is exactly max pooling of that output (odd sizes drop the partial
        // window, as joulecut-ops does).
        for pk in [2usize, 3] {
            let pooled = layer
                .clone()
                .with_relu(true)
                .with_pool(pk)
                .forward(&x)
                .unwrap();
            let want_pool = joulecut_ops::max_pool2d(&fused, pk).unwrap();
            assert_eq!(pooled.dims(), want_pool.dims(), "pool {pk}");
            assert_eq!(flat(&pooled), flat(&want_pool), "pool {pk}");
        }
    }
}

#[test]
fn fake_quant_is_straight_through() {
    for granularity in [ScaleGranularity::Tensor, ScaleGranularity::Channel] {
        for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
            let cfg = Int8Config {
                symmetry,
                granularity,
                ..Int8Config::default()
            };
            let wv = values(12, 21, 1.0);
            let w = Var::from_vec(wv.clone(), (3, 4), &Device::Cpu).unwrap();
            let y = fake_quant(w.as_tensor(), &cfg).unwrap();
            // Forward: the int8 grid of quantize_tensor.
            let q = joulecut_quant::quantize_tensor("w", &wv, &[3, 4], &cfg)
                .unwrap()
                .dequantize();
            assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), q);
            // Backward: identity.
            let loss = y
                .broadcast_mul(&Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            let g = loss.backward().unwrap();
            let gw = g.get(&w).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(gw, vec![vec![1.0, 2.0, 3.0, 4.0]; 3]);
        }
    }
}

#[test]
fn fake_quant_rows_matches_tensor_op_path_shape() {
    let x = Tensor::from_vec(values(40, 31, 3.0), (4, 10), &Device::Cpu).unwrap();
    let y = fake_quant_rows(&x).unwrap();
    assert_eq!(y.dims(), x.dims());
    assert!(rel_l2(&x, &y) < 0.01);
    // f64 input takes the tensor-op path and agrees closely.
    let y64 = fake_quant_rows(&x.to_dtype(DType::F64).unwrap())
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    assert!(rel_l2(&y, &y64) < 1e-3);
}

/// A batch split across threads (several images per task, and several tasks) gives each image
/// exactly what it gets alone: the grids are per image, and the parallel im2col and layout must
/// not mix images up.
#[test]
fn int8_conv_batches_equal_their_images_one_at_a_time() {
    let (c, h, o, k, pad) = (3usize, 12usize, 8usize, 3usize, 1usize);
    let n = 40;
    let w = values(o * c * k * k, 21, 0.3);
    let b = values(o, 22, 0.1);
    let layer = Int8Conv2d::from_f32(
        "conv",
        &w,
        [o, c, k, k],
        Some(&b),
        pad,
        1,
        &Int8Config::default(),
    )
    .unwrap()
    .with_relu(true);
    let x = values(n * c * h * h, 23, 1.0);
    for pool in [1usize, 2] {
        let l = layer.clone().with_pool(pool);
        let batch = l.forward_slice(&x, n, h, h);
        let per = batch.len() / n;
        for i in 0..n {
            let one = l.forward_slice(&x[i * c * h * h..(i + 1) * c * h * h], 1, h, h);
            assert_eq!(one, batch[i * per..(i + 1) * per], "image {i}, pool {pool}");
        }
    }
}

/// The direct kernel (AVX2 machines, stride 1, `kw ≤ 8`, u7/u6 codes, symmetric weights) gives
/// exactly what im2col + the portable GEMM give, bit for bit: odd sizes, 1-3 input channels,
/// kernels 1×1 to 8×3, up to 17 output channels (partial groups of 8), padding 0-2, pooling 1
/// and 2 (partial windows dropped), ReLU on and off, per-tensor and per-channel weights, and a
/// static grid. Layers it does not take (signed codes, stride 2, 9-wide kernels) must agree too.
#[test]
fn the_direct_int8_conv_equals_im2col_bit_for_bit() {
    use joulecut_quant::{ActivationQuant, Int8Kernel, QuantParams, ScaleGranularity};
    let cases = [
        // (c, h, w, o, kh, kw, pad, stride)
        (1, 28, 28, 6, 5, 5, 2, 1),
        (6, 14, 14, 16, 5, 5, 0, 1),
        (2, 9, 13, 17, 3, 3, 1, 1),
        (3, 7, 5, 1, 1, 1, 0, 1),
        (1, 11, 10, 9, 8, 3, 2, 1),
        (2, 10, 10, 4, 2, 7, 1, 1),
        (1, 12, 12, 5, 3, 9, 4, 1),
        (2, 12, 12, 5, 3, 3, 1, 2),
    ];
    let modes = [
        ActivationQuant::DynamicU6,
        ActivationQuant::DynamicU7,
        ActivationQuant::Dynamic,
        ActivationQuant::Static(QuantParams {
            scale: 0.05,
            zero_point: 40,
            symmetry: joulecut_quant::Symmetry::Asymmetric,
        }),
    ];
    let fast = Int8Kernel::available().into_iter().last().unwrap();
    for (i, &(c, h, w, o, kh, kw, pad, stride)) in cases.iter().enumerate() {
        let wt = values(o * c * kh * kw, 100 + i as u64, 0.4);
        let b = values(o, 200 + i as u64, 0.2);
        let n = 3;
        let x = values(n * c * h * w, 300 + i as u64, 1.5);
        for gran in [ScaleGranularity::Tensor, ScaleGranularity::Channel] {
            let cfg = Int8Config {
                granularity: gran,
                ..Int8Config::default()
            };
            let base = Int8Conv2d::from_f32("c", &wt, [o, c, kh, kw], Some(&b), pad, stride, &cfg)
                .unwrap();
            for mode in modes {
                for relu in [false, true] {
                    for pool in [1, 2] {
                        let l = base
                            .clone()
                            .with_activation_quant(mode)
                            .with_relu(relu)
                            .with_pool(pool);
                        let want = l
                            .clone()
                            .with_kernel(Int8Kernel::Portable)
                            .forward_slice(&x, n, h, w);
                        let got = l.with_kernel(fast).forward_slice(&x, n, h, w);
                        assert_eq!(got.len(), want.len());
                        let bad = got.iter().zip(&want).position(|(a, b)| a != b);
                        assert!(
                            bad.is_none(),
                            "case {i} {gran:?} {mode:?} relu {relu} pool {pool} kernel {fast:?}: \
                             [{0}] {1} vs {2}",
                            bad.unwrap_or(0),
                            got[bad.unwrap_or(0)],
                            want[bad.unwrap_or(0)]
                        );
                    }
                }
            }
        }
    }
}
