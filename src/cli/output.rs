//! Output helpers shared by commands: JSON on stdout, progress on stderr, devices, byte sizes.

use std::io::IsTerminal;

use anyhow::Context;
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use joulecut::harness::{Event, Observer};

use super::error::bad_input;

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

/// A meter configured from the environment (`JOULECUT_CPU_WATTS_PER_CORE`, ...).
pub fn meter() -> anyhow::Result<joulecut::energy::Meter> {
    let cfg = joulecut::energy::MeterConfig::from_env()?;
    Ok(joulecut::energy::Meter::auto(cfg)?)
}

/// One line summarising a measurement: joules, provenance and the sources of its domains.
pub fn energy_line(m: &joulecut::energy::Measurement) -> String {
    let v = serde_json::to_value(m).unwrap_or_default();
    let sources: Vec<String> = v["domains"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| {
                    format!(
                        "{} {}",
                        d["name"].as_str().unwrap_or("?"),
                        d["source"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
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

/// Renders training progress on stderr: an indicatif bar on a terminal, one line per epoch
/// otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    /// A renderer; `quiet` suppresses the per-epoch lines when stderr is not a terminal.
    pub fn new(quiet: bool) -> Self {
        Progress { bar: None, quiet }
    }

    fn bar(&mut self, steps: usize, epoch: usize) -> &ProgressBar {
        self.bar.get_or_insert_with(|| {
            let pb = ProgressBar::new(steps as u64);
            pb.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            pb.set_prefix(epoch.to_string());
            pb
        })
    }
}

impl Observer for Progress {
    fn event(&mut self, e: &Event) {
        let tty = std::io::stderr().is_terminal();
        match e {
            Event::Step {
                epoch,
                step,
                steps,
                loss,
                accuracy,
                samples_per_second,
            } if tty => {
                let pb = self.bar(*steps, *epoch);
                pb.set_position(*step as u64);
                pb.set_message(format!(
                    "loss {loss:.4} acc {accuracy:.4} {samples_per_second:.0} samples/s"
                ));
            }
            Event::Epoch(s) => {
                if let Some(pb) = self.bar.take() {
                    pb.finish_and_clear();
                }
                if tty || !self.quiet {
                    let test = s
                        .test
                        .as_ref()
                        .map(|t| format!(" test acc {:.4}", t.accuracy))
                        .unwrap_or_default();
                    eprintln!(
                        "epoch {}: loss {:.4} train acc {:.4}{test} ({:.1} s, {:.0} samples/s)",
                        s.epoch, s.loss, s.train_accuracy, s.seconds, s.samples_per_second
                    );
                }
            }
            _ => {}
        }
    }
}
