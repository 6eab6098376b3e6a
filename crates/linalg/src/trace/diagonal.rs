//! Hutchinson's estimator of the diagonal.

use super::{rademacher_probes, TraceOptions};
use crate::{LinalgError, Progress, SymmetricOperator};

/// Per-entry estimates of `diag(A)` with their standard errors.
///
/// # Example
///
/// ```
/// use secondo_linalg::{diag_estimate, DenseSymmetric, Progress, TraceOptions};
///
/// let a = DenseSymmetric::new(2, vec![3.0, 0.0, 0.0, -1.0])?;
/// let d = diag_estimate(&a, &TraceOptions { products: 4, ..TraceOptions::default() }, Progress::none())?;
/// assert_eq!(d.estimate, vec![3.0, -1.0]);
/// assert_eq!(d.stderr, vec![0.0, 0.0]);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DiagonalEstimate {
    /// Estimate of each diagonal entry.
    pub estimate: Vec<f64>,
    /// Standard error of each entry.
    pub stderr: Vec<f64>,
    /// Matrix–vector products spent.
    pub products: usize,
}

/// Hutchinson's diagonal estimator `diag(A) ≈ (1/m) Σ zᵢ ⊙ A zᵢ` with
/// `m = opts.products` Rademacher probes (at least 2); entry `j` has standard
/// error `sⱼ / √m` with `sⱼ` the sample standard deviation of `zᵢⱼ (A zᵢ)ⱼ`.
///
/// # Example
///
/// ```
/// use secondo_linalg::{diag_estimate, DenseSymmetric, Progress, TraceOptions};
///
/// let a = DenseSymmetric::new(2, vec![2.0, 1.0, 1.0, 2.0])?;
/// let opts = TraceOptions { products: 400, ..TraceOptions::default() };
/// let d = diag_estimate(&a, &opts, Progress::none())?;
/// for (est, err) in d.estimate.iter().zip(&d.stderr) {
///     assert!((est - 2.0).abs() <= 4.0 * err);
/// }
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn diag_estimate<O: SymmetricOperator + ?Sized>(
    op: &O,
    opts: &TraceOptions,
    progress: Progress<'_>,
) -> Result<DiagonalEstimate, LinalgError> {
    let n = op.dim();
    // Welford's running mean and sum of squared deviations, per entry.
    let mut mean = vec![0.0; n];
    let mut sq = vec![0.0; n];
    let mut count = 0.0;
    let products = rademacher_probes(op, opts, progress, |z, az| {
        for (z, az) in z.chunks_exact(n).zip(az.chunks_exact(n)) {
            count += 1.0;
            for j in 0..n {
                let sample = z[j] * az[j];
                let delta = sample - mean[j];
                mean[j] += delta / count;
                sq[j] += delta * (sample - mean[j]);
            }
        }
    })?;
    let stderr = sq
        .iter()
        .map(|s| (s / (count - 1.0) / count).sqrt())
        .collect();
    Ok(DiagonalEstimate {
        estimate: mean,
        stderr,
        products,
    })
}
