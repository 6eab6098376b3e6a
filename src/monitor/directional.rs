//! The per-sample loss terms and their directional derivatives along a
//! given step, `ℓ_n` and `∇ℓ_n · d`, from one forward pass with a tangent
//! (a `jvp` of the loss terms): what α needs at both ends of a step, without
//! per-sample gradients.

use std::collections::HashMap;

use secondo_curvature::{batch_feeds, directional_terms, Objective, TANGENT};
use secondo_graph::Executable;
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use crate::Error;

/// Compiled programs by batch size.
#[derive(Default)]
pub(super) struct DirectionalPrograms {
    cache: HashMap<usize, Executable>,
}

impl DirectionalPrograms {
    /// `(ℓ_n, ∇ℓ_n · d)` for every sample of `(x, y)` at `params`, with `d`
    /// given per parameter (in the parameters' dtype).
    pub(super) fn run(
        &mut self,
        objective: &Objective,
        params: &ParamStore,
        x: &Tensor,
        y: &Tensor,
        direction: &[Tensor],
    ) -> Result<(Vec<f64>, Vec<f64>), Error> {
        let n = x.shape()[0];
        if let std::collections::hash_map::Entry::Vacant(e) = self.cache.entry(n) {
            e.insert(directional_terms(objective, n)?);
        }
        let mut feeds = batch_feeds(params, x, y);
        for (p, d) in objective.network.params().iter().zip(direction) {
            feeds.insert(&format!("{TANGENT}{}", p.name), d.clone());
        }
        let out = self.cache[&n].run(&feeds)?;
        Ok((out[0].to_f64_vec(), out[1].to_f64_vec()))
    }
}
