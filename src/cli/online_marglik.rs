//! The flags of `secondo train --online-marglik` and the hyperparameters
//! files it writes beside the weights.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use secondo::laplace::online::{OnlineMarglik, OnlineOptions, Phase};
use secondo::laplace::{LearnedPrior, Likelihood, PriorShape, Structure};
use secondo::nn::ParamStore;
use secondo::output::{Input, Output};
use secondo::train::{OptimizerChoice, TrainConfig};

use super::common::at_least_one;

/// Online marginal-likelihood training (Immer et al. 2021, laplace-torch's
/// `marglik_training`): the weight decay becomes a learned prior.
#[derive(Debug, Args, serde::Serialize)]
pub struct OnlineMarglikArgs {
    /// Learn the prior precision δ (the weight decay, δ/N on the mean loss) and, with --loss mse, the noise σ by ascending the Laplace log marginal likelihood between epochs (Immer et al. 2021); writes them, the evidence per phase and the phase kept beside the weights, --out with the extension .marglik.json (w.safetensors → w.marglik.json), and the kept prior, σ and temperature to w.prior.safetensors (for secondo laplace --prior-precision file:w.marglik.json).
    #[arg(long)]
    online_marglik: bool,
    /// Epochs between hyperparameter phases of --online-marglik [default: 1].
    #[arg(long, value_name = "E", value_parser = at_least_one)]
    marglik_every: Option<usize>,
    /// Adam steps on the log hyperparameters per phase of --online-marglik [default: 10].
    #[arg(long, value_name = "K", value_parser = at_least_one)]
    marglik_steps: Option<usize>,
    /// Epochs trained before the first phase of --online-marglik [default: 0].
    #[arg(long, value_name = "B")]
    marglik_burnin: Option<usize>,
    /// Laplace structure of each phase of --online-marglik: kron, diag, full or lowrank:K [default: kron].
    #[arg(long, value_name = "S")]
    marglik_structure: Option<String>,
    /// Adam's learning rate on the log hyperparameters of --online-marglik [default: 0.1].
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    marglik_lr: Option<f64>,
    /// Prior precisions of --online-marglik: scalar, layer (one per parameter tensor) or diagonal (one per weight; --marglik-structure diag or full) [default: layer].
    #[arg(long, value_name = "SHAPE")]
    marglik_prior_shape: Option<String>,
    /// Likelihood temperature T > 0 of --online-marglik, as laplace-torch's marglik_training: the evidence takes the data term over T (posterior precision H/(σ²T) + δ), the weight steps the prior over T (data weighed T times, e.g. for augmentation), and the prior starts at T [default: 1].
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    marglik_temperature: Option<f64>,
    /// Which weights and hyperparameters --online-marglik writes: best (those of the phase of highest log marginal likelihood, as laplace-torch) or last (the last epoch's weights, the last phase's hyperparameters) [default: best].
    #[arg(long, value_name = "K")]
    marglik_keep: Option<String>,
}

impl OnlineMarglikArgs {
    /// The options, `None` without `--online-marglik`; refuses a
    /// `--marglik-*` flag without it, a value out of range, `--weight-decay`
    /// (which the prior replaces), a second-order optimizer and a schedule
    /// that leaves no phase.
    pub fn options(
        &self,
        config: &TrainConfig,
        weight_decay: f64,
    ) -> anyhow::Result<Option<OnlineOptions>> {
        if !self.online_marglik {
            if let Some(flag) = self.given().first() {
                bail!("{flag} needs --online-marglik");
            }
            return Ok(None);
        }
        if weight_decay != 0.0 {
            bail!("--online-marglik learns the weight decay (the prior precision); drop --weight-decay");
        }
        if let OptimizerChoice::SecondOrder(c) = config.optimizer {
            bail!(
                "--online-marglik trains with sgd, adam or adamw, not --optimizer {}",
                c.method
            );
        }
        let defaults = OnlineOptions::default();
        let structure = match self.marglik_structure.as_deref() {
            None => defaults.structure,
            Some(text) => text.parse::<Structure>().map_err(|_| {
                anyhow::anyhow!(
                    "--marglik-structure '{text}': expected kron, diag, full or lowrank:K with K ≥ 1"
                )
            })?,
        };
        let prior_shape = match self.marglik_prior_shape.as_deref() {
            None => defaults.prior_shape,
            Some(text) => text.parse::<PriorShape>().map_err(|_| {
                anyhow::anyhow!(
                    "--marglik-prior-shape '{text}': expected scalar, layer or diagonal"
                )
            })?,
        };
        let lr = self.marglik_lr.unwrap_or(defaults.lr);
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--marglik-lr must be positive and finite, got {lr}");
        }
        // The library refuses a temperature out of range and a diagonal
        // prior over a structure that takes none, before any training.
        let temperature = self.marglik_temperature.unwrap_or(defaults.temperature);
        let keep = match self.marglik_keep.as_deref() {
            None => defaults.keep,
            Some(text) => text.parse()?,
        };
        let options = OnlineOptions {
            every: self.marglik_every.unwrap_or(defaults.every),
            steps: self.marglik_steps.unwrap_or(defaults.steps),
            burnin: self.marglik_burnin.unwrap_or(defaults.burnin),
            structure,
            lr,
            prior_shape,
            temperature,
            keep,
            ..defaults
        };
        if !(1..=config.epochs).any(|e| options.due(e)) {
            bail!(
                "--marglik-every {} and --marglik-burnin {} leave no hyperparameter phase in {} epochs",
                options.every,
                options.burnin,
                config.epochs
            );
        }
        Ok(Some(options))
    }

    /// The `--marglik-*` flags given.
    fn given(&self) -> Vec<&'static str> {
        [
            ("--marglik-every", self.marglik_every.is_some()),
            ("--marglik-steps", self.marglik_steps.is_some()),
            ("--marglik-burnin", self.marglik_burnin.is_some()),
            ("--marglik-structure", self.marglik_structure.is_some()),
            ("--marglik-lr", self.marglik_lr.is_some()),
            ("--marglik-prior-shape", self.marglik_prior_shape.is_some()),
            ("--marglik-temperature", self.marglik_temperature.is_some()),
            ("--marglik-keep", self.marglik_keep.is_some()),
        ]
        .iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| *flag)
        .collect()
    }
}

/// The files beside the weights `W.safetensors`: the hyperparameters and
/// the evidence per phase `W.marglik.json`, and the kept prior (with σ
/// and the temperature) `W.prior.safetensors`, which `secondo laplace
/// --prior-precision file:` reads directly or through the JSON's
/// `prior_file`.
pub struct Files {
    json: (PathBuf, Output),
    prior: (PathBuf, Output),
}

impl Files {
    /// The files beside `weights`, refused now if one is an input.
    pub fn new(weights: &Path, inputs: &[Input]) -> anyhow::Result<Files> {
        let file = |extension: &str| -> anyhow::Result<(PathBuf, Output)> {
            let path = weights.with_extension(extension);
            let out = Output::file(&path, "--out", inputs)?;
            Ok((path, out))
        };
        Ok(Files {
            json: file("marglik.json")?,
            prior: file("prior.safetensors")?,
        })
    }

    /// The learned hyperparameters, the phase kept and the evidence per
    /// phase.
    pub fn summary(&self, online: &OnlineMarglik<'_>, params: &ParamStore) -> serde_json::Value {
        let o = online.options();
        let phases: Vec<serde_json::Value> = online
            .phases()
            .iter()
            .map(|p| {
                serde_json::json!({
                    "epoch": p.epoch,
                    "log_marginal_likelihood": p.log_marginal_likelihood,
                    "prior_precision": p.prior_precision,
                    "sigma": p.sigma,
                })
            })
            .collect();
        let kept = online.kept().map(|k| &online.phases()[k]);
        let names: Vec<&str> = params.iter().map(|(n, _)| n).collect();
        let prior = online.prior();
        let prior_file = self.prior.0.file_name().map(|f| f.to_string_lossy());
        serde_json::json!({
            "likelihood": online.likelihood().to_string(),
            "structure": o.structure.to_string(),
            "prior_shape": o.prior_shape.to_string(),
            "parameters": names,
            "prior_precision": (prior.shape != PriorShape::Diagonal).then_some(&prior.values),
            "prior_file": prior_file,
            "sigma": online.sigma(),
            "temperature": o.temperature,
            "keep": o.keep.to_string(),
            "kept_epoch": kept.map(|p| p.epoch),
            "log_marginal_likelihood": kept.map(|p| p.log_marginal_likelihood),
            "every": o.every,
            "steps": o.steps,
            "burnin": o.burnin,
            "lr": o.lr,
            "phases": phases,
        })
    }

    /// Writes `summary` (of `online`) and the kept prior over `params`, and
    /// prints the training log's line.
    pub fn write(
        self,
        online: &OnlineMarglik<'_>,
        summary: &serde_json::Value,
        params: &ParamStore,
    ) -> anyhow::Result<()> {
        let (json, json_out) = self.json;
        let (prior_path, prior_out) = self.prior;
        let learned = LearnedPrior::new(
            online.likelihood(),
            online.prior(),
            params,
            online.sigma(),
            online.options().temperature,
        );
        // Both written before either is committed: no file without the other.
        let (prior_staged, json_staged) = (prior_out.stage()?, json_out.stage()?);
        learned.save(&prior_staged.file_path(), params)?;
        std::fs::write(
            json_staged.file_path(),
            serde_json::to_string_pretty(summary)? + "\n",
        )?;
        prior_staged.commit()?;
        json_staged.commit()?;
        let phases = online.phases();
        let evidence = |p: Option<&Phase>| p.map_or(f64::NAN, |p| p.log_marginal_likelihood);
        let kept = online.kept().map(|k| &phases[k]);
        let values = &online.prior().values;
        let prior = match online.prior().shape {
            PriorShape::Diagonal => {
                let (low, high) = values
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                        (l.min(*v), h.max(*v))
                    });
                format!("{} values in [{low:.4}, {high:.4}]", values.len())
            }
            _ => {
                let each: Vec<String> = values.iter().map(|v| format!("{v:.4}")).collect();
                format!("[{}]", each.join(", "))
            }
        };
        let sigma = match online.likelihood() {
            Likelihood::Regression => format!(", σ {:.4}", online.sigma()),
            Likelihood::Classification => String::new(),
        };
        println!(
            "online marginal likelihood: {} phases, log marginal likelihood {:.4} → {:.4}; \
             kept ({}) the phase of epoch {} at {:.4}; prior precision {prior}{sigma}; \
             written to {} and {}",
            phases.len(),
            evidence(phases.first()),
            evidence(phases.last()),
            online.options().keep,
            kept.map_or(0, |p| p.epoch),
            evidence(kept),
            json.display(),
            prior_path.display(),
        );
        Ok(())
    }
}
