//! Cockpit's curvature instruments on the mini-batch: the Hessian trace,
//! Takeuchi's information criterion and the largest Hessian eigenvalue.

use secondo_curvature::{Curvature, CurvatureOperator, Objective};
use secondo_data::Dataset;
use secondo_nn::ParamStore;

use crate::Error;

/// Cockpit's ε in the TIC denominators.
const EPSILON: f64 = 1e-7;

/// The trace of each parameter's Hessian block: the sum of its diagonal.
pub fn hess_trace(diag_hessian: &[Vec<f64>]) -> Vec<f64> {
    diag_hessian.iter().map(|d| d.iter().sum()).collect()
}

/// TIC with the Hessian diagonal (Takeuchi 1976; Thomas et al. 2020, "On
/// the interplay between noise and curvature and its effect on optimization
/// and generalization"): `Σ_i B s_i / (h_i + ε)` over every parameter
/// element, `s = Σ_n c_n²`, `h` the Hessian diagonal. The gradient noise
/// measured in the metric of the curvature; large: a sharp, noisy minimum.
pub fn tic_diag<'a>(batch: usize, elements: impl Iterator<Item = (&'a f64, &'a f64)>) -> f64 {
    let b = batch as f64;
    elements.map(|(s, h)| b * s / (h + EPSILON)).sum()
}

/// TIC with traces: `B Σ s / (Σ h + ε)`.
pub fn tic_trace<'a>(batch: usize, elements: impl Iterator<Item = (&'a f64, &'a f64)>) -> f64 {
    let (s, h) = elements.fold((0.0, 0.0), |(a, b), (s, h)| (a + s, b + h));
    batch as f64 * s / (h + EPSILON)
}

/// The largest eigenvalue of the mini-batch Hessian and its eigenvector, by
/// Lanczos warm-started from the previous step's eigenvector (consecutive
/// Hessians are close, so it converges in a few products), to a residual of
/// 10⁻³ of the eigenvalue (an eigenvalue error of about 10⁻⁶ relative;
/// Cockpit stops its power iteration at a change of 10⁻³).
pub fn hess_max_ev(
    objective: &Objective,
    params: &ParamStore,
    batch: &Dataset,
    previous: &mut MaxEigen,
) -> Result<f64, Error> {
    let op = match previous.operator.take() {
        Some(op) if op.dim() == previous.vector.len() => op.rebound(params, batch)?,
        _ => CurvatureOperator::new(
            objective,
            params,
            batch,
            batch.len(),
            Curvature::Hessian,
            None,
        )?,
    };
    let eig = crate::spectrum::top_eigen(&op, 1, 1e-3, 0, &previous.vector)?;
    previous.vector = eig.vector(0).map(<[f64]>::to_vec).unwrap_or_default();
    previous.operator = Some(op);
    Ok(eig.values[0])
}

/// What [`hess_max_ev`] keeps between steps: the eigenvector it starts from
/// and the Hessian operator, whose compiled products the next batch reuses.
#[derive(Default)]
pub struct MaxEigen {
    vector: Vec<f64>,
    operator: Option<CurvatureOperator>,
}
