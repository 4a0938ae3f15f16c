//! Energy cards: the numbers that travel with a compressed model. Every command that writes a
//! compressed model (`prune`, `quantize`, `distill`, `train --init`) writes beside it
//! `NAME.energy.json` (an [`EnergyCard`]) and `NAME.card.md` (the same for people); a model
//! directory holds them as `energy.json` and `CARD.md` ([`card_paths`]). What was done (the
//! checkpoint's `joulecut.history`), quality where the command measured it (else "not measured",
//! never a guess), size before and after, the compression's own joules with provenance, the
//! break-even where known, and the host. Format: docs/FORMAT.md.
//!
//! ```
//! use std::path::Path;
//! use joulecut_harness::card::card_paths;
//!
//! let (json, md) = card_paths(Path::new("out/mlp-int8.safetensors"));
//! assert_eq!(json, Path::new("out/mlp-int8.energy.json"));
//! assert_eq!(md, Path::new("out/mlp-int8.card.md"));
//! ```

use std::path::{Path, PathBuf};

use joulecut_energy::{BreakEven, DomainSplit, Measurement, TotalProvenance, UtcTime, kwh};
use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::{Error, Result};

/// Version of the `energy.json` schema.
pub const CARD_SCHEMA_VERSION: u32 = 1;

/// The card files of a model written to `output`: `NAME.energy.json` and `NAME.card.md` beside a
/// file (`NAME` is the file name without its last extension), `energy.json` and `CARD.md` inside
/// a directory.
pub fn card_paths(output: &Path) -> (PathBuf, PathBuf) {
    if output.is_dir() {
        (output.join("energy.json"), output.join("CARD.md"))
    } else {
        (
            output.with_extension("energy.json"),
            output.with_extension("card.md"),
        )
    }
}

/// One quality figure the command measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What it is (`test_accuracy`, `weight_rel_l2_max`, ...).
    pub name: String,
    /// Its value.
    pub value: f64,
    /// How it was measured.
    pub note: String,
}

/// Quality as far as the command measured it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Quality {
    /// What was measured.
    pub measured: Vec<Figure>,
    /// What was not, and how to measure it (e.g. "test accuracy: run `joulecut eval OUT`").
    pub not_measured: Vec<String>,
}

/// The compression's own energy: the command's metered window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardEnergy {
    /// Joules.
    pub joules: f64,
    /// `measured`, `estimated` or `mixed`.
    pub provenance: TotalProvenance,
    /// Kilowatt-hours.
    pub kwh: f64,
    /// By kind of hardware, each with its provenance (`null`: not metered).
    pub domains: DomainSplit,
    /// Each domain's provenance and source, `cpu: estimated by cpu-time x 10 W/core`.
    pub sources: String,
    /// The full window (the DESIGN `energy` object).
    pub window: serde_json::Value,
}

impl CardEnergy {
    /// The energy of a window.
    pub fn of(m: &Measurement) -> CardEnergy {
        CardEnergy {
            joules: m.total().0,
            provenance: m.provenance(),
            kwh: kwh(m.total().0),
            domains: DomainSplit::of(m),
            sources: m
                .domains
                .iter()
                .map(|d| format!("{}: {} by {}", d.name, d.provenance, d.source))
                .collect::<Vec<_>>()
                .join("; "),
            window: serde_json::to_value(m).unwrap_or_default(),
        }
    }
}

/// Sizes on disk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CardSize {
    /// The input's bytes.
    pub bytes_before: u64,
    /// The output's bytes (weight files).
    pub bytes_after: u64,
    /// after / before.
    pub ratio: f64,
}

/// The energy card of one compressed model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyCard {
    /// Schema version ([`CARD_SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The command (`quantize`, `prune`, `distill`, `train`).
    pub command: String,
    /// The input model.
    pub input: String,
    /// The output model.
    pub output: String,
    /// When the card was written, RFC 3339 UTC.
    pub created: String,
    /// What was done to the model: its `joulecut.history`, oldest first.
    pub history: serde_json::Value,
    /// Quality, where measured.
    pub quality: Quality,
    /// Size before and after.
    pub size: CardSize,
    /// The compression's own energy (the command's metered window).
    pub compression_energy: CardEnergy,
    /// After how many inferences the compression pays back, when inference joules of both
    /// models are known; `None` otherwise (see `break_even_note`).
    pub break_even: Option<BreakEven>,
    /// Why there is no break-even, or what it counts.
    pub break_even_note: String,
    /// Where it ran.
    pub host: Host,
}

/// What a command knows when it has written a model.
pub struct CardFacts<'a> {
    /// The command.
    pub command: &'a str,
    /// The input model.
    pub input: &'a Path,
    /// The output model, already written.
    pub output: &'a Path,
    /// The input's bytes.
    pub bytes_before: u64,
    /// Quality figures.
    pub quality: Quality,
    /// The command's metered window.
    pub energy: &'a Measurement,
    /// The break-even, when known.
    pub break_even: Option<BreakEven>,
    /// Where it ran.
    pub host: Host,
}

impl EnergyCard {
    /// The card of a written model: its history and size are read back from `facts.output`.
    pub fn build(facts: CardFacts<'_>) -> Result<EnergyCard> {
        let src = joulecut_checkpoint::Source::open(facts.output)?;
        let history = match src.shards().first() {
            Some(s) => serde_json::to_value(s.checkpoint.history()?).unwrap_or_default(),
            None => serde_json::Value::Array(Vec::new()),
        };
        let bytes_after = src.file_bytes();
        Ok(EnergyCard {
            schema_version: CARD_SCHEMA_VERSION,
            command: facts.command.to_string(),
            input: facts.input.display().to_string(),
            output: facts.output.display().to_string(),
            created: UtcTime::now().to_string(),
            history,
            quality: facts.quality,
            size: CardSize {
                bytes_before: facts.bytes_before,
                bytes_after,
                ratio: bytes_after as f64 / facts.bytes_before.max(1) as f64,
            },
            compression_energy: CardEnergy::of(facts.energy),
            break_even_note: match &facts.break_even {
                Some(_) => "inferences after which the saved inference joules repay the compression joules".into(),
                None => "not measured: this command does not run inference on both models; `joulecut bench` (or `joulecut eval` of both) gives the inference joules per sample".into(),
            },
            break_even: facts.break_even,
            host: facts.host,
        })
    }

    /// Writes `energy.json` and `card.md` for the model at `output` ([`card_paths`]), each
    /// atomically; returns their paths.
    pub fn write(&self, output: &Path) -> Result<(PathBuf, PathBuf)> {
        let (json, md) = card_paths(output);
        let text = serde_json::to_string_pretty(self).expect("card serialises");
        for (path, text) in [(&json, text), (&md, self.markdown())] {
            joulecut_checkpoint::atomic_write(path, |f| {
                std::io::Write::write_all(f, text.as_bytes())
            })?;
        }
        Ok((json, md))
    }

    /// Removes a card left beside `output` by an earlier run (a `--no-card` run replaced the
    /// model it described). Missing files are fine.
    pub fn remove_stale(output: &Path) -> Result<()> {
        let (json, md) = card_paths(output);
        for p in [json, md] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Write { path: p, source: e });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The card for people.
    pub fn markdown(&self) -> String {
        let e = &self.compression_energy;
        let mut s = format!("# Energy card: `{}`\n\n", self.output);
        s += &format!(
            "Made by `joulecut {}` from `{}` on {} ({}), {}.\n\n",
            self.command, self.input, self.host.hostname, self.host.cpu, self.created
        );
        s += "## What was done\n\n";
        match self.history.as_array() {
            Some(h) if !h.is_empty() => {
                for step in h {
                    s += &format!(
                        "- `{}` {}\n",
                        step["command"].as_str().unwrap_or("?"),
                        step["params"]
                    );
                }
            }
            _ => s += "- (no joulecut history in the file)\n",
        }
        s += "\n## Quality\n\n";
        for f in &self.quality.measured {
            s += &format!("- {}: {:.6} ({})\n", f.name, f.value, f.note);
        }
        for n in &self.quality.not_measured {
            s += &format!("- not measured: {n}\n");
        }
        if self.quality.measured.is_empty() && self.quality.not_measured.is_empty() {
            s += "- not measured\n";
        }
        s += &format!(
            "\n## Size\n\n{} → {} bytes ({:.3}x)\n\n## Energy of the compression\n\n{:.3} J ({:.3e} kWh), {}",
            self.size.bytes_before,
            self.size.bytes_after,
            self.size.ratio,
            e.joules,
            e.kwh,
            e.provenance
        );
        if e.provenance != TotalProvenance::Measured {
            s += " — estimated where no energy counter was readable: the estimate tracks CPU time (and resident memory) and excludes idle power";
        }
        s += &format!(".\nSources: {}.\n\n## Break-even\n\n", e.sources);
        match &self.break_even {
            Some(b) => s += &format!("{} ({}).\n", b.describe("inferences"), self.break_even_note),
            None => s += &format!("{}.\n", self.break_even_note),
        }
        s += &format!(
            "\n## Host\n\n{} — {}, {} cores, kernel {}{}; joulecut {}.\n",
            self.host.hostname,
            self.host.cpu,
            self.host.cores,
            self.host.kernel,
            self.host
                .hypervisor
                .as_ref()
                .map(|h| format!(", virtualised ({h})"))
                .unwrap_or_default(),
            self.host.joulecut
        );
        s
    }
}
