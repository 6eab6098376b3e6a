//! Histograms of per-sample gradient elements (Cockpit's `GradHist1d` and
//! `GradHist2d`), binned as the per-sample gradients come out of the step.
//!
//! The values binned are the per-sample gradients `B c_n` (for a mean loss,
//! the gradients of the single terms); values outside the range are clamped
//! into its outer bins, as Cockpit does.

use serde_json::{json, Value};

/// Counts of per-sample gradient elements in equal bins over a range.
///
/// ```
/// use secondo::monitor::histogram::Histogram1d;
/// let mut h = Histogram1d::new((-2.0, 2.0), 4);
/// h.add(&[-3.0, -0.5, 0.5, 1.99, 2.0], 1.0);
/// assert_eq!(h.counts(), &[1, 1, 1, 2]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram1d {
    range: (f64, f64),
    counts: Vec<u64>,
}

impl Histogram1d {
    /// Empty, with `bins` bins over `range`.
    pub fn new(range: (f64, f64), bins: usize) -> Self {
        Histogram1d {
            range,
            counts: vec![0; bins],
        }
    }

    /// Cockpit's defaults: 100 bins over [−2, 2].
    pub fn cockpit() -> Self {
        Self::new((-2.0, 2.0), 100)
    }

    /// Bins `scale · v` for every `v` of `values` (`torch.histc` of the
    /// clamped values: `⌊(v − lo)·bins / (hi − lo)⌋`, the top edge in the last bin).
    pub fn add(&mut self, values: &[f64], scale: f64) {
        let (lo, hi) = self.range;
        let bins = self.counts.len();
        for &v in values {
            let v = (scale * v).clamp(lo, hi);
            let bin = ((v - lo) * bins as f64 / (hi - lo)) as usize;
            self.counts[bin.min(bins - 1)] += 1;
        }
    }

    /// The counts, lowest bin first.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The record of `instruments.jsonl`.
    pub fn to_json(&self) -> Value {
        json!({"range": [self.range.0, self.range.1], "counts": self.counts})
    }
}

/// Counts of (per-sample gradient element, parameter value) pairs on a grid.
///
/// ```
/// use secondo::monitor::histogram::Histogram2d;
/// let mut h = Histogram2d::new(((-1.0, 1.0), 2), ((-2.0, 2.0), 2));
/// // Two samples of a two-element parameter θ = (−1, 1).
/// h.add(&[0.5, -0.5, -0.5, 5.0], &[-1.0, 1.0], 1.0);
/// assert_eq!(h.counts(), &[vec![1, 1], vec![1, 1]]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram2d {
    x: ((f64, f64), usize),
    y: ((f64, f64), usize),
    counts: Vec<u64>,
}

impl Histogram2d {
    /// Empty, with `x` (gradients) and `y` (parameters) as (range, bins).
    pub fn new(x: ((f64, f64), usize), y: ((f64, f64), usize)) -> Self {
        Histogram2d {
            x,
            y,
            counts: vec![0; x.1 * y.1],
        }
    }

    /// Cockpit's defaults: 40 gradient bins over [−1, 1], 50 parameter bins over [−2, 2].
    pub fn cockpit() -> Self {
        Self::new(((-1.0, 1.0), 40), ((-2.0, 2.0), 50))
    }

    /// Bins the per-sample gradients `grads` (`N × P`, row-major, times
    /// `scale`) against the parameter values `params` (`P`). Values are
    /// clamped half a bin inside the range, as Cockpit does.
    pub fn add(&mut self, grads: &[f64], params: &[f64], scale: f64) {
        let y_bins: Vec<usize> = params.iter().map(|&p| bin_index(self.y, p)).collect();
        let stride = self.y.1;
        for sample in grads.chunks_exact(params.len().max(1)) {
            for (&g, &yb) in sample.iter().zip(&y_bins) {
                self.counts[bin_index(self.x, scale * g) * stride + yb] += 1;
            }
        }
    }

    /// The counts, one row per gradient bin.
    pub fn counts(&self) -> Vec<Vec<u64>> {
        self.counts.chunks(self.y.1).map(<[u64]>::to_vec).collect()
    }

    /// The record of `instruments.jsonl`.
    pub fn to_json(&self) -> Value {
        let ((xl, xh), _) = self.x;
        let ((yl, yh), _) = self.y;
        json!({"x_range": [xl, xh], "y_range": [yl, yh], "counts": self.counts()})
    }
}

/// Cockpit's `histogram2d` bin of `v`: clamped to half a bin inside the
/// range, then `⌊(v − lo) / width⌋`.
fn bin_index(((lo, hi), bins): ((f64, f64), usize), v: f64) -> usize {
    let width = (hi - lo) / bins as f64;
    let v = v.clamp(lo + width / 2.0, hi - width / 2.0);
    (((v - lo) / width) as usize).min(bins - 1)
}
