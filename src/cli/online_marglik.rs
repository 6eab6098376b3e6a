//! The flags of `secondo train --online-marglik` and the hyperparameters
//! file it writes beside the weights.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use secondo::laplace::online::{OnlineMarglik, OnlineOptions};
use secondo::laplace::{Likelihood, PriorShape, Structure};
use secondo::nn::ParamStore;
use secondo::output::Output;
use secondo::train::{OptimizerChoice, TrainConfig};

use super::common::at_least_one;

/// Online marginal-likelihood training (Immer et al. 2021, laplace-torch's
/// `marglik_training`): the weight decay becomes a learned prior.
#[derive(Debug, Args, serde::Serialize)]
pub struct OnlineMarglikArgs {
    /// Learn the prior precision δ (the weight decay, δ/N on the mean loss) and, with --loss mse, the noise σ by ascending the Laplace log marginal likelihood between epochs (Immer et al. 2021); writes them and the evidence per phase beside the weights, --out with the extension .marglik.json (w.safetensors → w.marglik.json).
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
    /// Prior precisions of --online-marglik: scalar or layer (one per parameter tensor) [default: layer].
    #[arg(long, value_name = "SHAPE")]
    marglik_prior_shape: Option<String>,
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
            Some("scalar") => PriorShape::Scalar,
            Some("layer") => PriorShape::PerLayer,
            Some(text) => bail!("--marglik-prior-shape '{text}': expected scalar or layer"),
        };
        let lr = self.marglik_lr.unwrap_or(defaults.lr);
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--marglik-lr must be positive and finite, got {lr}");
        }
        let options = OnlineOptions {
            every: self.marglik_every.unwrap_or(defaults.every),
            steps: self.marglik_steps.unwrap_or(defaults.steps),
            burnin: self.marglik_burnin.unwrap_or(defaults.burnin),
            structure,
            lr,
            prior_shape,
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
        ]
        .iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| *flag)
        .collect()
    }
}

/// Where the hyperparameters go: beside the weights, `W.safetensors` →
/// `W.marglik.json`.
pub fn hyperparameters_path(weights: &Path) -> PathBuf {
    weights.with_extension("marglik.json")
}

/// The learned hyperparameters and the evidence per phase.
pub fn summary(online: &OnlineMarglik<'_>, params: &ParamStore) -> serde_json::Value {
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
    let names: Vec<&str> = params.iter().map(|(n, _)| n).collect();
    serde_json::json!({
        "likelihood": online.likelihood().to_string(),
        "structure": o.structure.to_string(),
        "prior_shape": match o.prior_shape {
            PriorShape::Scalar => "scalar",
            _ => "layer",
        },
        "parameters": names,
        "prior_precision": online.prior().values,
        "sigma": online.sigma(),
        "log_marginal_likelihood": online.phases().last().map(|p| p.log_marginal_likelihood),
        "every": o.every,
        "steps": o.steps,
        "burnin": o.burnin,
        "lr": o.lr,
        "phases": phases,
    })
}

/// Writes `summary` (of `online`) through `out` and prints the training
/// log's line.
pub fn write(
    online: &OnlineMarglik<'_>,
    summary: &serde_json::Value,
    out: Output,
    path: &Path,
) -> anyhow::Result<()> {
    let staged = out.stage()?;
    std::fs::write(
        staged.file_path(),
        serde_json::to_string_pretty(summary)? + "\n",
    )?;
    staged.commit()?;
    let phases = online.phases();
    let evidence = |p: Option<&secondo::laplace::online::Phase>| {
        p.map_or(f64::NAN, |p| p.log_marginal_likelihood)
    };
    let prior: Vec<String> = online
        .prior()
        .values
        .iter()
        .map(|v| format!("{v:.4}"))
        .collect();
    let sigma = match online.likelihood() {
        Likelihood::Regression => format!(", σ {:.4}", online.sigma()),
        Likelihood::Classification => String::new(),
    };
    println!(
        "online marginal likelihood: {} phases, log marginal likelihood {:.4} → {:.4}; \
         prior precision [{}]{sigma}; written to {}",
        phases.len(),
        evidence(phases.first()),
        evidence(phases.last()),
        prior.join(", "),
        path.display()
    );
    Ok(())
}
