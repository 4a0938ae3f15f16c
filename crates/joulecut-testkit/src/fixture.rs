//! File fixtures: safetensors files written by hand, so tests read what another tool (PyTorch,
//! Hugging Face) would have written, without joulecut's writer in between; the foreign MLP
//! checkpoint the CLI tests compress; random MLP parameters for kernels and benches.
//!
//! Fixtures panic on failure: they are test setup, and a panic names the line.

use std::collections::HashMap;
use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::rng::XorShift64;

/// A stored tensor: (name or file, dtype, shape, little-endian bytes).
pub type Stored = (String, Dtype, Vec<usize>, Vec<u8>);

/// The header metadata PyTorch's `save_file` writes: `{"format": "pt"}`.
pub fn pytorch_metadata() -> HashMap<String, String> {
    [("format".to_string(), "pt".to_string())].into()
}

/// Little-endian bytes of `values`.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `tensors` with the `safetensors` crate alone; panics if a size does not match its shape
/// or the file cannot be written.
pub fn write_safetensors(
    path: &Path,
    tensors: &[Stored],
    metadata: Option<HashMap<String, String>>,
) {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, metadata, path).unwrap();
}

/// How a [`ForeignMlp`] fills its tensors (layer `l`, tensor `t` = `2l` for the weight and
/// `2l + 1` for the bias, element `j`).
#[derive(Debug, Clone)]
pub enum Values {
    /// `(u - 0.5) * 0.1` with `u` from [`XorShift64::next_f32`], one generator running through the
    /// tensors in order (`fc1.weight`, `fc1.bias`, `fc2.weight`, ...).
    Random(XorShift64),
    /// `((7j + t) % 13 - 6) * 0.01`: a few distinct values, no generator.
    Cyclic,
    /// `((0.618034 j + salt + l).fract() * 2 - 1) / sqrt(fan_in)`: a golden-ratio sweep with
    /// PyTorch's init bound; `salt` tells two such models apart.
    Golden {
        /// Added to every phase.
        salt: f32,
    },
}

/// A foreign (non-joulecut) MLP checkpoint: F32 tensors with PyTorch's names (`fc1.weight`
/// `[out, in]`, `fc1.bias`, ...), no `joulecut.*` metadata.
#[derive(Debug, Clone)]
pub struct ForeignMlp {
    widths: Vec<usize>,
    values: Values,
    zero_every: Option<usize>,
    poison: Option<f32>,
    metadata: Option<HashMap<String, String>>,
}

impl ForeignMlp {
    /// LeNet-300-100's widths.
    pub const LENET_300_100: [usize; 4] = [784, 300, 100, 10];

    /// An MLP of `widths` (inputs first) filled by `values`.
    pub fn new(widths: &[usize], values: Values) -> Self {
        assert!(widths.len() >= 2, "an MLP needs at least two widths");
        ForeignMlp {
            widths: widths.to_vec(),
            values,
            zero_every: None,
            poison: None,
            metadata: None,
        }
    }

    /// Element `j` of every tensor is 0 where `j % n == 0` (a pruned look); the generator still
    /// advances past it.
    pub fn zero_every(mut self, n: usize) -> Self {
        self.zero_every = Some(n);
        self
    }

    /// Writes `value` (e.g. NaN) into `fc2.weight[0]`, after everything else; `None` leaves it.
    pub fn poison(mut self, value: Option<f32>) -> Self {
        self.poison = value;
        self
    }

    /// Adds PyTorch's `{"format": "pt"}` header metadata.
    pub fn pytorch_format(mut self) -> Self {
        self.metadata = Some(pytorch_metadata());
        self
    }

    /// The tensors in layer order (weight, then bias).
    pub fn tensors(&self) -> Vec<Stored> {
        let mut values = self.values.clone();
        let mut out = Vec::new();
        for (l, w) in self.widths.windows(2).enumerate() {
            let (fan_in, width) = (w[0], w[1]);
            for (t, name, shape) in [
                (2 * l, format!("fc{}.weight", l + 1), vec![width, fan_in]),
                (2 * l + 1, format!("fc{}.bias", l + 1), vec![width]),
            ] {
                let numel: usize = shape.iter().product();
                let v: Vec<f32> = (0..numel)
                    .map(|j| {
                        let mut v = match &mut values {
                            Values::Random(r) => (r.next_f32() - 0.5) * 0.1,
                            Values::Cyclic => (((j * 7 + t) % 13) as f32 - 6.0) * 0.01,
                            Values::Golden { salt } => {
                                let bound = 1.0 / (fan_in as f32).sqrt();
                                ((j as f32 * 0.618_034 + *salt + l as f32).fract() * 2.0 - 1.0)
                                    * bound
                            }
                        };
                        if self.zero_every.is_some_and(|n| j % n == 0) {
                            v = 0.0;
                        }
                        if name == "fc2.weight" && j == 0 {
                            v = self.poison.unwrap_or(v);
                        }
                        v
                    })
                    .collect();
                out.push((name, Dtype::F32, shape, f32_bytes(&v)));
            }
        }
        out
    }

    /// Writes the checkpoint to `path`.
    pub fn write(&self, path: &Path) {
        write_safetensors(path, &self.tensors(), self.metadata.clone());
    }
}

/// Random parameters of an MLP of `widths` (inputs first), as (name, shape, values) in layer
/// order: `fcN.weight` `[out, in]` uniform in ±1/√in from `XorShift64::from_state(N)`, `fcN.bias`
/// uniform in ±0.01 from `XorShift64::from_state(N + 10)`, `N` counting layers from 1.
pub fn mlp_params(widths: &[usize]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for (i, w) in widths.windows(2).enumerate() {
        let (inp, width) = (w[0], w[1]);
        let n = i as u64 + 1;
        let scale = 1.0 / (inp as f32).sqrt();
        out.push((
            format!("fc{n}.weight"),
            vec![width, inp],
            XorShift64::from_state(n).signed_vec(width * inp, scale),
        ));
        out.push((
            format!("fc{n}.bias"),
            vec![width],
            XorShift64::from_state(n + 10).signed_vec(width, 0.01),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn poison_zeros_and_shapes() {
        let m = ForeignMlp::new(&[6, 4, 3, 2], Values::Random(XorShift64::new(1)))
            .zero_every(4)
            .poison(Some(f32::NAN));
        let t = m.tensors();
        let names: Vec<&str> = t.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "fc1.weight",
                "fc1.bias",
                "fc2.weight",
                "fc2.bias",
                "fc3.weight",
                "fc3.bias"
            ]
        );
        assert_eq!(t[0].2, [4, 6]);
        let fc2 = f32s(&t[2].3);
        assert!(fc2[0].is_nan());
        assert!(f32s(&t[0].3).iter().step_by(4).all(|v| *v == 0.0));
        // Deterministic: a second call draws the same values.
        assert_eq!(m.tensors()[0].3, t[0].3);
    }
}
