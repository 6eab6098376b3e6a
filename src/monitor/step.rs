//! The monitored training step: one compiled graph computing the loss, the
//! gradient the optimizer takes and every per-sample quantity the
//! instruments due at the step need.

use std::collections::HashMap;

use secondo_curvature::{Objective, Quantity, QuantityProgram, StepOutput};
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use super::Instrument;
use crate::Error;

/// The engine's quantities an instrument needs from the training step
/// (besides the loss, outputs and gradient every step has). α's start point
/// comes from the step when the step is `−lr·g` (`plain_sgd`): its slopes are
/// then the per-sample gradients' projections on `g`.
fn needs(i: Instrument, plain_sgd: bool) -> &'static [Quantity] {
    use Instrument as I;
    match i {
        I::Alpha if plain_sgd => &[Quantity::BatchLoss, Quantity::BatchDotGrad],
        I::GradHist1d | I::GradHist2d => &[Quantity::BatchGradFactors],
        I::NormTest => &[Quantity::BatchL2],
        I::InnerTest | I::OrthoTest => &[Quantity::BatchL2, Quantity::BatchDotGrad],
        I::MeanGsnr | I::Cabs | I::EarlyStopping => &[Quantity::SumGradSquared],
        I::TicDiag | I::TicTrace => &[Quantity::SumGradSquared, Quantity::DiagHessian],
        I::HessTrace => &[Quantity::DiagHessian],
        I::Loss
        | I::Alpha
        | I::GradNorm
        | I::Distance
        | I::UpdateSize
        | I::HessMaxEv
        | I::HessTopEv
        | I::GgnTopEv
        | I::GgnClassMeans
        | I::GradTopSpace
        | I::TopSpaceRotation
        | I::EfGgn
        | I::HessDensity => &[],
    }
}

/// The quantities of a step where `due` are due (and α's end point, when
/// `alpha_end`: the loss terms and slopes along the last step), in a
/// canonical order (the key of the compiled programs); empty when a plain
/// step suffices.
pub(super) fn quantities_for(
    due: &[Instrument],
    plain_sgd: bool,
    alpha_end: bool,
) -> Vec<Quantity> {
    let mut q: Vec<Quantity> = due
        .iter()
        .flat_map(|&i| needs(i, plain_sgd).iter().copied())
        .collect();
    if alpha_end {
        q.extend([Quantity::BatchLoss, Quantity::BatchDotDirection]);
    }
    if q.is_empty() {
        return q;
    }
    q.extend([Quantity::Loss, Quantity::Output, Quantity::Grad]);
    let all = Quantity::all();
    let rank = |x: &Quantity| all.iter().position(|y| y == x);
    q.sort_by_key(rank);
    q.dedup();
    q
}

/// One parameter's scaled per-sample gradients.
#[derive(Debug, Clone)]
pub enum PerSample {
    /// As they are, `[N, ...]`.
    Full(Tensor),
    /// A dense layer's weight: `c_n = δ_n a_nᵀ` from the inputs `a` `[N, in]`
    /// and the output gradients `δ` `[N, out]`.
    Outer {
        /// `a`.
        input: Tensor,
        /// `δ`.
        output_grad: Tensor,
    },
    /// A dense layer's bias: `c_n = δ_n`, the rows of `[N, out]`.
    Rows(Tensor),
}

/// The values of one monitored step, per parameter in f64.
#[derive(Debug, Clone, Default)]
pub struct StepValues {
    /// Samples in the batch.
    pub batch: usize,
    /// The batch loss (with the loss's reduction).
    pub loss: f64,
    /// The gradient per parameter (the step's own tensors).
    pub grad: Vec<Tensor>,
    /// The per-sample loss terms `ℓ_n` (unscaled).
    pub batch_loss: Option<Vec<f64>>,
    /// Scaled per-sample gradients `c_n` per parameter, factored where the
    /// layer allows (in the objective's dtype: binned where they are, never
    /// expanded or copied).
    pub batch_grad: Option<Vec<PerSample>>,
    /// `Σ_p ‖c_n,p‖²` per sample.
    pub batch_l2: Option<Vec<f64>>,
    /// `Σ_p c_n,p · g_p` per sample.
    pub batch_dot_grad: Option<Vec<f64>>,
    /// `Σ_p c_n,p · d_p` per sample, `d` the direction fed to the step.
    pub batch_dot_direction: Option<Vec<f64>>,
    /// `Σ_n c_n²` per parameter.
    pub sum_grad_squared: Option<Vec<Vec<f64>>>,
    /// The Hessian diagonal per parameter.
    pub diag_hessian: Option<Vec<Vec<f64>>>,
}

impl StepValues {
    /// The squared norm of the whole gradient.
    pub fn grad_l2_squared(&self) -> f64 {
        self.grad.iter().map(|g| g.dot(g)).sum()
    }
}

/// Compiled monitored steps by (quantities, batch size).
#[derive(Default)]
pub(super) struct StepPrograms {
    cache: HashMap<(Vec<Quantity>, usize), QuantityProgram>,
}

impl StepPrograms {
    /// The program computing `quantities` on batches of `n`, compiled on
    /// first use.
    pub(super) fn get(
        &mut self,
        objective: &Objective,
        quantities: &[Quantity],
        n: usize,
    ) -> Result<&QuantityProgram, Error> {
        let key = (quantities.to_vec(), n);
        if !self.cache.contains_key(&key) {
            let program = QuantityProgram::compile(objective, n, quantities, None)?;
            self.cache.insert(key.clone(), program);
        }
        Ok(&self.cache[&key])
    }

    /// Runs the step computing `quantities` on `(x, y)` (with `direction`,
    /// per parameter, for [`Quantity::BatchDotDirection`]): the training
    /// step's output (loss, outputs, gradients) and the values for the
    /// instruments.
    pub(super) fn run(
        &mut self,
        objective: &Objective,
        quantities: &[Quantity],
        params: &ParamStore,
        (x, y): (&Tensor, &Tensor),
        direction: Option<&[Tensor]>,
    ) -> Result<(StepOutput, StepValues), Error> {
        let n = x.shape()[0];
        let program = self.get(objective, quantities, n)?;
        let values = match direction {
            Some(d) => program.run_along(params, x, y, d)?,
            None => program.run(params, x, y, None)?,
        };
        Ok(assemble(objective, n, values))
    }
}

/// Each parameter's [`PerSample`] from the `batch_grad_factors` outputs
/// (`None` when they were not computed).
fn per_sample_factors(
    names: &[&str],
    by_name: &mut HashMap<String, Tensor>,
) -> Option<Vec<PerSample>> {
    let q = Quantity::BatchGradFactors;
    names
        .iter()
        .map(|p| {
            if let Some(t) = by_name.remove(&format!("{q}/{p}")) {
                return Some(PerSample::Full(t));
            }
            let (layer, kind) = p.rsplit_once('.')?;
            let grad = by_name.get(&format!("{q}/{layer}/output_grad"))?.clone();
            match kind {
                "weight" => Some(PerSample::Outer {
                    input: by_name.get(&format!("{q}/{layer}/input"))?.clone(),
                    output_grad: grad,
                }),
                _ => Some(PerSample::Rows(grad)),
            }
        })
        .collect()
}

/// Sorts a program's named outputs into the step output and the values.
fn assemble(
    objective: &Objective,
    n: usize,
    values: Vec<(String, Tensor)>,
) -> (StepOutput, StepValues) {
    let names: Vec<&str> = objective
        .network
        .params()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut by_name: HashMap<String, Tensor> = values.into_iter().collect();
    let batch_grad = per_sample_factors(&names, &mut by_name);
    let mut per_param = |q: Quantity| -> Option<Vec<Tensor>> {
        names
            .iter()
            .map(|p| by_name.remove(&format!("{q}/{p}")))
            .collect()
    };
    let grads = per_param(Quantity::Grad).unwrap_or_default();
    let batch_l2 = per_param(Quantity::BatchL2);
    let batch_dot = per_param(Quantity::BatchDotGrad);
    let batch_dot_direction = per_param(Quantity::BatchDotDirection);
    let sgs = per_param(Quantity::SumGradSquared);
    let diag_h = per_param(Quantity::DiagHessian);
    let f64s = |ts: &[Tensor]| ts.iter().map(Tensor::to_f64_vec).collect::<Vec<_>>();
    let summed = |ts: Vec<Tensor>| {
        let mut total = vec![0.0; n];
        ts.iter().for_each(|t| t.accumulate_into(&mut total, 1.0));
        total
    };
    let loss = by_name
        .remove(Quantity::Loss.name())
        .map_or(f64::NAN, |t| t.to_f64_vec()[0]);
    let values = StepValues {
        batch: n,
        loss,
        grad: grads.clone(),
        batch_loss: by_name
            .remove(Quantity::BatchLoss.name())
            .map(|t| t.to_f64_vec()),
        batch_grad,
        batch_l2: batch_l2.map(&summed),
        batch_dot_grad: batch_dot.map(&summed),
        batch_dot_direction: batch_dot_direction.map(&summed),
        sum_grad_squared: sgs.as_deref().map(f64s),
        diag_hessian: diag_h.as_deref().map(f64s),
    };
    let output = by_name
        .remove(Quantity::Output.name())
        .unwrap_or_else(|| Tensor::zeros(vec![n, 0], objective.dtype));
    let step = StepOutput {
        loss,
        output,
        grads,
        stats: Vec::new(),
    };
    (step, values)
}
