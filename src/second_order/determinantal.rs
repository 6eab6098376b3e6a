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
//! average of inverses is biased. Estimates are dense (small models only).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secondo_curvature::Curvature;

use super::dense::ensure_dense_fits;
use super::eigenbasis::Eigenbasis;
use super::matrix_free::bind_operator;
use super::preconditioner::{CurvatureBatch, Preconditioner};
use super::vector::dot;
use super::ParamGroup;
use crate::state::Scope;
use crate::{Error, Objective};

/// One sub-sample's estimate: its eigendecomposition and the log of its
/// prior weight (1 for a Monte-Carlo draw, the pattern's probability in an
/// exact enumeration).
struct Estimate {
    eigen: Eigenbasis,
    log_prior: f64,
}

/// The determinant-weighted average of sub-sampled Newton directions.
pub struct DeterminantalPreconditioner {
    kind: Curvature,
    group: ParamGroup,
    draws: usize,
    keep: f64,
    estimates: Vec<Estimate>,
}

impl DeterminantalPreconditioner {
    /// `draws` estimates of `kind` for the group's parameters, each on the
    /// samples kept with probability `keep`; refuses a group too large for
    /// dense curvatures.
    pub fn new(
        objective: &Objective,
        group: ParamGroup,
        kind: Curvature,
        draws: usize,
        keep: f64,
    ) -> Result<DeterminantalPreconditioner, Error> {
        ensure_dense_fits(group.numel(objective), "det-avg")?;
        Ok(DeterminantalPreconditioner {
            kind,
            group,
            draws,
            keep,
            estimates: Vec::new(),
        })
    }

    /// Estimates on the given sub-samples of `batch` (indices into its
    /// data) with their prior weights, e.g. every pattern with its
    /// probability. An empty sub-sample estimates `Ĉ = 0`, whose adjugate
    /// vanishes for two or more parameters, and is left out.
    pub fn fit_patterns(
        &mut self,
        batch: &CurvatureBatch<'_>,
        patterns: &[Vec<usize>],
        priors: &[f64],
    ) -> Result<(), Error> {
        let n = batch.data.len() as f64;
        self.estimates.clear();
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
            };
            let op = bind_operator(None, self.kind, &self.group, &sub)?;
            // The operator reduces over the sub-sample; Ĉ = (1/p)(|S|/N) of it.
            let scale = pattern.len() as f64 / (self.keep * n);
            let dense: Vec<f64> = op.to_dense()?.iter().map(|x| x * scale).collect();
            self.estimates.push(Estimate {
                eigen: Eigenbasis::new(&dense, op.dim())?,
                log_prior: prior.ln(),
            });
        }
        Ok(())
    }

    /// `Σ_k w_k adj(Ĉ_k + λI) v / Σ_k w_k det(Ĉ_k + λI)` with `w_k` the
    /// priors, in log scale (determinants of many parameters overflow).
    fn average(&self, v: &[f64], damping: f64) -> Result<Vec<f64>, Error> {
        let parts: Vec<(f64, Adjugate)> = self
            .estimates
            .iter()
            .map(|e| (e.log_prior, adjugate_apply(&e.eigen, v, damping)))
            .collect();
        let top = parts
            .iter()
            .map(|(lp, a)| lp + a.log_scale)
            .fold(f64::NEG_INFINITY, f64::max);
        let denominator: f64 = parts
            .iter()
            .map(|(lp, a)| (lp + a.log_det - top).exp())
            .sum();
        if !(top.is_finite() && denominator > 0.0) {
            return Err(Error::Invalid(
                "det-avg: every sub-sampled curvature is singular; use a --damping above 0".into(),
            ));
        }
        let mut numerator = vec![0.0; v.len()];
        for (lp, a) in parts {
            let w = (lp + a.log_scale - top).exp();
            numerator
                .iter_mut()
                .zip(a.unscaled)
                .for_each(|(o, x)| *o += w * x);
        }
        Ok(numerator.iter().map(|x| x / denominator).collect())
    }
}

/// `adj(A) v = e^log_scale · unscaled`, with `ln det(A)`.
struct Adjugate {
    log_det: f64,
    log_scale: f64,
    unscaled: Vec<f64>,
}

/// The adjugate of `A = Q diag(m) Qᵀ + λI` (negative eigenvalues taken as
/// zero) applied to `v`: `adj(A) = Σ_j (Π_{k≠j} a_k) q_j q_jᵀ`, finite where
/// `A` is singular (rank `n − 1` keeps the one term of the zero eigenvalue).
fn adjugate_apply(eigen: &Eigenbasis, v: &[f64], damping: f64) -> Adjugate {
    let a: Vec<f64> = eigen.values.iter().map(|m| m.max(0.0) + damping).collect();
    let zeros = a.iter().filter(|x| **x == 0.0).count();
    let log_scale: f64 = a.iter().filter(|x| **x > 0.0).map(|x| x.ln()).sum();
    // Π_{k≠j} a_k over the product of the non-zero a_k.
    let unscaled = eigen.apply(v, |m| {
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
        if !refresh && !self.estimates.is_empty() {
            return Ok(());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(batch.seed);
        let n = batch.data.len();
        let patterns: Vec<Vec<usize>> = (0..self.draws)
            .map(|_| (0..n).filter(|_| rng.random::<f64>() < self.keep).collect())
            .collect();
        self.fit_patterns(batch, &patterns, &vec![1.0; self.draws])
    }

    fn solve(&self, v: &[f64], damping: f64, power: f64) -> Result<Vec<f64>, Error> {
        if power != 1.0 {
            return Err(Error::Invalid(format!(
                "--power {power}: determinantal averaging estimates the inverse (α = 1)"
            )));
        }
        self.average(v, damping)
    }

    fn curvature(&self, v: &[f64]) -> Result<f64, Error> {
        let total: f64 = self
            .estimates
            .iter()
            .map(|e| dot(v, &e.eigen.apply(v, |m| m.max(0.0))))
            .sum();
        Ok(total / self.estimates.len().max(1) as f64)
    }

    fn save(&self, state: &mut Scope<'_>) {
        state.put_count("estimates", self.estimates.len());
        for (k, e) in self.estimates.iter().enumerate() {
            let mut s = state.scope(&k.to_string());
            e.eigen.save(&mut s);
            s.put_scalar("log_prior", e.log_prior);
        }
    }

    fn restore(&mut self, objective: &Objective, state: &mut Scope<'_>) -> Result<(), Error> {
        let n = self.group.numel(objective);
        let count = state.take_count("estimates")?;
        self.estimates = (0..count)
            .map(|k| {
                let mut s = state.scope(&k.to_string());
                Ok(Estimate {
                    eigen: Eigenbasis::restore(&mut s, n)?,
                    log_prior: s.take_scalar("log_prior")?,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(())
    }
}
