//! Real English sentences for calibration, evaluation and distillation: the glosses of WordNet as
//! Debian's `wordnet-base` installs them (`/usr/share/wordnet/data.{noun,verb,adj,adv}`), split
//! into disjoint sets.
//!
//! Each data line is `offset lex_filenum ss_type ... | gloss`; the gloss is a definition followed by
//! `;`-separated quoted examples. Every part of at least [`WordnetConfig::min_words`] words becomes
//! a sentence (the licence header's lines start with two spaces and are skipped). The files are
//! Latin-1, decoded byte by byte. Sentences are de-duplicated (a gloss can repeat across parts of
//! speech, and the sets must not share one), shuffled with the project's seeded generator
//! (`joulecut_ops::Rng`, Fisher–Yates) and cut into calibration, evaluation and corpus sets, so a
//! seed gives the same sets on every machine with the same WordNet.
//!
//! ```no_run
//! use joulecut_embed::wordnet::{WordnetConfig, WordnetSplit};
//! # fn main() -> joulecut_embed::Result<()> {
//! let split = WordnetSplit::load(&WordnetConfig::default())?;
//! assert_eq!(split.calibration.len(), 128);
//! assert_eq!(split.evaluation.len(), 400);
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Debian's `wordnet-base` installs the database.
pub const DEFAULT_DIR: &str = "/usr/share/wordnet";

/// The data files read, in this order.
pub const DATA_FILES: [&str; 4] = ["data.noun", "data.verb", "data.adj", "data.adv"];

/// Where the glosses come from and how they are split.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WordnetConfig {
    /// Directory holding `data.noun`, `data.verb`, `data.adj`, `data.adv`.
    pub dir: PathBuf,
    /// Sentences in the calibration set (activation statistics for compression).
    pub calibration: usize,
    /// Sentences in the evaluation set (embedding fidelity).
    pub evaluation: usize,
    /// Sentences in the corpus (distillation).
    pub corpus: usize,
    /// Shortest sentence kept, in whitespace-separated words.
    pub min_words: usize,
    /// Seed of the shuffle.
    pub seed: u64,
}

impl Default for WordnetConfig {
    fn default() -> Self {
        WordnetConfig {
            dir: PathBuf::from(DEFAULT_DIR),
            calibration: 128,
            evaluation: 400,
            corpus: 20_000,
            min_words: 6,
            seed: 0,
        }
    }
}

/// Disjoint sets of WordNet sentences.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WordnetSplit {
    /// For calibrating activation-aware compression.
    pub calibration: Vec<String>,
    /// For measuring a compressed model against the original.
    pub evaluation: Vec<String>,
    /// For distillation.
    pub corpus: Vec<String>,
}

/// The sentences of one data file's bytes, in file order (not de-duplicated).
pub fn parse_glosses(bytes: &[u8], min_words: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        if line.starts_with(b"  ") {
            continue; // licence header
        }
        let Some(bar) = line.iter().position(|&b| b == b'|') else {
            continue;
        };
        // Latin-1: every byte is the code point of the same value.
        let gloss: String = line[bar + 1..].iter().map(|&b| char::from(b)).collect();
        for part in gloss.split(';') {
            let s = part.trim().trim_matches('"').trim();
            if s.split_whitespace().count() >= min_words {
                out.push(s.to_string());
            }
        }
    }
    out
}

/// Every distinct sentence of the four data files in `dir`, in file order.
pub fn glosses(dir: &Path, min_words: usize) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in DATA_FILES {
        let path = dir.join(name);
        let bytes =
            joulecut_checkpoint::input::read(&path).map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => Error::NoWordnet { path: path.clone() },
                _ => Error::Read {
                    path: path.clone(),
                    source,
                },
            })?;
        for s in parse_glosses(&bytes, min_words) {
            if seen.insert(s.clone()) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

impl WordnetSplit {
    /// Reads the glosses from `cfg.dir` and splits them.
    pub fn load(cfg: &WordnetConfig) -> Result<Self> {
        Self::split(glosses(&cfg.dir, cfg.min_words)?, cfg)
    }

    /// Shuffles distinct `sentences` with `cfg.seed` and cuts the three sets (sizes from `cfg`).
    pub fn split(mut sentences: Vec<String>, cfg: &WordnetConfig) -> Result<Self> {
        let needed = cfg.calibration + cfg.evaluation + cfg.corpus;
        if sentences.len() < needed {
            return Err(Error::NotEnoughText {
                dir: cfg.dir.clone(),
                needed,
                found: sentences.len(),
                min_words: cfg.min_words,
            });
        }
        joulecut_ops::Rng::new(cfg.seed).shuffle(&mut sentences);
        sentences.truncate(needed);
        let corpus = sentences.split_off(cfg.calibration + cfg.evaluation);
        let evaluation = sentences.split_off(cfg.calibration);
        Ok(WordnetSplit {
            calibration: sentences,
            evaluation,
            corpus,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"  1 This software and database is being provided to you | by  \n\
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known or inferred to have its own existence  \n\
00002137 03 n 02 abstraction 0 abstract_entity 0 010 | a general concept formed by extracting common features; \"the cat sat on the mat today\"; \"too short\"  \n\
00002452 03 n 01 thing 0 | an entity that has physical existence  \n\
no bar on this line at all, so it is skipped entirely\n\
00003000 03 n 01 caf\xe9 0 | a small restaurant where caf\xe9 au lait is served  \n";

    #[test]
    fn parses_glosses_and_examples_skipping_the_header_and_short_parts() {
        let g = parse_glosses(SAMPLE, 6);
        assert_eq!(
            g,
            [
                "that which is perceived or known or inferred to have its own existence",
                "a general concept formed by extracting common features",
                "the cat sat on the mat today",
                "an entity that has physical existence",
                "a small restaurant where café au lait is served",
            ]
        );
        assert_eq!(parse_glosses(SAMPLE, 2).len(), 6); // "too short" has 2 words
    }

    fn cfg(c: usize, e: usize, k: usize) -> WordnetConfig {
        WordnetConfig {
            calibration: c,
            evaluation: e,
            corpus: k,
            ..WordnetConfig::default()
        }
    }

    #[test]
    fn split_is_disjoint_seeded_and_sized() {
        let all: Vec<String> = (0..100).map(|i| format!("sentence number {i}")).collect();
        let s = WordnetSplit::split(all.clone(), &cfg(5, 10, 20)).unwrap();
        assert_eq!(
            (s.calibration.len(), s.evaluation.len(), s.corpus.len()),
            (5, 10, 20)
        );
        let mut union: Vec<&String> = s
            .calibration
            .iter()
            .chain(&s.evaluation)
            .chain(&s.corpus)
            .collect();
        union.sort();
        union.dedup();
        assert_eq!(union.len(), 35, "the sets overlap");
        assert_eq!(
            s,
            WordnetSplit::split(all.clone(), &cfg(5, 10, 20)).unwrap()
        );
        let other = WordnetSplit::split(
            all.clone(),
            &WordnetConfig {
                seed: 1,
                ..cfg(5, 10, 20)
            },
        )
        .unwrap();
        assert_ne!(s.calibration, other.calibration);
        assert_ne!(s.calibration, all[..5], "not shuffled");
        let e = WordnetSplit::split(all, &cfg(50, 50, 1)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::NotEnoughText {
                    needed: 101,
                    found: 100,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_missing_directory_says_how_to_install_it() {
        let e = glosses(Path::new("/nonexistent/wordnet"), 6).unwrap_err();
        assert!(matches!(e, Error::NoWordnet { .. }), "{e}");
        assert!(e.to_string().contains("data.noun"), "{e}");
        assert!(e.hint().unwrap().contains("apt-get install wordnet-base"));
    }
}
