//! Structured compaction: removes pruned neurons and channels so the layers become physically smaller.
//!
//! A [`Chain`] lists layers in data-flow order, each a weight (`[out, in]` for a linear layer,
//! `[out, in, kh, kw]` for a conv) and an optional bias `[out]`. Between two layers there may be any
//! element-wise activation `f` with `f(0) = 0` (ReLU, GELU, tanh, ...), max/avg pooling, and a
//! channel-major flatten from a conv into a linear layer (recognised from the shapes: the linear
//! layer's input is the conv's channels times the spatial size). Batch norm, residual connections and
//! grouped convs are not supported.
//!
//! A unit (neuron or channel) of a layer other than the last is removed when either
//! * its output is always zero: its bias is zero (or absent) and every weight from a surviving input is
//!   zero, or
//! * nobody reads it: every weight from it to a surviving unit of the next layer is zero.
//!
//! Both rules are exact, so the compacted chain computes the same outputs as the masked one (up to
//! float summation order). The last layer keeps all its outputs. Every layer keeps at least one unit.
//!
//! ```
//! use std::collections::BTreeMap;
//! use joulecut_prune::{compact, Chain, F32Tensor};
//! let mut t = BTreeMap::new();
//! // fc1: 3 neurons, the middle one pruned (zero row, zero bias); fc2 reads all three.
//! t.insert("fc1.weight".into(), F32Tensor::new(vec![3, 2], vec![1., 2., 0., 0., 3., 4.])?);
//! t.insert("fc1.bias".into(), F32Tensor::new(vec![3], vec![0.1, 0., 0.3])?);
//! t.insert("fc2.weight".into(), F32Tensor::new(vec![1, 3], vec![5., 6., 7.])?);
//! let chain = Chain::from_prefixes(&["fc1", "fc2"], &t);
//! let c = compact(&t, &chain)?;
//! assert_eq!(c.widths, [2, 1]);
//! assert_eq!(c.tensors["fc2.weight"].values, [5., 7.]);
//! # Ok::<(), joulecut_prune::Error>(())
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tensor::F32Tensor;
use crate::{Error, Result};

/// One layer of a chain: the names of its weight and bias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLayer {
    /// Weight name (`[out, in]` or `[out, in, kh, kw]`).
    pub weight: String,
    /// Bias name (`[out]`), if the layer has one.
    pub bias: Option<String>,
}

/// Layers in data-flow order (see the module docs for what may sit between them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// The layers.
    pub layers: Vec<ChainLayer>,
}

impl Chain {
    /// A chain of the given layers.
    pub fn new(layers: Vec<ChainLayer>) -> Self {
        Chain { layers }
    }

    /// A chain from layer prefixes: weight `{p}.weight`, bias `{p}.bias` when `tensors` has it.
    pub fn from_prefixes(prefixes: &[&str], tensors: &BTreeMap<String, F32Tensor>) -> Self {
        Chain {
            layers: prefixes
                .iter()
                .map(|p| {
                    let bias = format!("{p}.bias");
                    ChainLayer {
                        weight: format!("{p}.weight"),
                        bias: tensors.contains_key(&bias).then_some(bias),
                    }
                })
                .collect(),
        }
    }
}

/// The result of [`compact`].
#[derive(Debug, Clone, PartialEq)]
pub struct Compacted {
    /// Every input tensor, with the chain's weights and biases replaced by their compacted versions.
    pub tensors: BTreeMap<String, F32Tensor>,
    /// Output units (neurons, channels) of each chain layer after compaction.
    pub widths: Vec<usize>,
    /// The original indices of the kept output units, per layer.
    pub kept: Vec<Vec<usize>>,
    /// Output units of each chain layer before compaction.
    pub original_widths: Vec<usize>,
}

impl Compacted {
    /// Total number of removed units.
    pub fn removed_units(&self) -> usize {
        self.original_widths.iter().sum::<usize>() - self.widths.iter().sum::<usize>()
    }
}

/// Geometry of one layer.
struct Geo<'a> {
    w: &'a F32Tensor,
    b: Option<&'a F32Tensor>,
    out: usize,
    inp: usize,
    /// Elements per (out, in) pair: kh * kw for a conv, 1 for a linear layer.
    inner: usize,
    /// Dim-1 entries per input unit (the spatial size after a flatten, else 1).
    spatial: usize,
}

impl Geo<'_> {
    fn at(&self, r: usize, c: usize) -> &[f32] {
        let s = (r * self.inp + c) * self.inner;
        &self.w.values[s..s + self.inner]
    }

    /// Whether all weights of output `r` from input unit `u` are zero.
    fn zero_from(&self, r: usize, u: usize) -> bool {
        (u * self.spatial..(u + 1) * self.spatial).all(|c| self.at(r, c).iter().all(|v| *v == 0.0))
    }
}

fn get<'a>(tensors: &'a BTreeMap<String, F32Tensor>, name: &str) -> Result<&'a F32Tensor> {
    tensors
        .get(name)
        .ok_or_else(|| Error::UnknownTensor { name: name.into() })
}

/// Removes dead units from a chain of layers (see the module docs).
pub fn compact(tensors: &BTreeMap<String, F32Tensor>, chain: &Chain) -> Result<Compacted> {
    let bad = |name: &str, reason: String| Error::InvalidChain {
        name: name.into(),
        reason,
    };
    if chain.layers.is_empty() {
        return Err(bad("<empty>", "the chain has no layers".into()));
    }
    let mut geos: Vec<Geo> = Vec::new();
    for (i, layer) in chain.layers.iter().enumerate() {
        let w = get(tensors, &layer.weight)?;
        if w.rank() < 2 {
            return Err(bad(
                &layer.weight,
                format!("weight of shape {:?} has rank < 2", w.shape),
            ));
        }
        let (out, inp) = (w.shape[0], w.shape[1]);
        let b = match &layer.bias {
            Some(name) => {
                let b = get(tensors, name)?;
                if b.shape != [out] {
                    return Err(Error::ShapeMismatch {
                        name: name.clone(),
                        expected: vec![out],
                        actual: b.shape.clone(),
                    });
                }
                Some(b)
            }
            None => None,
        };
        let spatial = match geos.last() {
            None => 1,
            Some(prev) if prev.out == inp => 1,
            Some(prev)
                if prev.w.rank() >= 3 && w.rank() == 2 && prev.out > 0 && inp % prev.out == 0 =>
            {
                inp / prev.out
            }
            Some(prev) => {
                return Err(bad(
                    &layer.weight,
                    format!(
                        "its input dimension {inp} does not match the {} outputs of `{}` (layer {})",
                        prev.out,
                        chain.layers[i - 1].weight,
                        i - 1
                    ),
                ));
            }
        };
        let inner = w.shape[2..].iter().product();
        geos.push(Geo {
            w,
            b,
            out,
            inp,
            inner,
            spatial,
        });
    }
    let n = geos.len();
    let units_in = |i: usize| if i == 0 { geos[0].inp } else { geos[i - 1].out };

    // Forward: units whose output is always zero.
    let mut zero: Vec<Vec<bool>> = Vec::with_capacity(n);
    for (i, g) in geos.iter().enumerate() {
        let z = (0..g.out)
            .map(|r| {
                i + 1 < n
                    && g.b.is_none_or(|b| b.values[r] == 0.0)
                    && (0..units_in(i)).all(|u| (i > 0 && zero[i - 1][u]) || g.zero_from(r, u))
            })
            .collect();
        zero.push(z);
    }
    // Backward: units nobody reads; kept = neither.
    let mut kept: Vec<Vec<usize>> = vec![Vec::new(); n];
    kept[n - 1] = (0..geos[n - 1].out).collect();
    for i in (0..n - 1).rev() {
        let next = &geos[i + 1];
        let mut k: Vec<usize> = (0..geos[i].out)
            .filter(|&u| !zero[i][u] && !kept[i + 1].iter().all(|&l| next.zero_from(l, u)))
            .collect();
        if k.is_empty() && geos[i].out > 0 {
            k.push(0);
        }
        kept[i] = k;
    }

    // Rebuild the tensors.
    let mut out = tensors.clone();
    for (i, (g, layer)) in geos.iter().zip(&chain.layers).enumerate() {
        let cols: Vec<usize> = if i == 0 {
            (0..g.inp).collect()
        } else {
            kept[i - 1]
                .iter()
                .flat_map(|&u| u * g.spatial..(u + 1) * g.spatial)
                .collect()
        };
        let mut values = Vec::with_capacity(kept[i].len() * cols.len() * g.inner);
        for &r in &kept[i] {
            for &c in &cols {
                values.extend_from_slice(g.at(r, c));
            }
        }
        let mut shape = g.w.shape.clone();
        shape[0] = kept[i].len();
        shape[1] = cols.len();
        out.insert(layer.weight.clone(), F32Tensor { shape, values });
        if let (Some(name), Some(b)) = (&layer.bias, g.b) {
            let values = kept[i].iter().map(|&r| b.values[r]).collect();
            out.insert(
                name.clone(),
                F32Tensor {
                    shape: vec![kept[i].len()],
                    values,
                },
            );
        }
    }
    Ok(Compacted {
        tensors: out,
        widths: kept.iter().map(Vec::len).collect(),
        original_widths: geos.iter().map(|g| g.out).collect(),
        kept,
    })
}
