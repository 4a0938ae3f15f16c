//! Cosine similarity between two models' embeddings of the same sentences, and sentence files
//! (the `--sentences` of `eval-embeddings`, calibration text).

use std::path::Path;

use crate::error::{Error, Result};

/// Cosine similarity of two vectors, computed in f64; 0 when either is all zeros.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Per-sentence cosines and their summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CosineSummary {
    /// Number of sentences.
    pub sentences: usize,
    /// Mean cosine over sentences.
    pub mean: f64,
    /// Lowest cosine.
    pub min: f64,
    /// Index (0-based, among non-blank lines) of the sentence with the lowest cosine.
    pub min_index: usize,
    /// Cosine of each sentence, in input order.
    pub per_sentence: Vec<f64>,
}

/// Retrieval agreement: for each sentence, the share of its `k` nearest neighbours (by cosine,
/// among the other sentences) under `b` that are also among its `k` nearest under `a`, averaged
/// over sentences. 1 means a search index built on `b` returns what `a`'s would; `None` when the
/// sets do not line up or hold no more than `k` sentences.
pub fn neighbour_agreement(a: &[Vec<f32>], b: &[Vec<f32>], k: usize) -> Option<f64> {
    if a.len() != b.len() || a.len() <= k || k == 0 {
        return None;
    }
    let top = |e: &[Vec<f32>], i: usize| -> Vec<usize> {
        let mut sims: Vec<(f64, usize)> = (0..e.len())
            .filter(|&j| j != i)
            .map(|j| (cosine(&e[i], &e[j]), j))
            .collect();
        // highest first; ties by index so the result is deterministic
        sims.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let mut t: Vec<usize> = sims[..k].iter().map(|s| s.1).collect();
        t.sort_unstable();
        t
    };
    let mut sum = 0.0;
    for i in 0..a.len() {
        let (ta, tb) = (top(a, i), top(b, i));
        sum += tb.iter().filter(|j| ta.binary_search(j).is_ok()).count() as f64 / k as f64;
    }
    Some(sum / a.len() as f64)
}

impl CosineSummary {
    /// Compares row `i` of `a` with row `i` of `b`; both must have the same rows and widths.
    pub fn of(a: &[Vec<f32>], b: &[Vec<f32>]) -> Option<Self> {
        if a.is_empty() || a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.len() != y.len()) {
            return None;
        }
        let per: Vec<f64> = a.iter().zip(b).map(|(x, y)| cosine(x, y)).collect();
        let (min_index, min) =
            per.iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f64::INFINITY),
                    |m, (i, c)| if c < m.1 { (i, c) } else { m },
                );
        Some(CosineSummary {
            sentences: per.len(),
            mean: per.iter().sum::<f64>() / per.len() as f64,
            min,
            min_index,
            per_sentence: per,
        })
    }
}

/// Reads a sentence file: UTF-8 text, one sentence per line (trimmed; blank lines and a leading
/// byte-order mark skipped). A file with no sentence ([`Error::NoSentences`]), a NUL byte (a binary
/// file, [`Error::Binary`]) or invalid UTF-8 ([`Error::NotText`]) is refused, naming the line.
pub fn read_sentences(path: &Path) -> Result<Vec<String>> {
    let bytes = joulecut_checkpoint::input::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(Error::Binary {
            path: path.to_path_buf(),
            line: 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count(),
        });
    }
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(line).map_err(|_| Error::NotText {
            path: path.to_path_buf(),
            line: i + 1,
        })?;
        let line = line.trim();
        if !line.is_empty() {
            out.push(line.to_string());
        }
    }
    if out.is_empty() {
        return Err(Error::NoSentences {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_basics() {
        assert!((cosine(&[1., 2., 3.], &[2., 4., 6.]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[1., 0.], &[0., 1.])).abs() < 1e-12);
        assert!((cosine(&[1., 0.], &[-1., 0.]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0., 0.], &[1., 0.]), 0.0);
    }

    #[test]
    fn summary_finds_the_worst_sentence() {
        let a = vec![vec![1., 0.], vec![1., 0.], vec![1., 1.]];
        let b = vec![vec![1., 0.], vec![0., 1.], vec![1., 1.]];
        let s = CosineSummary::of(&a, &b).unwrap();
        assert_eq!(s.sentences, 3);
        assert_eq!(s.min_index, 1);
        assert!(s.min.abs() < 1e-12);
        assert!((s.mean - 2.0 / 3.0).abs() < 1e-12);
        assert!(CosineSummary::of(&a, &b[..2]).is_none());
        assert!(CosineSummary::of(&[], &[]).is_none());
    }

    #[test]
    fn sentences_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.txt");
        std::fs::write(&p, "  first one \n\n\r\nsecond\n").unwrap();
        assert_eq!(read_sentences(&p).unwrap(), ["first one", "second"]);
        std::fs::write(&p, "\n  \n").unwrap();
        assert!(matches!(read_sentences(&p), Err(Error::NoSentences { .. })));
        std::fs::write(&p, b"ok\n\xff\xfe\n").unwrap();
        assert!(matches!(
            read_sentences(&p),
            Err(Error::NotText { line: 2, .. })
        ));
        assert!(matches!(
            read_sentences(&dir.path().join("missing.txt")),
            Err(Error::Read { .. })
        ));
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(read_sentences(&p), Err(Error::NoSentences { .. })));
        std::fs::write(&p, b"one\ntwo\n\x00\x01\x02 three\n").unwrap();
        assert!(matches!(
            read_sentences(&p),
            Err(Error::Binary { line: 3, .. })
        ));
        std::fs::write(&p, b"\xEF\xBB\xBFfirst\r\nsecond").unwrap();
        assert_eq!(read_sentences(&p).unwrap(), ["first", "second"]);
        let e = read_sentences(&p.with_extension("none")).unwrap_err();
        assert!(e.hint().is_some());
    }
}

#[cfg(test)]
mod agreement_tests {
    use super::neighbour_agreement;

    #[test]
    fn neighbour_agreement_is_one_for_the_same_embeddings_and_drops_when_they_scramble() {
        let a: Vec<Vec<f32>> = (0..30)
            .map(|i| vec![(i as f32).sin(), (i as f32 * 0.7).cos(), i as f32 / 30.0])
            .collect();
        assert_eq!(neighbour_agreement(&a, &a, 5), Some(1.0));
        let mut b = a.clone();
        b.reverse();
        assert!(neighbour_agreement(&a, &b, 5).unwrap() < 0.5);
        assert_eq!(neighbour_agreement(&a, &a[..3], 5), None);
        assert_eq!(neighbour_agreement(&a[..5], &a[..5], 5), None);
    }
}
