//! The likelihoods and laplace-torch's loss-scaling convention: the
//! curvature `H` is that of the summed negative log-likelihood at `σ = 1`
//! (`Σₙ −log p(yₙ | f(xₙ))`), whatever the loss's reduction, so that the
//! posterior precision is `H/σ² + δ` (Daxberger et al. 2021, §2). The
//! engine's curvature is that of the loss as reduced (`scale · Σₙ ℓₙ`), with
//! `ℓₙ` the unscaled per-sample term: `−log p` itself for cross-entropy,
//! `‖f − y‖²`, twice the Gaussian's at `σ = 1`, for the squared error.

use std::fmt;
use std::str::FromStr;

use secondo_data::BatchTargets;
use secondo_nn::LossKind;

use super::dense::identity;
use crate::Error;

/// A `C × C` curvature in the outputs, `diag(d) + s·v vᵀ`: the structure
/// the last layer's closed form (`super::last_layer`) multiplies out
/// without forming `C × C` per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputCurvature {
    /// `d`, absent when zero.
    pub diag: Option<Vec<f64>>,
    /// `(s, v)`, absent when zero.
    pub rank_one: Option<(f64, Vec<f64>)>,
}

impl OutputCurvature {
    /// The matrix, row-major `C × C`.
    pub fn dense(&self, c: usize) -> Vec<f64> {
        let mut m = vec![0.0; c * c];
        if let Some(d) = &self.diag {
            (0..c).for_each(|a| m[a * c + a] += d[a]);
        }
        if let Some((sign, v)) = &self.rank_one {
            (0..c * c).for_each(|ab| m[ab] += sign * v[ab / c] * v[ab % c]);
        }
        m
    }
}

/// Refuses a likelihood temperature `T` (given by `flag`) that is not a
/// positive finite number: `P = H/(σ²T) + δ` and the data term `Σₙ −log
/// p / T` need `0 < T < ∞`.
///
/// ```
/// use secondo::laplace::check_temperature;
/// assert!(check_temperature("--temperature", 0.5).is_ok());
/// let e = check_temperature("--temperature", 0.0).unwrap_err();
/// assert_eq!(e.to_string(), "--temperature must be positive and finite, got 0");
/// ```
pub fn check_temperature(flag: &str, temperature: f64) -> Result<(), Error> {
    if temperature.is_finite() && temperature > 0.0 {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{flag} must be positive and finite, got {temperature}"
    )))
}

/// The observation model (`--likelihood`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Likelihood {
    /// Categorical over softmax outputs (cross-entropy loss).
    Classification,
    /// Gaussian with observation noise σ (squared-error loss).
    Regression,
}

impl FromStr for Likelihood {
    type Err = Error;
    fn from_str(s: &str) -> Result<Likelihood, Error> {
        match s {
            "classification" => Ok(Likelihood::Classification),
            "regression" => Ok(Likelihood::Regression),
            _ => Err(Error::Invalid(format!(
                "--likelihood '{s}': expected classification or regression"
            ))),
        }
    }
}

impl fmt::Display for Likelihood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Likelihood::Classification => "classification",
            Likelihood::Regression => "regression",
        })
    }
}

/// Which curvature of the negative log-likelihood (`--curvature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fisher {
    /// The generalized Gauss-Newton matrix (the Fisher, for these likelihoods).
    Ggn,
    /// The empirical Fisher `Σₙ gₙ gₙᵀ`.
    Empirical,
}

impl FromStr for Fisher {
    type Err = Error;
    fn from_str(s: &str) -> Result<Fisher, Error> {
        match s {
            "ggn" => Ok(Fisher::Ggn),
            "ef" => Ok(Fisher::Empirical),
            _ => Err(Error::Invalid(format!(
                "--curvature '{s}': expected ggn or ef"
            ))),
        }
    }
}

impl Likelihood {
    /// The loss this likelihood is the negative log of: cross-entropy for
    /// classification, the squared error for regression.
    ///
    /// ```
    /// use secondo::laplace::Likelihood;
    /// use secondo_nn::LossKind;
    /// assert_eq!(Likelihood::Regression.loss(), LossKind::Mse);
    /// ```
    pub fn loss(self) -> LossKind {
        match self {
            Likelihood::Classification => LossKind::CrossEntropy,
            Likelihood::Regression => LossKind::Mse,
        }
    }

    /// Refuses a loss this likelihood is not the negative log of.
    pub fn check_loss(self, loss: LossKind) -> Result<(), Error> {
        let expected = self.loss();
        if loss != expected {
            return Err(Error::Invalid(format!(
                "--likelihood {self} needs --loss {expected}, got --loss {loss}"
            )));
        }
        Ok(())
    }

    /// The likelihood whose negative log `loss` is: cross-entropy for
    /// classification, the squared error for regression.
    ///
    /// ```
    /// use secondo::laplace::Likelihood;
    /// use secondo_nn::LossKind;
    /// assert_eq!(Likelihood::of_loss(LossKind::Mse).unwrap(), Likelihood::Regression);
    /// assert!(Likelihood::of_loss(LossKind::BceWithLogits).is_err());
    /// ```
    pub fn of_loss(loss: LossKind) -> Result<Likelihood, Error> {
        match loss {
            LossKind::CrossEntropy => Ok(Likelihood::Classification),
            LossKind::Mse => Ok(Likelihood::Regression),
            other => Err(Error::Invalid(format!(
                "--loss {other} is the negative log of no likelihood a Laplace approximation \
                 takes (cross_entropy: classification, mse: regression)"
            ))),
        }
    }

    /// The factor from the curvature of `Σₙ ℓₙ` to that of `Σₙ −log p` at
    /// `σ = 1`: ½ for the squared error's GGN (`ℓₙ = 2·(−log p) + const`)
    /// and ¼ for its empirical Fisher (gradients squared), 1 for cross-entropy.
    pub fn curvature_factor(self, fisher: Fisher) -> f64 {
        match (self, fisher) {
            (Likelihood::Classification, _) => 1.0,
            (Likelihood::Regression, Fisher::Ggn) => 0.5,
            (Likelihood::Regression, Fisher::Empirical) => 0.25,
        }
    }

    /// The curvature in the outputs `f` (`C` values) of sample `s` of a
    /// batch with targets `y` of `−log p(y | f)` at `σ = 1`, as a diagonal
    /// plus a signed rank-one term: the GGN's Hessian `diag(p) − ppᵀ` (`p`
    /// the softmax), the identity for the Gaussian, or the empirical
    /// Fisher's `r rᵀ` with `r` the gradient (`p − e_y`, `f − y`). It is
    /// `L Lᵀ` of [`Self::output_curvature_root`].
    pub fn output_curvature(
        self,
        fisher: Fisher,
        f: &[f64],
        y: &BatchTargets<'_>,
        s: usize,
    ) -> OutputCurvature {
        match (fisher, self) {
            (Fisher::Ggn, Likelihood::Classification) => {
                let p = super::predictive::softmax(f, f.len());
                OutputCurvature {
                    diag: Some(p.clone()),
                    rank_one: Some((-1.0, p)),
                }
            }
            (Fisher::Ggn, Likelihood::Regression) => OutputCurvature {
                diag: Some(vec![1.0; f.len()]),
                rank_one: None,
            },
            (Fisher::Empirical, _) => OutputCurvature {
                diag: None,
                rank_one: Some((1.0, self.residual(f, y, s))),
            },
        }
    }

    /// How many columns [`Self::output_curvature_root`] has for `c` outputs.
    pub fn root_width(fisher: Fisher, c: usize) -> usize {
        match fisher {
            Fisher::Ggn => c,
            Fisher::Empirical => 1,
        }
    }

    /// A factor `L` (`C × k` row-major, `k` = [`Self::root_width`]) with
    /// `L Lᵀ` = [`Self::output_curvature`]'s matrix: `diag(√p) − p √pᵀ` for the
    /// softmax's `diag(p) − ppᵀ` (as `Σ p = 1`), the identity for the
    /// Gaussian, and the gradient `r` itself for the empirical Fisher.
    pub fn output_curvature_root(
        self,
        fisher: Fisher,
        f: &[f64],
        y: &BatchTargets<'_>,
        s: usize,
    ) -> Vec<f64> {
        let c = f.len();
        match (fisher, self) {
            (Fisher::Ggn, Likelihood::Classification) => {
                let p = super::predictive::softmax(f, c);
                (0..c * c)
                    .map(|k| {
                        let (a, b) = (k / c, k % c);
                        f64::from(u8::from(a == b)) * p[a].sqrt() - p[a] * p[b].sqrt()
                    })
                    .collect()
            }
            (Fisher::Ggn, Likelihood::Regression) => identity(c),
            (Fisher::Empirical, _) => self.residual(f, y, s),
        }
    }

    /// The gradient `r` of `−log p(y | f)` at `σ = 1` in the outputs of
    /// sample `s`: `p − e_y` for the softmax, `f − y` for the Gaussian.
    fn residual(self, f: &[f64], y: &BatchTargets<'_>, s: usize) -> Vec<f64> {
        let c = f.len();
        let p = match self {
            Likelihood::Classification => super::predictive::softmax(f, c),
            Likelihood::Regression => f.to_vec(),
        };
        match y {
            BatchTargets::Classes { labels, .. } => (0..c)
                .map(|a| p[a] - f64::from(u8::from(a as i64 == labels[s])))
                .collect(),
            BatchTargets::Values { values, .. } => {
                (0..c).map(|a| p[a] - values[s * c + a]).collect()
            }
        }
    }

    /// The factor from `Σₙ ℓₙ` to `Σₙ −log p` at `σ = 1` without its constant.
    pub fn loss_factor(self) -> f64 {
        match self {
            Likelihood::Classification => 1.0,
            Likelihood::Regression => 0.5,
        }
    }

    /// `log p(D | θ)` from `nll = Σₙ −log p(yₙ | f(xₙ))` at `σ = 1` without
    /// constants, for `values` observed numbers (samples × outputs) and noise
    /// `sigma` (ignored for classification).
    pub fn log_likelihood(self, nll: f64, values: usize, sigma: f64) -> f64 {
        match self {
            Likelihood::Classification => -nll,
            Likelihood::Regression => {
                let norm = values as f64 * (sigma * (2.0 * std::f64::consts::PI).sqrt()).ln();
                -nll / (sigma * sigma) - norm
            }
        }
    }

    /// The derivative of [`Self::log_likelihood`] in `log σ`.
    pub fn log_likelihood_log_sigma(self, nll: f64, values: usize, sigma: f64) -> f64 {
        match self {
            Likelihood::Classification => 0.0,
            Likelihood::Regression => 2.0 * nll / (sigma * sigma) - values as f64,
        }
    }

    /// The factor `s` of the curvature in the posterior precision: `1/σ²`
    /// for regression, 1 for classification.
    pub fn precision_scale(self, sigma: f64) -> f64 {
        match self {
            Likelihood::Classification => 1.0,
            Likelihood::Regression => 1.0 / (sigma * sigma),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `L Lᵀ` of the root equals the curvature, in every case.
    #[test]
    fn the_root_squares_to_the_output_curvature() {
        let f = [0.3, -1.2, 0.8];
        let (labels, values) = ([2_i64], [0.5, -0.1, 2.0]);
        let targets = [
            BatchTargets::Classes {
                labels: &labels,
                num_classes: 3,
            },
            BatchTargets::Values {
                values: &values,
                width: 3,
            },
        ];
        for (likelihood, y) in [Likelihood::Classification, Likelihood::Regression]
            .into_iter()
            .zip(&targets)
        {
            for fisher in [Fisher::Ggn, Fisher::Empirical] {
                let k = Likelihood::root_width(fisher, 3);
                let l = likelihood.output_curvature_root(fisher, &f, y, 0);
                let m = likelihood.output_curvature(fisher, &f, y, 0).dense(3);
                for (ab, &mab) in m.iter().enumerate() {
                    let (a, b) = (ab / 3, ab % 3);
                    let llt: f64 = (0..k).map(|j| l[a * k + j] * l[b * k + j]).sum();
                    assert!((llt - mab).abs() < 1e-15, "{likelihood} {fisher:?} {ab}");
                }
            }
        }
    }
}
