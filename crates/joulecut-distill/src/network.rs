//! What distillation needs of a network, so it works on any candle forward and not only on
//! joulecut's models: the forward pass is a candle [`Module`]; feature (hint) distillation also
//! reads hidden activations through [`HiddenModule`]; and the few facts about the architecture it
//! checks (input and output widths, hidden widths, a name for messages) are plain values in
//! [`Arch`]. `joulecut_models` implements both for its `Model` and `ModelConfig`.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap, linear};
//! use joulecut_distill::{Arch, HiddenModule, check_compatible};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let vm = VarMap::new();
//! let fc = linear(4, 3, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
//! // Any closure over a candle forward is a `HiddenModule` with no hidden activations.
//! let net = move |x: &Tensor| fc.forward(x);
//! let (logits, hidden) = net.forward_hidden(&Tensor::zeros((2, 4), DType::F32, &dev)?)?;
//! assert_eq!((logits.dims(), hidden.len()), (&[2, 3][..], 0));
//! // A 10-class student cannot learn from a 3-class teacher.
//! let e = check_compatible(Arch::new("teacher", 4, 3), Arch::new("student", 4, 10)).unwrap_err();
//! assert!(e.is_bad_input());
//! # Ok(()) }
//! ```

use candle_core::{Module, Tensor};

use crate::{Error, Result};

/// A network whose hidden activations feature (hint) distillation can compare: the logits and the
/// activations between its layers, in forward order. Plain knowledge distillation needs only
/// [`Module`]; a closure `Fn(&Tensor) -> candle_core::Result<Tensor>` is a `HiddenModule` with no
/// hidden activations.
pub trait HiddenModule: Module {
    /// The logits of `xs` and the hidden activations, in forward order.
    fn forward_hidden(&self, xs: &Tensor) -> candle_core::Result<(Tensor, Vec<Tensor>)>;
}

impl<F: Fn(&Tensor) -> candle_core::Result<Tensor>> HiddenModule for F {
    fn forward_hidden(&self, xs: &Tensor) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        Ok((self(xs)?, Vec::new()))
    }
}

/// The facts about a teacher's or student's architecture that distillation checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arch {
    /// A name for messages, e.g. `mlp:784-32-10`.
    pub name: String,
    /// Features per input sample.
    pub input: usize,
    /// Output logits (classes).
    pub classes: usize,
    /// Widths of the hidden activations [`HiddenModule::forward_hidden`] returns, in order; only
    /// hints ([`crate::Hints`]) need them.
    pub hidden: Vec<usize>,
}

impl Arch {
    /// An architecture by name and input and output widths, with no hidden widths listed.
    pub fn new(name: impl Into<String>, input: usize, classes: usize) -> Self {
        Arch {
            name: name.into(),
            input,
            classes,
            hidden: Vec::new(),
        }
    }

    /// The same with the widths of its hidden activations.
    pub fn with_hidden(mut self, widths: Vec<usize>) -> Self {
        self.hidden = widths;
        self
    }
}

impl From<&Arch> for Arch {
    fn from(a: &Arch) -> Self {
        a.clone()
    }
}

/// Checks that a student can learn from a teacher: same input width and number of classes.
pub fn check_compatible(teacher: impl Into<Arch>, student: impl Into<Arch>) -> Result<()> {
    let (teacher, student) = (teacher.into(), student.into());
    for (what, tw, sw) in [
        ("output", teacher.classes, student.classes),
        ("input", teacher.input, student.input),
    ] {
        if tw != sw {
            return Err(Error::WidthMismatch {
                what,
                teacher: teacher.name,
                teacher_width: tw,
                student: student.name,
                student_width: sw,
            });
        }
    }
    Ok(())
}
