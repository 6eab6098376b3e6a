//! The gradient tests of adaptive sampling, in Cockpit's "practical" form:
//! the largest tolerance θ (or ν) for which the test would pass on this
//! batch. A value above the chosen tolerance says the batch is too small
//! for its gradient noise.
//!
//! Notation: `c_n` are the per-sample gradients scaled so that they sum to
//! the batch gradient `g = Σ_n c_n` (BackPACK's `batch_grad`), `B` the batch
//! size. Sample variances use `B − 1`.

/// Byrd, Chin, Nocedal & Wu (2012), "Sample size selection in optimization
/// methods for machine learning", eq. (3.9): `θ = √(Var‖·‖₁ / B) / ‖g‖` with
/// `Var‖·‖₁ = (B² Σ_n ‖c_n‖² − B ‖g‖²) / (B − 1)`.
///
/// ```
/// // Two samples with gradients (1, 0) and (0, 1), mean reduction.
/// let c = [0.25, 0.25]; // ‖c_n‖² with c_n = g_n / 2
/// let theta = secondo::monitor::gradient_tests::norm_test(2, &c, 0.5);
/// assert!((theta - 1.0).abs() < 1e-12);
/// ```
pub fn norm_test(batch: usize, batch_l2: &[f64], grad_l2_squared: f64) -> f64 {
    let b = batch as f64;
    let var_l1 = (b * b * batch_l2.iter().sum::<f64>() - b * grad_l2_squared) / (b - 1.0);
    (var_l1 / b / grad_l2_squared).sqrt()
}

/// Bollapragada, Byrd & Nocedal (2018), "Adaptive sampling strategies for
/// stochastic optimization", eq. (2.6): the spread of the projections
/// `p_n = B c_n·g` onto the gradient, `θ = √(Var(p) / B) / ‖g‖²` with
/// `Var(p) = (Σ_n p_n² − B ‖g‖⁴) / (B − 1)`. `batch_dot_grad` holds `c_n·g`.
pub fn inner_test(batch: usize, batch_dot_grad: &[f64], grad_l2_squared: f64) -> f64 {
    let b = batch as f64;
    let squares: f64 = batch_dot_grad.iter().map(|d| (b * d).powi(2)).sum();
    let var = (squares - b * grad_l2_squared.powi(2)) / (b - 1.0);
    (var / b / grad_l2_squared.powi(2)).sqrt()
}

/// Bollapragada, Byrd & Nocedal (2018), eq. (2.7): the spread of the
/// per-sample gradients orthogonal to `g`, `ν = √(Var⊥ / B) / ‖g‖` with
/// `Var⊥ = (B² Σ_n ‖c_n‖² − Σ_n p_n² / ‖g‖²) / (B − 1)`.
pub fn ortho_test(
    batch: usize,
    batch_l2: &[f64],
    batch_dot_grad: &[f64],
    grad_l2_squared: f64,
) -> f64 {
    let b = batch as f64;
    let squares: f64 = batch_dot_grad.iter().map(|d| (b * d).powi(2)).sum();
    let var = (b * b * batch_l2.iter().sum::<f64>() - squares / grad_l2_squared) / (b - 1.0);
    (var / b / grad_l2_squared).sqrt()
}
