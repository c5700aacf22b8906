//! The report's plots: a few SVG elements each (axes, polylines, bars), written
//! here rather than pulling in a plotting library for three charts. Knows nothing
//! of the results: it draws the series it is given.

use std::fmt::Write as _;

/// The canvas and the margins around the plot area, in pixels (the right margin
/// holds the legend).
struct Canvas {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

const CANVAS: Canvas = Canvas {
    width: 800.0,
    height: 420.0,
    left: 90.0,
    right: 230.0,
    top: 40.0,
    bottom: 90.0,
};

impl Canvas {
    /// The plot area's width and height.
    const fn plot_area(&self) -> (f64, f64) {
        (
            self.width - self.left - self.right,
            self.height - self.top - self.bottom,
        )
    }
}
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

struct Axis {
    min: f64,
    max: f64,
    log: bool,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let v: Vec<f64> = values
            .filter(|x| x.is_finite() && (!log || *x > 0.0))
            .collect();
        let (mut min, mut max) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |a, &x| (a.0.min(x), a.1.max(x)));
        if v.is_empty() {
            (min, max) = (1.0, 10.0);
        }
        if log {
            min = 10f64.powf(min.log10().floor());
            max = 10f64.powf(max.log10().ceil());
            if max <= min {
                max = min * 10.0;
            }
        } else {
            min = min.min(0.0);
            if max <= min {
                max = min + 1.0;
            }
        }
        Axis { min, max, log }
    }

    /// Position of `x` in 0..1 along the axis.
    fn at(&self, x: f64) -> f64 {
        if self.log {
            (x.max(self.min).log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            (x - self.min) / (self.max - self.min)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut t = Vec::new();
            let mut x = self.min;
            while x <= self.max * 1.0001 {
                t.push(x);
                x *= 10.0;
            }
            t
        } else {
            (0..=5)
                .map(|i| self.min + (self.max - self.min) * i as f64 / 5.0)
                .collect()
        }
    }
}

fn label(x: f64) -> String {
    if x >= 1000.0 {
        format!("{}k", x / 1000.0)
    } else if x >= 1.0 {
        format!("{x}")
    } else {
        format!("{x:.3}")
    }
}

fn frame(
    svg: &mut String,
    title: &str,
    x_label: &str,
    y_label: &str,
    xa: Option<&Axis>,
    ya: &Axis,
) {
    let Canvas {
        width,
        height,
        left,
        top,
        ..
    } = CANVAS;
    let (pw, ph) = CANVAS.plot_area();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>"#,
        left + pw / 2.0
    );
    let _ = write!(
        svg,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#,
        top + ph,
        left + pw,
        top + ph,
        top + ph
    );
    for t in ya.ticks() {
        let y = top + ph * (1.0 - ya.at(t));
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0,
            label(t)
        );
    }
    if let Some(xa) = xa {
        for t in xa.ticks() {
            let x = left + pw * xa.at(t);
            let _ = write!(
                svg,
                r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
                top + ph + 18.0,
                label(t)
            );
        }
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        left + pw / 2.0,
        height - 10.0
    );
    let _ = write!(
        svg,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{y_label}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
}

fn legend(svg: &mut String, names: &[String]) {
    let Canvas {
        width, right, top, ..
    } = CANVAS;
    for (i, n) in names.iter().enumerate() {
        let y = top + 10.0 + i as f64 * 18.0;
        let x = width - right + 15.0;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{n}</text>"#,
            y - 10.0,
            COLORS[i % COLORS.len()],
            x + 18.0,
            y
        );
    }
}

pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    log_x: bool,
    log_y: bool,
) -> String {
    let Canvas { left, top, .. } = CANVAS;
    let xa = Axis::new(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)), log_x);
    let ya = Axis::new(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)), log_y);
    let (pw, ph) = CANVAS.plot_area();
    let mut svg = String::new();
    frame(&mut svg, title, x_label, y_label, Some(&xa), &ya);
    for (i, (_, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let coords: Vec<String> = pts
            .iter()
            .map(|&(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    left + pw * xa.at(x),
                    top + ph * (1.0 - ya.at(y))
                )
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            coords.join(" ")
        );
        for p in &coords {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{c}"/>"#);
        }
    }
    legend(
        &mut svg,
        &series.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
    );
    svg.push_str("</svg>\n");
    svg
}

pub fn bar_chart(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(&str, Vec<f64>)],
) -> String {
    let Canvas { left, top, .. } = CANVAS;
    let ya = Axis::new(series.iter().flat_map(|s| s.1.iter().copied()), true);
    let (pw, ph) = CANVAS.plot_area();
    let mut svg = String::new();
    frame(&mut svg, title, "", y_label, None, &ya);
    let group = pw / categories.len().max(1) as f64;
    let bar = group * 0.8 / series.len().max(1) as f64;
    for (ci, cat) in categories.iter().enumerate() {
        for (si, (_, values)) in series.iter().enumerate() {
            let v = values.get(ci).copied().unwrap_or(0.0);
            let h = ph * ya.at(v.max(ya.min));
            let x = left + group * ci as f64 + group * 0.1 + bar * si as f64;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{h:.1}" fill="{}"/>"#,
                top + ph - h,
                COLORS[si % COLORS.len()]
            );
        }
        let x = left + group * (ci as f64 + 0.5);
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="end" font-size="9" transform="rotate(-30 {x:.1} {})">{cat}</text>"#,
            top + ph + 12.0,
            top + ph + 12.0
        );
    }
    legend(
        &mut svg,
        &series.iter().map(|s| s.0.to_string()).collect::<Vec<_>>(),
    );
    svg.push_str("</svg>\n");
    svg
}
