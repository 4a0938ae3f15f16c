//! Every kernel against its oracle: forward values and gradients, on random
//! shapes including odd sizes, batch 1 and 3, and padding 0, 1, 2.

use candle_core::{DType, Device, Tensor, Var};
use joulecut_ops::reference::{self, ConvShape};
use proptest::prelude::*;

/// Max |a - b| / (1 + |b|) allowed between a kernel and its f64 reference.
const CONV_TOL: f32 = 1e-4;
/// Same for pooling, which only moves values: exact.
const POOL_TOL: f32 = 0.;
/// Same for the fused cross-entropy vs candle's op chain.
const LOSS_TOL: f32 = 1e-5;

fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1. + y.abs()))
        .fold(0., f32::max)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1., shape, &Device::Cpu).unwrap()
}

/// Normal draws rounded to multiples of 1/8: every product is a multiple of 1/64 and every sum
/// of them is exact in f32, so the kernel and the reference compute identical pre-activations
/// whatever their summation order. Otherwise a ReLU input within rounding of 0, or two pool
/// candidates within rounding of each other, sends a gradient to a different element, and the
/// weight gradient differs by a whole term (a rare flake: a 0.13 error in 1 of ~50 runs).
fn grid_randn(shape: &[usize]) -> Tensor {
    let v: Vec<f32> = randn(shape)
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
        .into_iter()
        .map(|x: f32| ((x * 8.).round() / 8.).clamp(-4., 4.))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Runs `conv2d` (or the fused relu variant) forward and backward against the reference.
fn check_conv(s: ConvShape, bias: bool, relu: bool) {
    let x = Var::from_tensor(&grid_randn(&[s.n, s.c, s.h, s.w])).unwrap();
    let w = Var::from_tensor(&grid_randn(&[s.o, s.c, s.kh, s.kw])).unwrap();
    let b = Var::from_tensor(&grid_randn(&[s.o])).unwrap();
    let y = if relu {
        joulecut_ops::conv2d_relu(&x, &w, bias.then_some(b.as_tensor()), s.pad).unwrap()
    } else {
        joulecut_ops::conv2d(&x, &w, bias.then_some(b.as_tensor()), s.pad).unwrap()
    };
    let (xs, ws, bs) = (flat(&x), flat(&w), flat(&b));
    let mut want = reference::conv2d_forward(&xs, &ws, bias.then_some(bs.as_slice()), &s);
    if relu {
        want.iter_mut().for_each(|v| *v = v.max(0.));
    }
    assert_eq!(y.dims(), &[s.n, s.o, s.oh(), s.ow()]);
    let e = max_rel_err(&flat(&y), &want);
    assert!(
        e <= CONV_TOL,
        "forward {s:?} bias={bias} relu={relu}: err {e}"
    );

    // Loss sum(y * r) for a random r, so the output gradient is r.
    let r = randn(y.dims());
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut gy = flat(&r);
    if relu {
        gy.iter_mut().zip(&want).for_each(|(g, &yv)| {
            if yv <= 0. {
                *g = 0.
            }
        });
    }
    let (dx, dw, db) = reference::conv2d_backward(&xs, &ws, &gy, &s);
    let e = max_rel_err(&flat(grads.get(&x).unwrap()), &dx);
    assert!(e <= CONV_TOL, "dx {s:?}: err {e}");
    let e = max_rel_err(&flat(grads.get(&w).unwrap()), &dw);
    assert!(e <= CONV_TOL, "dw {s:?}: err {e}");
    if bias {
        let e = max_rel_err(&flat(grads.get(&b).unwrap()), &db);
        assert!(e <= CONV_TOL, "db {s:?}: err {e}");
    } else {
        assert!(grads.get(&b).is_none());
    }
}

#[test]
fn conv_lenet_shapes() {
    check_conv(
        ConvShape {
            n: 3,
            c: 1,
            h: 28,
            w: 28,
            o: 6,
            kh: 5,
            kw: 5,
            pad: 2,
        },
        true,
        false,
    );
    check_conv(
        ConvShape {
            n: 1,
            c: 6,
            h: 14,
            w: 14,
            o: 16,
            kh: 5,
            kw: 5,
            pad: 0,
        },
        true,
        true,
    );
}

#[test]
fn conv_pointwise_and_large_padding() {
    check_conv(
        ConvShape {
            n: 2,
            c: 3,
            h: 5,
            w: 4,
            o: 2,
            kh: 1,
            kw: 1,
            pad: 0,
        },
        true,
        false,
    );
    // padding > kernel - 1: the input gradient crops instead of padding.
    check_conv(
        ConvShape {
            n: 2,
            c: 2,
            h: 4,
            w: 3,
            o: 3,
            kh: 1,
            kw: 1,
            pad: 2,
        },
        false,
        false,
    );
    check_conv(
        ConvShape {
            n: 1,
            c: 1,
            h: 3,
            w: 3,
            o: 1,
            kh: 3,
            kw: 2,
            pad: 2,
        },
        true,
        true,
    );
}

#[test]
fn conv_input_without_grad_gets_none() {
    let x = randn(&[2, 1, 6, 6]);
    let w = Var::from_tensor(&randn(&[4, 1, 3, 3])).unwrap();
    let y = joulecut_ops::conv2d(&x, &w, None, 1).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(&w).is_some());
}

#[test]
fn conv_matches_candle_conv2d() {
    let x = randn(&[4, 3, 9, 7]);
    let w = randn(&[5, 3, 3, 3]);
    let ours = joulecut_ops::conv2d(&x, &w, None, 1).unwrap();
    let theirs = x.conv2d(&w, 1, 1, 1, 1).unwrap();
    let e = max_rel_err(&flat(&ours), &flat(&theirs));
    assert!(e <= CONV_TOL, "err {e}");
}

#[test]
fn conv_rejects_bad_shapes() {
    let x = randn(&[1, 2, 4, 4]);
    assert!(joulecut_ops::conv2d(&x, &randn(&[3, 1, 3, 3]), None, 0).is_err());
    assert!(joulecut_ops::conv2d(&x, &randn(&[3, 2, 7, 7]), None, 1).is_err());
    assert!(joulecut_ops::conv2d(&x, &randn(&[3, 2, 3, 3]), Some(&randn(&[2])), 1).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn conv_random_shapes(
        n in 1usize..4, c in 1usize..4, o in 1usize..5,
        h in 1usize..10, w in 1usize..10, kh in 1usize..4, kw in 1usize..4,
        pad in 0usize..3, bias: bool, relu: bool,
    ) {
        prop_assume!(h + 2 * pad >= kh && w + 2 * pad >= kw);
        check_conv(ConvShape { n, c, h, w, o, kh, kw, pad }, bias, relu);
    }

    #[test]
    fn pool_random_shapes(n in 1usize..4, c in 1usize..4, h in 1usize..12, w in 1usize..12, k in 1usize..4) {
        prop_assume!(h >= k && w >= k);
        check_pool(n, c, h, w, k);
    }
}

fn check_pool(n: usize, c: usize, h: usize, w: usize, k: usize) {
    let x = Var::from_tensor(&randn(&[n, c, h, w])).unwrap();
    let y = joulecut_ops::max_pool2d(&x, k).unwrap();
    let (want, idx) = reference::max_pool2d_forward(&flat(&x), n * c, h, w, k);
    assert_eq!(y.dims(), &[n, c, h / k, w / k]);
    let e = max_rel_err(&flat(&y), &want);
    assert!(e <= POOL_TOL, "pool fwd: err {e}");
    let r = randn(y.dims());
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = reference::max_pool2d_backward(n * c * h * w, &idx, &flat(&r));
    let e = max_rel_err(&flat(grads.get(&x).unwrap()), &dx);
    assert!(e <= POOL_TOL, "pool bwd: err {e}");
}

#[test]
fn pool_lenet_shapes() {
    check_pool(3, 6, 28, 28, 2);
    check_pool(1, 16, 10, 10, 2);
    check_pool(2, 3, 7, 5, 2); // odd sizes drop the last row/column
    // Large enough to take the parallel path.
    check_pool(128, 6, 28, 28, 2);
}

#[test]
fn pool_matches_candle() {
    let x = randn(&[2, 3, 8, 6]);
    let e = max_rel_err(
        &flat(&joulecut_ops::max_pool2d(&x, 2).unwrap()),
        &flat(&x.max_pool2d(2).unwrap()),
    );
    assert!(e <= POOL_TOL);
}

#[test]
fn cross_entropy_matches_candle() {
    for (b, c) in [(1, 10), (3, 7), (128, 10)] {
        let logits = Var::from_tensor(&(randn(&[b, c]) * 3.).unwrap()).unwrap();
        let t: Vec<u32> = (0..b).map(|i| (i * 7 % c) as u32).collect();
        let t = Tensor::new(t.as_slice(), &Device::Cpu).unwrap();
        let ours = joulecut_ops::cross_entropy(&logits, &t).unwrap();
        let theirs = candle_nn::loss::cross_entropy(&logits, &t).unwrap();
        let (a, e) = (
            ours.to_scalar::<f32>().unwrap(),
            theirs.to_scalar::<f32>().unwrap(),
        );
        assert!(
            (a - e).abs() <= LOSS_TOL * (1. + e.abs()),
            "loss {a} vs {e}"
        );
        let g1 = (ours * 2.).unwrap().backward().unwrap();
        let g2 = (theirs * 2.).unwrap().backward().unwrap();
        let err = max_rel_err(
            &flat(g1.get(&logits).unwrap()),
            &flat(g2.get(&logits).unwrap()),
        );
        assert!(err <= LOSS_TOL, "grad err {err}");
    }
}

#[test]
fn cross_entropy_rejects_bad_targets() {
    let logits = randn(&[2, 3]);
    let t = Tensor::new(&[0u32, 3], &Device::Cpu).unwrap();
    assert!(joulecut_ops::cross_entropy(&logits, &t).is_err());
    let t = Tensor::new(&[0f32, 1.], &Device::Cpu).unwrap();
    assert!(joulecut_ops::cross_entropy(&logits, &t).is_err());
    let t = Tensor::zeros(3, DType::U32, &Device::Cpu).unwrap();
    assert!(joulecut_ops::cross_entropy(&logits, &t).is_err());
}

/// Grid data as in the conv checks (exact pre-activations in any summation order), with the bias
/// moved off the grid by 1/128 so that no pre-activation is exactly 0: there candle's ReLU passes
/// the gradient and ours does not.
fn check_linear(n: usize, i: usize, o: usize, relu: bool, x_grad: bool) {
    let x = Var::from_tensor(&grid_randn(&[n, i])).unwrap();
    let xin = if x_grad {
        x.as_tensor().clone()
    } else {
        x.as_tensor().detach()
    };
    let w = Var::from_tensor(&grid_randn(&[o, i])).unwrap();
    let b = Var::from_tensor(&(grid_randn(&[o]) + 1. / 128.).unwrap()).unwrap();
    let ours = if relu {
        joulecut_ops::linear_relu(&xin, &w, &b).unwrap()
    } else {
        joulecut_ops::linear(&xin, &w, &b).unwrap()
    };
    let lin = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
    let mut theirs = candle_core::Module::forward(&lin, &xin).unwrap();
    if relu {
        theirs = theirs.relu().unwrap();
    }
    let e = max_rel_err(&flat(&ours), &flat(&theirs));
    assert!(e <= LINEAR_TOL, "linear fwd {n}x{i}x{o}: err {e}");
    let r = randn(&[n, o]);
    let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (&theirs * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for v in [&w, &b] {
        let e = max_rel_err(&flat(g1.get(v).unwrap()), &flat(g2.get(v).unwrap()));
        assert!(e <= LINEAR_TOL, "linear grad {n}x{i}x{o}: err {e}");
    }
    if x_grad {
        let e = max_rel_err(&flat(g1.get(&x).unwrap()), &flat(g2.get(&x).unwrap()));
        assert!(e <= LINEAR_TOL, "linear dx {n}x{i}x{o}: err {e}");
    } else {
        assert!(g1.get(&x).is_none());
    }
}

/// Max relative error of the fused linear against candle's matmul + add.
const LINEAR_TOL: f32 = 1e-4;

#[test]
fn linear_matches_candle() {
    check_linear(128, 784, 300, true, false);
    check_linear(128, 300, 100, true, true);
    check_linear(1, 100, 10, false, true);
    check_linear(3, 7, 5, true, true);
    check_linear(256, 784, 300, false, true);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn linear_random_shapes(n in 1usize..9, i in 1usize..40, o in 1usize..20, relu: bool, xg: bool) {
        check_linear(n, i, o, relu, xg);
    }
}

/// A NaN in a window wins (the first NaN, even before a larger value), in the forward values and
/// in the position the backward pass sends the gradient to; windows without NaN are unaffected.
#[test]
fn pool_propagates_nan_forward_and_backward() {
    for k in [2usize, 3] {
        let (h, w) = (2 * k, 2 * k);
        let mut v: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        // Window (0, 0): a NaN at its second row, first column; a larger value after it.
        v[w] = f32::NAN;
        v[w + 1] = 1e6;
        let x = Var::from_vec(v.clone(), (1, 1, h, w), &candle_core::Device::Cpu).unwrap();
        let y = joulecut_ops::max_pool2d(&x, k).unwrap();
        let yv = flat(&y);
        assert!(yv[0].is_nan(), "k={k}: {yv:?}");
        // The other windows: their bottom-right element (values increase along rows).
        for (o, &got) in yv.iter().enumerate().skip(1) {
            let (oy, ox) = (o / 2, o % 2);
            assert_eq!(
                got,
                v[(oy * k + k - 1) * w + ox * k + k - 1],
                "k={k} window {o}"
            );
        }
        let grads = y.sum_all().unwrap().backward().unwrap();
        let dx = flat(grads.get(&x).unwrap());
        assert_eq!(dx[w], 1.0, "k={k}: gradient goes to the NaN");
        assert_eq!(dx[w + 1], 0.0, "k={k}");
        assert_eq!(
            dx.iter().filter(|&&d| d != 0.0).count(),
            4,
            "k={k}: one per window"
        );
    }
}

/// The fused conv + ReLU + pool against the reference chain (conv, ReLU, pool; gradients back
/// through the pool's argmax, the ReLU mask and the conv), with and without bias and input
/// gradient.
fn check_conv_pool(s: ConvShape, k: usize, bias: bool, x_grad: bool) {
    let x = Var::from_tensor(&grid_randn(&[s.n, s.c, s.h, s.w])).unwrap();
    let xin = if x_grad {
        x.as_tensor().clone()
    } else {
        x.as_tensor().detach()
    };
    let w = Var::from_tensor(&grid_randn(&[s.o, s.c, s.kh, s.kw])).unwrap();
    let b = Var::from_tensor(&grid_randn(&[s.o])).unwrap();
    let y = joulecut_ops::conv2d_relu_pool2d(&xin, &w, bias.then_some(b.as_tensor()), s.pad, k)
        .unwrap();
    let (xs, ws, bs) = (flat(&x), flat(&w), flat(&b));
    let mut conv = reference::conv2d_forward(&xs, &ws, bias.then_some(bs.as_slice()), &s);
    conv.iter_mut().for_each(|v| *v = v.max(0.));
    let (want, idx) = reference::max_pool2d_forward(&conv, s.n * s.o, s.oh(), s.ow(), k);
    assert_eq!(y.dims(), &[s.n, s.o, s.oh() / k, s.ow() / k]);
    let e = max_rel_err(&flat(&y), &want);
    assert!(e <= CONV_TOL, "fused fwd {s:?} k={k}: err {e}");

    let r = randn(y.dims());
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut gy = reference::max_pool2d_backward(conv.len(), &idx, &flat(&r));
    gy.iter_mut().zip(&conv).for_each(|(g, &c)| {
        if c <= 0. {
            *g = 0.
        }
    });
    let (dx, dw, db) = reference::conv2d_backward(&xs, &ws, &gy, &s);
    let e = max_rel_err(&flat(grads.get(&w).unwrap()), &dw);
    assert!(e <= CONV_TOL, "fused dw {s:?} k={k}: err {e}");
    if x_grad {
        let e = max_rel_err(&flat(grads.get(&x).unwrap()), &dx);
        assert!(e <= CONV_TOL, "fused dx {s:?} k={k}: err {e}");
    } else {
        assert!(grads.get(&x).is_none());
    }
    if bias {
        let e = max_rel_err(&flat(grads.get(&b).unwrap()), &db);
        assert!(e <= CONV_TOL, "fused db {s:?} k={k}: err {e}");
    } else {
        assert!(grads.get(&b).is_none());
    }
}

#[test]
fn conv_pool_lenet_shapes() {
    let conv1 = ConvShape {
        n: 3,
        c: 1,
        h: 28,
        w: 28,
        o: 6,
        kh: 5,
        kw: 5,
        pad: 2,
    };
    check_conv_pool(conv1, 2, true, false);
    let conv2 = ConvShape {
        n: 2,
        c: 6,
        h: 14,
        w: 14,
        o: 16,
        kh: 5,
        kw: 5,
        pad: 0,
    };
    check_conv_pool(conv2, 2, true, true);
    // Large enough batches for the parallel paths.
    check_conv_pool(ConvShape { n: 64, ..conv1 }, 2, true, false);
    check_conv_pool(ConvShape { n: 33, ..conv2 }, 2, true, true);
}

/// Same values and gradients as the composed `conv2d_relu` + `max_pool2d` (bit for bit in the
/// forward pass, which runs the same convolution).
#[test]
fn conv_pool_matches_composed_ops() {
    let x = Var::from_tensor(&randn(&[5, 3, 11, 9])).unwrap();
    let w = Var::from_tensor(&randn(&[4, 3, 3, 3])).unwrap();
    let b = Var::from_tensor(&randn(&[4])).unwrap();
    let fused = joulecut_ops::conv2d_relu_pool2d(&x, &w, Some(&b), 1, 3).unwrap();
    let composed =
        joulecut_ops::max_pool2d(&joulecut_ops::conv2d_relu(&x, &w, Some(&b), 1).unwrap(), 3)
            .unwrap();
    assert_eq!(flat(&fused), flat(&composed));
    let r = randn(fused.dims());
    let g1 = (&fused * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g2 = (&composed * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for v in [&x, &w, &b] {
        let e = max_rel_err(&flat(g1.get(v).unwrap()), &flat(g2.get(v).unwrap()));
        assert!(e <= CONV_TOL, "err {e}");
    }
}

#[test]
fn conv_pool_empty_batch() {
    let x = Var::from_tensor(&randn(&[0, 2, 6, 6])).unwrap();
    let w = Var::from_tensor(&randn(&[3, 2, 3, 3])).unwrap();
    let y = joulecut_ops::conv2d_relu_pool2d(&x, &w, None, 1, 2).unwrap();
    assert_eq!(y.dims(), &[0, 3, 3, 3]);
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(flat(grads.get(&w).unwrap()), vec![0f32; 3 * 2 * 9]);
}

#[test]
fn conv_pool_rejects_bad_windows() {
    let x = randn(&[1, 1, 6, 6]);
    let w = randn(&[2, 1, 3, 3]);
    assert!(joulecut_ops::conv2d_relu_pool2d(&x, &w, None, 0, 0).is_err());
    assert!(joulecut_ops::conv2d_relu_pool2d(&x, &w, None, 0, 5).is_err());
    assert!(joulecut_ops::conv2d_relu_pool2d(&x, &w, None, 1, 6).is_ok());
    assert!(joulecut_ops::conv2d_relu_pool2d(&x, &w, None, 1, 17).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn conv_pool_random_shapes(
        n in 1usize..4, c in 1usize..4, o in 1usize..5,
        h in 1usize..11, w in 1usize..11, kh in 1usize..4, kw in 1usize..4,
        pad in 0usize..3, k in 1usize..4, bias: bool, xg: bool,
    ) {
        let s = ConvShape { n, c, h, w, o, kh, kw, pad };
        prop_assume!(h + 2 * pad >= kh && w + 2 * pad >= kw);
        prop_assume!(s.oh() >= k && s.ow() >= k);
        check_conv_pool(s, k, bias, xg);
    }
}
