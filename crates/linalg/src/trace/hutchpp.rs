//! Hutch++ (Meyer, Musco, Musco, Woodruff 2021).

use super::stats::mean_and_stderr;
use super::{apply_in_blocks, probe_blocks, quadratic_forms, validate, Estimate, TraceOptions};
use crate::metered::Metered;
use crate::ortho::{orthonormal_basis, Basis};
use crate::random::{fill_rademacher, generator};
use crate::{LinalgError, Progress, SymmetricOperator};

/// Columns of the sketch shorter than this fraction of the longest are dropped as dependent.
const RANK_TOL: f64 = 1e-12;

/// Hutch++: `tr(A) ≈ tr(Qᵀ A Q) + (1/g) Σ gᵢᵀ (I − QQᵀ) A (I − QQᵀ) gᵢ`.
///
/// With a budget of `m = opts.products` (at least 4) products, `s = ⌊m/3⌋`
/// Rademacher vectors sketch the range, `Q = orth(A S)`, `A Q` costs
/// `rank(Q) ≤ s` products and the remaining `g = m − 2s` Rademacher probes
/// estimate the trace of the deflated remainder by Hutchinson. The standard
/// error is that of the Hutchinson part. The estimate is exact (zero error)
/// when `rank(A) ≤ s`.
///
/// # Example
///
/// ```
/// use secondo_linalg::{hutch_plus_plus, DenseSymmetric, Progress, TraceOptions};
///
/// // A rank-one matrix u uᵀ with trace ‖u‖² = 21 is captured exactly by the sketch.
/// let u = [1.0, 2.0, 4.0];
/// let data = (0..9).map(|i| u[i / 3] * u[i % 3]).collect();
/// let a = DenseSymmetric::new(3, data)?;
/// let opts = TraceOptions { products: 6, ..TraceOptions::default() };
/// let est = hutch_plus_plus(&a, &opts, Progress::none())?;
/// assert!((est.estimate - 21.0).abs() < 1e-10 && est.stderr < 1e-10);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn hutch_plus_plus<O: SymmetricOperator + ?Sized>(
    op: &O,
    opts: &TraceOptions,
    progress: Progress<'_>,
) -> Result<Estimate, LinalgError> {
    let n = op.dim();
    validate(n, opts, 4)?;
    let sketch = opts.products / 3;
    let probes = opts.products - 2 * sketch;
    let mut metered = Metered::new(op, progress, opts.products);
    let mut rng = generator(opts.seed);

    let mut s = vec![0.0; n * sketch];
    fill_rademacher(&mut rng, &mut s);
    let y = apply_in_blocks(&mut metered, &s, sketch, opts.block_size)?;
    let q = orthonormal_basis(&y, n, sketch, RANK_TOL);
    let rank = q.len() / n;
    let aq = apply_in_blocks(&mut metered, &q, rank, opts.block_size)?;
    let low_rank_trace: f64 = quadratic_forms(&q, &aq, n).sum();

    let mut samples = Vec::with_capacity(probes);
    let deflate = |z: &mut [f64], k: usize| {
        Basis::new(&q, n).project_out(z, k, &mut vec![0.0; rank * k]);
    };
    probe_blocks(
        &mut metered,
        &mut rng,
        probes,
        opts.block_size,
        deflate,
        |z, az, _| samples.extend(quadratic_forms(z, az, n)),
    )?;
    let (remainder, stderr) = mean_and_stderr(&samples);
    Ok(Estimate {
        estimate: low_rank_trace + remainder,
        stderr,
        products: metered.finish(),
    })
}
