//! A function of a symmetric operator applied to one vector, `f(A) v`, by
//! the Lanczos approximation `‖v‖ Q_k f(T_k) e₁` (Golub & Van Loan §10.2;
//! Higham 2008, "Functions of Matrices", §13.2): exact once the Krylov
//! space of `v` is invariant (`k` = its dimension, at most `dim A`), and
//! for smooth `f` accurate long before. What fractional powers
//! `(A + λI)^(-α) v` of a matrix-free curvature need, where CG solves only
//! `α = 1`.

use super::recurrence::Recurrence;
use crate::metered::Metered;
use crate::{blas, LinalgError, Progress, SymmetricOperator};

/// `f(A) v` and the products it took.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixFunction {
    /// `‖v‖ Q_k f(T_k) e₁`.
    pub x: Vec<f64>,
    /// Lanczos steps taken (one product each): `steps`, or fewer when the
    /// Krylov space of `v` was invariant sooner.
    pub products: usize,
}

/// `f(A) v` from at most `steps` Lanczos steps started at `v`, with full
/// reorthogonalization; `f` is applied to the Ritz values.
///
/// # Example
///
/// ```
/// use secondo_linalg::{lanczos_function, DenseSymmetric, Progress};
///
/// // A = diag(1, 4, 9): A^(-1/2) v = (1, 1/2, 1/3) ∘ v.
/// let a = DenseSymmetric::new(3, vec![1.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 9.0])?;
/// let f = lanczos_function(&a, &[1.0, 1.0, 1.0], 3, |c| c.powf(-0.5), Progress::none())?;
/// for (x, e) in f.x.iter().zip([1.0, 0.5, 1.0 / 3.0]) {
///     assert!((x - e).abs() < 1e-12);
/// }
/// // A zero vector maps to zero without a product.
/// assert_eq!(lanczos_function(&a, &[0.0; 3], 3, f64::sqrt, Progress::none())?.products, 0);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn lanczos_function<O: SymmetricOperator + ?Sized>(
    op: &O,
    v: &[f64],
    steps: usize,
    f: impl Fn(f64) -> f64,
    progress: Progress<'_>,
) -> Result<MatrixFunction, LinalgError> {
    let n = op.dim();
    check(n, v, steps)?;
    let norm = blas::norm(v);
    if norm == 0.0 {
        return Ok(MatrixFunction {
            x: vec![0.0; n],
            products: 0,
        });
    }
    let steps = steps.min(n);
    let mut metered = Metered::new(op, progress, steps);
    let mut recurrence = Recurrence::new(v, steps);
    let mut w = vec![0.0; n];
    while !recurrence.done() {
        metered.apply(recurrence.current(n), 1, &mut w)?;
        recurrence.advance(w.clone(), steps);
    }
    let ritz = recurrence.ritz()?;
    let m = ritz.values.len();
    // f(T) e₁ = Σ_j y_j f(θ_j) y_j[0], the coordinates of f(A) v / ‖v‖ in Q.
    let mut coordinates = vec![0.0; m];
    for (theta, y) in ritz.values.iter().zip(ritz.vectors.chunks_exact(m)) {
        let weight = norm * f(*theta) * y[0];
        coordinates
            .iter_mut()
            .zip(y)
            .for_each(|(c, y)| *c += weight * y);
    }
    let mut x = vec![0.0; n];
    for (c, q) in coordinates.iter().zip(recurrence.basis().chunks_exact(n)) {
        blas::axpy(*c, q, &mut x);
    }
    Ok(MatrixFunction {
        x,
        products: metered.finish(),
    })
}

fn check(n: usize, v: &[f64], steps: usize) -> Result<(), LinalgError> {
    if n == 0 {
        return Err(LinalgError::EmptyOperator);
    }
    if v.len() != n {
        return Err(LinalgError::LengthMismatch {
            what: "vector",
            expected: n,
            actual: v.len(),
        });
    }
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(LinalgError::NonFinite {
            what: "vector",
            index,
        });
    }
    if steps == 0 {
        return Err(LinalgError::InvalidOption {
            name: "steps",
            reason: "at least one Lanczos step is needed".into(),
        });
    }
    Ok(())
}
