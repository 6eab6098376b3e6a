//! The Krylov basis of block Lanczos with reorthogonalization (semi-orthogonal
//! to working precision) and thick restart.
//!
//! The basis `V = [v_0 … v_{len−1}]` is orthonormal. The first `multiplied`
//! vectors have been multiplied by `A`; the rest (at most one block) wait for
//! the next step. The projected matrix `T = Vᵀ A V` is stored by its lower
//! triangle: column `c` holds `v_iᵀ A v_c` for `i ≥ c`, computed while
//! orthogonalizing `A v_c` against the basis. Rows of unmultiplied vectors in
//! the multiplied columns couple the Rayleigh–Ritz problem to the rest of the
//! space and give the residual norms of the Ritz pairs.

use rand_chacha::ChaCha8Rng;

use super::ritz::Ritz;
use crate::blas::{self, Stored};
use crate::dense::symmetric_eigen;
use crate::metered::Metered;
use crate::ortho::Basis;
use crate::random::{fill_uniform, generator};
use crate::{LinalgError, SymmetricOperator};

/// A new direction shorter than this fraction of ‖A‖ marks an invariant subspace.
const BREAKDOWN: f64 = 1e-12;
/// A random vector keeping less than this fraction of its norm after
/// orthogonalization is treated as lying in the span of the basis.
const RANDOM_REMAINDER: f64 = 1e-8;
/// Random vectors tried before giving up on extending the basis.
const RANDOM_TRIES: usize = 4;

pub(super) struct Krylov<S> {
    n: usize,
    cap: usize,
    basis: Vec<S>,
    len: usize,
    multiplied: usize,
    proj: Vec<f64>,
    anorm: f64,
    rng: ChaCha8Rng,
    /// The products of a step, kept between steps (a fresh buffer of this
    /// size costs page faults on every step).
    scratch: Vec<f64>,
    /// The buffer a restart writes the next basis into.
    spare: Vec<S>,
    /// The waiting vectors in f64 when the basis is stored in f32.
    input: Vec<f64>,
}

impl<S: Stored> Krylov<S> {
    /// A basis of `block` orthonormal vectors, able to grow to `cap` vectors:
    /// the columns of `start` (`n × m`, column-major) folded into `block`
    /// columns (column `j` sums the start columns `i ≡ j mod block`, so that
    /// every start direction is in the first block), orthonormalized, and
    /// random vectors for what they leave.
    pub(super) fn new(n: usize, cap: usize, block: usize, seed: u64, start: &[f64]) -> Self {
        let mut krylov = Self {
            n,
            cap,
            // Grown as vectors arrive: a zeroed `n × cap` buffer cost more
            // than the products of a warm-started run that needs a few.
            basis: Vec::with_capacity(n * cap),
            len: 0,
            multiplied: 0,
            proj: vec![0.0; cap * cap],
            anorm: 0.0,
            rng: generator(seed),
            scratch: Vec::new(),
            spare: Vec::new(),
            input: Vec::new(),
        };
        let mut folded = vec![0.0; n * block];
        for (i, column) in start.chunks_exact(n).enumerate() {
            let target = &mut folded[(i % block) * n..(i % block + 1) * n];
            target.iter_mut().zip(column).for_each(|(t, c)| *t += c);
        }
        let mut coef = vec![0.0; block];
        for column in folded.chunks_exact_mut(n) {
            let before = blas::norm(column);
            krylov
                .columns(0..krylov.len)
                .orthogonalize(column, 1, &mut coef[..krylov.len]);
            let after = blas::norm(column);
            if before.is_finite() && after > RANDOM_REMAINDER * before {
                krylov.push(column, after);
            }
        }
        while krylov.len < block.min(n) {
            let len = krylov.len;
            krylov.push_random();
            if krylov.len == len {
                break;
            }
        }
        krylov
    }

    pub(super) fn multiplied(&self) -> usize {
        self.multiplied
    }

    pub(super) fn unmultiplied(&self) -> usize {
        self.len - self.multiplied
    }

    /// Whether the next step would overflow the basis capacity.
    pub(super) fn needs_restart(&self) -> bool {
        self.cap < self.n && self.len + self.unmultiplied() > self.cap
    }

    fn set(&mut self, row: usize, col: usize, value: f64) {
        self.proj[col * self.cap + row] = value;
    }

    fn get(&self, row: usize, col: usize) -> f64 {
        self.proj[col * self.cap + row]
    }

    /// The basis vectors `range`.
    fn columns(&self, range: std::ops::Range<usize>) -> Basis<'_, S> {
        Basis::new(
            &self.basis[range.start * self.n..range.end * self.n],
            self.n,
        )
    }

    /// Appends `w / ‖w‖` to the basis.
    fn push(&mut self, w: &[f64], norm: f64) {
        let inverse = 1.0 / norm;
        self.basis.truncate(self.len * self.n);
        self.basis
            .extend(w.iter().map(|x| S::from_f64(x * inverse)));
        self.len += 1;
    }

    /// Appends a random unit vector orthogonal to the basis, if one can be found.
    fn push_random(&mut self) {
        let n = self.n;
        let mut coef = vec![0.0; self.len];
        let mut w = vec![0.0; n];
        for _ in 0..RANDOM_TRIES {
            if self.len == n {
                return;
            }
            fill_uniform(&mut self.rng, &mut w);
            let before = blas::norm(&w);
            self.columns(0..self.len)
                .orthogonalize(&mut w, 1, &mut coef);
            let after = blas::norm(&w);
            if after > RANDOM_REMAINDER * before {
                self.push(&w, after);
                return;
            }
        }
    }

    /// One block step: multiplies the waiting vectors by `A`, records their
    /// projections and appends the orthonormalized remainders to the basis.
    pub(super) fn expand<O: SymmetricOperator + ?Sized>(
        &mut self,
        op: &mut Metered<'_, '_, O>,
    ) -> Result<(), LinalgError> {
        let (n, first, width, old_len) = (self.n, self.multiplied, self.unmultiplied(), self.len);
        let mut w = std::mem::take(&mut self.scratch);
        w.resize(n * width, 0.0);
        let waiting = &self.basis[first * n..(first + width) * n];
        match S::as_f64(waiting) {
            Some(v) => op.apply(v, width, &mut w)?,
            None => {
                self.input.clear();
                self.input.extend(waiting.iter().map(|x| x.to_f64()));
                op.apply(&self.input, width, &mut w)?;
            }
        }
        for column in w.chunks_exact(n) {
            self.anorm = self.anorm.max(blas::norm(column));
        }
        // First one round against the newest blocks, which hold almost all
        // of `A v` (the three-term recurrence); then the pass over the whole
        // basis (the one that streams it) finds only rounding-sized
        // components, and removes just those above √ε.
        let lo = first.saturating_sub(width);
        let recent = old_len - lo;
        let mut local = vec![0.0; recent * width];
        self.columns(lo..old_len)
            .project_out(&mut w, width, &mut local);
        let mut coef = vec![0.0; old_len * width];
        self.columns(0..old_len)
            .reorthogonalize(&mut w, width, &mut coef);
        for a in 0..width {
            for r in 0..recent {
                coef[a * old_len + lo + r] += local[a * recent + r];
            }
        }
        for a in 0..width {
            let col = first + a;
            for row in col..old_len {
                self.set(row, col, coef[a * old_len + row]);
            }
        }
        for (a, column) in w.chunks_exact_mut(n).enumerate() {
            let col = first + a;
            let fresh = self.len - old_len;
            let mut fresh_coef = vec![0.0; fresh];
            self.columns(old_len..self.len)
                .orthogonalize(column, 1, &mut fresh_coef);
            for (b, h) in fresh_coef.into_iter().enumerate() {
                self.set(old_len + b, col, h);
            }
            if self.len == n {
                continue;
            }
            let norm = blas::norm(column);
            if norm > BREAKDOWN * self.anorm {
                let row = self.len;
                self.set(row, col, norm);
                self.push(column, norm);
            } else {
                self.push_random();
            }
        }
        self.multiplied += width;
        self.scratch = w;
        Ok(())
    }

    /// Rayleigh–Ritz on the multiplied part of the basis.
    pub(super) fn ritz(&self) -> Result<Ritz, LinalgError> {
        let m = self.multiplied;
        let mut t = vec![0.0; m * m];
        for col in 0..m {
            for row in col..m {
                t[col * m + row] = self.get(row, col);
            }
        }
        let eig = symmetric_eigen(&t, m)?;
        let residuals = eig
            .vectors
            .chunks_exact(m.max(1))
            .map(|s| blas::norm(&self.coupling(s)))
            .collect();
        Ok(Ritz::new(eig.values, eig.vectors, residuals))
    }

    /// `v_rᵀ A V s` for the waiting vectors `v_r`: the residual of the Ritz
    /// vector `V s` expressed in the waiting vectors.
    fn coupling(&self, s: &[f64]) -> Vec<f64> {
        let m = self.multiplied;
        (m..self.len)
            .map(|row| (0..m).map(|col| self.get(row, col) * s[col]).sum())
            .collect()
    }

    /// The Ritz vectors `V s_j` for the indices `which` (column-major `n × which.len()`).
    pub(super) fn ritz_vectors(&self, ritz: &Ritz, which: &[usize]) -> Vec<f64> {
        let mut stored = vec![S::default(); self.n * which.len()];
        self.ritz_vectors_into(ritz, which, &mut stored);
        let mut x: Vec<f64> = stored.into_iter().map(S::to_f64).collect();
        // The basis is orthonormal to within √ε (semi-orthogonality), so the
        // combinations are unit vectors to within about ε·m: normalize.
        for column in x.chunks_exact_mut(self.n.max(1)) {
            let norm = blas::norm(column);
            if norm > 0.0 {
                blas::scale(1.0 / norm, column);
            }
        }
        x
    }

    /// [`Krylov::ritz_vectors`] written into `x` (not normalized).
    fn ritz_vectors_into(&self, ritz: &Ritz, which: &[usize], x: &mut [S]) {
        let (n, m, l) = (self.n, self.multiplied, which.len());
        let coords: Vec<f64> = which
            .iter()
            .flat_map(|&j| ritz.vector(j).iter().copied())
            .collect();
        S::combine(x, &self.basis[..m * n], &coords, n, m, l);
    }

    /// Thick restart: keeps the Ritz vectors `keep` and the waiting block.
    /// The new basis is written into a second buffer that then swaps with
    /// the first: a fresh buffer per restart cost more in page faults than
    /// the product itself.
    pub(super) fn restart(&mut self, ritz: &Ritz, keep: &[usize]) {
        let (n, m, l, waiting) = (self.n, self.multiplied, keep.len(), self.unmultiplied());
        let mut next = std::mem::take(&mut self.spare);
        next.clear();
        next.resize((l + waiting) * n, S::default());
        self.ritz_vectors_into(ritz, keep, &mut next[..l * n]);
        next[l * n..(l + waiting) * n].copy_from_slice(&self.basis[m * n..(m + waiting) * n]);
        self.spare = std::mem::replace(&mut self.basis, next);
        let coupling: Vec<Vec<f64>> = keep
            .iter()
            .map(|&j| self.coupling(ritz.vector(j)))
            .collect();
        self.proj.fill(0.0);
        for (i, (&j, row)) in keep.iter().zip(&coupling).enumerate() {
            self.set(i, i, ritz.values[j]);
            for (a, &value) in row.iter().enumerate() {
                self.set(l + a, i, value);
            }
        }
        self.multiplied = l;
        self.len = l + waiting;
    }
}
