//! Measurement windows: [`Window`] (RAII, nestable, measured even when dropped) and the
//! [`Meter::window`] / [`Meter::measure`] entry points.

use super::Meter;
use super::edges::Snapshot;
use crate::measurement::Measurement;

impl Meter {
    /// Opens a named window; [`Window::finish`] (or dropping it) closes it.
    pub fn window(&self, label: &str) -> Window<'_> {
        Window {
            meter: self,
            label: label.to_string(),
            start: Some(self.edge()),
        }
    }

    /// Runs `f` inside a window named `label`.
    pub fn measure<T>(&self, label: &str, f: impl FnOnce() -> T) -> (T, Measurement) {
        let w = self.window(label);
        let out = f();
        (out, w.finish())
    }

    /// Measurements of windows that were dropped without [`Window::finish`], oldest first; clears
    /// the list.
    pub fn take_measurements(&self) -> Vec<Measurement> {
        std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// An open window. Nest with [`Window::window`]; close with [`Window::finish`]. A window dropped
/// without `finish` is measured anyway and kept for [`Meter::take_measurements`].
#[must_use = "a window measures until it is finished or dropped"]
pub struct Window<'m> {
    meter: &'m Meter,
    label: String,
    start: Option<Snapshot>,
}

impl std::fmt::Debug for Window<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl<'m> Window<'m> {
    /// The window's full label (`outer/inner` when nested).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Opens a window nested in this one, labelled `self/label`.
    pub fn window(&self, label: &str) -> Window<'m> {
        let mut w = self.meter.window(label);
        w.label = format!("{}/{}", self.label, label);
        w
    }

    /// Runs `f` in a nested window.
    pub fn measure<T>(&self, label: &str, f: impl FnOnce() -> T) -> (T, Measurement) {
        let w = self.window(label);
        let out = f();
        (out, w.finish())
    }

    /// Closes the window and returns its measurement.
    pub fn finish(mut self) -> Measurement {
        self.close()
    }

    fn close(&mut self) -> Measurement {
        let end = self.meter.edge();
        let start = self.start.take().unwrap_or_else(|| end.clone());
        self.meter
            .measurement(std::mem::take(&mut self.label), &start, &end)
    }
}

impl Drop for Window<'_> {
    fn drop(&mut self) {
        if self.start.is_some() {
            let m = self.close();
            self.meter
                .dropped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(m);
        }
    }
}
