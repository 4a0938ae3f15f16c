//! The columns every row of both suites' reports carries after its own: when and where it ran
//! ([`RunStamp`]), how long it took, and its energy by kind of hardware with provenance and kWh
//! ([`EnergyColumns`]); and the one CSV writer (the `csv` crate: fields with commas, quotes or
//! newlines are quoted, so every row has the header's number of fields).

use joulecut_energy::{DomainSplit, KindEnergy, TotalProvenance, kwh};
use serde::{Deserialize, Serialize};

use crate::host::RunStamp;

/// A row's energy beyond its headline figure: the inference window's joules split by CPU, memory
/// and GPU (each with its provenance; a kind nobody metered is absent, never 0 J), the sources
/// of every domain, and kilowatt-hours of inference and of compression.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EnergyColumns {
    /// Joules of the whole inference window (every pass it timed); `None` when the stored
    /// window has no total.
    pub inference_window_joules: Option<f64>,
    /// Its wall seconds.
    pub inference_window_seconds: Option<f64>,
    /// Those joules in kWh.
    pub inference_kwh: Option<f64>,
    /// Those joules by kind of hardware.
    pub inference_domains: DomainSplit,
    /// Each domain's provenance and source: `cpu: estimated by cpu-time x 10 W/core; memory: ...`
    /// or `cpu-package-0: measured by rapl-powercap`.
    pub inference_sources: String,
    /// The compression joules in kWh.
    pub compression_kwh: f64,
    /// Provenance of the compression joules (`None`: nothing was metered, it cost nothing).
    pub compression_provenance: Option<TotalProvenance>,
}

impl EnergyColumns {
    /// The columns of a row whose inference window is `inference` (the DESIGN `energy` object)
    /// and whose compression cost `compression_joules` with `compression_provenance`.
    pub fn of(
        inference: &serde_json::Value,
        compression_joules: f64,
        compression_provenance: Option<TotalProvenance>,
    ) -> EnergyColumns {
        let joules = inference["joules"].as_f64();
        EnergyColumns {
            inference_window_joules: joules,
            inference_window_seconds: inference["wall_seconds"].as_f64(),
            inference_kwh: joules.map(kwh),
            inference_domains: DomainSplit::from_json(inference).unwrap_or_default(),
            inference_sources: sources(inference),
            compression_kwh: kwh(compression_joules),
            compression_provenance,
        }
    }

    /// The CSV header of [`EnergyColumns::cells`].
    pub(super) const HEADER: [&'static str; 14] = [
        "inference_window_joules",
        "inference_window_seconds",
        "inference_kwh",
        "inference_cpu_joules",
        "inference_cpu_provenance",
        "inference_memory_joules",
        "inference_memory_provenance",
        "inference_gpu_joules",
        "inference_gpu_provenance",
        "inference_other_joules",
        "inference_other_provenance",
        "inference_sources",
        "compression_kwh",
        "compression_provenance",
    ];

    /// The CSV cells; a kind nobody metered has two empty cells.
    pub(super) fn cells(&self) -> Vec<String> {
        let kind = |k: Option<KindEnergy>| match k {
            Some(k) => [format!("{:.6}", k.joules), k.provenance.to_string()],
            None => [String::new(), String::new()],
        };
        let d = &self.inference_domains;
        let num = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or(String::new(), f);
        let mut v = vec![
            num(self.inference_window_joules, &|j| format!("{j:.6}")),
            num(self.inference_window_seconds, &|s| format!("{s:.3}")),
            num(self.inference_kwh, &|k| format!("{k:.9e}")),
        ];
        for k in [d.cpu, d.memory, d.gpu, d.other] {
            v.extend(kind(k));
        }
        v.push(self.inference_sources.clone());
        v.push(format!("{:.9e}", self.compression_kwh));
        v.push(
            self.compression_provenance
                .map_or(String::new(), |p| p.to_string()),
        );
        v
    }
}

/// `cpu: estimated by cpu-time x 10 W/core; memory: estimated by rss x ...`, from an energy
/// object's domains.
fn sources(energy: &serde_json::Value) -> String {
    energy["domains"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    format!(
                        "{}: {} by {}",
                        d["name"].as_str().unwrap_or("?"),
                        d["provenance"].as_str().unwrap_or("?"),
                        d["source"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// The CSV header of [`stamp_cells`].
pub(super) const STAMP_HEADER: [&str; 5] = [
    "timestamp",
    "run_id",
    "hostname",
    "cpu_model",
    "duration_seconds",
];

/// When and where a row ran, and its wall seconds.
pub(super) fn stamp_cells(s: &RunStamp, seconds: f64) -> Vec<String> {
    vec![
        s.timestamp.clone(),
        s.run_id.clone(),
        s.hostname.clone(),
        s.cpu.clone(),
        format!("{seconds:.3}"),
    ]
}

/// A CSV document: the header, then one record per row, quoted where a field needs it.
pub(super) fn csv_text(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing into memory cannot fail; rows of the wrong length are a bug caught by the tests.
    w.write_record(header).expect("csv header");
    for r in rows {
        debug_assert_eq!(r.len(), header.len(), "csv row length");
        w.write_record(r).expect("csv row");
    }
    let bytes = w.into_inner().expect("csv flush");
    String::from_utf8(bytes).expect("csv of UTF-8 fields is UTF-8")
}
