//! Fused optimizers with PyTorch's update rules, usable with any `VarMap`.
//!
//! Each step updates every parameter in one pass over memory: it reads the
//! gradient and the optimizer state, and writes the parameter (in place,
//! through a candle `InplaceOp2`, so nothing is allocated per step) and the
//! state. Large tensors are split into chunks across rayon's pool; the inner
//! loops are compiled for AVX-512, AVX2+FMA and plain x86-64 and picked at run
//! time.
//!
//! Variables off the CPU (CUDA) get the same update rule in candle tensor ops
//! instead, with their state on the variable's device ([`Backend`]).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Optimizer, VarBuilder, VarMap};
//! use joulecut_ops::optim::{AdamW, AdamWConfig};
//! # fn main() -> candle_core::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let lin = candle_nn::linear(4, 2, vb.pp("fc"))?;
//! let mut opt = AdamW::new(varmap.all_vars(), AdamWConfig::default())?;
//! let x = Tensor::ones((3, 4), DType::F32, &Device::Cpu)?;
//! let loss = candle_core::Module::forward(&lin, &x)?.sqr()?.mean_all()?;
//! opt.backward_step(&loss)?;
//! # Ok(())
//! }
//! ```

mod adam;
mod kernels;
mod portable;
mod sgd;

pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig, MomentState};
pub use sgd::{Sgd, SgdConfig};

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var, bail};

use crate::storage::cpu_f32;

/// How an optimizer updates each variable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The fused one-pass kernel for CPU variables, candle tensor ops for variables on any other
    /// device (what `Optimizer::new` uses).
    #[default]
    Auto,
    /// candle tensor ops for every variable, CPU ones too (to compare the two paths).
    Portable,
}

impl Backend {
    /// Whether `var` gets the fused kernel.
    pub fn fused_for(self, var: &Var) -> bool {
        self == Backend::Auto && crate::portable::fused_kernels_on(var.device())
    }
}

/// Keeps the f32 variables, rejecting any other float dtype (integer
/// variables are skipped, as in candle's optimizers).
fn f32_vars(vars: Vec<Var>, who: &str) -> Result<Vec<Var>> {
    let mut out = Vec::with_capacity(vars.len());
    for v in vars {
        match v.dtype() {
            DType::F32 => out.push(v),
            d if d.is_float() => bail!("{who}: only f32 variables are supported, got {d:?}"),
            _ => {}
        }
    }
    Ok(out)
}

/// Runs `f(param, grad)` on the parameter's storage in place.
struct Fused<F> {
    name: &'static str,
    f: RefCell<F>,
}

impl<F: FnMut(&mut [f32], &[f32])> InplaceOp2 for Fused<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let g = cpu_f32(s2, l2, self.name)?;
        let CpuStorage::F32(p) = s1 else {
            bail!("{}: expected an f32 parameter", self.name)
        };
        let Some((a, b)) = l1.contiguous_offsets() else {
            bail!("{}: expected a contiguous parameter", self.name)
        };
        if b - a != g.len() {
            bail!(
                "{}: parameter has {} elements, gradient {}",
                self.name,
                b - a,
                g.len()
            )
        }
        (self.f.borrow_mut())(&mut p[a..b], g);
        Ok(())
    }
}

/// Applies `f(param, grad)` to `var` in place.
fn update_in_place(
    var: &Var,
    grad: &Tensor,
    name: &'static str,
    f: impl FnMut(&mut [f32], &[f32]),
) -> Result<()> {
    let grad = grad.contiguous()?;
    var.as_tensor().inplace_op2(
        &grad,
        &Fused {
            name,
            f: RefCell::new(f),
        },
    )
}
