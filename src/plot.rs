//! Minimal SVG charts written by hand: lines, dots, bars and heat maps on one
//! pair of axes with tick labels, reference lines and a legend. The figures
//! are simple and this keeps the build free of a plotting stack; the same
//! [`Chart`] draws `spectrum`'s plot ([`Plot`]) and every panel of the
//! training report (`report`).
//!
//! Only finite values are drawn (a NaN or infinite point is skipped), and
//! every coordinate is written with a fixed precision, so the same data give
//! the same bytes.

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

/// A plot with an optional curve and vertical marker lines, as a standalone
/// SVG file.
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

impl Plot<'_> {
    /// Renders the plot as an SVG document.
    pub fn to_svg(&self) -> String {
        let mut chart = Chart::new(720.0, 420.0, self.x_label, self.y_label);
        chart.title = Some(self.title);
        chart.log_y = self.log_y;
        chart.y_from_zero = !self.log_y;
        chart.vlines = self.markers.to_vec();
        chart.layers = self
            .series
            .iter()
            .map(|s| Layer::Line {
                x: s.x,
                y: s.y,
                color: s.color,
                label: None,
            })
            .collect();
        chart.to_svg() + "\n"
    }
}

/// What a [`Chart`] draws.
pub enum Layer<'a> {
    /// A polyline through the finite points, with dots when there are few.
    Line {
        /// X values.
        x: &'a [f64],
        /// Y values.
        y: &'a [f64],
        /// CSS colour.
        color: &'a str,
        /// Legend entry.
        label: Option<&'a str>,
    },
    /// Unconnected dots (a scatter plot).
    Dots {
        /// X values.
        x: &'a [f64],
        /// Y values.
        y: &'a [f64],
        /// CSS colour.
        color: &'a str,
        /// Legend entry.
        label: Option<&'a str>,
    },
    /// A histogram: equal-width bins spanning `range`, bars of `heights`.
    Bars {
        /// The left edge of the first bin and the right edge of the last.
        range: (f64, f64),
        /// One height per bin.
        heights: &'a [f64],
        /// CSS colour.
        color: &'a str,
    },
    /// A heat map: `cells[i][j]` fills x bin `i` and y bin `j` of equal-width
    /// bins spanning the ranges, coloured by `ln(1 + value)` relative to the
    /// layer's largest (counts span decades, as in Cockpit's histograms);
    /// empty cells are not drawn.
    Heat {
        /// X extent of the bins.
        x_range: (f64, f64),
        /// Y extent of the bins.
        y_range: (f64, f64),
        /// Values, x bin first.
        cells: &'a [Vec<f64>],
    },
}

/// One pair of axes and what is drawn on them.
///
/// ```
/// use secondo::plot::{Chart, Layer};
/// let mut chart = Chart::new(400.0, 240.0, "step", "loss");
/// chart.layers.push(Layer::Line { x: &[0.0, 1.0, 2.0], y: &[2.3, f64::NAN, 0.4], color: "#1f77b4", label: Some("train") });
/// let svg = chart.to_svg();
/// assert!(svg.contains("<polyline") && svg.contains("train") && !svg.contains("NaN"));
/// ```
pub struct Chart<'a> {
    /// Size in pixels (the SVG's width, height and view box).
    pub width: f64,
    /// Height in pixels.
    pub height: f64,
    /// Title above the axes.
    pub title: Option<&'a str>,
    /// Label of the x axis.
    pub x_label: &'a str,
    /// Label of the y axis.
    pub y_label: &'a str,
    /// What to draw, in order (later layers on top).
    pub layers: Vec<Layer<'a>>,
    /// Logarithmic y axis: values ≤ 0 are clamped to the smallest positive
    /// one, at most 8 decades below the largest.
    pub log_y: bool,
    /// Whether the linear y axis reaches down (or up) to 0.
    pub y_from_zero: bool,
    /// Horizontal reference lines (a threshold, the zero line).
    pub hlines: Vec<f64>,
    /// Vertical marker lines.
    pub vlines: Vec<f64>,
}

/// The colours of the heat maps, from empty to full (viridis' stops).
const HEAT: [(f64, f64, f64); 5] = [
    (68.0, 1.0, 84.0),
    (59.0, 82.0, 139.0),
    (33.0, 145.0, 140.0),
    (94.0, 201.0, 98.0),
    (253.0, 231.0, 37.0),
];

/// Heat-map cells overlap by this much (pixels), so that antialiasing
/// leaves no light seams between neighbours.
const SEAM: f64 = 0.4;

/// Dots are drawn on a line of at most this many points.
const FEW: usize = 12;

/// Margins around the plotting area: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (62.0, 14.0, 12.0, 40.0);

/// The mapping from data to pixels.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
    log_y: bool,
    floor: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn px(&self, v: f64) -> f64 {
        self.left + (v - self.x.0) / (self.x.1 - self.x.0) * (self.right - self.left)
    }

    /// The y axis' own coordinate of a value: its log10 on a log axis.
    fn ty(&self, v: f64) -> f64 {
        if self.log_y {
            v.max(self.floor).log10()
        } else {
            v
        }
    }

    fn py(&self, v: f64) -> f64 {
        self.bottom - (self.ty(v) - self.y.0) / (self.y.1 - self.y.0) * (self.bottom - self.top)
    }
}

impl<'a> Chart<'a> {
    /// An empty chart of the given size and axis labels, linear axes.
    pub fn new(width: f64, height: f64, x_label: &'a str, y_label: &'a str) -> Chart<'a> {
        Chart {
            width,
            height,
            title: None,
            x_label,
            y_label,
            layers: Vec::new(),
            log_y: false,
            y_from_zero: false,
            hlines: Vec::new(),
            vlines: Vec::new(),
        }
    }

    /// The entries of the legend: label and colour.
    fn legend(&self) -> Vec<(&str, &str)> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                Layer::Line {
                    label: Some(t),
                    color,
                    ..
                }
                | Layer::Dots {
                    label: Some(t),
                    color,
                    ..
                } => Some((*t, *color)),
                _ => None,
            })
            .collect()
    }

    /// Every (x, y) the axes must show, y in the axis' own coordinate.
    fn extent(&self) -> (Vec<f64>, Vec<f64>) {
        let (mut xs, mut ys) = (self.vlines.clone(), self.hlines.clone());
        for layer in &self.layers {
            match layer {
                Layer::Line { x, y, .. } | Layer::Dots { x, y, .. } => {
                    for (&a, &b) in x.iter().zip(y.iter()) {
                        if a.is_finite() && b.is_finite() {
                            xs.push(a);
                            ys.push(b);
                        }
                    }
                }
                Layer::Bars { range, heights, .. } => {
                    xs.extend([range.0, range.1]);
                    ys.extend(heights.iter().copied());
                    if !self.log_y {
                        ys.push(0.0);
                    }
                }
                Layer::Heat {
                    x_range, y_range, ..
                } => {
                    xs.extend([x_range.0, x_range.1]);
                    ys.extend([y_range.0, y_range.1]);
                }
            }
        }
        (xs, ys)
    }

    fn frame(&self) -> Frame {
        let (xs, ys) = self.extent();
        let peak = ys
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let floor = ys
            .iter()
            .copied()
            .filter(|v| *v > 0.0 && v.is_finite())
            .fold(f64::INFINITY, f64::min)
            .max(peak * 1e-8);
        let mut frame = Frame {
            x: widen(bounds(xs.into_iter())),
            y: (0.0, 1.0),
            log_y: self.log_y,
            floor: if floor.is_finite() { floor } else { 1.0 },
            left: MARGIN.0,
            right: self.width - MARGIN.1,
            top: MARGIN.2 + self.title.map_or(0.0, |_| 22.0),
            bottom: self.height - MARGIN.3,
        };
        if !self.legend().is_empty() {
            frame.top += 16.0;
        }
        let (mut y0, mut y1) = bounds(ys.into_iter().map(|v| frame.ty(v)));
        if self.y_from_zero && !self.log_y {
            (y0, y1) = (y0.min(0.0), y1.max(0.0));
        }
        frame.y = widen((y0, y1));
        frame
    }

    /// Renders the chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        self.render(r#" xmlns="http://www.w3.org/2000/svg""#)
    }

    /// Renders the chart as an `<svg>` element to inline in HTML, which
    /// needs no namespace (and so names no URL).
    pub fn to_inline_svg(&self) -> String {
        self.render("")
    }

    fn render(&self, namespace: &str) -> String {
        let f = self.frame();
        let (w, h) = (self.width, self.height);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg{namespace} width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
        );
        let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        if let Some(title) = self.title {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
                w / 2.0,
                escape(title)
            );
        }
        self.axes(&f, &mut s);
        for layer in &self.layers {
            draw(layer, &f, &mut s);
        }
        self.references(&f, &mut s);
        self.draw_legend(&f, &mut s);
        s.push_str("</svg>");
        s
    }

    /// Grid lines, tick labels, the frame and the axis labels.
    fn axes(&self, f: &Frame, s: &mut String) {
        for (v, label) in ticks(f.x.0, f.x.1) {
            let x = f.px(v);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#444">{label}</text>"##,
                f.top,
                f.bottom,
                f.bottom + 15.0
            );
        }
        let y_ticks = if f.log_y {
            log_ticks(f.y.0, f.y.1)
        } else {
            ticks(f.y.0, f.y.1)
        };
        for (v, label) in y_ticks {
            let y = f.bottom - (v - f.y.0) / (f.y.1 - f.y.0) * (f.bottom - f.top);
            let _ = write!(
                s,
                r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{y:.1}" dy="4" text-anchor="end" fill="#444">{label}</text>"##,
                f.left,
                f.right,
                f.left - 5.0
            );
        }
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#888"/>"##,
            f.left,
            f.top,
            f.right - f.left,
            f.bottom - f.top
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (f.left + f.right) / 2.0,
            self.height - 6.0,
            escape(self.x_label)
        );
        let mid = (f.top + f.bottom) / 2.0;
        let _ = write!(
            s,
            r#"<text x="14" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 14 {mid:.1})">{}</text>"#,
            escape(self.y_label)
        );
    }

    /// The dashed reference lines.
    fn references(&self, f: &Frame, s: &mut String) {
        for &v in self.hlines.iter().filter(|v| v.is_finite()) {
            let _ = write!(
                s,
                r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="4 3"/>"##,
                f.left,
                f.right,
                y = f.py(v)
            );
        }
        for &v in self.vlines.iter().filter(|v| v.is_finite()) {
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="4 3"/>"##,
                f.top,
                f.bottom,
                x = f.px(v)
            );
        }
    }

    /// One row of entries above the plotting area, left to right.
    fn draw_legend(&self, f: &Frame, s: &mut String) {
        let mut x = f.left;
        let y = f.top - 8.0;
        for (label, color) in self.legend() {
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                x + 16.0,
                x + 20.0,
                y + 4.0,
                escape(label)
            );
            x += 30.0 + 6.5 * label.chars().count() as f64;
        }
    }
}

/// Draws one layer.
fn draw(layer: &Layer, f: &Frame, s: &mut String) {
    match layer {
        Layer::Line { x, y, color, .. } => {
            let points = points(x, y, f);
            if points.len() > 1 {
                let joined: Vec<String> = points
                    .iter()
                    .map(|(a, b)| format!("{a:.1},{b:.1}"))
                    .collect();
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    joined.join(" ")
                );
            }
            if points.len() <= FEW {
                dots(&points, color, s);
            }
        }
        Layer::Dots { x, y, color, .. } => dots(&points(x, y, f), color, s),
        Layer::Bars {
            range,
            heights,
            color,
        } => bars(*range, heights, color, f, s),
        Layer::Heat {
            x_range,
            y_range,
            cells,
        } => heat(*x_range, *y_range, cells, f, s),
    }
}

/// The pixel positions of the drawable points.
fn points(x: &[f64], y: &[f64], f: &Frame) -> Vec<(f64, f64)> {
    x.iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(&a, &b)| (f.px(a), f.py(b)))
        .collect()
}

fn dots(points: &[(f64, f64)], color: &str, s: &mut String) {
    for (a, b) in points {
        let _ = write!(
            s,
            r#"<circle cx="{a:.1}" cy="{b:.1}" r="2.5" fill="{color}"/>"#
        );
    }
}

fn bars(range: (f64, f64), heights: &[f64], color: &str, f: &Frame, s: &mut String) {
    let width = (range.1 - range.0) / heights.len().max(1) as f64;
    let base = if f.log_y { f.bottom } else { f.py(0.0) };
    for (i, &h) in heights.iter().enumerate() {
        if !h.is_finite() || h <= 0.0 {
            continue;
        }
        let (x0, x1) = (
            f.px(range.0 + i as f64 * width),
            f.px(range.0 + (i + 1) as f64 * width),
        );
        let top = f.py(h);
        let _ = write!(
            s,
            r#"<rect class="bar" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
            top.min(base),
            (x1 - x0).max(0.5),
            (base - top).abs().max(0.5)
        );
    }
}

fn heat(x_range: (f64, f64), y_range: (f64, f64), cells: &[Vec<f64>], f: &Frame, s: &mut String) {
    let peak = cells
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    if peak <= 0.0 {
        return;
    }
    let dx = (x_range.1 - x_range.0) / cells.len() as f64;
    for (i, column) in cells.iter().enumerate() {
        let dy = (y_range.1 - y_range.0) / column.len().max(1) as f64;
        let (x0, x1) = (
            f.px(x_range.0 + i as f64 * dx),
            f.px(x_range.0 + (i + 1) as f64 * dx),
        );
        for (j, &v) in column.iter().enumerate() {
            if !v.is_finite() || v <= 0.0 {
                continue;
            }
            let (y0, y1) = (
                f.py(y_range.0 + j as f64 * dy),
                f.py(y_range.0 + (j + 1) as f64 * dy),
            );
            let _ = write!(
                s,
                r#"<rect class="cell" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                y1.min(y0),
                x1 - x0 + SEAM,
                (y0 - y1).abs() + SEAM,
                heat_color(v.ln_1p() / peak.ln_1p())
            );
        }
    }
}

/// The colour of `t` in [0, 1] on the heat scale.
fn heat_color(t: f64) -> String {
    let at = t.clamp(0.0, 1.0) * (HEAT.len() - 1) as f64;
    let i = (at.floor() as usize).min(HEAT.len() - 2);
    let u = at - i as f64;
    let (a, b) = (HEAT[i], HEAT[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * u).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
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

/// A range with a little room around the data, never empty.
fn widen((lo, hi): (f64, f64)) -> (f64, f64) {
    if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    } else {
        let pad = (hi - lo) * 0.03;
        (lo - pad, hi + pad)
    }
}

/// Round tick positions (1, 2 or 5 times a power of ten apart, about five of
/// them) inside `[lo, hi]`, with labels of as many decimals as the spacing needs.
fn ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let raw = (hi - lo) / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|i| {
            let v = i as f64 * step;
            (v, label(v, step, decimals))
        })
        .collect()
}

/// A tick label: plain decimals for moderate numbers, else scientific.
fn label(v: f64, step: f64, decimals: usize) -> String {
    if v == 0.0 || v.abs() < step * 1e-6 {
        "0".into()
    } else if v.abs() >= 1e5 || step < 1e-3 {
        format!("{v:.1e}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// Ticks of a log axis whose coordinates are log10 values: at whole decades
/// when the axis spans two or more, else at round values between its ends.
fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    if hi - lo >= 2.0 {
        let step = ((hi - lo) / 5.0).ceil().max(1.0);
        let first = (lo / step).ceil() as i64;
        let last = (hi / step).floor() as i64;
        return (first..=last)
            .map(|i| {
                let e = i as f64 * step;
                (e, format!("1e{e}"))
            })
            .collect();
    }
    ticks(10f64.powf(lo), 10f64.powf(hi))
        .into_iter()
        .filter(|(v, _)| *v > 0.0)
        .map(|(v, l)| (v.log10(), l))
        .collect()
}

/// Text escaped for SVG and HTML, in content and in quoted attributes.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let t: Vec<String> = ticks(0.03, 0.97).into_iter().map(|(_, l)| l).collect();
        assert_eq!(t, ["0.2", "0.4", "0.6", "0.8"]);
        let t: Vec<String> = ticks(-3.0, 12.0).into_iter().map(|(_, l)| l).collect();
        assert_eq!(t, ["0", "5", "10"]);
        let t: Vec<String> = log_ticks(-4.2, 0.1).into_iter().map(|(_, l)| l).collect();
        assert_eq!(t, ["1e-4", "1e-3", "1e-2", "1e-1", "1e0"]);
    }

    #[test]
    fn non_finite_points_are_skipped() {
        let mut chart = Chart::new(300.0, 200.0, "x", "y");
        chart.log_y = true;
        chart.layers.push(Layer::Line {
            x: &[0.0, 1.0, 2.0, 3.0],
            y: &[1.0, f64::NAN, f64::INFINITY, 100.0],
            color: "red",
            label: None,
        });
        chart.layers.push(Layer::Bars {
            range: (0.0, 3.0),
            heights: &[1.0, f64::NAN, 4.0],
            color: "blue",
        });
        let svg = chart.to_svg();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches(r#"class="bar""#).count(), 2);
    }

    #[test]
    fn heat_colours_run_from_dark_to_bright() {
        assert_eq!(heat_color(0.0), "#440154");
        assert_eq!(heat_color(1.0), "#fde725");
    }
}
