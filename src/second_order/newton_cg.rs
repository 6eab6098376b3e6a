//! Hessian-free optimization (Martens 2010, "Deep learning via Hessian-free
//! optimization"): each step minimizes the damped quadratic model
//! `φ(p) = ½ pᵀ(C + λI)p + gᵀp` by conjugate gradients on curvature products
//! (the GGN by default, or the Hessian) on a curvature mini-batch, started
//! from the previous solution decayed by 0.95 and stopped by Martens'
//! relative-progress rule; backtracking over the CG iterates picks the one
//! whose loss is lowest, and the reduction ratio adapts `λ`.

use std::fmt;
use std::str::FromStr;

use secondo_curvature::{Curvature, CurvatureOperator};
use secondo_data::Dataset;
use secondo_nn::ParamStore;

use super::diagonal::DiagonalPreconditioner;
use super::matrix_free::bind_operator;
use super::preconditioner::{CurvatureBatch, Preconditioner, TrainingPass};
use super::safeguard::{Proposal, StepControl};
use super::vector::{dot, scaled};
use super::{SecondOrderOptimizer, StepReport};
use crate::state::Scope;
use crate::{Error, Objective};

/// A matrix-vector product, `v ↦ A v`.
pub type Product<'a> = dyn FnMut(&[f64]) -> Result<Vec<f64>, Error> + 'a;

/// Options of [`martens_cg`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MartensOptions {
    /// Most CG iterations (one curvature product each).
    pub max_iter: usize,
    /// Martens' `ε`: stop once the last `k` iterations, `k = max(10, 0.1 i)`,
    /// reduced `φ` by less than `k ε` relative to `φ`.
    pub tolerance: f64,
}

impl Default for MartensOptions {
    /// Martens' values: `ε = 5·10⁻⁴`, up to 250 iterations.
    fn default() -> Self {
        MartensOptions {
            max_iter: 250,
            tolerance: 5e-4,
        }
    }
}

/// The iterates [`martens_cg`] kept, for backtracking.
#[derive(Debug, Clone, PartialEq)]
pub struct MartensCg {
    /// `(iteration, x_i, φ(x_i))` at iterations `⌈1.3^j⌉` and the last,
    /// ascending; iteration 0 is the start when no iteration ran.
    pub iterates: Vec<(usize, Vec<f64>, f64)>,
    /// Iterations done.
    pub iterations: usize,
    /// Whether it stopped on a direction of non-positive curvature.
    pub negative_curvature: bool,
}

impl MartensCg {
    /// The last iterate.
    pub fn last(&self) -> &[f64] {
        &self.iterates.last().expect("at least the start").1
    }
}

/// Whether Martens' relative-progress rule stops CG after iteration `i`
/// with the values `phi[j] = φ(x_j)`: with `k = max(10, ⌈0.1 i⌉)`, when
/// `i > k`, `φ(x_i) < 0` and `(φ(x_i) − φ(x_{i−k})) / φ(x_i) < k ε`.
///
/// ```
/// use secondo::second_order::martens_stops;
/// // φ still falling by 10% every iteration: go on.
/// let falling: Vec<f64> = (0..=20).map(|j| -(1.1f64).powi(j)).collect();
/// assert!(!martens_stops(&falling, 20, 5e-4));
/// // φ flat over the last 10 iterations: stop.
/// let flat: Vec<f64> = (0..=20).map(|j| -1.0 - 1e-9 * j as f64).collect();
/// assert!(martens_stops(&flat, 20, 5e-4));
/// // Too early to judge.
/// assert!(!martens_stops(&flat[..=10], 10, 5e-4));
/// ```
pub fn martens_stops(phi: &[f64], i: usize, tolerance: f64) -> bool {
    let k = 10.max((0.1 * i as f64).ceil() as usize);
    i > k && phi[i] < 0.0 && (phi[i] - phi[i - k]) / phi[i] < k as f64 * tolerance
}

/// Minimizes `φ(x) = ½ xᵀ(A + λI)x − bᵀx` by conjugate gradients from `x0`,
/// `A` applied by `apply`, with Martens' stopping rule; stops early on a
/// direction of non-positive curvature (an indefinite Hessian), keeping the
/// iterates so far.
///
/// With `inverse_preconditioner` `m⁻¹` (positive, one entry per
/// coordinate), it runs preconditioned CG with `M = diag(m)`: the same
/// minimizer and the same `φ` along the way, reached in fewer iterations
/// when `M` captures the scale of `A + λI` (Martens 2010, §4.7).
pub fn martens_cg(
    apply: &mut Product<'_>,
    b: &[f64],
    damping: f64,
    x0: Vec<f64>,
    inverse_preconditioner: Option<&[f64]>,
    options: &MartensOptions,
) -> Result<MartensCg, Error> {
    let precondition = |r: &[f64]| -> Vec<f64> {
        match inverse_preconditioner {
            Some(m) => r.iter().zip(m).map(|(r, m)| r * m).collect(),
            None => r.to_vec(),
        }
    };
    let damped = |v: &[f64], av: Vec<f64>| -> Vec<f64> {
        av.iter().zip(v).map(|(a, x)| a + damping * x).collect()
    };
    let ax0 = damped(&x0, apply(&x0)?);
    let mut x = x0;
    let mut r: Vec<f64> = b.iter().zip(&ax0).map(|(b, a)| b - a).collect();
    // φ(x) = −½ xᵀ(r + b) with r = b − (A + λI)x.
    let phi_of = |x: &[f64], r: &[f64]| {
        -0.5 * x
            .iter()
            .zip(r.iter().zip(b))
            .map(|(x, (r, b))| x * (r + b))
            .sum::<f64>()
    };
    let mut phi = vec![phi_of(&x, &r)];
    let mut p = precondition(&r);
    // rᵀM⁻¹r, rᵀr without a preconditioner.
    let mut rr = dot(&r, &p);
    let mut iterates = Vec::new();
    let mut next_save = 1.0_f64;
    let mut negative_curvature = false;
    let mut i = 0;
    while i < options.max_iter && rr > 0.0 {
        let q = damped(&p, apply(&p)?);
        let curvature = dot(&p, &q);
        if curvature <= 0.0 || !curvature.is_finite() {
            negative_curvature = true;
            break;
        }
        let alpha = rr / curvature;
        x.iter_mut().zip(&p).for_each(|(x, p)| *x += alpha * p);
        r.iter_mut().zip(&q).for_each(|(r, q)| *r -= alpha * q);
        let z = precondition(&r);
        let rr_next = dot(&r, &z);
        let beta = rr_next / rr;
        p.iter_mut().zip(&z).for_each(|(p, z)| *p = z + beta * *p);
        rr = rr_next;
        i += 1;
        phi.push(phi_of(&x, &r));
        let done = martens_stops(&phi, i, options.tolerance);
        if i as f64 >= next_save.ceil() {
            while next_save.ceil() <= i as f64 {
                next_save *= 1.3;
            }
            iterates.push((i, x.clone(), phi[i]));
        }
        if done {
            break;
        }
    }
    if iterates.last().map(|l| l.0) != Some(i) {
        iterates.push((i, x, phi[i]));
    }
    Ok(MartensCg {
        iterates,
        iterations: i,
        negative_curvature,
    })
}

/// Martens' decay of the previous solution CG starts from.
const WARM_START_DECAY: f64 = 0.95;

/// Martens' exponent `ξ` of the diagonal preconditioner `(diag(C) + λI)^ξ`:
/// below 1, because the diagonal of a mini-batch estimate overstates the
/// spread of the curvature (Martens 2010, §4.7).
pub const MARTENS_XI: f64 = 0.75;

/// How newton-cg preconditions its CG (`--cg-precondition`).
///
/// ```
/// use secondo::second_order::CgPreconditioning;
/// assert_eq!("diag".parse::<CgPreconditioning>().unwrap(), CgPreconditioning::Diagonal);
/// assert_eq!(CgPreconditioning::None.to_string(), "none");
/// assert!("jacobi".parse::<CgPreconditioning>().unwrap_err().to_string().starts_with("--cg-precondition"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgPreconditioning {
    /// Plain CG.
    #[default]
    None,
    /// `M = (diag(C) + λI)^ξ` with the diagonal of the curvature CG runs
    /// on, from the engine's diagonal quantities on the curvature batch
    /// (negative Hessian entries taken as zero) and `ξ` = [`MARTENS_XI`].
    Diagonal,
}

impl FromStr for CgPreconditioning {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "none" => Ok(CgPreconditioning::None),
            "diag" => Ok(CgPreconditioning::Diagonal),
            _ => Err(Error::Invalid(format!(
                "--cg-precondition '{s}': expected none or diag"
            ))),
        }
    }
}

impl fmt::Display for CgPreconditioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgPreconditioning::None => "none",
            CgPreconditioning::Diagonal => "diag",
        })
    }
}

/// Hessian-free optimization with Levenberg–Marquardt damping.
pub struct NewtonCg {
    kind: Curvature,
    control: StepControl,
    options: MartensOptions,
    operator: Option<CurvatureOperator>,
    previous: Option<Vec<f64>>,
    /// The diagonal of `kind` on each curvature batch, with
    /// [`CgPreconditioning::Diagonal`].
    diagonal: Option<DiagonalPreconditioner>,
}

impl NewtonCg {
    /// Newton-CG on `kind` (GGN or Hessian, or a Fisher), CG with `options`
    /// and `preconditioning`.
    pub(crate) fn new(
        kind: Curvature,
        control: StepControl,
        options: MartensOptions,
        preconditioning: CgPreconditioning,
    ) -> NewtonCg {
        let diagonal = match preconditioning {
            // The current batch's diagonal only, as Martens takes it.
            CgPreconditioning::Diagonal => Some(DiagonalPreconditioner::new(
                control.group.clone(),
                kind,
                0.0,
            )),
            CgPreconditioning::None => None,
        };
        NewtonCg {
            kind,
            control,
            options,
            operator: None,
            previous: None,
            diagonal,
        }
    }

    /// `M⁻¹ = (diag(C) + λI)^(-ξ)` on `cb`, with a diagonal preconditioner.
    fn inverse_preconditioner(
        &mut self,
        cb: &CurvatureBatch<'_>,
        dim: usize,
        damping: f64,
    ) -> Result<Option<Vec<f64>>, Error> {
        let Some(diagonal) = self.diagonal.as_mut() else {
            return Ok(None);
        };
        diagonal.update(cb, true)?;
        Ok(Some(diagonal.solve(
            &vec![1.0; dim],
            damping,
            MARTENS_XI,
        )?))
    }

    /// Backtracking (Martens 2010, §4.6): from the last iterate back, while
    /// the previous one has a lower loss. Returns its index and loss.
    fn backtrack(
        &mut self,
        cg: &MartensCg,
        cb: &CurvatureBatch<'_>,
        params: &ParamStore,
    ) -> Result<(usize, f64, f64), Error> {
        let mut chosen = cg.iterates.len() - 1;
        let mut t = self.control.scale(&cg.iterates[chosen].1);
        let mut loss = self.control.trial(cb, params, &cg.iterates[chosen].1, t)?;
        while chosen > 0 {
            let candidate = &cg.iterates[chosen - 1].1;
            let ct = self.control.scale(candidate);
            let l = self.control.trial(cb, params, candidate, ct)?;
            if l.is_nan() || l >= loss {
                break;
            }
            (chosen, t, loss) = (chosen - 1, ct, l);
        }
        Ok((chosen, t, loss))
    }
}

impl SecondOrderOptimizer for NewtonCg {
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
        let op = bind_operator(self.operator.take(), self.kind, &self.control.group, &cb)?;
        let g = self.control.group.gather(pass.grads);
        let start = match &self.previous {
            Some(p) => scaled(p, WARM_START_DECAY),
            None => vec![0.0; g.len()],
        };
        let damping = self.control.damping.value();
        let inverse = self.inverse_preconditioner(&cb, g.len(), damping)?;
        let b = scaled(&g, -1.0);
        let cg = martens_cg(
            &mut |v| Ok(op.apply(v)?),
            &b,
            damping,
            start,
            inverse.as_deref(),
            &self.options,
        )?;
        self.operator = Some(op);
        let (chosen, t, after) = self.backtrack(&cg, &cb, params)?;
        let (_, p, phi) = &cg.iterates[chosen];
        let slope = dot(&g, p);
        // φ(p) = gᵀp + ½ pᵀCp + ½ λ‖p‖²: the undamped model's curvature term.
        let curvature = 2.0 * (phi - slope) - damping * dot(p, p);
        let proposal = Proposal {
            direction: p.clone(),
            slope,
            curvature: Some(curvature),
        };
        let before = self.control.loss_before(&cb)?;
        self.previous = Some(cg.last().to_vec()).filter(|x| x.iter().all(|v| v.is_finite()));
        let report = self
            .control
            .conclude(params, &proposal, t, (before, after), true)?;
        if !report.accepted {
            self.previous = None;
        }
        Ok(report)
    }

    fn save(&self, state: &mut Scope<'_>) {
        self.control.save(&mut state.scope("control"));
        state.put_optional("previous", self.previous.as_deref());
        if let Some(d) = &self.diagonal {
            d.save(&mut state.scope("diagonal"));
        }
    }

    fn restore(&mut self, objective: &Objective, state: &mut Scope<'_>) -> Result<(), Error> {
        self.control.restore(&mut state.scope("control"))?;
        self.previous = state.take_optional("previous", self.control.group.numel(objective))?;
        match self.diagonal.as_mut() {
            Some(d) => d.restore(objective, &mut state.scope("diagonal")),
            None => Ok(()),
        }
    }
}
