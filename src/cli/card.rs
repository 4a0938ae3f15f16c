//! The energy card every command that writes a compressed model leaves beside it
//! (`joulecut_harness::card`): `--no-card` skips it (and removes a stale one, which would describe
//! the model this run replaced).

use std::path::Path;

use anyhow::Context;
use clap::Args;
use joulecut::energy::{Measurement, Meter};
use joulecut::harness::Host;
use joulecut::harness::card::{CardFacts, EnergyCard, Quality};

/// `--no-card`.
#[derive(Debug, Args, Clone, Copy)]
pub struct CardArgs {
    /// Do not write the energy card (NAME.energy.json and NAME.card.md beside the output; inside
    /// an output directory, energy.json and CARD.md).
    #[arg(long)]
    pub no_card: bool,
}

/// What a command measured about the model it wrote.
pub struct Written<'a> {
    pub command: &'a str,
    pub input: &'a Path,
    pub output: &'a Path,
    pub bytes_before: u64,
    pub quality: Quality,
    pub energy: &'a Measurement,
    pub meter: &'a Meter,
    pub device: &'a str,
}

/// Writes the card of a model that has been written (or removes a stale one with `--no-card`);
/// says where on stderr.
pub fn write(args: CardArgs, w: Written<'_>) -> anyhow::Result<()> {
    if args.no_card {
        return EnergyCard::remove_stale(w.output)
            .with_context(|| format!("remove the stale energy card of {}", w.output.display()));
    }
    let card = EnergyCard::build(CardFacts {
        command: w.command,
        input: w.input,
        output: w.output,
        bytes_before: w.bytes_before,
        quality: w.quality,
        energy: w.energy,
        break_even: None,
        host: Host::detect(w.device, w.meter),
    })
    .with_context(|| format!("build the energy card of {}", w.output.display()))?;
    let (json, md) = card
        .write(w.output)
        .with_context(|| format!("write the energy card of {}", w.output.display()))?;
    eprintln!("energy card: {}, {}", json.display(), md.display());
    Ok(())
}
