//! Martens & Grosse's learning rate and momentum (2015, §7): the step
//! `αΔ + μδ₀` along the preconditioned direction `Δ` and the previous
//! update `δ₀` that minimizes the damped quadratic model
//! `M(δ) = ½ δᵀ(C + λI)δ + gᵀδ` with the exact curvature `C` (the GGN of
//! the curvature batch), a 2 × 2 linear system. The system needs only the
//! GGN's bilinear form on `Δ` and `δ₀`, which Jacobian-vector products give
//! ([`CurvatureOperator::gram`]) without the vector-Jacobian products of
//! two GGN-vector products.

use secondo_curvature::{Curvature, CurvatureOperator};

use super::matrix_free::bind_operator;
use super::preconditioner::CurvatureBatch;
use super::vector::dot;
use super::ParamGroup;
use crate::Error;

/// The exact GGN of each curvature batch, for the quadratic model.
#[derive(Default)]
pub(crate) struct QuadraticModel {
    operator: Option<CurvatureOperator>,
}

/// A step chosen on the quadratic model, with its undamped curvature `δᵀCδ`.
pub(crate) struct ModelStep {
    pub(crate) step: Vec<f64>,
    pub(crate) curvature: f64,
}

impl QuadraticModel {
    /// The minimizer of `M` over `span{Δ, δ₀}` (over `Δ` alone at the first
    /// step, or where the 2 × 2 system is singular).
    pub(crate) fn step(
        &mut self,
        batch: &CurvatureBatch<'_>,
        group: &ParamGroup,
        g: &[f64],
        delta: &[f64],
        previous: Option<&[f64]>,
        damping: f64,
    ) -> Result<ModelStep, Error> {
        let mut op = bind_operator(self.operator.take(), Curvature::Ggn, group, batch)?;
        let vectors: Vec<&[f64]> = std::iter::once(delta).chain(previous).collect();
        let form = op.gram(&vectors)?;
        self.operator = Some(op);
        let dd = form[0];
        let a11 = dd + damping * dot(delta, delta);
        let b1 = dot(g, delta);
        let (alpha, mu, pp, dp) = match previous {
            Some(p) => {
                // The 2 × 2 form [δᵀCδ, δᵀCp; pᵀCδ, pᵀCp].
                let (dp, pp) = (form[1], form[3]);
                let a12 = dp + damping * dot(delta, p);
                let a22 = pp + damping * dot(p, p);
                let b2 = dot(g, p);
                let det = a11 * a22 - a12 * a12;
                if det > 0.0 && det.is_finite() {
                    let alpha = -(a22 * b1 - a12 * b2) / det;
                    let mu = -(a11 * b2 - a12 * b1) / det;
                    (alpha, mu, pp, dp)
                } else {
                    (along(a11, b1), 0.0, 0.0, 0.0)
                }
            }
            None => (along(a11, b1), 0.0, 0.0, 0.0),
        };
        let mut step: Vec<f64> = delta.iter().map(|d| alpha * d).collect();
        if let (Some(p), true) = (previous, mu != 0.0) {
            step.iter_mut().zip(p).for_each(|(s, p)| *s += mu * p);
        }
        Ok(ModelStep {
            step,
            curvature: alpha * alpha * dd + 2.0 * alpha * mu * dp + mu * mu * pp,
        })
    }
}

/// The minimizer `−b/a` of `½ a α² + b α`, zero where `a` is not positive.
fn along(a: f64, b: f64) -> f64 {
    if a > 0.0 {
        -b / a
    } else {
        0.0
    }
}
