//! What every second-order step goes through before it is taken: the
//! learning rate and trust-region clipping scale it, a trial evaluation on
//! the curvature batch rejects one whose values or loss are not finite
//! (raising the damping instead of writing NaN weights), and the reduction
//! ratio adapts the damping.

use std::collections::HashMap;

use secondo_data::Dataset;
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use super::damping::{reduction_ratio, Damping};
use super::preconditioner::{CurvatureBatch, TrainingPass};
use super::vector::{add_in_place, all_finite, moved, norm, scaled};
use super::{ParamGroup, StepReport};
use crate::state::Scope;
use crate::{Error, GradientProgram, Objective};

/// A step direction `d` with what the quadratic model needs of it.
pub(crate) struct Proposal {
    /// The direction (a descent direction: `gᵀd < 0` for a useful one).
    pub(crate) direction: Vec<f64>,
    /// `gᵀd`.
    pub(crate) slope: f64,
    /// `dᵀCd` (undamped), when the damping adapts.
    pub(crate) curvature: Option<f64>,
}

impl Proposal {
    /// `q(t d) − q(0) = t gᵀd + ½ t² dᵀCd`.
    fn predicted(&self, t: f64) -> Option<f64> {
        self.curvature.map(|c| t * self.slope + 0.5 * t * t * c)
    }
}

/// The first `n` rows of a `[N, ...]` tensor.
fn first_rows(t: &Tensor, n: usize) -> Result<Tensor, Error> {
    let mut shape = t.shape().to_vec();
    let row: usize = shape[1..].iter().product();
    shape[0] = n;
    let values = t.to_f64_vec();
    Tensor::from_f64(shape, &values[..n * row], t.dtype())
        .map_err(|e| Error::Invalid(format!("the training step's output: {e}")))
}

/// Scales `step` down to norm at most `radius` (trust-region clipping);
/// returns the factor applied.
///
/// ```
/// use secondo::second_order::clip_to_radius;
/// let mut s = vec![3.0, 4.0];
/// assert_eq!(clip_to_radius(&mut s, Some(1.0)), 0.2);
/// assert!((s[0] - 0.6).abs() < 1e-15 && (s[1] - 0.8).abs() < 1e-15);
/// assert_eq!(clip_to_radius(&mut s, Some(1.0)), 1.0);
/// assert_eq!(clip_to_radius(&mut s, None), 1.0);
/// ```
pub fn clip_to_radius(step: &mut [f64], radius: Option<f64>) -> f64 {
    let n = norm(step);
    match radius {
        Some(r) if n > r => {
            let f = r / n;
            step.iter_mut().for_each(|x| *x *= f);
            f
        }
        _ => 1.0,
    }
}

/// The state every second-order optimizer shares: damping, learning rate,
/// trust region, the curvature batch and its loss evaluations.
pub(crate) struct StepControl {
    pub(crate) damping: Damping,
    pub(crate) adaptive: bool,
    lr: f64,
    trust_radius: Option<f64>,
    curvature_batch: Option<usize>,
    seed: u64,
    steps: usize,
    losses: HashMap<usize, GradientProgram>,
    /// The parameters the optimizer owns.
    pub(crate) group: ParamGroup,
}

impl StepControl {
    pub(crate) fn new(
        damping: f64,
        adaptive: bool,
        lr: f64,
        trust_radius: Option<f64>,
        curvature_batch: Option<usize>,
        seed: u64,
        group: ParamGroup,
    ) -> StepControl {
        StepControl {
            damping: Damping::new(damping, adaptive),
            adaptive,
            lr,
            trust_radius,
            curvature_batch,
            seed,
            steps: 0,
            losses: HashMap::new(),
            group,
        }
    }

    /// Saves the damping and the step count (which seeds the Monte-Carlo
    /// draws and schedules refreshes).
    pub(crate) fn save(&self, state: &mut Scope<'_>) {
        self.damping.save(state);
        state.put_count("steps", self.steps);
    }

    /// Restores what [`StepControl::save`] wrote.
    pub(crate) fn restore(&mut self, state: &mut Scope<'_>) -> Result<(), Error> {
        self.damping.restore(state)?;
        self.steps = state.take_count("steps")?;
        Ok(())
    }

    /// The learning rate.
    pub(crate) fn lr(&self) -> f64 {
        self.lr
    }

    /// Steps taken or rejected so far.
    pub(crate) fn steps(&self) -> usize {
        self.steps
    }

    /// The curvature batch of this step: the first `--curvature-batch`
    /// samples of the training batch (with their rows of the training
    /// step's output, where it has one, and its loss when they are the
    /// whole batch), its Monte-Carlo draws seeded by the run's seed and the
    /// step.
    pub(crate) fn curvature_batch<'a>(
        &self,
        objective: &'a Objective,
        params: &'a ParamStore,
        batch: &Dataset,
        pass: &TrainingPass<'_>,
    ) -> Result<CurvatureBatch<'a>, Error> {
        let n = self.curvature_batch.unwrap_or(batch.len()).min(batch.len());
        let output = match pass.output {
            Some(o) if o.shape()[0] == n => Some(o.clone()),
            Some(o) => Some(first_rows(o, n)?),
            None => None,
        };
        Ok(CurvatureBatch {
            objective,
            params,
            data: batch.select(&(0..n).collect::<Vec<_>>())?,
            seed: self.seed ^ (self.steps as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            loss: pass.loss.filter(|_| n == batch.len() && output.is_some()),
            output,
        })
    }

    /// The loss before the step, on the curvature batch at its parameters:
    /// the training step's where it has it, else by a forward pass.
    pub(crate) fn loss_before(&mut self, batch: &CurvatureBatch<'_>) -> Result<f64, Error> {
        match batch.loss {
            Some(loss) => Ok(loss),
            None => self.loss(batch, batch.params),
        }
    }

    /// The loss of `params` on `batch`'s data (evaluation mode).
    pub(crate) fn loss(
        &mut self,
        batch: &CurvatureBatch<'_>,
        params: &ParamStore,
    ) -> Result<f64, Error> {
        let n = batch.data.len();
        let program = match self.losses.entry(n) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(batch.objective.program(n, false)?)
            }
        };
        let (x, y) = batch.tensors()?;
        Ok(program.run(params, x, y)?.loss)
    }

    /// The factor `t` a direction is taken with: the learning rate, shrunk
    /// so that `‖t d‖` stays within the trust radius.
    pub(crate) fn scale(&self, direction: &[f64]) -> f64 {
        self.lr * self.within_radius(&scaled(direction, self.lr))
    }

    /// The factor that keeps `d` (already a step) within the trust radius.
    pub(crate) fn within_radius(&self, step: &[f64]) -> f64 {
        clip_to_radius(&mut step.to_vec(), self.trust_radius)
    }

    /// The loss at `θ + t d`, infinite when the moved values are not finite.
    pub(crate) fn trial(
        &mut self,
        batch: &CurvatureBatch<'_>,
        params: &ParamStore,
        direction: &[f64],
        t: f64,
    ) -> Result<f64, Error> {
        let step = scaled(direction, t);
        if !all_finite(&step) {
            return Ok(f64::INFINITY);
        }
        let trial = moved(params, &self.group, &step)?;
        if trial.iter().any(|(_, p)| p.first_non_finite().is_some()) {
            return Ok(f64::INFINITY);
        }
        self.loss(batch, &trial)
    }

    /// Takes `θ ← θ + t d` unless the trial loss `after` is not finite (or,
    /// with `reject_increase`, above `before`), then adapts the damping by
    /// the reduction ratio; a rejected step leaves `params` untouched and
    /// raises the damping.
    pub(crate) fn conclude(
        &mut self,
        params: &mut ParamStore,
        proposal: &Proposal,
        t: f64,
        losses: (f64, f64),
        reject_increase: bool,
    ) -> Result<StepReport, Error> {
        let (before, after) = losses;
        self.steps += 1;
        let rho = proposal
            .predicted(t)
            .and_then(|p| reduction_ratio(after - before, p))
            .filter(|r| r.is_finite());
        if !after.is_finite() || !before.is_finite() {
            self.damping.raise();
            return Ok(self.report(false, None));
        }
        match rho {
            Some(r) => self.damping.adapt(r),
            // A model that predicts no decrease (a direction of negative
            // curvature cut CG short) is trusted less.
            None if proposal.curvature.is_some() => self.damping.adapt(f64::NEG_INFINITY),
            None => {}
        }
        if reject_increase && after > before {
            return Ok(self.report(false, rho));
        }
        add_in_place(params, &self.group, &scaled(&proposal.direction, t))?;
        Ok(self.report(true, rho))
    }

    fn report(&self, accepted: bool, rho: Option<f64>) -> StepReport {
        StepReport {
            accepted,
            damping: self.damping.value(),
            rho,
        }
    }
}
