//! BackPACK's quantities on one batch, computed together in one graph built
//! from `vmap` (over samples, and over the columns of a symmetric factor of the
//! loss Hessian) of `vjp`.

use std::fmt;
use std::str::FromStr;

use secondo_graph::{Builder, Executable, Feeds, Var};
use secondo_nn::{LossKind, ParamStore, Reduction};
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

    /// What [`QuantityProgram::run`] feeds the executable (see
    /// [`QuantityProgram::executable`] for an example).
    pub fn feeds(
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
    let f1 = net.forward(x1, &params_v)?;
    let sample = Sample {
        x: x1,
        y: y1,
        output: f1,
        loss: summed.build(f1, y1)?,
    };
    let mut xr = vec![n];
    xr.extend_from_slice(&one);
    let mut yr = vec![n];
    yr.extend_from_slice(&y_one);
    let samples = [xs.reshape(&xr), ys.reshape(&yr)];

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
        )
    });
    if needs_first_order {
        // The reduction factor goes in before differentiating, so the
        // per-sample gradients come out scaled without another pass over them.
        let g1 = b.grad(sample.loss * scale, &params_v)?;
        let per_sample = b.vmap(&g1, &[sample.x, sample.y], &samples, n)?;
        for ((name, cn), p) in names.iter().zip(per_sample).zip(net.params()) {
            let rest: Vec<usize> = (1..=p.shape.len()).collect();
            for q in quantities {
                let v = match q {
                    Quantity::Grad => cn.sum(&[0]),
                    Quantity::BatchGrad => cn,
                    Quantity::BatchL2 => cn.square().sum(&rest),
                    Quantity::SumGradSquared => cn.square().sum(&[0]),
                    Quantity::Variance => {
                        cn.square().sum(&[0]) * (1.0 / n as f64)
                            - (cn.sum(&[0]) * (1.0 / n as f64)).square()
                    }
                    _ => continue,
                };
                outputs.push((format!("{q}/{name}"), v));
            }
        }
    }
    let layers = Layers {
        objective,
        xs,
        ys,
        params: &params_v,
        scale,
    };
    let diagonals: Vec<Quantity> = quantities
        .iter()
        .copied()
        .filter(|q| {
            matches!(
                q,
                Quantity::DiagGgnExact | Quantity::BatchDiagGgnExact | Quantity::DiagHessian
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
        let mut t_shape = vec![mc_samples.unwrap_or(0)];
        t_shape.extend_from_slice(&y_shape);
        outputs.extend(kronecker_factors(&layers, &t_shape, quantities)?);
    }
    let needs_mc = quantities
        .iter()
        .any(|q| matches!(q, Quantity::DiagGgnMc | Quantity::Kfac));
    if quantities.contains(&Quantity::DiagGgnMc) {
        let m = mc_samples
            .filter(|&m| m > 0)
            .ok_or_else(|| CurvatureError::Invalid("diag_ggn_mc needs sampled targets".into()))?;
        let mut t_shape = vec![m];
        t_shape.extend_from_slice(&y_shape);
        let yt = b.input("mc/targets", &t_shape);
        // One MC term per sample and draw: (Jᵀ∇_f ℓ(f, ŷ))², summed, scaled by s/M.
        let gf = b.grad(sample.loss, &[sample.output])?[0];
        let jtg = b.vjp(&[sample.output], &[gf], &params_v)?;
        let squared: Vec<Var> = jtg.iter().map(|v| v.square()).collect();
        let per_x: usize = one.iter().product();
        let mut ym = vec![m * n];
        ym.extend_from_slice(&y_one);
        let xrep = xs.reshape(&[1, n * per_x]).broadcast_to(&[m, n * per_x]);
        let mut xm = vec![m * n];
        xm.extend_from_slice(&one);
        let reps = [xrep.reshape(&xm), yt.reshape(&ym)];
        let per_draw = b.vmap(&squared, &[sample.x, sample.y], &reps, m * n)?;
        for (name, d) in names.iter().zip(per_draw) {
            outputs.push((
                format!("diag_ggn_mc/{name}"),
                d.sum(&[0]) * (scale / m as f64),
            ));
        }
    }
    let ids: Vec<usize> = outputs.iter().map(|(_, v)| v.id()).collect();
    let exe = Executable::compile(&b.finish()?, &ids)?;
    Ok(QuantityProgram {
        exe,
        names: outputs.into_iter().map(|(n, _)| n).collect(),
        needs_mc,
    })
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

/// KFLR / KFAC factors of every linear layer, named
/// `<quantity>/<layer>.weight/{out,in}` and `<quantity>/<layer>.bias/out`:
/// `A = (1/N) Σ_n a_n a_nᵀ` of the layer inputs, and `B = Σ_n Σ_k g_nk g_nkᵀ`
/// with `g_nk` the column `k` of the loss-Hessian factor (KFLR) or a sampled
/// loss gradient (KFAC, averaged over draws) backpropagated to the layer output.
fn kronecker_factors<'b>(
    k: &Layers<'_, 'b>,
    mc_shape: &[usize],
    quantities: &[Quantity],
) -> Result<Vec<(String, Var<'b>)>, CurvatureError> {
    let b = k.xs.builder();
    let net = &k.objective.network;
    let (f, taps) = net.forward_with_taps(k.xs, k.params)?;
    let n = f.shape()[0];
    let z: Vec<Var> = taps.iter().map(|t| t.output).collect();
    let mut out = Vec::new();
    let mut emit = |q: Quantity, columns: Vec<Var<'b>>, weight: f64| {
        for (tap, g) in taps.iter().zip(columns) {
            let bmat = b.einsum("kno,knp->op", &[g, g]) * weight;
            let a = b.einsum("ni,nj->ij", &[tap.input, tap.input]) * (1.0 / n as f64);
            let l = tap.layer;
            out.push((format!("{q}/{l}.weight/out"), bmat));
            out.push((format!("{q}/{l}.weight/in"), a));
            if net.params().iter().any(|p| p.name == format!("{l}.bias")) {
                out.push((format!("{q}/{l}.bias/out"), bmat));
            }
        }
    };
    if quantities.contains(&Quantity::Kflr) {
        emit(Quantity::Kflr, k.factor_columns(f, &z)?, 1.0);
    }
    if quantities.contains(&Quantity::Kfac) {
        let m = mc_shape[0];
        if m == 0 {
            return Err(CurvatureError::Invalid("kfac needs sampled targets".into()));
        }
        let summed = secondo_nn::Loss::new(k.objective.loss.kind, Reduction::Sum);
        let gf = b.grad(summed.build(f, k.ys)?, &[f])?[0];
        let gz = b.vjp(&[f], &[gf], &z)?;
        let targets = b.input("mc/targets", mc_shape);
        emit(
            Quantity::Kfac,
            b.vmap(&gz, &[k.ys], &[targets], m)?,
            k.scale / m as f64,
        );
    }
    if quantities.contains(&Quantity::Kfra) {
        out.extend(kfra(k, f, &taps)?);
    }
    Ok(out)
}

/// What the per-layer quantities are built from: the batch, the parameter
/// nodes and the loss's reduction factor.
struct Layers<'a, 'b> {
    objective: &'a Objective,
    xs: Var<'b>,
    ys: Var<'b>,
    params: &'a [Var<'b>],
    scale: f64,
}

impl<'b> Layers<'_, 'b> {
    /// The columns of the loss-Hessian factor of the network outputs `f`
    /// (scaled by the square root of the reduction factor) backpropagated to
    /// each of the layer outputs `z`: per layer a `[C, N, out]` node whose
    /// entries `[k, n, :]` are `J_nᵀ s_nk` (`vmap` over columns of one `vjp`).
    fn factor_columns(&self, f: Var<'b>, z: &[Var<'b>]) -> Result<Vec<Var<'b>>, CurvatureError> {
        let b = f.builder();
        let (n, c) = (f.shape()[0], f.shape()[1]);
        let u = b.input("factor/u", &[n, c]);
        let gz = b.vjp(&[f], &[u], z)?;
        let factor = hessian_factor(self.objective.loss.kind, f) * self.scale.sqrt();
        Ok(b.vmap(&gz, &[u], &[factor], c)?)
    }
}

/// Diagonals of the exact GGN (summed or per sample) and of the Hessian for
/// every linear layer's parameters, by BackPACK's recursion. With
/// `z = a Wᵀ + b` and the loss a sum over samples, `∂²L/∂W_oi² = Σ_n a_ni²
/// ∂²L/∂z_no²` and `∂²L/∂b_o² = Σ_n ∂²L/∂z_no²`, and likewise for the GGN.
/// Per sample, the GGN with respect to a layer output `z_l` is `J_lᵀ S Sᵀ J_l`:
/// the loss-Hessian factor `S` (C columns) backpropagated to `z_l` by `vmap`
/// of `vjp`. The Hessian adds residual terms (see [`add_residuals`]).
fn curvature_diagonals<'b>(
    k: &Layers<'_, 'b>,
    quantities: &[Quantity],
) -> Result<Vec<(String, Var<'b>)>, CurvatureError> {
    let b = k.xs.builder();
    let net = &k.objective.network;
    let (f, taps) = net.forward_with_taps(k.xs, k.params)?;
    let z: Vec<Var> = taps.iter().map(|t| t.output).collect();
    let ggn: Vec<Var> = k
        .factor_columns(f, &z)?
        .into_iter()
        .map(|col| col.square().sum(&[0]))
        .collect();
    let mut out = Vec::new();
    for &q in quantities {
        let diag = match q {
            Quantity::DiagHessian => add_residuals(k, f, &taps, ggn.clone())?,
            _ => ggn.clone(),
        };
        let per_sample = q == Quantity::BatchDiagGgnExact;
        for (tap, d) in taps.iter().zip(diag) {
            let l = tap.layer;
            let spec = if per_sample {
                "no,ni,ni->noi"
            } else {
                "no,ni,ni->oi"
            };
            let w = b.einsum(spec, &[d, tap.input, tap.input]);
            out.push((format!("{q}/{l}.weight"), w));
            if net.params().iter().any(|p| p.name == format!("{l}.bias")) {
                let bias = if per_sample { d } else { d.sum(&[0]) };
                out.push((format!("{q}/{l}.bias"), bias));
            }
        }
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
    taps: &[secondo_nn::LayerTap<'b>],
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
    taps: &[secondo_nn::LayerTap<'b>],
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
        let l = tap.layer;
        out.push((format!("kfra/{l}.weight/out"), m));
        out.push((format!("kfra/{l}.weight/in"), a));
        if net.params().iter().any(|p| p.name == format!("{l}.bias")) {
            out.push((format!("kfra/{l}.bias/out"), m));
        }
    }
    Ok(out)
}
