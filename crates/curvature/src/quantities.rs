//! BackPACK's quantities on one batch, computed together in one graph built
//! from `vmap` (over samples, and over the columns of a symmetric factor of the
//! loss Hessian) of `vjp`.

use std::fmt;
use std::str::FromStr;

use secondo_graph::{Builder, Executable, Feeds, Var};
use secondo_nn::{LayerTap, LossKind, ParamStore, Reduction};
use secondo_tensor::Tensor;

use crate::objective::{batch_feeds, INPUT, TARGET};
use crate::{CurvatureError, Objective};

/// A quantity of shared/INTERFACES.md.
///
/// ```
/// use secondo_curvature::Quantity;
/// assert_eq!("batch_l2".parse::<Quantity>().unwrap(), Quantity::BatchL2);
/// assert!("batch_l3".parse::<Quantity>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantity {
    /// The gradient of the loss.
    Grad,
    /// Per-sample gradients `c_n = s·∇ℓ_n` (they sum to the gradient), `[N, ...]`.
    BatchGrad,
    /// Squared norms `‖c_n‖²` per sample and parameter, `[N]`.
    BatchL2,
    /// `Σ_n c_n²` elementwise.
    SumGradSquared,
    /// `(1/N) Σ_n c_n² − ((1/N) Σ_n c_n)²` elementwise.
    Variance,
    /// Diagonal of the exact GGN.
    DiagGgnExact,
    /// Per-sample diagonals of the exact GGN, `[N, ...]`.
    BatchDiagGgnExact,
    /// Monte-Carlo estimate of the GGN diagonal (sampled targets).
    DiagGgnMc,
    /// Diagonal of the Hessian.
    DiagHessian,
    /// Kronecker factors of the exact GGN of each linear layer (KFLR).
    Kflr,
    /// Kronecker factors with a Monte-Carlo output factor (KFAC, sampled targets).
    Kfac,
    /// Kronecker factors with the output factor propagated as batch averages (KFRA).
    Kfra,
    /// The loss on the batch (with its reduction), a scalar named `loss`.
    Loss,
    /// The per-sample loss terms `ℓ_n` (unscaled), `[N]`, named `batch_loss`.
    BatchLoss,
    /// The network's output on the batch, `[N, C]`, named `output`.
    Output,
    /// `c_n · g` per sample and parameter, `[N]`: each per-sample gradient's
    /// inner product with the batch gradient `g = Σ_n c_n` (Cockpit's
    /// inner-product and orthogonality tests).
    BatchDotGrad,
    /// `c_n · d` per sample and parameter, `[N]`: each per-sample gradient's
    /// inner product with a given direction `d`, fed per parameter as
    /// `direction/<parameter>` ([`QuantityProgram::run_along`]; α's slopes
    /// along the last step, at its end point).
    BatchDotDirection,
    /// The per-sample gradients in factored form where a layer has one: for
    /// a dense linear layer at path `l`, its inputs `[N, in]`
    /// (`batch_grad_factors/<l>/input`) and the gradient of the loss with
    /// respect to its outputs `[N, out]` (`batch_grad_factors/<l>/output_grad`),
    /// whose outer products per sample are the weight's per-sample gradients
    /// and whose rows are the bias's; every other parameter's per-sample
    /// gradients as `batch_grad_factors/<parameter>`. `N·(in + out)` values
    /// per layer instead of `N·in·out`.
    BatchGradFactors,
}

/// Names as in INTERFACES.md, in order.
const NAMES: &[(&str, Quantity)] = &[
    ("grad", Quantity::Grad),
    ("batch_grad", Quantity::BatchGrad),
    ("batch_l2", Quantity::BatchL2),
    ("sum_grad_squared", Quantity::SumGradSquared),
    ("variance", Quantity::Variance),
    ("diag_ggn_exact", Quantity::DiagGgnExact),
    ("batch_diag_ggn_exact", Quantity::BatchDiagGgnExact),
    ("diag_ggn_mc", Quantity::DiagGgnMc),
    ("diag_hessian", Quantity::DiagHessian),
    ("kflr", Quantity::Kflr),
    ("kfac", Quantity::Kfac),
    ("kfra", Quantity::Kfra),
    ("loss", Quantity::Loss),
    ("batch_loss", Quantity::BatchLoss),
    ("output", Quantity::Output),
    ("batch_dot_grad", Quantity::BatchDotGrad),
    ("batch_dot_direction", Quantity::BatchDotDirection),
    ("batch_grad_factors", Quantity::BatchGradFactors),
];

impl FromStr for Quantity {
    type Err = CurvatureError;
    fn from_str(s: &str) -> Result<Self, CurvatureError> {
        NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|p| p.1)
            .ok_or_else(|| {
                let names: Vec<&str> = NAMES.iter().map(|p| p.0).collect();
                CurvatureError::Invalid(format!(
                    "unknown or unavailable quantity '{s}' (available: {})",
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Quantity {
    /// The name of INTERFACES.md.
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|p| p.1 == self).map_or("?", |p| p.0)
    }

    /// Every quantity this version computes.
    pub fn all() -> Vec<Quantity> {
        NAMES.iter().map(|p| p.1).collect()
    }
}

/// The single-sample part of the graph: one sample's input and target nodes,
/// its network output and its (unscaled) loss term.
struct Sample<'b> {
    x: Var<'b>,
    y: Var<'b>,
    output: Var<'b>,
    loss: Var<'b>,
    /// The batch's inputs and targets as stacks of single samples, what
    /// `vmap` replaces `x` and `y` with.
    stacks: [Var<'b>; 2],
}

/// The columns of symmetric factors `S_n` of every sample's loss Hessian with
/// respect to its outputs (`S_n S_nᵀ = ∇²_f ℓ_n`) for outputs `f` of shape
/// `[N, C]`, as a `[C, N, C]` node whose entry `[k, n, :]` is column `k` of `S_n`.
fn hessian_factor<'b>(kind: LossKind, f: Var<'b>) -> Var<'b> {
    let b = f.builder();
    let (n, c) = (f.shape()[0], f.shape()[1]);
    let full = [c, n, c];
    let eye = b
        .constant(identity(c, b.dtype()))
        .reshape(&[c, 1, c])
        .broadcast_to(&full);
    // A per-sample, per-column value v[n, k] placed at [k, n, :].
    let per_column = |v: Var<'b>| v.permute(&[1, 0]).reshape(&[c, n, 1]).broadcast_to(&full);
    match kind {
        LossKind::CrossEntropy => {
            // S[i, k] = √p_k (δ_ik − p_i).
            let shifted = f - f.max_over(&[1]).reshape(&[n, 1]);
            let e = shifted.exp();
            let p = e / e.sum(&[1]).reshape(&[n, 1]);
            (eye - p.reshape(&[1, n, c]).broadcast_to(&full)) * per_column(p.sqrt())
        }
        LossKind::Mse => eye * std::f64::consts::SQRT_2,
        LossKind::BceWithLogits => {
            let s = ((f * 0.5).tanh() + 1.0) * 0.5;
            eye * per_column((s * (1.0 - s)).sqrt())
        }
    }
}

fn identity(c: usize, dtype: secondo_tensor::DType) -> Tensor {
    let mut v = vec![0.0; c * c];
    (0..c).for_each(|i| v[i * c + i] = 1.0);
    Tensor::from_f64(vec![c, c], &v, dtype).expect("c·c values")
}

/// Computes `quantities` of `objective` at `params` on one batch `(x, y)`
/// (the loss reduced over this batch, BackPACK's convention), all in one
/// graph. `mc_targets` are sampled targets for [`Quantity::DiagGgnMc`]
/// (`[M, N, ...]`, required only for it). Returns `(name, tensor)` pairs named
/// `<quantity>/<parameter>`.
pub fn compute_quantities(
    objective: &Objective,
    params: &ParamStore,
    x: &Tensor,
    y: &Tensor,
    quantities: &[Quantity],
    mc_targets: Option<&Tensor>,
) -> Result<Vec<(String, Tensor)>, CurvatureError> {
    let m = mc_targets.map(|t| t.shape()[0]);
    QuantityProgram::compile(objective, x.shape()[0], quantities, m)?.run(params, x, y, mc_targets)
}

/// Quantities compiled for batches of one size, to run many times.
pub struct QuantityProgram {
    exe: Executable,
    names: Vec<String>,
    needs_mc: bool,
    /// The parameters whose direction [`Quantity::BatchDotDirection`] takes
    /// (empty when it is not computed).
    direction_of: Vec<String>,
}

impl QuantityProgram {
    /// Compiles `quantities` for batches of `n` samples (and `mc_samples` draws
    /// when [`Quantity::DiagGgnMc`] is among them).
    pub fn compile(
        objective: &Objective,
        n: usize,
        quantities: &[Quantity],
        mc_samples: Option<usize>,
    ) -> Result<QuantityProgram, CurvatureError> {
        build(objective, n, quantities, mc_samples)
    }

    /// The optimised graph that runs (what `--explain` prints).
    pub fn graph(&self) -> &secondo_graph::Graph {
        self.exe.graph()
    }

    /// The compiled executable (for profiling with [`Executable::run_timed`]).
    ///
    /// ```
    /// use secondo_curvature::{Objective, ObjectiveConfig, Quantity, QuantityProgram};
    /// use secondo_nn::ParamStore;
    /// let obj = Objective::from_config(&ObjectiveConfig {
    ///     spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default()
    /// }).unwrap();
    /// let params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
    /// let digits = secondo_data::digits();
    /// let batch = digits.batches(8).unwrap().next().unwrap();
    /// let (x, y) = obj.batch_tensors(&batch).unwrap();
    /// let program = QuantityProgram::compile(&obj, 8, &[Quantity::BatchL2], None).unwrap();
    /// let feeds = program.feeds(&params, &x, &y, None).unwrap();
    /// let (values, seconds) = program.executable().run_timed(&feeds).unwrap();
    /// assert_eq!(values.len(), 2); // batch_l2 of the weight and of the bias
    /// assert_eq!(seconds.len(), program.graph().len());
    /// ```
    pub fn executable(&self) -> &Executable {
        &self.exe
    }

    /// Runs on one batch.
    pub fn run(
        &self,
        params: &ParamStore,
        x: &Tensor,
        y: &Tensor,
        mc_targets: Option<&Tensor>,
    ) -> Result<Vec<(String, Tensor)>, CurvatureError> {
        let values = self.exe.run(&self.feeds(params, x, y, mc_targets)?)?;
        Ok(self.names.iter().cloned().zip(values).collect())
    }

    /// Runs on one batch with the direction of
    /// [`Quantity::BatchDotDirection`], one tensor per parameter.
    ///
    /// ```
    /// use secondo_curvature::{Objective, ObjectiveConfig, Quantity, QuantityProgram};
    /// use secondo_nn::ParamStore;
    /// let obj = Objective::from_config(&ObjectiveConfig {
    ///     spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default()
    /// }).unwrap();
    /// let params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
    /// let digits = secondo_data::digits();
    /// let batch = digits.batches(8).unwrap().next().unwrap();
    /// let (x, y) = obj.batch_tensors(&batch).unwrap();
    /// let q = [Quantity::BatchDotGrad, Quantity::BatchDotDirection];
    /// let program = QuantityProgram::compile(&obj, 8, &q, None).unwrap();
    /// // Along the gradient itself, the two agree.
    /// let grad = secondo_curvature::compute_quantities(&obj, &params, &x, &y, &[Quantity::Grad], None).unwrap();
    /// let direction: Vec<_> = grad.into_iter().map(|(_, t)| t).collect();
    /// let out = program.run_along(&params, &x, &y, &direction).unwrap();
    /// assert_eq!((out[0].0.as_str(), out[1].0.as_str()), ("batch_dot_grad/0.weight", "batch_dot_direction/0.weight"));
    /// assert!(out[0].1.max_abs_diff(&out[1].1) < 1e-6);
    /// assert!(program.run(&params, &x, &y, None).is_err());
    /// ```
    pub fn run_along(
        &self,
        params: &ParamStore,
        x: &Tensor,
        y: &Tensor,
        direction: &[Tensor],
    ) -> Result<Vec<(String, Tensor)>, CurvatureError> {
        let values = self.exe.run(&self.feeds_along(params, x, y, direction)?)?;
        Ok(self.names.iter().cloned().zip(values).collect())
    }

    /// Whether the program reads a direction ([`Quantity::BatchDotDirection`]):
    /// it then runs with [`QuantityProgram::run_along`].
    pub fn needs_direction(&self) -> bool {
        !self.direction_of.is_empty()
    }

    /// What [`QuantityProgram::run_along`] feeds the executable.
    pub fn feeds_along(
        &self,
        params: &ParamStore,
        x: &Tensor,
        y: &Tensor,
        direction: &[Tensor],
    ) -> Result<Feeds, CurvatureError> {
        if direction.len() != self.direction_of.len() {
            return Err(CurvatureError::Invalid(format!(
                "batch_dot_direction: {} direction tensors for {} parameters",
                direction.len(),
                self.direction_of.len()
            )));
        }
        let mut feeds = self.batch_feeds(params, x, y, None)?;
        for (name, d) in self.direction_of.iter().zip(direction) {
            feeds.insert(&direction_feed(name), d.clone());
        }
        Ok(feeds)
    }

    /// What [`QuantityProgram::run`] feeds the executable (see
    /// [`QuantityProgram::executable`] for an example).
    pub fn feeds(
        &self,
        params: &ParamStore,
        x: &Tensor,
        y: &Tensor,
        mc_targets: Option<&Tensor>,
    ) -> Result<Feeds, CurvatureError> {
        if !self.direction_of.is_empty() {
            return Err(CurvatureError::Invalid(
                "batch_dot_direction needs a direction per parameter (QuantityProgram::run_along)"
                    .into(),
            ));
        }
        self.batch_feeds(params, x, y, mc_targets)
    }

    /// The batch's, the parameters' and the sampled targets' feeds.
    fn batch_feeds(
        &self,
        params: &ParamStore,
        x: &Tensor,
        y: &Tensor,
        mc_targets: Option<&Tensor>,
    ) -> Result<Feeds, CurvatureError> {
        let mut feeds = batch_feeds(params, x, y);
        if self.needs_mc {
            let t = mc_targets.ok_or_else(|| {
                CurvatureError::Invalid("diag_ggn_mc needs sampled targets".into())
            })?;
            feeds.insert("mc/targets", t.clone());
        }
        Ok(feeds)
    }
}

fn build(
    objective: &Objective,
    n: usize,
    quantities: &[Quantity],
    mc_samples: Option<usize>,
) -> Result<QuantityProgram, CurvatureError> {
    if objective.batchnorm != secondo_nn::Mode::Eval && objective.has_batchnorm() {
        return Err(CurvatureError::Invalid(
            "--batchnorm train: quantities are computed per sample, and batch statistics \
             couple the samples; use --batchnorm eval, or spectrum (the curvature operators) \
             for train mode"
                .into(),
        ));
    }
    let net = &objective.network;
    let c = net.output_shape()[0];
    let b = Builder::new(objective.dtype);
    let mut x_shape = vec![n];
    x_shape.extend_from_slice(net.input_shape());
    let y_shape = objective.loss.target_shape(&[n, c]);
    let xs = b.input(INPUT, &x_shape);
    let ys = b.input(TARGET, &y_shape);
    let params_v = net.param_vars(&b);
    let scale = objective.loss.scale(&[n, c]);
    let summed = secondo_nn::Loss::new(objective.loss.kind, Reduction::Sum);

    // One sample, with a batch axis of 1 (the network expects one).
    let mut one = vec![1];
    one.extend_from_slice(net.input_shape());
    let x1 = b.input("sample/x", &one);
    let y_one: Vec<usize> = std::iter::once(1)
        .chain(y_shape[1..].iter().copied())
        .collect();
    let y1 = b.input("sample/y", &y_one);
    let forward1 = net.forward_with(x1, &params_v, secondo_nn::Mode::Eval)?;
    let f1 = forward1.output;
    let dense1: Vec<LayerTap> = forward1
        .taps
        .into_iter()
        .filter(|t| !t.is_spatial())
        .collect();
    let mut xr = vec![n];
    xr.extend_from_slice(&one);
    let mut yr = vec![n];
    yr.extend_from_slice(&y_one);
    let sample = Sample {
        x: x1,
        y: y1,
        output: f1,
        loss: summed.build(f1, y1)?,
        stacks: [xs.reshape(&xr), ys.reshape(&yr)],
    };

    let mut outputs: Vec<(String, Var)> = Vec::new();
    let names: Vec<String> = net.params().iter().map(|p| p.name.clone()).collect();
    let needs_first_order = quantities.iter().any(|q| {
        matches!(
            q,
            Quantity::Grad
                | Quantity::BatchGrad
                | Quantity::BatchL2
                | Quantity::SumGradSquared
                | Quantity::Variance
                | Quantity::BatchDotGrad
                | Quantity::BatchDotDirection
                | Quantity::BatchGradFactors
        )
    });
    let needs_terms = quantities
        .iter()
        .any(|q| matches!(q, Quantity::Loss | Quantity::BatchLoss | Quantity::Output));
    if needs_first_order || needs_terms {
        // The reduction factor goes in before differentiating, so the
        // per-sample gradients come out scaled without another pass over them.
        // The loss terms and outputs are batched with the gradients, so that
        // they share one forward pass.
        // The dense layers' factors come out of the same per-sample
        // backward pass: the gradients at their outputs, and their inputs.
        let taps: &[LayerTap] = match quantities.contains(&Quantity::BatchGradFactors) {
            true => &dense1,
            false => &[],
        };
        let mut wrt = if needs_first_order {
            params_v.clone()
        } else {
            Vec::new()
        };
        wrt.extend(taps.iter().map(|t| t.output));
        let mut single = b.grad(sample.loss * scale, &wrt)?;
        single.extend(taps.iter().map(|t| t.input));
        single.extend([sample.loss, sample.output]);
        let mut per_sample = b.vmap(&single, &[sample.x, sample.y], &sample.stacks, n)?;
        let output = per_sample.pop().expect("output").reshape(&[n, c]);
        let terms = per_sample.pop().expect("loss terms").reshape(&[n]);
        outputs.extend(step_terms(quantities, terms, output, scale));
        let inputs = per_sample.split_off(per_sample.len() - taps.len());
        let deltas = per_sample.split_off(per_sample.len() - taps.len());
        let (factors, factored) = gradient_factors(net, taps, &deltas, &inputs);
        outputs.extend(factors);
        for ((name, cn), p) in names.iter().zip(per_sample).zip(net.params()) {
            let mut q = quantities.to_vec();
            if factored.contains(name) {
                q.retain(|&q| q != Quantity::BatchGradFactors);
            }
            outputs.extend(first_order(&q, name, cn, p.shape.len(), n));
        }
    }
    let mut t_shape = vec![mc_samples.unwrap_or(0)];
    t_shape.extend_from_slice(&y_shape);
    let layers = Layers {
        objective,
        xs,
        ys,
        params: &params_v,
        scale,
        sample,
        mc_shape: t_shape,
    };
    let diagonals: Vec<Quantity> = quantities
        .iter()
        .copied()
        .filter(|q| {
            matches!(
                q,
                Quantity::DiagGgnExact
                    | Quantity::BatchDiagGgnExact
                    | Quantity::DiagHessian
                    | Quantity::DiagGgnMc
            )
        })
        .collect();
    if !diagonals.is_empty() {
        outputs.extend(curvature_diagonals(&layers, &diagonals)?);
    }
    if quantities
        .iter()
        .any(|q| matches!(q, Quantity::Kflr | Quantity::Kfac | Quantity::Kfra))
    {
        outputs.extend(kronecker_factors(&layers, quantities)?);
    }
    let needs_mc = quantities
        .iter()
        .any(|q| matches!(q, Quantity::DiagGgnMc | Quantity::Kfac));
    let ids: Vec<usize> = outputs.iter().map(|(_, v)| v.id()).collect();
    let exe = Executable::compile(&b.finish()?, &ids)?;
    Ok(QuantityProgram {
        exe,
        names: outputs.into_iter().map(|(n, _)| n).collect(),
        needs_mc,
        direction_of: match quantities.contains(&Quantity::BatchDotDirection) {
            true => names,
            false => Vec::new(),
        },
    })
}

/// The batched forward pass in evaluation mode: the outputs, the dense
/// (non-spatial) layers' taps and their outputs.
fn dense_taps<'b>(
    objective: &Objective,
    xs: Var<'b>,
    params: &[Var<'b>],
) -> Result<(Var<'b>, Vec<LayerTap<'b>>, Vec<Var<'b>>), CurvatureError> {
    let forward = objective
        .network
        .forward_with(xs, params, secondo_nn::Mode::Eval)?;
    let dense: Vec<LayerTap> = forward
        .taps
        .into_iter()
        .filter(|t| !t.is_spatial())
        .collect();
    let z = dense.iter().map(|t| t.output).collect();
    Ok((forward.output, dense, z))
}

/// Named graph values, as a program outputs them.
type Named<'b> = Vec<(String, Var<'b>)>;

/// [`Quantity::BatchGradFactors`] of the dense layers `taps` (of one
/// sample's graph) from their batched output gradients and inputs, and the
/// parameters they cover.
fn gradient_factors<'b>(
    net: &secondo_nn::Network,
    taps: &[LayerTap<'b>],
    deltas: &[Var<'b>],
    inputs: &[Var<'b>],
) -> (Named<'b>, Vec<String>) {
    let q = Quantity::BatchGradFactors;
    let mut outputs = Vec::new();
    let mut covered = Vec::new();
    for ((tap, delta), input) in taps.iter().zip(deltas).zip(inputs) {
        let l = &tap.layer;
        let rows = |v: Var<'b>| {
            let s = v.shape();
            v.reshape(&[s[0], s[s.len() - 1]])
        };
        outputs.push((format!("{q}/{l}/input"), rows(*input)));
        outputs.push((format!("{q}/{l}/output_grad"), rows(*delta)));
        covered.extend(
            net.params()
                .iter()
                .filter(|p| p.name == format!("{l}.weight") || p.name == format!("{l}.bias"))
                .map(|p| p.name.clone()),
        );
    }
    (outputs, covered)
}

/// The batch's loss, loss terms and outputs among `quantities`.
fn step_terms<'b>(
    quantities: &[Quantity],
    terms: Var<'b>,
    output: Var<'b>,
    scale: f64,
) -> Vec<(String, Var<'b>)> {
    quantities
        .iter()
        .filter_map(|q| match q {
            Quantity::Loss => Some((q.to_string(), terms.sum(&[0]) * scale)),
            Quantity::BatchLoss => Some((q.to_string(), terms)),
            Quantity::Output => Some((q.to_string(), output)),
            _ => None,
        })
        .collect()
}

/// The first-order quantities among `quantities` of one parameter of rank
/// `rank`, from its per-sample gradients `cn` (`[N, ...]`).
fn first_order<'b>(
    quantities: &[Quantity],
    name: &str,
    cn: Var<'b>,
    rank: usize,
    n: usize,
) -> Vec<(String, Var<'b>)> {
    let rest: Vec<usize> = (1..=rank).collect();
    let mean = 1.0 / n as f64;
    quantities
        .iter()
        .filter_map(|q| {
            let v = match q {
                Quantity::Grad => cn.sum(&[0]),
                Quantity::BatchGrad | Quantity::BatchGradFactors => cn,
                Quantity::BatchL2 => cn.square().sum(&rest),
                Quantity::SumGradSquared => cn.square().sum(&[0]),
                Quantity::Variance => cn.square().sum(&[0]) * mean - (cn.sum(&[0]) * mean).square(),
                Quantity::BatchDotGrad => per_sample_dot(cn, cn.sum(&[0]), rank),
                Quantity::BatchDotDirection => {
                    let d = cn.builder().input(&direction_feed(name), &cn.shape()[1..]);
                    per_sample_dot(cn, d, rank)
                }
                _ => return None,
            };
            Some((format!("{q}/{name}"), v))
        })
        .collect()
}

/// `c_n · v` for every sample: one contraction, which the einsum optimizer
/// fuses with the per-sample gradients' own (for a dense layer
/// `Σ_o δ_no (v a_n)_o`, never forming `c_n`).
fn per_sample_dot<'b>(cn: Var<'b>, v: Var<'b>, rank: usize) -> Var<'b> {
    let letters: String = ('a'..='m').take(rank).collect();
    let spec = format!("z{letters},{letters}->z");
    cn.builder().einsum(&spec, &[cn, v])
}

/// The feed of [`Quantity::BatchDotDirection`]'s direction for a parameter.
fn direction_feed(param: &str) -> String {
    format!("direction/{param}")
}

/// Draws `m` targets per sample of the batch from the model's predictive
/// distribution (seeded), stacked as `[m, N, ...]`, for [`Quantity::DiagGgnMc`].
pub fn sample_mc_targets(
    objective: &Objective,
    params: &ParamStore,
    x: &Tensor,
    y: &Tensor,
    m: usize,
    seed: u64,
) -> Result<Tensor, CurvatureError> {
    use rand::SeedableRng;
    if m == 0 {
        return Err(CurvatureError::Invalid(
            "--mc-samples must be at least 1".into(),
        ));
    }
    let n = x.shape()[0];
    let out = objective
        .program(n, false)?
        .run(params, x.clone(), y.clone())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::new();
    for _ in 0..m {
        values.extend(
            crate::sampling::sample_targets(objective.loss.kind, &out.output, &mut rng)
                .to_f64_vec(),
        );
    }
    let mut shape = vec![m];
    shape.extend_from_slice(y.shape());
    Ok(Tensor::from_f64(shape, &values, objective.dtype).expect("m·N targets"))
}

/// Which columns a curvature diagonal squares: the loss-Hessian factor's
/// (exact GGN) or sampled loss gradients' (Monte-Carlo GGN).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Columns {
    Exact,
    Sampled,
}

/// KFLR / KFAC / KFRA factors of every linear and ungrouped convolution
/// layer, named `<quantity>/<layer>.weight/{out,in}` and
/// `<quantity>/<layer>.bias/out`: `A = (1/N) Σ_n Σ_l a_nl a_nlᵀ` of the
/// layer's input rows (patches for a convolution, over its `L` output
/// positions), and `B = Σ_n Σ_k g_nk g_nkᵀ` with `g_nk` the column `k` of
/// the loss-Hessian factor (KFLR) or a sampled loss gradient (KFAC, averaged
/// over draws) backpropagated to the layer output, for a convolution summed
/// over its positions first (`g_nk = Σ_l g_nlk`, so that `B` is the exact GGN
/// block of the bias): BackPACK's convention. curvlinops' `expand` differs
/// (docs/ARCHITECTURE.md, "Kronecker factors of convolutions").
fn kronecker_factors<'b>(
    k: &Layers<'_, 'b>,
    quantities: &[Quantity],
) -> Result<Vec<(String, Var<'b>)>, CurvatureError> {
    let b = k.xs.builder();
    let net = &k.objective.network;
    let forward = net.forward_with(k.xs, k.params, secondo_nn::Mode::Eval)?;
    let (f, taps) = (forward.output, forward.taps);
    k.refuse_untapped(&taps, "Kronecker factors")?;
    let n = f.shape()[0];
    let z: Vec<Var> = taps.iter().map(|t| t.output).collect();
    let mut out = Vec::new();
    let mut emit = |q: Quantity, columns: Vec<Var<'b>>, weight: f64| {
        for (tap, g) in taps.iter().zip(columns) {
            let (g, a) = if tap.is_spatial() {
                (
                    g.sum(&[3]),
                    b.einsum("nli,nlj->ij", &[tap.input, tap.input]),
                )
            } else {
                (g, b.einsum("ni,nj->ij", &[tap.input, tap.input]))
            };
            let bmat = b.einsum("kno,knp->op", &[g, g]);
            let l = &tap.layer;
            let bmat = bmat * weight;
            out.push((format!("{q}/{l}.weight/out"), bmat));
            out.push((format!("{q}/{l}.weight/in"), a * (1.0 / n as f64)));
            if net.params().iter().any(|p| p.name == format!("{l}.bias")) {
                out.push((format!("{q}/{l}.bias/out"), bmat));
            }
        }
    };
    if quantities.contains(&Quantity::Kflr) {
        emit(Quantity::Kflr, k.factor_columns(f, &z)?, 1.0);
    }
    if quantities.contains(&Quantity::Kfac) {
        let m = k.draws("kfac")?;
        emit(
            Quantity::Kfac,
            k.sampled_columns(f, &z)?,
            k.scale / m as f64,
        );
    }
    if quantities.contains(&Quantity::Kfra) {
        k.refuse_non_dense("kfra")?;
        out.extend(kfra(k, f, &taps)?);
    }
    Ok(out)
}

/// What the per-layer quantities are built from: the batch, the parameter
/// nodes, the loss's reduction factor, the single-sample graph and the
/// shape of the sampled targets.
struct Layers<'a, 'b> {
    objective: &'a Objective,
    xs: Var<'b>,
    ys: Var<'b>,
    params: &'a [Var<'b>],
    scale: f64,
    sample: Sample<'b>,
    mc_shape: Vec<usize>,
}

impl<'b> Layers<'_, 'b> {
    /// The columns of the loss-Hessian factor of the network outputs `f`
    /// (scaled by the square root of the reduction factor) backpropagated to
    /// each of the layer outputs `z`: per layer a `[C, N, out...]` node whose
    /// entries `[k, n, ...]` are `J_nᵀ s_nk` (`vmap` over columns of one `vjp`).
    fn factor_columns(&self, f: Var<'b>, z: &[Var<'b>]) -> Result<Vec<Var<'b>>, CurvatureError> {
        let b = f.builder();
        let (n, c) = (f.shape()[0], f.shape()[1]);
        let u = b.input("factor/u", &[n, c]);
        let gz = b.vjp(&[f], &[u], z)?;
        let factor = hessian_factor(self.objective.loss.kind, f) * self.scale.sqrt();
        Ok(b.vmap(&gz, &[u], &[factor], c)?)
    }

    /// The loss gradients for sampled targets backpropagated to `z`: per
    /// layer `[M, N, out...]`, one slice per draw (unscaled).
    fn sampled_columns(&self, f: Var<'b>, z: &[Var<'b>]) -> Result<Vec<Var<'b>>, CurvatureError> {
        let b = f.builder();
        let summed = secondo_nn::Loss::new(self.objective.loss.kind, Reduction::Sum);
        let gf = b.grad(summed.build(f, self.ys)?, &[f])?[0];
        let gz = b.vjp(&[f], &[gf], z)?;
        let targets = b.input("mc/targets", &self.mc_shape);
        Ok(b.vmap(&gz, &[self.ys], &[targets], self.mc_shape[0])?)
    }

    /// The number of Monte-Carlo draws, which `what` needs to be positive.
    fn draws(&self, what: &str) -> Result<usize, CurvatureError> {
        match self.mc_shape[0] {
            0 => Err(CurvatureError::Invalid(format!(
                "{what} needs sampled targets"
            ))),
            m => Ok(m),
        }
    }

    /// Per-sample diagonals `Σ_k (J_nᵀ s_nk)²` for the parameters `wrt`,
    /// `[N, ...]` each, through the single-sample graph: `vmap` over samples
    /// of `vmap` over the columns of one `vjp`, for any layer. With sampled
    /// columns, the draws are averaged and the reduction factor applied.
    fn per_sample_squares(
        &self,
        wrt: &[Var<'b>],
        columns: Columns,
    ) -> Result<Vec<Var<'b>>, CurvatureError> {
        let s = &self.sample;
        let b = s.x.builder();
        let n = self.xs.shape()[0];
        let (squares, batched, stacks) = match columns {
            Columns::Exact => {
                let c = s.output.shape()[1];
                let u = b.input("sample/u", &[1, c]);
                let jtu = b.vjp(&[s.output], &[u], wrt)?;
                let factor = hessian_factor(self.objective.loss.kind, s.output) * self.scale.sqrt();
                let cols = b.vmap(&jtu, &[u], &[factor], c)?;
                let squares: Vec<Var> = cols.iter().map(|v| v.square().sum(&[0])).collect();
                (squares, vec![s.x, s.y], s.stacks.to_vec())
            }
            Columns::Sampled => {
                let m = self.draws("diag_ggn_mc")?;
                let gf = b.grad(s.loss, &[s.output])?[0];
                let jtg = b.vjp(&[s.output], &[gf], wrt)?;
                let mut draw_shape = vec![m];
                draw_shape.extend(s.y.shape());
                let draws = b.input("sample/draws", &draw_shape);
                let cols = b.vmap(&jtg, &[s.y], &[draws], m)?;
                let weight = self.scale / m as f64;
                let squares: Vec<Var> =
                    cols.iter().map(|v| v.square().sum(&[0]) * weight).collect();
                // mc/targets [M, N, ...] as one [M, 1, ...] stack per sample.
                let targets = b.input("mc/targets", &self.mc_shape);
                let rank = self.mc_shape.len();
                let mut perm = vec![1, 0];
                perm.extend(2..rank);
                let mut per_sample = vec![n];
                per_sample.extend(&draw_shape);
                let stack = targets.permute(&perm).reshape(&per_sample);
                (squares, vec![s.x, draws], vec![s.stacks[0], stack])
            }
        };
        Ok(b.vmap(&squares, &batched, &stacks, n)?)
    }

    /// Refuses, for `what`, a convolution without a tap (a grouped one,
    /// which has no single patch matrix; BackPACK refuses it too). Other
    /// layers without a tap (normalization layers) get no Kronecker factors.
    fn refuse_untapped(&self, taps: &[LayerTap<'b>], what: &str) -> Result<(), CurvatureError> {
        let covered = |name: &str| {
            taps.iter()
                .any(|t| name.starts_with(&format!("{}.", t.layer)))
        };
        match self
            .objective
            .network
            .params()
            .iter()
            .find(|p| p.shape.len() == 4 && !covered(&p.name))
        {
            Some(p) => Err(CurvatureError::Invalid(format!(
                "{what} are defined for linear and ungrouped conv2d layers only; \
                 parameter {} belongs to a grouped convolution",
                p.name
            ))),
            None => Ok(()),
        }
    }

    /// Refuses, for `what`, a network that is not a chain of dense layers
    /// and elementwise activations.
    fn refuse_non_dense(&self, what: &str) -> Result<(), CurvatureError> {
        let spec = self.objective.network.spec();
        match spec
            .layers()
            .iter()
            .enumerate()
            .find(|(_, l)| !l.layer.is_dense_chain_link())
        {
            Some((i, l)) => Err(CurvatureError::Invalid(format!(
                "{what} needs a chain of linear layers and elementwise activations; \
                 layer {i} `{}` is not one",
                l.layer
            ))),
            None => Ok(()),
        }
    }
}

/// Diagonals of the GGN (exact summed or per sample, or Monte-Carlo) and of
/// the Hessian for every parameter.
///
/// A linear layer `z = a Wᵀ + b` on flat inputs has BackPACK's shortcut: with
/// the loss a sum over samples, `∂²L/∂W_oi² = Σ_n a_ni² ∂²L/∂z_no²` and
/// `∂²L/∂b_o² = Σ_n ∂²L/∂z_no²` (likewise for the GGN), with the GGN at `z`
/// the squared factor columns backpropagated to it. Every other parameter
/// (convolutions, normalization layers, anything inside a residual block)
/// gets the generic transformation, [`Layers::per_sample_squares`].
///
/// The Hessian diagonal adds residual terms (see [`add_residuals`]) on a
/// chain of dense layers and elementwise activations; equals the GGN's on a
/// network that is piecewise linear in every layer (ReLU, pooling, batch
/// norm in evaluation mode, ...); and is otherwise computed exactly from one
/// Hessian-vector product per parameter element (`vmap` over unit vectors).
fn curvature_diagonals<'b>(
    k: &Layers<'_, 'b>,
    quantities: &[Quantity],
) -> Result<Vec<(String, Var<'b>)>, CurvatureError> {
    let b = k.xs.builder();
    let net = &k.objective.network;
    let (f, dense, z) = dense_taps(k.objective, k.xs, k.params)?;
    let covered = |name: &str| {
        dense
            .iter()
            .any(|t| name.starts_with(&format!("{}.", t.layer)))
    };
    let others: Vec<usize> = (0..net.params().len())
        .filter(|&i| !covered(&net.params()[i].name))
        .collect();
    let other_vars: Vec<Var> = others.iter().map(|&i| k.params[i]).collect();
    let wants = |q: Quantity| quantities.contains(&q);
    let exact_needed = [
        Quantity::DiagGgnExact,
        Quantity::BatchDiagGgnExact,
        Quantity::DiagHessian,
    ]
    .iter()
    .any(|&q| wants(q));
    let mut out = Vec::new();
    let mut columns = Vec::new();
    if exact_needed {
        let ggn_z: Vec<Var> = k
            .factor_columns(f, &z)?
            .into_iter()
            .map(|col| col.square().sum(&[0]))
            .collect();
        let ggn_other = match others.is_empty() {
            true => Vec::new(),
            false => k.per_sample_squares(&other_vars, Columns::Exact)?,
        };
        columns.push((Columns::Exact, ggn_z, ggn_other));
    }
    if wants(Quantity::DiagGgnMc) {
        let m = k.draws("diag_ggn_mc")?;
        let mc_z: Vec<Var> = k
            .sampled_columns(f, &z)?
            .into_iter()
            .map(|col| col.square().sum(&[0]) * (k.scale / m as f64))
            .collect();
        let mc_other = match others.is_empty() {
            true => Vec::new(),
            false => k.per_sample_squares(&other_vars, Columns::Sampled)?,
        };
        columns.push((Columns::Sampled, mc_z, mc_other));
    }
    for &q in quantities {
        let source = if q == Quantity::DiagGgnMc {
            Columns::Sampled
        } else {
            Columns::Exact
        };
        let Some((_, at_z, at_other)) = columns.iter().find(|c| c.0 == source) else {
            continue;
        };
        let per_sample = q == Quantity::BatchDiagGgnExact;
        let mut named: Vec<(String, Var)> = Vec::new();
        let at_z = if q == Quantity::DiagHessian && dense_chain(k) {
            add_residuals(k, f, &dense, at_z.clone())?
        } else {
            at_z.clone()
        };
        for (tap, d) in dense.iter().zip(at_z) {
            let l = &tap.layer;
            let spec = if per_sample {
                "no,ni,ni->noi"
            } else {
                "no,ni,ni->oi"
            };
            named.push((
                format!("{l}.weight"),
                b.einsum(spec, &[d, tap.input, tap.input]),
            ));
            if net.params().iter().any(|p| p.name == format!("{l}.bias")) {
                named.push((
                    format!("{l}.bias"),
                    if per_sample { d } else { d.sum(&[0]) },
                ));
            }
        }
        for (&i, d) in others.iter().zip(at_other) {
            let d = if per_sample { *d } else { d.sum(&[0]) };
            named.push((net.params()[i].name.clone(), d));
        }
        if q == Quantity::DiagHessian && !dense_chain(k) && !piecewise_linear(k) {
            named = exact_hessian_diagonals(k)?;
        }
        // Parameter order, as the other quantities.
        for p in net.params() {
            if let Some((_, v)) = named.iter().find(|(name, _)| *name == p.name) {
                out.push((format!("{q}/{}", p.name), *v));
            }
        }
    }
    Ok(out)
}

/// Whether the network is a chain of dense layers and elementwise
/// activations (what [`add_residuals`] walks).
fn dense_chain(k: &Layers<'_, '_>) -> bool {
    k.objective
        .network
        .spec()
        .layers()
        .iter()
        .all(|l| l.layer.is_dense_chain_link())
}

/// Whether every layer is piecewise linear (the Hessian diagonal is the GGN's).
fn piecewise_linear(k: &Layers<'_, '_>) -> bool {
    k.objective
        .network
        .spec()
        .layers()
        .iter()
        .all(|l| l.layer.is_piecewise_linear())
}

/// The Hessian diagonal of every parameter, exactly: for a parameter of `P`
/// elements, `vmap` over the `P` unit vectors of the Hessian-vector product
/// (forward over reverse), keeping each product's own element. Costs `P`
/// products per parameter, so it is what the layers without a recursion
/// (layer norm, smooth activations after a convolution) fall back to.
fn exact_hessian_diagonals<'b>(
    k: &Layers<'_, 'b>,
) -> Result<Vec<(String, Var<'b>)>, CurvatureError> {
    let b = k.xs.builder();
    let net = &k.objective.network;
    let f = net.forward(k.xs, k.params)?;
    let summed = secondo_nn::Loss::new(k.objective.loss.kind, Reduction::Sum);
    let loss = summed.build(f, k.ys)? * k.scale;
    let grads = b.grad(loss, k.params)?;
    let mut out = Vec::new();
    for ((p, &w), g) in net.params().iter().zip(k.params).zip(grads) {
        let numel: usize = p.shape.iter().product();
        let t = b.input(&format!("diag_hessian/unit/{}", p.name), &p.shape);
        let hv = b.jvp(&[g], &[w], &[t])?;
        let mut stacked = vec![numel];
        stacked.extend(&p.shape);
        let units = b.constant(identity(numel, b.dtype())).reshape(&stacked);
        let products = b.vmap(&hv, &[t], &[units], numel)?[0];
        let diagonal = (products * units).sum(&[0]);
        out.push((p.name.clone(), diagonal));
    }
    Ok(out)
}

/// Turns per-sample GGN diagonals `diag` at the layer outputs `z_l` into
/// Hessian diagonals: per sample, the Hessian adds
/// `Σ_{m ≥ l} J_lmᵀ diag(r_m) J_lm` over the elementwise segments
/// `a_m = φ(z_m)` at or after `z_l` (`a_m` the next layer's input, or the
/// network output), with residual `r_m = φ''(z_m) ⊙ ∂L/∂a_m` backpropagated
/// from `z_m` by one unit column per unit of `z_m`. Segments whose second
/// derivative vanishes by construction (ReLU, no activation) contribute
/// nothing and cost nothing.
fn add_residuals<'b>(
    k: &Layers<'_, 'b>,
    f: Var<'b>,
    taps: &[LayerTap<'b>],
    mut diag: Vec<Var<'b>>,
) -> Result<Vec<Var<'b>>, CurvatureError> {
    let b = f.builder();
    let n = f.shape()[0];
    let z: Vec<Var> = taps.iter().map(|t| t.output).collect();
    let ends: Vec<Var> = taps.iter().skip(1).map(|t| t.input).chain([f]).collect();
    let summed = secondo_nn::Loss::new(k.objective.loss.kind, Reduction::Sum);
    let loss = summed.build(f, k.ys)? * k.scale;
    let grads = b.grad(loss, &ends)?;
    for (m, ((&zm, &end), g)) in z.iter().zip(&ends).zip(grads).enumerate() {
        if end.id() == zm.id() {
            continue;
        }
        let ones = b.scalar(1.0).broadcast_to(&zm.shape());
        let slope = b.jvp(&[end], &[zm], &[ones])?[0];
        let curvature = b.jvp(&[slope], &[zm], &[ones])?[0];
        if curvature.is_zero() {
            continue;
        }
        let r = curvature * g;
        diag[m] = diag[m] + r;
        if m == 0 {
            continue;
        }
        let o = zm.shape()[1];
        let t = b.input(&format!("diag_hessian/r{m}"), &[n, o]);
        let back = b.vjp(&[zm], &[t], &z[..m])?;
        let units = b
            .constant(identity(o, b.dtype()))
            .reshape(&[o, 1, o])
            .broadcast_to(&[o, n, o]);
        for (l, col) in b.vmap(&back, &[t], &[units], o)?.into_iter().enumerate() {
            diag[l] = diag[l] + b.einsum("jno,jno,nj->no", &[col, col, r]);
        }
    }
    Ok(diag)
}

/// KFRA (Botev et al. 2017): the output factor starts as the batch sum of the
/// loss Hessians with respect to the network outputs and is propagated
/// backwards as `Wᵀ M W` through a linear layer and `M ⊙ (1/N) Σ_n φ'_n φ'_nᵀ`
/// through an elementwise activation; the input factor is KFLR's.
fn kfra<'b>(
    k: &Layers<'_, 'b>,
    f: Var<'b>,
    taps: &[LayerTap<'b>],
) -> Result<Vec<(String, Var<'b>)>, CurvatureError> {
    let b = f.builder();
    let net = &k.objective.network;
    let n = f.shape()[0];
    let factor = hessian_factor(k.objective.loss.kind, f);
    let mut m = b.einsum("kni,knj->ij", &[factor, factor]) * k.scale;
    let mut out = Vec::new();
    for (idx, tap) in taps.iter().enumerate().rev() {
        if idx + 1 < taps.len() {
            let next = &taps[idx + 1];
            let w = k.params[net
                .params()
                .iter()
                .position(|p| p.name == format!("{}.weight", next.layer))
                .expect("a linear layer has a weight")];
            m = b.einsum("oi,op,pj->ij", &[w, m, w]);
            if next.input.id() != tap.output.id() {
                let ones = b.scalar(1.0).broadcast_to(&tap.output.shape());
                let slope = b.jvp(&[next.input], &[tap.output], &[ones])?[0];
                m = m * (b.einsum("ni,nj->ij", &[slope, slope]) * (1.0 / n as f64));
            }
        }
        let a = b.einsum("ni,nj->ij", &[tap.input, tap.input]) * (1.0 / n as f64);
        let l = &tap.layer;
        out.push((format!("kfra/{l}.weight/out"), m));
        out.push((format!("kfra/{l}.weight/in"), a));
        if net.params().iter().any(|p| p.name == format!("{l}.bias")) {
            out.push((format!("kfra/{l}.bias/out"), m));
        }
    }
    Ok(out)
}
