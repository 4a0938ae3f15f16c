//! The fused optimizers against hand-written PyTorch update rules (f64), over
//! several steps, on small and large (multi-threaded path) tensors.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use joulecut_ops::optim::{Adam, AdamConfig, AdamW, AdamWConfig, Sgd, SgdConfig};

/// Max |a - b| / (1 + |b|) between the fused f32 update and the f64 reference.
const OPTIM_TOL: f64 = 2e-5;
const STEPS: usize = 6;
/// Sizes: odd, tiny, and above the parallel threshold.
const SIZES: [usize; 3] = [7, 1, 100_003];

/// PyTorch's `torch.optim.Adam` / `AdamW` (single-tensor path), in f64.
struct RefAdam {
    cfg: (f64, f64, f64, f64, f64),
    decoupled: bool,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl RefAdam {
    fn step(&mut self, p: &mut [f64], g: &[f64]) {
        let (lr, b1, b2, eps, wd) = self.cfg;
        self.t += 1;
        for i in 0..p.len() {
            let mut gi = g[i];
            if self.decoupled {
                p[i] *= 1. - lr * wd;
            } else {
                gi += wd * p[i];
            }
            self.m[i] = b1 * self.m[i] + (1. - b1) * gi;
            self.v[i] = b2 * self.v[i] + (1. - b2) * gi * gi;
            let bc1 = 1. - b1.powi(self.t);
            let bc2 = 1. - b2.powi(self.t);
            let denom = self.v[i].sqrt() / bc2.sqrt() + eps;
            p[i] -= lr / bc1 * self.m[i] / denom;
        }
    }
}

/// PyTorch's `torch.optim.SGD`, in f64.
struct RefSgd {
    cfg: SgdConfig,
    buf: Option<Vec<f64>>,
}

impl RefSgd {
    fn step(&mut self, p: &mut [f64], g: &[f64]) {
        let c = self.cfg;
        let mut d: Vec<f64> = g
            .iter()
            .zip(p.iter())
            .map(|(g, p)| g + c.weight_decay * p)
            .collect();
        if c.momentum != 0. {
            let buf = match self.buf.take() {
                None => d.clone(),
                Some(b) => b
                    .iter()
                    .zip(&d)
                    .map(|(b, g)| c.momentum * b + (1. - c.dampening) * g)
                    .collect(),
            };
            if c.nesterov {
                d.iter_mut()
                    .zip(&buf)
                    .for_each(|(g, b)| *g += c.momentum * b);
            } else {
                d.clone_from(&buf);
            }
            self.buf = Some(buf);
        }
        p.iter_mut().zip(&d).for_each(|(p, d)| *p -= c.lr * d);
    }
}

/// Trains one variable of each size for `STEPS` steps with gradient `r_t`
/// (loss `sum(p * r_t)`), checking against `reference` after each step.
fn run<O: Optimizer>(cfg: O::Config, mut reference: impl FnMut(usize, &mut [f64], &[f64]))
where
    O::Config: Clone,
{
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let vars: Vec<Tensor> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            vb.get_with_hints(
                n,
                &format!("p{i}"),
                candle_nn::Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
            )
            .unwrap()
        })
        .collect();
    let mut opt = O::new(varmap.all_vars(), cfg).unwrap();
    let mut want: Vec<Vec<f64>> = vars
        .iter()
        .map(|v| {
            v.to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect()
        })
        .collect();
    for _ in 0..STEPS {
        let rs: Vec<Tensor> = SIZES
            .iter()
            .map(|&n| Tensor::randn(0f32, 1., n, &dev).unwrap())
            .collect();
        let loss = vars
            .iter()
            .zip(&rs)
            .map(|(v, r)| (v * r).unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        opt.backward_step(&loss).unwrap();
        for (i, (r, w)) in rs.iter().zip(want.iter_mut()).enumerate() {
            let g: Vec<f64> = r
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            reference(i, w, &g);
        }
        for (v, w) in vars.iter().zip(&want) {
            let got = v.to_vec1::<f32>().unwrap();
            let err = got
                .iter()
                .zip(w)
                .map(|(&a, &b)| (f64::from(a) - b).abs() / (1. + b.abs()))
                .fold(0., f64::max);
            assert!(err <= OPTIM_TOL, "size {}: err {err}", w.len());
        }
    }
}

fn ref_adams(cfg: (f64, f64, f64, f64, f64), decoupled: bool) -> Vec<RefAdam> {
    SIZES
        .iter()
        .map(|&n| RefAdam {
            cfg,
            decoupled,
            m: vec![0.; n],
            v: vec![0.; n],
            t: 0,
        })
        .collect()
}

#[test]
fn adam_matches_pytorch_rules() {
    for wd in [0., 0.1] {
        let cfg = AdamConfig {
            lr: 1e-2,
            betas: (0.8, 0.99),
            eps: 1e-6,
            weight_decay: wd,
        };
        let mut r = ref_adams((1e-2, 0.8, 0.99, 1e-6, wd), false);
        run::<Adam>(cfg, |i, p, g| r[i].step(p, g));
    }
}

#[test]
fn adamw_matches_pytorch_rules() {
    let mut r = ref_adams((1e-3, 0.9, 0.999, 1e-8, 0.01), true);
    run::<AdamW>(AdamWConfig::default(), |i, p, g| r[i].step(p, g));
    let cfg = AdamWConfig {
        lr: 0.05,
        weight_decay: 0.5,
        ..AdamWConfig::default()
    };
    let mut r = ref_adams((0.05, 0.9, 0.999, 1e-8, 0.5), true);
    run::<AdamW>(cfg, |i, p, g| r[i].step(p, g));
}

#[test]
fn sgd_matches_pytorch_rules() {
    let cfgs = [
        SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        },
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-2,
            ..SgdConfig::default()
        },
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.3,
            ..SgdConfig::default()
        },
        SgdConfig {
            lr: 0.05,
            momentum: 0.8,
            nesterov: true,
            weight_decay: 1e-3,
            ..SgdConfig::default()
        },
    ];
    for cfg in cfgs {
        let mut r: Vec<RefSgd> = SIZES.iter().map(|_| RefSgd { cfg, buf: None }).collect();
        run::<Sgd>(cfg, |i, p, g| r[i].step(p, g));
    }
}

#[test]
fn defaults_are_pytorchs() {
    assert_eq!(
        AdamConfig::default(),
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.
        }
    );
    assert_eq!(AdamWConfig::default().weight_decay, 0.01);
    assert!(!SgdConfig::default().nesterov);
}

#[test]
fn skips_vars_without_grad_and_rejects_bad_config() {
    let a = Var::ones(3, DType::F32, &Device::Cpu).unwrap();
    let b = Var::ones(3, DType::F32, &Device::Cpu).unwrap();
    let mut opt = AdamW::new(vec![a.clone(), b.clone()], AdamWConfig::default()).unwrap();
    opt.backward_step(&a.sum_all().unwrap()).unwrap();
    assert_eq!(b.to_vec1::<f32>().unwrap(), vec![1.; 3]);
    assert!(a.to_vec1::<f32>().unwrap()[0] < 1.);
    let bad = SgdConfig {
        nesterov: true,
        ..SgdConfig::default()
    };
    assert!(Sgd::new(vec![a], bad).is_err());
    let f64var = Var::ones(2, DType::F64, &Device::Cpu).unwrap();
    assert!(Adam::new(vec![f64var], AdamConfig::default()).is_err());
}
