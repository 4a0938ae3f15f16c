//! The portable (candle-op) paths that tensors off the CPU take, checked on the CPU against the
//! fused kernels: forward values, gradients, and several optimizer steps.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use joulecut_ops::optim::{Adam, AdamConfig, AdamW, AdamWConfig, Backend, Sgd, SgdConfig};
use joulecut_ops::portable;

const TOL: f32 = 1e-4;

fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / (1. + y.abs()))
        .fold(0., f32::max)
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic values without a global RNG: a cheap hash of the index.
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| {
            let h =
                (i ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2. - 1.
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn only_the_cpu_gets_the_fused_kernels() {
    assert!(portable::fused_kernels_on(&Device::Cpu));
    let v = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    assert!(Backend::Auto.fused_for(&v));
    assert!(!Backend::Portable.fused_for(&v));
}

/// Forward and input/weight/bias gradients of `fused` and `port` agree.
fn check_grads(
    inputs: &[Tensor],
    fused: impl Fn(&[Tensor]) -> Tensor,
    port: impl Fn(&[Tensor]) -> Tensor,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (yf, yp) = (fused(&ts), port(&ts));
    assert!(max_rel_err(&yp, &yf) < TOL, "forward differs");
    // A non-uniform upstream gradient, so every element's gradient matters.
    let wgt = randn(yf.dims(), 99);
    let gf = (&yf * &wgt).unwrap().sum_all().unwrap().backward().unwrap();
    let gp = (&yp * &wgt).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, v) in vars.iter().enumerate() {
        match (gp.get(v), gf.get(v)) {
            (Some(a), Some(b)) => assert!(max_rel_err(a, b) < TOL, "gradient of input {i} differs"),
            (None, None) => {} // not an input of this case (no bias)
            (a, b) => panic!(
                "input {i}: gradient only on one path ({}, {})",
                a.is_some(),
                b.is_some()
            ),
        }
    }
}

#[test]
fn conv2d_paths_agree() {
    for (relu, bias) in [(false, true), (true, true), (true, false)] {
        let ins = [
            randn(&[2, 3, 9, 9], 1),
            randn(&[4, 3, 3, 3], 2),
            randn(&[4], 3),
        ];
        check_grads(
            &ins,
            |t| {
                let b = bias.then(|| &t[2]);
                if relu {
                    joulecut_ops::conv2d_relu(&t[0], &t[1], b, 1).unwrap()
                } else {
                    joulecut_ops::conv2d(&t[0], &t[1], b, 1).unwrap()
                }
            },
            |t| portable::conv2d(&t[0], &t[1], bias.then(|| &t[2]), 1, relu).unwrap(),
        );
    }
}

#[test]
fn linear_paths_agree() {
    for relu in [false, true] {
        let ins = [randn(&[5, 7], 4), randn(&[3, 7], 5), randn(&[3], 6)];
        check_grads(
            &ins,
            |t| {
                if relu {
                    joulecut_ops::linear_relu(&t[0], &t[1], &t[2]).unwrap()
                } else {
                    joulecut_ops::linear(&t[0], &t[1], &t[2]).unwrap()
                }
            },
            |t| portable::linear(&t[0], &t[1], &t[2], relu).unwrap(),
        );
    }
}

#[test]
fn max_pool_paths_agree() {
    // Odd sides too: the trailing row/column is dropped on both paths.
    for (shape, k) in [([2, 3, 8, 8], 2), ([2, 3, 7, 8], 2), ([1, 2, 10, 11], 3)] {
        check_grads(
            &[randn(&shape, 7)],
            |t| joulecut_ops::max_pool2d(&t[0], k).unwrap(),
            |t| portable::max_pool2d(&t[0], k).unwrap(),
        );
    }
}

#[test]
fn conv_relu_pool_paths_agree() {
    // Odd conv output sides (9x10 with k = 2): the trailing row is dropped on both paths.
    for (bias, k) in [(true, 2), (false, 3)] {
        check_grads(
            &[
                randn(&[2, 3, 9, 10], 11),
                randn(&[4, 3, 3, 3], 12),
                randn(&[4], 13),
            ],
            |t| {
                let b = bias.then(|| &t[2]);
                joulecut_ops::conv2d_relu_pool2d(&t[0], &t[1], b, 1, k).unwrap()
            },
            |t| {
                let y = portable::conv2d(&t[0], &t[1], bias.then(|| &t[2]), 1, true).unwrap();
                portable::max_pool2d(&y, k).unwrap()
            },
        );
    }
}

#[test]
fn cross_entropy_paths_agree() {
    let y = Tensor::new(&[0u32, 3, 9, 2, 2, 7], &Device::Cpu).unwrap();
    check_grads(
        &[randn(&[6, 10], 8).affine(3., 0.).unwrap()],
        |t| joulecut_ops::cross_entropy(&t[0], &y).unwrap(),
        |t| portable::cross_entropy(&t[0], &y).unwrap(),
    );
}

/// Runs `steps` optimizer steps on a quadratic loss from the same start with both backends, and
/// returns the final parameters.
fn run_opt<O: Optimizer>(make: impl Fn(Vec<Var>, Backend) -> O, steps: usize) -> [Tensor; 2] {
    [Backend::Auto, Backend::Portable].map(|b| {
        let w = Var::from_tensor(&randn(&[1000, 3], 11)).unwrap();
        let target = randn(&[1000, 3], 12);
        let mut opt = make(vec![w.clone()], b);
        for _ in 0..steps {
            let loss = (w.as_tensor() - &target)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            opt.backward_step(&loss).unwrap();
        }
        w.as_tensor().copy().unwrap()
    })
}

#[test]
fn optimizer_backends_agree() {
    let start = randn(&[1000, 3], 11);
    let cases: Vec<(&str, [Tensor; 2])> = vec![
        (
            "adam+l2",
            run_opt(
                |v, b| {
                    let c = AdamConfig {
                        lr: 0.01,
                        weight_decay: 0.1,
                        ..Default::default()
                    };
                    Adam::with_backend(v, c, b).unwrap()
                },
                5,
            ),
        ),
        (
            "adamw",
            run_opt(
                |v, b| {
                    let c = AdamWConfig {
                        lr: 0.01,
                        weight_decay: 0.1,
                        ..Default::default()
                    };
                    AdamW::with_backend(v, c, b).unwrap()
                },
                5,
            ),
        ),
        (
            "sgd",
            run_opt(
                |v, b| {
                    let c = SgdConfig {
                        lr: 0.01,
                        ..Default::default()
                    };
                    Sgd::with_backend(v, c, b).unwrap()
                },
                5,
            ),
        ),
        (
            "sgd+nesterov+l2",
            run_opt(
                |v, b| {
                    let c = SgdConfig {
                        lr: 0.01,
                        momentum: 0.9,
                        weight_decay: 0.01,
                        nesterov: true,
                        ..Default::default()
                    };
                    Sgd::with_backend(v, c, b).unwrap()
                },
                5,
            ),
        ),
        (
            "sgd+dampening",
            run_opt(
                |v, b| {
                    let c = SgdConfig {
                        lr: 0.01,
                        momentum: 0.8,
                        dampening: 0.3,
                        ..Default::default()
                    };
                    Sgd::with_backend(v, c, b).unwrap()
                },
                5,
            ),
        ),
    ];
    for (name, [fused, port]) in cases {
        assert!(max_rel_err(&port, &fused) < 1e-5, "{name}: backends differ");
        // The parameters moved: the comparison is not between two untouched copies.
        assert!(max_rel_err(&fused, &start) > 1e-3, "{name}: no update");
    }
}
