//! The SVG text of a laid-out chart: nothing here decides a position, [`super::layout`] does.

use std::fmt::Write;

use super::Chart;
use super::layout::{HEAD, LABEL_FONT, Layout, MARKER_R, Panel, TEXT_INSET, W};

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];
const BUDGET: &str = "#c0392b";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG document.
pub(super) fn svg(chart: &Chart, layout: &Layout) -> String {
    let (w, h) = (layout.width, layout.height);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">{}</text>",
        W / 2.0,
        esc(&chart.title)
    );
    legend(&mut s);
    if layout.panels.is_empty() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no variant has an energy figure to plot</text>",
            W / 2.0,
            HEAD + 40.0
        );
    }
    for p in &layout.panels {
        panel(&mut s, chart, p);
    }
    s += "</svg>\n";
    s
}

fn legend(s: &mut String) {
    let y = 44.0;
    let c = "#555";
    let _ = writeln!(
        s,
        "<g font-size=\"11\" fill=\"#333\"><rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">baseline</text>\
<circle cx=\"{}\" cy=\"{}\" r=\"6\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">on the Pareto front (dashed)</text>\
<circle cx=\"{}\" cy=\"{}\" r=\"5\" fill=\"white\" stroke=\"{c}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">dominated</text>\
<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\" stroke-dasharray=\"2 3\"/><text x=\"{}\" y=\"{}\">baseline quality</text>\
<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{BUDGET}\" stroke-dasharray=\"6 3\"/><text x=\"{}\" y=\"{}\">budget floor</text></g>",
        180.0,
        y - 9.0,
        194.0,
        y,
        265.0,
        y - 4.0,
        276.0,
        y,
        455.0,
        y - 4.0,
        466.0,
        y,
        540.0,
        y - 4.0,
        568.0,
        y - 4.0,
        574.0,
        y,
        680.0,
        y - 4.0,
        708.0,
        y - 4.0,
        714.0,
        y,
    );
}

fn fmt_tick(v: f64) -> String {
    let t = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    };
    if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        t
    }
}

fn panel(s: &mut String, chart: &Chart, p: &Panel) {
    let c = COLORS[p.color_index % COLORS.len()];
    let plot = &p.plot;
    let (pw, ph) = (plot.x1 - plot.x0, plot.y1 - plot.y0);
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"13\" font-weight=\"bold\" fill=\"{c}\">{}</text>",
        plot.x0,
        plot.y0 - 8.0,
        esc(&p.name)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{}\" y=\"{}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>",
        plot.x0, plot.y0
    );
    for &v in &p.x.ticks {
        let x = p.x.at(v);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#e4e4e4\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            plot.y0,
            plot.y1,
            plot.y1 + 16.0,
            fmt_tick(v)
        );
    }
    // enough decimals to tell the ticks apart, at least 3
    let step =
        p.y.ticks
            .windows(2)
            .map(|w| w[1] - w[0])
            .next()
            .unwrap_or(0.01);
    let decimals = ((-step.log10().floor()).max(0.0) as usize).max(3);
    for &v in &p.y.ticks {
        let y = p.y.at(v);
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.decimals$}</text>",
            plot.x0,
            plot.x1,
            plot.x0 - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        (plot.x0 + plot.x1) / 2.0,
        plot.y1 + 36.0,
        esc(&chart.x_label)
    );
    let my = (plot.y0 + plot.y1) / 2.0;
    let _ = writeln!(
        s,
        "<text x=\"20\" y=\"{my}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {my})\">{}</text>",
        esc(&chart.y_label)
    );
    for r in &p.rules {
        let (stroke, dash) = if r.budget {
            (BUDGET, "6 3")
        } else {
            ("#888", "2 3")
        };
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"{stroke}\" stroke-dasharray=\"{dash}\"/>",
            plot.x0, r.y, plot.x1, r.y
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{LABEL_FONT}\" fill=\"{stroke}\">{}</text>",
            r.label.bounds.x0 + TEXT_INSET.0,
            r.label.bounds.y1 - TEXT_INSET.1,
            esc(&r.label.text)
        );
    }
    let front: Vec<String> = p
        .front
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" stroke-dasharray=\"6 3\" opacity=\"0.7\"/>",
        front.join(" ")
    );
    for (m, l) in p.markers.iter().zip(&p.labels) {
        if let Some((x1, y1, x2, y2)) = l.leader {
            let _ = writeln!(
                s,
                "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"#999\" stroke-width=\"0.8\"/>"
            );
        }
        let shape = if m.baseline {
            format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{}\" height=\"{}\" fill=\"{c}\"/>",
                m.x - MARKER_R,
                m.y - MARKER_R,
                2.0 * MARKER_R,
                2.0 * MARKER_R
            )
        } else if m.on_front {
            format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{MARKER_R}\" fill=\"{c}\"/>",
                m.x, m.y
            )
        } else {
            format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\" fill=\"white\" stroke=\"{c}\" stroke-width=\"2\"/>",
                m.x,
                m.y,
                MARKER_R - 2.0
            )
        };
        let _ = writeln!(s, "{shape}");
        let _ = writeln!(
            s,
            // a white halo keeps a label readable where a rule or the front passes under it
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{LABEL_FONT}\" fill=\"#222\" stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\">{}</text>",
            l.bounds.x0 + TEXT_INSET.0,
            l.bounds.y1 - TEXT_INSET.1,
            esc(&l.text)
        );
    }
}
