//! Test matrices with known spectra.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secondo_linalg::{dense_symmetric_eigen, DenseSymmetric, SymmetricOperator};

/// `len` independent standard normal numbers (Box–Muller).
pub fn gaussian(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * u2;
        out.push(radius * angle.cos());
        out.push(radius * angle.sin());
    }
    out.truncate(len);
    out
}

/// A Haar-random orthogonal matrix (column-major): the eigenvectors of a GOE matrix.
pub fn random_orthogonal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = gaussian(&mut rng, n * n);
    let mut sym = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            sym[i * n + j] = 0.5 * (g[i * n + j] + g[j * n + i]);
        }
    }
    dense_symmetric_eigen(&DenseSymmetric::new(n, sym).unwrap())
        .unwrap()
        .vectors
}

/// `Q diag(eigs) Qᵀ` for a random orthogonal `Q`.
pub fn with_spectrum(eigs: &[f64], seed: u64) -> DenseSymmetric {
    let n = eigs.len();
    let q = random_orthogonal(n, seed);
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let value: f64 = (0..n).map(|k| q[k * n + i] * eigs[k] * q[k * n + j]).sum();
            a[i * n + j] = value;
            a[j * n + i] = value;
        }
    }
    DenseSymmetric::new(n, a).unwrap()
}

/// `‖A x − θ x‖`.
pub fn residual(a: &impl SymmetricOperator, theta: f64, x: &[f64]) -> f64 {
    let mut ax = vec![0.0; x.len()];
    a.apply_block(x, 1, &mut ax).unwrap();
    ax.iter()
        .zip(x)
        .map(|(y, x)| (y - theta * x).powi(2))
        .sum::<f64>()
        .sqrt()
}

pub fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}
