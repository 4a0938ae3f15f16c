//! The report's files: `report.json`, `report.csv`, `report.md` and `pareto.svg`, each written
//! atomically. Kept apart from the report's figures and the chart so both of those stay leaves.

use std::path::Path;

use super::report::Report;
use crate::{Error, Result};

/// Writes each `(file name, text)` into `dir` (created if missing), atomically each.
pub(super) fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for (name, text) in files {
        joulecut_checkpoint::atomic_write(&dir.join(name), |f| {
            std::io::Write::write_all(f, text.as_bytes())
        })
        .map_err(|e| Error::Mismatch(e.to_string()))?;
    }
    Ok(())
}

impl Report {
    /// Writes `report.json`, `report.csv`, `report.md` and `pareto.svg` into `dir` (atomically each).
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_files(
            dir,
            &[
                (
                    "report.json",
                    serde_json::to_string_pretty(self).expect("report serialises"),
                ),
                ("report.csv", self.csv()),
                ("report.md", self.markdown()),
                ("pareto.svg", super::svg::pareto(self)),
            ],
        )
    }
}
