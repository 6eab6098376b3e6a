//! The curvature as a matrix-free operator on the curvature batch: the
//! Hessian, GGN, Fisher or empirical Fisher applied by products, its damped
//! inverse by conjugate gradients and its fractional powers by Lanczos.

use secondo_curvature::{Curvature, CurvatureOperator};
use secondo_linalg::{conjugate_gradient, lanczos_function, CgOptions, Progress};

use super::preconditioner::{inverse_power, CurvatureBatch, Preconditioner};
use super::vector::dot;
use super::ParamGroup;
use crate::spectrum::AsSymmetric;
use crate::state::Scope;
use crate::{Error, Objective};

/// The exact curvature of each curvature batch: `(C + λI)^(-1) v` by CG to
/// a relative residual of `tol` in at most `max_iter` products, and
/// `(C + λI)^(-α) v` for `α < 1` by `lanczos_steps` Lanczos steps started
/// at `v`, `‖v‖ Q f(T) e₁` (the Krylov space of `v`, what a fractional
/// natural gradient sees of the spectrum without a factored structure).
pub struct MatrixFreePreconditioner {
    kind: Curvature,
    group: ParamGroup,
    options: CgOptions,
    lanczos_steps: usize,
    operator: Option<CurvatureOperator>,
}

impl MatrixFreePreconditioner {
    /// The `kind` operator of the group's parameters, solved by CG with
    /// `options`, its fractional powers by `lanczos_steps` Lanczos steps.
    pub fn new(
        group: ParamGroup,
        kind: Curvature,
        options: CgOptions,
        lanczos_steps: usize,
    ) -> MatrixFreePreconditioner {
        MatrixFreePreconditioner {
            kind,
            group,
            options,
            lanczos_steps,
            operator: None,
        }
    }

    /// The operator of the last update.
    pub fn operator(&self) -> Result<&CurvatureOperator, Error> {
        self.operator.as_ref().ok_or_else(|| {
            Error::Invalid("the curvature operator was used before an update".into())
        })
    }
}

/// The operator of `kind` for `group` on `batch`, rebinding `previous` (its compiled
/// products) when there is one. A rebound Fisher keeps the seed it was
/// built with; its draws still differ from batch to batch.
pub(crate) fn bind_operator(
    previous: Option<CurvatureOperator>,
    kind: Curvature,
    group: &ParamGroup,
    batch: &CurvatureBatch<'_>,
) -> Result<CurvatureOperator, Error> {
    Ok(match previous {
        Some(op) => op.rebound(batch.params, &batch.data)?,
        None => {
            let names = group.names(batch.objective);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            CurvatureOperator::new(
                batch.objective,
                batch.params,
                &batch.data,
                batch.data.len(),
                kind,
                Some(&names),
            )?
        }
    })
}

impl Preconditioner for MatrixFreePreconditioner {
    fn update(&mut self, batch: &CurvatureBatch<'_>, _refresh: bool) -> Result<(), Error> {
        self.operator = Some(bind_operator(
            self.operator.take(),
            self.kind,
            &self.group,
            batch,
        )?);
        Ok(())
    }

    fn solve(&self, v: &[f64], damping: f64, power: f64) -> Result<Vec<f64>, Error> {
        let op = AsSymmetric(self.operator()?);
        if power == 1.0 {
            let solution = conjugate_gradient(&op, v, damping, &self.options, Progress::none())?;
            return Ok(solution.x);
        }
        let f = |c: f64| inverse_power(c, damping, power);
        Ok(lanczos_function(&op, v, self.lanczos_steps, f, Progress::none())?.x)
    }

    fn curvature(&self, v: &[f64]) -> Result<f64, Error> {
        Ok(dot(v, &self.operator()?.apply(v)?))
    }

    /// Nothing: the operator is rebound to every curvature batch, and a
    /// fresh one binds to the same products.
    fn save(&self, _state: &mut Scope<'_>) {}

    fn restore(&mut self, _objective: &Objective, _state: &mut Scope<'_>) -> Result<(), Error> {
        Ok(())
    }
}
