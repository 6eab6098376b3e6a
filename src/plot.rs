//! Minimal SVG plots (line plots with axes and marker lines), written by hand:
//! the figures are simple and this keeps the build free of a plotting stack.

use std::fmt::Write;

/// A line to draw: x and y values with a colour.
pub struct Series<'a> {
    /// X values.
    pub x: &'a [f64],
    /// Y values.
    pub y: &'a [f64],
    /// CSS colour.
    pub color: &'a str,
}

/// A plot with an optional curve and vertical marker lines.
///
/// ```
/// use secondo::plot::{Plot, Series};
/// let svg = Plot {
///     title: "spectral density",
///     x_label: "eigenvalue",
///     y_label: "density",
///     series: vec![Series { x: &[0.0, 1.0, 2.0], y: &[0.1, 0.5, 0.2], color: "#1f77b4" }],
///     markers: &[1.5],
///     log_y: false,
/// }
/// .to_svg();
/// assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("spectral density"));
/// ```
pub struct Plot<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label of the x axis.
    pub x_label: &'a str,
    /// Label of the y axis.
    pub y_label: &'a str,
    /// Curves.
    pub series: Vec<Series<'a>>,
    /// X positions of vertical marker lines (e.g. top eigenvalues).
    pub markers: &'a [f64],
    /// Logarithmic y axis (values ≤ 0 are clamped to the smallest positive one).
    pub log_y: bool,
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

impl Plot<'_> {
    /// Renders the plot as an SVG document.
    pub fn to_svg(&self) -> String {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.x.iter())
            .chain(self.markers)
            .copied();
        let (mut x0, mut x1) = bounds(xs);
        if x0 == x1 {
            (x0, x1) = (x0 - 1.0, x1 + 1.0);
        }
        let ys = || self.series.iter().flat_map(|s| s.y.iter()).copied();
        let peak = ys().fold(0.0, f64::max);
        // A log axis spans at most 8 decades below the peak.
        let floor = ys()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min)
            .max(peak * 1e-8);
        let ty = |v: f64| if self.log_y { v.max(floor).log10() } else { v };
        let (mut y0, mut y1) = bounds(self.series.iter().flat_map(|s| s.y.iter()).map(|&v| ty(v)));
        if !self.log_y {
            y0 = y0.min(0.0);
        }
        if y0 == y1 {
            (y0, y1) = (y0 - 1.0, y1 + 1.0);
        }
        let px = |v: f64| LEFT + (v - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let py = |v: f64| H - BOTTOM - (ty(v) - y0) / (y1 - y0) * (H - TOP - BOTTOM);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = write!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            W / 2.0,
            escape(self.title)
        );
        let (bx, by) = (H - BOTTOM, LEFT);
        let _ = write!(
            s,
            r#"<line x1="{LEFT}" y1="{bx}" x2="{}" y2="{bx}" stroke="black"/>"#,
            W - RIGHT
        );
        let _ = write!(
            s,
            r#"<line x1="{by}" y1="{TOP}" x2="{by}" y2="{bx}" stroke="black"/>"#
        );
        for i in 0..=5 {
            let v = x0 + (x1 - x0) * i as f64 / 5.0;
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                px(v),
                bx + 18.0,
                tick(v)
            );
            let w = y0 + (y1 - y0) * i as f64 / 5.0;
            let y = H - BOTTOM - (w - y0) / (y1 - y0) * (H - TOP - BOTTOM);
            let label = if self.log_y {
                format!("{:.0e}", 10f64.powf(w))
            } else {
                tick(w)
            };
            let _ = write!(
                s,
                r#"<text x="{}" y="{y:.1}" text-anchor="end" dy="4">{label}</text>"#,
                LEFT - 6.0
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            W / 2.0,
            H - 10.0,
            escape(self.x_label)
        );
        let _ = write!(
            s,
            r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
            H / 2.0,
            H / 2.0,
            escape(self.y_label)
        );
        for &m in self.markers {
            let _ = write!(
                s,
                r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{bx}" stroke="#d62728" stroke-dasharray="4 3"/>"##,
                px(m)
            );
        }
        for series in &self.series {
            let points: Vec<String> = series
                .x
                .iter()
                .zip(series.y)
                .map(|(&x, &y)| format!("{:.2},{:.2}", px(x), py(y)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                series.color,
                points.join(" ")
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

fn tick(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
