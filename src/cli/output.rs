//! Output helpers shared by commands: JSON on stdout, devices, meters, byte sizes (progress on
//! stderr is `progress.rs`).

use anyhow::Context;
use candle_core::Device;
use joulecut::quant::ActivationGrid;

use super::error::bad_input;

/// Writes to stdout (behind this binary's `println!`/`print!`). A reader that closed the pipe
/// (`joulecut inspect --json F | head`) ends the process quietly with success, as Unix tools do;
/// any other failure (a full disk) ends it with exit code 1 and says so on stderr, never with a
/// panic. Output files are written atomically before their summary is printed, so they are
/// complete either way.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        eprintln!(
            "hint: free space where stdout goes, or redirect it; any output file the command names was written completely before this"
        );
        std::process::exit(1);
    }
}

/// `s` with control characters escaped (`\n`, `\u{1b}`): names from a file are printed on a
/// terminal, where a newline would forge a row and an escape sequence would restyle it.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Prints one JSON object on stdout.
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    let s = serde_json::to_string_pretty(v).context("serialise JSON output")?;
    println!("{s}");
    Ok(())
}

/// Resolves `--device cpu|cuda[:N]`.
pub fn device(spec: &str) -> anyhow::Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let idx: usize = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| {
                    bad_input(format!("bad device `{s}`"), "use cpu, cuda or cuda:N")
                })?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(bad_input(
                    format!("--device {s}: this joulecut was built without CUDA support"),
                    "rebuild with `cargo build --release --features cuda` (see scripts/build-cuda.sh), or use --device cpu",
                ));
            }
            Device::new_cuda(idx).with_context(|| format!("open CUDA device {idx}"))
        }
        other => Err(bad_input(
            format!("unknown device `{other}`"),
            "use --device cpu or --device cuda[:N]",
        )),
    }
}

/// A meter configured from the environment (`JOULECUT_CPU_WATTS_PER_CORE`, ...), for work that
/// runs on no device in particular; model commands use [`meter_on`].
#[allow(dead_code)]
pub fn meter() -> anyhow::Result<joulecut::energy::Meter> {
    let cfg = joulecut::energy::MeterConfig::from_env()?;
    Ok(joulecut::energy::Meter::auto(cfg)?)
}

/// The meter's sync hook for work on `dev`: on a GPU, kernels are queued, so each window edge first
/// waits for the device (the work lands in the window that launched it). None on the CPU.
pub fn sync_hook(dev: &Device) -> Option<impl Fn() + Send + Sync + 'static> {
    if dev.is_cpu() {
        return None;
    }
    let dev = dev.clone();
    Some(move || {
        if let Err(e) = dev.synchronize() {
            eprintln!("warning: device synchronize at a metering window edge failed: {e}");
        }
    })
}

/// A meter for work on `dev`: [`meter`] plus [`sync_hook`]. On a GPU it warns when NVML is not
/// available, since the GPU's joules are then missing from every figure.
pub fn meter_on(dev: &Device) -> anyhow::Result<joulecut::energy::Meter> {
    let mut cfg = joulecut::energy::MeterConfig::from_env()?;
    if let Some(h) = sync_hook(dev) {
        cfg = cfg.with_sync_hook(h);
    }
    let m = joulecut::energy::Meter::auto(cfg)?;
    if !dev.is_cpu() && !m.probes().iter().any(|p| p.name == "nvml") {
        let why = m
            .skipped()
            .iter()
            .find(|s| s.probe == "nvml")
            .map(|s| s.message.clone())
            .unwrap_or_else(|| "not probed".into());
        eprintln!("warning: GPU energy is not metered (NVML: {why}); figures cover the CPU only");
    }
    Ok(m)
}

/// A device warm-up as `train` and `distill` report it: beside the training figures, never inside.
pub struct WarmupRun {
    /// What ran (zeros on the CPU).
    pub warmup: joulecut::harness::Warmup,
    /// Its metered window; `None` on the CPU, where nothing runs.
    pub energy: Option<joulecut::energy::Measurement>,
}

impl WarmupRun {
    /// Adds `warmup_seconds`, and `warmup_energy` where a warm-up ran (CPU output keeps its shape).
    pub fn add_to_json(&self, out: &mut serde_json::Value) -> anyhow::Result<()> {
        out["warmup_seconds"] = self.warmup.seconds.into();
        if let Some(m) = &self.energy {
            out["warmup_energy"] = serde_json::to_value(m)?;
        }
        Ok(())
    }

    /// Says on stderr what the warm-up took, where one ran.
    pub fn eprint(&self) {
        if let Some(m) = &self.energy {
            eprintln!(
                "device warm-up (kernel loading; not in the training figures): {:.2} s, {}",
                self.warmup.seconds,
                energy_line(m)
            );
        }
    }
}

/// Warms `dev` up before a training window ([`joulecut::harness::warm_up`]) in its own metered
/// window, so kernel loading is reported next to the training figures instead of inside them. On
/// the CPU nothing runs and nothing is metered.
pub fn warm_up(
    meter: &joulecut::energy::Meter,
    cfg: &joulecut::models::ModelConfig,
    splits: &joulecut::harness::data::Splits,
    tc: &joulecut::harness::TrainConfig,
    dev: &Device,
) -> anyhow::Result<WarmupRun> {
    if dev.is_cpu() {
        return Ok(WarmupRun {
            warmup: joulecut::harness::Warmup::default(),
            energy: None,
        });
    }
    let (w, m) = meter.measure("warmup", || {
        joulecut::harness::warm_up(cfg, &splits.train, &splits.test, tc, dev)
    });
    Ok(WarmupRun {
        warmup: w.context("warm up the device before training")?,
        energy: Some(m),
    })
}

/// Says on stderr which layers ran without their compression kernel on this device; returns them
/// as JSON for the command's `fallbacks` field.
pub fn report_fallbacks(fb: &[joulecut::harness::Fallback]) -> serde_json::Value {
    for f in fb {
        eprintln!(
            "warning: {}: {} fallback to {} ({})",
            f.layer,
            serde_json::to_value(f.wanted)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            f.used,
            f.reason
        );
    }
    serde_json::to_value(fb).unwrap_or_default()
}

/// One line summarising a measurement: joules, provenance and the sources of its domains.
pub fn energy_line(m: &joulecut::energy::Measurement) -> String {
    let v = serde_json::to_value(m).unwrap_or_default();
    let sources: Vec<String> = v["domains"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| {
                    // `cpu: estimated by cpu-time x 10 W/core`, not `cpu cpu-time x ...`
                    format!(
                        "{}: {} by {}",
                        d["name"].as_str().unwrap_or("?"),
                        d["provenance"].as_str().unwrap_or("?"),
                        d["source"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if m.below_resolution() {
        // A bare "0.00 J measured" would claim the work took no energy; the counter simply did
        // not step inside the window.
        return format!(
            "below the counter's resolution ({:.2} J {} over {:.1} ms, shorter than the counter's update period; {})",
            m.total().0,
            v["provenance"].as_str().unwrap_or("?"),
            m.wall.as_secs_f64() * 1e3,
            sources.join("; ")
        );
    }
    format!(
        "{:.2} J {} ({})",
        m.total().0,
        v["provenance"].as_str().unwrap_or("?"),
        sources.join("; ")
    )
}

/// Human-readable byte count.
pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// The non-float tensors of an input (token ids, masks: I64, U8, BOOL, ...). No command changes
/// them: each copies them byte for byte and reports them as kept, never as pruned or quantized.
pub struct NonFloat(Vec<joulecut::checkpoint::StoredInfo>);

impl NonFloat {
    /// Those of `src`, in its tensor order.
    pub fn of(src: &joulecut::checkpoint::Source) -> Self {
        NonFloat(src.non_float().into_iter().cloned().collect())
    }

    /// Whether `name` is one of them.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|t| t.name == name)
    }

    /// The first one for which `f(name, shape)` holds.
    pub fn find(
        &self,
        f: impl Fn(&str, &[usize]) -> bool,
    ) -> Option<&joulecut::checkpoint::StoredInfo> {
        self.0.iter().find(|t| f(&t.name, &t.shape))
    }

    /// `[{"name", "dtype", "shape"}]` for a command's JSON (`non_float`).
    pub fn json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|t| serde_json::json!({"name": t.name, "dtype": t.dtype, "shape": t.shape}))
            .collect()
    }

    /// One line for the human report, `None` when there are none.
    pub fn line(&self) -> Option<String> {
        const SHOWN: usize = 3;
        let n = self.0.len();
        if n == 0 {
            return None;
        }
        let mut names: Vec<String> = self
            .0
            .iter()
            .take(SHOWN)
            .map(|t| format!("{} ({} {:?})", t.name, t.dtype, t.shape))
            .collect();
        if n > SHOWN {
            names.push(format!("... ({n} in all)"));
        }
        let s = if n == 1 { "" } else { "s" };
        Some(format!(
            "kept as is: {n} non-float tensor{s}, copied unchanged: {}",
            names.join(", ")
        ))
    }
}

/// The value parser of `--int8-activations`: joulecut-quant's [`ActivationGrid`] tags (`s8`, `u7`,
/// `u6`), each listed in `--help` with the line the grid describes itself by.
pub fn int8_activations_parser() -> impl clap::builder::TypedValueParser<Value = ActivationGrid> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        ActivationGrid::ALL.map(|g| PossibleValue::new(g.as_str()).help(g.describe())),
    )
    .map(|tag| {
        tag.parse::<ActivationGrid>()
            .expect("every possible value is a grid tag")
    })
}
