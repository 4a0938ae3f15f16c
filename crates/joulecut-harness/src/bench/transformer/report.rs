//! The transformer suite's report: `report.json`, `report.csv`, `report.md` and `pareto.svg`
//! (mean cosine against J/1000 sentences), and the recommendation — the lowest-joule variant with
//! a real saving whose mean cosine against the f32 baseline stays within the budget.

use std::path::Path;

use joulecut_energy::{BreakEven, TotalProvenance, break_even};
use serde::{Deserialize, Serialize};

use super::config::TransformerSuite;
use super::result::TransformerResult;
use super::runner::{DeviceWarmup, TextSummary, TransformerRun};
use crate::Result;
use crate::bench::break_even::{csv_cells, md_cells, never_if_nominal};
use crate::bench::columns::{EnergyColumns, STAMP_HEADER, csv_text, stamp_cells};
use crate::bench::report::human;
use crate::bench::svg::{Budget, Chart, Point, Series, render};
use crate::bench::{Host, Saving};
use crate::host::RunStamp;

/// Version of the transformer `report.json` schema. 2: the run's stamp (`run`),
/// `host.hostname`, each row's `energy_totals`; report.csv's stamp and energy columns.
pub const TRANSFORMER_SCHEMA_VERSION: u32 = 2;

/// One row: a result plus figures relative to the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerRow {
    /// The raw result.
    #[serde(flatten)]
    pub run: TransformerResult,
    /// Bytes / baseline bytes.
    pub size_ratio: f64,
    /// Sentences/s / the baseline's.
    pub speed_ratio: f64,
    /// Baseline J/1000 ÷ this J/1000 (> 1: uses less energy).
    pub energy_reduction: f64,
    /// This variant's compression joules, the inference joules it saves per 1,000 sentences
    /// against the f32 baseline, and the sentences after which it has paid for itself
    /// (`break_even_items`, `null` = never). `None` on the baseline row.
    #[serde(default)]
    pub break_even: Option<BreakEven>,
    /// The inference window by kind of hardware, kWh, and the compression's provenance.
    #[serde(default)]
    pub energy_totals: EnergyColumns,
}

/// The recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerRecommendation {
    /// The lowest-energy real saving within the budget, if any.
    pub variant: Option<String>,
    /// Its energy reduction against the baseline.
    pub energy_reduction: Option<f64>,
    /// Its mean cosine.
    pub cosine_mean: Option<f64>,
    /// One sentence for people.
    pub text: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerReport {
    /// Schema version.
    pub schema_version: u32,
    /// This report's run: id, start (RFC 3339 UTC), host name and CPU model.
    #[serde(default)]
    pub run: RunStamp,
    /// The suite config as run.
    pub suite: TransformerSuite,
    /// The model directory.
    pub model: String,
    /// The budget: lowest mean cosine allowed.
    pub min_cosine: f64,
    /// Host fingerprint.
    pub host: Host,
    /// The sentences.
    pub text: TextSummary,
    /// Wall seconds of the run.
    pub seconds: f64,
    /// The baseline and every variant, in suite order.
    pub rows: Vec<TransformerRow>,
    /// The device's warm-up, metered apart (GPU runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<DeviceWarmup>,
    /// What to use.
    pub recommendation: TransformerRecommendation,
}

impl TransformerReport {
    /// Builds the report of a run (its first result is the baseline), stamped with a fresh run
    /// id and the time of this call; [`TransformerReport::with_run`] sets a given stamp.
    pub fn build(
        suite: TransformerSuite,
        host: Host,
        min_cosine: f64,
        seconds: f64,
        run: TransformerRun,
    ) -> TransformerReport {
        let b = run.results[0].clone();
        let rows: Vec<TransformerRow> = run
            .results
            .into_iter()
            .enumerate()
            .map(|(i, r)| TransformerRow {
                size_ratio: r.bytes as f64 / b.bytes.max(1) as f64,
                speed_ratio: r.sentences_per_second / b.sentences_per_second,
                energy_reduction: b.joules_per_1000 / r.joules_per_1000,
                break_even: (i > 0).then(|| row_break_even(&b, &r)).flatten(),
                energy_totals: EnergyColumns::of(
                    &r.inference_energy,
                    r.compression_joules,
                    r.compression
                        .iter()
                        .map(|c| c.provenance)
                        .reduce(TotalProvenance::combine),
                ),
                run: r,
            })
            .collect();
        let recommendation = recommend(&rows, &b, min_cosine);
        TransformerReport {
            schema_version: TRANSFORMER_SCHEMA_VERSION,
            run: RunStamp::new(&host, None),
            suite,
            model: run.model.display().to_string(),
            min_cosine,
            host,
            text: run.text,
            seconds,
            rows,
            warmup: run.warmup,
            recommendation,
        }
    }

    /// The same report stamped `run` (e.g. with the run id the user gave and the start time).
    pub fn with_run(mut self, run: RunStamp) -> TransformerReport {
        self.run = run;
        self
    }

    /// Writes `report.json`, `report.csv`, `report.md` and `pareto.svg` into `dir` (atomically each).
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::bench::files::write_files(
            dir,
            &[
                (
                    "report.json",
                    serde_json::to_string_pretty(self).expect("report serialises"),
                ),
                ("report.csv", self.csv()),
                ("report.md", self.markdown()),
                ("pareto.svg", self.chart()),
            ],
        )
    }

    /// One record per row, through the `csv` crate (a variant name with a comma or a quote is
    /// quoted). Columns keep their place across schema versions: the stamp and energy columns of
    /// schema 2 come after the break-even ones.
    pub fn csv(&self) -> String {
        let mut header = vec![
            "variant",
            "cosine_mean",
            "cosine_min",
            "neighbour_agreement",
            "weight_sparsity",
            "bytes",
            "size_ratio",
            "sentences_per_second",
            "speed_ratio",
            "joules_per_1000",
            "energy_reduction",
            "provenance",
            "kernels",
            "saving",
            "compression_seconds",
            "compression_joules",
            "saved_joules_per_1000",
            "break_even_sentences",
            "break_even_provenance",
        ];
        header.extend(STAMP_HEADER);
        header.extend(EnergyColumns::HEADER);
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let x = &r.run;
                let mut c = vec![
                    x.variant.clone(),
                    format!("{:.6}", x.cosine_mean),
                    format!("{:.6}", x.cosine_min),
                    x.neighbour_agreement
                        .map_or(String::new(), |a| format!("{a:.4}")),
                    format!("{:.4}", x.weight_sparsity),
                    x.bytes.to_string(),
                    format!("{:.4}", r.size_ratio),
                    format!("{:.1}", x.sentences_per_second),
                    format!("{:.3}", r.speed_ratio),
                    format!("{:.4}", x.joules_per_1000),
                    format!("{:.3}", r.energy_reduction),
                    x.provenance.to_string(),
                    // one field either way; spaces keep it unquoted for `cut -d,` users
                    kernels(x).replace(", ", " "),
                    x.saving.to_string(),
                    format!("{:.2}", x.compression_seconds),
                    format!("{:.2}", x.compression_joules),
                ];
                c.extend(csv_cells(r.break_even.as_ref()));
                c.extend(stamp_cells(&self.run, x.seconds));
                c.extend(r.energy_totals.cells());
                c
            })
            .collect();
        csv_text(&header, &rows)
    }

    /// The table a person reads.
    pub fn markdown(&self) -> String {
        let h = &self.host;
        let t = &self.text;
        let mut s = format!("# joulecut bench: `{}` suite\n\n", self.suite.name);
        s += &format!(
            "Model: `{}`. Host: {} ({} cores), kernel {}{}; joulecut {}. Suite time: {:.0} s.\n\n",
            self.model,
            h.cpu,
            h.cores,
            h.kernel,
            h.hypervisor
                .as_ref()
                .map(|v| format!(", virtualised ({v})"))
                .unwrap_or_default(),
            h.joulecut,
            self.seconds
        );
        s += &format!(
            "Text: {} — {} calibration sentences, {} evaluation sentences ({} tokens), batch {}.\n\n",
            t.source,
            t.calibration,
            t.evaluation,
            t.evaluation_tokens,
            self.rows.first().map_or(0, |r| r.run.batch_size)
        );
        if self
            .rows
            .iter()
            .any(|r| r.run.provenance.to_string().contains("estimated"))
        {
            s += "**Energy is estimated**, not measured: no energy counter could be read on this host (see `host.skipped_probes` in report.json); the estimate model is named in each row's `inference_energy.domains[].source`. Ratios between variants are meaningful; absolute joules are a model.\n\n";
        }
        if let Some(w) = &self.warmup {
            s += &format!(
                "Device warm-up (loading the baseline and a first batch; in no row's figures): {:.1} s, {:.1} J ({}).\n\n",
                w.seconds,
                w.energy["joules"].as_f64().unwrap_or(f64::NAN),
                w.energy["provenance"].as_str().unwrap_or("unknown")
            );
        }
        s += &format!(
            "**Recommendation** (mean cosine ≥ {}): {}\n\n",
            self.min_cosine, self.recommendation.text
        );
        s += "| variant | mean cosine | min cosine | top-k agree | sparsity | size | size ratio | sentences/s | speed ratio | J/1000 | energy reduction | kernels | provenance | saving | compression s | compression J | saved J/1000 | break-even |\n";
        s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|\n";
        for r in &self.rows {
            let x = &r.run;
            s += &format!(
                "| {} | {:.5} | {:.5} | {} | {:.1}% | {} | {:.3} | {:.1} | {:.2}x | {:.3} | {:.2}x | {} | {} | {} | {:.1} | {:.1} | {} |\n",
                x.variant,
                x.cosine_mean,
                x.cosine_min,
                x.neighbour_agreement
                    .map_or("-".into(), |a| format!("{:.1}%", a * 100.0)),
                x.weight_sparsity * 100.0,
                human(x.bytes),
                r.size_ratio,
                x.sentences_per_second,
                r.speed_ratio,
                x.joules_per_1000,
                r.energy_reduction,
                kernels(x),
                x.provenance,
                x.saving,
                x.compression_seconds,
                x.compression_joules,
                md_cells(r.break_even.as_ref(), x.provenance.as_str(), "sentences")
            );
        }
        s += &format!(
            "\n*mean/min cosine*: of each evaluation sentence's mean-pooled embedding against the f32 baseline's. *top-k agree*: overlap of each sentence's {} nearest neighbours (cosine) with the baseline's. *sparsity*: zeros over the encoder's linear weights. *size*: the weight files. *sentences/s* and *J/1000* (inference joules per 1,000 sentences): the evaluation sentences at the batch size above, through joulecut's kernels, inside one energy window. *kernels*: what runs the linear layers. *saving*: `real` = an int8 or sparse kernel runs them, or they are physically smaller; `nominal` = every layer runs dense f32 at full size (zeros stored densely, f16/bf16 decoded at load). *compression*: time and energy of making the variant from the baseline (calibration, pruning, grid choice, writing), shared steps included in full. *saved J/1000*: the baseline's J/1000 minus the variant's (negative: it costs more). *break-even*: the sentences after which the saved joules have paid for the compression J (compression J ÷ saved J/1000 × 1,000, rounded up); `never` when the variant saves nothing or its saving is `nominal` (the baseline's kernels at its size: a measured difference is noise); its provenance is the row's unless named beside it (`mixed`: measured and estimated figures together).\n\n",
            self.suite.eval.neighbours
        );
        s += "## How each variant was made\n\nEach step is a `joulecut` command; run them to get the same model directory.\n\n";
        for r in self.rows.iter().skip(1) {
            s += &format!("- `{}`:", r.run.variant);
            for c in &r.run.commands {
                s += &format!(" `{c}`;");
            }
            s.pop();
            s += "\n";
        }
        s
    }

    /// `pareto.svg`: mean cosine against J/1000 sentences.
    pub fn chart(&self) -> String {
        let mut provs: Vec<String> = self
            .rows
            .iter()
            .map(|r| r.run.provenance.to_string())
            .collect();
        provs.sort();
        provs.dedup();
        render(&Chart {
            title: format!(
                "joulecut bench `{}`: embedding cosine vs inference energy ({})",
                self.suite.name,
                provs.join(", ")
            ),
            x_label: "inference joules per 1,000 sentences (log scale)".into(),
            y_label: "mean cosine vs the f32 baseline".into(),
            series: vec![Series {
                name: series_name(&self.model),
                points: self
                    .rows
                    .iter()
                    .map(|r| Point {
                        label: r.run.variant.clone(),
                        x: r.run.joules_per_1000,
                        y: r.run.cosine_mean,
                        baseline: r.run.saving == Saving::Baseline,
                    })
                    .collect(),
                budget: Some(Budget {
                    value: self.min_cosine,
                    label: format!("budget: cosine {}", self.min_cosine),
                }),
            }],
        })
    }
}

/// The break-even point of `r` against the f32 baseline `b`: `r.compression_joules` (every step
/// that made it, shared ones in full) against the J/1000 sentences it saves.
fn row_break_even(b: &TransformerResult, r: &TransformerResult) -> Option<BreakEven> {
    let inference = b.provenance.combine(r.provenance);
    let compression = r
        .compression
        .iter()
        .map(|c| c.provenance)
        .reduce(TotalProvenance::combine)
        // made without a metered step: only the inference figures count
        .unwrap_or(inference);
    let be = break_even(
        r.compression_joules,
        compression,
        b.joules_per_1000,
        r.joules_per_1000,
        inference,
    );
    never_if_nominal(be, r.saving)
}

/// The model's name in the legend: its directory's name, with the parent's when the directory is
/// called just `model` (as pip packages ship it).
fn series_name(dir: &str) -> String {
    let p = Path::new(dir);
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match (name(p), p.parent().and_then(name)) {
        (Some(n), Some(parent)) if n == "model" => format!("{parent}/{n}"),
        (Some(n), _) => n,
        _ => dir.to_string(),
    }
}

/// `36 int8`, `24 dense-f32, 12 sparse`.
fn kernels(r: &TransformerResult) -> String {
    r.kernels
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lowest-joule real saving within the cosine budget that uses less energy than the baseline
/// (a nominal saving runs the baseline's kernels: its energy difference is noise).
fn recommend(
    rows: &[TransformerRow],
    base: &TransformerResult,
    min_cosine: f64,
) -> TransformerRecommendation {
    let best = rows
        .iter()
        .filter(|r| {
            r.run.saving == Saving::Real
                && r.run.cosine_mean >= min_cosine
                && r.energy_reduction > 1.0
        })
        .min_by(|a, b| a.run.joules_per_1000.total_cmp(&b.run.joules_per_1000));
    match best {
        Some(r) => TransformerRecommendation {
            variant: Some(r.run.variant.clone()),
            energy_reduction: Some(r.energy_reduction),
            cosine_mean: Some(r.run.cosine_mean),
            text: format!(
                "use `{}` — {:.1}x less inference energy than the f32 baseline ({:.3} vs {:.3} J/1000 sentences, {}), mean cosine {:.5} (min {:.5}), {:.1}x the speed, real saving ({})",
                r.run.variant,
                r.energy_reduction,
                r.run.joules_per_1000,
                base.joules_per_1000,
                r.run.provenance,
                r.run.cosine_mean,
                r.run.cosine_min,
                r.speed_ratio,
                kernels(&r.run)
            ),
        },
        None => TransformerRecommendation {
            variant: None,
            energy_reduction: None,
            cosine_mean: None,
            text: format!(
                "no variant with a real saving keeps a mean cosine of {min_cosine} and uses less energy than the baseline; keep the baseline"
            ),
        },
    }
}

#[cfg(test)]
mod tests;
