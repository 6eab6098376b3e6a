//! [`FnOperator`]: a symmetric operator defined by a closure.

use super::{check_block, SymmetricOperator};
use crate::LinalgError;

/// A [`SymmetricOperator`] whose block product is computed by a closure.
///
/// The closure receives `(v, k, out)` exactly as in
/// [`SymmetricOperator::apply_block`]; the lengths of `v` and `out` are
/// checked before it is called. The closure is trusted to be symmetric.
///
/// # Example
///
/// ```
/// use secondo_linalg::{FnOperator, SymmetricOperator};
///
/// // The diagonal operator diag(1, 2, 3), applied vector by vector.
/// let op = FnOperator::new(3, |v: &[f64], k: usize, out: &mut [f64]| {
///     for j in 0..k {
///         for i in 0..3 {
///             out[j * 3 + i] = (i + 1) as f64 * v[j * 3 + i];
///         }
///     }
///     Ok(())
/// });
/// let mut out = [0.0; 3];
/// op.apply_block(&[1.0, 1.0, 1.0], 1, &mut out)?;
/// assert_eq!(out, [1.0, 2.0, 3.0]);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub struct FnOperator<F> {
    dim: usize,
    apply: F,
}

impl<F> FnOperator<F>
where
    F: Fn(&[f64], usize, &mut [f64]) -> Result<(), LinalgError>,
{
    /// Wraps `apply` as an operator on `R^dim`.
    ///
    /// # Example
    ///
    /// ```
    /// use secondo_linalg::{FnOperator, SymmetricOperator};
    ///
    /// let identity = FnOperator::new(4, |v: &[f64], _k: usize, out: &mut [f64]| {
    ///     out.copy_from_slice(v);
    ///     Ok(())
    /// });
    /// assert_eq!(identity.dim(), 4);
    /// ```
    pub fn new(dim: usize, apply: F) -> Self {
        Self { dim, apply }
    }
}

impl<F> SymmetricOperator for FnOperator<F>
where
    F: Fn(&[f64], usize, &mut [f64]) -> Result<(), LinalgError>,
{
    fn dim(&self) -> usize {
        self.dim
    }

    fn apply_block(&self, v: &[f64], k: usize, out: &mut [f64]) -> Result<(), LinalgError> {
        check_block(self.dim, v, k, out)?;
        (self.apply)(v, k, out)
    }
}
