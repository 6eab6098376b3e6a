//! Normalization layers with PyTorch's semantics: `batchnorm1d/2d` (batch
//! statistics in training mode, running statistics in evaluation mode) and
//! `layernorm` (over the last axis). PyTorch's ε is 1e-5 for both.

use secondo_graph::Var;

use super::{BatchStats, Build};
use crate::NnError;

/// PyTorch's default ε.
const EPS: f64 = 1e-5;

/// `batchnorm1d` on `[N, C]` or `[N, C, L]`, `batchnorm2d` on `[N, C, H, W]`:
/// per channel `γ (x − μ) / √(σ² + ε) + β`, with `μ, σ²` the running
/// statistics (evaluation) or the batch's mean and biased variance over
/// every axis but the channel's (training, which also records the batch
/// statistics for the running update).
pub(crate) fn batch_norm<'b>(
    build: &mut Build<'b, '_>,
    path: &str,
    x: Var<'b>,
) -> Result<Var<'b>, NnError> {
    let shape = x.shape();
    let c = shape[1];
    // The per-channel vector `[C]` as a `[C, 1, ...]` node that lines up
    // with the trailing axes of `x`.
    let per_channel = |v: Var<'b>| {
        let mut column = vec![c];
        column.resize(shape.len() - 1, 1);
        v.reshape(&column).broadcast_to(&shape[1..])
    };
    let gamma = build.param(path, "weight")?;
    let beta = build.param(path, "bias")?;
    let (centred, inv_std) = match build.mode.uses_batch_statistics() {
        false => {
            let mean = build.buffer(path, "running_mean", &[c]);
            let var = build.buffer(path, "running_var", &[c]);
            (x - per_channel(mean), (var + EPS).powf(-0.5))
        }
        true => {
            let axes: Vec<usize> = (0..shape.len()).filter(|&a| a != 1).collect();
            let count: usize = axes.iter().map(|&a| shape[a]).product();
            let mean = x.mean(&axes);
            let centred = x - per_channel(mean);
            let var = centred.square().mean(&axes);
            build.stats.push(BatchStats {
                layer: path.to_owned(),
                mean,
                var: var * (count as f64 / (count.max(2) - 1) as f64),
                count,
            });
            (centred, (var + EPS).powf(-0.5))
        }
    };
    Ok(centred * per_channel(inv_std * gamma) + per_channel(beta))
}

/// `layernorm(n)` on `[N, ..., n]`: `γ (x − μ) / √(σ² + ε) + β` with the
/// mean and biased variance of each sample's last axis.
pub(crate) fn layer_norm<'b>(
    build: &mut Build<'b, '_>,
    path: &str,
    x: Var<'b>,
) -> Result<Var<'b>, NnError> {
    let shape = x.shape();
    let last = shape.len() - 1;
    let mut keep = shape.clone();
    keep[last] = 1;
    let spread = |v: Var<'b>| v.reshape(&keep).broadcast_to(&shape);
    let centred = x - spread(x.mean(&[last]));
    let inv_std = (centred.square().mean(&[last]) + EPS).powf(-0.5);
    let gamma = build.param(path, "weight")?;
    let beta = build.param(path, "bias")?;
    Ok(centred * spread(inv_std) * gamma + beta)
}
