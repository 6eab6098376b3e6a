//! The Laplace approximation of the log marginal likelihood (the evidence)
//! and the choice of the hyperparameters by it (MacKay 1992; Immer et al.
//! 2021, "Scalable marginal likelihood estimation for model selection in
//! deep learning") or by the negative log-likelihood on held-out data
//! (laplace-torch's `optimize_prior_precision(method='gridsearch')`).

use secondo_optim::{Adam, AdamConfig, Optimizer};

use super::structure::PrecisionTerms;
use super::{CurvatureBlock, Laplace, Prior};
use crate::Error;

/// The evidence at some hyperparameters and its gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// `log p(D | θ*) − ½ (log det P − log det P₀ + θ*ᵀ P₀ θ*)`.
    pub value: f64,
    /// Its derivative in the log of each prior precision.
    pub d_log_prior: Vec<f64>,
    /// Its derivative in `log σ` (0 for classification).
    pub d_log_sigma: f64,
}

/// The log marginal likelihood of `la` at prior `prior` and noise `sigma`:
/// the log-likelihood at the MAP weights, minus half the log-determinant
/// ratio of posterior to prior precision and the prior's scatter `θ*ᵀ P₀ θ*`
/// (Daxberger et al. 2021, eq. 3; the zero-mean prior of laplace-torch), with
/// its gradient: `∂/∂δᵢ = −½ ((P⁻¹)ᵢᵢ − 1/δᵢ + θᵢ²)` and, with `P = H/σ² +
/// δ`, `∂/∂log σ = ∂log p/∂log σ + tr(P⁻¹ H)/σ²`. At temperature `T` the
/// data term is laplace-torch's: `Σₙ −log p` and `H` divided by `T`, the
/// Gaussian's normalizer `N·C·log(σ√2π)` not.
pub fn evidence(la: &Laplace, prior: &Prior, sigma: f64) -> Result<Evidence, Error> {
    let terms = posterior_terms(la, prior, sigma)?;
    let values = la.n_data * la.n_outputs;
    let nll = la.nll / la.temperature;
    let log_lik = la.likelihood.log_likelihood(nll, values, sigma);
    let prior_log_det = prior.log_det();
    let squares = prior.sum_per_group(&la.mean.iter().map(|t| t * t).collect::<Vec<_>>());
    let scatter: f64 = prior.values.iter().zip(&squares).map(|(d, s)| d * s).sum();
    let value = log_lik - 0.5 * (terms.log_det - prior_log_det + scatter);
    // Σ over a group of −½ δ (varᵢ − 1/δ + θᵢ²), from the group's sums.
    let variances = terms.variances;
    let d_log_prior = (0..prior.values.len())
        .zip(prior.counts())
        .map(|(g, n)| -0.5 * (prior.values[g] * (variances[g] + squares[g]) - n as f64))
        .collect();
    let d_log_sigma = match la.likelihood {
        super::Likelihood::Classification => 0.0,
        super::Likelihood::Regression => {
            la.likelihood.log_likelihood_log_sigma(nll, values, sigma)
                + la.curvature_scale(sigma) * terms.trace_covariance_curvature
        }
    };
    Ok(Evidence {
        value,
        d_log_prior,
        d_log_sigma,
    })
}

/// The posterior precision's terms at `prior` and `sigma`, with the
/// marginal variances summed per prior group: for one dense block under a
/// prior that varies over it from a Cholesky factor
/// (`DenseCurvature::precision_terms`), else from the posterior's
/// eigenbasis.
fn posterior_terms(la: &Laplace, prior: &Prior, sigma: f64) -> Result<PrecisionTerms, Error> {
    if let [CurvatureBlock::Dense(dense)] = &la.blocks[..] {
        let delta = prior.per_weight();
        if delta.iter().any(|&d| d != delta[0]) {
            let terms = dense.precision_terms(la.curvature_scale(sigma), &delta)?;
            return Ok(PrecisionTerms {
                variances: prior.sum_per_group(&terms.variances),
                ..terms
            });
        }
    }
    let posterior = la.posterior_at(prior, sigma)?;
    Ok(PrecisionTerms {
        log_det: posterior.log_det(),
        variances: posterior.variance_sums(prior),
        trace_covariance_curvature: posterior.trace_covariance_curvature(),
    })
}

/// How the evidence is maximized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarglikOptions {
    /// Adam steps (laplace-torch's `n_steps`, 100).
    pub steps: usize,
    /// Adam's learning rate on the log hyperparameters (laplace-torch's 0.1).
    pub lr: f64,
    /// Whether σ is optimized too (regression).
    pub sigma: bool,
}

impl Default for MarglikOptions {
    fn default() -> MarglikOptions {
        MarglikOptions {
            steps: 100,
            lr: 0.1,
            sigma: true,
        }
    }
}

/// Adam ascent on the evidence in the logs of the prior precisions and σ.
/// Its moments persist from one [`Ascent::run`] to the next, so that
/// online training (`super::online`) continues one ascent over phases whose
/// Laplace approximation changes, as laplace-torch's `marglik_training`
/// keeps one `hyper_optimizer` for the whole run.
#[derive(Debug, Clone)]
pub struct Ascent {
    adam: Adam<f64>,
    sigma: bool,
}

impl Ascent {
    /// An ascent with Adam's learning rate `lr` on the log hyperparameters,
    /// tuning σ too when `sigma` (for regression).
    pub fn new(lr: f64, sigma: bool) -> Result<Ascent, Error> {
        let adam = Adam::new(AdamConfig {
            lr,
            maximize: true,
            ..AdamConfig::default()
        })?;
        Ok(Ascent { adam, sigma })
    }

    /// Takes `steps` Adam steps from `la`'s hyperparameters, sets them to
    /// the last iterate and returns the evidence there.
    pub fn run(&mut self, la: &mut Laplace, steps: usize) -> Result<f64, Error> {
        let tune_sigma = self.sigma && la.likelihood == super::Likelihood::Regression;
        let mut log_prior: Vec<f64> = la.prior.values.iter().map(|v| v.ln()).collect();
        let mut log_sigma = vec![la.sigma.ln()];
        for _ in 0..steps {
            let prior = la
                .prior
                .with_values(log_prior.iter().map(|v| v.exp()).collect())?;
            let e = evidence(la, &prior, log_sigma[0].exp())?;
            let d_sigma = [if tune_sigma { e.d_log_sigma } else { 0.0 }];
            self.adam.step(
                &mut [&mut log_prior, &mut log_sigma],
                &[&e.d_log_prior, &d_sigma],
            )?;
        }
        la.prior = la
            .prior
            .with_values(log_prior.iter().map(|v| v.exp()).collect())?;
        la.sigma = log_sigma[0].exp();
        la.log_marginal_likelihood()
    }
}

/// Sets `la`'s prior precision (and, for regression with `opts.sigma`, σ)
/// to the maximizer of the evidence found by Adam on their logs, and
/// returns the evidence there.
pub fn optimize_marglik(la: &mut Laplace, opts: &MarglikOptions) -> Result<f64, Error> {
    Ascent::new(opts.lr, opts.sigma)?.run(la, opts.steps)
}

/// The prior precisions a grid search tries: 21 values log-spaced over
/// `[10⁻⁴, 10⁴]` (laplace-torch's range, coarser).
pub fn grid() -> Vec<f64> {
    (0..=20)
        .map(|i| 10f64.powf(-4.0 + 0.4 * i as f64))
        .collect()
}

/// Sets every prior precision of `la` to the value of `candidates` with the
/// least `held_out_nll` (the predictive's negative log-likelihood on held-out
/// data), the first on ties, and returns that value and its NLL.
pub fn grid_search(
    la: &mut Laplace,
    candidates: &[f64],
    mut held_out_nll: impl FnMut(&Laplace) -> Result<f64, Error>,
) -> Result<(f64, f64), Error> {
    let mut best: Option<(f64, f64)> = None;
    let count = la.prior.values.len();
    for &c in candidates {
        la.prior = la.prior.with_values(vec![c; count])?;
        let nll = held_out_nll(la)?;
        if best.is_none_or(|(_, b)| nll < b) {
            best = Some((c, nll));
        }
    }
    let (value, nll) =
        best.ok_or_else(|| Error::Invalid("the grid search needs a candidate".into()))?;
    la.prior = la.prior.with_values(vec![value; count])?;
    Ok((value, nll))
}
