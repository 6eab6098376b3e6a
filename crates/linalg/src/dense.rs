//! Dense symmetric eigendecomposition and thin SVD through `faer`.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::linalg::svd::{self, ComputeSvdVectors};
use faer::{Mat, MatRef, Par};

use crate::{DenseSymmetric, LinalgError, SymmetricOperator};

/// The eigendecomposition `A = V diag(values) Vᵀ` of a dense symmetric matrix.
///
/// # Example
///
/// ```
/// use secondo_linalg::{dense_symmetric_eigen, DenseSymmetric};
///
/// let a = DenseSymmetric::new(2, vec![2.0, 1.0, 1.0, 2.0])?;
/// let eig = dense_symmetric_eigen(&a)?;
/// assert!((eig.values[0] - 1.0).abs() < 1e-14 && (eig.values[1] - 3.0).abs() < 1e-14);
/// let v = eig.vector(1).unwrap();
/// assert!((v[0].abs() - 0.5_f64.sqrt()).abs() < 1e-14);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SymmetricEigen {
    /// Eigenvalues in ascending order.
    pub values: Vec<f64>,
    /// Orthonormal eigenvectors, column-major `n × n`: vector `j` is `vectors[j*n..(j+1)*n]`.
    pub vectors: Vec<f64>,
}

impl SymmetricEigen {
    /// The eigenvector of `values[j]`, or `None` when `j` is out of range.
    ///
    /// # Example
    ///
    /// ```
    /// use secondo_linalg::{dense_symmetric_eigen, DenseSymmetric};
    ///
    /// let eig = dense_symmetric_eigen(&DenseSymmetric::new(1, vec![5.0])?)?;
    /// assert_eq!(eig.vector(0).map(|v| v[0].abs()), Some(1.0));
    /// assert!(eig.vector(1).is_none());
    /// # Ok::<(), secondo_linalg::LinalgError>(())
    /// ```
    pub fn vector(&self, j: usize) -> Option<&[f64]> {
        let n = self.values.len();
        let start = j.checked_mul(n).filter(|_| j < n)?;
        self.vectors.get(start..start.checked_add(n)?)
    }
}

/// Eigenvalues (ascending) and orthonormal eigenvectors of a dense symmetric matrix.
///
/// # Example
///
/// ```
/// use secondo_linalg::{dense_symmetric_eigen, DenseSymmetric};
///
/// let a = DenseSymmetric::new(3, vec![4.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 2.0])?;
/// let eig = dense_symmetric_eigen(&a)?;
/// assert_eq!(eig.values, vec![-1.0, 2.0, 4.0]);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn dense_symmetric_eigen(matrix: &DenseSymmetric) -> Result<SymmetricEigen, LinalgError> {
    symmetric_eigen(matrix.as_slice(), matrix.dim())
}

/// `scale · (M + Mᵀ)/2` of the row-major `n × n` matrix `m`: a matrix
/// accumulated in `f32` or from operator columns is symmetric only up to
/// round-off, and the symmetric solvers read one triangle.
///
/// ```
/// let m = [1.0, 2.0, 4.0, 3.0];
/// assert_eq!(secondo_linalg::symmetrized(&m, 2, 1.0), vec![1.0, 3.0, 3.0, 3.0]);
/// ```
pub fn symmetrized(m: &[f64], n: usize, scale: f64) -> Vec<f64> {
    (0..n * n)
        .map(|k| 0.5 * scale * (m[k] + m[(k % n) * n + k / n]))
        .collect()
}

/// The inverse of a dense symmetric positive-definite matrix, by its
/// Cholesky factorization `A = L Lᵀ` and `A⁻¹ = L⁻ᵀ L⁻¹` (about `n³` flops,
/// a fraction of an eigendecomposition's), as a full `n × n` matrix (row- and
/// column-major alike). Refuses a matrix with a pivot that is not positive.
///
/// # Example
///
/// ```
/// use secondo_linalg::{dense_spd_inverse, DenseSymmetric, LinalgError};
///
/// let inv = dense_spd_inverse(&DenseSymmetric::new(2, vec![2.0, 1.0, 1.0, 2.0])?)?;
/// let expected = [2.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0, 2.0 / 3.0];
/// assert!(inv.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-15));
/// let singular = DenseSymmetric::new(2, vec![1.0, 1.0, 1.0, 1.0])?;
/// assert!(matches!(dense_spd_inverse(&singular), Err(LinalgError::NotPositiveDefiniteMatrix { .. })));
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn dense_spd_inverse(matrix: &DenseSymmetric) -> Result<Vec<f64>, LinalgError> {
    Ok(dense_spd_inverse_log_det(matrix)?.0)
}

/// [`dense_spd_inverse`] and `log det A` from the same Cholesky factor
/// (`2 Σ log Lᵢᵢ`): a determinant and an inverse for a third of an
/// eigendecomposition's work.
///
/// ```
/// use secondo_linalg::{dense_spd_inverse_log_det, DenseSymmetric};
/// let a = DenseSymmetric::new(2, vec![2.0, 0.0, 0.0, 8.0])?;
/// let (inv, log_det) = dense_spd_inverse_log_det(&a)?;
/// let expected = [0.5, 0.0, 0.0, 0.125];
/// assert!(inv.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-15));
/// assert!((log_det - 16f64.ln()).abs() < 1e-15);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn dense_spd_inverse_log_det(matrix: &DenseSymmetric) -> Result<(Vec<f64>, f64), LinalgError> {
    use faer::linalg::cholesky::llt;
    let n = matrix.dim();
    let mut l = Mat::from_fn(n, n, |i, j| matrix.as_slice()[j * n + i]);
    let scratch =
        llt::factor::cholesky_in_place_scratch::<f64>(n, DECOMPOSITIONS, Default::default())
            .or(llt::inverse::inverse_scratch::<f64>(n, DECOMPOSITIONS));
    let mut buffer = MemBuffer::new(scratch);
    llt::factor::cholesky_in_place(
        l.as_mut(),
        Default::default(),
        DECOMPOSITIONS,
        MemStack::new(&mut buffer),
        Default::default(),
    )
    .map_err(|e| match e {
        llt::factor::LltError::NonPositivePivot { index } => {
            LinalgError::NotPositiveDefiniteMatrix { pivot: index }
        }
    })?;
    let diagonal: Vec<f64> = (0..n).map(|i| l[(i, i)]).collect();
    let log_det = 2.0 * crate::sum_ln(&diagonal);
    let mut inverse = Mat::zeros(n, n);
    llt::inverse::inverse(
        inverse.as_mut(),
        l.as_ref(),
        DECOMPOSITIONS,
        MemStack::new(&mut buffer),
    );
    // Only the lower triangle is written.
    let full: Vec<f64> = (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            if i >= j {
                inverse[(i, j)]
            } else {
                inverse[(j, i)]
            }
        })
        .collect();
    match full.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(LinalgError::NotPositiveDefiniteMatrix { pivot: index / n }),
        None => Ok((full, log_det)),
    }
}

/// faer's parallelism for the decompositions: none. Its parallel paths
/// split reductions into one part per thread, so other pools would round
/// otherwise (docs/ARCHITECTURE.md, "Determinism"); the matrices decomposed
/// here are small (Lanczos' projected matrices, a trace estimator's thin
/// sketch), so one thread costs little.
const DECOMPOSITIONS: Par = Par::Seq;

/// Eigendecomposition of the symmetric matrix whose lower triangle is stored
/// column-major in `a` (`n × n`).
pub(crate) fn symmetric_eigen(a: &[f64], n: usize) -> Result<SymmetricEigen, LinalgError> {
    if n == 0 {
        return Ok(SymmetricEigen {
            values: Vec::new(),
            vectors: Vec::new(),
        });
    }
    let (mut s, mut u) = (Diag::zeros(n), Mat::zeros(n, n));
    let scratch = evd::self_adjoint_evd_scratch::<f64>(
        n,
        ComputeEigenvectors::Yes,
        DECOMPOSITIONS,
        Default::default(),
    );
    evd::self_adjoint_evd(
        MatRef::from_column_major_slice(a, n, n),
        s.as_mut(),
        Some(u.as_mut()),
        DECOMPOSITIONS,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .map_err(|_| LinalgError::DenseNoConvergence("symmetric eigendecomposition"))?;
    let values: Vec<f64> = s.column_vector().iter().copied().collect();
    let vectors = column_major(u.as_ref());
    if values.iter().chain(&vectors).any(|x| !x.is_finite()) {
        return Err(LinalgError::DenseNoConvergence(
            "symmetric eigendecomposition",
        ));
    }
    Ok(SymmetricEigen { values, vectors })
}

/// A thin singular value decomposition `A = U diag(s) Vᵀ`, singular values non-increasing.
pub(crate) struct ThinSvd {
    /// `rows × r` left singular vectors, column-major.
    pub(crate) u: Vec<f64>,
    /// The `r = min(rows, cols)` singular values.
    pub(crate) s: Vec<f64>,
    /// `cols × r` right singular vectors, column-major.
    pub(crate) v: Vec<f64>,
}

/// Thin SVD of the column-major `rows × cols` matrix `a`.
pub(crate) fn thin_svd(a: &[f64], rows: usize, cols: usize) -> Result<ThinSvd, LinalgError> {
    if rows == 0 || cols == 0 {
        return Ok(ThinSvd {
            u: Vec::new(),
            s: Vec::new(),
            v: Vec::new(),
        });
    }
    let r = rows.min(cols);
    let (mut s, mut u, mut v) = (Diag::zeros(r), Mat::zeros(rows, r), Mat::zeros(cols, r));
    let thin = ComputeSvdVectors::Thin;
    let scratch =
        svd::svd_scratch::<f64>(rows, cols, thin, thin, DECOMPOSITIONS, Default::default());
    svd::svd(
        MatRef::from_column_major_slice(a, rows, cols),
        s.as_mut(),
        Some(u.as_mut()),
        Some(v.as_mut()),
        DECOMPOSITIONS,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .map_err(|_| LinalgError::DenseNoConvergence("singular value decomposition"))?;
    let s: Vec<f64> = s.column_vector().iter().copied().collect();
    let (u, v) = (column_major(u.as_ref()), column_major(v.as_ref()));
    if s.iter().chain(&u).chain(&v).any(|x| !x.is_finite()) {
        return Err(LinalgError::DenseNoConvergence(
            "singular value decomposition",
        ));
    }
    Ok(ThinSvd { u, s, v })
}

fn column_major(m: MatRef<'_, f64>) -> Vec<f64> {
    (0..m.ncols())
        .flat_map(|j| m.col(j).iter().copied().collect::<Vec<_>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svd_reconstructs_a_rectangular_matrix() {
        // 3×2 column-major.
        let a = [1.0, 2.0, 3.0, -1.0, 0.0, 4.0];
        let svd = thin_svd(&a, 3, 2).unwrap();
        assert_eq!(svd.s.len(), 2);
        assert!(svd.s[0] >= svd.s[1]);
        for i in 0..3 {
            for j in 0..2 {
                let rebuilt: f64 = (0..2)
                    .map(|r| svd.u[r * 3 + i] * svd.s[r] * svd.v[r * 2 + j])
                    .sum();
                assert!((rebuilt - a[j * 3 + i]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn eigen_reads_only_the_lower_triangle() {
        // Lower triangle of [[2, 1], [1, 2]]; the upper entry is garbage.
        let eig = symmetric_eigen(&[2.0, 1.0, 99.0, 2.0], 2).unwrap();
        assert!((eig.values[0] - 1.0).abs() < 1e-14);
        assert!((eig.values[1] - 3.0).abs() < 1e-14);
    }
}
