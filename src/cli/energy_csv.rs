//! `joulecut energy --csv FILE [--append]`: one CSV record per interval and one for the whole
//! command, with the stamp (time, run id, host, CPU), the joules by kind of hardware with their
//! provenance, and kWh. `--append` adds records to FILE (the header only when it is empty), each
//! record with a single `write` on an `O_APPEND` descriptor so concurrent runs do not interleave
//! within a line; without it the file is replaced atomically when the command ends.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use joulecut::energy::{DomainSplit, KindEnergy, Measurement, UtcTime, kwh};

use super::error::bad_input;

/// The columns, in order.
const HEADER: [&str; 24] = [
    "timestamp",
    "run_id",
    "hostname",
    "cpu_model",
    "command",
    "exit_code",
    "row",
    "interval",
    "start_seconds",
    "wall_seconds",
    "cpu_seconds",
    "joules",
    "kwh",
    "provenance",
    "cpu_joules",
    "cpu_provenance",
    "memory_joules",
    "memory_provenance",
    "gpu_joules",
    "gpu_provenance",
    "other_joules",
    "other_provenance",
    "sources",
    "flags",
];

/// Where records go.
enum Sink {
    /// Appended one write per record.
    Append(File),
    /// Collected, written atomically at the end.
    Replace(PathBuf, Vec<u8>),
}

/// The run's fixed columns and the open sink.
pub struct EnergyCsv {
    sink: Sink,
    started: SystemTime,
    run_id: String,
    hostname: String,
    cpu_model: String,
    command: String,
}

/// One CSV record as bytes (quoted where a field needs it).
fn record(fields: &[String]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing into memory cannot fail.
    w.write_record(fields).expect("csv record");
    w.into_inner().expect("csv flush")
}

fn header_bytes() -> Vec<u8> {
    record(&HEADER.map(String::from))
}

impl EnergyCsv {
    /// Opens `path` before the command runs, so a bad path or a foreign file is refused without
    /// running it.
    pub fn open(path: &Path, append: bool, command: &str) -> anyhow::Result<EnergyCsv> {
        let sink = if append {
            let mut f = OpenOptions::new()
                .append(true)
                .create(true)
                .read(true)
                .open(path)
                .map_err(|e| {
                    bad_input(
                        format!("cannot open {} to append: {e}", path.display()),
                        "give a writable file path to --csv",
                    )
                })?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len == 0 {
                f.write_all(&header_bytes())
                    .with_context(|| format!("write the header of {}", path.display()))?;
            } else {
                let mut first = String::new();
                std::io::BufReader::new(&f)
                    .read_line(&mut first)
                    .with_context(|| format!("read {}", path.display()))?;
                if first.as_bytes() != header_bytes().as_slice() {
                    return Err(bad_input(
                        format!(
                            "{} does not start with the header of `joulecut energy --csv`",
                            path.display()
                        ),
                        "append to a file this command wrote, or give a new file",
                    ));
                }
            }
            Sink::Append(f)
        } else {
            let parent = joulecut::checkpoint::atomic::parent_dir(path);
            if path.is_dir() || !parent.is_dir() {
                return Err(bad_input(
                    format!(
                        "cannot write {}: not a file in an existing directory",
                        path.display()
                    ),
                    "give a file in an existing, writable directory to --csv (or --append to add to it)",
                ));
            }
            Sink::Replace(path.to_path_buf(), header_bytes())
        };
        Ok(EnergyCsv {
            sink,
            started: SystemTime::now(),
            run_id: joulecut::energy::new_run_id(),
            hostname: joulecut::energy::hostname(),
            cpu_model: joulecut::energy::cpu_model(),
            command: command.to_string(),
        })
    }

    /// Adds the record of one interval (`Some(index)`) or of the whole command (`None`).
    pub fn add(
        &mut self,
        interval: Option<usize>,
        start: Duration,
        exit_code: Option<i32>,
        m: &Measurement,
    ) -> anyhow::Result<()> {
        let kind = |k: Option<KindEnergy>| match k {
            Some(k) => [format!("{:.6}", k.joules), k.provenance.to_string()],
            None => [String::new(), String::new()],
        };
        let d = DomainSplit::of(m);
        let flags: Vec<String> = m
            .flags
            .iter()
            .map(|f| {
                serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            })
            .collect();
        let mut f = vec![
            UtcTime::from_system(self.started + start).to_string(),
            self.run_id.clone(),
            self.hostname.clone(),
            self.cpu_model.clone(),
            self.command.clone(),
            exit_code.map_or(String::new(), |c| c.to_string()),
            if interval.is_some() {
                "interval"
            } else {
                "total"
            }
            .to_string(),
            interval.map_or(String::new(), |i| i.to_string()),
            format!("{:.3}", start.as_secs_f64()),
            format!("{:.3}", m.wall.as_secs_f64()),
            format!("{:.3}", m.cpu.as_secs_f64()),
            format!("{:.6}", m.total().0),
            format!("{:.9e}", kwh(m.total().0)),
            m.provenance().to_string(),
        ];
        for k in [d.cpu, d.memory, d.gpu, d.other] {
            f.extend(kind(k));
        }
        f.push(
            m.domains
                .iter()
                .map(|d| format!("{}: {} by {}", d.name, d.provenance, d.source))
                .collect::<Vec<_>>()
                .join("; "),
        );
        f.push(flags.join(" "));
        let bytes = record(&f);
        match &mut self.sink {
            // One write per record: O_APPEND puts it at the end even with other writers.
            Sink::Append(file) => file.write_all(&bytes).context("append to the --csv file"),
            Sink::Replace(_, buf) => {
                buf.extend_from_slice(&bytes);
                Ok(())
            }
        }
    }

    /// Writes the collected records (atomically) when the file is replaced.
    pub fn finish(self) -> anyhow::Result<()> {
        if let Sink::Replace(path, buf) = self.sink {
            joulecut::checkpoint::atomic_write(&path, |f| f.write_all(&buf))
                .with_context(|| format!("write {}", path.display()))?;
        }
        Ok(())
    }
}
