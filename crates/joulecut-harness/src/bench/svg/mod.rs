//! `pareto.svg`: quality (test accuracy, or a transformer's embedding cosine) against inference
//! joules (log x-axis), one panel per model, the Pareto front (lower energy, higher quality) drawn
//! as a line, the baseline's quality and the budget's floor as rules, every point labelled.
//! Hand-rolled SVG with real label placement ([`layout`]): no plotting dependency for a scatter chart.

mod draw;
mod layout;
#[cfg(test)]
mod tests;

use super::report::{Report, Summary};

/// The points on the Pareto front of `pts` (energy, accuracy): no other point has both lower
/// energy and higher accuracy. Sorted by energy.
pub fn pareto_front(pts: &[(f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..pts.len()).collect();
    idx.sort_by(|&a, &b| {
        pts[a]
            .0
            .total_cmp(&pts[b].0)
            .then(pts[b].1.total_cmp(&pts[a].1))
    });
    let mut best = f64::NEG_INFINITY;
    idx.into_iter()
        .filter(|&i| {
            if pts[i].1 > best {
                best = pts[i].1;
                true
            } else {
                false
            }
        })
        .collect()
}

/// One point of a chart.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Point {
    /// The label beside it (the variant).
    pub label: String,
    /// Energy (log axis).
    pub x: f64,
    /// Quality.
    pub y: f64,
    /// Drawn as a square: the uncompressed model.
    pub baseline: bool,
}

/// The lowest quality a variant may keep to be recommended, drawn as a rule.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Budget {
    /// The quality.
    pub value: f64,
    /// What the rule says (e.g. `budget: -0.5 pt`).
    pub label: String,
}

/// The points of one model, in one panel, with their own Pareto front.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Series {
    /// The panel's name.
    pub name: String,
    /// Its points.
    pub points: Vec<Point>,
    /// The budget's floor, if the report has one.
    pub budget: Option<Budget>,
}

/// A quality-vs-energy chart.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Chart {
    /// The title line.
    pub title: String,
    /// x-axis caption.
    pub x_label: String,
    /// y-axis caption.
    pub y_label: String,
    /// One per model.
    pub series: Vec<Series>,
}

/// Renders the chart of a Fashion-MNIST report: accuracy against J/10k.
pub fn pareto(report: &Report) -> String {
    let pts: Vec<&Summary> = report
        .summary
        .iter()
        .filter(|s| s.inference_joules_per_10k[0] > 0.0)
        .collect();
    let prov: std::collections::BTreeSet<&str> =
        pts.iter().map(|p| p.provenance.as_str()).collect();
    let prov = prov.into_iter().collect::<Vec<_>>().join(", ");
    render(&Chart {
        title: format!(
            "joulecut bench `{}`: accuracy vs inference energy ({prov})",
            report.suite.name
        ),
        x_label: "inference joules per 10k samples (log scale)".into(),
        y_label: "test accuracy".into(),
        series: report
            .suite
            .models
            .iter()
            .map(|m| Series {
                name: m.clone(),
                points: pts
                    .iter()
                    .filter(|p| p.model == *m)
                    .map(|p| Point {
                        label: p.variant.clone(),
                        x: p.inference_joules_per_10k[0],
                        y: p.accuracy[0],
                        baseline: p.variant == "baseline",
                    })
                    .collect(),
                budget: report
                    .summary
                    .iter()
                    .find(|p| p.model == *m && p.variant == "baseline")
                    .map(|b| Budget {
                        value: b.accuracy[0] - report.max_accuracy_drop / 100.0,
                        label: format!("budget: -{} pt", report.max_accuracy_drop),
                    }),
            })
            .collect(),
    })
}

/// Renders any quality-vs-energy chart: one panel per series, log x-axis fitted to the data, the
/// Pareto front dashed, baseline and budget lines, every point labelled where it covers nothing.
pub(super) fn render(chart: &Chart) -> String {
    draw::svg(chart, &layout::layout(chart))
}
