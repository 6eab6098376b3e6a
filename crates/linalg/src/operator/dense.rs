//! [`DenseSymmetric`]: an explicit symmetric matrix as an operator.

use super::{check_block, SymmetricOperator};
use crate::blas;
use crate::LinalgError;

/// Relative asymmetry `|a_ij − a_ji| / max|a|` accepted by [`DenseSymmetric::new`].
const SYMMETRY_TOL: f64 = 1e-10;

/// A dense symmetric `n × n` matrix stored row-major.
///
/// Construction checks that the matrix is finite and symmetric up to a
/// relative tolerance of `1e-10` of its largest entry, then stores the exact
/// symmetric part `(A + Aᵀ)/2`.
///
/// # Example
///
/// ```
/// use secondo_linalg::{DenseSymmetric, SymmetricOperator};
///
/// let a = DenseSymmetric::new(2, vec![2.0, -1.0, -1.0, 2.0])?;
/// let mut out = [0.0; 4];
/// a.apply_block(&[1.0, 0.0, 0.0, 1.0], 2, &mut out)?;
/// assert_eq!(out, [2.0, -1.0, -1.0, 2.0]);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DenseSymmetric {
    n: usize,
    data: Vec<f64>,
}

impl DenseSymmetric {
    /// Wraps the row-major `n × n` matrix `data`.
    ///
    /// Fails when `data.len() != n·n`, when an entry is not finite, or when
    /// the matrix is not symmetric.
    ///
    /// # Example
    ///
    /// ```
    /// use secondo_linalg::{DenseSymmetric, LinalgError};
    ///
    /// assert!(DenseSymmetric::new(2, vec![1.0, 2.0, 2.0, 1.0]).is_ok());
    /// let err = DenseSymmetric::new(2, vec![1.0, 2.0, 3.0, 1.0]).unwrap_err();
    /// assert!(matches!(err, LinalgError::NotSymmetric { row: 0, col: 1, .. }));
    /// ```
    pub fn new(n: usize, mut data: Vec<f64>) -> Result<Self, LinalgError> {
        let expected = n.checked_mul(n).ok_or_else(|| LinalgError::InvalidOption {
            name: "n",
            reason: format!("{n}·{n} overflows"),
        })?;
        if data.len() != expected {
            return Err(LinalgError::LengthMismatch {
                what: "matrix data",
                expected,
                actual: data.len(),
            });
        }
        if let Some(index) = data.iter().position(|x| !x.is_finite()) {
            return Err(LinalgError::NonFinite {
                what: "matrix data",
                index,
            });
        }
        let scale = data.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
        for row in 0..n {
            for col in row + 1..n {
                let (value, mirror) = (data[row * n + col], data[col * n + row]);
                if (value - mirror).abs() > SYMMETRY_TOL * scale {
                    return Err(LinalgError::NotSymmetric {
                        row,
                        col,
                        value,
                        mirror,
                    });
                }
                let mean = 0.5 * (value + mirror);
                data[row * n + col] = mean;
                data[col * n + row] = mean;
            }
        }
        Ok(Self { n, data })
    }

    /// The matrix entries, row-major (equal to column-major: the matrix is symmetric).
    ///
    /// # Example
    ///
    /// ```
    /// use secondo_linalg::DenseSymmetric;
    ///
    /// let a = DenseSymmetric::new(2, vec![1.0, 2.0, 2.0, 3.0])?;
    /// assert_eq!(a.as_slice(), &[1.0, 2.0, 2.0, 3.0]);
    /// # Ok::<(), secondo_linalg::LinalgError>(())
    /// ```
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }
}

impl SymmetricOperator for DenseSymmetric {
    fn dim(&self) -> usize {
        self.n
    }

    fn apply_block(&self, v: &[f64], k: usize, out: &mut [f64]) -> Result<(), LinalgError> {
        check_block(self.n, v, k, out)?;
        blas::matmul(out, &self.data, v, self.n, self.n, k);
        Ok(())
    }
}
