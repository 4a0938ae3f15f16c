//! Embedding distillation for sentence encoders: the student learns the teacher's pooled sentence
//! embedding (cosine and MSE) and, optionally, its hidden states on mapped layers (MSE over real
//! tokens). No labels: any unlabeled text trains it.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use joulecut_distill::{EmbeddingLoss, embedding_loss};
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let teacher = Tensor::new(&[[1f32, 0.0, 2.0], [0.5, 1.0, -1.0]], &dev)?;
//! let student = Var::new(&[[0.8f32, 0.3, 1.5], [0.1, 1.2, -0.7]], &dev)?;
//! let parts = embedding_loss(&student, &teacher, &[], &EmbeddingLoss::default())?;
//! let grads = parts.total.backward()?;
//! assert!(parts.cosine > 0.0 && grads.get(&student).is_some());
//! # Ok(()) }
//! ```

use candle_core::{D, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Weights of the three terms of [`embedding_loss`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingLoss {
    /// Weight of `mean(1 − cos(student, teacher))` over the batch's pooled embeddings.
    pub cosine: f64,
    /// Weight of the mean squared error of the pooled embeddings.
    pub mse: f64,
    /// Weight of the mean (over mapped layers) of the hidden states' mean squared error.
    pub hidden: f64,
}

impl Default for EmbeddingLoss {
    /// Cosine and hidden states weighed 1, pooled MSE 1: the mix the recovery runs in
    /// `docs/DISTILLATION.md` used.
    fn default() -> Self {
        EmbeddingLoss {
            cosine: 1.0,
            mse: 1.0,
            hidden: 1.0,
        }
    }
}

impl EmbeddingLoss {
    /// Checks that every weight is finite and non-negative and one is positive.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let w = [self.cosine, self.mse, self.hidden];
        if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().all(|x| *x == 0.0) {
            return Err(format!(
                "loss weights must be finite, non-negative and not all zero (cosine {}, mse {}, hidden {})",
                self.cosine, self.mse, self.hidden
            ));
        }
        Ok(())
    }
}

/// The loss of one batch and its terms (unweighted, for progress lines).
#[derive(Debug, Clone)]
pub struct EmbeddingLossParts {
    /// The weighted sum, differentiable.
    pub total: Tensor,
    /// `mean(1 − cos)` of the pooled embeddings.
    pub cosine: f32,
    /// MSE of the pooled embeddings.
    pub mse: f32,
    /// Mean hidden-state MSE over the mapped layers (0 without any).
    pub hidden: f32,
}

/// Row-wise cosine similarity of two `[B, W]` tensors, `[B]`.
pub fn row_cosine(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?;
    let nb = b.sqr()?.sum(D::Minus1)?;
    // eps inside the root keeps a zero embedding's gradient finite
    dot / ((na * nb)? + 1e-12)?.sqrt()?
}

/// `cosine · mean(1 − cos(s, t)) + mse · MSE(s, t) + hidden · mean_l MSE(s_l, t_l)` for pooled
/// embeddings `student`, `teacher` `[B, W]` and hidden-state pairs `(student, teacher)` of equal
/// shapes (real tokens only). The teacher's side carries no gradient.
pub fn embedding_loss(
    student: &Tensor,
    teacher: &Tensor,
    hidden: &[(Tensor, Tensor)],
    w: &EmbeddingLoss,
) -> Result<EmbeddingLossParts> {
    let teacher = teacher.detach();
    let cos = (1.0 - row_cosine(student, &teacher)?)?.mean_all()?;
    let mse = (student - &teacher)?.sqr()?.mean_all()?;
    let mut total = ((&cos * w.cosine)? + (&mse * w.mse)?)?;
    let mut hidden_mean = 0f32;
    if !hidden.is_empty() {
        let mut sum: Option<Tensor> = None;
        for (s, t) in hidden {
            let m = (s - t.detach())?.sqr()?.mean_all()?;
            sum = Some(match sum {
                Some(acc) => (acc + m)?,
                None => m,
            });
        }
        let h = (sum.expect("non-empty") / hidden.len() as f64)?;
        hidden_mean = h.to_scalar::<f32>()?;
        total = (total + (h * w.hidden)?)?;
    }
    Ok(EmbeddingLossParts {
        cosine: cos.to_scalar::<f32>()?,
        mse: mse.to_scalar::<f32>()?,
        hidden: hidden_mean,
        total,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    /// The loss in f64 from its definition.
    fn reference(
        s: &[f32],
        tt: &[f32],
        hs: &[f32],
        ht: &[f32],
        w: usize,
        wt: &EmbeddingLoss,
    ) -> f64 {
        let rows = s.len() / w;
        let (mut cos, mut mse) = (0.0, 0.0);
        for r in 0..rows {
            let (a, b) = (&s[r * w..(r + 1) * w], &tt[r * w..(r + 1) * w]);
            let dot: f64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
            let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum();
            cos += 1.0 - dot / (na * nb).sqrt();
            mse += a
                .iter()
                .zip(b)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum::<f64>();
        }
        let hid: f64 = hs
            .iter()
            .zip(ht)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum::<f64>()
            / hs.len() as f64;
        wt.cosine * cos / rows as f64 + wt.mse * mse / s.len() as f64 + wt.hidden * hid
    }

    #[test]
    fn loss_and_gradient_match_the_definition() {
        let w = 5;
        let s: Vec<f32> = (0..15).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let tt: Vec<f32> = (0..15).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        let hs: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin()).collect();
        let ht: Vec<f32> = (0..20).map(|i| (i as f32 * 0.21).cos()).collect();
        let wt = EmbeddingLoss {
            cosine: 1.0,
            mse: 0.5,
            hidden: 2.0,
        };
        let sv = Var::from_tensor(&t(&s, (3, w))).unwrap();
        let hv = Var::from_tensor(&t(&hs, (4, w))).unwrap();
        let parts = embedding_loss(
            &sv,
            &t(&tt, (3, w)),
            &[(hv.as_tensor().clone(), t(&ht, (4, w)))],
            &wt,
        )
        .unwrap();
        let got = f64::from(parts.total.to_scalar::<f32>().unwrap());
        let want = reference(&s, &tt, &hs, &ht, w, &wt);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // gradient against central differences of the f64 reference
        let grads = parts.total.backward().unwrap();
        let gs = grads
            .get(&sv)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let gh = grads
            .get(&hv)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let eps = 1e-3f32;
        for i in 0..s.len() {
            let (mut a, mut b) = (s.clone(), s.clone());
            a[i] += eps;
            b[i] -= eps;
            let fd = (reference(&a, &tt, &hs, &ht, w, &wt) - reference(&b, &tt, &hs, &ht, w, &wt))
                / (2.0 * f64::from(eps));
            assert!(
                (f64::from(gs[i]) - fd).abs() < 2e-3,
                "d/ds[{i}]: {} vs {fd}",
                gs[i]
            );
        }
        for i in 0..hs.len() {
            let (mut a, mut b) = (hs.clone(), hs.clone());
            a[i] += eps;
            b[i] -= eps;
            let fd = (reference(&s, &tt, &a, &ht, w, &wt) - reference(&s, &tt, &b, &ht, w, &wt))
                / (2.0 * f64::from(eps));
            assert!(
                (f64::from(gh[i]) - fd).abs() < 2e-3,
                "d/dh[{i}]: {} vs {fd}",
                gh[i]
            );
        }
    }

    #[test]
    fn identical_embeddings_cost_nothing_and_bad_weights_are_refused() {
        let a = t(&[1.0, 2.0, 3.0, -1.0], (2, 2));
        let p = embedding_loss(&a, &a, &[], &EmbeddingLoss::default()).unwrap();
        assert!(p.total.to_scalar::<f32>().unwrap().abs() < 1e-6);
        let bad = EmbeddingLoss {
            cosine: -1.0,
            ..EmbeddingLoss::default()
        };
        assert!(bad.validate().is_err());
        let zero = EmbeddingLoss {
            cosine: 0.0,
            mse: 0.0,
            hidden: 0.0,
        };
        assert!(zero.validate().is_err());
    }
}
