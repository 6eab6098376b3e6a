//! α, the normalized step length (Cockpit; Schneider, Dangel & Hennig 2021,
//! after the probabilistic line search of Mahsereci & Hennig 2017).
//!
//! A quadratic `q(τ) = μ₀ + μ₁ τ + μ₂ τ²` along the step from `θ_t`
//! (τ = 0) to `θ_{t+1}` (τ = ‖d‖) is fitted, by least squares weighted with
//! the inverse noise variances, to the batch losses and the directional
//! derivatives `(B c_n)·d / ‖d‖` at both ends (the sample means, and the
//! sample variances of the per-sample values as noise). With the fitted
//! minimum at `τ* = −μ₁ / (2μ₂)`, `α = ‖d‖ / τ* − 1`: −1 is no step, 0 lands
//! at the minimum, 1 at the far point of equal height; a concave fit gives −1.

/// Zeroth- and first-order observations at one end of the step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The batch loss.
    pub loss: f64,
    /// Sample variance of the per-sample losses.
    pub loss_var: f64,
    /// Mean of the per-sample directional derivatives along the step.
    pub slope: f64,
    /// Their sample variance.
    pub slope_var: f64,
}

/// The observation at one end from the per-sample losses `terms` and
/// directional derivatives `slopes` (`(B c_n)·d / ‖d‖`), with the batch loss.
pub fn observe(loss: f64, terms: &[f64], slopes: &[f64]) -> Observation {
    Observation {
        loss,
        loss_var: sample_variance(terms),
        slope: slopes.iter().sum::<f64>() / slopes.len().max(1) as f64,
        slope_var: sample_variance(slopes),
    }
}

/// Cockpit's stand-in for a zero variance (the fit divides by it).
const TINY_VARIANCE: f64 = 1e-10;

/// α for a step of length `t` between `start` and `end`; `None` when the
/// fit is singular.
///
/// ```
/// use secondo::monitor::alpha::{alpha, Observation};
/// // q(τ) = (τ − 1)²: a step of length 1 lands at the minimum (α = 0), of
/// // length 2 on the far side at equal height (α = 1).
/// let at = |t: f64| Observation { loss: (t - 1.0f64).powi(2), loss_var: 1.0, slope: 2.0 * (t - 1.0), slope_var: 1.0 };
/// assert!(alpha(1.0, at(0.0), at(1.0)).unwrap().abs() < 1e-12);
/// assert!((alpha(2.0, at(0.0), at(2.0)).unwrap() - 1.0).abs() < 1e-12);
/// ```
pub fn alpha(t: f64, start: Observation, end: Observation) -> Option<f64> {
    // Rows of Φᵀ: [1, τ, τ²] for a value, [0, 1, 2τ] for a slope.
    let rows = [
        ([1.0, 0.0, 0.0], start.loss, start.loss_var),
        ([1.0, t, t * t], end.loss, end.loss_var),
        ([0.0, 1.0, 0.0], start.slope, start.slope_var),
        ([0.0, 1.0, 2.0 * t], end.slope, end.slope_var),
    ];
    let mut normal = [[0.0; 3]; 3];
    let mut rhs = [0.0; 3];
    for (phi, y, var) in rows {
        let w = 1.0 / if var == 0.0 { TINY_VARIANCE } else { var };
        for i in 0..3 {
            rhs[i] += w * phi[i] * y;
            for j in 0..3 {
                normal[i][j] += w * phi[i] * phi[j];
            }
        }
    }
    let mu = solve3(normal, rhs);
    match mu {
        None if t == 0.0 => Some(-1.0),
        None => None,
        Some(mu) if mu[2] < 0.0 => Some(-1.0),
        Some(mu) => Some(2.0 * t / (-mu[1] / mu[2]) - 1.0),
    }
}

/// Solves a 3×3 system by Gaussian elimination with partial pivoting;
/// `None` when singular (as `numpy.linalg.inv` raises).
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs().partial_cmp(&(1e-14 * scale)) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..3 {
            let f = a[row][col] / pivot_row[col];
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let rest: f64 = (row + 1..3).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    Some(x)
}

/// Variance with `n − 1` in the denominator (torch's and numpy's `ddof=1`).
pub fn sample_variance(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
}
