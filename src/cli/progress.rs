//! Progress on stderr, one home for every command: bars with an ETA for phases longer than a
//! second (epochs, teacher logits and outputs, QAT, the sensitivity sweep, calibrated pruning; a
//! spinner for grid calibration), drawn only on a terminal, and per-epoch lines; `-q/--quiet`
//! (global) silences all of it. Results go to stdout and are never affected.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use joulecut::harness::{Event, Observer};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Sets `-q/--quiet` for the whole process (once, from the parsed command line).
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// Whether progress and notes are silenced.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A bar of `total` `unit`s for the phase `what` (e.g. `epoch 2/5`, `teacher logits`), with its
/// ETA; hidden under `-q`, under `also_hide` (e.g. `--json`) and when stderr is not a terminal.
pub fn bar(what: &str, total: u64, unit: &str, also_hide: bool) -> ProgressBar {
    if quiet() || also_hide || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}, ETA {{eta}} {{msg}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// A spinner with the elapsed time for a phase with nothing to count; hidden as [`bar`] is.
pub fn spinner(what: &str) -> ProgressBar {
    if quiet() || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
    );
    pb.set_message(what.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// A line on stderr unless `-q` (or `also_hide`) silences it.
pub fn note(line: impl std::fmt::Display, also_hide: bool) {
    if !(quiet() || also_hide) {
        eprintln!("{line}");
    }
}

/// Renders training progress: a bar per epoch (`epoch i/N`, steps, ETA, running loss and
/// accuracy) on a terminal, and one line per epoch, unless quiet.
pub struct Progress {
    bar: Option<ProgressBar>,
    hide: bool,
    epochs: usize,
}

impl Progress {
    /// A renderer for a run of `epochs`; `hide` (e.g. `--json`) silences it like `-q`.
    pub fn new(epochs: usize, hide: bool) -> Self {
        Progress {
            bar: None,
            hide: hide || quiet(),
            epochs,
        }
    }
}

impl Observer for Progress {
    fn event(&mut self, e: &Event) {
        if self.hide {
            return;
        }
        match e {
            Event::Step {
                epoch,
                step,
                steps,
                loss,
                accuracy,
                samples_per_second,
            } => {
                let epochs = self.epochs;
                let pb = self.bar.get_or_insert_with(|| {
                    bar(
                        &format!("epoch {epoch}/{epochs}"),
                        *steps as u64,
                        "steps",
                        false,
                    )
                });
                pb.set_position(*step as u64);
                pb.set_message(format!(
                    "loss {loss:.4} acc {accuracy:.4} {samples_per_second:.0} samples/s"
                ));
            }
            Event::Epoch(s) => {
                if let Some(pb) = self.bar.take() {
                    pb.finish_and_clear();
                }
                let test = s
                    .test
                    .as_ref()
                    .map(|t| format!(" test acc {:.4}", t.accuracy))
                    .unwrap_or_default();
                eprintln!(
                    "epoch {}/{}: loss {:.4} train acc {:.4}{test} ({:.1} s, {:.0} samples/s)",
                    s.epoch, self.epochs, s.loss, s.train_accuracy, s.seconds, s.samples_per_second
                );
            }
            _ => {}
        }
    }
}
