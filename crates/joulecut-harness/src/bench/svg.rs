//! `pareto.svg`: quality (test accuracy, or a transformer's embedding cosine) against inference
//! joules (log x-axis), one colour per model, the Pareto front (lower energy, higher quality) drawn
//! as a line, every point labelled. Hand-rolled SVG: no plotting dependency for one scatter chart.

use super::report::{Report, Summary};

const W: f64 = 900.0;
const H: f64 = 560.0;
const L: f64 = 80.0;
const R: f64 = 220.0;
const T: f64 = 50.0;
const B: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

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

/// The points of one model, in one colour, with their own Pareto front.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Series {
    /// Legend entry.
    pub name: String,
    /// Its points.
    pub points: Vec<Point>,
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
            })
            .collect(),
    })
}

/// Renders any quality-vs-energy chart: log x-axis, one colour per series, each series' Pareto
/// front dashed, every point labelled.
pub(super) fn render(chart: &Chart) -> String {
    let all = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.x > 0.0)
    };
    let xs: Vec<f64> = all().map(|p| p.x).collect();
    let ys: Vec<f64> = all().map(|p| p.y).collect();
    let (mut x0, mut x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(0.0, f64::max),
    );
    if !x0.is_finite() {
        (x0, x1) = (1.0, 10.0);
    }
    let (lx0, lx1) = ((x0 / 1.5).log10().floor(), (x1 * 1.5).log10().ceil());
    let (mut y0, mut y1) = (
        ys.iter().copied().fold(1.0, f64::min),
        ys.iter().copied().fold(0.0, f64::max),
    );
    if y1 <= y0 {
        (y0, y1) = (y0 - 0.01, y0 + 0.01);
    }
    let pad = (y1 - y0) * 0.1 + 0.002;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: f64| L + (x.log10() - lx0) / (lx1 - lx0) * (W - L - R);
    let py = |y: f64| T + (y1 - y) / (y1 - y0) * (H - T - B);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    s += &format!(
        "<text x=\"{}\" y=\"28\" font-size=\"16\" text-anchor=\"middle\">{}</text>\n",
        (W - R + L) / 2.0,
        esc(&chart.title)
    );
    // Axes and grid.
    s += &format!(
        "<rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n",
        W - L - R,
        H - T - B
    );
    let mut d = lx0;
    while d <= lx1 + 1e-9 {
        for m in [1.0, 2.0, 5.0] {
            let v = 10f64.powf(d) * m;
            if v.log10() > lx1 + 1e-9 {
                break;
            }
            let x = px(v);
            s += &format!(
                "<line x1=\"{x:.1}\" y1=\"{T}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
                H - B
            );
            s += &format!(
                "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                H - B + 16.0,
                fmt_num(v)
            );
        }
        d += 1.0;
    }
    let step = nice_step((y1 - y0) / 6.0);
    // enough decimals to tell the ticks apart (at least 3, as accuracy charts always had)
    let decimals = ((-step.log10().floor()).max(0.0) as usize).max(3);
    let mut y = (y0 / step).ceil() * step;
    while y <= y1 {
        let yy = py(y);
        s += &format!(
            "<line x1=\"{L}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\n",
            W - R
        );
        s += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.decimals$}</text>\n",
            L - 6.0,
            yy + 4.0,
            y
        );
        y += step;
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        (W - R + L) / 2.0,
        H - 18.0,
        esc(&chart.x_label)
    );
    s += &format!(
        "<text x=\"20\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {})\">{}</text>\n",
        (H - B + T) / 2.0,
        (H - B + T) / 2.0,
        esc(&chart.y_label)
    );
    // Series per model.
    let mut placed: Vec<(f64, f64, f64, f64)> = Vec::new();
    for (mi, series) in chart.series.iter().enumerate() {
        let c = COLORS[mi % COLORS.len()];
        let mp: Vec<&Point> = series.points.iter().filter(|p| p.x > 0.0).collect();
        if mp.is_empty() {
            continue;
        }
        let coords: Vec<(f64, f64)> = mp.iter().map(|p| (p.x, p.y)).collect();
        let front = pareto_front(&coords);
        let line: Vec<String> = front
            .iter()
            .map(|&i| format!("{:.1},{:.1}", px(coords[i].0), py(coords[i].1)))
            .collect();
        s += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/>\n",
            line.join(" ")
        );
        for (i, p) in mp.iter().enumerate() {
            let (x, y) = (px(coords[i].0), py(coords[i].1));
            let on_front = front.contains(&i);
            let shape = if p.baseline {
                format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{c}\"/>",
                    x - 5.0,
                    y - 5.0
                )
            } else {
                format!(
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{}\" fill=\"{}\" stroke=\"{c}\" stroke-width=\"2\"/>",
                    if on_front { 6 } else { 4 },
                    if on_front { c } else { "white" }
                )
            };
            s += &format!("{shape}\n");
            // Greedy placement: the first of four spots whose box overlaps no label placed so far.
            let w = 6.2 * p.label.chars().count() as f64;
            let spots = [
                (8.0, -6.0, "start"),
                (8.0, 15.0, "start"),
                (-8.0, -6.0, "end"),
                (-8.0, 15.0, "end"),
            ];
            let boxed = |&(dx, dy, a): &(f64, f64, &str)| {
                let left = if a == "start" { x + dx } else { x + dx - w };
                (left, y + dy - 11.0, left + w, y + dy + 2.0)
            };
            let spot = spots
                .iter()
                .find(|sp| {
                    let b = boxed(sp);
                    !placed.iter().any(|o: &(f64, f64, f64, f64)| {
                        b.0 < o.2 && o.0 < b.2 && b.1 < o.3 && o.1 < b.3
                    })
                })
                .unwrap_or(&spots[0]);
            placed.push(boxed(spot));
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{}\" font-size=\"11\" fill=\"#222\">{}</text>\n",
                x + spot.0,
                y + spot.1,
                spot.2,
                esc(&p.label)
            );
        }
        let ly = T + 20.0 + mi as f64 * 20.0;
        s += &format!(
            "<circle cx=\"{}\" cy=\"{ly}\" r=\"6\" fill=\"{c}\"/>\n",
            W - R + 20.0
        );
        s += &format!(
            "<text x=\"{}\" y=\"{}\">{}</text>\n",
            W - R + 32.0,
            ly + 4.0,
            esc(&series.name)
        );
    }
    let ly = T + 20.0 + chart.series.len() as f64 * 20.0 + 10.0;
    s += &format!(
        "<text x=\"{}\" y=\"{ly}\" font-size=\"11\">■ baseline  ● Pareto front</text>\n",
        W - R + 14.0
    );
    s += &format!(
        "<text x=\"{}\" y=\"{}\" font-size=\"11\">○ dominated variant</text>\n",
        W - R + 14.0,
        ly + 16.0
    );
    s += "</svg>\n";
    s
}

fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    p * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_keeps_only_undominated_points() {
        let pts = [
            (10.0, 0.88),
            (3.0, 0.87),
            (5.0, 0.86),
            (1.0, 0.80),
            (2.0, 0.87),
        ];
        assert_eq!(pareto_front(&pts), vec![3, 4, 0]);
    }
}
