//! Determinantal averaging (Dereziński & Mahoney 2019, "Distributed
//! estimation of the inverse Hessian by determinantal averaging"): Newton
//! directions from `K` curvature estimates on Bernoulli sub-samples of the
//! curvature batch, each scaled by the inverse keep probability `1/p`,
//! averaged with weights `det(Ĉ_k + λI)`.
//!
//! When the curvature is a sum of rank-one terms (least squares, one output),
//! `det(Ĉ)` and the adjugate `det(Ĉ) Ĉ⁻¹` are multilinear in the keep
//! indicators, so their expectations are those at `E[Ĉ] = C`: the weighted
//! average `E[det(Ĉ) Ĉ⁻¹] / E[det(Ĉ)]` is exactly `C⁻¹`, where the plain
//! average of inverses is biased.
//!
//! The estimates are dense (small models only) or, with `--structure
//! kronecker`, KFAC's blocks `B_k ⊗ A_k` of each sub-sample, averaged block
//! by block: the inverse of a block-diagonal matrix is that of its blocks,
//! and a block's determinant is closed-form in the factors' eigenvalues,
//! `det(B ⊗ A + λI) = Π_ij (b_i a_j + λ)`, so no block is ever formed.
//! Weighting each block by its own determinant (rather than by the product
//! over blocks) keeps the average of one block from depending on how well
//! the sub-sample fits the others.
//!
//! With a window of `M` refreshes the estimates of the last `M` are
//! weighted together (the paper's closing remark: the same weighting across
//! consecutive steps is a momentum for Newton steps): an old estimate with
//! a large determinant keeps counting while the new ones are noisy.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secondo_curvature::Curvature;

use super::config::Structure;
use super::dense::ensure_dense_fits;
use super::eigenbasis::Eigenbasis;
use super::kronecker::{
    in_eigenbasis, kronecker_values, Eigenvalues, FactorDamping, KroneckerPreconditioner,
};
use super::matrix_free::bind_operator;
use super::preconditioner::{CurvatureBatch, Preconditioner};
use super::vector::dot;
use super::ParamGroup;
use crate::state::Scope;
use crate::{Error, Objective};

/// Why det-avg has no `structure` other than dense and kronecker.
pub(crate) fn not_determinantal(structure: Structure) -> String {
    format!(
        "--structure {structure}: det-avg weights by determinants, of dense or kronecker estimates"
    )
}

/// How det-avg sub-samples: `draws` estimates a refresh, each on the
/// samples kept with probability `keep`, weighted together with those of
/// the last `window` refreshes (1: the current one alone).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Subsampling {
    /// Estimates per refresh.
    pub draws: usize,
    /// The probability each sample is kept in one.
    pub keep: f64,
    /// Refreshes whose estimates are averaged together.
    pub window: usize,
}

/// What an estimate is: the dense matrix, or KFAC's blocks with the
/// compiled factors they come from (the preconditioner's own averages are
/// never used).
enum Sampler {
    Dense { kind: Curvature, dim: usize },
    Kronecker(Box<KroneckerPreconditioner>),
}

/// One sub-sample's estimate: eigendecompositions (the dense matrix's, or
/// every Kronecker factor's) and the log of its prior weight (1 for a
/// Monte-Carlo draw, the pattern's probability in an exact enumeration).
struct Estimate {
    eigen: Vec<Eigenbasis>,
    log_prior: f64,
}

/// The determinant-weighted average of sub-sampled Newton directions.
pub struct DeterminantalPreconditioner {
    group: ParamGroup,
    sampling: Subsampling,
    sampler: Sampler,
    /// The estimates of the last `window` refreshes, oldest first.
    steps: VecDeque<Vec<Estimate>>,
}

impl DeterminantalPreconditioner {
    /// Estimates of `kind` for the group's parameters with the `structure`
    /// dense or kronecker (KFAC's factors of the fisher, KFLR's of the
    /// ggn); refuses a group too large for dense curvatures, or without a
    /// Kronecker structure.
    pub fn new(
        objective: &Objective,
        group: ParamGroup,
        kind: Curvature,
        structure: Structure,
        sampling: Subsampling,
    ) -> Result<DeterminantalPreconditioner, Error> {
        let sampler = match structure {
            Structure::Dense => {
                let dim = group.numel(objective);
                ensure_dense_fits(dim, "det-avg")?;
                Sampler::Dense { kind, dim }
            }
            Structure::Kronecker => Sampler::Kronecker(Box::new(KroneckerPreconditioner::new(
                objective,
                &group,
                kind,
                FactorDamping::Tikhonov,
                Eigenvalues::Kronecker,
                0.0,
            )?)),
            Structure::MatrixFree | Structure::LowRank(_) => {
                return Err(Error::Invalid(not_determinantal(structure)))
            }
        };
        Ok(DeterminantalPreconditioner {
            group,
            sampling,
            sampler,
            steps: VecDeque::new(),
        })
    }

    /// Estimates on the given sub-samples of `batch` (indices into its
    /// data) with their prior weights, e.g. every pattern with its
    /// probability, as one refresh (the oldest beyond the window dropped).
    /// An empty sub-sample estimates `Ĉ = 0`, whose adjugate vanishes for
    /// two or more parameters, and is left out.
    pub fn fit_patterns(
        &mut self,
        batch: &CurvatureBatch<'_>,
        patterns: &[Vec<usize>],
        priors: &[f64],
    ) -> Result<(), Error> {
        let n = batch.data.len() as f64;
        let mut estimates = Vec::new();
        for (pattern, prior) in patterns.iter().zip(priors) {
            if pattern.is_empty() {
                continue;
            }
            let sub = CurvatureBatch {
                objective: batch.objective,
                params: batch.params,
                data: batch.data.select(pattern)?,
                seed: batch.seed,
                output: None,
                loss: None,
            };
            // The estimate reduces over the sub-sample; Ĉ = (1/p)(|S|/N) of it.
            let scale = pattern.len() as f64 / (self.sampling.keep * n);
            let eigen = match &mut self.sampler {
                Sampler::Dense { kind, dim } => {
                    let op = bind_operator(None, *kind, &self.group, &sub)?;
                    let dense: Vec<f64> = op.to_dense()?.iter().map(|x| x * scale).collect();
                    vec![Eigenbasis::new(&dense, *dim)?]
                }
                Sampler::Kronecker(k) => k.batch_factors(&sub, scale)?,
            };
            estimates.push(Estimate {
                eigen,
                log_prior: prior.ln(),
            });
        }
        self.steps.push_back(estimates);
        while self.steps.len() > self.sampling.window {
            self.steps.pop_front();
        }
        Ok(())
    }

    /// Each estimate's blocks: their elements, eigenvalues, and `f` of the
    /// block applied to the block's part of a vector (`Q f(m) Qᵀ v`).
    fn blocks<'a>(&'a self, e: &'a Estimate) -> Vec<Block<'a>> {
        match &self.sampler {
            Sampler::Dense { dim, .. } => vec![Block {
                size: *dim,
                values: e.eigen[0].values.clone(),
                apply: Box::new(|v, f| e.eigen[0].apply(v, f)),
            }],
            Sampler::Kronecker(k) => k
                .blocks_in(&e.eigen)
                .map(|(size, bases)| {
                    let values = kronecker_values(bases);
                    Block {
                        size,
                        values: values.clone(),
                        apply: Box::new(move |v, f| in_eigenbasis(bases, &values, v, f)),
                    }
                })
                .collect(),
        }
    }

    /// Every estimate of the window with its prior.
    fn estimates(&self) -> impl Iterator<Item = &Estimate> {
        self.steps.iter().flatten()
    }

    /// Per block, the weights `w_k det(Ĉ_k + λI) / Σ_j w_j det(Ĉ_j + λI)`
    /// of the window's estimates (oldest first), `w_k` the priors: they sum
    /// to 1 wherever some estimate is non-singular.
    pub fn weights(&self, damping: f64) -> Vec<Vec<f64>> {
        let per_estimate: Vec<Vec<f64>> = self
            .estimates()
            .map(|e| {
                self.blocks(e)
                    .iter()
                    .map(|b| e.log_prior + log_det(&b.values, damping))
                    .collect()
            })
            .collect();
        let blocks = per_estimate.first().map_or(0, Vec::len);
        (0..blocks)
            .map(|l| {
                let logs: Vec<f64> = per_estimate.iter().map(|e| e[l]).collect();
                let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = logs.iter().map(|x| (x - top).exp()).sum();
                logs.iter().map(|x| (x - top).exp() / total).collect()
            })
            .collect()
    }

    /// Block by block, `Σ_k w_k adj(Ĉ_k + λI) v / Σ_k w_k det(Ĉ_k + λI)`
    /// with `w_k` the priors, in log scale (determinants of many parameters
    /// overflow).
    fn average(&self, v: &[f64], damping: f64) -> Result<Vec<f64>, Error> {
        let per_estimate: Vec<(f64, Vec<Adjugate>)> = self
            .estimates()
            .map(|e| {
                let mut at = 0;
                let adjugates = self
                    .blocks(e)
                    .into_iter()
                    .map(|b| {
                        at += b.size;
                        adjugate_apply(&b, &v[at - b.size..at], damping)
                    })
                    .collect();
                (e.log_prior, adjugates)
            })
            .collect();
        let blocks = per_estimate.first().map_or(0, |e| e.1.len());
        let mut out = Vec::with_capacity(v.len());
        for l in 0..blocks {
            let parts = per_estimate.iter().map(|(lp, a)| (*lp, &a[l]));
            out.extend(weighted_average(parts)?);
        }
        Ok(out)
    }
}

/// One block of an estimate: its elements, eigenvalues and spectral
/// functions on vectors.
struct Block<'a> {
    size: usize,
    values: Vec<f64>,
    #[allow(clippy::type_complexity)]
    apply: Box<dyn Fn(&[f64], &dyn Fn(f64) -> f64) -> Vec<f64> + 'a>,
}

/// `Σ_k w_k adj_k v / Σ_k w_k det_k` of one block over the estimates
/// `(ln w_k, adj_k v)`, scaled by the largest numerator term.
fn weighted_average<'a>(
    parts: impl Iterator<Item = (f64, &'a Adjugate)> + Clone,
) -> Result<Vec<f64>, Error> {
    let top = parts
        .clone()
        .map(|(lp, a)| lp + a.log_scale)
        .fold(f64::NEG_INFINITY, f64::max);
    let denominator: f64 = parts
        .clone()
        .map(|(lp, a)| (lp + a.log_det - top).exp())
        .sum();
    if !(top.is_finite() && denominator > 0.0) {
        return Err(Error::Invalid(
            "det-avg: every sub-sampled curvature is singular; use a --damping above 0".into(),
        ));
    }
    let mut numerator: Vec<f64> = Vec::new();
    for (lp, a) in parts {
        let w = (lp + a.log_scale - top).exp();
        numerator.resize(a.unscaled.len(), 0.0);
        numerator
            .iter_mut()
            .zip(&a.unscaled)
            .for_each(|(o, x)| *o += w * x);
    }
    Ok(numerator.iter().map(|x| x / denominator).collect())
}

/// `ln det(Ĉ + λI)` from `Ĉ`'s eigenvalues (negative ones taken as zero);
/// `−∞` where singular.
fn log_det(values: &[f64], damping: f64) -> f64 {
    values.iter().map(|m| (m.max(0.0) + damping).ln()).sum()
}

/// `adj(A) v = e^log_scale · unscaled`, with `ln det(A)`.
struct Adjugate {
    log_det: f64,
    log_scale: f64,
    unscaled: Vec<f64>,
}

/// The adjugate of a block `A = Q diag(m) Qᵀ + λI` (negative eigenvalues
/// taken as zero) applied to `v`: `adj(A) = Σ_j (Π_{k≠j} a_k) q_j q_jᵀ`,
/// finite where `A` is singular (rank `n − 1` keeps the one term of the
/// zero eigenvalue).
fn adjugate_apply(block: &Block<'_>, v: &[f64], damping: f64) -> Adjugate {
    let a: Vec<f64> = block.values.iter().map(|m| m.max(0.0) + damping).collect();
    let zeros = a.iter().filter(|x| **x == 0.0).count();
    let log_scale: f64 = a.iter().filter(|x| **x > 0.0).map(|x| x.ln()).sum();
    // Π_{k≠j} a_k over the product of the non-zero a_k.
    let unscaled = (block.apply)(v, &|m| {
        let aj = m.max(0.0) + damping;
        match (zeros, aj == 0.0) {
            (0, _) => 1.0 / aj,
            (1, true) => 1.0,
            _ => 0.0,
        }
    });
    Adjugate {
        log_det: if zeros > 0 {
            f64::NEG_INFINITY
        } else {
            log_scale
        },
        log_scale,
        unscaled,
    }
}

impl Preconditioner for DeterminantalPreconditioner {
    fn update(&mut self, batch: &CurvatureBatch<'_>, refresh: bool) -> Result<(), Error> {
        if !refresh && !self.steps.is_empty() {
            return Ok(());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(batch.seed);
        let n = batch.data.len();
        let Subsampling { draws, keep, .. } = self.sampling;
        let patterns: Vec<Vec<usize>> = (0..draws)
            .map(|_| (0..n).filter(|_| rng.random::<f64>() < keep).collect())
            .collect();
        self.fit_patterns(batch, &patterns, &vec![1.0; draws])
    }

    fn solve(&self, v: &[f64], damping: f64, power: f64) -> Result<Vec<f64>, Error> {
        if power != 1.0 {
            return Err(Error::Invalid(format!(
                "--power {power}: determinantal averaging estimates the inverse (α = 1)"
            )));
        }
        self.average(v, damping)
    }

    /// The mean of `vᵀ Ĉ_k v` over the current refresh's estimates: the
    /// quadratic model is the curvature at the current parameters, which
    /// older estimates of the window were not taken at.
    fn curvature(&self, v: &[f64]) -> Result<f64, Error> {
        let current = self.steps.back().map_or(&[][..], Vec::as_slice);
        let mut total = 0.0;
        for e in current {
            let mut at = 0;
            for b in self.blocks(e) {
                let part = &v[at..at + b.size];
                at += b.size;
                total += dot(part, &(b.apply)(part, &|m| m.max(0.0)));
            }
        }
        Ok(total / current.len().max(1) as f64)
    }

    fn save(&self, state: &mut Scope<'_>) {
        state.put_count("steps", self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let mut s = state.scope(&i.to_string());
            s.put_count("estimates", step.len());
            for (k, e) in step.iter().enumerate() {
                let mut s = s.scope(&k.to_string());
                for (j, eigen) in e.eigen.iter().enumerate() {
                    eigen.save(&mut s.scope(&j.to_string()));
                }
                s.put_scalar("log_prior", e.log_prior);
            }
        }
    }

    fn restore(&mut self, _objective: &Objective, state: &mut Scope<'_>) -> Result<(), Error> {
        let sizes = match &self.sampler {
            Sampler::Dense { dim, .. } => vec![*dim],
            Sampler::Kronecker(k) => k.factor_sizes(),
        };
        let steps = state.take_count("steps")?;
        if steps > self.sampling.window {
            return Err(state.refuse(&format!(
                "{steps} refreshes saved, more than the window of {}",
                self.sampling.window
            )));
        }
        self.steps = (0..steps)
            .map(|i| {
                let mut s = state.scope(&i.to_string());
                let count = s.take_count("estimates")?;
                (0..count)
                    .map(|k| {
                        let mut s = s.scope(&k.to_string());
                        let eigen = sizes
                            .iter()
                            .enumerate()
                            .map(|(j, &n)| Eigenbasis::restore(&mut s.scope(&j.to_string()), n))
                            .collect::<Result<_, Error>>()?;
                        Ok(Estimate {
                            eigen,
                            log_prior: s.take_scalar("log_prior")?,
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()
            })
            .collect::<Result<_, Error>>()?;
        Ok(())
    }
}
