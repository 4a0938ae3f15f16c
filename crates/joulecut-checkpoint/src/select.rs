//! Which tensors a compression pass touches: include/exclude globs over tensor names, on top of a
//! default policy. One type for every pass (pruning, quantization, casts), so they agree on what a
//! "weight" is, and serialisable so a pass can record it in `joulecut.history`.
//!
//! Default (no include glob): weight matrices and conv kernels (rank ≥ 2) only — for a transformer
//! that is the attention projections and MLP weights; never biases, norms (LayerNorm, RMSNorm),
//! embeddings, position tables or the output head (`lm_head`, `classifier`, `score`, `qa_outputs`,
//! BERT's `cls.*`, LLaMA's top-level `output.weight`, T5's tied `shared.weight`), which are small or
//! sensitive. Include globs replace the default policy: exactly the tensors matching one of them are
//! selected, whatever their rank (so `fc1.*` takes `fc1.bias` too). Exclude globs always win.
//! [`Selection::select`] refuses a glob that matches no tensor name, so a typo is an error instead
//! of a silent no-op.
//!
//! ```
//! use joulecut_checkpoint::Selection;
//! let tensors = [("fc1.weight", &[300usize, 784][..]), ("fc1.bias", &[300][..]), ("fc2.weight", &[10, 300][..])];
//! let all = Selection::default().select(tensors.iter().copied())?;
//! assert_eq!(all, ["fc1.weight", "fc2.weight"]);
//! let some = Selection::default().exclude("fc2.*").select(tensors.iter().copied())?;
//! assert_eq!(some, ["fc1.weight"]);
//! # Ok::<(), joulecut_checkpoint::SelectionError>(())
//! ```

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

/// A bad glob, a glob that selects nothing, or an empty selection.
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
    /// An include or exclude glob that matches no tensor name.
    #[error("{kind} glob `{pattern}` matches no tensor (of {count} tensors)")]
    NoMatch {
        /// `include` or `exclude`.
        kind: &'static str,
        /// The pattern.
        pattern: String,
        /// How many tensor names were tried.
        count: usize,
        /// A few of the names, for the hint.
        examples: Vec<String>,
    },
    /// The selection is empty.
    #[error("no tensor selected (of {count} tensors)")]
    Empty {
        /// How many tensors were considered.
        count: usize,
    },
}

impl SelectionError {
    /// A one-line suggestion for fixing the error.
    pub fn hint(&self) -> String {
        match self {
            SelectionError::BadGlob { .. } => {
                "globs use *, ?, [abc] and {a,b}, e.g. 'encoder.*.weight'".into()
            }
            SelectionError::NoMatch { examples, .. } => format!(
                "tensor names look like: {}{} (see `joulecut inspect FILE`)",
                examples.join(", "),
                if examples.is_empty() { "" } else { ", ..." }
            ),
            SelectionError::Empty { .. } => {
                "by default only weights of rank >= 2 are taken (no biases, norms, embeddings or \
                 output heads); select tensors with --include GLOB"
                    .into()
            }
        }
    }
}

/// Include/exclude globs over tensor names (see the module docs for the default policy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Globs of tensors to select; empty means the default policy.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs of tensors to leave alone.
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn compile(pattern: &str) -> Result<GlobMatcher, SelectionError> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| SelectionError::BadGlob {
            pattern: pattern.into(),
            reason: e.to_string(),
        })
}

fn compile_all(patterns: &[String]) -> Result<Vec<GlobMatcher>, SelectionError> {
    patterns.iter().map(|p| compile(p)).collect()
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
    /// Checked rules from include and exclude globs.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, SelectionError> {
        let s = Selection {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        };
        s.validate()?;
        Ok(s)
    }

    /// Adds an include glob.
    pub fn include(mut self, glob: impl Into<String>) -> Self {
        self.include.push(glob.into());
        self
    }

    /// Adds an exclude glob.
    pub fn exclude(mut self, glob: impl Into<String>) -> Self {
        self.exclude.push(glob.into());
        self
    }

    /// Checks that every glob parses.
    pub fn validate(&self) -> Result<(), SelectionError> {
        compile_all(&self.include)?;
        compile_all(&self.exclude)?;
        Ok(())
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

    /// Whether the tensor is selected. A glob that does not parse matches nothing
    /// ([`Selection::new`] and [`Selection::select`] report it).
    pub fn selects(&self, name: &str, shape: &[usize]) -> bool {
        let matches = |globs: &[String]| {
            globs
                .iter()
                .any(|g| compile(g).is_ok_and(|m| m.is_match(name)))
        };
        if matches(&self.exclude) {
            return false;
        }
        if self.include.is_empty() {
            Self::default_takes(name, shape)
        } else {
            matches(&self.include)
        }
    }

    /// The names of the selected tensors, in input order.
    ///
    /// Fails when a glob does not parse, when a glob matches no tensor name, or when nothing is
    /// selected.
    pub fn select<'a>(
        &self,
        tensors: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> Result<Vec<String>, SelectionError> {
        let tensors: Vec<(&str, &[usize])> = tensors.into_iter().collect();
        let includes = compile_all(&self.include)?;
        let excludes = compile_all(&self.exclude)?;
        let unmatched = |kind: &'static str, globs: &[String], matchers: &[GlobMatcher]| {
            for (glob, m) in globs.iter().zip(matchers) {
                if !tensors.iter().any(|(name, _)| m.is_match(name)) {
                    return Err(SelectionError::NoMatch {
                        kind,
                        pattern: glob.clone(),
                        count: tensors.len(),
                        examples: tensors.iter().take(4).map(|(n, _)| n.to_string()).collect(),
                    });
                }
            }
            Ok(())
        };
        unmatched("include", &self.include, &includes)?;
        unmatched("exclude", &self.exclude, &excludes)?;
        let selected: Vec<String> = tensors
            .iter()
            .filter(|(name, shape)| {
                let included = if includes.is_empty() {
                    Self::default_takes(name, shape)
                } else {
                    includes.iter().any(|m| m.is_match(name))
                };
                included && !excludes.iter().any(|m| m.is_match(name))
            })
            .map(|(name, _)| name.to_string())
            .collect();
        if selected.is_empty() {
            return Err(SelectionError::Empty {
                count: tensors.len(),
            });
        }
        Ok(selected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: [(&str, &[usize]); 5] = [
        ("fc1.weight", &[4, 3]),
        ("fc1.bias", &[4]),
        ("ln.weight", &[4]),
        ("embeddings.word", &[10, 4]),
        ("conv.weight", &[2, 1, 3, 3]),
    ];

    #[test]
    fn default_policy_takes_matrices_and_kernels() {
        let s = Selection::default().select(T).unwrap();
        assert_eq!(s, ["fc1.weight", "conv.weight"]);
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
    fn include_overrides_the_default_and_exclude_removes() {
        let s = Selection::default().include("fc1.*").select(T).unwrap();
        assert_eq!(s, ["fc1.weight", "fc1.bias"]);
        let s = Selection::default()
            .include("fc1.*")
            .exclude("*.bias")
            .select(T)
            .unwrap();
        assert_eq!(s, ["fc1.weight"]);
        let s = Selection::new(&["fc*.weight".into()], &["fc3.*".into()]).unwrap();
        assert!(s.selects("fc1.weight", &[3, 4]));
        assert!(!s.selects("fc3.weight", &[2, 3]));
        assert!(!s.selects("fc1.bias", &[3]));
    }

    #[test]
    fn a_glob_matching_nothing_is_an_error() {
        let e = Selection::default().include("fc9.*").select(T).unwrap_err();
        assert!(
            matches!(
                e,
                SelectionError::NoMatch {
                    kind: "include",
                    ..
                }
            ),
            "{e}"
        );
        let e = Selection::default().exclude("nope").select(T).unwrap_err();
        assert!(
            matches!(
                e,
                SelectionError::NoMatch {
                    kind: "exclude",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.hint().contains("fc1.weight"));
    }

    #[test]
    fn empty_selection_and_bad_glob_are_errors() {
        let e = Selection::default().exclude("*").select(T).unwrap_err();
        assert!(matches!(e, SelectionError::Empty { .. }));
        let e = Selection::default().include("a[").select(T).unwrap_err();
        assert!(matches!(e, SelectionError::BadGlob { .. }));
        assert!(Selection::new(&["a[".into()], &[]).is_err());
        // The serialised form is the two glob lists (recorded in `joulecut.history`).
        let s = Selection::default().exclude("fc3.*");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"include":[],"exclude":["fc3.*"]}"#
        );
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
}
