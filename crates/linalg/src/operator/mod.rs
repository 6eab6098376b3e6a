//! The [`SymmetricOperator`] abstraction and its two ready-made implementations.

mod closure;
mod dense;

pub use closure::FnOperator;
pub use dense::DenseSymmetric;

use crate::LinalgError;

/// A symmetric linear operator on `R^n`, applied to blocks of vectors.
///
/// Blocks are stored column after column: a block of `k` vectors of
/// dimension `n = dim()` is a slice of length `n·k` whose `j`-th vector is
/// `v[j*n..(j+1)*n]`. Applying several vectors at once lets implementations
/// batch their work (for instance one batched Hessian-vector product).
///
/// # Example
///
/// ```
/// use secondo_linalg::{LinalgError, SymmetricOperator};
///
/// /// The operator `x ↦ 2x` on `R^3`.
/// struct Twice;
///
/// impl SymmetricOperator for Twice {
///     fn dim(&self) -> usize {
///         3
///     }
///     fn apply_block(&self, v: &[f64], _k: usize, out: &mut [f64]) -> Result<(), LinalgError> {
///         for (o, x) in out.iter_mut().zip(v) {
///             *o = 2.0 * x;
///         }
///         Ok(())
///     }
/// }
///
/// let mut out = [0.0; 6];
/// Twice.apply_block(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, &mut out)?;
/// assert_eq!(out, [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
/// # Ok::<(), LinalgError>(())
/// ```
pub trait SymmetricOperator {
    /// The dimension `n` of the space the operator acts on.
    ///
    /// # Example
    ///
    /// ```
    /// use secondo_linalg::{DenseSymmetric, SymmetricOperator};
    ///
    /// let a = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, 1.0])?;
    /// assert_eq!(a.dim(), 2);
    /// # Ok::<(), secondo_linalg::LinalgError>(())
    /// ```
    fn dim(&self) -> usize;

    /// Computes `out[:, j] = A · v[:, j]` for the `k` vectors stored column
    /// after column in `v` (`v.len() == out.len() == dim·k`).
    ///
    /// # Example
    ///
    /// ```
    /// use secondo_linalg::{DenseSymmetric, SymmetricOperator};
    ///
    /// let a = DenseSymmetric::new(2, vec![2.0, 1.0, 1.0, 2.0])?;
    /// let mut out = [0.0; 2];
    /// a.apply_block(&[1.0, 1.0], 1, &mut out)?;
    /// assert_eq!(out, [3.0, 3.0]);
    /// # Ok::<(), secondo_linalg::LinalgError>(())
    /// ```
    fn apply_block(&self, v: &[f64], k: usize, out: &mut [f64]) -> Result<(), LinalgError>;
}

/// Checks that `v` and `out` both hold `k` vectors of dimension `dim`.
pub(crate) fn check_block(dim: usize, v: &[f64], k: usize, out: &[f64]) -> Result<(), LinalgError> {
    let expected = dim
        .checked_mul(k)
        .ok_or_else(|| LinalgError::InvalidOption {
            name: "k",
            reason: format!("{dim}·{k} overflows"),
        })?;
    if v.len() != expected {
        return Err(LinalgError::LengthMismatch {
            what: "input block",
            expected,
            actual: v.len(),
        });
    }
    if out.len() != expected {
        return Err(LinalgError::LengthMismatch {
            what: "output block",
            expected,
            actual: out.len(),
        });
    }
    Ok(())
}
