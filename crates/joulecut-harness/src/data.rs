//! Datasets: the IDX format (MNIST, Fashion-MNIST; raw or gzip) and a small generated dataset for
//! tests.
//!
//! Images are scaled to [0, 1] and standardised with the *training* set's mean and standard
//! deviation (Fashion-MNIST: 0.286041 / 0.353024); the test set uses the training statistics.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use joulecut_models::Rng;

use crate::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` package installs the files.
pub const DEFAULT_DATA_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Environment variable naming the dataset directory.
pub const DATA_ENV: &str = "JOULECUT_DATA";

/// A labelled image dataset held in memory as normalised f32.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `len * dim` normalised pixels, row-major.
    pub images: Vec<f32>,
    /// One class index per sample.
    pub labels: Vec<u32>,
    /// Features per sample (784 for 28x28).
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
}

/// Train and test splits.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Training set.
    pub train: Dataset,
    /// Test set.
    pub test: Dataset,
    /// Where the data came from (a directory, or `generated`).
    pub source: String,
    /// Normalisation (mean, std) computed on the training set.
    pub norm: (f32, f32),
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` samples (all if `n` is larger).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.dim].to_vec(),
            labels: self.labels[..n].to_vec(),
            dim: self.dim,
            classes: self.classes,
        }
    }

    /// Images as a `[len, dim]` tensor and labels as `[len]` u32, on `device`.
    pub fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let x = Tensor::from_slice(&self.images, (self.len(), self.dim), device)
            .map_err(Error::candle("copy images to device"))?;
        let y = Tensor::from_slice(&self.labels, self.len(), device)
            .map_err(Error::candle("copy labels to device"))?;
        Ok((x, y))
    }
}

/// The dataset directory: `--data` if given, else `$JOULECUT_DATA`, else [`DEFAULT_DATA_DIR`].
pub fn resolve_data_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(DATA_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// A parsed IDX file (unsigned-byte data only, as MNIST uses).
#[derive(Debug, Clone)]
pub struct Idx {
    /// Dimensions (count first).
    pub dims: Vec<usize>,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The largest IDX data section read (Fashion-MNIST's training images are 47 MB).
const MAX_IDX_BYTES: usize = 1 << 30;

/// Inflates a gzip IDX file no further than its header promises (plus one byte, to notice more):
/// a small file that inflates to gigabytes is refused before it is held in memory.
fn inflate_bounded(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let damaged = |e: std::io::Error| format!("gzip stream is damaged or truncated ({e})");
    let mut d = flate2::read::GzDecoder::new(raw);
    let mut out = vec![0u8; 4];
    d.read_exact(&mut out).map_err(damaged)?;
    let nd = usize::from(out[3]);
    if nd == 0 || nd > 4 {
        return Ok(out); // the header checks name the problem
    }
    out.resize(4 + 4 * nd, 0);
    d.read_exact(&mut out[4..]).map_err(damaged)?;
    let n = (0..nd)
        .map(|i| {
            u32::from_be_bytes(out[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .try_fold(1usize, |a, d| a.checked_mul(d))
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| format!("the header promises more than {MAX_IDX_BYTES} bytes of data"))?;
    joulecut_checkpoint::input::reserve(&mut out, n + 1)
        .map_err(|e| format!("the header promises {n} bytes of data: {e}"))?;
    d.take(n as u64 + 1)
        .read_to_end(&mut out)
        .map_err(damaged)?;
    Ok(out)
}

/// Reads an IDX file, gzip-compressed or raw, validating magic number, dimensions and length.
pub fn read_idx(path: &Path) -> Result<Idx> {
    let raw = joulecut_checkpoint::input::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_idx(raw).map_err(|reason| Error::BadIdx {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses the bytes of an IDX file, gzip-compressed or raw; the error says what is wrong with them.
pub fn parse_idx(raw: Vec<u8>) -> std::result::Result<Idx, String> {
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        inflate_bounded(&raw)?
    } else {
        raw
    };
    if bytes.len() < 4 {
        return Err(format!(
            "{} bytes is too short for an IDX header",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "bad magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        ));
    }
    let nd = bytes[3] as usize;
    if nd == 0 || nd > 4 {
        return Err(format!(
            "{nd} dimensions; expected 1 (labels) or 3 (images)"
        ));
    }
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        return Err("truncated header".into());
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| "dimensions overflow".to_string())?;
    let have = bytes.len() - header;
    if have != n {
        return Err(format!(
            "header promises {n} bytes of data ({dims:?}) but the file has {have}: {}",
            if have < n {
                "truncated"
            } else {
                "trailing garbage"
            }
        ));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

fn load_split(dir: &Path, prefix: &str) -> Result<(Idx, Idx, PathBuf)> {
    let img_stem = format!("{prefix}-images-idx3-ubyte");
    let lab_stem = format!("{prefix}-labels-idx1-ubyte");
    let missing = |stem: &str| Error::DatasetMissing {
        path: dir.join(stem),
        what: format!("{stem}[.gz]"),
    };
    let ip = find(dir, &img_stem).ok_or_else(|| missing(&img_stem))?;
    let lp = find(dir, &lab_stem).ok_or_else(|| missing(&lab_stem))?;
    let images = read_idx(&ip)?;
    let labels = read_idx(&lp)?;
    if images.dims.len() != 3 {
        return Err(Error::BadIdx {
            path: ip,
            reason: format!("images need 3 dimensions, found {:?}", images.dims),
        });
    }
    if labels.dims.len() != 1 {
        return Err(Error::BadIdx {
            path: lp,
            reason: format!("labels need 1 dimension, found {:?}", labels.dims),
        });
    }
    if images.dims[0] != labels.dims[0] {
        return Err(Error::BadIdx {
            path: lp,
            reason: format!(
                "{} labels for {} images in {}",
                labels.dims[0],
                images.dims[0],
                ip.display()
            ),
        });
    }
    if let Some(&l) = labels.data.iter().find(|&&l| l >= 10) {
        return Err(Error::BadIdx {
            path: lp,
            reason: format!("label {l} is outside 0..10"),
        });
    }
    Ok((images, labels, ip))
}

/// Loads an MNIST-layout dataset (Fashion-MNIST, MNIST) from `dir`.
pub fn load_mnist_dir(dir: &Path) -> Result<Splits> {
    if !dir.is_dir() {
        return Err(Error::DatasetMissing {
            path: dir.to_path_buf(),
            what: "directory".into(),
        });
    }
    let (tri, trl, trp) = load_split(dir, "train")?;
    let (tei, tel, tep) = load_split(dir, "t10k")?;
    if tri.dims[1..] != tei.dims[1..] {
        return Err(Error::BadIdx {
            path: tep,
            reason: format!(
                "test images are {:?}, training images {:?} ({})",
                &tei.dims[1..],
                &tri.dims[1..],
                trp.display()
            ),
        });
    }
    // the normalisation comes from the training images: none means no statistics at all
    for (idx, path, which) in [(&tri, &trp, "training"), (&tei, &tep, "test")] {
        if idx.dims[0] == 0 || idx.data.is_empty() {
            return Err(Error::BadIdx {
                path: path.clone(),
                reason: format!("the {which} set has no images"),
            });
        }
    }
    let dim = tri.dims[1] * tri.dims[2];
    // Statistics in f64: 47M pixels would lose precision in f32.
    let n = tri.data.len() as f64;
    let mean = tri.data.iter().map(|&p| p as f64 / 255.0).sum::<f64>() / n;
    let var = tri
        .data
        .iter()
        .map(|&p| (p as f64 / 255.0 - mean).powi(2))
        .sum::<f64>()
        / n;
    let (mean, std) = (mean as f32, var.sqrt().max(1e-12) as f32);
    let norm = |d: &[u8]| {
        d.iter()
            .map(|&p| (p as f32 / 255.0 - mean) / std)
            .collect::<Vec<_>>()
    };
    let labels = |d: &[u8]| d.iter().map(|&l| l as u32).collect::<Vec<_>>();
    Ok(Splits {
        train: Dataset {
            images: norm(&tri.data),
            labels: labels(&trl.data),
            dim,
            classes: 10,
        },
        test: Dataset {
            images: norm(&tei.data),
            labels: labels(&tel.data),
            dim,
            classes: 10,
        },
        source: dir.display().to_string(),
        norm: (mean, std),
    })
}

/// Loads Fashion-MNIST from `--data`, `$JOULECUT_DATA` or the Debian package's directory.
pub fn load_fashion_mnist(flag: Option<&Path>) -> Result<Splits> {
    load_mnist_dir(&resolve_data_dir(flag))
}

/// A small learnable dataset for tests: `classes` Gaussian blobs in `dim` dimensions.
pub fn synthetic(train: usize, test: usize, dim: usize, classes: usize, seed: u64) -> Splits {
    let mut rng = Rng::new(seed);
    let protos: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..dim).map(|_| rng.normal()).collect())
        .collect();
    let mut gen_split = |n: usize| {
        let mut images = Vec::with_capacity(n * dim);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let c = rng.below(classes);
            labels.push(c as u32);
            images.extend(protos[c].iter().map(|&p| p + 0.8 * rng.normal()));
        }
        Dataset {
            images,
            labels,
            dim,
            classes,
        }
    };
    let train = gen_split(train);
    let test = gen_split(test);
    Splits {
        train,
        test,
        source: "generated".into(),
        norm: (0.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Issue 22, row 14: a small gzip file that inflates far beyond what its header promises is
    /// refused after reading one byte more than promised, not after inflating all of it.
    #[test]
    fn a_gzip_bomb_is_refused_without_inflating_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bomb.gz");
        let mut content = idx(&[1, 28, 28], &[]);
        content.resize(content.len() + (64 << 20), 0);
        std::fs::write(&p, gzip(&content)).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() < 1 << 20);
        let e = read_idx(&p).unwrap_err().to_string();
        assert!(e.contains("784 bytes") && e.contains("785"), "{e}");
        // a header promising more than any dataset is refused before reading on
        let huge = dir.path().join("huge.gz");
        std::fs::write(&huge, gzip(&idx(&[65535, 65535, 65535], &[1, 2, 3]))).unwrap();
        assert!(
            read_idx(&huge)
                .unwrap_err()
                .to_string()
                .contains("promises more than")
        );
    }

    #[test]
    fn reads_raw_and_gzip_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a");
        std::fs::write(&raw, idx(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
        assert_eq!(read_idx(&raw).unwrap().dims, vec![2, 2, 2]);
        let gz = dir.path().join("a.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &idx(&[3], &[1, 2, 3])).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_idx(&gz).unwrap().data, vec![1, 2, 3]);
        std::fs::write(&raw, idx(&[2, 2, 2], &[1, 2, 3])).unwrap();
        assert!(
            read_idx(&raw)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        std::fs::write(&raw, b"\x12\x34\x08\x01abcd").unwrap();
        assert!(read_idx(&raw).unwrap_err().to_string().contains("magic"));
    }

    #[test]
    fn missing_directory_names_the_package() {
        let e = load_mnist_dir(Path::new("/nonexistent/joulecut")).unwrap_err();
        assert!(e.is_bad_input());
        assert!(e.hint().unwrap().contains("dataset-fashion-mnist"));
    }

    #[test]
    fn synthetic_is_deterministic() {
        let a = synthetic(50, 10, 8, 3, 1);
        let b = synthetic(50, 10, 8, 3, 1);
        assert_eq!(a.train.images, b.train.images);
        assert_eq!(a.train.len(), 50);
    }
}
