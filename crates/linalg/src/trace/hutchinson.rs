//! The Girard–Hutchinson trace estimator.

use super::stats::mean_and_stderr;
use super::{quadratic_forms, rademacher_probes, Estimate, TraceOptions};
use crate::{LinalgError, Progress, SymmetricOperator};

/// Hutchinson's estimator `tr(A) ≈ (1/m) Σ zᵢᵀ A zᵢ` with `m = opts.products`
/// Rademacher probes (at least 2); the standard error is the sample standard
/// deviation of the `zᵢᵀ A zᵢ` over `√m`.
///
/// # Example
///
/// ```
/// use secondo_linalg::{hutchinson, DenseSymmetric, Progress, TraceOptions};
///
/// let a = DenseSymmetric::new(2, vec![2.0, 1.0, 1.0, 2.0])?;
/// let opts = TraceOptions { products: 400, ..TraceOptions::default() };
/// let est = hutchinson(&a, &opts, Progress::none())?;
/// assert!((est.estimate - 4.0).abs() <= 4.0 * est.stderr);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn hutchinson<O: SymmetricOperator + ?Sized>(
    op: &O,
    opts: &TraceOptions,
    progress: Progress<'_>,
) -> Result<Estimate, LinalgError> {
    let n = op.dim();
    let mut samples = Vec::new();
    let products = rademacher_probes(op, opts, progress, |z, az| {
        samples.extend(quadratic_forms(z, az, n))
    })?;
    let (estimate, stderr) = mean_and_stderr(&samples);
    Ok(Estimate {
        estimate,
        stderr,
        products,
    })
}
