//! Small inline-SVG charts for the HTML report: lines, strips of points, grouped bars and
//! heatmaps. Plain SVG 1.1, no script, no external resources; coordinates rounded to 0.1 so
//! the page is byte-stable.

use std::fmt::Write as _;

/// Escape text for XML/HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line of a chart.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

const W: f64 = 460.0;
const H: f64 = 260.0;
const L: f64 = 56.0;
const R: f64 = 16.0;
const T: f64 = 30.0;
const B: f64 = 44.0;

struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        let span = (self.x1 - self.x0).max(1e-12);
        L + (v - self.x0) / span * (W - L - R)
    }
    fn y(&self, v: f64) -> f64 {
        let span = (self.y1 - self.y0).max(1e-12);
        H - B - (v - self.y0) / span * (H - T - B)
    }
}

fn tick_label(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// Height added below the axes for `n` legend rows.
fn legend_height(n: usize) -> f64 {
    14.0 * n as f64 + if n > 0 { 6.0 } else { 0.0 }
}

#[allow(clippy::too_many_arguments)]
fn axes(
    s: &mut String,
    f: &Frame,
    title: &str,
    xl: &str,
    yl: &str,
    xticks: &[f64],
    yticks: &[f64],
    legend_rows: usize,
) {
    let th = H + legend_height(legend_rows);
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {th}" width="{W}" height="{th}" role="img"><title>{t}</title><rect width="{W}" height="{th}" fill="#fff"/><text x="{cx:.1}" y="18" font-size="13" text-anchor="middle" font-weight="600">{t}</text>"##,
        t = esc(title),
        cx = W / 2.0
    );
    for &v in yticks {
        let y = f.y(v);
        let _ = write!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{tx}" y="{ty:.1}" font-size="10" text-anchor="end">{lab}</text>"##,
            x2 = W - R,
            tx = L - 6.0,
            ty = y + 3.5,
            lab = tick_label(v)
        );
    }
    for &v in xticks {
        let x = f.x(v);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{yb}" x2="{x:.1}" y2="{yb2}" stroke="#888"/><text x="{x:.1}" y="{ty}" font-size="10" text-anchor="middle">{lab}</text>"##,
            yb = H - B,
            yb2 = H - B + 4.0,
            ty = H - B + 16.0,
            lab = tick_label(v)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{L}" y1="{yb}" x2="{x2}" y2="{yb}" stroke="#333"/><line x1="{L}" y1="{T}" x2="{L}" y2="{yb}" stroke="#333"/><text x="{cx:.1}" y="{ly}" font-size="11" text-anchor="middle">{xl}</text><text x="14" y="{cy:.1}" font-size="11" text-anchor="middle" transform="rotate(-90 14 {cy:.1})">{yl}</text>"##,
        yb = H - B,
        x2 = W - R,
        cx = (L + W - R) / 2.0,
        ly = H - 8.0,
        cy = (T + H - B) / 2.0,
        xl = esc(xl),
        yl = esc(yl)
    );
}

/// One legend row per item, below the axes.
fn legend(s: &mut String, items: &[(&str, &str, bool)]) {
    for (i, (name, color, dashed)) in items.iter().enumerate() {
        let x = L;
        let y = H + 6.0 + 14.0 * i as f64;
        let dash = if *dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{tx:.1}" y="{ty:.1}" font-size="10">{n}</text>"##,
            x2 = x + 18.0,
            tx = x + 22.0,
            ty = y + 3.5,
            n = esc(name)
        );
    }
}

/// Round ticks (steps of 1, 2 or 5 times a power of ten) covering `[a, b]` with about `n`
/// intervals; returns the ticks and the covered range.
fn nice_ticks(a: f64, b: f64, n: usize) -> (Vec<f64>, f64, f64) {
    let span = (b - a).abs().max(1e-12);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&st| st >= raw)
        .unwrap_or(10.0 * mag);
    let lo = (a / step).floor() * step;
    let hi = (b / step).ceil() * step;
    let count = ((hi - lo) / step).round() as usize;
    ((0..=count).map(|i| lo + step * i as f64).collect(), lo, hi)
}

/// Evenly spaced ticks over `[a, b]`.
fn ticks(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..=n).map(|i| a + (b - a) * i as f64 / n as f64).collect()
}

/// Lines through points, y in `[0, y_max]`.
pub fn line_chart(title: &str, xl: &str, yl: &str, series: &[Series], y_max: f64) -> String {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let x0 = xs.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let x1 = xs
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        .max(x0 + 1e-9);
    let f = Frame {
        x0,
        x1,
        y0: 0.0,
        y1: y_max,
    };
    let mut s = String::new();
    let mut xt: Vec<f64> = xs.clone();
    xt.sort_by(f64::total_cmp);
    xt.dedup();
    if xt.len() > 8 {
        xt = ticks(x0, x1, 5);
    }
    axes(
        &mut s,
        &f,
        title,
        xl,
        yl,
        &xt,
        &ticks(0.0, y_max, 4),
        series.len(),
    );
    for se in series {
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", f.x(x), f.y(y)))
            .collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"##,
            pts.join(" "),
            se.color
        );
        for &(x, y) in &se.points {
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}: {} at {}</title></circle>"##,
                f.x(x),
                f.y(y),
                se.color,
                esc(&se.name),
                tick_label(y),
                tick_label(x)
            );
        }
    }
    let items: Vec<(&str, &str, bool)> = series
        .iter()
        .map(|s| (s.name.as_str(), s.color, s.dashed))
        .collect();
    legend(&mut s, &items);
    s.push_str("</svg>");
    s
}

/// Columns of points (one column per label), with a reference line at `y = 0` and a legend
/// of the point colours.
pub fn strip_chart(
    title: &str,
    yl: &str,
    columns: &[(String, Vec<(f64, &'static str)>)],
    legend_items: &[(&str, &'static str)],
) -> String {
    let ys: Vec<f64> = columns
        .iter()
        .flat_map(|c| c.1.iter().map(|p| p.0))
        .filter(|v| v.is_finite())
        .collect();
    let lo = ys.iter().copied().fold(0.0f64, f64::min);
    let hi = ys.iter().copied().fold(0.0f64, f64::max);
    let (yt, y0, y1) = nice_ticks(lo, hi, 5);
    let f = Frame {
        x0: -0.5,
        x1: columns.len() as f64 - 0.5,
        y0,
        y1,
    };
    let mut s = String::new();
    axes(&mut s, &f, title, "", yl, &[], &yt, legend_items.len());
    let _ = write!(
        s,
        r##"<line x1="{L}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#333" stroke-dasharray="3 3"/>"##,
        y = f.y(0.0),
        x2 = W - R
    );
    for (ci, (label, pts)) in columns.iter().enumerate() {
        let cx = f.x(ci as f64);
        let _ = write!(
            s,
            r##"<text x="{cx:.1}" y="{ty}" font-size="10" text-anchor="middle">{}</text>"##,
            esc(label),
            ty = H - B + 16.0
        );
        for (k, &(v, color)) in pts.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            // A deterministic jitter spreads equal values across the column.
            let jitter = ((k * 37) % 21) as f64 - 10.0;
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2.4" fill="{color}" fill-opacity="0.75"/>"##,
                cx + jitter * 2.0,
                f.y(v)
            );
        }
    }
    for (i, (name, color)) in legend_items.iter().enumerate() {
        let y = H + 6.0 + 14.0 * i as f64;
        let _ = write!(
            s,
            r##"<circle cx="{cx:.1}" cy="{y:.1}" r="4" fill="{color}"/><text x="{tx:.1}" y="{ty:.1}" font-size="10">{n}</text>"##,
            cx = L + 9.0,
            tx = L + 22.0,
            ty = y + 3.5,
            n = esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Grouped bars per label, y in `[0, y_max]`, with an optional threshold line.
pub fn bar_chart(
    title: &str,
    yl: &str,
    labels: &[String],
    series: &[(&str, &'static str, Vec<f64>)],
    y_max: f64,
    threshold: Option<(f64, &str)>,
) -> String {
    let n = labels.len().max(1) as f64;
    let (yt, _, y_max) = nice_ticks(0.0, y_max, 4);
    let f = Frame {
        x0: -0.5,
        x1: n - 0.5,
        y0: 0.0,
        y1: y_max,
    };
    let mut s = String::new();
    axes(&mut s, &f, title, "label", yl, &[], &yt, series.len());
    let group = (W - L - R) / n * 0.8;
    let bw = group / series.len().max(1) as f64;
    for (li, lab) in labels.iter().enumerate() {
        let cx = f.x(li as f64);
        for (si, (name, color, vals)) in series.iter().enumerate() {
            let v = vals.get(li).copied().unwrap_or(0.0).clamp(0.0, y_max);
            let x = cx - group / 2.0 + bw * si as f64;
            let y = f.y(v);
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{} {}: {}</title></rect>"##,
                (bw - 1.0).max(1.0),
                (H - B - y).max(0.0),
                esc(name),
                esc(lab),
                tick_label(v)
            );
        }
        let _ = write!(
            s,
            r##"<text x="{cx:.1}" y="{ty}" font-size="10" text-anchor="middle">{}</text>"##,
            esc(lab),
            ty = H - B + 16.0
        );
    }
    if let Some((t, name)) = threshold {
        let y = f.y(t.min(y_max));
        let _ = write!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#c00" stroke-dasharray="4 3"/><text x="{tx}" y="{ty:.1}" font-size="10" fill="#c00" text-anchor="end">{}</text>"##,
            esc(name),
            x2 = W - R,
            tx = W - R - 2.0,
            ty = y - 3.0
        );
    }
    let items: Vec<(&str, &str, bool)> = series.iter().map(|s| (s.0, s.1, false)).collect();
    legend(&mut s, &items);
    s.push_str("</svg>");
    s
}

/// A grey-level heatmap of `values` in `[0, 1]` (row-major, `w` wide), `cell` pixels per
/// entry, framed red when `flagged`.
pub fn heatmap(values: &[f32], w: usize, cell: f64, caption: &str, flagged: bool) -> String {
    let h = values.len().div_ceil(w.max(1));
    let (pw, ph) = (w as f64 * cell, h as f64 * cell);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {pw:.1} {th:.1}" width="{pw:.1}" height="{th:.1}" role="img"><title>{c}</title>"##,
        th = ph + 16.0,
        c = esc(caption)
    );
    for (i, &v) in values.iter().enumerate() {
        let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{cell:.1}" height="{cell:.1}" fill="rgb({g},{g},{g})"/>"##,
            (i % w) as f64 * cell,
            (i / w) as f64 * cell
        );
    }
    if flagged {
        let _ = write!(
            s,
            r##"<rect x="1" y="1" width="{:.1}" height="{:.1}" fill="none" stroke="#d22" stroke-width="2"/>"##,
            pw - 2.0,
            ph - 2.0
        );
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle"{}>{}</text></svg>"##,
        pw / 2.0,
        ph + 12.0,
        if flagged {
            r##" fill="#d22" font-weight="700""##
        } else {
            ""
        },
        esc(caption)
    );
    s
}
