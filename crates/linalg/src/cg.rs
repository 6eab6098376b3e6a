//! Conjugate gradients for damped systems `(A + λI) x = b`.

use crate::metered::Metered;
use crate::{blas, LinalgError, Progress, SymmetricOperator};

/// Options of [`conjugate_gradient`].
///
/// # Example
///
/// ```
/// use secondo_linalg::CgOptions;
///
/// let opts = CgOptions { tol: 1e-12, ..CgOptions::default() };
/// assert_eq!(opts.max_iter, 1000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgOptions {
    /// Converged when `‖b − (A + λI) x‖ ≤ tol · ‖b‖`.
    pub tol: f64,
    /// Maximum number of iterations (one matrix–vector product each).
    pub max_iter: usize,
}

impl Default for CgOptions {
    fn default() -> Self {
        Self {
            tol: 1e-8,
            max_iter: 1000,
        }
    }
}

/// The result of [`conjugate_gradient`]; running out of iterations is
/// reported through `converged`, not as an error.
///
/// # Example
///
/// ```
/// use secondo_linalg::{conjugate_gradient, CgOptions, DenseSymmetric, Progress};
///
/// let a = DenseSymmetric::new(2, vec![4.0, 1.0, 1.0, 3.0])?;
/// let opts = CgOptions { max_iter: 1, ..CgOptions::default() };
/// let sol = conjugate_gradient(&a, &[1.0, 2.0], 0.0, &opts, Progress::none())?;
/// assert!(!sol.converged && sol.iterations == 1 && sol.residual_norm > 0.0);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CgSolution {
    /// The approximate solution.
    pub x: Vec<f64>,
    /// Iterations performed.
    pub iterations: usize,
    /// Norm of the recursively updated residual `b − (A + λI) x`.
    pub residual_norm: f64,
    /// Whether the tolerance was met.
    pub converged: bool,
    /// Matrix–vector products performed.
    pub products: usize,
}

/// Solves `(A + λI) x = b` by conjugate gradients from `x = 0`, for `A`
/// symmetric and `A + λI` positive definite.
///
/// Any `λ` is accepted, negative included; the curvature `pᵀ(A + λI)p` of
/// every search direction is checked, and a non-positive value (an
/// indefinite or singular damped operator) is an error naming the iteration.
///
/// # Example
///
/// ```
/// use secondo_linalg::{conjugate_gradient, CgOptions, DenseSymmetric, LinalgError, Progress};
///
/// let a = DenseSymmetric::new(2, vec![2.0, 0.0, 0.0, 1.0])?;
/// let sol = conjugate_gradient(&a, &[4.0, 4.0], 1.0, &CgOptions::default(), Progress::none())?;
/// assert!(sol.converged);
/// assert!((sol.x[0] - 4.0 / 3.0).abs() < 1e-10 && (sol.x[1] - 2.0).abs() < 1e-10);
///
/// let err = conjugate_gradient(&a, &[0.0, 1.0], -1.5, &CgOptions::default(), Progress::none())
///     .unwrap_err();
/// assert!(matches!(err, LinalgError::NotPositiveDefinite { iteration: 1, .. }));
/// # Ok::<(), LinalgError>(())
/// ```
pub fn conjugate_gradient<O: SymmetricOperator + ?Sized>(
    op: &O,
    b: &[f64],
    damping: f64,
    opts: &CgOptions,
    progress: Progress<'_>,
) -> Result<CgSolution, LinalgError> {
    let n = op.dim();
    check(n, b, damping, opts)?;
    let mut metered = Metered::new(op, progress, opts.max_iter);
    let mut x = vec![0.0; n];
    let mut r = b.to_vec();
    let mut p = r.clone();
    let mut q = vec![0.0; n];
    let mut rr = blas::dot(&r, &r);
    let target = opts.tol * rr.sqrt();
    let mut iterations = 0;
    while rr.sqrt() > target && iterations < opts.max_iter {
        iterations += 1;
        metered.apply(&p, 1, &mut q)?;
        blas::axpy(damping, &p, &mut q);
        let curvature = blas::dot(&p, &q);
        if curvature <= 0.0 {
            return Err(LinalgError::NotPositiveDefinite {
                iteration: iterations,
                damping,
                curvature,
            });
        }
        let alpha = rr / curvature;
        blas::axpy(alpha, &p, &mut x);
        blas::axpy(-alpha, &q, &mut r);
        let rr_next = blas::dot(&r, &r);
        let beta = rr_next / rr;
        for (pi, ri) in p.iter_mut().zip(&r) {
            *pi = ri + beta * *pi;
        }
        rr = rr_next;
    }
    let residual_norm = rr.sqrt();
    Ok(CgSolution {
        x,
        iterations,
        residual_norm,
        converged: residual_norm <= target,
        products: metered.finish(),
    })
}

fn check(n: usize, b: &[f64], damping: f64, opts: &CgOptions) -> Result<(), LinalgError> {
    if n == 0 {
        return Err(LinalgError::EmptyOperator);
    }
    if b.len() != n {
        return Err(LinalgError::LengthMismatch {
            what: "right-hand side",
            expected: n,
            actual: b.len(),
        });
    }
    if let Some(index) = b.iter().position(|x| !x.is_finite()) {
        return Err(LinalgError::NonFinite {
            what: "right-hand side",
            index,
        });
    }
    if !damping.is_finite() {
        return Err(LinalgError::InvalidOption {
            name: "damping",
            reason: format!("{damping} is not finite"),
        });
    }
    if !(opts.tol.is_finite() && opts.tol >= 0.0) {
        return Err(LinalgError::InvalidOption {
            name: "tol",
            reason: format!("{} is not a finite non-negative number", opts.tol),
        });
    }
    Ok(())
}
