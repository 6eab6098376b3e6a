//! Histograms of per-sample gradient elements (Cockpit's `GradHist1d` and
//! `GradHist2d`), binned as the per-sample gradients come out of the step.
//!
//! The values binned are the per-sample gradients `B c_n` (for a mean loss,
//! the gradients of the single terms); values outside the range are clamped
//! into its outer bins, as Cockpit does.

use rayon::prelude::*;
use secondo_tensor::{DType, Tensor};

use super::PerSample;
use serde_json::{json, Value};

/// Elements per parallel task (each keeps its own counts, summed at the end:
/// integer counts, so the same for any split).
const CHUNK: usize = 1 << 16;

/// Counts `bin(v)` for every value, in parallel; `bins` counters.
fn count<T: Copy + Into<f64> + Sync>(
    values: &[T],
    bins: usize,
    chunk: usize,
    bin: impl Fn(usize, f64) -> usize + Sync,
) -> Vec<u64> {
    values
        .par_chunks(chunk.max(1))
        .enumerate()
        .map(|(c, part)| {
            let mut counts = vec![0u64; bins];
            for (i, &v) in part.iter().enumerate() {
                counts[bin(c * chunk + i, v.into())] += 1;
            }
            counts
        })
        .reduce(
            || vec![0u64; bins],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

fn add_counts(total: &mut [u64], more: Vec<u64>) {
    total.iter_mut().zip(more).for_each(|(x, y)| *x += y);
}

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
    pub fn add<T: Copy + Into<f64> + Sync>(&mut self, values: &[T], scale: f64) {
        let (lo, hi) = self.range;
        let bins = self.counts.len();
        let counts = count(values, bins, CHUNK, |_, v| {
            let v = (scale * v).clamp(lo, hi);
            (((v - lo) * bins as f64 / (hi - lo)) as usize).min(bins - 1)
        });
        add_counts(&mut self.counts, counts);
    }

    /// [`Histogram1d::add`] of a tensor's values, in its own element type.
    pub fn add_tensor(&mut self, t: &Tensor, scale: f64) {
        match t.dtype() {
            DType::F32 => self.add(t.as_slice::<f32>().unwrap_or(&[]), scale),
            DType::F64 => self.add(t.as_slice::<f64>().unwrap_or(&[]), scale),
        }
    }

    /// Bins one parameter's per-sample gradients (times `scale`); a dense
    /// layer's weight from its factors, without forming the outer products.
    ///
    /// ```
    /// use secondo::monitor::{histogram::Histogram1d, PerSample};
    /// use secondo_tensor::{DType, Tensor};
    /// let a = Tensor::from_f64(vec![2, 3], &[0.1, -0.3, 0.0, 1.0, 0.5, -0.2], DType::F64).unwrap();
    /// let d = Tensor::from_f64(vec![2, 2], &[2.0, -1.0, 0.5, 3.0], DType::F64).unwrap();
    /// let mut factored = Histogram1d::new((-1.0, 1.0), 8);
    /// factored.add_per_sample(&PerSample::Outer { input: a.clone(), output_grad: d.clone() }, 1.0);
    /// let (a, d) = (a.to_f64_vec(), d.to_f64_vec());
    /// let outer: Vec<f64> = (0..2).flat_map(|n| (0..2).flat_map(move |o| (0..3).map(move |i| (n, o, i))))
    ///     .map(|(n, o, i)| d[n * 2 + o] * a[n * 3 + i]).collect();
    /// let mut direct = Histogram1d::new((-1.0, 1.0), 8);
    /// direct.add(&outer, 1.0);
    /// assert_eq!(factored.counts(), direct.counts());
    /// ```
    pub fn add_per_sample(&mut self, grads: &PerSample, scale: f64) {
        match grads {
            PerSample::Full(t) | PerSample::Rows(t) => self.add_tensor(t, scale),
            PerSample::Outer { input, output_grad } => {
                let bins = self.counts.len();
                let range = self.range;
                let counts =
                    per_sample_rows(input, output_grad, scale, bins, |counts, sorted, _, s| {
                        bin_row(range, counts, sorted, s)
                    });
                add_counts(&mut self.counts, counts);
            }
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
    pub fn add<T: Copy + Into<f64> + Sync>(&mut self, grads: &[T], params: &[f64], scale: f64) {
        let y_bins: Vec<usize> = params.iter().map(|&p| bin_index(self.y, p)).collect();
        let (stride, x) = (self.y.1, self.x);
        let p = params.len().max(1);
        // Whole samples per task, so that an element's parameter is its
        // index within the sample.
        let chunk = CHUNK.div_ceil(p) * p;
        let counts = count(grads, self.counts.len(), chunk, |i, g| {
            bin_index(x, scale * g) * stride + y_bins[i % p]
        });
        add_counts(&mut self.counts, counts);
    }

    /// [`Histogram2d::add`] of a tensor of per-sample gradients.
    pub fn add_tensor(&mut self, grads: &Tensor, params: &[f64], scale: f64) {
        match grads.dtype() {
            DType::F32 => self.add(grads.as_slice::<f32>().unwrap_or(&[]), params, scale),
            DType::F64 => self.add(grads.as_slice::<f64>().unwrap_or(&[]), params, scale),
        }
    }

    /// Bins one parameter's per-sample gradients (times `scale`) against its
    /// values `params`; a dense layer's weight from its factors, by runs of
    /// one gradient bin (where a sample's gradients along one output all fall
    /// in one, that output's row of parameter bins is added at once).
    pub fn add_per_sample(&mut self, grads: &PerSample, params: &[f64], scale: f64) {
        let PerSample::Outer { input, output_grad } = grads else {
            let (PerSample::Full(t) | PerSample::Rows(t)) = grads else {
                return;
            };
            return self.add_tensor(t, params, scale);
        };
        let (x, y) = (self.x, self.y);
        let width = input.shape()[1];
        let y_bins: Vec<usize> = params.iter().map(|&p| bin_index(y, p)).collect();
        let rows: Vec<Vec<u64>> = y_bins
            .chunks(width)
            .map(|row| {
                let mut h = vec![0u64; y.1];
                row.iter().for_each(|&j| h[j] += 1);
                h
            })
            .collect();
        // Rows of parameters in one bin (small weights all are): a run adds
        // its length to one count, instead of one count per element (which
        // increments the same counter in a chain).
        let one_bin: Vec<Option<usize>> = rows
            .iter()
            .map(|h| {
                let mut bins = h.iter().enumerate().filter(|(_, &c)| c > 0).map(|(j, _)| j);
                bins.next().filter(|_| bins.next().is_none())
            })
            .collect();
        let counts = per_sample_rows(
            input,
            output_grad,
            scale,
            self.counts.len(),
            |counts, sorted, o, s| {
                let x_width = (x.0 .1 - x.0 .0) / x.1 as f64;
                let bin = |v: f64| bin_index(x, v);
                let row = &y_bins[o * width..(o + 1) * width];
                for_each_run(sorted, s, (x.0 .0, x_width), bin, |b, run| {
                    let at = &mut counts[b * y.1..(b + 1) * y.1];
                    if let Some(j) = one_bin[o] {
                        at[j] += run.len() as u64;
                    } else if run.len() == width {
                        at.iter_mut().zip(&rows[o]).for_each(|(c, r)| *c += r);
                    } else {
                        sorted.index[run].iter().for_each(|&i| at[row[i]] += 1);
                    }
                });
            },
        );
        add_counts(&mut self.counts, counts);
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

/// Bins `s·a` for the ascending `a` of `sorted` (one row of a dense
/// layer's per-sample gradients) into `counts` over `range`, exactly as
/// [`Histogram1d::add`] would.
fn bin_row((lo, hi): (f64, f64), counts: &mut [u64], sorted: &SortedInputs, s: f64) {
    let bins = counts.len();
    let bin = |v: f64| {
        let v = v.clamp(lo, hi);
        (((v - lo) * bins as f64 / (hi - lo)) as usize).min(bins - 1)
    };
    let width = (hi - lo) / bins as f64;
    for_each_run(sorted, s, (lo, width), bin, |b, run| {
        counts[b] += run.len() as u64
    });
}

/// Calls `visit(b, run)` for the runs of positions of `sorted` whose `s·a`
/// fall in one bin `b` of `bin` (bins of `width` from `lo`, monotone in
/// `a`, so they do come in runs), in order: a row spanning few bins costs a
/// few probes per bin edge (its position guessed from `sorted`'s grid, then
/// confirmed by `bin` itself); a row spanning many is visited value by value.
fn for_each_run(
    sorted: &SortedInputs,
    s: f64,
    (lo, width): (f64, f64),
    bin: impl Fn(f64) -> usize,
    mut visit: impl FnMut(usize, std::ops::Range<usize>),
) {
    let a = &sorted.values;
    let (mut b, last) = (bin(s * a[0]), bin(s * a[a.len() - 1]));
    if b.abs_diff(last) * PROBES_PER_EDGE >= a.len() {
        a.iter()
            .enumerate()
            .for_each(|(i, &v)| visit(bin(s * v), i..i + 1));
        return;
    }
    let mut p = 0;
    while b != last {
        // `s·a` leaves bin `b` at this edge (upward for s > 0, downward otherwise).
        let edge = lo + width * (b + usize::from(s > 0.0)) as f64;
        let q = sorted.first_after(p, edge / s, |v| bin(s * v) == b);
        visit(b, p..q);
        p = q;
        b = bin(s * a[q]);
    }
    visit(last, p..a.len());
}

/// Below this many values per bin edge a row is binned value by value.
const PROBES_PER_EDGE: usize = 6;

/// A sample's layer inputs sorted ascending, with their indices, and a
/// uniform grid of as many cells over their range (`start[c]` the first
/// position in cell `c`), so that the position of any value is known to
/// within a cell without a search. One per parallel task, refilled for each
/// sample (the allocator has one arena, which the tasks would contend for).
#[derive(Default)]
struct SortedInputs {
    values: Vec<f64>,
    index: Vec<usize>,
    start: Vec<usize>,
    min: f64,
    cells_per_unit: f64,
    /// Scratch: the next free position per cell, and the sorted pairs.
    next: Vec<usize>,
    pairs: Vec<(f64, usize)>,
}

impl SortedInputs {
    #[cfg(test)]
    fn new(inputs: &[f64]) -> SortedInputs {
        let mut sorted = SortedInputs::default();
        sorted.sort(inputs);
        sorted
    }

    /// Sorts `inputs` by buckets: the grid's cells, in order, then each
    /// cell's few values (a comparison sort of the whole sample would cost
    /// more than binning it).
    fn sort(&mut self, inputs: &[f64]) {
        let (min, max) = inputs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let cells = inputs.len();
        let cells_per_unit = match cells as f64 / (max - min) {
            c if c.is_finite() => c,
            _ => 0.0,
        };
        let cell_of = |v: f64| (((v - min) * cells_per_unit) as usize).min(cells - 1);
        let start = &mut self.start;
        start.clear();
        start.resize(cells + 1, 0);
        inputs.iter().for_each(|&v| start[cell_of(v) + 1] += 1);
        for c in 0..cells {
            start[c + 1] += start[c];
        }
        self.next.clone_from(start);
        self.pairs.clear();
        self.pairs.resize(cells, (0.0, 0));
        for (i, &v) in inputs.iter().enumerate() {
            let c = cell_of(v);
            self.pairs[self.next[c]] = (v, i);
            self.next[c] += 1;
        }
        for cell in start.windows(2) {
            sort_cell(&mut self.pairs[cell[0]..cell[1]]);
        }
        self.values.clear();
        self.index.clear();
        self.values.extend(self.pairs.iter().map(|p| p.0));
        self.index.extend(self.pairs.iter().map(|p| p.1));
        (self.min, self.cells_per_unit) = (min, cells_per_unit);
    }

    /// The first position after `p` where `inside` (true at `p` and on a
    /// prefix of the values from `p`) fails, given `near`, a value about
    /// where it does: probes the grid cell of `near` and its neighbours,
    /// searching the rest only when that guess was wrong.
    fn first_after(&self, p: usize, near: f64, inside: impl Fn(f64) -> bool) -> usize {
        let v = &self.values;
        let cells = self.start.len() - 1;
        let cell =
            ((near - self.min) * self.cells_per_unit).clamp(0.0, (cells - 1) as f64) as usize;
        let from = self.start[cell].saturating_sub(1).max(p + 1);
        let to = (self.start[cell + 1] + 1).clamp(from, v.len());
        let search =
            |range: std::ops::Range<usize>| range.start + v[range].partition_point(|&x| inside(x));
        if from < v.len() && !inside(v[from]) {
            search(p + 1..from)
        } else if to < v.len() && inside(v[to - 1]) {
            search(to..v.len())
        } else {
            search(from..to)
        }
    }
}

/// Sorts one grid cell's `(value, index)` pairs: most hold one or two, which
/// an insertion sort orders without a call.
fn sort_cell(cell: &mut [(f64, usize)]) {
    let before = |p: &(f64, usize), q: &(f64, usize)| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1));
    if cell.len() > 16 {
        return cell.sort_unstable_by(before);
    }
    for i in 1..cell.len() {
        let mut j = i;
        while j > 0 && before(&cell[j], &cell[j - 1]).is_lt() {
            cell.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// Runs `visit(counts, sorted, o, s)` for every sample `n` and output `o`
/// of a dense layer, with the sample's inputs sorted and `s = scale · δ_no`:
/// the per-sample gradients along `o` are `s·a`, monotone in `a`, so bins
/// come in runs. Samples run in parallel, each task with its own `bins`
/// counts.
fn per_sample_rows(
    input: &Tensor,
    output_grad: &Tensor,
    scale: f64,
    bins: usize,
    visit: impl Fn(&mut [u64], &SortedInputs, usize, f64) + Sync,
) -> Vec<u64> {
    let (a, d) = (input.to_f64_vec(), output_grad.to_f64_vec());
    let (n, width) = (input.shape()[0], input.shape()[1]);
    let outs = output_grad.shape()[1];
    if width == 0 {
        return vec![0; bins];
    }
    (0..n)
        .into_par_iter()
        .fold(
            || (vec![0u64; bins], SortedInputs::default()),
            |(mut counts, mut sorted), sample| {
                sorted.sort(&a[sample * width..(sample + 1) * width]);
                for (o, &s) in d[sample * outs..(sample + 1) * outs].iter().enumerate() {
                    visit(&mut counts, &sorted, o, scale * s);
                }
                (counts, sorted)
            },
        )
        .map(|(counts, _)| counts)
        .reduce(
            || vec![0u64; bins],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// Cockpit's `histogram2d` bin of `v`: clamped to half a bin inside the
/// range, then `⌊(v − lo) / width⌋`.
fn bin_index(((lo, hi), bins): ((f64, f64), usize), v: f64) -> usize {
    let width = (hi - lo) / bins as f64;
    let v = v.clamp(lo + width / 2.0, hi - width / 2.0);
    (((v - lo) / width) as usize).min(bins - 1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Inputs as ReLU layers give them: ties, zeros, a spread of magnitudes.
    fn inputs() -> impl Strategy<Value = Vec<f64>> {
        let value = prop_oneof![
            Just(0.0),
            Just(0.5),
            -3.0..3.0f64,
            (-30.0..30.0f64).prop_map(|v| v * 1e-3),
        ];
        proptest::collection::vec(value, 1..300)
    }

    proptest! {
        /// The runs of a row give the counts of binning it value by value,
        /// for rows spanning one bin, a few, or all of them.
        #[test]
        fn rows_bin_as_values_do(a in inputs(), s in prop_oneof![-40.0..40.0f64, -0.5..0.5f64, Just(0.0)]) {
            let range = (-2.0, 2.0);
            let mut direct = Histogram1d::new(range, 100);
            direct.add(&a, s);
            let mut runs = vec![0u64; 100];
            bin_row(range, &mut runs, &SortedInputs::new(&a), s);
            prop_assert_eq!(direct.counts(), &runs[..]);
        }

        /// The end of a run is found wherever the guess points.
        #[test]
        fn runs_end_where_they_end(a in inputs(), t in -3.0..3.0f64, near in -4.0..4.0f64, p in 0..300usize) {
            let sorted = SortedInputs::new(&a);
            let v = &sorted.values;
            let inside = |x: f64| x < t;
            let end = v.partition_point(|&x| inside(x));
            prop_assume!(end < v.len() && p < end);
            prop_assert_eq!(sorted.first_after(p, near, inside), end);
        }
    }
}
