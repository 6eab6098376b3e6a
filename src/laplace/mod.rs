//! Laplace approximations: a Gaussian posterior over a trained network's
//! weights, `N(θ*, P⁻¹)` with `P = H/σ² + δ` the curvature of the summed
//! negative log-likelihood at the MAP weights `θ*` plus the prior precision
//! (MacKay 1992, "A practical Bayesian framework for backpropagation
//! networks"; Daxberger et al. 2021, "Laplace Redux – effortless Bayesian
//! deep learning"), with laplace-torch's feature set: weights ([`Subset`]),
//! structures ([`Structure`]), likelihoods ([`Likelihood`]), the log
//! marginal likelihood and its optimization ([`marglik`], and during
//! training: [`online`]), predictives
//! ([`predictive`]) and calibration metrics ([`metrics`]).
//!
//! The curvature comes from the engine (`secondo-curvature`): dense
//! operators for `full` and `lowrank`, the quantities `diag_ggn_exact`,
//! `sum_grad_squared` and `kflr` for `diag` and `kron`.
//!
//! ```
//! use secondo::laplace::{fit, FitOptions, Structure};
//! use secondo::{Objective, ObjectiveConfig};
//! use secondo_nn::ParamStore;
//! use secondo_tensor::DType;
//! let obj = Objective::from_config(&ObjectiveConfig {
//!     spec: "linear(64,10)".into(), input_shape: vec![64], dtype: DType::F64, ..Default::default()
//! }).unwrap();
//! let params = ParamStore::init(obj.network.spec(), 0, DType::F64);
//! let data = secondo_data::digits().select(&(0..50).collect::<Vec<_>>()).unwrap();
//! let la = fit(&obj, &params, &data, &FitOptions { structure: Structure::Diag, ..Default::default() }).unwrap();
//! assert_eq!(la.dim(), 650);
//! assert!(la.log_marginal_likelihood().unwrap().is_finite());
//! ```

mod dense;
mod factored;
mod fit;
mod jacobian;
mod kernel;
mod last_layer;
mod likelihood;
pub mod marglik;
pub mod metrics;
pub mod online;
pub mod predictive;
mod prior;
mod save;
mod structure;
mod subset;

pub use factored::FactoredJacobians;
pub use fit::{fit, FitOptions};
pub use jacobian::JacobianProgram;
pub use last_layer::LastLayer;
pub use likelihood::{check_temperature, Fisher, Likelihood};
pub use prior::{Prior, PriorShape};
pub use save::{load, load_with_network, save, save_with_network, FittedNetwork, LearnedPrior};
pub use structure::{CurvatureBlock, DenseCurvature, Eigen, PrecisionBlock, Structure};
pub use subset::Subset;

use std::ops::Range;

use crate::Error;

/// A fitted Laplace approximation.
#[derive(Debug, Clone, PartialEq)]
pub struct Laplace {
    /// The observation model.
    pub likelihood: Likelihood,
    /// The curvature's structure.
    pub structure: Structure,
    /// The covered parameters, in the network's order.
    pub names: Vec<String>,
    /// Their shapes.
    pub shapes: Vec<Vec<usize>>,
    /// The MAP values of the covered weights, flat.
    pub mean: Vec<f64>,
    /// The curvature `H` of `Σₙ −log p(yₙ | f(xₙ))` at `σ = 1`, blocks in order.
    pub blocks: Vec<CurvatureBlock>,
    /// `Σₙ −log p(yₙ | f(xₙ))` at the MAP weights, `σ = 1`, without constants.
    pub nll: f64,
    /// Training samples.
    pub n_data: usize,
    /// Network outputs per sample.
    pub n_outputs: usize,
    /// The prior precision.
    pub prior: Prior,
    /// The observation noise (regression; 1 for classification).
    pub sigma: f64,
    /// The likelihood's temperature `T` (laplace-torch's `temperature`):
    /// the log-likelihood and its curvature enter divided by it, `P =
    /// H/(σ²T) + δ`, so `T < 1` concentrates the posterior (1: untempered).
    pub temperature: f64,
    /// For a subnetwork of single weights: which weights of the covered
    /// tensors (indices into their concatenation, ascending); `mean` and the
    /// curvature are over these alone.
    pub mask: Option<Vec<usize>>,
}

/// The posterior precision of a [`Laplace`] at its hyperparameters,
/// decomposed block by block.
#[derive(Debug, Clone, PartialEq)]
pub struct Posterior<'a> {
    blocks: Vec<PrecisionBlock<'a>>,
}

/// `r` rows of the tensors' concatenation restricted to the columns of
/// `mask` (`rows` itself without one).
fn masked_columns(mask: Option<&[usize]>, rows: Vec<f64>, r: usize) -> Vec<f64> {
    match mask {
        Some(m) => {
            let width = rows.len() / r.max(1);
            rows.chunks(width.max(1))
                .take(r)
                .flat_map(|row| m.iter().map(|&i| row[i]))
                .collect()
        }
        None => rows,
    }
}

impl Laplace {
    /// The number of covered weights.
    pub fn dim(&self) -> usize {
        self.blocks.iter().map(CurvatureBlock::dim).sum()
    }

    /// The covered weights of the tensors' concatenation `all`: the mask's,
    /// or all of them.
    pub fn gather(&self, all: &[f64]) -> Vec<f64> {
        match &self.mask {
            Some(m) => m.iter().map(|&i| all[i]).collect(),
            None => all.to_vec(),
        }
    }

    /// `rows` of the tensors' concatenation restricted to the covered
    /// columns (row-major `r × dim` from `r × Σ sizes`; `rows` itself
    /// without a mask).
    pub fn gather_columns(&self, rows: Vec<f64>, r: usize) -> Vec<f64> {
        masked_columns(self.mask.as_deref(), rows, r)
    }

    /// The posterior precision at the current prior precision and σ.
    pub fn posterior(&self) -> Result<Posterior<'_>, Error> {
        self.posterior_at(&self.prior, self.sigma)
    }

    /// The posterior precision at other hyperparameters.
    pub fn posterior_at(&self, prior: &Prior, sigma: f64) -> Result<Posterior<'_>, Error> {
        let s = self.curvature_scale(sigma);
        let delta = prior.per_weight();
        let mut at = 0;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            blocks.push(b.posterior(s, &delta[at..at + b.dim()])?);
            at += b.dim();
        }
        Ok(Posterior { blocks })
    }

    /// The factor of the curvature in the posterior precision at noise
    /// `sigma`: `1/(σ²T)` for regression, `1/T` for classification.
    pub fn curvature_scale(&self, sigma: f64) -> f64 {
        self.likelihood.precision_scale(sigma) / self.temperature
    }

    /// The Laplace approximation of the log marginal likelihood at the
    /// current hyperparameters (see [`marglik::evidence`]).
    pub fn log_marginal_likelihood(&self) -> Result<f64, Error> {
        Ok(marglik::evidence(self, &self.prior, self.sigma)?.value)
    }
}

impl Posterior<'_> {
    /// The columns of `r` rows (row-major `r × dim`) each block covers, as
    /// row-major `r × n` parts (borrowed when one block covers all).
    fn parts<'r>(&self, rows: &'r [f64], r: usize) -> Vec<std::borrow::Cow<'r, [f64]>> {
        if self.blocks.len() == 1 {
            return vec![std::borrow::Cow::Borrowed(rows)];
        }
        let dim = self.dim();
        let mut at = 0;
        self.blocks
            .iter()
            .map(|b| {
                let n = b.dim();
                let part = (0..r)
                    .flat_map(|i| rows[i * dim + at..i * dim + at + n].iter().copied())
                    .collect();
                at += n;
                std::borrow::Cow::Owned(part)
            })
            .collect()
    }

    /// Row-major `r × n` parts, one per block, joined side by side.
    fn join(parts: &[(Vec<f64>, usize)], r: usize) -> Vec<f64> {
        (0..r)
            .flat_map(|i| {
                parts
                    .iter()
                    .flat_map(move |(p, n)| p[i * n..(i + 1) * n].iter().copied())
            })
            .collect()
    }

    /// The number of covered weights.
    pub fn dim(&self) -> usize {
        self.blocks.iter().map(PrecisionBlock::dim).sum()
    }

    /// `P^power` applied to each of `r` rows over all covered weights
    /// (row-major `r × dim`): `1` the precision, `-1` the covariance, `-½`
    /// its symmetric square root (for samples from the posterior).
    pub fn apply_power(&self, rows: &[f64], r: usize, power: f64) -> Vec<f64> {
        let parts: Vec<(Vec<f64>, usize)> = self
            .blocks
            .iter()
            .zip(self.parts(rows, r))
            .map(|(b, part)| (b.apply_power(&part, r, power), b.dim()))
            .collect();
        Self::join(&parts, r)
    }

    /// `W` with `W Wᵀ = R P⁻¹ Rᵀ` for `r` rows `R` (e.g. Jacobians, for the
    /// linearized predictive's covariance), with its width.
    pub fn whiten(&self, rows: &[f64], r: usize) -> (Vec<f64>, usize) {
        let parts: Vec<(Vec<f64>, usize)> = self
            .blocks
            .iter()
            .zip(self.parts(rows, r))
            .map(|(b, part)| b.whiten(&part, r))
            .collect();
        let width = parts.iter().map(|p| p.1).sum();
        (Self::join(&parts, r), width)
    }

    /// `M` (`dim × width`, row-major) with `M Mᵀ = P⁻¹`, block-diagonal
    /// over the blocks, with its width.
    pub fn whitening(&self) -> (Vec<f64>, usize) {
        if let [only] = &self.blocks[..] {
            return only.whitening();
        }
        let parts: Vec<(Vec<f64>, usize)> =
            self.blocks.iter().map(PrecisionBlock::whitening).collect();
        let width: usize = parts.iter().map(|p| p.1).sum();
        let mut m = vec![0.0; self.dim() * width];
        let (mut row, mut col) = (0, 0);
        for (block, (part, w)) in self.blocks.iter().zip(&parts) {
            for (i, r) in part.chunks(*w).enumerate() {
                m[(row + i) * width + col..][..*w].copy_from_slice(r);
            }
            row += block.dim();
            col += w;
        }
        (m, width)
    }

    /// `log det P`.
    pub fn log_det(&self) -> f64 {
        self.blocks.iter().map(PrecisionBlock::log_det).sum()
    }

    /// The marginal variances: the diagonal of `P⁻¹`.
    pub fn covariance_diagonal(&self) -> Vec<f64> {
        self.blocks
            .iter()
            .flat_map(PrecisionBlock::covariance_diagonal)
            .collect()
    }

    /// The marginal variances summed over each of `prior`'s groups: a
    /// block inside one group adds its trace (`O(n)` from the eigenvalues),
    /// only a block that groups split needs its diagonal (`O(n²)` for a
    /// dense basis).
    pub fn variance_sums(&self, prior: &Prior) -> Vec<f64> {
        let runs = prior.runs();
        let mut sums = vec![0.0; prior.values.len()];
        let mut at = 0;
        for b in &self.blocks {
            let block = at..at + b.dim();
            let overlapping: Vec<&(usize, Range<usize>)> = runs
                .iter()
                .filter(|(_, w)| w.start < block.end && block.start < w.end)
                .collect();
            match overlapping.as_slice() {
                [(g, w)] if w.start <= block.start && block.end <= w.end => {
                    sums[*g] += b.covariance_trace()
                }
                _ => {
                    let diagonal = b.covariance_diagonal();
                    for (g, w) in overlapping {
                        let (from, to) = (w.start.max(block.start), w.end.min(block.end));
                        sums[*g] += diagonal[from - at..to - at].iter().sum::<f64>();
                    }
                }
            }
            at = block.end;
        }
        sums
    }

    /// `tr(P⁻¹ H)`.
    pub fn trace_covariance_curvature(&self) -> f64 {
        self.blocks
            .iter()
            .map(PrecisionBlock::trace_covariance_curvature)
            .sum()
    }

    /// The dense precision (row-major), for checks on small problems.
    pub fn dense_precision(&self) -> Vec<f64> {
        let dim = self.dim();
        self.apply_power(&dense::identity(dim), dim, 1.0)
    }
}
