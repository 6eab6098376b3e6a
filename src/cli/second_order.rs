//! The flags of `secondo train` for second-order optimizers.

use clap::Args;
use secondo::curvature::Curvature;
use secondo::second_order::SecondOrderConfig;

use super::common::at_least_one;

/// Hyperparameters of `--optimizer newton-cg|kfac|ekfac|ngd|ef|fractional-ngd`
/// (each method's default when not given).
#[derive(Debug, Args)]
pub struct SecondOrderArgs {
    /// Initial (or, without --adapt-damping, fixed) Tikhonov damping λ added to the curvature (second-order optimizers).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    damping: Option<f64>,
    /// Adapt the damping by the Levenberg–Marquardt rule on the reduction ratio ρ (×3/2 when ρ < 1/4, ×2/3 when ρ > 3/4).
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
    /// Clip every second-order step to this norm (trust region; default unbounded).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    trust_radius: Option<f64>,
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
            ("--trust-radius", self.trust_radius.is_some()),
            ("--kl-clip", self.kl_clip.is_some()),
        ]
        .iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| *flag)
        .collect()
    }

    /// `config` with the flags given, checked.
    pub fn apply(&self, config: SecondOrderConfig) -> anyhow::Result<SecondOrderConfig> {
        let curvature = match &self.curvature {
            Some(c) => c
                .parse::<Curvature>()
                .map_err(|e| anyhow::anyhow!("--curvature: {e}"))?,
            None => config.curvature,
        };
        let c = SecondOrderConfig {
            damping: self.damping.unwrap_or(config.damping),
            adapt_damping: self.adapt_damping,
            curvature,
            curvature_batch: self.curvature_batch.or(config.curvature_batch),
            inverse_every: self.inverse_every.unwrap_or(config.inverse_every),
            ema: self.ema.unwrap_or(config.ema),
            power: self.power.unwrap_or(config.power),
            cg_iters: self.cg_iters.unwrap_or(config.cg_iters),
            trust_radius: self.trust_radius.or(config.trust_radius),
            kl_clip: self.kl_clip.or(config.kl_clip),
            ..config
        };
        c.validate()?;
        Ok(c)
    }
}
