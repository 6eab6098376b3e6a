//! The flags of `secondo train` for second-order optimizers.

use clap::Args;
use secondo::curvature::Curvature;
use secondo::monitor::Threshold;
use secondo::second_order::{Method, SecondOrderConfig, Structure};
use secondo::train::{FirstPhase, Mixed, OptimizerChoice, Switch};

/// The first-order hyperparameters `train` takes for SGD and Adam.
#[derive(Debug, Clone, Copy)]
pub struct FirstOrder {
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

use super::common::at_least_one;

/// Hyperparameters of `--optimizer newton-cg|kfac|ekfac|ngd|ef|fractional-ngd|det-avg`
/// (each method's default when not given).
#[derive(Debug, Args, serde::Serialize)]
pub struct SecondOrderArgs {
    /// Initial (or, without --adapt-damping, fixed) Tikhonov damping λ added to the curvature (second-order optimizers).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    damping: Option<f64>,
    /// Adapt the damping by the Levenberg–Marquardt rule on the reduction ratio ρ (×3/2 when ρ < 1/4, ×2/3 when ρ > 3/4); all but newton-cg then also take learning rate and momentum from the quadratic model (Martens & Grosse §7), rejecting steps that raise the loss.
    #[arg(long)]
    adapt_damping: bool,
    /// Curvature of a second-order optimizer: ggn, hessian, fisher (one Monte-Carlo sample) or ef (empirical Fisher).
    #[arg(long)]
    curvature: Option<String>,
    /// Samples of each training batch the curvature is estimated on (default: the whole batch).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    curvature_batch: Option<usize>,
    /// Recompute the preconditioner's inverses (eigendecompositions) every T steps.
    #[arg(long, value_name = "T", value_parser = at_least_one)]
    inverse_every: Option<usize>,
    /// Weight of the past in the moving averages of the curvature factors, in [0, 1).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    ema: Option<f64>,
    /// The exponent α ∈ (0, 1] of the preconditioner (C + λI)^(-α): 1 Newton/natural gradient, 1/2 its square root.
    #[arg(long, value_name = "A", allow_negative_numbers = true)]
    power: Option<f64>,
    /// Most conjugate-gradient iterations per newton-cg step.
    #[arg(long, value_name = "K", value_parser = at_least_one)]
    cg_iters: Option<usize>,
    /// Preconditioner of newton-cg's CG: none, or diag for Martens' (diag(C) + λI)^0.75 with the diagonal of --curvature on the curvature batch (needs --damping > 0).
    #[arg(long, value_name = "none|diag")]
    cg_precondition: Option<String>,
    /// Curvature structure: fractional-ngd's kronecker (the KFAC eigenbasis, default), matrix-free ((C + λI)^(-α) g by Lanczos on the exact --curvature operator of the batch) or lowrank:K (also ngd and ef: the top K eigenpairs of the --curvature operator by Lanczos every --inverse-every steps, the rest of the spectrum as one Hutchinson estimate of its mean eigenvalue); det-avg's sub-sampled estimates, dense (default) or kronecker (KFAC's blocks per sub-sample, each weighted by det(B ⊗ A + λI) = Π(b_i a_j + λ) from the factors' eigenvalues; fisher or ggn).
    #[arg(long, value_name = "kronecker|matrix-free|dense|lowrank:K")]
    structure: Option<String>,
    /// Rademacher probes (curvature products) of the bulk estimate of --structure lowrank:K, per refresh (default 8).
    #[arg(long, value_name = "P", value_parser = at_least_one)]
    bulk_probes: Option<usize>,
    /// det-avg: weight the sub-sampled estimates of the last M refreshes together by their determinants, a momentum for Newton steps (default 1: the current refresh alone).
    #[arg(long, value_name = "M", value_parser = at_least_one)]
    det_avg_window: Option<usize>,
    /// Lanczos steps (curvature products) per step of --structure matrix-free (default 50).
    #[arg(long, value_name = "K", value_parser = at_least_one)]
    lanczos_steps: Option<usize>,
    /// Clip every second-order step to this norm (trust region; default unbounded).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    trust_radius: Option<f64>,
    /// Late-phase training: run --first-order-optimizer for the first N epochs or steps, then --optimizer.
    #[arg(long, value_name = "epoch=N|step=N")]
    switch_at: Option<String>,
    /// Late-phase training: run --first-order-optimizer until a tracked instrument's record meets INSTRUMENT<X or INSTRUMENT>X (quote it; e.g. 'grad_norm<0.05', 'alpha>0.5'), then --optimizer from the next step; the instrument is tracked even if --monitor leaves it out.
    #[arg(long, value_name = "INSTRUMENT<X", conflicts_with = "switch_at")]
    switch_when: Option<String>,
    /// Mixed training: --optimizer for the parameters matching these comma-separated name patterns (* any characters), --first-order-optimizer for the rest.
    #[arg(long, value_name = "PATTERN")]
    second_order: Option<String>,
    /// The optimizer of --switch-at's first phase and of the parameters --second-order leaves (sgd, adam or adamw; --momentum, --nesterov and --weight-decay apply to it).
    #[arg(long, value_name = "NAME")]
    first_order_optimizer: Option<String>,
    /// Learning rate of --first-order-optimizer (default: its own default).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    first_order_lr: Option<f64>,
    /// KL-clipping bound κ of kfac, ekfac and fractional-ngd (default 1e-2).
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    kl_clip: Option<f64>,
}

impl SecondOrderArgs {
    /// The flags given, for refusing them with a first-order optimizer.
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("--damping", self.damping.is_some()),
            ("--adapt-damping", self.adapt_damping),
            ("--curvature", self.curvature.is_some()),
            ("--curvature-batch", self.curvature_batch.is_some()),
            ("--inverse-every", self.inverse_every.is_some()),
            ("--ema", self.ema.is_some()),
            ("--power", self.power.is_some()),
            ("--cg-iters", self.cg_iters.is_some()),
            ("--cg-precondition", self.cg_precondition.is_some()),
            ("--structure", self.structure.is_some()),
            ("--det-avg-window", self.det_avg_window.is_some()),
            ("--lanczos-steps", self.lanczos_steps.is_some()),
            ("--bulk-probes", self.bulk_probes.is_some()),
            ("--trust-radius", self.trust_radius.is_some()),
            ("--kl-clip", self.kl_clip.is_some()),
            ("--switch-at", self.switch_at.is_some()),
            ("--switch-when", self.switch_when.is_some()),
            ("--second-order", self.second_order.is_some()),
        ]
        .iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| *flag)
        .collect()
    }

    /// The first-order optimizer of `--switch-at` and `--second-order`,
    /// from the common first-order hyperparameters; refuses one without the
    /// other.
    fn first_order(&self, common: FirstOrder) -> anyhow::Result<Option<OptimizerChoice>> {
        let wanted = self.switch().is_some() || self.second_order.is_some();
        let Some(name) = self.first_order_optimizer.as_deref() else {
            if let Some((flag, _)) = self.switch() {
                anyhow::bail!("{flag} needs --first-order-optimizer (sgd, adam or adamw)");
            }
            if wanted {
                anyhow::bail!("--second-order needs --first-order-optimizer (sgd, adam or adamw)");
            }
            if self.first_order_lr.is_some() {
                anyhow::bail!("--first-order-lr needs --first-order-optimizer");
            }
            return Ok(None);
        };
        if !wanted {
            anyhow::bail!(
                "--first-order-optimizer needs --switch-at, --switch-when or --second-order"
            );
        }
        if Method::parse(name).is_some() {
            anyhow::bail!("--first-order-optimizer {name}: expected sgd, adam or adamw");
        }
        let lr = self
            .first_order_lr
            .unwrap_or_else(|| OptimizerChoice::default_lr(name));
        Ok(Some(OptimizerChoice::parse(
            name,
            lr,
            common.momentum,
            common.nesterov,
            common.weight_decay,
        )?))
    }

    /// The late-phase flag given, with its value.
    fn switch(&self) -> Option<(&'static str, &str)> {
        match (&self.switch_at, &self.switch_when) {
            (Some(at), _) => Some(("--switch-at", at)),
            (None, Some(when)) => Some(("--switch-when", when)),
            (None, None) => None,
        }
    }

    /// What late-phase training did, for the run's summary: when
    /// `optimizer` took over from the first phase, or that it never did.
    pub fn late_phase_line(&self, optimizer: &str, switched_at: Option<usize>) -> Option<String> {
        let (flag, value) = self.switch()?;
        let first = self.first_order_optimizer.as_deref().unwrap_or("?");
        Some(match switched_at {
            Some(step) => {
                format!("switched from {first} to {optimizer} at step {step} ({flag} {value})")
            }
            None => format!("never switched ({flag} {value}): {first} ran throughout"),
        })
    }

    /// The first-order phase of `--switch-at` or `--switch-when` and the
    /// parameter split of `--second-order`, where given.
    pub fn schedule(
        &self,
        common: FirstOrder,
    ) -> anyhow::Result<(Option<FirstPhase>, Option<Mixed>)> {
        let Some(optimizer) = self.first_order(common)? else {
            return Ok((None, None));
        };
        let until = match (&self.switch_at, &self.switch_when) {
            (Some(at), _) => Some(Switch::parse(at)?),
            (None, Some(when)) => Some(Switch::When(Threshold::parse(when)?)),
            (None, None) => None,
        };
        let phase = until.map(|until| FirstPhase { optimizer, until });
        let mixed = self.second_order.as_ref().map(|patterns| Mixed {
            second_order: patterns.clone(),
            first_order: optimizer,
        });
        Ok((phase, mixed))
    }

    /// `config` with the flags given, checked.
    pub fn apply(&self, config: SecondOrderConfig) -> anyhow::Result<SecondOrderConfig> {
        let curvature = match &self.curvature {
            Some(c) => c
                .parse::<Curvature>()
                .map_err(|e| anyhow::anyhow!("--curvature: {e}"))?,
            None => config.curvature,
        };
        let cg_precondition = match &self.cg_precondition {
            Some(p) => p.parse()?,
            None => config.cg_precondition,
        };
        let structure = match &self.structure {
            Some(s) => s.parse()?,
            None => config.structure,
        };
        if self.lanczos_steps.is_some() && structure != Structure::MatrixFree {
            anyhow::bail!("--lanczos-steps applies to --structure matrix-free");
        }
        if self.bulk_probes.is_some() && !matches!(structure, Structure::LowRank(_)) {
            anyhow::bail!("--bulk-probes applies to --structure lowrank:K");
        }
        let c = SecondOrderConfig {
            damping: self.damping.unwrap_or_else(|| {
                SecondOrderConfig::default_damping(config.method, self.adapt_damping)
            }),
            adapt_damping: self.adapt_damping,
            curvature,
            curvature_batch: self.curvature_batch.or(config.curvature_batch),
            inverse_every: self.inverse_every.unwrap_or(config.inverse_every),
            ema: self.ema.unwrap_or(config.ema),
            power: self.power.unwrap_or(config.power),
            cg_iters: self.cg_iters.unwrap_or(config.cg_iters),
            cg_precondition,
            structure,
            det_avg_window: self.det_avg_window.unwrap_or(config.det_avg_window),
            lanczos_steps: self.lanczos_steps.unwrap_or(config.lanczos_steps),
            bulk_probes: self.bulk_probes.unwrap_or(config.bulk_probes),
            trust_radius: self.trust_radius.or(config.trust_radius),
            kl_clip: self.kl_clip.or(config.kl_clip),
            ..config
        };
        c.validate()?;
        Ok(c)
    }
}
