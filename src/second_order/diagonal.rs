//! The diagonal of the GGN, the Monte-Carlo Fisher, the empirical Fisher or
//! the Hessian as a preconditioner, from the engine's quantities.

use secondo_curvature::{Curvature, Quantity};

use super::preconditioner::{inverse_power, CurvatureBatch, Preconditioner, Quantities};
use super::{Ema, ParamGroup};
use crate::state::Scope;
use crate::{Error, Objective};

/// `diag(C)`, kept as an exponential moving average over curvature batches.
pub struct DiagonalPreconditioner {
    group: ParamGroup,
    quantity: Quantity,
    programs: Quantities,
    diagonal: Ema,
}

impl DiagonalPreconditioner {
    /// The diagonal of `kind` for the group's parameters, averaged with
    /// weight `ema` on the past.
    pub fn new(group: ParamGroup, kind: Curvature, ema: f64) -> DiagonalPreconditioner {
        let (quantity, mc) = match kind {
            Curvature::Ggn => (Quantity::DiagGgnExact, None),
            Curvature::Hessian => (Quantity::DiagHessian, None),
            Curvature::EmpiricalFisher => (Quantity::SumGradSquared, None),
            Curvature::FisherMc { samples, .. } => (Quantity::DiagGgnMc, Some(samples)),
        };
        DiagonalPreconditioner {
            group,
            quantity,
            programs: Quantities::new(&[quantity], mc),
            diagonal: Ema::new(ema),
        }
    }

    fn estimate(&mut self, batch: &CurvatureBatch<'_>) -> Result<Vec<f64>, Error> {
        let (x, y) = batch.tensors()?;
        let values = self.programs.run(batch, &x, &y)?;
        let mut diagonal = Vec::with_capacity(batch.params.numel());
        for p in self.group.names(batch.objective) {
            let name = format!("{}/{p}", self.quantity);
            let t = values
                .get(&name)
                .ok_or_else(|| Error::Invalid(format!("the engine computed no '{name}'")))?;
            diagonal.extend(t.to_f64_vec());
        }
        if self.quantity == Quantity::SumGradSquared {
            // Σ_n c_n² of the scaled per-sample gradients c_n = s ∇ℓ_n is
            // s times the empirical Fisher's diagonal s Σ_n ∇ℓ_n².
            let s = reduction_scale(batch);
            diagonal.iter_mut().for_each(|x| *x /= s);
        }
        Ok(diagonal)
    }
}

/// The loss's reduction factor `s` on the batch (`1/N` for a mean).
pub(crate) fn reduction_scale(batch: &CurvatureBatch<'_>) -> f64 {
    let width = batch.objective.network.output_shape()[0];
    batch.objective.loss.scale(&[batch.data.len(), width])
}

impl Preconditioner for DiagonalPreconditioner {
    fn update(&mut self, batch: &CurvatureBatch<'_>, _refresh: bool) -> Result<(), Error> {
        let estimate = self.estimate(batch)?;
        self.diagonal.blend(estimate);
        Ok(())
    }

    fn solve(&self, v: &[f64], damping: f64, power: f64) -> Result<Vec<f64>, Error> {
        let d = self.diagonal.get()?;
        Ok(v.iter()
            .zip(d)
            .map(|(x, c)| x * inverse_power(*c, damping, power))
            .collect())
    }

    fn curvature(&self, v: &[f64]) -> Result<f64, Error> {
        let d = self.diagonal.get()?;
        Ok(v.iter().zip(d).map(|(x, c)| c.max(0.0) * x * x).sum())
    }

    fn save(&self, state: &mut Scope<'_>) {
        self.diagonal.save(state, "diagonal");
    }

    fn restore(&mut self, objective: &Objective, state: &mut Scope<'_>) -> Result<(), Error> {
        let len = self.group.numel(objective);
        self.diagonal.restore(state, "diagonal", len)
    }
}
