//! Symmetric matrices through their eigendecomposition `M = Q diag(m) Qᵀ`,
//! shared by the dense, Kronecker-factored and low-rank preconditioners: spectral
//! functions `f(M) v = Q f(m) Qᵀ v` (fractional powers included) and the
//! change of basis of matrices (`Qᵀ V`, `V Q`).

use secondo_linalg::{
    dense_symmetric_eigen, row_major_product, symmetrized, DenseSymmetric, RowMajor,
};

use crate::state::Scope;
use crate::Error;

/// The eigendecomposition of an `n × n` symmetric matrix.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Eigenbasis {
    /// Eigenvalues, ascending.
    pub(crate) values: Vec<f64>,
    /// Eigenvectors as the columns of a row-major `n × n` matrix `Q`.
    q: Vec<f64>,
    n: usize,
}

impl Eigenbasis {
    /// Decomposes the row-major `n × n` matrix `m`, symmetrized first (a
    /// matrix built in `f32` or from products is symmetric up to rounding).
    pub(crate) fn new(m: &[f64], n: usize) -> Result<Eigenbasis, Error> {
        let sym = symmetrized(m, n, 1.0);
        let eig = dense_symmetric_eigen(&DenseSymmetric::new(n, sym)?)?;
        let mut q = vec![0.0; n * n];
        for (j, column) in eig.vectors.chunks(n.max(1)).enumerate() {
            for (i, x) in column.iter().enumerate() {
                q[i * n + j] = *x;
            }
        }
        Ok(Eigenbasis {
            values: eig.values,
            q,
            n,
        })
    }

    /// Saves the eigenvalues and eigenvectors as they are: recomputed, a
    /// decomposition could differ in the last bits (or in the signs of the
    /// vectors), and every later solve with it.
    pub(crate) fn save(&self, state: &mut Scope<'_>) {
        state.put_values("eigenvalues", &self.values);
        state.put_values("eigenvectors", &self.q);
    }

    /// Restores what [`Eigenbasis::save`] wrote for an `n × n` matrix.
    pub(crate) fn restore(state: &mut Scope<'_>, n: usize) -> Result<Eigenbasis, Error> {
        Ok(Eigenbasis {
            values: state.take_values("eigenvalues", n)?,
            q: state.take_values("eigenvectors", n * n)?,
            n,
        })
    }

    /// [`Eigenbasis::restore`] where one was saved.
    pub(crate) fn restore_optional(
        state: &mut Scope<'_>,
        n: usize,
    ) -> Result<Option<Eigenbasis>, Error> {
        match state.has("eigenvalues") {
            true => Eigenbasis::restore(state, n).map(Some),
            false => Ok(None),
        }
    }

    /// `Qᵀ V` for a row-major `n × cols` matrix `V`.
    pub(crate) fn project_left(&self, v: &[f64], cols: usize) -> Vec<f64> {
        matmul_transposed_left(&self.q, v, self.n, self.n, cols)
    }

    /// `Q V` for a row-major `n × cols` matrix `V`.
    pub(crate) fn back_left(&self, v: &[f64], cols: usize) -> Vec<f64> {
        matmul(&self.q, v, self.n, self.n, cols)
    }

    /// `V Q` for a row-major `rows × n` matrix `V`.
    pub(crate) fn project_right(&self, v: &[f64], rows: usize) -> Vec<f64> {
        matmul(v, &self.q, rows, self.n, self.n)
    }

    /// `V Qᵀ` for a row-major `rows × n` matrix `V`.
    pub(crate) fn back_right(&self, v: &[f64], rows: usize) -> Vec<f64> {
        matmul_transposed_right(v, &self.q, rows, self.n, self.n)
    }

    /// `f(M) = Q f(m) Qᵀ` as a row-major `n × n` matrix (symmetric).
    pub(crate) fn function(&self, f: impl Fn(f64) -> f64) -> Vec<f64> {
        let n = self.n;
        let mut scaled = self.q.clone();
        for row in scaled.chunks_mut(n.max(1)) {
            row.iter_mut()
                .zip(&self.values)
                .for_each(|(x, m)| *x *= f(*m));
        }
        matmul_transposed_right(&scaled, &self.q, n, n, n)
    }

    /// `Q f(m) Qᵀ v` for a vector `v`.
    pub(crate) fn apply(&self, v: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
        let mut c = self.project_left(v, 1);
        for (x, m) in c.iter_mut().zip(&self.values) {
            *x *= f(*m);
        }
        self.back_left(&c, 1)
    }
}

/// `A B` for row-major `A` (`m × k`) and `B` (`k × n`).
pub(crate) fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    row_major_product(RowMajor::new(a, m, k), RowMajor::new(b, k, n))
}

/// `Aᵀ B` for row-major `A` (`k × m`) and `B` (`k × n`).
fn matmul_transposed_left(a: &[f64], b: &[f64], k: usize, m: usize, n: usize) -> Vec<f64> {
    row_major_product(RowMajor::new(a, k, m).t(), RowMajor::new(b, k, n))
}

/// `A Bᵀ` for row-major `A` (`m × k`) and `B` (`n × k`).
fn matmul_transposed_right(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    row_major_product(RowMajor::new(a, m, k), RowMajor::new(b, n, k).t())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_of_basis_invert_each_other_and_reconstruct_the_matrix() {
        let m = [4.0, 1.0, 0.5, 1.0, 3.0, -0.2, 0.5, -0.2, 2.0];
        let e = Eigenbasis::new(&m, 3).unwrap();
        let v = [1.0, -2.0, 0.5, 3.0, 0.0, 1.0]; // 3 × 2
        let back = e.back_left(&e.project_left(&v, 2), 2);
        assert!(back.iter().zip(&v).all(|(a, b)| (a - b).abs() < 1e-12));
        let w = [1.0, -2.0, 0.5, 3.0, 0.0, 1.0]; // 2 × 3
        let back = e.back_right(&e.project_right(&w, 2), 2);
        assert!(back.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-12));
        let mv = e.apply(&[1.0, 2.0, 3.0], |x| x);
        let direct = matmul(&m, &[1.0, 2.0, 3.0], 3, 3, 1);
        assert!(mv.iter().zip(&direct).all(|(a, b)| (a - b).abs() < 1e-12));
    }
}
