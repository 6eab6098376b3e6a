//! The dashboard's panels, grouped like Cockpit's (step size, gradients,
//! curvature, then hyperparameters and performance), plus the curvature
//! structure measurements Cockpit does not have.
//!
//! Most panels are lines over the tracked steps and are written as data
//! ([`ChartSpec`]); histograms, eigenvalues at checkpoints and the spectral
//! density have a drawing function each. A panel is drawn only when its
//! instruments have a defined value somewhere in the run.

use std::fmt::Write;

use super::data::{number, numbers, range, Points, Reading, Run};
use crate::plot::{escape, Chart, Layer};

/// Colours of the series in one chart (matplotlib's, as in Cockpit).
const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// The view box of a panel's chart; charts of a panel with several share its height.
const WIDTH: f64 = 440.0;
const HEIGHT: f64 = 250.0;
const SHORT: f64 = 170.0;

/// At most this many 1-D histograms make the histogram-over-time strip.
const STRIP: usize = 40;

/// One series of a chart over steps: the instrument, how to read it, its legend.
struct Trace {
    key: &'static str,
    get: Reading,
    label: &'static str,
}

/// A chart of one or more instruments over the tracked steps.
struct ChartSpec {
    y_label: &'static str,
    traces: &'static [Trace],
    log_y: bool,
    /// The y axis reaches 0 (norms, losses, rates).
    zero: bool,
    /// Dots instead of a line (a scatter of noisy per-step values).
    scatter: bool,
    /// A dashed reference line (the zero line, a test's threshold).
    reference: Option<f64>,
    /// Values outside are drawn at the nearer bound (a few huge values
    /// would flatten everything else).
    clip: Option<(f64, f64)>,
}

/// A linear chart of lines from 0.
const fn lines(y_label: &'static str, traces: &'static [Trace]) -> ChartSpec {
    ChartSpec {
        y_label,
        traces,
        log_y: false,
        zero: true,
        scatter: false,
        reference: None,
        clip: None,
    }
}

const fn trace(key: &'static str, get: Reading, label: &'static str) -> Trace {
    Trace { key, get, label }
}

/// What a panel draws.
enum Body {
    /// Charts over the steps.
    Charts(&'static [ChartSpec]),
    /// Its own drawing: the panel's HTML body, or `None` without data.
    Custom(fn(&Run) -> Option<String>),
}

/// A panel: title, one sentence on what it shows and how to read it, the
/// instruments it draws, and how.
struct Panel {
    title: &'static str,
    how: &'static str,
    instruments: &'static [&'static str],
    body: Body,
}

/// The groups of panels, in the order they appear.
const GROUPS: &[(&str, &str, &[Panel])] = &[
    ("Step size", "step", STEP),
    ("Gradients", "gradients", GRADIENTS),
    ("Curvature", "curvature", CURVATURE),
    ("Hyperparameters and performance", "training", TRAINING),
    ("Curvature structure", "structure", STRUCTURE),
];

const STEP: &[Panel] = &[
    Panel {
        title: "Step size α",
        how: "Each step's α on a noisy 1-D quadratic fit of the loss along the step (−1: the step stays where it started, +1: it reaches the same height on the far side), over the steps and as a distribution: α < 0 stays on the near side of the local minimum, α ≈ 0 lands at the minimum, α > 0 overshoots — Cockpit's rule of thumb is a slight overshoot (values beyond ±3 are drawn at ±3).",
        instruments: &["alpha"],
        body: Body::Custom(alpha),
    },
    Panel {
        title: "Distance",
        how: "How far the parameters moved from their initialization ‖θ − θ₀‖ and the size of each update ‖θₜ₊₁ − θₜ‖, both summed over parameters (the root of the sum of squares; log scale): a growing distance with shrinking updates is the usual picture, updates that stay large late in training mean the learning rate is too high to settle.",
        instruments: &["distance", "update_size"],
        body: Body::Charts(&[ChartSpec {
            log_y: true,
            ..lines(
                "norm",
                &[
                    trace("distance", Reading::Norm, "distance from init"),
                    trace("update_size", Reading::Norm, "update size"),
                ],
            )
        }]),
    },
    Panel {
        title: "Gradient norm",
        how: "‖g‖ of each mini-batch gradient over all parameters: it falls as training converges; spikes flag unstable steps, a norm near zero from the start flags vanishing gradients.",
        instruments: &["grad_norm"],
        body: Body::Charts(&[lines("‖g‖", &[trace("grad_norm", Reading::Norm, "‖g‖")])]),
    },
];

const GRADIENTS: &[Panel] = &[
    Panel {
        title: "Gradient tests",
        how: "The norm, inner-product and orthogonality tests (Byrd et al., Bollapragada et al.) compare the spread of the per-sample gradients with the mean gradient, scaled so that 1 is the threshold (dashed; log scale): below 1 the batch is large enough to trust the gradient's direction, above 1 it calls for a larger batch.",
        instruments: &["norm_test", "inner_test", "ortho_test"],
        body: Body::Charts(&[ChartSpec {
            log_y: true,
            reference: Some(1.0),
            ..lines(
                "test value",
                &[
                    trace("norm_test", Reading::Number, "norm"),
                    trace("inner_test", Reading::Number, "inner product"),
                    trace("ortho_test", Reading::Number, "orthogonality"),
                ],
            )
        }]),
    },
    Panel {
        title: "Gradient element histogram",
        how: "How the elements of the per-sample gradients are distributed at the latest tracked step, and below, the same distribution over time (each column one step, brighter = more elements): a narrow peak at 0 means small, consistent gradients, heavy tails mean a few samples dominate the step.",
        instruments: &["grad_hist_1d"],
        body: Body::Custom(histogram_1d),
    },
    Panel {
        title: "Gradient vs parameter histogram",
        how: "Per-sample gradient elements against the values of the parameters they belong to at the latest step, as a heat map (brighter = more elements, log scale): structure along the parameter axis shows which weights (large ones, ones near 0) receive the gradient.",
        instruments: &["grad_hist_2d"],
        body: Body::Custom(histogram_2d),
    },
    Panel {
        title: "Gradient signal-to-noise",
        how: "The mean over parameters of E[g]² / Var[g] of the per-sample gradients (Liu et al.'s GSNR): high values mean the samples agree on the direction, values falling towards 0 mean the gradient is mostly noise.",
        instruments: &["mean_gsnr"],
        body: Body::Charts(&[lines("mean GSNR", &[trace("mean_gsnr", Reading::Number, "GSNR")])]),
    },
    Panel {
        title: "CABS batch size",
        how: "The batch size that the coupled adaptive batch size rule (Balles et al.) proposes from the gradient variance, the loss and the learning rate: above the batch in use, the gradients are noisier than the learning rate tolerates.",
        instruments: &["cabs"],
        body: Body::Charts(&[lines("batch size", &[trace("cabs", Reading::Number, "CABS")])]),
    },
    Panel {
        title: "Early stopping",
        how: "Mahsereci et al.'s evidence-based criterion from the per-sample gradient variance: it rises above 0 (dashed) once the gradient can no longer be told apart from noise, where it suggests stopping without a validation set.",
        instruments: &["early_stopping"],
        body: Body::Charts(&[ChartSpec {
            zero: false,
            reference: Some(0.0),
            ..lines("criterion", &[trace("early_stopping", Reading::Number, "criterion")])
        }]),
    },
];

const CURVATURE: &[Panel] = &[
    Panel {
        title: "Largest Hessian eigenvalue",
        how: "λₘₐₓ of the mini-batch Hessian, the curvature of the sharpest direction: gradient descent is stable only for learning rates below 2/λₘₐₓ, so λₘₐₓ climbing to 2/lr marks the edge of stability.",
        instruments: &["hess_max_ev"],
        body: Body::Charts(&[lines("λₘₐₓ", &[trace("hess_max_ev", Reading::Number, "λₘₐₓ")])]),
    },
    Panel {
        title: "Hessian trace",
        how: "tr(H) of the mini-batch Hessian, summed over the parameters' blocks: the total curvature, an average sharpness; falling values mean training moved into a flatter region.",
        instruments: &["hess_trace"],
        body: Body::Charts(&[ChartSpec {
            zero: false,
            ..lines("tr(H)", &[trace("hess_trace", Reading::Sum, "tr(H)")])
        }]),
    },
    Panel {
        title: "Takeuchi information criterion",
        how: "TIC ≈ tr(C H⁻¹) with the gradient covariance C and the Hessian H in diagonal or trace approximation (Thomas et al.), an estimate of the generalization gap: lower is better, a TIC rising while the training loss falls flags overfitting.",
        instruments: &["tic_diag", "tic_trace"],
        body: Body::Charts(&[lines(
            "TIC",
            &[
                trace("tic_diag", Reading::Number, "diagonal"),
                trace("tic_trace", Reading::Number, "trace"),
            ],
        )]),
    },
];

const TRAINING: &[Panel] = &[
    Panel {
        title: "Hyperparameters",
        how: "The learning rate of each step (a schedule shows as steps or a decay) and the batch size, to line up with the changes they cause in the other panels.",
        instruments: &["lr", "batch_size"],
        body: Body::Charts(&[
            lines("learning rate", &[trace("lr", Reading::Number, "lr")]),
            lines("batch size", &[trace("batch_size", Reading::Number, "batch")]),
        ]),
    },
    Panel {
        title: "Loss",
        how: "The mini-batch training loss of each tracked step: it should fall; the scatter around the trend is the batch's noise, a sustained rise flags a learning rate too high.",
        instruments: &["loss"],
        body: Body::Charts(&[lines("loss", &[trace("loss", Reading::Number, "loss")])]),
    },
];

const STRUCTURE: &[Panel] = &[
    Panel {
        title: "Top eigenvalues",
        how: "The largest eigenvalues of the Hessian and the GGN at each checkpoint (above) and how many of them stand out of the bulk (below): about C outliers for C classes (dashed) is the class structure of the logits dominating the curvature (Papyan).",
        instruments: &["hess_top_ev", "ggn_top_ev"],
        body: Body::Custom(top_eigenvalues),
    },
    Panel {
        title: "Class means",
        how: "The eigenvalues of the GGN's class-means part at the latest checkpoint (above) and how much its top space overlaps the GGN's top eigenvectors over time (below): an overlap near 1 means the outliers are the class means' directions.",
        instruments: &["ggn_class_means"],
        body: Body::Custom(class_means),
    },
    Panel {
        title: "Gradient in the top space",
        how: "‖Pₖg‖² / ‖g‖², the fraction of the gradient inside the span of the top-k Hessian eigenvectors: Gur-Ari et al. observed that it soon nears 1, training happening in a tiny subspace.",
        instruments: &["grad_top_space"],
        body: Body::Charts(&[lines(
            "fraction",
            &[trace("grad_top_space", Reading::Field("fraction"), "fraction")],
        )]),
    },
    Panel {
        title: "Top-space rotation",
        how: "The principal angles (radians) between the top-k eigenspace at each checkpoint and at the one before: near 0 the top space has settled, near π/2 (dashed) it keeps turning.",
        instruments: &["top_space_rotation"],
        body: Body::Custom(rotation),
    },
    Panel {
        title: "Empirical Fisher vs GGN",
        how: "How far the empirical Fisher is from the GGN (Frobenius distance, above), how much their top spaces overlap and the angle between the steps they precondition (below): Kunstner et al. show the two can differ widely, and large values mean an EF-based method does not follow the natural gradient.",
        instruments: &["ef_ggn"],
        body: Body::Charts(&[
            lines(
                "‖EF − GGN‖",
                &[trace("ef_ggn", Reading::Field("frobenius"), "Frobenius distance")],
            ),
            lines(
                "overlap, angle",
                &[
                    trace("ef_ggn", Reading::Field("overlap"), "top-space overlap"),
                    trace("ef_ggn", Reading::Field("step_angle"), "step angle (rad)"),
                ],
            ),
        ]),
    },
    Panel {
        title: "Hessian spectral density",
        how: "The density of the Hessian's eigenvalues by stochastic Lanczos quadrature at the latest checkpoint (log scale): a bulk near 0 with a few outliers to the right is the usual picture, mass left of 0 is negative curvature.",
        instruments: &["hess_density"],
        body: Body::Custom(density),
    },
];

/// The HTML of every group that has a drawn panel, and the titles of the
/// panels whose instruments this run did not track.
pub fn render(run: &Run) -> (String, Vec<&'static str>) {
    let mut html = String::new();
    let mut missing = Vec::new();
    for (title, class, panels) in GROUPS {
        let drawn: Vec<String> = panels
            .iter()
            .filter_map(|p| {
                let panel = draw_panel(p, run);
                if panel.is_none() {
                    missing.push(p.title);
                }
                panel
            })
            .collect();
        if !drawn.is_empty() {
            let _ = write!(
                html,
                "<section class=\"group {class}\">\n<h2>{title}</h2>\n<div class=\"grid\">\n{}</div>\n</section>\n",
                drawn.concat()
            );
        }
    }
    (html, missing)
}

/// A panel's container, or `None` when it has nothing to draw.
fn draw_panel(panel: &Panel, run: &Run) -> Option<String> {
    let body = match panel.body {
        Body::Charts(specs) => charts(specs, run)?,
        Body::Custom(draw) => draw(run)?,
    };
    let tracked: Vec<&str> = panel
        .instruments
        .iter()
        .copied()
        .filter(|k| run.has(k))
        .collect();
    Some(format!(
        "<div class=\"panel\" data-instrument=\"{}\">\n<h3>{}</h3>\n<p class=\"how\">{}</p>\n{body}</div>\n",
        tracked.join(" "),
        escape(panel.title),
        escape(panel.how)
    ))
}

/// The charts of `specs` that have data, one per line; `None` if none has.
fn charts(specs: &[ChartSpec], run: &Run) -> Option<String> {
    let height = if specs.len() > 1 { SHORT } else { HEIGHT };
    let drawn: Vec<String> = specs
        .iter()
        .filter_map(|spec| over_steps(spec, run, height, &[]))
        .collect();
    (!drawn.is_empty()).then(|| drawn.join("\n") + "\n")
}

/// One chart of `spec`'s traces over the steps, with extra reference lines;
/// `None` when no trace has a defined value.
fn over_steps(spec: &ChartSpec, run: &Run, height: f64, references: &[f64]) -> Option<String> {
    let clip = |(x, y): Points| match spec.clip {
        Some((lo, hi)) => (x, y.into_iter().map(|v| v.clamp(lo, hi)).collect()),
        None => (x, y),
    };
    let series: Vec<(&Trace, Points)> = spec
        .traces
        .iter()
        .map(|t| (t, clip(run.series(t.key, t.get))))
        .filter(|(_, (x, _))| !x.is_empty())
        .collect();
    if series.is_empty() {
        return None;
    }
    let mut chart = Chart::new(WIDTH, height, "step", spec.y_label);
    chart.log_y = spec.log_y;
    chart.y_from_zero = spec.zero;
    chart.hlines = spec.reference.iter().chain(references).copied().collect();
    let legend = spec.traces.len() > 1;
    for (i, (t, (x, y))) in series.iter().enumerate() {
        let (color, label) = (COLORS[i % COLORS.len()], legend.then_some(t.label));
        chart.layers.push(if spec.scatter {
            Layer::Dots { x, y, color, label }
        } else {
            Layer::Line { x, y, color, label }
        });
    }
    Some(chart.to_inline_svg())
}

/// α is drawn within [−3, 3]: beyond, the fit says little more than "far
/// off", and a few such steps would flatten the rest.
const ALPHA_RANGE: (f64, f64) = (-3.0, 3.0);

const ALPHA: ChartSpec = ChartSpec {
    zero: false,
    scatter: true,
    reference: Some(0.0),
    clip: Some(ALPHA_RANGE),
    ..lines("α", &[trace("alpha", Reading::Number, "α")])
};

/// Bins of the α distribution.
const ALPHA_BINS: usize = 20;

/// α over the steps and, as Cockpit's gauge draws it, its distribution
/// over at least [−1, 1] (dashed: the fit's minimum).
fn alpha(run: &Run) -> Option<String> {
    let over_time = over_steps(&ALPHA, run, SHORT, &[])?;
    let (_, values) = run.series("alpha", Reading::Number);
    let values: Vec<f64> = values
        .iter()
        .map(|v| v.clamp(ALPHA_RANGE.0, ALPHA_RANGE.1))
        .collect();
    let (lo, hi) = values
        .iter()
        .fold((-1.0f64, 1.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let mut counts = vec![0.0; ALPHA_BINS];
    for v in &values {
        let bin = ((v - lo) / (hi - lo) * ALPHA_BINS as f64) as usize;
        counts[bin.min(ALPHA_BINS - 1)] += 1.0;
    }
    let mut chart = Chart::new(WIDTH, SHORT, "α", "steps");
    chart.vlines = vec![0.0];
    chart.layers.push(Layer::Bars {
        range: (lo, hi),
        heights: &counts,
        color: COLORS[0],
    });
    Some(format!("{over_time}\n{}\n", chart.to_inline_svg()))
}

/// A 1-D histogram at one step.
struct Histogram {
    step: f64,
    range: (f64, f64),
    /// The counts as the one column of a heat map.
    counts: [Vec<f64>; 1],
}

/// Every step's 1-D histogram whose range and counts are both defined.
fn histograms(run: &Run) -> Vec<Histogram> {
    run.values("grad_hist_1d")
        .filter_map(|(step, v)| {
            let counts = numbers(v.get("counts")?).filter(|c| !c.is_empty())?;
            Some(Histogram {
                step,
                range: range(v.get("range"))?,
                counts: [counts],
            })
        })
        .collect()
}

/// The latest 1-D histogram as bars, linear or log (a CSS-only switch), and
/// the histograms over time as a strip of heat-map columns.
fn histogram_1d(run: &Run) -> Option<String> {
    let all = histograms(run);
    let latest = all.last()?;
    let bars = |log_y: bool| {
        let mut chart = Chart::new(WIDTH, HEIGHT, "gradient element", "count");
        chart.log_y = log_y;
        chart.layers.push(Layer::Bars {
            range: latest.range,
            heights: &latest.counts[0],
            color: COLORS[0],
        });
        chart.to_inline_svg()
    };
    Some(format!(
        "<input type=\"checkbox\" id=\"hist-log\" class=\"logswitch\"><label for=\"hist-log\"> log scale</label> <span class=\"note\">step {}</span>\n<div class=\"lin\">{}</div>\n<div class=\"log\">{}</div>\n{}\n",
        latest.step,
        bars(false),
        bars(true),
        histogram_strip(&all)
    ))
}

/// Up to [`STRIP`] evenly spaced 1-D histograms as columns of a heat map
/// over the steps, each column scaled to its own largest count (the shape
/// of the distribution, not its size, is what changes).
fn histogram_strip(all: &[Histogram]) -> String {
    let every = all.len().div_ceil(STRIP).max(1);
    let picked: Vec<&Histogram> = all.iter().step_by(every).collect();
    let mut chart = Chart::new(WIDTH, SHORT, "step", "gradient element");
    for (i, h) in picked.iter().enumerate() {
        let next = picked.get(i + 1).map_or(h.step + every as f64, |n| n.step);
        chart.layers.push(Layer::Heat {
            x_range: (h.step, next),
            y_range: h.range,
            cells: &h.counts,
        });
    }
    chart.to_inline_svg()
}

/// The latest 2-D histogram as a heat map.
fn histogram_2d(run: &Run) -> Option<String> {
    let (step, (x_range, y_range, cells)) = run
        .values("grad_hist_2d")
        .filter_map(|(s, v)| {
            let cells: Option<Vec<Vec<f64>>> =
                v.get("counts")?.as_array()?.iter().map(numbers).collect();
            let cells = cells.filter(|c| c.iter().any(|row| !row.is_empty()))?;
            Some((
                s,
                (range(v.get("x_range"))?, range(v.get("y_range"))?, cells),
            ))
        })
        .last()?;
    let mut chart = Chart::new(WIDTH, HEIGHT, "gradient element", "parameter element");
    chart.layers.push(Layer::Heat {
        x_range,
        y_range,
        cells: &cells,
    });
    Some(format!(
        "{}\n<p class=\"note\">step {step}</p>\n",
        chart.to_inline_svg()
    ))
}

/// Every (step, element) of the arrays in field `field` of `key`'s values.
fn flattened(run: &Run, key: &'static str, field: &str) -> Points {
    run.values(key)
        .filter_map(|(s, v)| numbers(v.get(field)?).map(|e| (s, e)))
        .flat_map(|(s, e)| e.into_iter().map(move |y| (s, y)))
        .unzip()
}

/// A scatter of `series` (legend, steps and values) over the steps.
fn scatter(y_label: &str, series: &[(&str, &Points)], references: &[f64]) -> Option<String> {
    let present: Vec<_> = series.iter().filter(|(_, (x, _))| !x.is_empty()).collect();
    if present.is_empty() {
        return None;
    }
    let mut chart = Chart::new(WIDTH, SHORT, "step", y_label);
    chart.hlines = references.to_vec();
    for (i, (label, (x, y))) in present.iter().enumerate() {
        chart.layers.push(Layer::Dots {
            x,
            y,
            color: COLORS[i % COLORS.len()],
            label: (series.len() > 1).then_some(*label),
        });
    }
    Some(chart.to_inline_svg())
}

const OUTLIERS: ChartSpec = lines(
    "outliers",
    &[
        trace("hess_top_ev", Reading::Field("outliers"), "Hessian"),
        trace("ggn_top_ev", Reading::Field("outliers"), "GGN"),
    ],
);

/// The top eigenvalues at each checkpoint, and their outliers against the
/// number of classes.
fn top_eigenvalues(run: &Run) -> Option<String> {
    let hessian = flattened(run, "hess_top_ev", "eigenvalues");
    let ggn = flattened(run, "ggn_top_ev", "eigenvalues");
    let values = scatter("eigenvalue", &[("Hessian", &hessian), ("GGN", &ggn)], &[])?;
    let classes = ["hess_top_ev", "ggn_top_ev"]
        .iter()
        .find_map(|k| run.latest(k)?.1.get("classes").and_then(number));
    let outliers = over_steps(&OUTLIERS, run, SHORT, classes.as_slice()).unwrap_or_default();
    let note = classes
        .map(|c| format!("<p class=\"note\">C = {c} classes</p>\n"))
        .unwrap_or_default();
    Some(format!("{values}\n{outliers}\n{note}"))
}

const OVERLAP: ChartSpec = lines(
    "top overlap",
    &[trace(
        "ggn_class_means",
        Reading::Field("top_overlap"),
        "overlap",
    )],
);

/// The class means' eigenvalues at the latest checkpoint and their overlap
/// over time.
fn class_means(run: &Run) -> Option<String> {
    let latest = run
        .values("ggn_class_means")
        .filter_map(|(s, v)| numbers(v.get("eigenvalues")?).map(|e| (s, e)))
        .filter(|(_, e)| !e.is_empty())
        .last();
    let eigenvalues = latest.map(|(step, e)| {
        let index: Vec<f64> = (1..=e.len()).map(|i| i as f64).collect();
        let mut chart = Chart::new(WIDTH, SHORT, "index (descending)", "eigenvalue");
        chart.layers.push(Layer::Dots {
            x: &index,
            y: &e,
            color: COLORS[0],
            label: None,
        });
        format!(
            "{}\n<p class=\"note\">step {step}</p>",
            chart.to_inline_svg()
        )
    });
    let overlap = over_steps(&OVERLAP, run, SHORT, &[]);
    match (eigenvalues, overlap) {
        (None, None) => None,
        (e, o) => Some(format!(
            "{}\n{}\n",
            e.unwrap_or_default(),
            o.unwrap_or_default()
        )),
    }
}

/// The principal angles at each checkpoint.
fn rotation(run: &Run) -> Option<String> {
    let angles = flattened(run, "top_space_rotation", "angles");
    let k = run
        .latest("top_space_rotation")
        .and_then(|(_, v)| v.get("k").and_then(number));
    let chart = scatter(
        "angle (rad)",
        &[("angles", &angles)],
        &[std::f64::consts::FRAC_PI_2],
    )?;
    let note = k
        .map(|k| format!("<p class=\"note\">k = {k}</p>\n"))
        .unwrap_or_default();
    Some(format!("{chart}\n{note}"))
}

/// The latest spectral density.
fn density(run: &Run) -> Option<String> {
    let (step, grid, values) = run
        .values("hess_density")
        .filter_map(|(s, v)| Some((s, numbers(v.get("grid")?)?, numbers(v.get("values")?)?)))
        .filter(|(_, g, v)| !g.is_empty() && g.len() == v.len())
        .last()?;
    let mut chart = Chart::new(WIDTH, HEIGHT, "eigenvalue", "density");
    chart.log_y = true;
    chart.layers.push(Layer::Line {
        x: &grid,
        y: &values,
        color: COLORS[0],
        label: None,
    });
    Some(format!(
        "{}\n<p class=\"note\">step {step}</p>\n",
        chart.to_inline_svg()
    ))
}
