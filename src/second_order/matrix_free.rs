//! The curvature as a matrix-free operator on the curvature batch: the
//! Hessian, GGN, Fisher or empirical Fisher applied by products, its damped
//! inverse by conjugate gradients.

use secondo_curvature::{Curvature, CurvatureOperator};
use secondo_linalg::{conjugate_gradient, CgOptions, Progress};

use super::preconditioner::{CurvatureBatch, Preconditioner};
use super::vector::dot;
use super::ParamGroup;
use crate::spectrum::AsSymmetric;
use crate::Error;

/// The exact curvature of each curvature batch, inverted by CG to a
/// relative residual of `tol` in at most `max_iter` products.
pub struct MatrixFreePreconditioner {
    kind: Curvature,
    group: ParamGroup,
    options: CgOptions,
    operator: Option<CurvatureOperator>,
}

impl MatrixFreePreconditioner {
    /// The `kind` operator of the group's parameters, solved by CG with `options`.
    pub fn new(group: ParamGroup, kind: Curvature, options: CgOptions) -> MatrixFreePreconditioner {
        MatrixFreePreconditioner {
            kind,
            group,
            options,
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
        if power != 1.0 {
            return Err(Error::Invalid(format!(
                "--power {power}: the matrix-free curvature is inverted by CG, which takes α = 1"
            )));
        }
        let op = self.operator()?;
        let solution = conjugate_gradient(
            &AsSymmetric(op),
            v,
            damping,
            &self.options,
            Progress::none(),
        )?;
        Ok(solution.x)
    }

    fn curvature(&self, v: &[f64]) -> Result<f64, Error> {
        Ok(dot(v, &self.operator()?.apply(v)?))
    }
}
