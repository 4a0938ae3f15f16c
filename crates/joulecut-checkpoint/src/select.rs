//! Which tensors a compression pass touches: include/exclude globs over tensor names, on top of a
//! default policy.
//!
//! Default (no `--include`): weight matrices and conv kernels (rank ≥ 2) only — for a transformer
//! that is the attention projections and MLP weights; never biases, norms (LayerNorm, RMSNorm),
//! embeddings, position tables or the output head (`lm_head`, `classifier`, `score`, `qa_outputs`,
//! BERT's `cls.*`, LLaMA's top-level `output.weight`, T5's tied `shared.weight`), which are small or
//! sensitive. An explicit include overrides the default policy for the names it matches; excludes
//! always win.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// A bad glob, or a glob that selects nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectionError {
    /// The pattern does not parse.
    #[error("invalid glob `{pattern}`: {reason}")]
    BadGlob {
        /// The pattern.
        pattern: String,
        /// Parser message.
        reason: String,
    },
    /// An include pattern matched no tensor.
    #[error("--include `{pattern}` matches no tensor")]
    NoMatch {
        /// The pattern.
        pattern: String,
    },
    /// The selection is empty.
    #[error("no tensor selected")]
    Empty,
}

/// Compiled include/exclude rules.
#[derive(Debug, Clone)]
pub struct Selection {
    include: Vec<(String, GlobSet)>,
    exclude: GlobSet,
}

fn compile(p: &str) -> Result<GlobSet, SelectionError> {
    let g = Glob::new(p).map_err(|e| SelectionError::BadGlob {
        pattern: p.into(),
        reason: e.to_string(),
    })?;
    let mut b = GlobSetBuilder::new();
    b.add(g);
    b.build().map_err(|e| SelectionError::BadGlob {
        pattern: p.into(),
        reason: e.to_string(),
    })
}

const SKIP_BY_DEFAULT: &[&str] = &[
    "bias",
    "norm",
    "ln_",
    "layernorm",
    "embed",
    "wte",
    "wpe",
    "position",
    "lm_head",
    "classifier",
];

/// Path components that mark an output head (matched whole, so `scores_proj` is not one).
const HEAD_COMPONENTS: &[&str] = &["lm_head", "classifier", "score", "qa_outputs", "cls"];

/// Whole names of heads and tied embeddings that carry no telling component.
const HEAD_NAMES: &[&str] = &["output.weight", "shared.weight"];

impl Selection {
    /// Builds the rules.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, SelectionError> {
        let include = include
            .iter()
            .map(|p| Ok((p.clone(), compile(p)?)))
            .collect::<Result<_, _>>()?;
        let mut b = GlobSetBuilder::new();
        for p in exclude {
            b.add(Glob::new(p).map_err(|e| SelectionError::BadGlob {
                pattern: p.into(),
                reason: e.to_string(),
            })?);
        }
        let exclude = b.build().map_err(|e| SelectionError::BadGlob {
            pattern: exclude.join(","),
            reason: e.to_string(),
        })?;
        Ok(Selection { include, exclude })
    }

    /// The default policy alone.
    pub fn default_policy() -> Self {
        Selection::new(&[], &[]).expect("empty globs compile")
    }

    /// Whether the default policy takes this tensor.
    pub fn default_takes(name: &str, shape: &[usize]) -> bool {
        let lower = name.to_ascii_lowercase();
        shape.len() >= 2
            && !SKIP_BY_DEFAULT.iter().any(|s| lower.contains(s))
            && !lower.split('.').any(|c| HEAD_COMPONENTS.contains(&c))
            && !HEAD_NAMES.contains(&lower.as_str())
    }

    /// Whether include patterns were given (they replace the default policy).
    pub fn has_includes(&self) -> bool {
        !self.include.is_empty()
    }

    /// Whether the tensor is selected.
    pub fn selects(&self, name: &str, shape: &[usize]) -> bool {
        if self.exclude.is_match(name) {
            return false;
        }
        if self.include.is_empty() {
            Self::default_takes(name, shape)
        } else {
            self.include.iter().any(|(_, g)| g.is_match(name))
        }
    }

    /// Selects from `(name, shape)` pairs; errors if an include pattern matches nothing or nothing
    /// is selected.
    pub fn apply<'a>(
        &self,
        tensors: impl IntoIterator<Item = (&'a str, &'a [usize])> + Clone,
    ) -> Result<Vec<&'a str>, SelectionError> {
        for (p, g) in &self.include {
            if !tensors.clone().into_iter().any(|(n, _)| g.is_match(n)) {
                return Err(SelectionError::NoMatch { pattern: p.clone() });
            }
        }
        let out: Vec<&str> = tensors
            .into_iter()
            .filter(|(n, s)| self.selects(n, s))
            .map(|(n, _)| n)
            .collect();
        if out.is_empty() {
            return Err(SelectionError::Empty);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_takes_matrices_only() {
        assert!(Selection::default_takes("fc1.weight", &[300, 784]));
        assert!(!Selection::default_takes("fc1.bias", &[300]));
        assert!(!Selection::default_takes(
            "encoder.layer.0.LayerNorm.weight",
            &[768]
        ));
        assert!(!Selection::default_takes(
            "embeddings.word_embeddings.weight",
            &[30522, 768]
        ));
        assert!(Selection::default_takes("conv1.weight", &[6, 1, 5, 5]));
    }

    #[test]
    fn default_policy_on_transformers() {
        let takes = |n: &str, s: &[usize]| Selection::default_takes(n, s);
        // BERT: projections and MLP in; embeddings, norms, biases, MLM head and classifier out.
        for n in [
            "encoder.layer.0.attention.self.query.weight",
            "encoder.layer.0.attention.output.dense.weight",
            "encoder.layer.11.intermediate.dense.weight",
            "encoder.layer.11.output.dense.weight",
        ] {
            assert!(takes(n, &[768, 768]), "{n}");
        }
        for n in [
            "embeddings.word_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "encoder.layer.0.attention.output.LayerNorm.weight",
            "cls.predictions.transform.dense.weight",
            "classifier.weight",
        ] {
            assert!(!takes(n, &[768, 768]), "{n}");
        }
        assert!(!takes("encoder.layer.0.attention.self.query.bias", &[768]));
        // LLaMA / Mistral.
        assert!(takes(
            "model.layers.0.self_attn.q_proj.weight",
            &[4096, 4096]
        ));
        assert!(takes("model.layers.0.mlp.gate_proj.weight", &[11008, 4096]));
        for n in [
            "model.embed_tokens.weight",
            "model.layers.0.input_layernorm.weight",
            "model.norm.weight",
            "lm_head.weight",
            "score.weight",
            "output.weight",
            "shared.weight",
        ] {
            assert!(!takes(n, &[32000, 4096]), "{n}");
        }
        // GPT-2.
        assert!(takes("h.0.attn.c_attn.weight", &[768, 2304]));
        assert!(!takes("h.0.ln_1.weight", &[768]));
        assert!(!takes("wte.weight", &[50257, 768]));
        // An include brings the head back; an exclude wins over it.
        let s = Selection::new(&["lm_head.weight".into()], &[]).unwrap();
        assert!(s.selects("lm_head.weight", &[32000, 4096]));
        let s = Selection::new(&[], &["*.q_proj.*".into()]).unwrap();
        assert!(!s.selects("model.layers.0.self_attn.q_proj.weight", &[8, 8]));
    }

    #[test]
    fn include_exclude() {
        let s = Selection::new(&["fc*.weight".into()], &["fc3.*".into()]).unwrap();
        let t: Vec<(&str, &[usize])> = vec![
            ("fc1.weight", &[3, 4]),
            ("fc3.weight", &[2, 3]),
            ("fc1.bias", &[3]),
        ];
        assert_eq!(s.apply(t.clone()).unwrap(), vec!["fc1.weight"]);
        let none = Selection::new(&["conv*".into()], &[]).unwrap();
        assert!(matches!(none.apply(t), Err(SelectionError::NoMatch { .. })));
    }
}
