//! XTrace (Epperly, Tropp, Webber 2024), the exchangeable trace estimator.

use super::stats::mean_and_stderr;
use super::{apply_in_blocks, validate, Estimate, TraceOptions};
use crate::dense::thin_svd;
use crate::metered::Metered;
use crate::random::{fill_rademacher, generator};
use crate::{blas, LinalgError, Progress, SymmetricOperator};

/// Singular values of `A Ω` below this fraction of the largest are treated as zero.
const RANK_TOL: f64 = 1e-12;
/// A probe whose leverage in the sketch is within this of 1 is needed by the basis.
const LEVERAGE_TOL: f64 = 1e-8;

/// XTrace: the exchangeable combination of Hutch++-type estimates.
///
/// With `m = ⌊opts.products / 2⌋` Rademacher probes `Ω` (at least 2), `Q`
/// is an orthonormal basis of `Y = A Ω`. For each probe `i`, `Qᵢ` is a basis
/// of the other columns of `Y` and
/// `tᵢ = tr(Qᵢᵀ A Qᵢ) + ωᵢᵀ (I − QᵢQᵢᵀ) A (I − QᵢQᵢᵀ) ωᵢ`; all `tᵢ` follow
/// from `Y` and `A Q` (`rank(Y) ≤ m` further products). The estimate is the
/// mean of the `tᵢ` and the standard error is their standard deviation over
/// `√m`, as in the paper; it treats the correlated `tᵢ` as independent and
/// tends to be somewhat optimistic. Rank-deficient sketches are handled through the
/// SVD of `Y`; the estimate is exact when `rank(A) < m`.
///
/// # Example
///
/// ```
/// use secondo_linalg::{xtrace, DenseSymmetric, Progress, TraceOptions};
///
/// // A rank-one matrix u uᵀ with trace ‖u‖² = 21.
/// let u = [1.0, 2.0, 4.0];
/// let data = (0..9).map(|i| u[i / 3] * u[i % 3]).collect();
/// let a = DenseSymmetric::new(3, data)?;
/// let opts = TraceOptions { products: 4, ..TraceOptions::default() };
/// let est = xtrace(&a, &opts, Progress::none())?;
/// assert!((est.estimate - 21.0).abs() < 1e-10 && est.stderr < 1e-10);
/// assert_eq!(est.products, 3);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn xtrace<O: SymmetricOperator + ?Sized>(
    op: &O,
    opts: &TraceOptions,
    progress: Progress<'_>,
) -> Result<Estimate, LinalgError> {
    let n = op.dim();
    validate(n, opts, 4)?;
    let m = opts.products / 2;
    let mut metered = Metered::new(op, progress, 2 * m);
    let mut omega = vec![0.0; n * m];
    fill_rademacher(&mut generator(opts.seed), &mut omega);
    let y = apply_in_blocks(&mut metered, &omega, m, opts.block_size)?;

    let svd = thin_svd(&y, n, m)?;
    let largest = svd.s.first().copied().unwrap_or(0.0);
    let r = svd
        .s
        .iter()
        .take_while(|&&s| s > RANK_TOL * largest && s > 0.0)
        .count();
    let q = &svd.u[..n * r];
    let z = apply_in_blocks(&mut metered, q, r, opts.block_size)?;

    let small = |left: &[f64], right: &[f64], cols: usize| {
        let mut out = vec![0.0; r * cols];
        blas::matmul_tn(&mut out, left, right, n, r, cols);
        out
    };
    let mut h = small(q, &z, r);
    for i in 0..r {
        for j in 0..i {
            let mean = 0.5 * (h[i * r + j] + h[j * r + i]);
            h[i * r + j] = mean;
            h[j * r + i] = mean;
        }
    }
    let (w, t, rr) = (small(q, &omega, m), small(&z, &omega, m), small(q, &y, m));
    let trace_h: f64 = (0..r).map(|i| h[i * r + i]).sum();
    let quad = |x: &[f64], v: &[f64]| -> f64 {
        let mut hv = vec![0.0; r];
        blas::matmul(&mut hv, &h, v, r, r, 1);
        blas::dot(x, &hv)
    };

    let estimates: Vec<f64> = (0..m)
        .map(|i| {
            let s = leave_one_out_direction(&svd.v, &svd.s[..r], m, i);
            let col = |a: &[f64]| a[i * r..(i + 1) * r].to_vec();
            let (wi, ti, ri) = (col(&w), col(&t), col(&rr));
            let sw = blas::dot(&s, &wi);
            let mut c = wi;
            blas::axpy(-sw, &s, &mut c);
            let diag = blas::dot(&omega[i * n..(i + 1) * n], &y[i * n..(i + 1) * n]);
            trace_h - quad(&s, &s) + diag - blas::dot(&c, &ri) - blas::dot(&ti, &c) + quad(&c, &c)
        })
        .collect();
    let (estimate, stderr) = mean_and_stderr(&estimates);
    Ok(Estimate {
        estimate,
        stderr,
        products: metered.finish(),
    })
}

/// The unit vector `s` (coordinates in `Q`) with `Qᵢ Qᵢᵀ = Q (I − s sᵀ) Qᵀ`,
/// where `Qᵢ` spans the columns of `Y = Q diag(sigma) Vᵀ` other than `i`;
/// zero when removing column `i` leaves the span unchanged.
fn leave_one_out_direction(v: &[f64], sigma: &[f64], m: usize, i: usize) -> Vec<f64> {
    // Row i of V (m × r, column-major): the coordinates of e_i in the row space of Y.
    let row: Vec<f64> = (0..sigma.len()).map(|j| v[j * m + i]).collect();
    let leverage = blas::dot(&row, &row);
    if leverage < 1.0 - LEVERAGE_TOL {
        return vec![0.0; sigma.len()];
    }
    let mut s: Vec<f64> = row.iter().zip(sigma).map(|(x, sigma)| x / sigma).collect();
    let norm = blas::norm(&s);
    blas::scale(1.0 / norm, &mut s);
    s
}
