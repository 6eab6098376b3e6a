//! Gauss quadrature of the spectral measure seen from random probes, by
//! Lanczos with full reorthogonalization run on several probes at once.

use rand_chacha::ChaCha8Rng;

use crate::dense::symmetric_eigen;
use crate::metered::Metered;
use crate::ortho::Basis;
use crate::random::fill_rademacher;
use crate::{blas, LinalgError, SymmetricOperator};

/// A new Lanczos direction shorter than this fraction of ‖A‖ ends the probe:
/// its Krylov space is invariant and the quadrature is exact.
const BREAKDOWN: f64 = 1e-12;

/// Nodes (Ritz values) and weights (squared first components of the Ritz
/// vectors) of one probe; the weights sum to one.
pub(super) struct Quadrature {
    pub(super) nodes: Vec<f64>,
    pub(super) weights: Vec<f64>,
}

/// The Lanczos recurrence of one probe.
struct Probe {
    basis: Vec<f64>,
    len: usize,
    alphas: Vec<f64>,
    betas: Vec<f64>,
    anorm: f64,
    done: bool,
}

impl Probe {
    fn new(start: &[f64], steps: usize) -> Self {
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

    fn current(&self, n: usize) -> &[f64] {
        &self.basis[(self.len - 1) * n..self.len * n]
    }

    /// Takes `w = A v_last`, extends the recurrence and decides whether to stop.
    fn advance(&mut self, mut w: Vec<f64>, steps: usize) {
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

    fn quadrature(&self) -> Result<Quadrature, LinalgError> {
        let m = self.alphas.len();
        let mut t = vec![0.0; m * m];
        for (i, alpha) in self.alphas.iter().enumerate() {
            t[i * m + i] = *alpha;
        }
        for (i, beta) in self.betas.iter().enumerate() {
            t[i * m + i + 1] = *beta;
        }
        let eig = symmetric_eigen(&t, m)?;
        let weights = eig.vectors.chunks_exact(m).map(|v| v[0] * v[0]).collect();
        Ok(Quadrature {
            nodes: eig.values,
            weights,
        })
    }
}

/// Runs `steps` Lanczos steps from each of `count` normalized Rademacher
/// probes, `block` probes at a time (one block product per step).
pub(super) fn quadratures<O: SymmetricOperator + ?Sized>(
    metered: &mut Metered<'_, '_, O>,
    rng: &mut ChaCha8Rng,
    count: usize,
    steps: usize,
    block: usize,
) -> Result<Vec<Quadrature>, LinalgError> {
    let n = metered.dim();
    let mut result = Vec::with_capacity(count);
    let mut remaining = count;
    while remaining > 0 {
        let batch = block.min(remaining);
        let mut start = vec![0.0; n * batch];
        fill_rademacher(rng, &mut start);
        let mut probes: Vec<Probe> = start
            .chunks_exact(n)
            .map(|s| Probe::new(s, steps))
            .collect();
        loop {
            let active: Vec<usize> = (0..batch).filter(|&p| !probes[p].done).collect();
            if active.is_empty() {
                break;
            }
            let v: Vec<f64> = active
                .iter()
                .flat_map(|&p| probes[p].current(n).iter().copied())
                .collect();
            let mut w = vec![0.0; v.len()];
            metered.apply(&v, active.len(), &mut w)?;
            for (&p, column) in active.iter().zip(w.chunks_exact(n)) {
                probes[p].advance(column.to_vec(), steps);
            }
        }
        for probe in &probes {
            result.push(probe.quadrature()?);
        }
        remaining -= batch;
    }
    Ok(result)
}
