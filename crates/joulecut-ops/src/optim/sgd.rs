//! SGD with optional momentum, dampening, Nesterov and L2 weight decay
//! (PyTorch's `torch.optim.SGD`).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::Optimizer;

use super::kernels::{self, SgdStep};
use super::{Backend, f32_vars, portable, update_in_place};

/// Hyper-parameters of [`Sgd`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Momentum factor (default 0: plain SGD, no buffer).
    pub momentum: f64,
    /// Dampening of the momentum (default 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (default false).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.,
            dampening: 0.,
            weight_decay: 0.,
            nesterov: false,
        }
    }
}

/// Momentum buffer: a host vector for the fused kernel (empty when momentum is 0), a tensor on
/// the variable's device for the portable path (`None` until the first step).
#[derive(Debug)]
enum Buffer {
    Host(Vec<f32>),
    Device(Option<Tensor>),
}

#[derive(Debug)]
struct Slot {
    var: Var,
    buf: Buffer,
    steps: u64,
}

/// Stochastic gradient descent, exactly as PyTorch's `torch.optim.SGD`: the
/// momentum buffer starts as the first gradient, then
/// `buf = momentum * buf + (1 - dampening) * grad`.
#[derive(Debug)]
pub struct Sgd {
    slots: Vec<Slot>,
    cfg: SgdConfig,
}

impl Sgd {
    /// [`Optimizer::new`] with an explicit [`Backend`].
    pub fn with_backend(vars: Vec<Var>, cfg: SgdConfig, backend: Backend) -> Result<Self> {
        if cfg.nesterov && (cfg.momentum <= 0. || cfg.dampening != 0.) {
            candle_core::bail!("Sgd: Nesterov momentum requires momentum > 0 and zero dampening")
        }
        let slots = f32_vars(vars, "Sgd")?
            .into_iter()
            .map(|var| {
                let buf = if !backend.fused_for(&var) {
                    Buffer::Device(None)
                } else if cfg.momentum != 0. {
                    Buffer::Host(vec![0.; var.elem_count()])
                } else {
                    Buffer::Host(Vec::new())
                };
                Slot { var, buf, steps: 0 }
            })
            .collect();
        Ok(Self { slots, cfg })
    }
}

impl Optimizer for Sgd {
    type Config = SgdConfig;

    fn new(vars: Vec<Var>, cfg: SgdConfig) -> Result<Self> {
        Self::with_backend(vars, cfg, Backend::Auto)
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.cfg;
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.var) else {
                continue;
            };
            let s = SgdStep {
                lr: c.lr as f32,
                l2: c.weight_decay as f32,
                momentum: c.momentum as f32,
                one_minus_damp: (1. - c.dampening) as f32,
                nesterov: c.nesterov,
                first: slot.steps == 0,
            };
            slot.steps += 1;
            match &mut slot.buf {
                Buffer::Host(buf) => update_in_place(&slot.var, g, "joulecut-sgd", |p, g| {
                    kernels::sgd(p, g, buf, &s)
                })?,
                Buffer::Device(buf) => portable::sgd(&slot.var, g, buf, &s)?,
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.cfg.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
}
