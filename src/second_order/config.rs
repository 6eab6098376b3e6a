//! Which second-order method, with its hyperparameters: the values `secondo
//! train --optimizer NAME` takes, checked before any work.

use std::fmt;
use std::str::FromStr;

use secondo_curvature::Curvature;
use secondo_linalg::CgOptions;

use super::dense::{ensure_dense_fits, DensePreconditioner};
use super::determinantal::{not_determinantal, DeterminantalPreconditioner, Subsampling};
use super::kronecker::{Eigenvalues, FactorDamping, KroneckerPreconditioner};
use super::lowrank::{check_low_rank, LowRankPreconditioner, DEFAULT_BULK_PROBES};
use super::matrix_free::MatrixFreePreconditioner;
use super::newton_cg::{CgPreconditioning, MartensOptions, NewtonCg};
use super::preconditioned::PreconditionedDescent;
use super::preconditioner::Preconditioner;
use super::quadratic_model::QuadraticModel;
use super::safeguard::StepControl;
use super::{ParamGroup, SecondOrderOptimizer};
use crate::{Error, Objective};

/// A second-order method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Hessian-free optimization (Martens 2010).
    NewtonCg,
    /// KFAC with factored damping (Martens & Grosse 2015).
    Kfac,
    /// EKFAC: KFAC's eigenbasis with corrected eigenvalues (George et al. 2018).
    Ekfac,
    /// Natural gradient with the dense Fisher/GGN.
    Ngd,
    /// Natural gradient with the dense empirical Fisher.
    Ef,
    /// `−η (C + λI)^(-α) g` from a `--structure` (Huh 2020; the KFAC eigenbasis by default).
    FractionalNgd,
    /// Newton steps from sub-sampled dense curvatures, averaged with
    /// determinant weights (Dereziński & Mahoney 2019).
    DetAvg,
}

/// Names as `--optimizer` takes them.
const NAMES: &[(&str, Method)] = &[
    ("newton-cg", Method::NewtonCg),
    ("kfac", Method::Kfac),
    ("ekfac", Method::Ekfac),
    ("ngd", Method::Ngd),
    ("ef", Method::Ef),
    ("fractional-ngd", Method::FractionalNgd),
    ("det-avg", Method::DetAvg),
];

impl Method {
    /// The method called `name`, if any.
    ///
    /// ```
    /// use secondo::second_order::Method;
    /// assert_eq!(Method::parse("kfac"), Some(Method::Kfac));
    /// assert_eq!(Method::parse("adam"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Method> {
        NAMES.iter().find(|(n, _)| *n == name).map(|p| p.1)
    }

    /// Every method's name, for messages.
    pub fn names() -> Vec<&'static str> {
        NAMES.iter().map(|p| p.0).collect()
    }

    /// The `--optimizer` name.
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|p| p.1 == self).map_or("?", |p| p.0)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The curvature structure (`--structure`) fractional-ngd takes its powers
/// `(C + λI)^(-α)` from (Huh 2020 leaves it open): the KFAC eigenbasis, the
/// exact matrix-free curvature of the batch seen through the Krylov space
/// of the gradient, or its top eigenpairs plus a bulk estimate (which ngd
/// and ef take too, for models too large for their dense matrix); and
/// det-avg's sub-sampled estimates: dense, or KFAC's blocks with
/// closed-form determinants.
///
/// ```
/// use secondo::second_order::Structure;
/// assert_eq!("matrix-free".parse::<Structure>().unwrap(), Structure::MatrixFree);
/// assert_eq!("lowrank:20".parse::<Structure>().unwrap(), Structure::LowRank(20));
/// assert_eq!(Structure::Kronecker.to_string(), "kronecker");
/// assert!("diag".parse::<Structure>().unwrap_err().to_string().starts_with("--structure"));
/// assert!("lowrank:0".parse::<Structure>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Structure {
    /// Kronecker-factored blocks, eigendecomposed on refresh.
    #[default]
    Kronecker,
    /// The curvature operator itself: Lanczos `‖g‖ Q f(T) e₁` with
    /// `--lanczos-steps` products a step (CG at `α = 1`).
    MatrixFree,
    /// The dense matrix, eigendecomposed (det-avg's default).
    Dense,
    /// The top `K` eigenpairs of the curvature operator by Lanczos, the
    /// rest of the spectrum as one Hutchinson estimate of its mean.
    LowRank(usize),
}

impl FromStr for Structure {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "kronecker" => Ok(Structure::Kronecker),
            "matrix-free" => Ok(Structure::MatrixFree),
            "dense" => Ok(Structure::Dense),
            _ => match s.strip_prefix("lowrank:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(Structure::LowRank(k)),
                _ => Err(Error::Invalid(format!(
                    "--structure '{s}': expected kronecker, matrix-free, dense or lowrank:K with K ≥ 1"
                ))),
            },
        }
    }
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Structure::Kronecker => f.write_str("kronecker"),
            Structure::MatrixFree => f.write_str("matrix-free"),
            Structure::Dense => f.write_str("dense"),
            Structure::LowRank(k) => write!(f, "lowrank:{k}"),
        }
    }
}

/// A second-order method and its hyperparameters.
///
/// ```
/// use secondo::second_order::{Method, SecondOrderConfig};
/// let c = SecondOrderConfig::new(Method::Kfac);
/// assert!(c.validate().is_ok());
/// let bad = SecondOrderConfig { power: 1.5, ..c };
/// assert!(bad.validate().unwrap_err().to_string().starts_with("--power"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondOrderConfig {
    /// The method.
    pub method: Method,
    /// Learning rate `η` (the step is `η` times the preconditioned direction).
    pub lr: f64,
    /// Heavy-ball momentum on the preconditioned direction (not newton-cg).
    pub momentum: f64,
    /// Initial (or fixed) Tikhonov damping `λ`.
    pub damping: f64,
    /// Adapt `λ` by the Levenberg–Marquardt rule.
    pub adapt_damping: bool,
    /// The curvature (Hessian, GGN, Fisher or empirical Fisher).
    pub curvature: Curvature,
    /// Samples of each training batch the curvature is estimated on (all when `None`).
    pub curvature_batch: Option<usize>,
    /// Steps between recomputed inverses (eigendecompositions).
    pub inverse_every: usize,
    /// Weight of the past in the moving averages of curvature estimates.
    pub ema: f64,
    /// The exponent `α` of `(C + λI)^(-α)`.
    pub power: f64,
    /// Most CG iterations per newton-cg step.
    pub cg_iters: usize,
    /// The preconditioner of newton-cg's CG.
    pub cg_precondition: CgPreconditioning,
    /// fractional-ngd's and det-avg's curvature structure.
    pub structure: Structure,
    /// det-avg's window: refreshes whose estimates are weighted together.
    pub det_avg_window: usize,
    /// Lanczos steps (curvature products) of each matrix-free fractional power.
    pub lanczos_steps: usize,
    /// Rademacher probes of the bulk estimate of `--structure lowrank:K`.
    pub bulk_probes: usize,
    /// Largest step norm (trust-region clipping), unbounded when `None`.
    pub trust_radius: Option<f64>,
    /// KL-clipping's bound `κ` (kfac, ekfac, fractional-ngd), none when `None`.
    pub kl_clip: Option<f64>,
}

/// det-avg's sub-samples per step and the probability each sample is kept
/// in one: eight half-batches.
const DET_AVG_DRAWS: usize = 8;
const DET_AVG_KEEP: f64 = 0.5;

const FISHER: Curvature = Curvature::FisherMc {
    samples: 1,
    seed: 0,
};

impl SecondOrderConfig {
    /// The method with its defaults.
    pub fn new(method: Method) -> SecondOrderConfig {
        let base = SecondOrderConfig {
            method,
            lr: 1.0,
            momentum: 0.0,
            damping: Self::default_damping(method, false),
            adapt_damping: false,
            curvature: Curvature::Ggn,
            curvature_batch: None,
            inverse_every: 1,
            ema: 0.95,
            power: 1.0,
            cg_iters: 50,
            cg_precondition: CgPreconditioning::None,
            structure: Structure::Kronecker,
            det_avg_window: 1,
            lanczos_steps: 50,
            bulk_probes: DEFAULT_BULK_PROBES,
            trust_radius: None,
            kl_clip: None,
        };
        match method {
            Method::NewtonCg => base,
            Method::Kfac | Method::Ekfac => SecondOrderConfig {
                lr: 0.1,
                curvature: FISHER,
                inverse_every: 10,
                kl_clip: Some(1e-2),
                ..base
            },
            Method::Ngd => SecondOrderConfig { lr: 0.1, ..base },
            Method::Ef => SecondOrderConfig {
                lr: 0.1,
                curvature: Curvature::EmpiricalFisher,
                ..base
            },
            Method::DetAvg => SecondOrderConfig {
                lr: 0.1,
                structure: Structure::Dense,
                ..base
            },
            Method::FractionalNgd => SecondOrderConfig {
                lr: 0.1,
                power: 0.5,
                curvature: FISHER,
                inverse_every: 10,
                kl_clip: Some(1e-2),
                ..base
            },
        }
    }

    /// The damping `method` starts from: with `adaptive` damping the
    /// preconditioned methods also take their learning rate and momentum
    /// from the quadratic model, whose steps a small damping lets grow far
    /// beyond where the model holds, so they start from 1 (Martens & Grosse
    /// start from 150) and let the Levenberg–Marquardt rule lower it.
    ///
    /// ```
    /// use secondo::second_order::{Method, SecondOrderConfig};
    /// assert_eq!(SecondOrderConfig::default_damping(Method::Kfac, false), 1e-3);
    /// assert_eq!(SecondOrderConfig::default_damping(Method::Kfac, true), 1.0);
    /// ```
    pub fn default_damping(method: Method, adaptive: bool) -> f64 {
        match (method, adaptive) {
            (_, true) => 1.0,
            // Fixed: for newton-cg, enough that a mini-batch Newton step
            // does not fit its own batch (the adaptive rule, measured on
            // that batch, lowers it too far); for det-avg, a bound on the
            // step along what a half-batch's curvature misses.
            (Method::NewtonCg | Method::DetAvg, false) => 0.1,
            (Method::FractionalNgd, false) => 1e-6,
            _ => 1e-3,
        }
    }

    /// Refuses values the method cannot run with, naming the flag.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |flag: &str, expected: &str, got: String| {
            Err(Error::Invalid(format!(
                "{flag} must be {expected}, got {got}"
            )))
        };
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.lr) {
            return bad("--lr", "a finite number > 0", self.lr.to_string());
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad("--momentum", "in [0, 1)", self.momentum.to_string());
        }
        if !(self.damping.is_finite() && self.damping >= 0.0) {
            return bad("--damping", "a finite number ≥ 0", self.damping.to_string());
        }
        if !(self.power > 0.0 && self.power <= 1.0) {
            return bad("--power", "in (0, 1]", self.power.to_string());
        }
        if self.inverse_every == 0 {
            return bad("--inverse-every", "at least 1", "0".into());
        }
        if !(self.ema.is_finite() && (0.0..1.0).contains(&self.ema)) {
            return bad("--ema", "in [0, 1)", self.ema.to_string());
        }
        if self.cg_iters == 0 {
            return bad("--cg-iters", "at least 1", "0".into());
        }
        if self.det_avg_window == 0 {
            return bad("--det-avg-window", "at least 1", "0".into());
        }
        if self.lanczos_steps == 0 {
            return bad("--lanczos-steps", "at least 1", "0".into());
        }
        if self.bulk_probes == 0 {
            return bad("--bulk-probes", "at least 1", "0".into());
        }
        if self.structure == Structure::LowRank(0) {
            return bad("--structure lowrank:K", "K ≥ 1", "0".into());
        }
        if self.curvature_batch == Some(0) {
            return bad("--curvature-batch", "at least 1", "0".into());
        }
        if let Some(r) = self.trust_radius.filter(|r| !positive(*r)) {
            return bad("--trust-radius", "a finite number > 0", r.to_string());
        }
        if let Some(k) = self.kl_clip.filter(|k| !positive(*k)) {
            return bad("--kl-clip", "a finite number > 0", k.to_string());
        }
        self.check_method()
    }

    /// Refuses settings the method has no use for or no structure for.
    fn check_method(&self) -> Result<(), Error> {
        let m = self.method;
        let refuse = |why: String| Err(Error::Invalid(why));
        match m {
            Method::NewtonCg | Method::DetAvg if self.power != 1.0 => refuse(format!(
                "--power {}: {m} estimates the Newton direction (α = 1); use fractional-ngd",
                self.power
            )),
            Method::FractionalNgd if self.structure == Structure::Dense => refuse(
                "--structure dense: fractional-ngd takes kronecker or matrix-free (for dense use ngd)"
                    .into(),
            ),
            Method::DetAvg if self.structure == Structure::MatrixFree => {
                refuse(not_determinantal(self.structure))
            }
            Method::DetAvg
                if self.structure == Structure::Kronecker
                    && !matches!(self.curvature, Curvature::FisherMc { .. } | Curvature::Ggn) =>
            {
                refuse(format!(
                    "--curvature {}: det-avg --structure kronecker takes the Kronecker factors of the fisher (KFAC) or the ggn (KFLR)",
                    self.curvature
                ))
            }
            _ if matches!(self.structure, Structure::LowRank(_))
                && !matches!(m, Method::FractionalNgd | Method::Ngd | Method::Ef) =>
            {
                refuse(format!(
                    "--structure {}: only fractional-ngd, ngd and ef take a low-rank curvature (not {m})",
                    self.structure
                ))
            }
            _ if !matches!(m, Method::FractionalNgd | Method::DetAvg)
                && !matches!(self.structure, Structure::Kronecker | Structure::LowRank(_)) =>
            {
                refuse(format!(
                    "--structure {}: only fractional-ngd and det-avg choose their structure (not {m})",
                    self.structure
                ))
            }
            _ if m != Method::DetAvg && self.det_avg_window != 1 => refuse(format!(
                "--det-avg-window {}: only det-avg averages over steps (not {m})",
                self.det_avg_window
            )),
            _ if m != Method::NewtonCg && self.cg_precondition != CgPreconditioning::None => {
                refuse(format!(
                    "--cg-precondition {}: only newton-cg runs CG (not {m})",
                    self.cg_precondition
                ))
            }
            Method::NewtonCg
                if self.cg_precondition == CgPreconditioning::Diagonal && self.damping == 0.0 =>
            {
                refuse(
                    "--cg-precondition diag needs --damping > 0: (diag(C) + λI)^0.75 is singular \
                     where the diagonal vanishes"
                        .into(),
                )
            }
            Method::NewtonCg if self.momentum != 0.0 => refuse(
                "--momentum: newton-cg carries momentum through CG's warm start instead".into(),
            ),
            // The low-rank structure takes any operator (a Hessian's
            // negative eigenvalues count as zero).
            Method::Kfac | Method::FractionalNgd
                if !matches!(self.structure, Structure::LowRank(_))
                    && !matches!(self.curvature, Curvature::FisherMc { .. } | Curvature::Ggn) =>
            {
                refuse(format!(
                    "--curvature {}: {m} takes the Kronecker factors of the fisher (KFAC) or the ggn (KFLR)",
                    self.curvature
                ))
            }
            Method::Ekfac
                if !matches!(
                    self.curvature,
                    Curvature::FisherMc { .. } | Curvature::EmpiricalFisher
                ) =>
            {
                refuse(format!(
                    "--curvature {}: ekfac corrects its eigenvalues with per-sample gradients of the fisher or the ef",
                    self.curvature
                ))
            }
            Method::Ef if self.curvature != Curvature::EmpiricalFisher => refuse(format!(
                "--curvature {}: --optimizer ef is the empirical Fisher (for another curvature use ngd)",
                self.curvature
            )),
            _ => Ok(()),
        }
    }

    /// Refuses, before any work, a group of `objective`'s parameters the
    /// method is too large for (the dense ones) or has no structure for
    /// (the Kronecker ones).
    pub fn check_model(&self, objective: &Objective, group: &ParamGroup) -> Result<(), Error> {
        match (self.method, self.structure) {
            (_, Structure::LowRank(rank)) => {
                check_low_rank(rank, self.bulk_probes, group.numel(objective))
            }
            (Method::Ngd | Method::Ef, _) => {
                ensure_dense_fits(group.numel(objective), self.method.name())
            }
            (Method::DetAvg, _) => self.determinantal(objective, group).map(|_| ()),
            (Method::FractionalNgd, Structure::MatrixFree) => Ok(()),
            (Method::Kfac | Method::Ekfac | Method::FractionalNgd, _) => {
                self.kronecker(objective, group).map(|_| ())
            }
            (Method::NewtonCg, _) => Ok(()),
        }
    }

    /// Copies of the parameters the method keeps (momentum, warm start,
    /// trial parameters, the gradient and its preconditioned image).
    pub fn state_copies(&self) -> usize {
        4
    }

    fn kronecker(
        &self,
        objective: &Objective,
        group: &ParamGroup,
    ) -> Result<KroneckerPreconditioner, Error> {
        let (damping, eigenvalues) = match self.method {
            Method::Kfac => (FactorDamping::Factored, Eigenvalues::Kronecker),
            Method::Ekfac => (FactorDamping::Tikhonov, Eigenvalues::Corrected),
            _ => (FactorDamping::Tikhonov, Eigenvalues::Kronecker),
        };
        KroneckerPreconditioner::new(
            objective,
            group,
            self.curvature,
            damping,
            eigenvalues,
            self.ema,
        )
    }

    fn determinantal(
        &self,
        objective: &Objective,
        group: &ParamGroup,
    ) -> Result<DeterminantalPreconditioner, Error> {
        DeterminantalPreconditioner::new(
            objective,
            group.clone(),
            self.curvature,
            self.structure,
            Subsampling {
                draws: DET_AVG_DRAWS,
                keep: DET_AVG_KEEP,
                window: self.det_avg_window,
            },
        )
    }

    /// The optimizer of the `group` of `objective`'s parameters (the others
    /// it leaves as they are), its Monte-Carlo draws seeded by `seed`.
    pub fn build(
        &self,
        objective: &Objective,
        group: &ParamGroup,
        seed: u64,
    ) -> Result<Box<dyn SecondOrderOptimizer>, Error> {
        self.validate()?;
        let control = StepControl::new(
            self.damping,
            self.adapt_damping,
            self.lr,
            self.trust_radius,
            self.curvature_batch,
            seed,
            group.clone(),
        );
        let preconditioner: Box<dyn Preconditioner> = match (self.method, self.structure) {
            (Method::NewtonCg, _) => {
                let options = MartensOptions {
                    max_iter: self.cg_iters,
                    ..MartensOptions::default()
                };
                return Ok(Box::new(NewtonCg::new(
                    self.curvature,
                    control,
                    options,
                    self.cg_precondition,
                )));
            }
            (_, Structure::LowRank(rank)) => Box::new(LowRankPreconditioner::new(
                group.clone(),
                self.curvature,
                rank,
                self.bulk_probes,
            )?),
            (Method::Ngd | Method::Ef, _) => Box::new(DensePreconditioner::new(
                objective,
                group.clone(),
                self.curvature,
                self.method.name(),
            )?),
            (Method::FractionalNgd, Structure::MatrixFree) => {
                Box::new(MatrixFreePreconditioner::new(
                    group.clone(),
                    self.curvature,
                    CgOptions {
                        max_iter: self.cg_iters,
                        ..CgOptions::default()
                    },
                    self.lanczos_steps,
                ))
            }
            (Method::Kfac | Method::Ekfac | Method::FractionalNgd, _) => {
                Box::new(self.kronecker(objective, group)?)
            }
            (Method::DetAvg, _) => Box::new(self.determinantal(objective, group)?),
        };
        Ok(Box::new(PreconditionedDescent {
            preconditioner,
            control,
            power: self.power,
            momentum: self.momentum,
            inverse_every: self.inverse_every,
            kl_clip: self.kl_clip,
            velocity: None,
            model: self.adapt_damping.then(QuadraticModel::default),
        }))
    }
}
