//! The exact curvature as a dense matrix: natural gradient with the exact
//! Fisher/GGN (`ngd`) or with the empirical Fisher (`ef`), for small models
//! (Kunstner, Balles & Hennig 2019, "Limitations of the empirical Fisher
//! approximation for natural gradient descent").

use secondo_curvature::Curvature;
use secondo_tensor::memory::{bytes_of, ensure_fits};

use super::eigenbasis::Eigenbasis;
use super::matrix_free::bind_operator;
use super::preconditioner::{inverse_power, CurvatureBatch, Preconditioner};
use super::vector::dot;
use super::ParamGroup;
use crate::state::Scope;
use crate::{Error, Objective};

/// Most parameters a dense curvature is built for: it takes one product per
/// parameter to build and a cubic-time eigendecomposition to invert, which
/// past this size costs minutes a step on a laptop.
pub const DENSE_LIMIT: usize = 4096;

/// `C` built column by column from the curvature operator on the curvature
/// batch and eigendecomposed, so that any power `(C + λI)^(-α)` is exact.
pub struct DensePreconditioner {
    kind: Curvature,
    group: ParamGroup,
    eigen: Option<Eigenbasis>,
}

impl DensePreconditioner {
    /// The dense `kind` of the group's parameters; refuses, naming `method`,
    /// a group of more than [`DENSE_LIMIT`] parameters or whose matrices
    /// would not fit in memory.
    pub fn new(
        objective: &Objective,
        group: ParamGroup,
        kind: Curvature,
        method: &str,
    ) -> Result<DensePreconditioner, Error> {
        ensure_dense_fits(group.numel(objective), method)?;
        Ok(DensePreconditioner {
            kind,
            group,
            eigen: None,
        })
    }

    fn eigen(&self) -> Result<&Eigenbasis, Error> {
        self.eigen
            .as_ref()
            .ok_or_else(|| Error::Invalid("the dense curvature was used before an update".into()))
    }
}

/// Refuses a dense curvature of `d` parameters, too large for it (see [`DENSE_LIMIT`]).
pub(crate) fn ensure_dense_fits(d: usize, method: &str) -> Result<(), Error> {
    if d > DENSE_LIMIT {
        return Err(Error::Invalid(format!(
            "--optimizer {method} builds the dense {d} × {d} curvature ({} MiB, {d} products a step); \
             it takes models of at most {DENSE_LIMIT} parameters (use kfac or newton-cg)",
            bytes_of(d * d, 8) >> 20
        )));
    }
    // The matrix, its eigenvectors and the symmetrized copy.
    ensure_fits(
        format!("the dense curvature of --optimizer {method}"),
        bytes_of(d.saturating_mul(d), 3 * 8),
    )?;
    Ok(())
}

impl Preconditioner for DensePreconditioner {
    fn update(&mut self, batch: &CurvatureBatch<'_>, refresh: bool) -> Result<(), Error> {
        if !refresh && self.eigen.is_some() {
            return Ok(());
        }
        let kind = match self.kind {
            Curvature::FisherMc { samples, .. } => Curvature::FisherMc {
                samples,
                seed: batch.seed,
            },
            other => other,
        };
        let op = bind_operator(None, kind, &self.group, batch)?;
        self.eigen = Some(Eigenbasis::new(&op.to_dense()?, op.dim())?);
        Ok(())
    }

    fn solve(&self, v: &[f64], damping: f64, power: f64) -> Result<Vec<f64>, Error> {
        Ok(self.eigen()?.apply(v, |c| inverse_power(c, damping, power)))
    }

    fn curvature(&self, v: &[f64]) -> Result<f64, Error> {
        Ok(dot(v, &self.eigen()?.apply(v, |c| c.max(0.0))))
    }

    fn save(&self, state: &mut Scope<'_>) {
        if let Some(e) = &self.eigen {
            e.save(&mut state.scope("eigen"));
        }
    }

    fn restore(&mut self, objective: &Objective, state: &mut Scope<'_>) -> Result<(), Error> {
        let n = self.group.numel(objective);
        self.eigen = Eigenbasis::restore_optional(&mut state.scope("eigen"), n)?;
        Ok(())
    }
}
