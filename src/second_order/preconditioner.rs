//! The [`Preconditioner`] abstraction: a curvature approximation `C` fed by
//! the engine's quantities or operators on a curvature batch, applied as
//! `(C + λI)^(-α) v`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use secondo_curvature::{draw_targets, Quantity, QuantityProgram};
use secondo_data::Dataset;
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use crate::state::Scope;
use crate::{Error, GradientProgram, Objective};

/// What the training step computed on its batch at the current parameters,
/// for a second-order step to reuse rather than recompute.
#[derive(Debug, Clone, Copy)]
pub struct TrainingPass<'a> {
    /// The gradient of the loss on the batch, per parameter.
    pub grads: &'a [Tensor],
    /// The network's output on the batch, where it is the evaluation-mode
    /// output (no dropout masks, no batch statistics): the Monte-Carlo
    /// targets are then drawn from it instead of from another forward pass.
    pub output: Option<&'a Tensor>,
    /// The loss of that output (with it): the loss before the step, which
    /// the reduction ratio then needs no forward pass for.
    pub loss: Option<f64>,
}

impl<'a> TrainingPass<'a> {
    /// The gradient alone (the outputs, where needed, are recomputed).
    pub fn gradient(grads: &'a [Tensor]) -> TrainingPass<'a> {
        TrainingPass {
            grads,
            output: None,
            loss: None,
        }
    }
}

/// The samples and parameters a curvature estimate is taken at. It owns
/// its samples (a selection of the training batch, or sub-samples of it)
/// so that one call can make it.
pub struct CurvatureBatch<'a> {
    /// The objective.
    pub objective: &'a Objective,
    /// The parameters.
    pub params: &'a ParamStore,
    /// The curvature mini-batch.
    pub data: Dataset,
    /// Seed of this estimate's Monte-Carlo draws (Fisher targets).
    pub seed: u64,
    /// The network's evaluation-mode output on `data` at `params`, `[N, C]`,
    /// where the training step computed it (see [`TrainingPass::output`]).
    pub output: Option<Tensor>,
    /// The loss at `params` on `data`, where the training step computed it
    /// on the same samples (see [`TrainingPass::loss`]).
    pub loss: Option<f64>,
}

impl CurvatureBatch<'_> {
    /// The batch's inputs and targets as tensors.
    pub fn tensors(&self) -> Result<(Tensor, Tensor), Error> {
        let batch = self
            .data
            .batches(self.data.len().max(1))?
            .next()
            .ok_or_else(|| Error::Invalid("an empty curvature batch".into()))?;
        Ok(self.objective.batch_tensors(&batch)?)
    }
}

/// A curvature approximation used to precondition gradients.
///
/// Vectors are flat over all parameters (in the network's order, each
/// row-major). Eigenvalues of `C` below zero (a Hessian's, or rounding) are
/// taken as zero wherever a power is applied, so that every preconditioned
/// gradient is a descent direction.
pub trait Preconditioner {
    /// Takes a new estimate on `batch`. `refresh` asks for the expensive
    /// part (inverses, eigendecompositions) to be recomputed, what
    /// `--inverse-every T` schedules; estimates kept as moving averages
    /// blend in the new batch every call.
    fn update(&mut self, batch: &CurvatureBatch<'_>, refresh: bool) -> Result<(), Error>;

    /// `(C + λI)^(-α) v`, with `α = power ∈ (0, 1]`.
    fn solve(&self, v: &[f64], damping: f64, power: f64) -> Result<Vec<f64>, Error>;

    /// `vᵀ C v` (undamped), the curvature term of the quadratic model
    /// `q(Δ) = gᵀΔ + ½ ΔᵀCΔ` the reduction ratio compares against.
    fn curvature(&self, v: &[f64]) -> Result<f64, Error>;

    /// Writes the estimates later solves and updates depend on into `state`.
    fn save(&self, state: &mut Scope<'_>);

    /// Restores what [`Preconditioner::save`] wrote for the same
    /// configuration on `objective`.
    fn restore(&mut self, objective: &Objective, state: &mut Scope<'_>) -> Result<(), Error>;
}

/// The engine's quantities compiled once per batch size, as a
/// preconditioner re-estimates them every step.
pub(crate) struct Quantities {
    quantities: Vec<Quantity>,
    mc_samples: Option<usize>,
    programs: HashMap<usize, QuantityProgram>,
    /// Forward passes for the outputs Monte-Carlo targets are drawn from.
    forward: HashMap<usize, GradientProgram>,
}

impl Quantities {
    /// `quantities`, with `mc_samples` sampled targets per input when one
    /// of them needs them.
    pub(crate) fn new(quantities: &[Quantity], mc_samples: Option<usize>) -> Quantities {
        Quantities {
            quantities: quantities.to_vec(),
            mc_samples,
            programs: HashMap::new(),
            forward: HashMap::new(),
        }
    }

    /// `m` targets per input drawn from the model's predictive distribution
    /// at `batch`'s parameters (seeded by its seed), `[m, ...]` of `y`'s shape:
    /// from the training step's output where the batch carries it, else
    /// from a forward pass.
    pub(crate) fn sampled_targets(
        &mut self,
        batch: &CurvatureBatch<'_>,
        x: &Tensor,
        y: &Tensor,
        m: usize,
    ) -> Result<Tensor, Error> {
        let n = x.shape()[0];
        let output = match &batch.output {
            Some(output) if output.shape()[0] == n => output.clone(),
            _ => {
                let program = match self.forward.entry(n) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(batch.objective.program(n, false)?),
                };
                program.run(batch.params, x.clone(), y.clone())?.output
            }
        };
        let kind = batch.objective.loss.kind;
        Ok(draw_targets(kind, &output, m, batch.seed, y.shape()))
    }

    /// The quantities on `(x, y)` at `batch`'s parameters, by name, with
    /// the Monte-Carlo targets they need drawn.
    pub(crate) fn run(
        &mut self,
        batch: &CurvatureBatch<'_>,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<HashMap<String, Tensor>, Error> {
        let mc_targets = match self.mc_samples {
            Some(m) => Some(self.sampled_targets(batch, x, y, m)?),
            None => None,
        };
        let n = x.shape()[0];
        let program = match self.programs.entry(n) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(QuantityProgram::compile(
                batch.objective,
                n,
                &self.quantities,
                self.mc_samples,
            )?),
        };
        Ok(program
            .run(batch.params, x, y, mc_targets.as_ref())?
            .into_iter()
            .collect())
    }
}

/// `(c + λ)^(-α)` for an eigenvalue `c` of the curvature, `c < 0` taken as 0.
pub(crate) fn inverse_power(c: f64, damping: f64, power: f64) -> f64 {
    let base = c.max(0.0) + damping;
    if power == 1.0 {
        1.0 / base
    } else {
        base.powf(-power)
    }
}
