//! Online marginal-likelihood training (Immer et al. 2021, "Scalable
//! marginal likelihood estimation for model selection in deep learning",
//! Algorithm 1; laplace-torch's `marglik_training`): the weights descend the
//! negative log joint `Σₙ −log p(yₙ | f(xₙ), σ) + ½ θᵀ δ θ` at the current
//! prior precision δ and noise σ, and every few epochs a Laplace
//! approximation at the current weights gives the evidence, on whose log
//! hyperparameters a few Adam steps are taken ([`Ascent`], one
//! ascent for the whole run).
//!
//! Conventions, against laplace-torch 0.3: the prior covers every
//! parameter; its gradient is scaled as the loss is, exactly (the squared
//! error's mean over `N·C` values makes it `2σ²δθ/(N·C)`, where
//! laplace-torch divides by `N` alone and so weighs the prior `C` times more
//! for `C > 1` outputs); `--marglik-burnin B` trains `B` epochs before the
//! first phase (laplace-torch's `n_epochs_burnin=B` runs one at epoch `B`).
//! As laplace-torch does, the weights and hyperparameters kept at the end
//! are by default those of the phase of highest evidence ([`Keep`]); a
//! phase's evidence is that at its last iterate (laplace-torch compares
//! the one before its last Adam step, and keeps that step's prior).
//!
//! The temperature `T` is laplace-torch's, in its two places, which do not
//! agree for `T ≠ 1`: each phase's Laplace approximation divides the data
//! term by `T` ([`super::Laplace::temperature`]: `P = H/(σ²T) + δ`), while
//! the weight steps divide the prior by it (`−log p + ½ θᵀδθ/T`, the
//! likelihood weighed `T` times against the prior, for "overcounting" the
//! data under augmentation). The prior starts at `T·δ₀`, so that the first
//! epochs' weight decay is that of `T = 1`.

use secondo_curvature::Objective;
use secondo_data::Dataset;
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use super::marglik::Ascent;
use super::structure::diagonal_prior_refused;
use super::{check_temperature, fit, FitOptions, Likelihood, Prior, PriorShape, Structure, Subset};
use crate::train::Regularizer;
use crate::Error;

/// How hyperparameters are learned during training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnlineOptions {
    /// Epochs between hyperparameter phases (laplace-torch's `marglik_frequency`).
    pub every: usize,
    /// Adam steps per phase (laplace-torch's `n_hypersteps`).
    pub steps: usize,
    /// Epochs trained before the first phase.
    pub burnin: usize,
    /// The Laplace approximation's structure.
    pub structure: Structure,
    /// Adam's learning rate on the log hyperparameters (`lr_hyp`).
    pub lr: f64,
    /// One prior precision for all weights or one per parameter tensor.
    pub prior_shape: PriorShape,
    /// The initial prior precision (`prior_prec_init`).
    pub prior_precision: f64,
    /// The initial observation noise (`sigma_noise_init`; regression).
    pub sigma: f64,
    /// Samples per batch of a phase's pass over the data.
    pub batch_size: usize,
    /// The likelihood's temperature (laplace-torch's `temperature`).
    pub temperature: f64,
    /// Which phase's weights and hyperparameters are kept at the end.
    pub keep: Keep,
}

/// Which weights and hyperparameters online training ends with
/// (`--marglik-keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Those of the phase of highest evidence, the first of equals
    /// (laplace-torch's early stopping on the marginal likelihood).
    Best,
    /// The last epoch's weights and the last phase's hyperparameters.
    Last,
}

impl std::str::FromStr for Keep {
    type Err = Error;
    fn from_str(s: &str) -> Result<Keep, Error> {
        match s {
            "best" => Ok(Keep::Best),
            "last" => Ok(Keep::Last),
            _ => Err(Error::Invalid(format!(
                "--marglik-keep '{s}': expected best or last"
            ))),
        }
    }
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Keep::Best => "best",
            Keep::Last => "last",
        })
    }
}

impl OnlineOptions {
    /// Whether a phase runs after `epoch` (from 1): past the burn-in, every
    /// `every` epochs.
    ///
    /// ```
    /// use secondo::laplace::online::OnlineOptions;
    /// let o = OnlineOptions { every: 2, burnin: 2, ..OnlineOptions::default() };
    /// assert_eq!((1..=6).filter(|&e| o.due(e)).collect::<Vec<_>>(), [4, 6]);
    /// ```
    pub fn due(&self, epoch: usize) -> bool {
        epoch > self.burnin && epoch.is_multiple_of(self.every)
    }
}

impl Default for OnlineOptions {
    /// laplace-torch's defaults: every epoch, 10 steps of learning rate
    /// 0.1, no burn-in, Kronecker factors, a prior per layer from 1, σ = 1,
    /// no tempering, the best phase kept.
    fn default() -> OnlineOptions {
        OnlineOptions {
            every: 1,
            steps: 10,
            burnin: 0,
            structure: Structure::Kron,
            lr: 0.1,
            prior_shape: PriorShape::PerLayer,
            prior_precision: 1.0,
            sigma: 1.0,
            batch_size: 256,
            temperature: 1.0,
            keep: Keep::Best,
        }
    }
}

/// One hyperparameter phase: where it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// The epoch after which it ran (from 1).
    pub epoch: usize,
    /// The log marginal likelihood at the weights of that epoch and the
    /// phase's last hyperparameters.
    pub log_marginal_likelihood: f64,
    /// The prior precisions after the phase; `None` for a diagonal prior,
    /// whose one value per weight only the kept phase keeps.
    pub prior_precision: Option<Vec<f64>>,
    /// The observation noise after the phase (1 for classification).
    pub sigma: f64,
}

/// The state of online marginal-likelihood training, handed to
/// [`crate::train::train_with`] as its [`Regularizer`].
///
/// ```
/// use secondo::laplace::online::{OnlineMarglik, OnlineOptions};
/// use secondo::train::{train_with, OptimizerChoice, TrainConfig};
/// use secondo::{Objective, ObjectiveConfig};
/// use secondo_nn::ParamStore;
/// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
/// let mut params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
/// let data = secondo_data::digits().select(&(0..100).collect::<Vec<_>>()).unwrap();
/// let mut online = OnlineMarglik::new(&obj, &params, &data, OnlineOptions::default()).unwrap();
/// let config = TrainConfig { epochs: 2, ..TrainConfig::default() };
/// train_with(&obj, &mut params, &data, &config, None, Some(&mut online), |_| {}).unwrap();
/// assert_eq!(online.phases().len(), 2);
/// assert_eq!(online.prior().values.len(), 2); // 0.weight, 0.bias
/// ```
#[derive(Debug)]
pub struct OnlineMarglik<'a> {
    objective: &'a Objective,
    options: OnlineOptions,
    likelihood: Likelihood,
    n_data: usize,
    prior: Prior,
    sigma: f64,
    ascent: Ascent,
    phases: Vec<Phase>,
    best: Option<Best>,
    kept: Option<usize>,
}

/// The phase of highest evidence so far, for [`Keep::Best`].
#[derive(Debug, Clone)]
struct Best {
    phase: usize,
    params: ParamStore,
    prior: Prior,
    sigma: f64,
}

impl<'a> OnlineMarglik<'a> {
    /// Online training of `objective` on `data` from `params`; refuses,
    /// before any training, options out of range, a loss that is no
    /// likelihood's, and a structure the network or the memory cannot take
    /// (by a fit on one sample).
    pub fn new(
        objective: &'a Objective,
        params: &ParamStore,
        data: &Dataset,
        options: OnlineOptions,
    ) -> Result<OnlineMarglik<'a>, Error> {
        let likelihood = Likelihood::of_loss(objective.loss.kind)?;
        if options.every == 0 || options.steps == 0 || options.batch_size == 0 {
            return Err(Error::Invalid(
                "--marglik-every and --marglik-steps must be at least 1".into(),
            ));
        }
        if options.prior_shape == PriorShape::Diagonal && !options.structure.takes_diagonal_prior()
        {
            return Err(diagonal_prior_refused(
                "--marglik-prior-shape",
                "--marglik-structure",
            ));
        }
        check_temperature("--marglik-temperature", options.temperature)?;
        if !(options.lr.is_finite() && options.lr > 0.0) {
            return Err(Error::Invalid(format!(
                "--marglik-lr must be positive and finite, got {}",
                options.lr
            )));
        }
        if data.is_empty() {
            return Err(Error::Invalid(format!(
                "data '{}' has no samples",
                data.name
            )));
        }
        let ascent = Ascent::new(options.lr, true)?;
        let first = data.select(&[0])?;
        let probe = fit(
            objective,
            params,
            &first,
            &fit_options(&options, likelihood),
        )?;
        Ok(OnlineMarglik {
            objective,
            options,
            likelihood,
            n_data: data.len(),
            prior: probe.prior,
            sigma: options.sigma,
            ascent,
            phases: Vec::new(),
            best: None,
            kept: None,
        })
    }

    /// The current prior precision.
    pub fn prior(&self) -> &Prior {
        &self.prior
    }

    /// The current observation noise (1 for classification).
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The likelihood the loss is the negative log of.
    pub fn likelihood(&self) -> Likelihood {
        self.likelihood
    }

    /// The options it runs with.
    pub fn options(&self) -> &OnlineOptions {
        &self.options
    }

    /// The phases run so far.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// Ends training by the options' [`Keep`]: with [`Keep::Best`] sets
    /// `params`, the prior and σ to those of the phase of highest evidence.
    /// Returns the index of the phase whose hyperparameters are kept (the
    /// last with [`Keep::Last`]; `None` before any phase), also
    /// [`Self::kept`] from then on.
    pub fn finish(&mut self, params: &mut ParamStore) -> Option<usize> {
        if let Some(best) = self.best.take() {
            *params = best.params;
            self.prior = best.prior;
            self.sigma = best.sigma;
            self.kept = Some(best.phase);
        } else {
            self.kept = self.phases.len().checked_sub(1);
        }
        self.kept
    }

    /// The index of the phase [`Self::finish`] kept.
    pub fn kept(&self) -> Option<usize> {
        self.kept
    }

    /// The factor of `δθ` in the gradient of a step on `batch` samples.
    /// The batch's loss is `scale_b Σ_{n∈b} ℓₙ`, in expectation `scale_b ·
    /// b/N` times the data's `Σₙ ℓₙ = Σₙ −log p / (f s)` (with `f` the
    /// likelihood's [`Likelihood::loss_factor`] and `s = 1/σ²` or 1), so the
    /// prior's `½ θᵀδθ` enters scaled by `scale_b · b / (N f s)`: `δθ/N` for
    /// the mean cross-entropy, laplace-torch's `weight_decay = δ/N`; and
    /// divided by the temperature `T`, as laplace-torch's weight steps do.
    fn prior_factor(&self, batch: usize) -> f64 {
        let c = self.objective.network.output_shape()[0];
        let scale = self.objective.loss.scale(&[batch, c]);
        let s = self.likelihood.precision_scale(self.sigma);
        let f = self.likelihood.loss_factor();
        scale * batch as f64 / (self.n_data as f64 * f * s * self.options.temperature)
    }
}

/// The fit of every phase: all weights, the GGN, the options' structure,
/// prior shape and temperature, the prior from `T·δ₀` (laplace-torch's
/// `prior_prec_init` times the temperature).
fn fit_options(options: &OnlineOptions, likelihood: Likelihood) -> FitOptions {
    FitOptions {
        subset: Subset::All,
        structure: options.structure,
        likelihood,
        prior_shape: options.prior_shape,
        prior_precision: options.temperature * options.prior_precision,
        sigma: options.sigma,
        temperature: options.temperature,
        batch_size: options.batch_size,
        ..FitOptions::default()
    }
}

impl Regularizer for OnlineMarglik<'_> {
    fn add_gradient(
        &self,
        params: &ParamStore,
        grads: &mut [Tensor],
        batch: usize,
    ) -> Result<(), Error> {
        let factor = self.prior_factor(batch);
        let delta = self.prior.per_weight();
        let mut at = 0;
        for ((_, theta), g) in params.iter().zip(grads.iter_mut()) {
            let n = theta.numel();
            let values: Vec<f64> = g
                .to_f64_vec()
                .iter()
                .zip(theta.to_f64_vec())
                .zip(&delta[at..at + n])
                .map(|((g, t), d)| g + factor * d * t)
                .collect();
            *g = Tensor::from_f64(g.shape().to_vec(), &values, g.dtype())
                .expect("the gradient's own shape");
            at += n;
        }
        Ok(())
    }

    fn end_epoch(
        &mut self,
        epoch: usize,
        params: &ParamStore,
        data: &Dataset,
    ) -> Result<(), Error> {
        if !self.options.due(epoch) {
            return Ok(());
        }
        let mut la = fit(
            self.objective,
            params,
            data,
            &fit_options(&self.options, self.likelihood),
        )?;
        la.prior = self.prior.clone();
        la.sigma = self.sigma;
        let value = self.ascent.run(&mut la, self.options.steps)?;
        self.prior = la.prior;
        self.sigma = la.sigma;
        self.phases.push(Phase {
            epoch,
            log_marginal_likelihood: value,
            prior_precision: (self.prior.shape != PriorShape::Diagonal)
                .then(|| self.prior.values.clone()),
            sigma: self.sigma,
        });
        let phase = self.phases.len() - 1;
        let improves = |b: &Best| value > self.phases[b.phase].log_marginal_likelihood;
        if self.options.keep == Keep::Best && self.best.as_ref().is_none_or(improves) {
            self.best = Some(Best {
                phase,
                params: params.clone(),
                prior: self.prior.clone(),
                sigma: self.sigma,
            });
        }
        Ok(())
    }
}
