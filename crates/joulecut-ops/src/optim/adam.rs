//! Adam and AdamW (PyTorch semantics, bias-corrected, per-parameter step count).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var, bail};
use candle_nn::Optimizer;

use super::kernels::{self, AdamStep};
use super::{Backend, f32_vars, portable, update_in_place};

/// Hyper-parameters of [`Adam`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment (default 0.9, 0.999).
    pub betas: (f64, f64),
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.,
        }
    }
}

/// Hyper-parameters of [`AdamW`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment (default 0.9, 0.999).
    pub betas: (f64, f64),
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay: parameters shrink by `lr * weight_decay` per
    /// step (default 0.01).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// First and second moments: host vectors for the fused kernel, tensors on the variable's
/// device for the portable path.
#[derive(Debug)]
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

/// One parameter and its moments.
#[derive(Debug)]
struct Slot {
    var: Var,
    moments: Moments,
    step: u64,
}

/// State shared by Adam and AdamW.
#[derive(Debug)]
struct Core {
    slots: Vec<Slot>,
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
}

impl Core {
    fn new(
        vars: Vec<Var>,
        who: &str,
        cfg: (f64, (f64, f64), f64, f64),
        decoupled: bool,
        backend: Backend,
    ) -> Result<Self> {
        let slots = f32_vars(vars, who)?
            .into_iter()
            .map(|var| {
                let moments = if backend.fused_for(&var) {
                    let n = var.elem_count();
                    Moments::Host {
                        m: vec![0.; n],
                        v: vec![0.; n],
                    }
                } else {
                    let z = var.zeros_like()?;
                    Moments::Device { m: z.clone(), v: z }
                };
                Ok(Slot {
                    var,
                    moments,
                    step: 0,
                })
            })
            .collect::<Result<_>>()?;
        let (lr, betas, eps, weight_decay) = cfg;
        Ok(Self {
            slots,
            lr,
            betas,
            eps,
            weight_decay,
            decoupled,
        })
    }

    fn step(&mut self, grads: &GradStore, name: &'static str) -> Result<()> {
        let (b1, b2) = self.betas;
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.var) else {
                continue;
            };
            slot.step += 1;
            let t = slot.step as i32;
            let bc1 = 1. - b1.powi(t);
            let bc2 = 1. - b2.powi(t);
            let s = AdamStep {
                one_minus_b1: (1. - b1) as f32,
                beta2: b2 as f32,
                one_minus_b2: (1. - b2) as f32,
                step_size: (self.lr / bc1) as f32,
                bc2_sqrt: bc2.sqrt() as f32,
                eps: self.eps as f32,
                l2: if self.decoupled {
                    0.
                } else {
                    self.weight_decay as f32
                },
                decay: if self.decoupled {
                    (1. - self.lr * self.weight_decay) as f32
                } else {
                    1.
                },
            };
            match &mut slot.moments {
                Moments::Host { m, v } => {
                    update_in_place(&slot.var, g, name, |p, g| kernels::adam(p, g, m, v, &s))?
                }
                Moments::Device { m, v } => portable::adam(&slot.var, g, m, v, &s)?,
            }
        }
        Ok(())
    }
}

/// One variable's optimiser state: its step count and first and second moments (for resuming a
/// run exactly where it stopped).
#[derive(Debug, Clone, PartialEq)]
pub struct MomentState {
    /// Updates applied so far.
    pub step: u64,
    /// First moment, one value per element.
    pub m: Vec<f32>,
    /// Second moment, one value per element.
    pub v: Vec<f32>,
}

impl Core {
    fn state(&self) -> Result<Vec<MomentState>> {
        self.slots
            .iter()
            .map(|s| {
                let (m, v) = match &s.moments {
                    Moments::Host { m, v } => (m.clone(), v.clone()),
                    Moments::Device { m, v } => (
                        m.flatten_all()?.to_vec1::<f32>()?,
                        v.flatten_all()?.to_vec1::<f32>()?,
                    ),
                };
                Ok(MomentState { step: s.step, m, v })
            })
            .collect()
    }

    fn set_state(&mut self, state: Vec<MomentState>) -> Result<()> {
        if state.len() != self.slots.len() {
            bail!(
                "optimiser state has {} variables, this optimiser {}",
                state.len(),
                self.slots.len()
            );
        }
        for (i, (slot, st)) in self.slots.iter_mut().zip(state).enumerate() {
            let n = slot.var.elem_count();
            if st.m.len() != n || st.v.len() != n {
                bail!(
                    "optimiser state of variable {i}: {} values, the variable has {n}",
                    st.m.len()
                );
            }
            slot.step = st.step;
            slot.moments = match &slot.moments {
                Moments::Host { .. } => Moments::Host { m: st.m, v: st.v },
                Moments::Device { m, .. } => {
                    let (shape, dev) = (m.shape().clone(), m.device().clone());
                    Moments::Device {
                        m: Tensor::from_vec(st.m, &shape, &dev)?,
                        v: Tensor::from_vec(st.v, &shape, &dev)?,
                    }
                }
            };
        }
        Ok(())
    }
}

/// Adam (Kingma & Ba), exactly as PyTorch's `torch.optim.Adam` without
/// `amsgrad`: weight decay is an L2 term added to the gradient.
#[derive(Debug)]
pub struct Adam(Core);

/// AdamW (Loshchilov & Hutter), exactly as PyTorch's `torch.optim.AdamW`:
/// decoupled weight decay applied to the parameter before the Adam update.
#[derive(Debug)]
pub struct AdamW(Core);

impl Adam {
    /// [`Optimizer::new`] with an explicit [`Backend`].
    pub fn with_backend(vars: Vec<Var>, c: AdamConfig, backend: Backend) -> Result<Self> {
        let cfg = (c.lr, c.betas, c.eps, c.weight_decay);
        Core::new(vars, "Adam", cfg, false, backend).map(Self)
    }
}

impl AdamW {
    /// [`Optimizer::new`] with an explicit [`Backend`].
    pub fn with_backend(vars: Vec<Var>, c: AdamWConfig, backend: Backend) -> Result<Self> {
        let cfg = (c.lr, c.betas, c.eps, c.weight_decay);
        Core::new(vars, "AdamW", cfg, true, backend).map(Self)
    }

    /// The state of every variable, in the order they were given.
    pub fn state(&self) -> Result<Vec<MomentState>> {
        self.0.state()
    }

    /// Restores a [`AdamW::state`] (same variables, same order), so the next step is the one an
    /// uninterrupted run would take.
    pub fn set_state(&mut self, state: Vec<MomentState>) -> Result<()> {
        self.0.set_state(state)
    }
}

impl Optimizer for Adam {
    type Config = AdamConfig;

    fn new(vars: Vec<Var>, c: AdamConfig) -> Result<Self> {
        Self::with_backend(vars, c, Backend::Auto)
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.0.step(grads, "joulecut-adam")
    }

    fn learning_rate(&self) -> f64 {
        self.0.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.0.lr = lr;
    }
}

impl Optimizer for AdamW {
    type Config = AdamWConfig;

    fn new(vars: Vec<Var>, c: AdamWConfig) -> Result<Self> {
        Self::with_backend(vars, c, Backend::Auto)
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.0.step(grads, "joulecut-adamw")
    }

    fn learning_rate(&self) -> f64 {
        self.0.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.0.lr = lr;
    }
}
