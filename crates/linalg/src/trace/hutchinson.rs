//! The Girard–Hutchinson trace estimator.

use super::stats::mean_and_stderr;
use super::{probe_blocks, quadratic_forms, validate, Estimate, TraceOptions};
use crate::metered::Metered;
use crate::random::generator;
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
    validate(n, opts, 2)?;
    let mut metered = Metered::new(op, progress, opts.products);
    let mut rng = generator(opts.seed);
    let mut samples = Vec::with_capacity(opts.products);
    probe_blocks(
        &mut metered,
        &mut rng,
        opts.products,
        opts.block_size,
        |_, _| {},
        |z, az, _| samples.extend(quadratic_forms(z, az, n)),
    )?;
    let (estimate, stderr) = mean_and_stderr(&samples);
    Ok(Estimate {
        estimate,
        stderr,
        products: metered.finish(),
    })
}
