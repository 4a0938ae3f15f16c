//! The chart's geometry on the reports people get: labels never cover one another, a marker or
//! the plot's edge, and the axes span the data with a margin and little more.

use super::layout::{Layout, Panel, Rect, layout};
use super::*;

/// (variant, J/10k, accuracy) of a quick-suite run (AMD EPYC, 2 cores).
const QUICK: [(&str, f64, f64); 13] = [
    ("baseline", 3.0476, 0.8917),
    ("fp16", 3.0054, 0.8917),
    ("int8", 0.4073, 0.8913),
    ("qat-int8", 0.4298, 0.8938),
    ("prune90", 2.8737, 0.8916),
    ("prune90-packed", 0.3343, 0.8916),
    ("2:4", 2.9585, 0.8906),
    ("rows50-compact", 1.5535, 0.8912),
    ("rows50-compact-int8", 0.2838, 0.8909),
    ("rows60-compact-int8", 0.2364, 0.8897),
    ("prune90-packed-int8", 0.4205, 0.8915),
    ("distill-mlp64", 0.6041, 0.8777),
    ("distill-mlp64-int8", 0.1414, 0.8781),
];

/// (variant, J/1000 sentences, mean cosine) of a transformer-suite run: six points within 2% of
/// each other in energy at cosine 0.999-1.0.
const TRANSFORMER: [(&str, f64, f64); 23] = [
    ("baseline", 39.86, 1.0),
    ("fp16", 40.07, 1.0),
    ("bf16", 40.53, 1.0),
    ("int8", 30.18, 0.9987),
    ("int8-s8", 31.26, 0.9989),
    ("int8-u7", 24.77, 0.9966),
    ("int8-u6", 22.28, 0.9922),
    ("wanda30", 42.73, 0.9765),
    ("wanda50", 39.79, 0.8818),
    ("sparsegpt30", 40.81, 0.983),
    ("sparsegpt50", 39.85, 0.9146),
    ("sparsegpt-2:4", 40.11, 0.863),
    ("sparsegpt50-packed", 40.56, 0.9146),
    ("sparsegpt30-int8", 31.86, 0.982),
    ("sparsegpt50-int8", 29.97, 0.9136),
    ("heads25", 37.81, 0.9532),
    ("neurons25", 35.33, 0.9516),
    ("sparsegpt50-recovered", 44.14, 0.9361),
    ("sparsegpt50-recovered-int8", 33.94, 0.935),
    ("layers3-recovered", 20.68, 0.7031),
    ("layers3-recovered-int8", 15.13, 0.7029),
    ("neurons50-recovered", 27.72, 0.9153),
    ("neurons50-recovered-int8", 21.1, 0.9142),
];

fn series(name: &str, pts: &[(&str, f64, f64)], budget: f64) -> Series {
    Series {
        name: name.into(),
        points: pts
            .iter()
            .map(|&(label, x, y)| Point {
                label: label.into(),
                x,
                y,
                baseline: label == "baseline",
            })
            .collect(),
        budget: Some(Budget {
            value: budget,
            label: "budget".into(),
        }),
    }
}

fn chart(series: Vec<Series>) -> Chart {
    Chart {
        title: "t".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        series,
    }
}

/// Every label and rule label against every other label, every marker and the plot.
fn assert_no_collisions(p: &Panel) {
    let labels: Vec<(&str, Rect)> = p
        .labels
        .iter()
        .chain(p.rules.iter().map(|r| &r.label))
        .map(|l| (l.text.as_str(), l.bounds))
        .collect();
    for (i, (a, ra)) in labels.iter().enumerate() {
        assert!(ra.inside(&p.plot), "label `{a}` {ra:?} leaves the plot");
        for (b, rb) in &labels[i + 1..] {
            assert!(!ra.overlaps(rb), "labels `{a}` and `{b}` overlap");
        }
        for m in &p.markers {
            assert!(
                !ra.overlaps(&m.bounds),
                "label `{a}` covers the marker at ({:.0}, {:.0})",
                m.x,
                m.y
            );
        }
    }
}

/// The data fill most of each axis, and no point sits on the frame.
fn assert_axes_fit(p: &Panel, pts: &[(&str, f64, f64)]) {
    let (xlo, xhi) = pts.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| {
        (a.min(p.1), b.max(p.1))
    });
    assert!(
        p.x.lo < xlo && p.x.hi > xhi,
        "x axis {:?} cuts the data",
        p.x
    );
    let data_decades = (xhi / xlo).log10();
    let axis_decades = (p.x.hi / p.x.lo).log10();
    assert!(
        data_decades / axis_decades >= 0.6,
        "data span {data_decades:.2} of {axis_decades:.2} decades"
    );
    assert!(p.x.ticks.len() >= 4, "x ticks {:?}", p.x.ticks);
    let (ylo, yhi) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.2), b.max(p.2))
        });
    assert!(
        p.y.lo < ylo && p.y.hi > yhi,
        "y axis {:?} cuts the data",
        p.y
    );
    assert!((yhi - ylo) / (p.y.hi - p.y.lo) >= 0.6);
    for m in &p.markers {
        assert!(m.bounds.inside(&p.plot), "a marker sits on the frame");
    }
}

fn one_panel(l: &Layout) -> &Panel {
    assert_eq!(l.panels.len(), 1);
    &l.panels[0]
}

#[test]
fn quick_suite_labels_collide_with_nothing() {
    let l = layout(&chart(vec![series("lenet-300-100", &QUICK, 0.8867)]));
    let p = one_panel(&l);
    assert_no_collisions(p);
    assert_axes_fit(p, &QUICK);
    assert_eq!(p.labels.len(), QUICK.len());
    assert_eq!(p.rules.len(), 2, "a baseline rule and a budget rule");
}

#[test]
fn crowded_transformer_labels_collide_with_nothing() {
    let l = layout(&chart(vec![series("MiniLM", &TRANSFORMER, 0.99)]));
    let p = one_panel(&l);
    assert_no_collisions(p);
    assert_axes_fit(p, &TRANSFORMER);
    // the six points around (40 J, 1.0) cannot all sit beside their markers
    assert!(p.labels.iter().any(|l| l.leader.is_some()));
}

#[test]
fn one_panel_per_model_and_none_without_energy() {
    let mut empty = series("no-energy", &[("baseline", 0.0, 0.9)], 0.8);
    empty.points[0].x = 0.0;
    let l = layout(&chart(vec![
        series("a", &QUICK, 0.88),
        empty,
        series("b", &QUICK[..4], 0.88),
    ]));
    assert_eq!(l.panels.len(), 2);
    assert!(l.panels[0].plot.y1 < l.panels[1].plot.y0, "panels stack");
    for p in &l.panels {
        assert_no_collisions(p);
    }
    let svg = render(&chart(vec![series("a", &QUICK, 0.88)]));
    assert!(svg.matches("<text").count() >= QUICK.len() + 2);
    assert!(svg.contains("budget"));
}

#[test]
fn a_single_point_gets_an_axis_around_it() {
    let l = layout(&chart(vec![series("m", &[("baseline", 2.0, 0.9)], 0.895)]));
    let p = one_panel(&l);
    assert!(p.x.lo < 2.0 && p.x.hi > 2.0 && !p.x.ticks.is_empty());
    assert!(p.y.lo < 0.895 && p.y.hi > 0.9);
    assert_no_collisions(p);
}

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
