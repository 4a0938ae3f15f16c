//! The energy card every command that writes a compressed model leaves beside it
//! (`joulecut_harness::card`): `--no-card` skips it (and removes a stale one, which would describe
//! the model this run replaced).

use std::path::Path;

use anyhow::Context;
use clap::Args;
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

/// Writes the card of a model that has been written (or removes a stale one with `--no-card`);
/// says where on stderr.
pub fn write(args: CardArgs, facts: CardFacts<'_>) -> anyhow::Result<()> {
    let output = facts.output;
    if args.no_card {
        return EnergyCard::remove_stale(output)
            .with_context(|| format!("remove the stale energy card of {}", output.display()));
    }
    let card = EnergyCard::build(facts)
        .with_context(|| format!("build the energy card of {}", output.display()))?;
    let (json, md) = card
        .write(output)
        .with_context(|| format!("write the energy card of {}", output.display()))?;
    eprintln!("energy card: {}, {}", json.display(), md.display());
    Ok(())
}

/// Runs a command's `work` inside one metered window and, when it has written `output`, writes
/// the card with that window's energy. A failing command returns its error before any card is
/// written. Quality comes from what the command recorded in the model's history (`accuracy`),
/// else it is "not measured" with `how_to_measure`.
pub fn metered(
    args: CardArgs,
    command: &str,
    input: &Path,
    output: Option<&Path>,
    device: &str,
    how_to_measure: &str,
    work: impl FnOnce() -> anyhow::Result<std::process::ExitCode>,
) -> anyhow::Result<std::process::ExitCode> {
    let meter = super::output::meter()?;
    let window = meter.window(command);
    let code = work()?;
    let energy = window.finish();
    let Some(output) = output.filter(|o| o.exists()) else {
        return Ok(code);
    };
    let bytes_before = joulecut::checkpoint::Source::open(input)
        .map(|s| s.file_bytes())
        .with_context(|| format!("read the size of {}", input.display()))?;
    let quality = recorded_quality(output, how_to_measure);
    write(
        args,
        CardFacts {
            command,
            input,
            output,
            bytes_before,
            quality,
            energy: &energy,
            break_even: None,
            host: Host::detect(device, &meter),
        },
    )?;
    Ok(code)
}

/// The test accuracy the command recorded in the newest history entry of `output`, if any.
fn recorded_quality(output: &Path, how_to_measure: &str) -> Quality {
    let accuracy = joulecut::checkpoint::Source::open(output)
        .ok()
        .and_then(|s| s.shards().first()?.checkpoint.history().ok())
        .and_then(|h| h.last()?.params.get("accuracy")?.as_f64());
    let mut q = Quality::default();
    match accuracy {
        Some(a) => q.measured.push(joulecut::harness::card::Figure {
            name: "test_accuracy".into(),
            value: a,
            note: "measured by the command on the test set after training".into(),
        }),
        None => q.not_measured.push(how_to_measure.to_string()),
    }
    q
}
