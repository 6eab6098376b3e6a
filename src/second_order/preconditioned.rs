//! Preconditioned gradient descent `θ ← θ − η v`, `v ← μ v + ν P g` with
//! `P = (C + λI)^(-α)`: KFAC and EKFAC (Martens & Grosse 2015; George et
//! al. 2018), natural gradient with the dense Fisher or empirical Fisher,
//! and fractional natural gradient (Huh 2020, α < 1).

use super::preconditioner::{Preconditioner, TrainingPass};
use super::quadratic_model::QuadraticModel;
use super::safeguard::{Proposal, StepControl};
use super::vector::{dot, scaled};
use super::{SecondOrderOptimizer, StepReport};
use crate::state::Scope;
use crate::{Error, Objective};
use secondo_data::Dataset;
use secondo_nn::ParamStore;

/// Steps along the preconditioned gradient, with momentum and KL-clipping.
pub struct PreconditionedDescent {
    pub(crate) preconditioner: Box<dyn Preconditioner>,
    pub(crate) control: StepControl,
    /// The exponent `α` of `(C + λI)^(-α)`.
    pub(crate) power: f64,
    pub(crate) momentum: f64,
    /// Steps between refreshed inverses.
    pub(crate) inverse_every: usize,
    pub(crate) kl_clip: Option<f64>,
    /// The last step's direction (momentum), none after a rejected step;
    /// with the quadratic model, the last update itself.
    pub(crate) velocity: Option<Vec<f64>>,
    /// Learning rate and momentum from the quadratic model (with
    /// `--adapt-damping`) instead of `η`, `μ` and KL-clipping.
    pub(crate) model: Option<QuadraticModel>,
}

impl PreconditionedDescent {
    /// `−ν P g + μ v`: KL-clipped, with heavy-ball momentum.
    fn heavy_ball(&self, g: &[f64], pg: &[f64]) -> Result<Proposal, Error> {
        let nu = self.kl_factor(g, pg);
        let mut direction = scaled(pg, -nu);
        if let Some(v) = &self.velocity {
            direction
                .iter_mut()
                .zip(v)
                .for_each(|(d, v)| *d += self.momentum * v);
        }
        let curvature = match self.control.adaptive {
            true => Some(self.preconditioner.curvature(&direction)?),
            false => None,
        };
        Ok(Proposal {
            slope: dot(g, &direction),
            curvature,
            direction,
        })
    }

    /// KL-clipping (Ba, Grosse & Martens 2017): the factor `ν = min(1,
    /// (κ / (η² gᵀPg))^½)` that keeps the step's change of the model's
    /// predictive distribution, `½ η² (Pg)ᵀC(Pg) ≈ ½ η² gᵀPg`, below `κ`.
    fn kl_factor(&self, g: &[f64], pg: &[f64]) -> f64 {
        match self.kl_clip {
            Some(kappa) => {
                let lr = self.control.lr();
                let quadratic = lr * lr * dot(g, pg).abs();
                if quadratic > kappa {
                    (kappa / quadratic).sqrt()
                } else {
                    1.0
                }
            }
            None => 1.0,
        }
    }
}

impl SecondOrderOptimizer for PreconditionedDescent {
    fn step(
        &mut self,
        objective: &Objective,
        params: &mut ParamStore,
        batch: &Dataset,
        pass: &TrainingPass<'_>,
    ) -> Result<StepReport, Error> {
        let cb = self
            .control
            .curvature_batch(objective, params, batch, pass)?;
        let refresh = self.control.steps().is_multiple_of(self.inverse_every);
        self.preconditioner.update(&cb, refresh)?;
        let g = self.control.group.gather(pass.grads);
        let pg = self
            .preconditioner
            .solve(&g, self.control.damping.value(), self.power)?;
        let (proposal, t) = match self.model.as_mut() {
            Some(model) => {
                let delta = scaled(&pg, -1.0);
                let damping = self.control.damping.value();
                let previous = self.velocity.as_deref();
                let chosen = model.step(&cb, &self.control.group, &g, &delta, previous, damping)?;
                let proposal = Proposal {
                    slope: dot(&g, &chosen.step),
                    curvature: Some(chosen.curvature),
                    direction: chosen.step,
                };
                let t = self.control.within_radius(&proposal.direction);
                (proposal, t)
            }
            None => {
                let proposal = self.heavy_ball(&g, &pg)?;
                let t = self.control.scale(&proposal.direction);
                (proposal, t)
            }
        };
        let before = match self.control.adaptive {
            true => self.control.loss_before(&cb)?,
            // Only finiteness matters without a reduction ratio.
            false => 0.0,
        };
        let after = self.control.trial(&cb, params, &proposal.direction, t)?;
        let report =
            self.control
                .conclude(params, &proposal, t, (before, after), self.model.is_some())?;
        self.velocity = match (report.accepted, self.momentum, &self.model) {
            (true, _, Some(_)) => Some(scaled(&proposal.direction, t)),
            (true, m, None) if m > 0.0 => Some(proposal.direction),
            _ => None,
        };
        Ok(report)
    }

    fn save(&self, state: &mut Scope<'_>) {
        self.control.save(&mut state.scope("control"));
        state.put_optional("velocity", self.velocity.as_deref());
        self.preconditioner.save(&mut state.scope("preconditioner"));
    }

    fn restore(&mut self, objective: &Objective, state: &mut Scope<'_>) -> Result<(), Error> {
        self.control.restore(&mut state.scope("control"))?;
        self.velocity = state.take_optional("velocity", self.control.group.numel(objective))?;
        self.preconditioner
            .restore(objective, &mut state.scope("preconditioner"))
    }
}
