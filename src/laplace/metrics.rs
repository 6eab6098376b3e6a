//! Calibration and uncertainty metrics of class probabilities `[N, C]`
//! against labels: negative log-likelihood, accuracy, expected calibration
//! error (Naeini et al. 2015; Guo et al. 2017, 15 equal-width confidence
//! bins), Brier score (Brier 1950, summed over classes, averaged over
//! samples), and the AUROC of predictive entropy separating an
//! out-of-distribution set (Hendrycks & Gimpel 2017); for regression, the
//! Gaussian NLL and the root mean squared error.

/// The number of confidence bins of [`ece`] and [`reliability`].
pub const BINS: usize = 15;

/// Probabilities below this count as this in the NLL (a zero would be infinite).
const FLOOR: f64 = 1e-300;

/// The mean of `−log p(yₙ)`.
pub fn nll(probs: &[f64], labels: &[usize], c: usize) -> f64 {
    let total: f64 = probs
        .chunks(c)
        .zip(labels)
        .map(|(p, &y)| -p[y].max(FLOOR).ln())
        .sum();
    total / labels.len() as f64
}

/// The index of the largest entry of a row (the first on ties).
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// The fraction of samples whose most probable class is the label.
pub fn accuracy(probs: &[f64], labels: &[usize], c: usize) -> f64 {
    let hits = probs
        .chunks(c)
        .zip(labels)
        .filter(|(p, &y)| argmax(p) == y)
        .count();
    hits as f64 / labels.len() as f64
}

/// One confidence bin: `(lower edge, mean confidence, accuracy, count)`.
pub type Bin = (f64, f64, f64, usize);

/// The [`BINS`] equal-width bins of the top-class confidence over `(0, 1]`
/// (bin `b` holds confidences in `(b/15, (b+1)/15]`), as a reliability
/// diagram draws them.
pub fn reliability(probs: &[f64], labels: &[usize], c: usize) -> Vec<Bin> {
    let mut conf = [0.0; BINS];
    let mut hits = [0.0; BINS];
    let mut count = [0usize; BINS];
    for (p, &y) in probs.chunks(c).zip(labels) {
        let top = argmax(p);
        let bin = ((p[top] * BINS as f64).ceil() as usize).clamp(1, BINS) - 1;
        conf[bin] += p[top];
        hits[bin] += f64::from(u8::from(top == y));
        count[bin] += 1;
    }
    (0..BINS)
        .map(|b| {
            let n = count[b].max(1) as f64;
            (b as f64 / BINS as f64, conf[b] / n, hits[b] / n, count[b])
        })
        .collect()
}

/// Expected calibration error: `Σ_b |B_b|/N · |acc(B_b) − conf(B_b)|`.
pub fn ece(probs: &[f64], labels: &[usize], c: usize) -> f64 {
    let n = labels.len() as f64;
    reliability(probs, labels, c)
        .iter()
        .map(|&(_, conf, acc, count)| count as f64 / n * (acc - conf).abs())
        .sum()
}

/// Brier score: the mean over samples of `Σ_c (p_c − [c = y])²`.
pub fn brier(probs: &[f64], labels: &[usize], c: usize) -> f64 {
    let total: f64 = probs
        .chunks(c)
        .zip(labels)
        .map(|(p, &y)| {
            p.iter()
                .enumerate()
                .map(|(k, v)| (v - f64::from(u8::from(k == y))).powi(2))
                .sum::<f64>()
        })
        .sum();
    total / labels.len() as f64
}

/// The entropy `−Σ p log p` of each row.
pub fn entropy(probs: &[f64], c: usize) -> Vec<f64> {
    probs
        .chunks(c)
        .map(|p| p.iter().filter(|v| **v > 0.0).map(|v| -v * v.ln()).sum())
        .collect()
}

/// The area under the ROC curve of `scores` ranking the `positive` ones
/// (out of distribution) above the `negative` ones: the probability that a
/// positive scores higher than a negative, ties counting half
/// (Mann–Whitney U from mid-ranks).
pub fn auroc(negative: &[f64], positive: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = negative
        .iter()
        .map(|&s| (s, false))
        .chain(positive.iter().map(|&s| (s, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1..=j share their mean.
        let mid = (i + 1 + j) as f64 / 2.0;
        rank_sum += mid * all[i..j].iter().filter(|e| e.1).count() as f64;
        i = j;
    }
    let (p, q) = (positive.len() as f64, negative.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * q)
}

/// The mean Gaussian negative log-likelihood of `targets` under means and
/// variances (all `[N, C]`), summed over outputs.
pub fn gaussian_nll(mean: &[f64], variance: &[f64], targets: &[f64], c: usize) -> f64 {
    let total: f64 = mean
        .iter()
        .zip(variance)
        .zip(targets)
        .map(|((m, v), y)| 0.5 * ((2.0 * std::f64::consts::PI * v).ln() + (y - m).powi(2) / v))
        .sum();
    total / (targets.len() / c) as f64
}

/// The root mean squared error over every output.
pub fn rmse(mean: &[f64], targets: &[f64]) -> f64 {
    let total: f64 = mean.iter().zip(targets).map(|(m, y)| (m - y).powi(2)).sum();
    (total / targets.len() as f64).sqrt()
}
