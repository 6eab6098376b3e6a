//! `linear(in,out)`: `y = x Wᵀ + b` over the last axis.

use secondo_graph::Var;

use super::Build;
use crate::NnError;

/// The layer at `path` on `x` `[N, ..., in]`; a tap is recorded for a
/// `[N, in]` input (what KFAC's factors and the diagonal fast path use).
pub(crate) fn forward<'b>(
    build: &mut Build<'b, '_>,
    path: &str,
    x: Var<'b>,
) -> Result<Var<'b>, NnError> {
    let w = build.param(path, "weight")?;
    let rank = x.shape().len();
    let batch: String = "abcdefgh".chars().take(rank.saturating_sub(1)).collect();
    let z = build
        .builder
        .einsum(&format!("{batch}i,oi->{batch}o"), &[x, w]);
    let z = match build.maybe_param(path, "bias") {
        Some(bias) => z + bias,
        None => z,
    };
    if rank == 2 {
        build.tap(path, x, z);
    }
    Ok(z)
}
