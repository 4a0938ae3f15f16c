//! Which layers a pruning pass may touch: the one place that decides the output-layer rule and N:M
//! eligibility, for `joulecut prune`, `joulecut train --prune-schedule` and the bench alike.
//!
//! - **The output layer.** Its rows are the classes, so structured pruning never removes them; a
//!   step can also ask to leave that layer dense altogether (`exclude_output`). Include globs given
//!   by the user override the rule (they say exactly what to prune).
//! - **N:M.** Groups run along a weight's input dimension; a layer whose input dimension is not a
//!   multiple of M (LeNet-5's convolutions: 1 and 6 input channels) either stays dense, as NVIDIA's
//!   ASP leaves such layers, or is refused with an error naming it, as the caller chooses.

use joulecut_models::ModelConfig;
use joulecut_prune::{Granularity, PruneSpec, Selection};

/// What to do with a layer whose input dimension N:M groups do not divide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Indivisible {
    /// Leave it dense and say so (the bench: a variant applies to every model of a suite).
    #[default]
    LeaveDense,
    /// Let pruning refuse it with an error naming the tensor (the CLI: the user picked the pattern
    /// for this file, and `--exclude` is the remedy).
    Refuse,
}

/// How a pruning spec is fitted to a model.
#[derive(Debug, Clone, Default)]
pub struct PrunePolicy {
    /// The model's output layer weight (`fc3.weight`), when the architecture is known.
    pub output_layer: Option<String>,
    /// Leave the output layer dense whatever the granularity.
    pub exclude_output: bool,
    /// N:M layers the pattern does not divide.
    pub indivisible: Indivisible,
}

/// The spec fitted to a model, and what the policy left out.
#[derive(Debug, Clone)]
pub struct FittedSpec {
    /// The spec to prune with.
    pub spec: PruneSpec,
    /// The output layer, when the policy kept it whole.
    pub protected: Option<String>,
    /// Layers left dense because N:M groups do not divide their input dimension.
    pub left_dense: Vec<String>,
}

impl PrunePolicy {
    /// The policy for a joulecut model (`None`: a foreign checkpoint, whose output layer is not
    /// known) with the given N:M handling.
    pub fn for_model(cfg: Option<&ModelConfig>, indivisible: Indivisible) -> Self {
        PrunePolicy {
            output_layer: cfg.and_then(|c| c.layer_names().last().map(|l| format!("{l}.weight"))),
            exclude_output: false,
            indivisible,
        }
    }

    /// Fits `spec` to a model with these tensors (`(name, shape)`): the output layer and N:M rules
    /// above, added to the spec's selection as excludes.
    pub fn fit<'a>(
        &self,
        mut spec: PruneSpec,
        tensors: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> FittedSpec {
        let user_chose = spec.selection.has_includes();
        let mut protected = None;
        if let Some(out) = &self.output_layer
            && !user_chose
            && (spec.granularity.is_structured() || self.exclude_output)
        {
            spec.selection = spec.selection.exclude(out.clone());
            protected = Some(out.clone());
        }
        let mut left_dense = Vec::new();
        if let (Granularity::Nm { m, .. }, Indivisible::LeaveDense) =
            (spec.granularity, self.indivisible)
        {
            left_dense = tensors
                .into_iter()
                .filter(|(n, d)| n.ends_with(".weight") && d.len() >= 2 && d[1] % m != 0)
                .map(|(n, _)| n.to_string())
                .collect();
            left_dense.sort();
            for n in &left_dense {
                spec.selection = spec.selection.clone().exclude(n.clone());
            }
        }
        FittedSpec {
            spec,
            protected,
            left_dense,
        }
    }
}

/// A spec over the default selection (weights of rank ≥ 2).
pub fn spec(sparsity: f64, granularity: Granularity, scope: joulecut_prune::Scope) -> PruneSpec {
    PruneSpec::new(sparsity)
        .granularity(granularity)
        .scope(scope)
        .selection(Selection::default())
}

#[cfg(test)]
mod tests {
    use joulecut_prune::Scope;

    use super::*;

    const LENET5: [(&str, &[usize]); 4] = [
        ("conv1.weight", &[6, 1, 5, 5]),
        ("conv2.weight", &[16, 6, 5, 5]),
        ("fc1.weight", &[120, 400]),
        ("fc1.bias", &[120]),
    ];

    #[test]
    fn nm_leaves_indivisible_layers_dense_or_lets_pruning_refuse_them() {
        let nm = spec(0.5, Granularity::nm(2, 4).unwrap(), Scope::Layer);
        let fitted = PrunePolicy::default().fit(nm.clone(), LENET5);
        assert_eq!(fitted.left_dense, ["conv1.weight", "conv2.weight"]);
        assert_eq!(fitted.spec.selection.exclude, fitted.left_dense);
        let strict = PrunePolicy {
            indivisible: Indivisible::Refuse,
            ..Default::default()
        };
        assert!(strict.fit(nm, LENET5).spec.selection.exclude.is_empty());
        let u = spec(0.5, Granularity::Unstructured, Scope::Layer);
        assert!(
            PrunePolicy::default()
                .fit(u, LENET5)
                .spec
                .selection
                .exclude
                .is_empty()
        );
    }

    #[test]
    fn the_output_layer_is_kept_whole_by_structured_pruning_unless_the_user_includes() {
        let policy = PrunePolicy {
            output_layer: Some("fc3.weight".into()),
            ..Default::default()
        };
        let rows = spec(0.5, Granularity::Rows, Scope::Layer);
        let f = policy.fit(rows.clone(), LENET5);
        assert_eq!(f.protected.as_deref(), Some("fc3.weight"));
        assert_eq!(f.spec.selection.exclude, ["fc3.weight"]);
        let unstructured = spec(0.5, Granularity::Unstructured, Scope::Layer);
        assert!(policy.fit(unstructured.clone(), LENET5).protected.is_none());
        let excl = PrunePolicy {
            exclude_output: true,
            ..policy.clone()
        };
        assert!(excl.fit(unstructured, LENET5).protected.is_some());
        let mut chosen = rows;
        chosen.selection = chosen.selection.include("fc*");
        assert!(policy.fit(chosen, LENET5).protected.is_none());
    }
}
