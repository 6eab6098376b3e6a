//! Second-order optimizers: steps preconditioned by the curvature the
//! engine computes, with the safeguards that make them usable under
//! mini-batch noise (docs/ARCHITECTURE.md, "Second-order optimizers").
//!
//! - [`Preconditioner`]: a curvature approximation `C` applied as
//!   `(C + λI)^(-α) v` — Kronecker-factored blocks ([`KroneckerPreconditioner`]:
//!   KFAC, KFLR, EKFAC), diagonals ([`DiagonalPreconditioner`]), the exact
//!   dense matrix ([`DensePreconditioner`]), the matrix-free operator
//!   ([`MatrixFreePreconditioner`]: CG, and Lanczos for fractional powers)
//!   and its top eigenpairs plus a bulk estimate ([`LowRankPreconditioner`]).
//!   The determinantal average of sub-sampled inverses
//!   ([`DeterminantalPreconditioner`]) is one too.
//! - [`NewtonCg`]: Martens' Hessian-free optimization.
//! - [`PreconditionedDescent`]: `θ ← θ − η (C + λI)^(-α) g` with momentum and
//!   KL-clipping, what `kfac`, `ekfac`, `ngd`, `ef`, `fractional-ngd` and
//!   `det-avg` are.
//! - [`SecondOrderConfig`]: the method and its hyperparameters, as `secondo
//!   train --optimizer` takes them.

mod config;
mod damping;
mod dense;
mod determinantal;
mod diagonal;
mod eigenbasis;
mod group;
mod kronecker;
mod lowrank;
mod matrix_free;
mod newton_cg;
mod preconditioned;
mod preconditioner;
mod quadratic_model;
mod safeguard;
mod vector;

pub use config::{Method, SecondOrderConfig, Structure};
pub use damping::{reduction_ratio, Damping, MAX_DAMPING, MIN_DAMPING};
pub use dense::{DensePreconditioner, DENSE_LIMIT};
pub use determinantal::{DeterminantalPreconditioner, Subsampling};
pub use diagonal::DiagonalPreconditioner;
pub use group::ParamGroup;
pub use kronecker::{Eigenvalues, FactorDamping, KroneckerPreconditioner};
pub use lowrank::{LowRankPreconditioner, DEFAULT_BULK_PROBES};
pub use matrix_free::MatrixFreePreconditioner;
pub use newton_cg::{
    martens_cg, martens_stops, CgPreconditioning, MartensCg, MartensOptions, NewtonCg, MARTENS_XI,
};
pub use preconditioned::PreconditionedDescent;
pub use preconditioner::{CurvatureBatch, Preconditioner, TrainingPass};
pub use safeguard::clip_to_radius;

use crate::state::Scope;
use crate::{Error, Objective};
use secondo_data::Dataset;
use secondo_nn::ParamStore;

/// What one second-order step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Whether the parameters moved (a rejected step leaves them as they were).
    pub accepted: bool,
    /// The damping after the step.
    pub damping: f64,
    /// The reduction ratio, where the damping adapts and the model predicted a decrease.
    pub rho: Option<f64>,
}

/// An optimizer that needs more than the gradient: the objective and the
/// batch, to estimate the curvature on.
pub trait SecondOrderOptimizer {
    /// Updates `params` from the gradient `grads` of the loss on `batch`.
    fn step(
        &mut self,
        objective: &Objective,
        params: &mut ParamStore,
        batch: &Dataset,
        pass: &TrainingPass<'_>,
    ) -> Result<StepReport, Error>;

    /// Writes what later steps depend on (damping, step count, momentum,
    /// curvature estimates and their decompositions) into `state`, for a
    /// checkpoint; compiled programs and operators rebound every step are
    /// rebuilt instead.
    fn save(&self, state: &mut Scope<'_>);

    /// Continues from what [`SecondOrderOptimizer::save`] wrote for the same
    /// configuration on `objective`: the next step is the one the saving
    /// optimizer would have taken.
    fn restore(&mut self, objective: &Objective, state: &mut Scope<'_>) -> Result<(), Error>;
}

/// An exponential moving average of a vector: `m ← w m + (1 − w) x`,
/// starting at the first `x`.
pub(crate) struct Ema {
    weight: f64,
    value: Option<Vec<f64>>,
}

impl Ema {
    pub(crate) fn new(weight: f64) -> Ema {
        Ema {
            weight,
            value: None,
        }
    }

    pub(crate) fn blend(&mut self, x: Vec<f64>) {
        let w = self.weight;
        self.value = Some(match self.value.take() {
            Some(mut m) => {
                m.iter_mut()
                    .zip(&x)
                    .for_each(|(m, x)| *m = w * *m + (1.0 - w) * x);
                m
            }
            None => x,
        });
    }

    /// Saves the average as `name` (nothing before the first blend).
    pub(crate) fn save(&self, state: &mut Scope<'_>, name: &str) {
        state.put_optional(name, self.value.as_deref());
    }

    /// Restores what [`Ema::save`] wrote, an average of `len` values.
    pub(crate) fn restore(
        &mut self,
        state: &mut Scope<'_>,
        name: &str,
        len: usize,
    ) -> Result<(), Error> {
        self.value = state.take_optional(name, len)?;
        Ok(())
    }

    pub(crate) fn get(&self) -> Result<&[f64], Error> {
        self.value.as_deref().ok_or_else(|| {
            Error::Invalid("a curvature estimate was used before its first update".into())
        })
    }
}
