//! Writing a trained student as a model directory in its source's layout: the trained tensors
//! replace the source's (weights that were stored packed are packed again where that is smaller),
//! every other tensor and file is copied, and a student with dropped layers loses the other
//! layers' tensors and gets a `config.json` with its depth (and its heads and FFN widths
//! renumbered).

use std::collections::BTreeMap;
use std::path::Path;

use joulecut_checkpoint::{
    DenseTensor, HistoryEntry, Precomputed, Source, StreamOptions, TensorData, TensorEncoding,
    stream,
};
use joulecut_embed::{SentenceEncoder, Structure};
use joulecut_models::bert::TrainableEncoder;

use crate::pipeline::transformer::pack_if_smaller;
use crate::{Error, Result};

/// What [`write_student`] wrote.
#[derive(Debug, Clone)]
pub struct StudentWritten {
    /// Bytes of the weight files.
    pub bytes: u64,
    /// Weights stored packed.
    pub packed: usize,
}

fn layer_of(name: &str) -> Option<usize> {
    let rest = name.split("encoder.layer.").nth(1)?;
    rest.split('.').next()?.parse().ok()
}

/// Writes `student`, trained from the model directory `loaded`, to `out`. A directory already at
/// `out` (the previous epoch's checkpoint of the same run: callers refuse a user's directory before
/// training) is replaced: the new one is written complete beside it, then renamed into place.
pub fn write_student(
    loaded: &SentenceEncoder,
    student: &TrainableEncoder,
    out: &Path,
    history: HistoryEntry,
) -> Result<StudentWritten> {
    let source = loaded.dir();
    let prefix = loaded.prefix();
    let src = Source::open(source)?;
    let mut tensors = BTreeMap::new();
    let mut packed = 0;
    for (name, shape, values) in student.export()? {
        let full = format!("{prefix}{name}");
        let was_packed = src.names().contains(&full)
            && matches!(
                src.shard_of(&full).encodings().get(&full),
                Some(TensorEncoding::Sparse { .. })
            );
        let data = match was_packed
            .then(|| pack_if_smaller(&shape, &values))
            .flatten()
        {
            Some(p) => {
                packed += 1;
                p
            }
            None => TensorData::Dense(DenseTensor::from_f32(shape, &values)),
        };
        tensors.insert(full, data);
    }
    let depth = student.config().layers;
    let dropped: Vec<String> = src
        .names()
        .iter()
        .filter(|n| {
            n.strip_prefix(prefix)
                .and_then(layer_of)
                .is_some_and(|l| l >= depth)
        })
        .cloned()
        .collect();
    let mut opts = StreamOptions::new(history);
    let original_depth = loaded.config().num_hidden_layers;
    if depth != original_depth || student.origin().iter().enumerate().any(|(j, &i)| i != j) {
        opts.sidecar_contents
            .insert("config.json".into(), student_config(loaded, student)?);
    }
    let transform = Precomputed::new(tensors)?.dropping(dropped);
    let written = if out.exists() {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let next = out.with_file_name(format!(".{name}.joulecut-next"));
        let prev = out.with_file_name(format!(".{name}.joulecut-prev"));
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Write { path, source }
        };
        for stale in [&next, &prev] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(werr(stale))?;
            }
        }
        let w = stream(&src, &next, &opts, &transform)?;
        std::fs::rename(out, &prev).map_err(werr(out))?;
        std::fs::rename(&next, out).map_err(werr(out))?;
        std::fs::remove_dir_all(&prev).map_err(werr(&prev))?;
        w
    } else {
        stream(&src, out, &opts, &transform)?
    };
    Ok(StudentWritten {
        bytes: written.bytes,
        packed,
    })
}

/// The source's `config.json` with the student's depth, and the kept layers' pruned heads and FFN
/// widths renumbered.
fn student_config(loaded: &SentenceEncoder, student: &TrainableEncoder) -> Result<Vec<u8>> {
    let path = loaded.dir().join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::BadInput {
        what: path.display().to_string(),
        reason: format!("not JSON: {e}"),
        hint: "the model directory's config.json is damaged".into(),
    })?;
    let config = loaded.config();
    let old = loaded.structure();
    let keep = student.origin();
    let structure = Structure {
        pruned_heads: keep
            .iter()
            .enumerate()
            .filter_map(|(j, i)| old.pruned_heads.get(i).map(|h| (j, h.clone())))
            .collect(),
        intermediate_sizes: old
            .intermediate_sizes
            .as_ref()
            .map(|s| keep.iter().map(|&i| s[i]).collect()),
    };
    let mut new_config = config.clone();
    new_config.num_hidden_layers = keep.len();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("num_hidden_layers".into(), keep.len().into());
    }
    structure.write_into(&mut v, &new_config);
    Ok(serde_json::to_vec_pretty(&v).expect("JSON serialises"))
}
