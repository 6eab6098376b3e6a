//! The three-term Lanczos recurrence from one start vector, with full
//! reorthogonalization: the orthonormal basis `Q_k` of the Krylov space and
//! the tridiagonal `T_k = Q_kᵀ A Q_k`. Stochastic Lanczos quadrature reads
//! its Gauss nodes and weights from `T_k`; [`crate::lanczos_function`]
//! reads `f(A) v ≈ ‖v‖ Q_k f(T_k) e₁` from both.

use crate::dense::{symmetric_eigen, SymmetricEigen};
use crate::ortho::Basis;
use crate::{blas, LinalgError};

/// A new Lanczos direction shorter than this fraction of ‖A‖ ends the
/// recurrence: its Krylov space is invariant, and what is read from `T_k`
/// is exact.
const BREAKDOWN: f64 = 1e-12;

/// The recurrence of one start vector, advanced one product at a time.
pub(crate) struct Recurrence {
    basis: Vec<f64>,
    len: usize,
    alphas: Vec<f64>,
    betas: Vec<f64>,
    anorm: f64,
    done: bool,
}

impl Recurrence {
    /// The recurrence from `start` (non-zero), for at most `steps` steps.
    pub(crate) fn new(start: &[f64], steps: usize) -> Self {
        let mut basis = Vec::with_capacity(start.len() * steps);
        let norm = blas::norm(start);
        basis.extend(start.iter().map(|x| x / norm));
        Self {
            basis,
            len: 1,
            alphas: Vec::new(),
            betas: Vec::new(),
            anorm: 0.0,
            done: false,
        }
    }

    /// Whether the recurrence has ended (all steps taken, or breakdown).
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// The newest basis vector, the one to multiply next.
    pub(crate) fn current(&self, n: usize) -> &[f64] {
        &self.basis[(self.len - 1) * n..self.len * n]
    }

    /// Takes `w = A q_last`, extends the recurrence and decides whether to stop.
    pub(crate) fn advance(&mut self, mut w: Vec<f64>, steps: usize) {
        let n = w.len();
        self.anorm = self.anorm.max(blas::norm(&w));
        let mut coef = vec![0.0; self.len];
        Basis::new(&self.basis, n).orthogonalize(&mut w, 1, &mut coef);
        self.alphas.push(coef[self.len - 1]);
        let beta = blas::norm(&w);
        if self.len == steps || beta <= BREAKDOWN * self.anorm {
            self.done = true;
            return;
        }
        self.betas.push(beta);
        self.basis.extend(w.iter().map(|x| x / beta));
        self.len += 1;
    }

    /// The basis vectors `q_0 … q_{k−1}`, `n` values each (once done,
    /// as many as `T_k` has rows).
    pub(crate) fn basis(&self) -> &[f64] {
        &self.basis
    }

    /// Eigenvalues and eigenvectors of `T_k` (its Ritz values and the
    /// coordinates of its Ritz vectors in the basis), once done.
    pub(crate) fn ritz(&self) -> Result<SymmetricEigen, LinalgError> {
        let m = self.alphas.len();
        let mut t = vec![0.0; m * m];
        for (i, alpha) in self.alphas.iter().enumerate() {
            t[i * m + i] = *alpha;
        }
        for (i, beta) in self.betas.iter().enumerate() {
            t[i * m + i + 1] = *beta;
        }
        symmetric_eigen(&t, m)
    }
}
