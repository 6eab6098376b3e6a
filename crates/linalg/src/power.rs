//! Power iteration for the eigenpair of largest magnitude.

use crate::metered::Metered;
use crate::random::{fill_uniform, generator};
use crate::{blas, LinalgError, Progress, SymmetricOperator};

/// Options of [`power_iteration`].
///
/// # Example
///
/// ```
/// use secondo_linalg::PowerOptions;
///
/// let opts = PowerOptions { max_iter: 50, ..PowerOptions::default() };
/// assert_eq!(opts.tol, 1e-8);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerOptions {
    /// Maximum number of iterations (one matrix–vector product each).
    pub max_iter: usize,
    /// Converged when `‖A x − θ x‖ ≤ tol · |θ|`.
    pub tol: f64,
    /// Seed of the random starting vector.
    pub seed: u64,
}

impl Default for PowerOptions {
    fn default() -> Self {
        Self {
            max_iter: 1000,
            tol: 1e-8,
            seed: 0,
        }
    }
}

/// One eigenpair with its residual, as returned by [`power_iteration`].
///
/// # Example
///
/// ```
/// use secondo_linalg::{power_iteration, DenseSymmetric, PowerOptions, Progress};
///
/// let a = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, -3.0])?;
/// let pair = power_iteration(&a, &PowerOptions::default(), Progress::none())?;
/// assert!(pair.converged && (pair.value + 3.0).abs() < 1e-8);
/// assert!(pair.residual <= 1e-8 * 3.0);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct EigenPair {
    /// The Rayleigh quotient `θ = xᵀ A x`.
    pub value: f64,
    /// The unit vector `x`.
    pub vector: Vec<f64>,
    /// `‖A x − θ x‖`.
    pub residual: f64,
    /// Iterations performed.
    pub iterations: usize,
    /// Matrix–vector products performed.
    pub products: usize,
    /// Whether the tolerance was met (otherwise `max_iter` ran out).
    pub converged: bool,
}

/// The eigenpair of largest magnitude by power iteration `x ← A x / ‖A x‖`.
///
/// Convergence is linear in `|λ₂/λ₁|`; when `λ` and `−λ` are both extreme
/// the iteration does not converge and [`EigenPair::converged`] is false.
///
/// # Example
///
/// ```
/// use secondo_linalg::{power_iteration, DenseSymmetric, PowerOptions, Progress};
///
/// let a = DenseSymmetric::new(2, vec![2.0, 1.0, 1.0, 2.0])?;
/// let pair = power_iteration(&a, &PowerOptions::default(), Progress::none())?;
/// assert!((pair.value - 3.0).abs() < 1e-8);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn power_iteration<O: SymmetricOperator + ?Sized>(
    op: &O,
    opts: &PowerOptions,
    progress: Progress<'_>,
) -> Result<EigenPair, LinalgError> {
    power_iteration_from(op, opts, None, progress)
}

/// [`power_iteration`] warm-started from `start` (e.g. the eigenvector of a
/// previous, nearby operator); `None`, or a zero or non-finite vector, starts
/// from a random one.
///
/// # Example
///
/// ```
/// use secondo_linalg::{power_iteration, power_iteration_from, DenseSymmetric, PowerOptions, Progress};
///
/// let a = DenseSymmetric::new(2, vec![3.0, 0.0, 0.0, 1.0])?;
/// let cold = power_iteration(&a, &PowerOptions::default(), Progress::none())?;
/// let warm = power_iteration_from(&a, &PowerOptions::default(), Some(&cold.vector), Progress::none())?;
/// assert!((warm.value - 3.0).abs() < 1e-8 && warm.iterations < cold.iterations);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn power_iteration_from<O: SymmetricOperator + ?Sized>(
    op: &O,
    opts: &PowerOptions,
    start: Option<&[f64]>,
    progress: Progress<'_>,
) -> Result<EigenPair, LinalgError> {
    let n = op.dim();
    if n == 0 {
        return Err(LinalgError::EmptyOperator);
    }
    if opts.max_iter == 0 {
        return Err(LinalgError::InvalidOption {
            name: "max_iter",
            reason: "must be at least 1".into(),
        });
    }
    if !(opts.tol.is_finite() && opts.tol >= 0.0) {
        return Err(LinalgError::InvalidOption {
            name: "tol",
            reason: format!("{} is not a finite non-negative number", opts.tol),
        });
    }
    let mut metered = Metered::new(op, progress, opts.max_iter);
    let mut x = match start {
        Some(s) if s.len() != n => {
            return Err(LinalgError::InvalidOption {
                name: "start",
                reason: format!("{} values for an operator of dimension {n}", s.len()),
            })
        }
        Some(s) if blas::norm(s).is_finite() && blas::norm(s) > 0.0 => s.to_vec(),
        _ => {
            let mut x = vec![0.0; n];
            fill_uniform(&mut generator(opts.seed), &mut x);
            x
        }
    };
    let length = blas::norm(&x);
    blas::scale(1.0 / length, &mut x);
    let mut y = vec![0.0; n];
    let mut iterations = 0;
    loop {
        metered.apply(&x, 1, &mut y)?;
        iterations += 1;
        let value = blas::dot(&x, &y);
        let residual = y
            .iter()
            .zip(&x)
            .map(|(yi, xi)| (yi - value * xi).powi(2))
            .sum::<f64>()
            .sqrt();
        let converged = residual <= opts.tol * value.abs();
        if converged || iterations == opts.max_iter {
            return Ok(EigenPair {
                value,
                vector: x,
                residual,
                iterations,
                products: metered.finish(),
                converged,
            });
        }
        // y ≠ 0 here: y = 0 gives θ = 0 and a zero residual, which converged above.
        let length = blas::norm(&y);
        for (xi, yi) in x.iter_mut().zip(&y) {
            *xi = yi / length;
        }
    }
}
