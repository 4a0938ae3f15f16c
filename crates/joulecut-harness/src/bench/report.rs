//! Reports: `report.json` (schema in `docs/BENCH.md`), `report.csv`, `report.md` and `pareto.svg`.
//! Derived figures (deltas, ratios, medians, the recommendation) are computed here from raw run
//! results, so the shards of a sweep merge into the same report a single run would give.

use std::path::Path;

use joulecut_energy::BreakEven;
use serde::{Deserialize, Serialize};

use super::break_even::{csv_cells, md_cells, median_break_even, row_break_even, steps_provenance};
use super::columns::{EnergyColumns, STAMP_HEADER, csv_text, stamp_cells};
use super::config::SuiteConfig;
use super::result::{RunResult, Saving};
use crate::host::{Host, RunStamp};
use crate::{Error, Result};

/// Version of the `report.json` schema. 2: the run's stamp (`run`, `shards`), `host.hostname`,
/// each row's `stamp` and `energy_totals`; report.csv's stamp and energy columns.
pub const SCHEMA_VERSION: u32 = 2;

/// One row of the table: a run plus figures relative to its baseline (same model and seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The raw result.
    #[serde(flatten)]
    pub run: RunResult,
    /// Accuracy minus the baseline's, in points.
    pub accuracy_delta_pt: f64,
    /// Bytes / baseline bytes.
    pub size_ratio: f64,
    /// Throughput / baseline throughput.
    pub speed_ratio: f64,
    /// Baseline batch-1 latency / this batch-1 latency (> 1: faster).
    #[serde(default)]
    pub latency_ratio: f64,
    /// Baseline J/10k ÷ this J/10k (> 1: uses less energy).
    pub energy_reduction: f64,
    /// This variant's compression joules, the inference joules it saves per 1,000 samples
    /// against its baseline, and the samples after which it has paid for itself
    /// (`break_even_items`, `null` = never). `None` on baseline rows.
    #[serde(default)]
    pub break_even: Option<BreakEven>,
    /// The inference window by kind of hardware, kWh, and the compression's provenance.
    #[serde(default)]
    pub energy_totals: EnergyColumns,
}

/// Median and range over seeds of one (model, variant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Architecture.
    pub model: String,
    /// Variant.
    pub variant: String,
    /// Seeds aggregated.
    pub seeds: usize,
    /// Median accuracy `[median, min, max]`.
    pub accuracy: [f64; 3],
    /// Median accuracy delta (points).
    pub accuracy_delta_pt: f64,
    /// Median bytes.
    pub bytes: u64,
    /// Median size ratio.
    pub size_ratio: f64,
    /// Median speed ratio.
    pub speed_ratio: f64,
    /// Median batch-1 latency ratio (baseline / this).
    #[serde(default)]
    pub latency_ratio: f64,
    /// Median fraction of zeros over all weight matrices and kernels.
    #[serde(default)]
    pub weight_sparsity: f64,
    /// J/10k `[median, min, max]`.
    pub inference_joules_per_10k: [f64; 3],
    /// Median energy reduction.
    pub energy_reduction: f64,
    /// Median compression joules.
    pub compression_joules: f64,
    /// The break-even point of the medians: median compression joules over the median saving
    /// per 1,000 samples; provenance over every seed. `None` on the baseline.
    #[serde(default)]
    pub break_even: Option<BreakEven>,
    /// Provenance(s) of the joules.
    pub provenance: String,
    /// Which kind of saving.
    pub saving: Saving,
}

/// The recommendation for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Architecture.
    pub model: String,
    /// The lowest-energy variant within the accuracy budget, if any.
    pub variant: Option<String>,
    /// Its energy reduction vs the baseline.
    pub energy_reduction: Option<f64>,
    /// Its accuracy delta (points).
    pub accuracy_delta_pt: Option<f64>,
    /// One sentence for people.
    pub text: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Schema version.
    pub schema_version: u32,
    /// This report's run: id, start (RFC 3339 UTC), host name and CPU model. For merged shards:
    /// their common run id (a fresh one when they differ), the earliest start, every host.
    #[serde(default)]
    pub run: RunStamp,
    /// The stamps of the merged shards' runs, each listed once (empty for a single run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<RunStamp>,
    /// The suite config as run.
    pub suite: SuiteConfig,
    /// Accuracy budget used for the recommendation (points).
    pub max_accuracy_drop: f64,
    /// Host fingerprint.
    pub host: Host,
    /// Wall seconds of the run (sum over merged shards).
    pub seconds: f64,
    /// Every run with its ratios.
    pub rows: Vec<Row>,
    /// Medians over seeds.
    pub summary: Vec<Summary>,
    /// Per model.
    pub recommendations: Vec<Recommendation>,
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn range(v: &[f64]) -> [f64; 3] {
    [
        median(v.to_vec()),
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    ]
}

impl Report {
    /// Builds a report from raw results (of one run or merged shards). The report's run stamp
    /// comes from the results' ([`RunStamp::merged`]); results without one get a fresh stamp
    /// of this build on `host`.
    pub fn build(
        suite: SuiteConfig,
        host: Host,
        max_drop: f64,
        seconds: f64,
        runs: Vec<RunResult>,
    ) -> Result<Report> {
        let mut rows = Vec::new();
        for r in &runs {
            let b = runs
                .iter()
                .find(|b| b.model == r.model && b.seed == r.seed && b.variant == "baseline")
                .ok_or_else(|| {
                    Error::Mismatch(format!(
                        "no baseline result for {} seed {} (merge every shard)",
                        r.model, r.seed
                    ))
                })?;
            rows.push(Row {
                run: r.clone(),
                accuracy_delta_pt: (r.accuracy - b.accuracy) * 100.0,
                size_ratio: r.bytes as f64 / b.bytes as f64,
                speed_ratio: r.samples_per_second / b.samples_per_second,
                latency_ratio: b.latency_b1_us / r.latency_b1_us,
                energy_reduction: b.inference_joules_per_10k / r.inference_joules_per_10k,
                break_even: if r.variant == "baseline" {
                    None
                } else {
                    row_break_even(b, r)?
                },
                energy_totals: EnergyColumns::of(
                    &r.inference_energy,
                    r.compression_joules,
                    steps_provenance(&r.compression_energy).ok().flatten(),
                ),
            });
        }
        // Suite order: models, then baseline and variants as configured.
        let order = |r: &Row| {
            let m = suite
                .models
                .iter()
                .position(|m| *m == r.run.model)
                .unwrap_or(usize::MAX);
            let v = suite
                .variants
                .iter()
                .position(|v| v.name == r.run.variant)
                .map_or(0, |i| i + 1);
            (m, v, r.run.seed)
        };
        rows.sort_by_key(order);
        let mut summary: Vec<Summary> = Vec::new();
        for r in &rows {
            if summary
                .iter()
                .any(|s| s.model == r.run.model && s.variant == r.run.variant)
            {
                continue;
            }
            let g: Vec<&Row> = rows
                .iter()
                .filter(|x| x.run.model == r.run.model && x.run.variant == r.run.variant)
                .collect();
            let col = |f: &dyn Fn(&Row) -> f64| g.iter().map(|x| f(x)).collect::<Vec<f64>>();
            let mut provs: Vec<String> = g.iter().map(|x| x.run.provenance.to_string()).collect();
            provs.sort();
            provs.dedup();
            summary.push(Summary {
                model: r.run.model.clone(),
                variant: r.run.variant.clone(),
                seeds: g.len(),
                accuracy: range(&col(&|x| x.run.accuracy)),
                accuracy_delta_pt: median(col(&|x| x.accuracy_delta_pt)),
                bytes: median(col(&|x| x.run.bytes as f64)) as u64,
                size_ratio: median(col(&|x| x.size_ratio)),
                speed_ratio: median(col(&|x| x.speed_ratio)),
                latency_ratio: median(col(&|x| x.latency_ratio)),
                weight_sparsity: median(col(&|x| x.run.weight_sparsity)),
                inference_joules_per_10k: range(&col(&|x| x.run.inference_joules_per_10k)),
                energy_reduction: median(col(&|x| x.energy_reduction)),
                compression_joules: median(col(&|x| x.run.compression_joules)),
                break_even: median_break_even(&g),
                provenance: provs.join("+"),
                saving: r.run.saving,
            });
        }
        let mut recommendations = Vec::new();
        for m in &suite.models {
            let cands: Vec<&Summary> = summary
                .iter()
                .filter(|s| s.model == *m && s.variant != "baseline")
                .collect();
            if !summary.iter().any(|s| s.model == *m) {
                continue;
            }
            // Only a real saving can be recommended: a nominal one runs the baseline's kernels,
            // so its energy difference is measurement noise. And it must actually save energy.
            let ok = cands
                .iter()
                .filter(|s| {
                    s.accuracy_delta_pt >= -max_drop
                        && s.saving == Saving::Real
                        && s.energy_reduction > 1.0
                })
                .min_by(|a, b| {
                    a.inference_joules_per_10k[0].total_cmp(&b.inference_joules_per_10k[0])
                });
            recommendations.push(match ok {
                Some(s) => Recommendation {
                    model: m.clone(),
                    variant: Some(s.variant.clone()),
                    energy_reduction: Some(s.energy_reduction),
                    accuracy_delta_pt: Some(s.accuracy_delta_pt),
                    text: format!(
                        "{m}: use `{}` — {:.1}x less inference energy than the baseline ({:.3} vs {:.3} J/10k, {}), accuracy {:+.2} pt, {} saving",
                        s.variant,
                        s.energy_reduction,
                        s.inference_joules_per_10k[0],
                        summary
                            .iter()
                            .find(|b| b.model == *m && b.variant == "baseline")
                            .map_or(f64::NAN, |b| b.inference_joules_per_10k[0]),
                        s.provenance,
                        s.accuracy_delta_pt,
                        s.saving
                    ),
                },
                None => Recommendation {
                    model: m.clone(),
                    variant: None,
                    energy_reduction: None,
                    accuracy_delta_pt: None,
                    text: format!("{m}: no variant with a real saving stays within {max_drop} pt of the baseline's accuracy; keep the baseline"),
                },
            });
        }
        let mut shards: Vec<RunStamp> = Vec::new();
        for s in runs.iter().filter_map(|r| r.stamp.as_ref()) {
            if !shards.contains(s) {
                shards.push(s.clone());
            }
        }
        let run = RunStamp::merged(&shards).unwrap_or_else(|| RunStamp::new(&host, None));
        if shards.len() < 2 {
            shards.clear();
        }
        Ok(Report {
            schema_version: SCHEMA_VERSION,
            run,
            shards,
            suite,
            max_accuracy_drop: max_drop,
            host,
            seconds,
            rows,
            summary,
            recommendations,
        })
    }

    /// Reads a `report.json`.
    pub fn read(path: &Path) -> Result<Report> {
        let text =
            joulecut_checkpoint::input::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
        serde_json::from_str(&text).map_err(|e| {
            Error::BadSetting(format!("{}: not a joulecut report ({e})", path.display()))
        })
    }

    /// One record per run, through the `csv` crate (a variant name with a comma or a quote is
    /// quoted). Columns keep their place across schema versions: the stamp and energy columns of
    /// schema 2 come after the break-even ones.
    pub fn csv(&self) -> String {
        let mut header = vec![
            "model",
            "seed",
            "variant",
            "accuracy",
            "accuracy_delta_pt",
            "bytes",
            "size_ratio",
            "params",
            "nonzero_params",
            "weight_sparsity",
            "samples_per_second",
            "speed_ratio",
            "latency_b1_us",
            "latency_ratio",
            "inference_joules_per_10k",
            "energy_reduction",
            "provenance",
            "compression_joules",
            "baseline_training_joules",
            "saving",
            "saved_joules_per_1000",
            "break_even_samples",
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
                    x.model.clone(),
                    x.seed.to_string(),
                    x.variant.clone(),
                    format!("{:.4}", x.accuracy),
                    format!("{:.2}", r.accuracy_delta_pt),
                    x.bytes.to_string(),
                    format!("{:.4}", r.size_ratio),
                    x.params.to_string(),
                    x.nonzero_params.to_string(),
                    format!("{:.4}", x.weight_sparsity),
                    format!("{:.0}", x.samples_per_second),
                    format!("{:.3}", r.speed_ratio),
                    format!("{:.1}", x.latency_b1_us),
                    format!("{:.3}", r.latency_ratio),
                    format!("{:.4}", x.inference_joules_per_10k),
                    format!("{:.3}", r.energy_reduction),
                    x.provenance.to_string(),
                    format!("{:.2}", x.compression_joules),
                    format!("{:.2}", x.baseline_training_joules),
                    x.saving.to_string(),
                ];
                c.extend(csv_cells(r.break_even.as_ref()));
                c.extend(stamp_cells(
                    x.stamp.as_ref().unwrap_or(&self.run),
                    x.seconds,
                ));
                c.extend(r.energy_totals.cells());
                c
            })
            .collect();
        csv_text(&header, &rows)
    }

    /// The table a person reads.
    pub fn markdown(&self) -> String {
        let mut s = format!("# joulecut bench: `{}` suite\n\n", self.suite.name);
        let h = &self.host;
        s += &format!(
            "Host: {} ({} cores), kernel {}, device {}{}; joulecut {}. Seeds: {:?}. Suite time: {:.0} s.\n\n",
            h.cpu,
            h.cores,
            h.kernel,
            h.device,
            h.hypervisor
                .as_ref()
                .map(|v| format!(", virtualised ({v})"))
                .unwrap_or_default(),
            h.joulecut,
            self.suite.seeds,
            self.seconds
        );
        let provs: std::collections::BTreeSet<&str> =
            self.summary.iter().map(|x| x.provenance.as_str()).collect();
        if provs.iter().any(|p| p.contains("estimated")) {
            s += "**Energy is estimated**, not measured: no energy counter could be read on this host (see `host.skipped_probes` in report.json); the estimate model is named in each row's `inference_energy.domains[].source`. Ratios between variants are meaningful; absolute joules are a model.\n\n";
        }
        for rec in &self.recommendations {
            s += &format!(
                "**Recommendation** (accuracy budget {} pt): {}\n\n",
                self.max_accuracy_drop, rec.text
            );
        }
        for m in &self.suite.models {
            s += &format!("## {m}\n\n");
            s += "| variant | accuracy | Δ pt | sparsity | size | size ratio | speed ratio | b1 latency ratio | J/10k | energy reduction | provenance | saving | compression J | saved J/1k samples | break-even |\n";
            s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|\n";
            for x in self.summary.iter().filter(|x| x.model == *m) {
                let acc = if x.seeds > 1 {
                    format!(
                        "{:.4} ({:.4}–{:.4})",
                        x.accuracy[0], x.accuracy[1], x.accuracy[2]
                    )
                } else {
                    format!("{:.4}", x.accuracy[0])
                };
                s += &format!(
                    "| {} | {acc} | {:+.2} | {:.1}% | {} | {:.3} | {:.2}x | {:.2}x | {:.3} | {:.2}x | {} | {} | {:.1} | {} |\n",
                    x.variant,
                    x.accuracy_delta_pt,
                    x.weight_sparsity * 100.0,
                    human(x.bytes),
                    x.size_ratio,
                    x.speed_ratio,
                    x.latency_ratio,
                    x.inference_joules_per_10k[0],
                    x.energy_reduction,
                    x.provenance,
                    x.saving,
                    x.compression_joules,
                    md_cells(x.break_even.as_ref(), &x.provenance, "samples")
                );
            }
            s += "\n";
        }
        s += "*sparsity*: zeros over all weight matrices and conv kernels (output layer included, biases excluded). *speed ratio*: throughput at the eval batch size vs the baseline (median pass); *b1 latency ratio*: the baseline's median batch-1 latency over this one's (> 1: faster). *saving*: `real` = at the eval batch size the compressed model runs differently (int8 GEMM, sparse CSR kernel, or physically smaller layers); `nominal` = there it runs the baseline's dense f32 kernels (e.g. zeros in dense tensors; fp16/bf16 and 2:4 layers run their own kernels only for single rows, which the b1 latency ratio shows). J/10k: inference joules per 10,000 test samples at the eval batch size. Compression J: fine-tuning / QAT / distillation energy (distillation: the teacher's logits over the training set once, then the student's training; the teacher is the baseline, whose training energy is the baseline row's and is not counted again); the baseline row shows its training energy. Variants that start with the same weight-changing steps share one run of them and each report its joules. *saved J/1k samples*: the baseline's inference joules per 1,000 samples minus the variant's (same model and seed; negative: it costs more). *break-even*: the samples after which the saved joules have paid for the compression J (compression J ÷ saved J/1k × 1,000, rounded up; over seeds, from the medians of both); `never` when the variant saves nothing or its saving is `nominal` (the baseline's kernels at its size: a measured difference is noise). The baseline's training is not part of a variant's cost (both need it); a variant that shares steps carries their full cost. The break-even's provenance is the row's unless named beside it (`mixed`: measured and estimated figures together).\n";
        s
    }
}

pub(super) fn human(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests;
