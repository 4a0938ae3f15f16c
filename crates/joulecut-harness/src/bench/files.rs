//! The report's files: `report.json`, `report.csv`, `report.md` and `pareto.svg`, each written
//! atomically. Kept apart from the report's figures and the chart so both of those stay leaves.

use std::path::Path;

use super::report::Report;
use crate::{Error, Result};

impl Report {
    /// Writes `report.json`, `report.csv`, `report.md` and `pareto.svg` into `dir` (atomically each).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let put = |name: &str, text: String| {
            joulecut_checkpoint::atomic_write(&dir.join(name), |f| {
                std::io::Write::write_all(f, text.as_bytes())
            })
            .map(|_| ())
            .map_err(|e| Error::Mismatch(e.to_string()))
        };
        put(
            "report.json",
            serde_json::to_string_pretty(self).expect("report serialises"),
        )?;
        put("report.csv", self.csv())?;
        put("report.md", self.markdown())?;
        put("pareto.svg", super::svg::pareto(self))?;
        Ok(())
    }
}
