//! Gram–Schmidt orthogonalization of column-major blocks (classical, with a
//! second pass when the first one cancelled much of a column: the DGKS
//! criterion).

use crate::blas::{self, Stored};

/// Orthonormal columns of length `n`, stored column-major, to orthogonalize
/// against.
#[derive(Clone, Copy)]
pub(crate) struct Basis<'a, S> {
    vectors: &'a [S],
    n: usize,
}

impl<'a, S: Stored> Basis<'a, S> {
    /// The columns of `vectors` (a whole number of columns of length `n`).
    pub(crate) fn new(vectors: &'a [S], n: usize) -> Self {
        Self { vectors, n }
    }

    fn len(&self) -> usize {
        self.vectors.len() / self.n.max(1)
    }

    /// Removes from the `k` columns of `w` (`n × k`) their components along
    /// the basis, and writes the total coefficients `basisᵀ w` (`m × k`)
    /// into `coef`. A second pass runs only when some column lost more than
    /// 1 − 1/√2 of its norm in the first (Daniel, Gragg, Kaufman and Stewart
    /// 1976): each pass reads the whole basis twice, which dominates Lanczos
    /// on large operators.
    pub(crate) fn orthogonalize(&self, w: &mut [f64], k: usize, coef: &mut [f64]) {
        self.orthogonalize_above(w, k, coef, 0.0);
    }

    /// One round of classical Gram–Schmidt: removes from the `k` columns of
    /// `w` their components along the basis and writes them into `coef`,
    /// without checking for cancellation. For Lanczos' newest vectors, whose
    /// leftovers the following [`Basis::reorthogonalize`] over the whole
    /// basis catches.
    pub(crate) fn project_out(&self, w: &mut [f64], k: usize, coef: &mut [f64]) {
        let (n, m) = (self.n, self.len());
        if m == 0 || k == 0 {
            return;
        }
        blas::matmul_tn(coef, self.vectors, w, n, m, k);
        blas::matmul_sub(w, self.vectors, coef, n, m, k);
    }

    /// Like [`Basis::orthogonalize`], but leaves in place (with zero
    /// coefficients) the components of each column along basis vectors that
    /// are within [`Stored::SEMI_ORTHOGONAL`] (√ε for f64) of its norm, and
    /// skips those vectors in the update: semi-orthogonality keeps the
    /// Lanczos projection accurate to working precision (Simon 1984). A
    /// Lanczos step's new direction is orthogonal to all but the newest
    /// vectors up to rounding, and loses orthogonality only towards a few
    /// (the converged Ritz vectors): on the benchmark's f32 Hessian 16% of
    /// the components needed removing, so the update reads a sixth of the
    /// basis instead of all of it.
    pub(crate) fn reorthogonalize(&self, w: &mut [f64], k: usize, coef: &mut [f64]) {
        self.orthogonalize_above(w, k, coef, S::SEMI_ORTHOGONAL);
    }

    /// Classical Gram–Schmidt with the DGKS second round; the first round
    /// keeps the components with `|v_iᵀ w_c| ≤ threshold · ‖w_c‖`.
    fn orthogonalize_above(&self, w: &mut [f64], k: usize, coef: &mut [f64], threshold: f64) {
        let (n, m, basis) = (self.n, self.len(), self.vectors);
        coef.fill(0.0);
        if m == 0 || k == 0 {
            return;
        }
        let mut pass = vec![0.0; m * k];
        let norms = |w: &[f64]| -> Vec<f64> { w.chunks_exact(n.max(1)).map(blas::norm).collect() };
        for round in 0..2 {
            let before = norms(w);
            blas::matmul_tn(&mut pass, basis, w, n, m, k);
            if round == 0 && threshold > 0.0 {
                // Components within the threshold stay; zero coefficients cost
                // no pass over their basis vector.
                for (p, norm) in pass.chunks_exact_mut(m).zip(&before) {
                    p.iter_mut()
                        .filter(|x| x.abs() <= threshold * norm)
                        .for_each(|x| *x = 0.0);
                }
                if pass.iter().all(|&x| x == 0.0) {
                    return;
                }
            }
            blas::matmul_sub(w, basis, &pass, n, m, k);
            for (c, p) in coef.iter_mut().zip(&pass) {
                *c += p;
            }
            let kept_enough = norms(w)
                .iter()
                .zip(&before)
                .all(|(after, b)| *after >= std::f64::consts::FRAC_1_SQRT_2 * b);
            if round == 0 && kept_enough {
                break;
            }
        }
    }
}

/// An orthonormal basis (`n × r`, column-major) of the span of the `k` columns
/// of `y`, dropping columns whose remainder after orthogonalization is at most
/// `rel_tol` times the largest column norm of `y`.
pub(crate) fn orthonormal_basis(y: &[f64], n: usize, k: usize, rel_tol: f64) -> Vec<f64> {
    let largest = y.chunks_exact(n.max(1)).map(blas::norm).fold(0.0, f64::max);
    let mut q: Vec<f64> = Vec::with_capacity(n * k);
    let mut coef = vec![0.0; k];
    for column in y.chunks_exact(n.max(1)).take(k) {
        let mut w = column.to_vec();
        let r = q.len() / n.max(1);
        Basis::new(&q, n).orthogonalize(&mut w, 1, &mut coef[..r]);
        let norm = blas::norm(&w);
        if norm > rel_tol * largest && norm > 0.0 {
            blas::scale(1.0 / norm, &mut w);
            q.extend_from_slice(&w);
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependent_columns_are_dropped() {
        // Columns (1,0,0), (2,0,0), (1,1,0).
        let y = [1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 1.0, 1.0, 0.0];
        let q = orthonormal_basis(&y, 3, 3, 1e-12);
        assert_eq!(q.len(), 6);
        assert!((blas::dot(&q[..3], &q[3..])).abs() < 1e-15);
        assert!((blas::norm(&q[3..]) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn reorthogonalization_skips_only_rounding_sized_components() {
        let basis = [1.0, 0.0, 0.0];
        let mut coef = [0.0; 1];
        let mut tiny = [1e-12, 1.0, 0.0];
        Basis::new(&basis[..], 3).reorthogonalize(&mut tiny, 1, &mut coef);
        assert_eq!((tiny, coef), ([1e-12, 1.0, 0.0], [0.0]));
        let mut large = [1e-6, 1.0, 0.0];
        Basis::new(&basis[..], 3).reorthogonalize(&mut large, 1, &mut coef);
        assert_eq!((large, coef), ([0.0, 1.0, 0.0], [1e-6]));
        let two = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let mut coef = [0.0; 2];
        let mut mixed = [1e-12, 1.0, 0.5];
        Basis::new(&two[..], 3).reorthogonalize(&mut mixed, 1, &mut coef);
        assert_eq!((mixed, coef), ([1e-12, 1.0, 0.0], [0.0, 0.5]));
    }

    #[test]
    fn coefficients_are_the_projections() {
        let basis = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let mut w = [3.0, 4.0, 5.0];
        let mut coef = [0.0; 2];
        Basis::new(&basis[..], 3).orthogonalize(&mut w, 1, &mut coef);
        assert_eq!(coef, [3.0, 4.0]);
        assert_eq!(w, [0.0, 0.0, 5.0]);
    }
}
