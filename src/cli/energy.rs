//! `joulecut energy [--json] [--interval 1s] [--csv FILE [--append]] -- CMD [ARGS...]`: runs a
//! command and meters it.
//!
//! The report (wall time, joules by domain with provenance, average power, skipped probes with
//! reasons) goes to stderr like `time`/`perf stat`, leaving the command's stdout alone. With
//! `--json`, stdout holds exactly one JSON object and the command's stdout is sent to stderr.
//! `--interval` adds one stderr line per interval while the command runs (like `perf stat -I`);
//! `--csv` writes a record per interval and one for the whole command (`energy_csv.rs`).
//! The exit code is the command's (128 + signal when a signal killed it).

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use joulecut::energy::{GridIntensity, Measurement, Meter, MeterConfig, parse_watts};

use super::energy_csv::EnergyCsv;
use super::error::bad_input;
use super::output::print_json;

/// Arguments of `joulecut energy`.
#[derive(Args, Debug)]
pub struct EnergyArgs {
    /// Print one JSON object on stdout (the command's own stdout then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Watts per busy core for the CPU-time estimate.
    #[arg(
        long,
        value_name = "W",
        env = "JOULECUT_CPU_WATTS_PER_CORE",
        default_value = "10"
    )]
    cpu_watts_per_core: Option<String>,
    /// Watts per GiB resident for the memory estimate.
    #[arg(
        long,
        value_name = "W",
        env = "JOULECUT_MEMORY_WATTS_PER_GIB",
        default_value = "0.375"
    )]
    memory_watts_per_gib: Option<String>,
    /// Measure idle power for SECONDS first, and report net energy next to gross.
    #[arg(long, value_name = "SECONDS")]
    idle_baseline: Option<f64>,
    /// Convert energy to carbon at this grid intensity (gCO2e/kWh); needs --grid-source and
    /// --grid-region. No default intensity is ever assumed.
    #[arg(long, value_name = "G_PER_KWH", requires_all = ["grid_source", "grid_region"])]
    grid_intensity: Option<f64>,
    /// Where the grid intensity comes from (e.g. "Electricity Maps 2024 annual").
    #[arg(long, value_name = "TEXT", requires = "grid_intensity")]
    grid_source: Option<String>,
    /// The grid region of the intensity (e.g. "DE").
    #[arg(long, value_name = "REGION", requires = "grid_intensity")]
    grid_region: Option<String>,
    /// Report every DURATION while the command runs (`1s`, `500ms`, `2.5s`; a bare number is
    /// seconds): one line per interval on stderr with its joules by domain and provenance, like
    /// `perf stat -I`; the totals follow at the end.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    interval: Option<Duration>,
    /// Write a CSV record per interval and one for the whole command (timestamp, run id, host,
    /// CPU model, joules by CPU/memory/GPU with provenance, kWh) to FILE, replaced atomically.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// With --csv: add the records to FILE (the header only when it is empty), one write each.
    #[arg(long, requires = "csv")]
    append: bool,
    /// The command to meter, and its arguments (put them after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

const USAGE_HINT: &str =
    "usage: joulecut energy [--json] -- CMD [ARGS...], e.g. joulecut energy -- sleep 1";

/// `1s`, `500ms`, `2.5s`, `1m` or a bare number of seconds; at least 10 ms.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let secs = num
        .trim()
        .parse::<f64>()
        .ok()
        .map(|x| x * scale)
        .filter(|x| x.is_finite() && (0.01..=86_400.0).contains(x))
        .ok_or_else(|| {
            format!("`{s}` is not a duration from 10ms to 24h (e.g. 1s, 500ms, 2.5s, 1m)")
        })?;
    Ok(Duration::from_secs_f64(secs))
}

/// Runs `joulecut energy`.
pub fn run(args: EnergyArgs) -> anyhow::Result<ExitCode> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err(bad_input("no command to meter", USAGE_HINT));
    };
    let mut config = MeterConfig::from_env()?;
    if let Some(w) = &args.cpu_watts_per_core {
        config.estimate.watts_per_core = parse_watts("--cpu-watts-per-core", w)?;
    }
    if let Some(w) = &args.memory_watts_per_gib {
        config.estimate.memory_watts_per_gib = parse_watts("--memory-watts-per-gib", w)?;
    }
    let idle = match args.idle_baseline {
        Some(s) if !(s.is_finite() && s > 0.0 && s <= 3600.0) => {
            return Err(bad_input(
                format!("--idle-baseline {s}: expected seconds in (0, 3600]"),
                "e.g. --idle-baseline 5",
            ));
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let grid = match (args.grid_intensity, args.grid_source, args.grid_region) {
        (Some(g), Some(source), Some(region)) => {
            if !(g.is_finite() && g >= 0.0) {
                return Err(bad_input(
                    format!("--grid-intensity {g}: expected a non-negative number"),
                    "grid intensity is in gCO2e/kWh, e.g. --grid-intensity 380",
                ));
            }
            Some(GridIntensity {
                grams_per_kwh: g,
                source,
                region,
            })
        }
        _ => None,
    };

    let meter = Meter::auto(config).context("set up the energy meter")?;
    if let Some(d) = idle {
        let b = meter.measure_idle(d);
        meter.set_baseline(Some(b));
    }

    let mut cmd = Command::new(program);
    cmd.args(rest);
    if args.json {
        // Keep stdout for the one JSON object.
        let err = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicate stderr")?;
        cmd.stdout(Stdio::from(err));
    }
    let label = std::iter::once(program)
        .chain(rest)
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let command = label.join(" ");
    let mut csv = args
        .csv
        .as_deref()
        .map(|p| EnergyCsv::open(p, args.append, &command))
        .transpose()?;
    let mut intervals: Vec<serde_json::Value> = Vec::new();
    let mut csv_error: Option<anyhow::Error> = None;
    let outcome = match args.interval {
        Some(period) => meter.run_command_every(&command, &mut cmd, period, &mut |i| {
            interval_line(i);
            intervals.push(serde_json::json!({
                "index": i.index,
                "start_seconds": i.start.as_secs_f64(),
                "energy": i.measurement,
            }));
            if let (Some(c), None) = (csv.as_mut(), csv_error.as_ref()) {
                csv_error = c.add(Some(i.index), i.start, None, &i.measurement).err();
            }
        }),
        None => meter.run_command(&command, &mut cmd),
    }
    .with_context(|| format!("meter `{command}`"))?;
    let mut m = outcome.measurement;
    if let Some(g) = grid {
        m = m.with_carbon(g);
    }
    let code = outcome.status.shell_code();
    if let Some(mut c) = csv {
        if let Some(e) = csv_error {
            return Err(e);
        }
        c.add(None, Duration::ZERO, outcome.status.code, &m)?;
        c.finish()?;
    }

    if args.json {
        let report = meter.report();
        print_json(&serde_json::json!({
            "command": label,
            "exit_code": outcome.status.code,
            "signal": outcome.status.signal,
            "energy": m,
            "intervals": args.interval.map(|_| intervals),
            "probes": report.probes,
            "skipped": report.skipped,
            "hypervisor": report.hypervisor,
        }))?;
    } else {
        print_human(&meter, &command, &outcome.status, &m);
    }
    Ok(ExitCode::from(code))
}

/// The serde name of a unit enum (`estimated`, `wrap_corrected`, ...).
fn name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn print_human(
    meter: &Meter,
    command: &str,
    status: &joulecut::energy::ChildStatus,
    m: &Measurement,
) {
    let mut e = std::io::stderr().lock();
    let ended = match (status.code, status.signal) {
        (Some(c), _) => format!("exited with {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".to_string(),
    };
    let _ = writeln!(e, "joulecut energy: `{command}` {ended}");
    let _ = writeln!(e, "  wall time      {:>10.3} s", m.wall.as_secs_f64());
    let _ = writeln!(e, "  cpu time       {:>10.3} s", m.cpu.as_secs_f64());
    let _ = writeln!(
        e,
        "  energy         {:>10.3} J  ({})",
        m.total().0,
        name(&m.provenance)
    );
    for d in &m.domains {
        let _ = writeln!(
            e,
            "    {:<12} {:>10.3} J  {} by {}",
            d.name,
            d.joules.to_joules().0,
            name(&d.provenance),
            d.source
        );
    }
    if let (Some(net), Some(b)) = (m.net_joules, &m.baseline) {
        let _ = writeln!(
            e,
            "  net energy     {:>10.3} J  (idle baseline {:.2} W over {})",
            net.to_joules().0,
            b.watts.0,
            if b.domains.is_empty() {
                "no measured domain".to_string()
            } else {
                b.domains.join(", ")
            }
        );
    }
    match m.average_watts {
        Some(w) => {
            let _ = writeln!(e, "  average power  {:>10.3} W", w.0);
        }
        None => {
            let _ = writeln!(e, "  average power         n/a");
        }
    }
    if let Some(c) = &m.carbon {
        let _ = writeln!(
            e,
            "  carbon         {:>10.6} gCO2e ({} energy x {} g/kWh, {}, {})",
            c.grams_co2e,
            c.basis,
            c.intensity.grams_per_kwh,
            c.intensity.source,
            c.intensity.region
        );
    }
    if !m.flags.is_empty() {
        let flags: Vec<String> = m.flags.iter().map(name).collect();
        let _ = writeln!(e, "  flags          {}", flags.join(", "));
    }
    if let Some(note) = estimate_note(m, meter.report().hypervisor.as_deref()) {
        let _ = writeln!(e, "  note           {note}");
    }
    for (i, s) in meter.skipped().iter().enumerate() {
        let head = if i == 0 {
            "  skipped        "
        } else {
            "                 "
        };
        let _ = writeln!(e, "{head}{}: {}", s.probe, s.message);
    }
}

/// What "estimated" means here, where the report says it: the estimate follows the command's CPU
/// time (and resident memory) and leaves out idle power, so a command that waits shows almost
/// nothing. `None` when nothing was estimated.
fn estimate_note(m: &Measurement, hypervisor: Option<&str>) -> Option<String> {
    let estimated = m
        .domains
        .iter()
        .any(|d| d.provenance == joulecut::energy::Provenance::Estimated);
    estimated.then(|| {
        let host = match hypervisor {
            Some(h) => format!("this virtual machine ({h}) exposes no energy counter"),
            None => "no energy counter could be read for it".to_string(),
        };
        format!(
            "estimated: {host}, so the estimate tracks the command's CPU time (and resident memory) and excludes idle power; a command that mostly waits (`sleep 1`) shows almost nothing. Measured joules need RAPL or NVML (see skipped)."
        )
    })
}

/// One line per interval on stderr, like `perf stat -I`: the time at its end, its joules with
/// provenance, and each domain's.
fn interval_line(i: &joulecut::energy::Interval) {
    let m = &i.measurement;
    let domains: Vec<String> = m
        .domains
        .iter()
        .map(|d| {
            format!(
                "{} {:.3} J ({})",
                d.name,
                d.joules.to_joules().0,
                name(&d.provenance)
            )
        })
        .collect();
    eprintln!(
        "{:>10.3} s {:>10.3} J  {:<9}  {}",
        (i.start + m.wall).as_secs_f64(),
        m.total().0,
        name(&m.provenance),
        domains.join(", ")
    );
}
