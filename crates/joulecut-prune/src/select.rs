//! Which tensors a pruning pass touches: include/exclude globs over parameter names plus a default
//! policy.
//!
//! Without `include` globs, the default policy selects weight matrices and conv kernels: tensors of
//! rank >= 2, except biases, norms, embeddings, position tables and output heads (`lm_head`,
//! `classifier`) — the same policy as `joulecut_checkpoint::Selection`, so pruning and quantization
//! agree on what a "weight" is. With `include` globs, exactly the tensors matching one of them are
//! selected, whatever their rank (so `--include 'fc1.*'` takes `fc1.bias` too). `exclude` globs then
//! remove tensors. Every glob must match at least one tensor name, so a typo is an error instead of a
//! silent no-op.
//!
//! ```
//! use joulecut_prune::Selection;
//! let tensors = [("fc1.weight", &[300usize, 784][..]), ("fc1.bias", &[300][..]), ("fc2.weight", &[10, 300][..])];
//! let all = Selection::default().select(tensors.iter().copied())?;
//! assert_eq!(all, ["fc1.weight", "fc2.weight"]);
//! let some = Selection::default().exclude("fc2.*").select(tensors.iter().copied())?;
//! assert_eq!(some, ["fc1.weight"]);
//! # Ok::<(), joulecut_prune::Error>(())
//! ```

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

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

/// Whether the default policy selects a tensor (see the module docs).
pub fn is_default_prunable(name: &str, shape: &[usize]) -> bool {
    joulecut_checkpoint::Selection::default_takes(name, shape)
}

fn compile(glob: &str) -> Result<GlobMatcher> {
    Glob::new(glob)
        .map(|g| g.compile_matcher())
        .map_err(|source| Error::InvalidGlob {
            glob: glob.into(),
            source: Box::new(source),
        })
}

impl Selection {
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
    pub fn validate(&self) -> Result<()> {
        self.include
            .iter()
            .chain(&self.exclude)
            .try_for_each(|g| compile(g).map(|_| ()))
    }

    /// The names of the selected tensors, in input order.
    ///
    /// Fails when a glob does not parse, when a glob matches no tensor name, or when nothing is
    /// selected.
    pub fn select<'a>(
        &self,
        tensors: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> Result<Vec<String>> {
        let tensors: Vec<(&str, &[usize])> = tensors.into_iter().collect();
        let includes = self
            .include
            .iter()
            .map(|g| compile(g))
            .collect::<Result<Vec<_>>>()?;
        let excludes = self
            .exclude
            .iter()
            .map(|g| compile(g))
            .collect::<Result<Vec<_>>>()?;
        let unmatched = |kind: &'static str, globs: &[String], matchers: &[GlobMatcher]| {
            for (glob, m) in globs.iter().zip(matchers) {
                if !tensors.iter().any(|(name, _)| m.is_match(name)) {
                    return Err(Error::GlobMatchesNothing {
                        kind,
                        glob: glob.clone(),
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
                    is_default_prunable(name, shape)
                } else {
                    includes.iter().any(|m| m.is_match(name))
                };
                included && !excludes.iter().any(|m| m.is_match(name))
            })
            .map(|(name, _)| name.to_string())
            .collect();
        if selected.is_empty() {
            return Err(Error::NothingSelected {
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
    }

    #[test]
    fn a_glob_matching_nothing_is_an_error() {
        let e = Selection::default().include("fc9.*").select(T).unwrap_err();
        assert!(
            matches!(
                e,
                Error::GlobMatchesNothing {
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
                Error::GlobMatchesNothing {
                    kind: "exclude",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.is_bad_input() && e.hint().unwrap().contains("fc1.weight"));
    }

    #[test]
    fn empty_selection_and_bad_glob_are_errors() {
        let e = Selection::default().exclude("*").select(T).unwrap_err();
        assert!(matches!(e, Error::NothingSelected { .. }));
        let e = Selection::default().include("a[").select(T).unwrap_err();
        assert!(matches!(e, Error::InvalidGlob { .. }));
    }
}
