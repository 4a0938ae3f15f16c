//! Where everything on a chart goes, in pixels: one panel per series, axes fitted to the data,
//! ticks, the baseline and budget lines, and a label for every point placed where it covers no
//! other label, no marker and nothing outside the plot. Pure geometry, so tests can check it.

use super::{Chart, Point, pareto_front};

/// Canvas width.
pub(super) const W: f64 = 900.0;
/// Height of one panel (plot, axes and captions).
const PANEL_H: f64 = 430.0;
/// Above the first panel: the title and the legend line.
pub(super) const HEAD: f64 = 58.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
/// Above a panel's plot: the panel's name.
const PANEL_TOP: f64 = 26.0;
/// Below a panel's plot: tick labels and the axis caption.
const PANEL_BOTTOM: f64 = 56.0;
/// Point labels' font size.
pub(super) const LABEL_FONT: f64 = 11.0;
/// Width of a label's character at [`LABEL_FONT`]: sans-serif averages about 6.3 px for the
/// lower case, digits and dashes of variant names; the rest is margin.
const CHAR_W: f64 = 6.6;
/// Height of a label's box: the text's 11 px and 2 px of air each side, so that boxes that merely
/// touch still leave a gap between the texts.
const LABEL_H: f64 = 15.0;
/// Where a label's text starts inside its box (x) and its baseline sits above the box's bottom (y).
pub(super) const TEXT_INSET: (f64, f64) = (2.0, 4.0);
/// Marker radius (points on the front; others are smaller, the baseline a square of this half-side).
pub(super) const MARKER_R: f64 = 6.0;
/// Distances tried between a marker and its label, nearest first.
const DISTANCES: [f64; 9] = [3.0, 9.0, 16.0, 25.0, 36.0, 50.0, 66.0, 84.0, 105.0];
/// A label further than this from its marker gets a leader line.
const LEADER_FROM: f64 = 8.0;

/// An axis-aligned box in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    /// Whether the two boxes share any area.
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    /// Whether `self` lies wholly inside `o`.
    pub fn inside(&self, o: &Rect) -> bool {
        self.x0 >= o.x0 && self.x1 <= o.x1 && self.y0 >= o.y0 && self.y1 <= o.y1
    }

    fn area_shared(&self, o: &Rect) -> f64 {
        let w = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0.0);
        let h = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0.0);
        w * h
    }

    /// The point of the box nearest to `(x, y)`.
    fn nearest(&self, x: f64, y: f64) -> (f64, f64) {
        (x.clamp(self.x0, self.x1), y.clamp(self.y0, self.y1))
    }

    fn grown(&self, by: f64) -> Rect {
        Rect {
            x0: self.x0 - by,
            y0: self.y0 - by,
            x1: self.x1 + by,
            y1: self.y1 + by,
        }
    }

    fn around(x: f64, y: f64, r: f64) -> Rect {
        Rect {
            x0: x - r,
            y0: y - r,
            x1: x + r,
            y1: y + r,
        }
    }
}

/// One axis: the value range shown, where it lies in pixels, and its ticks.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Axis {
    /// Smallest value shown.
    pub lo: f64,
    /// Largest value shown.
    pub hi: f64,
    /// Logarithmic (energy) or linear (quality).
    pub log: bool,
    /// Pixel of `lo` and of `hi` (for y, `lo` is at the bottom).
    pub px: (f64, f64),
    /// Tick values, ascending.
    pub ticks: Vec<f64>,
}

impl Axis {
    /// The pixel of `v`.
    pub fn at(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.px.0 + f * (self.px.1 - self.px.0)
    }
}

/// A point as drawn.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Marker {
    pub x: f64,
    pub y: f64,
    pub baseline: bool,
    pub on_front: bool,
    /// The area the marker covers, with a pixel of margin.
    pub bounds: Rect,
}

/// A placed label.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Label {
    pub text: String,
    /// Its box; the text is drawn left-aligned in it, [`TEXT_INSET`] from its lower left corner.
    pub bounds: Rect,
    /// A line from the marker's edge to the box, when the box is not beside the marker.
    pub leader: Option<(f64, f64, f64, f64)>,
}

/// A horizontal reference line: the baseline's quality or the lowest quality the budget allows.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rule {
    pub y: f64,
    pub budget: bool,
    pub label: Label,
}

/// One panel: a series on its own axes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Panel {
    pub name: String,
    pub color_index: usize,
    pub plot: Rect,
    pub x: Axis,
    pub y: Axis,
    pub rules: Vec<Rule>,
    pub markers: Vec<Marker>,
    /// The Pareto front's vertices, left to right.
    pub front: Vec<(f64, f64)>,
    /// One per marker, same order.
    pub labels: Vec<Label>,
}

/// The whole chart.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Layout {
    pub width: f64,
    pub height: f64,
    pub panels: Vec<Panel>,
}

fn label_width(text: &str) -> f64 {
    CHAR_W * text.chars().count() as f64 + 4.0
}

/// Lays out `chart`: a series with no drawable point (energy not above zero) gets no panel.
pub(super) fn layout(chart: &Chart) -> Layout {
    let mut panels = Vec::new();
    for (ci, s) in chart.series.iter().enumerate() {
        let pts: Vec<&Point> = s
            .points
            .iter()
            .filter(|p| p.x > 0.0 && p.x.is_finite() && p.y.is_finite())
            .collect();
        if pts.is_empty() {
            continue;
        }
        let top = HEAD + panels.len() as f64 * PANEL_H + PANEL_TOP;
        let plot = Rect {
            x0: LEFT,
            y0: top,
            x1: W - RIGHT,
            y1: top + PANEL_H - PANEL_TOP - PANEL_BOTTOM,
        };
        panels.push(panel(&s.name, ci, &pts, s.budget.as_ref(), plot));
    }
    let height = HEAD + panels.len().max(1) as f64 * PANEL_H;
    Layout {
        width: W,
        height,
        panels,
    }
}

fn panel(
    name: &str,
    color_index: usize,
    pts: &[&Point],
    budget: Option<&super::Budget>,
    plot: Rect,
) -> Panel {
    let baseline = pts.iter().find(|p| p.baseline).map(|p| p.y);
    let mut ys: Vec<f64> = pts.iter().map(|p| p.y).collect();
    ys.extend(budget.map(|b| b.value));
    let x = log_axis(pts.iter().map(|p| p.x), (plot.x0, plot.x1));
    let y = linear_axis(&ys, (plot.y1, plot.y0));
    let coords: Vec<(f64, f64)> = pts.iter().map(|p| (p.x, p.y)).collect();
    let front_idx = pareto_front(&coords);
    let markers: Vec<Marker> = pts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (mx, my) = (x.at(p.x), y.at(p.y));
            let on_front = front_idx.contains(&i);
            let r = if p.baseline || on_front {
                MARKER_R
            } else {
                MARKER_R - 1.0
            };
            Marker {
                x: mx,
                y: my,
                baseline: p.baseline,
                on_front,
                bounds: Rect::around(mx, my, r + 1.0),
            }
        })
        .collect();
    let front = front_idx
        .iter()
        .map(|&i| (markers[i].x, markers[i].y))
        .collect();
    let mut rules = Vec::new();
    let mut taken: Vec<Rect> = Vec::new();
    let marker_boxes: Vec<Rect> = markers.iter().map(|m| m.bounds).collect();
    let lines = baseline
        .map(|b| (b, false, format!("baseline {}", fmt_quality(b))))
        .into_iter()
        .chain(budget.map(|b| (b.value, true, b.label.clone())));
    for (v, is_budget, text) in lines {
        let py = y.at(v);
        let w = label_width(&text);
        // along the line, right end first, above it then below: whichever covers nothing
        let boxes: Vec<Rect> = [py - 2.0 - LABEL_H, py + 2.0]
            .into_iter()
            .flat_map(|y0| {
                [1.0, 0.0, 0.5, 0.75, 0.25].map(|f| {
                    let x0 = plot.x0 + 4.0 + f * (plot.x1 - plot.x0 - 8.0 - w);
                    Rect {
                        x0,
                        y0,
                        x1: x0 + w,
                        y1: y0 + LABEL_H,
                    }
                })
            })
            .collect();
        // first keep clear of the markers' surroundings, where their own labels will go
        let free = |b: &Rect, clearance: f64| {
            b.inside(&plot)
                && !marker_boxes.iter().any(|m| m.grown(clearance).overlaps(b))
                && !taken.iter().any(|o| o.overlaps(b))
        };
        let bounds = [24.0, 0.0]
            .into_iter()
            .find_map(|c| boxes.iter().copied().find(|b| free(b, c)))
            .unwrap_or(boxes[0]);
        taken.push(bounds);
        rules.push(Rule {
            y: py,
            budget: is_budget,
            label: Label {
                text,
                bounds,
                leader: None,
            },
        });
    }
    let labels = place_labels(pts, &markers, &plot, taken);
    Panel {
        name: name.to_string(),
        color_index,
        plot,
        x,
        y,
        rules,
        markers,
        front,
        labels,
    }
}

/// Places every point's label: the most crowded points choose first; each takes the nearest spot
/// (over [`DISTANCES`], eight directions) that covers no marker, no label placed before and stays
/// in the plot, or failing that the spot that covers least.
fn place_labels(
    pts: &[&Point],
    markers: &[Marker],
    plot: &Rect,
    mut taken: Vec<Rect>,
) -> Vec<Label> {
    let crowd = |i: usize| {
        markers
            .iter()
            .filter(|o| (o.x - markers[i].x).hypot(o.y - markers[i].y) < 60.0)
            .count()
    };
    let mut order: Vec<usize> = (0..pts.len()).collect();
    order.sort_by(|&a, &b| {
        crowd(b)
            .cmp(&crowd(a))
            .then(markers[a].x.total_cmp(&markers[b].x))
    });
    let mut out: Vec<Option<Label>> = vec![None; pts.len()];
    for i in order {
        let m = &markers[i];
        let text = pts[i].label.clone();
        let (w, h) = (label_width(&text), LABEL_H);
        let r = (m.bounds.x1 - m.bounds.x0) / 2.0;
        let mut best: Option<(f64, Rect, f64)> = None;
        'search: for d in DISTANCES {
            let e = r + d;
            let diag = e * std::f64::consts::FRAC_1_SQRT_2;
            let spots = [
                (m.x + e, m.y - h / 2.0),
                (m.x - e - w, m.y - h / 2.0),
                (m.x + diag, m.y - diag - h),
                (m.x + diag, m.y + diag),
                (m.x - diag - w, m.y - diag - h),
                (m.x - diag - w, m.y + diag),
                (m.x - w / 2.0, m.y - e - h),
                (m.x - w / 2.0, m.y + e),
            ];
            for (x0, y0) in spots {
                let b = Rect {
                    x0,
                    y0,
                    x1: x0 + w,
                    y1: y0 + h,
                };
                let covered: f64 = markers
                    .iter()
                    .map(|o| &o.bounds)
                    .chain(&taken)
                    .map(|o| b.area_shared(o))
                    .sum();
                let outside = if b.inside(plot) { 0.0 } else { w * h };
                let cost = covered + outside;
                if cost == 0.0 {
                    best = Some((0.0, b, d));
                    break 'search;
                }
                if best.is_none_or(|(c, _, _)| cost < c) {
                    best = Some((cost, b, d));
                }
            }
        }
        let (_, bounds, d) = best.expect("at least one spot is tried");
        taken.push(bounds);
        let leader = (d > LEADER_FROM).then(|| {
            let (nx, ny) = bounds.nearest(m.x, m.y);
            let len = (nx - m.x).hypot(ny - m.y);
            let (sx, sy) = (m.x + (nx - m.x) / len * r, m.y + (ny - m.y) / len * r);
            (sx, sy, nx, ny)
        });
        out[i] = Some(Label {
            text,
            bounds,
            leader,
        });
    }
    out.into_iter()
        .map(|l| l.expect("every point placed"))
        .collect()
}

/// A log axis over `values` (all > 0) with a margin of 8% of the span each side (at least a tenth
/// of a decade), ticks from the sparsest 1-2-5 style set that still gives five of them.
fn log_axis(values: impl Iterator<Item = f64>, px: (f64, f64)) -> Axis {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let (l0, l1) = (lo.log10(), hi.log10());
    let margin = (0.08 * (l1 - l0)).max(0.1);
    let (l0, l1) = (l0 - margin, l1 + margin);
    let (lo, hi) = (10f64.powf(l0), 10f64.powf(l1));
    const SETS: [&[f64]; 4] = [
        &[1.0],
        &[1.0, 2.0, 5.0],
        &[1.0, 2.0, 3.0, 5.0, 7.0],
        &[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ];
    let ticks_of = |set: &[f64]| {
        let mut t = Vec::new();
        for d in (l0.floor() as i32)..=(l1.ceil() as i32) {
            for m in set {
                let v = m * 10f64.powi(d);
                if v >= lo && v <= hi {
                    t.push(v);
                }
            }
        }
        t
    };
    let ticks = SETS
        .iter()
        .map(|s| ticks_of(s))
        .find(|t| t.len() >= 5)
        .unwrap_or_else(|| ticks_of(SETS[3]));
    Axis {
        lo,
        hi,
        log: true,
        px,
        ticks,
    }
}

/// A linear axis over `values` with 8% of the span (at least 0.001) added each side, ticks at a
/// 1-2-5 step giving about six.
fn linear_axis(values: &[f64], px: (f64, f64)) -> Axis {
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let pad = ((hi - lo) * 0.08).max(0.001);
    let (lo, hi) = (lo - pad, hi + pad);
    let step = nice_step((hi - lo) / 6.0);
    let mut ticks = Vec::new();
    let mut k = (lo / step).ceil();
    while k * step <= hi {
        ticks.push(k * step);
        k += 1.0;
    }
    Axis {
        lo,
        hi,
        log: false,
        px,
        ticks,
    }
}

fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    p * [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|&m| f <= m)
        .unwrap_or(10.0)
}

/// A quality value as the reference lines print it.
pub(super) fn fmt_quality(v: f64) -> String {
    format!("{v:.4}")
}
