//! The break-even point of each bench variant ([`joulecut_energy::break_even()`]) from raw results,
//! and its cells in the CSV and Markdown tables of both suites. Computed by the reports, like the
//! other figures relative to the baseline, so merged shards get it too.

use joulecut_energy::{BreakEven, TotalProvenance, break_even};

use super::Saving;
use super::report::{Row, median};
use super::result::{RunResult, StepRecord};
use crate::{Error, Result};

/// The break-even point of variant `r` against its baseline `b` (same model and seed), per 1,000
/// samples. The cost is `r.compression_joules`: every weight-changing step it took to make the
/// variant from the baseline, shared ones included in full; the baseline's own training is not
/// part of it (both models need it).
pub(super) fn row_break_even(b: &RunResult, r: &RunResult) -> Result<Option<BreakEven>> {
    let inference = b.provenance.combine(r.provenance);
    let compression = steps_provenance(&r.compression_energy).map_err(|(i, step)| {
        Error::Mismatch(format!(
            "{} seed {} `{}`: compression_energy[{i}] ({step}) has no provenance (hint: the shard was not written by `joulecut bench`; rerun it)",
            r.model, r.seed, r.variant
        ))
    })?;
    let be = break_even(
        r.compression_joules,
        // a variant made without a metered step cost nothing: only the inference figures count
        compression.unwrap_or(inference),
        b.inference_joules_per_10k / 10.0,
        r.inference_joules_per_10k / 10.0,
        inference,
    );
    Ok(never_if_nominal(be, r.saving))
}

/// A `nominal` variant runs the baseline's kernels at the baseline's size, so whatever its
/// measured joules differ by is noise: it never pays back (the measured saving stays shown).
pub(crate) fn never_if_nominal(b: Option<BreakEven>, saving: Saving) -> Option<BreakEven> {
    b.map(|b| {
        if saving == Saving::Nominal {
            b.without_payback()
        } else {
            b
        }
    })
}

/// The provenance of a variant's compression steps together; `None` when it had none. `Err`
/// names the first step whose energy object has no readable provenance.
pub(super) fn steps_provenance(
    steps: &[StepRecord],
) -> std::result::Result<Option<TotalProvenance>, (usize, String)> {
    let mut all: Option<TotalProvenance> = None;
    for (i, s) in steps.iter().enumerate() {
        let p = s.energy["provenance"]
            .as_str()
            .and_then(|w| w.parse::<TotalProvenance>().ok())
            .ok_or_else(|| (i, s.step.clone()))?;
        all = Some(all.map_or(p, |a| a.combine(p)));
    }
    Ok(all)
}

/// The break-even point of one variant's medians over seeds: median compression joules over the
/// median saving, so the table's columns check against each other; provenance over every seed.
/// `None` for the baseline, or when some seed has no break-even.
pub(super) fn median_break_even(g: &[&Row]) -> Option<BreakEven> {
    let each: Vec<BreakEven> = g.iter().map(|r| r.break_even).collect::<Option<_>>()?;
    let provenance = each
        .iter()
        .map(|b| b.provenance)
        .reduce(TotalProvenance::combine)?;
    let be = BreakEven::from_saving(
        median(each.iter().map(|b| b.compression_joules).collect()),
        median(each.iter().map(|b| b.saved_joules_per_1000).collect()),
        provenance,
    );
    // the medians make a new break-even: a nominal variant's must stay `never`, as each seed's is
    let nominal = g.iter().any(|r| r.run.saving == Saving::Nominal);
    never_if_nominal(
        be,
        if nominal {
            Saving::Nominal
        } else {
            Saving::Real
        },
    )
}

/// The CSV fields `saved_joules_per_1000,break_even_<items>,break_even_provenance`: plain
/// numbers (the count rounded up to whole items), an empty count for *never*, all three empty
/// without a break-even (the baseline).
pub(super) fn csv_cells(b: Option<&BreakEven>) -> [String; 3] {
    match b {
        None => Default::default(),
        Some(b) => [
            format!("{:.6}", b.saved_joules_per_1000),
            b.break_even_items
                .map_or(String::new(), |n| format!("{:.0}", n.ceil())),
            b.provenance.to_string(),
        ],
    }
}

/// The Markdown cells `saved J/1000 | break-even`: `-` without a break-even, the count for people
/// (`27.1 k samples`, `never`), with the provenance beside it when it is not the row's.
pub(super) fn md_cells(b: Option<&BreakEven>, row_provenance: &str, unit: &str) -> String {
    match b {
        None => "- | -".to_string(),
        Some(b) => {
            let note = if b.provenance.as_str() == row_provenance {
                String::new()
            } else {
                format!(" ({})", b.provenance)
            };
            format!(
                "{:.4} | {}{note}",
                b.saved_joules_per_1000,
                b.describe(unit)
            )
        }
    }
}
