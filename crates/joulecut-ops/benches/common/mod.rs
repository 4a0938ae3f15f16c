//! The small models the train-step bench and the profile example share:
//! LeNet-300-100 and LeNet-5 on plain candle or on joulecut's ops, Adam, and
//! zero-copy batching from an in-memory dataset.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Conv2d, Linear, Optimizer, VarBuilder, VarMap};

pub const BATCH: usize = 128;
/// Samples in the synthetic in-memory dataset the batches are cut from.
pub const DATA: usize = 2048;

#[derive(Clone, Copy, PartialEq)]
pub enum Arch {
    /// LeNet-300-100.
    Mlp,
    /// LeNet-5.
    LeNet5,
}

/// A small model whose forward pass runs on plain candle or on joulecut's ops.
pub struct Net {
    arch: Arch,
    fast: bool,
    convs: Vec<Conv2d>,
    fcs: Vec<Linear>,
}

impl Net {
    pub fn new(arch: Arch, fast: bool, vb: VarBuilder) -> Result<Self> {
        let (convs, dims) = match arch {
            Arch::Mlp => (vec![], vec![784, 300, 100, 10]),
            Arch::LeNet5 => {
                let pad2 = candle_nn::Conv2dConfig {
                    padding: 2,
                    ..Default::default()
                };
                let c1 = candle_nn::conv2d(1, 6, 5, pad2, vb.pp("conv1"))?;
                let c2 = candle_nn::conv2d(6, 16, 5, Default::default(), vb.pp("conv2"))?;
                (vec![c1, c2], vec![400, 120, 84, 10])
            }
        };
        let fcs = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| candle_nn::linear(d[0], d[1], vb.pp(format!("fc{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            arch,
            fast,
            convs,
            fcs,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        if self.arch == Arch::LeNet5 {
            x = x.reshape(((), 1, 28, 28))?;
            for (conv, pad) in self.convs.iter().zip([2, 0]) {
                x = if self.fast {
                    joulecut_ops::conv2d_relu_pool2d(&x, conv.weight(), conv.bias(), pad, 2)?
                } else {
                    conv.forward(&x)?.relu()?.max_pool2d(2)?
                };
            }
            x = x.flatten_from(1)?;
        }
        let last = self.fcs.len() - 1;
        for (i, fc) in self.fcs.iter().enumerate() {
            x = match (self.fast, i < last) {
                (true, true) => joulecut_ops::linear_relu(&x, fc.weight(), fc.bias().unwrap())?,
                (true, false) => joulecut_ops::linear(&x, fc.weight(), fc.bias().unwrap())?,
                (false, true) => fc.forward(&x)?.relu()?,
                (false, false) => fc.forward(&x)?,
            };
        }
        Ok(x)
    }

    pub fn loss(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let logits = self.forward(x)?;
        if self.fast {
            joulecut_ops::cross_entropy(&logits, t)
        } else {
            candle_nn::loss::cross_entropy(&logits, t)
        }
    }
}

/// Adam with PyTorch's defaults: candle's AdamW with zero decay, or joulecut's fused Adam.
pub enum Opt {
    /// candle_nn::AdamW, weight decay 0.
    Candle(candle_nn::AdamW),
    /// joulecut_ops::optim::Adam.
    Fused(joulecut_ops::optim::Adam),
}

impl Opt {
    pub fn new(fast: bool, varmap: &VarMap) -> Result<Self> {
        Ok(if fast {
            Opt::Fused(joulecut_ops::optim::Adam::new(
                varmap.all_vars(),
                Default::default(),
            )?)
        } else {
            let cfg = candle_nn::ParamsAdamW {
                lr: 1e-3,
                weight_decay: 0.,
                ..Default::default()
            };
            Opt::Candle(candle_nn::AdamW::new(varmap.all_vars(), cfg)?)
        })
    }

    #[allow(dead_code)] // used by the bench, not the profile example
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        self.step(&loss.backward()?)
    }

    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        match self {
            Opt::Candle(o) => o.step(grads),
            Opt::Fused(o) => o.step(grads),
        }
    }
}

/// The whole dataset as one tensor; a batch is a zero-copy `narrow` of it.
pub struct Data {
    x: Tensor,
    y: Tensor,
    next: usize,
}

impl Data {
    pub fn new() -> Self {
        let x = Tensor::randn(0f32, 1., (DATA, 784), &Device::Cpu).unwrap();
        let y: Vec<u32> = (0..DATA as u32).map(|i| i % 10).collect();
        let y = Tensor::from_vec(y, DATA, &Device::Cpu).unwrap();
        Self { x, y, next: 0 }
    }

    pub fn batch(&mut self) -> (Tensor, Tensor) {
        let i = self.next;
        self.next = (self.next + BATCH) % (DATA - BATCH + 1);
        (
            self.x.narrow(0, i, BATCH).unwrap(),
            self.y.narrow(0, i, BATCH).unwrap(),
        )
    }
}
