//! Predictive distributions of a Laplace approximation: the linearized
//! (GLM) predictive `f(x) ~ N(f(x; θ*), J P⁻¹ Jᵀ)` (Immer et al. 2021,
//! "Improving predictions of Bayesian neural nets via local
//! linearization") turned into class probabilities by the probit
//! approximation (MacKay 1992), the Laplace bridge (Hobbhahn et al. 2022,
//! "Fast predictive uncertainty for classification with Bayesian deep
//! networks", with laplace-torch's zero-mean correction) or Monte Carlo; and
//! the sampling (NN) predictive over weights drawn from the posterior.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secondo_curvature::Objective;
use secondo_data::Dataset;
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use super::dense::eigen_rows;
use super::jacobian::for_each_jacobian_batch;
use super::{FactoredJacobians, Laplace, LastLayer, Likelihood, Posterior, Structure};
use crate::Error;

/// How the linearized predictive's Gaussian over outputs becomes class
/// probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The probit approximation of the softmax's expectation.
    Probit,
    /// The Laplace bridge to a Dirichlet.
    Bridge,
    /// `S` Monte-Carlo draws of the outputs.
    MonteCarlo(usize),
}

/// Which predictive (`--predictive`).
///
/// ```
/// use secondo::laplace::predictive::{Link, Predictive};
/// assert_eq!("glm-mc:50".parse::<Predictive>().unwrap(), Predictive::Glm(Link::MonteCarlo(50)));
/// assert!("nn:0".parse::<Predictive>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predictive {
    /// The linearized network (for regression the link is not used).
    Glm(Link),
    /// `S` draws of the weights through the network itself.
    Nn(usize),
}

impl FromStr for Predictive {
    type Err = Error;
    fn from_str(s: &str) -> Result<Predictive, Error> {
        let draws = |rest: &str| rest.parse::<usize>().ok().filter(|&k| k > 0);
        let parsed = match s {
            "glm-probit" => Some(Predictive::Glm(Link::Probit)),
            "glm-bridge" => Some(Predictive::Glm(Link::Bridge)),
            _ => match s.split_once(':') {
                Some(("glm-mc", k)) => draws(k).map(|k| Predictive::Glm(Link::MonteCarlo(k))),
                Some(("nn", k)) => draws(k).map(Predictive::Nn),
                _ => None,
            },
        };
        parsed.ok_or_else(|| {
            Error::Invalid(format!(
                "--predictive '{s}': expected glm-probit, glm-bridge, glm-mc:S or nn:S with S ≥ 1"
            ))
        })
    }
}

impl fmt::Display for Predictive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predictive::Glm(Link::Probit) => f.write_str("glm-probit"),
            Predictive::Glm(Link::Bridge) => f.write_str("glm-bridge"),
            Predictive::Glm(Link::MonteCarlo(s)) => write!(f, "glm-mc:{s}"),
            Predictive::Nn(s) => write!(f, "nn:{s}"),
        }
    }
}

/// Predictions on a dataset, row-major `[N, C]` each.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// The MAP network's: class probabilities (classification) or outputs.
    pub map: Vec<f64>,
    /// The Laplace predictive's class probabilities or means.
    pub mean: Vec<f64>,
    /// Regression: the predictive variances, epistemic plus σ² (empty for
    /// classification).
    pub variance: Vec<f64>,
    /// Samples.
    pub n: usize,
    /// Outputs per sample.
    pub c: usize,
}

/// The probit approximation `softmax(μ / √(1 + π/8 · diag Σ))` per sample,
/// from means `[N, C]` and output covariances `[N, C, C]`.
pub fn probit(f_mu: &[f64], f_var: &[f64], c: usize) -> Vec<f64> {
    let scaled: Vec<f64> = f_mu
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let (n, i) = (k / c, k % c);
            m / (1.0 + std::f64::consts::PI / 8.0 * f_var[n * c * c + i * c + i]).sqrt()
        })
        .collect();
    softmax(&scaled, c)
}

/// The Laplace bridge's expected probabilities `α / Σα` per sample, after
/// the zero-mean correction of the outputs' Gaussian (laplace-torch's).
pub fn bridge(f_mu: &[f64], f_var: &[f64], c: usize) -> Vec<f64> {
    let k = c as f64;
    let mut out = Vec::with_capacity(f_mu.len());
    for (mu, var) in f_mu.chunks(c).zip(f_var.chunks(c * c)) {
        let row_sums: Vec<f64> = (0..c)
            .map(|i| var[i * c..(i + 1) * c].iter().sum())
            .collect();
        let total: f64 = row_sums.iter().sum();
        let mu_sum: f64 = mu.iter().sum();
        let m: Vec<f64> = (0..c)
            .map(|i| mu[i] - row_sums[i] * mu_sum / total)
            .collect();
        let diag: Vec<f64> = (0..c)
            .map(|i| var[i * c + i] - row_sums[i] * row_sums[i] / total)
            .collect();
        let sum_exp: f64 = m.iter().map(|x| (-x).exp()).sum();
        let alpha: Vec<f64> = (0..c)
            .map(|i| (1.0 - 2.0 / k + m[i].exp() / (k * k) * sum_exp) / diag[i])
            .collect();
        let norm: f64 = alpha.iter().sum();
        out.extend(alpha.iter().map(|a| {
            let p = a / norm;
            if p.is_nan() {
                1.0
            } else {
                p
            }
        }));
    }
    out
}

/// Row-wise softmax of `[N, C]`.
pub fn softmax(logits: &[f64], c: usize) -> Vec<f64> {
    logits
        .chunks(c)
        .flat_map(|row| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |x| x / s)
        })
        .collect()
}

/// `count` independent standard normal draws (Box–Muller).
pub fn standard_normal(rng: &mut ChaCha8Rng, count: usize) -> Vec<f64> {
    (0..count)
        .map(|_| {
            let u: f64 = 1.0 - rng.random::<f64>();
            let v: f64 = rng.random::<f64>();
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect()
}

/// `W_n W_nᵀ` (`C × C`) for each sample of `w` (`[n, C, width]`): one
/// sample per task, so the sums do not depend on the thread count.
pub(super) fn gram_per_sample(w: &[f64], c: usize, width: usize) -> Vec<f64> {
    use rayon::prelude::*;
    let mut out = vec![0.0; w.len() / width.max(1) * c];
    out.par_chunks_mut(c * c)
        .zip(w.par_chunks(c * width))
        .for_each(|(g, rows)| {
            for a in 0..c {
                for b in 0..=a {
                    let ra = &rows[a * width..(a + 1) * width];
                    let rb = &rows[b * width..(b + 1) * width];
                    let dot = dot(ra, rb);
                    g[a * c + b] = dot;
                    g[b * c + a] = dot;
                }
            }
        });
    out
}

/// `x · y` with eight running sums (which the compiler vectorizes; one
/// running sum it may not reorder), added in a fixed order.
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut lanes = [0.0; 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f64 = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xs.zip(ys) {
        for k in 0..8 {
            lanes[k] += a[k] * b[k];
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// Most numbers of a dense `P^{-½}` over a low-rank last layer (2²⁴, 128
/// MiB in f64); beyond it the per-sample Jacobians are used.
const WHITENING_BUDGET: usize = 1 << 24;

/// The linearized predictive's output means `[N, C]` and covariances
/// `[N, C, C]` (`J_n P⁻¹ J_nᵀ = W_n W_nᵀ`, [`Posterior::whiten`]); for
/// diagonal and Kronecker-factored posteriors over linear layers from the
/// Jacobians' Kronecker factors ([`FactoredJacobians::glm_moments`]), for a
/// last linear layer from its features ([`LastLayer::glm_moments`]).
pub fn glm_moments(
    objective: &Objective,
    params: &ParamStore,
    la: &Laplace,
    posterior: &Posterior,
    data: &Dataset,
    batch_size: usize,
) -> Result<(Vec<f64>, Vec<f64>), Error> {
    if let Some(factored) = FactoredJacobians::of(objective, la)? {
        return factored.glm_moments(objective, params, posterior, data, batch_size);
    }
    // The closed form holds `P^{-½}` densely: free beside a full block's
    // eigenvectors, bounded for a low-rank one.
    let dense = la.structure == Structure::Full || la.dim().saturating_pow(2) <= WHITENING_BUDGET;
    if let (true, Some(last)) = (
        dense,
        LastLayer::of(objective, &la.names, la.mask.is_some())?,
    ) {
        return last.glm_moments(objective, params, posterior, data, batch_size);
    }
    let c = la.n_outputs;
    let (mut f_mu, mut f_var) = (Vec::new(), Vec::new());
    for_each_jacobian_batch(
        objective,
        params,
        data,
        &la.names,
        batch_size,
        |_, out, jac| {
            let rows = out.len();
            let jac = la.gather_columns(jac, rows);
            let (w, width) = posterior.whiten(&jac, rows);
            f_var.extend(gram_per_sample(&w, c, width));
            f_mu.extend(out);
            Ok(())
        },
    )?;
    Ok((f_mu, f_var))
}

/// Monte-Carlo class probabilities over `draws` samples of the outputs'
/// Gaussian per sample (its covariance's symmetric square root from an
/// eigendecomposition, negative eigenvalues of round-off clipped to 0).
pub fn glm_monte_carlo(
    f_mu: &[f64],
    f_var: &[f64],
    c: usize,
    draws: usize,
    seed: u64,
) -> Result<Vec<f64>, Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(f_mu.len());
    for (mu, var) in f_mu.chunks(c).zip(f_var.chunks(c * c)) {
        let (values, rows) = eigen_rows(var, c)?;
        let root: Vec<f64> = values.iter().map(|v| v.max(0.0).sqrt()).collect();
        let mut mean = vec![0.0; c];
        for _ in 0..draws {
            let z = standard_normal(&mut rng, c);
            // f = μ + Eᵀ diag(√λ) z.
            let f: Vec<f64> = (0..c)
                .map(|i| {
                    mu[i]
                        + (0..c)
                            .map(|k| rows[k * c + i] * root[k] * z[k])
                            .sum::<f64>()
                })
                .collect();
            for (m, p) in mean.iter_mut().zip(softmax(&f, c)) {
                *m += p / draws as f64;
            }
        }
        out.extend(mean);
    }
    Ok(out)
}

/// The network's outputs `[N, C]` on `data` at `params`.
pub fn outputs(
    objective: &Objective,
    params: &ParamStore,
    data: &Dataset,
    batch_size: usize,
) -> Result<Vec<f64>, Error> {
    let mut out = Vec::new();
    for batch in data.batches(batch_size)? {
        let (x, y) = objective.batch_tensors(&batch)?;
        let step = objective.program(batch.len(), false)?.run(params, x, y)?;
        out.extend(step.output.to_f64_vec());
    }
    Ok(out)
}

/// `params` with the covered weights set to the flat `values` (the rest
/// of a masked subnetwork's tensors as in `params`).
pub fn with_weights(
    params: &ParamStore,
    la: &Laplace,
    values: &[f64],
) -> Result<ParamStore, Error> {
    let mut all = super::fit::subset_values(params, &la.names)?;
    match &la.mask {
        Some(m) => m.iter().zip(values).for_each(|(&i, v)| all[i] = *v),
        None => all.copy_from_slice(values),
    }
    let mut out = params.clone();
    let mut at = 0;
    for (name, shape) in la.names.iter().zip(&la.shapes) {
        let n: usize = shape.iter().product();
        let dtype = params
            .get(name)
            .map_or(secondo_tensor::DType::F64, Tensor::dtype);
        out.insert(
            name,
            Tensor::from_f64(shape.clone(), &all[at..at + n], dtype).expect("sizes match"),
        );
        at += n;
    }
    Ok(out)
}

/// `draws` weight vectors from the posterior `N(θ*, P⁻¹)`, row-major.
pub fn sample_weights(la: &Laplace, posterior: &Posterior, draws: usize, seed: u64) -> Vec<f64> {
    let dim = la.dim();
    let z = standard_normal(&mut ChaCha8Rng::seed_from_u64(seed), draws * dim);
    let mut theta = posterior.apply_power(&z, draws, -0.5);
    for row in theta.chunks_mut(dim) {
        row.iter_mut().zip(&la.mean).for_each(|(t, m)| *t += m);
    }
    theta
}

/// The predictive of `la` on `data`.
pub fn predict(
    objective: &Objective,
    params: &ParamStore,
    la: &Laplace,
    data: &Dataset,
    predictive: Predictive,
    seed: u64,
    batch_size: usize,
) -> Result<Predictions, Error> {
    let c = la.n_outputs;
    let posterior = la.posterior()?;
    let noise = la.sigma * la.sigma;
    // The MAP outputs: the linearization's means for the GLM predictive.
    let (map_out, mean, variance) = match (predictive, la.likelihood) {
        (Predictive::Nn(draws), likelihood) => {
            let map_out = outputs(objective, params, data, batch_size)?;
            let theta = sample_weights(la, &posterior, draws, seed);
            let mut first = vec![0.0; map_out.len()];
            let mut second = vec![0.0; map_out.len()];
            for w in theta.chunks(la.dim()) {
                let out = outputs(objective, &with_weights(params, la, w)?, data, batch_size)?;
                let out = match likelihood {
                    Likelihood::Classification => softmax(&out, c),
                    Likelihood::Regression => out,
                };
                for ((a, b), o) in first.iter_mut().zip(second.iter_mut()).zip(out) {
                    *a += o / draws as f64;
                    *b += o * o / draws as f64;
                }
            }
            match likelihood {
                Likelihood::Classification => (map_out, first, Vec::new()),
                Likelihood::Regression => {
                    let var = first
                        .iter()
                        .zip(&second)
                        .map(|(m, s)| (s - m * m).max(0.0) + noise)
                        .collect();
                    (map_out, first, var)
                }
            }
        }
        (Predictive::Glm(link), Likelihood::Classification) => {
            let (f_mu, f_var) = glm_moments(objective, params, la, &posterior, data, batch_size)?;
            let probs = match link {
                Link::Probit => probit(&f_mu, &f_var, c),
                Link::Bridge => bridge(&f_mu, &f_var, c),
                Link::MonteCarlo(draws) => glm_monte_carlo(&f_mu, &f_var, c, draws, seed)?,
            };
            (f_mu, probs, Vec::new())
        }
        (Predictive::Glm(_), Likelihood::Regression) => {
            let (f_mu, f_var) = glm_moments(objective, params, la, &posterior, data, batch_size)?;
            let var = (0..f_mu.len())
                .map(|k| f_var[(k / c) * c * c + (k % c) * (c + 1)] + noise)
                .collect();
            (f_mu.clone(), f_mu, var)
        }
    };
    let map = match la.likelihood {
        Likelihood::Classification => softmax(&map_out, c),
        Likelihood::Regression => map_out,
    };
    Ok(Predictions {
        map,
        mean,
        variance,
        n: data.len(),
        c,
    })
}
