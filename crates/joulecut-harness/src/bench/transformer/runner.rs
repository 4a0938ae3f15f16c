//! The transformer suite runner: reads the text, evaluates the f32 baseline, makes each variant's
//! model directory ([`super::build`]) and evaluates it against the baseline's embeddings.

use std::path::{Path, PathBuf};
use std::time::Instant;

use joulecut_embed::wordnet::{WordnetConfig, WordnetSplit};
use joulecut_embed::{CosineSummary, neighbour_agreement, read_sentences};
use joulecut_energy::Meter;
use serde::{Deserialize, Serialize};

use super::build::Builder;
use super::config::{TextConfig, TransformerStep, TransformerSuite, TransformerVariant};
use super::evaluate::{Embedded, embed};
use super::result::{StepCost, TransformerResult};
use crate::bench::Saving;
use crate::{Error, Result};

/// Where a transformer suite runs.
#[derive(Debug, Clone)]
pub struct TransformerOptions {
    /// The model directory (overrides the suite's `model`).
    pub model: PathBuf,
    /// Output directory: `text/` (the sentence files the commands name), `models/` (one
    /// directory per variant; an earlier run's are replaced), and the reports.
    pub out_dir: PathBuf,
    /// Where the baseline and the variants are evaluated: joulecut's kernels on the CPU, the
    /// portable engine (f16/bf16 computed as stored, int8 as Q8_0) on a GPU. Compression and
    /// recovery run on the CPU either way.
    pub device: candle_core::Device,
}

/// The sentences a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSummary {
    /// Where they came from (`wordnet DIR, seed S` or the files).
    pub source: String,
    /// Calibration sentences.
    pub calibration: usize,
    /// Evaluation sentences.
    pub evaluation: usize,
    /// Tokens of the evaluation sentences (special tokens included, no padding).
    pub evaluation_tokens: usize,
    /// The calibration file the commands name.
    pub calibration_file: PathBuf,
    /// The evaluation file.
    pub evaluation_file: PathBuf,
    /// Training sentences of `recover` steps (0: the suite names none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub corpus: usize,
    /// The corpus file the `distill` commands name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus_file: Option<PathBuf>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The sentences of a run: calibration, evaluation, corpus (empty when none), and where they came
/// from.
struct Text {
    calibration: Vec<String>,
    evaluation: Vec<String>,
    corpus: Vec<String>,
    source: String,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct TransformerRun {
    /// The model directory.
    pub model: PathBuf,
    /// The sentences.
    pub text: TextSummary,
    /// The baseline first, then each variant in suite order.
    pub results: Vec<TransformerResult>,
    /// The device's start-up (context, libraries, first kernels), metered before the baseline
    /// and in no row's figures; `None` on the CPU, where nothing needs warming.
    pub warmup: Option<DeviceWarmup>,
}

/// One metered warm-up window: the baseline loaded onto the device and one batch embedded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceWarmup {
    /// Wall seconds.
    pub seconds: f64,
    /// The window (the DESIGN `energy` object).
    pub energy: serde_json::Value,
}

/// Loads the baseline on a GPU and embeds one batch inside its own window, so that the device's
/// start-up lands in no variant's figures; nothing on the CPU.
fn warm_up(
    opts: &TransformerOptions,
    eval: &[String],
    batch_size: usize,
    meter: &Meter,
) -> Result<Option<DeviceWarmup>> {
    if opts.device.is_cpu() {
        return Ok(None);
    }
    let t = Instant::now();
    let (res, energy) = meter.measure("warmup", || -> Result<()> {
        let enc = joulecut_embed::SentenceEncoder::load(&opts.model, &opts.device)?;
        let cfg = joulecut_embed::EncodeConfig { batch_size };
        enc.encode(&eval[..batch_size.min(eval.len())], &cfg)?;
        Ok(())
    });
    res?;
    Ok(Some(DeviceWarmup {
        seconds: t.elapsed().as_secs_f64(),
        energy: serde_json::to_value(&energy).unwrap_or_default(),
    }))
}

/// Reads the text (nothing is written yet: bad input leaves no trace).
fn read_text(cfg: &TextConfig) -> Result<Text> {
    let text = match cfg {
        TextConfig::Wordnet {
            dir,
            calibration,
            evaluation,
            corpus,
            seed,
        } => {
            let split = WordnetSplit::load(&WordnetConfig {
                dir: dir.clone(),
                calibration: *calibration,
                evaluation: *evaluation,
                corpus: *corpus,
                seed: *seed,
                ..WordnetConfig::default()
            })?;
            Text {
                calibration: split.calibration,
                evaluation: split.evaluation,
                corpus: split.corpus,
                source: format!("WordNet glosses ({}, seed {seed})", dir.display()),
            }
        }
        TextConfig::Files {
            calibration,
            evaluation,
            corpus,
        } => {
            let mut source = format!("{} / {}", calibration.display(), evaluation.display());
            if let Some(c) = corpus {
                source += &format!(" / {}", c.display());
            }
            Text {
                calibration: read_sentences(calibration)?,
                evaluation: read_sentences(evaluation)?,
                corpus: corpus
                    .as_deref()
                    .map(read_sentences)
                    .transpose()?
                    .unwrap_or_default(),
                source,
            }
        }
    };
    if text.evaluation.len() < 2 {
        return Err(Error::BadSetting(
            "the evaluation text needs at least 2 sentences".into(),
        ));
    }
    Ok(text)
}

/// Writes `OUT/text/{calib,eval,corpus}.txt` (atomically; the corpus only when there is one), so
/// every command in the report runs as printed; returns their paths.
fn write_text(out: &Path, text: &Text) -> Result<(PathBuf, PathBuf, Option<PathBuf>)> {
    let dir = out.join("text");
    std::fs::create_dir_all(&dir).map_err(|source| Error::Read {
        path: dir.clone(),
        source,
    })?;
    let mut paths = Vec::new();
    for (name, lines) in [
        ("calib.txt", &text.calibration),
        ("eval.txt", &text.evaluation),
        ("corpus.txt", &text.corpus),
    ] {
        if lines.is_empty() && name == "corpus.txt" {
            break;
        }
        let body = lines.join("\n") + "\n";
        let path = dir.join(name);
        joulecut_checkpoint::atomic_write(&path, |f| {
            std::io::Write::write_all(f, body.as_bytes())
        })?;
        paths.push(path);
    }
    Ok((paths[0].clone(), paths[1].clone(), paths.get(2).cloned()))
}

/// Checks every `keep_layers` against the depth of the model it drops layers from (the
/// baseline's, or what an earlier `recover` step kept), before anything is written.
fn check_depths(suite: &TransformerSuite, depth: usize) -> Result<()> {
    for v in &suite.variants {
        let mut d = depth;
        for step in &v.steps {
            if let TransformerStep::Recover {
                keep_layers: Some(k),
                ..
            } = step
            {
                if let Some(&bad) = k.iter().find(|&&l| l >= d) {
                    return Err(Error::BadInput {
                        what: format!("variant `{}`", v.name),
                        reason: format!(
                            "keep_layers {k:?}: layer {bad} does not exist (its input has {d} layers)"
                        ),
                        hint: format!("keep layers 0 to {}", d - 1),
                    });
                }
                d = k.len();
            }
        }
    }
    Ok(())
}

/// Runs `suite` on `opts.model`, returning every row (the baseline first).
pub fn run_transformer_suite(
    suite: &TransformerSuite,
    opts: &TransformerOptions,
    meter: &Meter,
    log: &mut dyn FnMut(&str),
) -> Result<TransformerRun> {
    let text = read_text(&suite.text)?;
    let (calib, eval) = (&text.calibration, &text.evaluation);
    // the model loads and tokenizes the text before anything is written
    let base_enc = joulecut_embed::SentenceEncoder::load_with(
        &opts.model,
        &candle_core::Device::Cpu,
        joulecut_embed::Engine::Joulecut,
    )?;
    let tokens: usize = base_enc.token_counts(eval)?.iter().sum();
    check_depths(suite, base_enc.config().num_hidden_layers)?;
    drop(base_enc);
    let (calib_file, eval_file, corpus_file) = write_text(&opts.out_dir, &text)?;
    let summary = TextSummary {
        source: text.source.clone(),
        calibration: calib.len(),
        evaluation: eval.len(),
        evaluation_tokens: tokens,
        calibration_file: calib_file.clone(),
        evaluation_file: eval_file,
        corpus: text.corpus.len(),
        corpus_file: corpus_file.clone(),
    };
    let total = suite.variants.len() + 1;
    log(&format!(
        "[1/{total}] baseline: {} ({} calibration / {} evaluation sentences, {tokens} tokens)",
        opts.model.display(),
        calib.len(),
        eval.len()
    ));
    let warmup = warm_up(opts, eval, suite.eval.batch_size, meter)?;
    let t0 = Instant::now();
    let base = embed(
        &opts.model,
        eval,
        &suite.eval,
        meter,
        "baseline",
        &opts.device,
        true,
    )?;
    let mut results = vec![row(
        &base,
        &base,
        None,
        (&opts.model, Vec::new(), Vec::new()),
        suite,
        t0,
    )?];
    log_row(log, &results[0]);
    let mut builder = Builder::new(
        &opts.model,
        opts.out_dir.join("models"),
        (calib, &calib_file),
        corpus_file.as_deref().map(|f| (text.corpus.as_slice(), f)),
        meter,
        &suite.variants,
    );
    for (i, v) in suite.variants.iter().enumerate() {
        log(&format!("[{}/{total}] {}", i + 2, v.name));
        let t0 = Instant::now();
        let (dir, costs, commands) = builder.build(v, log)?;
        let e = embed(&dir, eval, &suite.eval, meter, &v.name, &opts.device, false)?;
        results.push(row(&base, &e, Some(v), (&dir, costs, commands), suite, t0)?);
        log_row(log, results.last().expect("pushed"));
    }
    Ok(TransformerRun {
        model: opts.model.clone(),
        text: summary,
        results,
        warmup,
    })
}

fn log_row(log: &mut dyn FnMut(&str), r: &TransformerResult) {
    log(&format!(
        "    cosine mean {:.5} min {:.5}, {:.1} sentences/s, {:.2} J/1000 ({}), {}",
        r.cosine_mean,
        r.cosine_min,
        r.sentences_per_second,
        r.joules_per_1000,
        r.provenance,
        r.saving
    ));
}

/// A result row from an evaluation and how the model was made.
fn row(
    base: &Embedded,
    e: &Embedded,
    v: Option<&TransformerVariant>,
    (dir, compression, commands): (&Path, Vec<StepCost>, Vec<String>),
    suite: &TransformerSuite,
    t0: Instant,
) -> Result<TransformerResult> {
    let cos = CosineSummary::of(&base.embeddings, &e.embeddings).ok_or_else(|| {
        Error::Mismatch(format!(
            "{}: its embeddings do not line up with the baseline's",
            dir.display()
        ))
    })?;
    let saving = match (v, e.real_against(base)) {
        (None, _) => Saving::Baseline,
        (Some(_), true) => Saving::Real,
        (Some(_), false) => Saving::Nominal,
    };
    Ok(TransformerResult {
        variant: v.map_or("baseline", |v| v.name.as_str()).to_string(),
        steps: v.map(|v| v.steps.clone()).unwrap_or_default(),
        commands,
        dir: dir.display().to_string(),
        cosine_mean: cos.mean,
        cosine_min: cos.min,
        cosine_min_index: cos.min_index,
        neighbour_agreement: neighbour_agreement(
            &base.embeddings,
            &e.embeddings,
            suite.eval.neighbours,
        ),
        sentences_per_second: e.sentences_per_second,
        batch_size: suite.eval.batch_size,
        joules_per_1000: e.joules_per_1000(),
        provenance: e.energy.provenance(),
        inference_energy: serde_json::to_value(&e.energy).unwrap_or_default(),
        inference_below_resolution: e.energy.below_resolution(),
        // fold from +0.0: an empty float sum is -0.0, which a table would print as "-0.0"
        compression_seconds: compression.iter().fold(0.0, |a, c| a + c.seconds),
        compression_joules: compression.iter().fold(0.0, |a, c| a + c.joules),
        compression,
        bytes: e.bytes,
        weight_sparsity: e.weight_sparsity,
        linear_params: e.linear_params,
        kernels: e.kernels(),
        layers: e.layers.clone(),
        saving,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
