//! The state of a recovery run after an epoch — every student variable and AdamW's moments and
//! step counts — saved beside the output so that `--resume` continues exactly where it stopped.
//!
//! A safetensors file: `var.NAME`, `m.NAME`, `v.NAME` (F32) per variable, and in `__metadata__`
//! the epochs and steps done, each variable's step count, and a fingerprint of the run (teacher,
//! corpus, student, settings) that [`TrainState::load`] checks.

use std::collections::HashMap;
use std::path::Path;

use joulecut_models::bert::TrainableEncoder;
use joulecut_ops::optim::{AdamW, MomentState};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::{Error, Result};

const KIND: &str = "recover-state";

/// See the module docs.
#[derive(Debug, Clone)]
pub struct TrainState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Optimiser steps taken.
    pub step: usize,
    vars: Vec<(String, Vec<usize>, Vec<f32>)>,
    moments: Vec<MomentState>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn state_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadInput {
        what: format!("training state {}", path.display()),
        reason: reason.into(),
        hint: "start again without --resume (the state belongs to another run, or is damaged)"
            .into(),
    }
}

impl TrainState {
    /// The student's variables and the optimiser's moments now.
    pub fn capture(
        student: &TrainableEncoder,
        opt: &AdamW,
        epochs_done: usize,
        step: usize,
    ) -> Result<Self> {
        let vars = student
            .named_vars()
            .iter()
            .map(|(n, v)| {
                let vals = v.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>());
                vals.map(|x| (n.clone(), v.dims().to_vec(), x))
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(Error::candle("read the student's weights"))?;
        let moments = opt
            .state()
            .map_err(Error::candle("read the optimiser state"))?;
        Ok(TrainState {
            epochs_done,
            step,
            vars,
            moments,
        })
    }

    /// Puts the saved weights into `student` and the moments into `opt` (built over
    /// `student.trainable_vars()`).
    pub fn restore(&self, student: &TrainableEncoder, opt: &mut AdamW) -> Result<()> {
        let named = student.named_vars();
        if named.len() != self.vars.len() {
            return Err(Error::Mismatch(format!(
                "the saved state has {} variables, the student {}",
                self.vars.len(),
                named.len()
            )));
        }
        for ((n, v), (sn, shape, vals)) in named.iter().zip(&self.vars) {
            if n != sn || v.dims() != shape.as_slice() {
                return Err(Error::Mismatch(format!(
                    "saved variable `{sn}` {shape:?} does not fit `{n}` {:?}",
                    v.dims()
                )));
            }
            let t = candle_core::Tensor::from_vec(vals.clone(), shape.as_slice(), v.device())
                .map_err(Error::candle("restore a weight"))?;
            v.set(&t).map_err(Error::candle("restore a weight"))?;
        }
        opt.set_state(self.moments.clone())
            .map_err(|e| Error::Mismatch(e.to_string()))
    }

    /// Writes the state to `path` atomically; `run` fingerprints the run.
    pub fn save(&self, path: &Path, run: &str) -> Result<()> {
        let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (n, s, v) in &self.vars {
            bufs.push((format!("var.{n}"), s.clone(), f32_bytes(v)));
        }
        // moments belong to the trainable variables, in order; name them by index
        for (i, m) in self.moments.iter().enumerate() {
            bufs.push((format!("m.{i}"), vec![m.m.len()], f32_bytes(&m.m)));
            bufs.push((format!("v.{i}"), vec![m.v.len()], f32_bytes(&m.v)));
        }
        let views = bufs
            .iter()
            .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| state_err(path, e.to_string()))?;
        let steps: Vec<u64> = self.moments.iter().map(|m| m.step).collect();
        let names: Vec<&str> = self.vars.iter().map(|(n, _, _)| n.as_str()).collect();
        let meta: HashMap<String, String> = [
            ("joulecut.kind", KIND.to_string()),
            ("joulecut.run", run.to_string()),
            ("joulecut.epochs_done", self.epochs_done.to_string()),
            ("joulecut.step", self.step.to_string()),
            (
                "joulecut.moment_steps",
                serde_json::to_string(&steps).unwrap_or_default(),
            ),
            (
                "joulecut.vars",
                serde_json::to_string(&names).unwrap_or_default(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| state_err(path, e.to_string()))?;
        super::write_atomic(path, &bytes)
    }

    /// Reads a state written by [`TrainState::save`] for the run fingerprinted `run`.
    pub fn load(path: &Path, run: &str) -> Result<Self> {
        let bytes = joulecut_checkpoint::input::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| state_err(path, e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
        if get("joulecut.kind") != KIND {
            return Err(state_err(path, "not a joulecut training state"));
        }
        if get("joulecut.run") != run {
            return Err(state_err(
                path,
                "saved by a run with another teacher, corpus, student or settings",
            ));
        }
        let num = |k: &str| {
            get(k)
                .parse::<usize>()
                .map_err(|_| state_err(path, format!("bad `{k}`")))
        };
        let (epochs_done, step) = (num("joulecut.epochs_done")?, num("joulecut.step")?);
        let steps: Vec<u64> = serde_json::from_str(&get("joulecut.moment_steps"))
            .map_err(|_| state_err(path, "bad step counts"))?;
        let names: Vec<String> = serde_json::from_str(&get("joulecut.vars"))
            .map_err(|_| state_err(path, "bad variable list"))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| state_err(path, e.to_string()))?;
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let t = st
                .tensor(name)
                .map_err(|_| state_err(path, format!("no tensor `{name}`")))?;
            if t.dtype() != Dtype::F32 {
                return Err(state_err(path, format!("`{name}` is not F32")));
            }
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok((t.shape().to_vec(), v))
        };
        let mut vars = Vec::with_capacity(names.len());
        for n in names {
            let (s, v) = read(&format!("var.{n}"))?;
            vars.push((n, s, v));
        }
        let mut moments = Vec::with_capacity(steps.len());
        for (i, &step) in steps.iter().enumerate() {
            let (_, m) = read(&format!("m.{i}"))?;
            let (_, v) = read(&format!("v.{i}"))?;
            moments.push(MomentState { step, m, v });
        }
        Ok(TrainState {
            epochs_done,
            step,
            vars,
            moments,
        })
    }
}
