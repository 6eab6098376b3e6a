//! The per-sample loss terms and their directional derivatives along a
//! given step, `ℓ_n` and `∇ℓ_n · d`, from one forward pass with a tangent
//! (a `jvp` of the loss terms): what α needs at both ends of a step, without
//! per-sample gradients.

use std::collections::HashMap;

use secondo_curvature::{batch_feeds, Objective, INPUT, TARGET};
use secondo_graph::{Builder, Executable, Var};
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use crate::Error;

/// Prefix of the tangent inputs.
const TANGENT: &str = "direction/";

/// Compiled programs by batch size.
#[derive(Default)]
pub(super) struct DirectionalPrograms {
    cache: HashMap<usize, Executable>,
}

impl DirectionalPrograms {
    /// `(ℓ_n, ∇ℓ_n · d)` for every sample of `(x, y)` at `params`, with `d`
    /// given per parameter.
    pub(super) fn run(
        &mut self,
        objective: &Objective,
        params: &ParamStore,
        x: &Tensor,
        y: &Tensor,
        direction: &[Vec<f64>],
    ) -> Result<(Vec<f64>, Vec<f64>), Error> {
        let n = x.shape()[0];
        if let std::collections::hash_map::Entry::Vacant(e) = self.cache.entry(n) {
            e.insert(compile(objective, n)?);
        }
        let mut feeds = batch_feeds(params, x, y);
        for (p, d) in objective.network.params().iter().zip(direction) {
            let t = Tensor::from_f64(p.shape.clone(), d, objective.dtype)
                .map_err(|e| Error::Invalid(format!("the step of parameter '{}': {e}", p.name)))?;
            feeds.insert(&format!("{TANGENT}{}", p.name), t);
        }
        let out = self.cache[&n].run(&feeds)?;
        Ok((out[0].to_f64_vec(), out[1].to_f64_vec()))
    }
}

fn compile(objective: &Objective, n: usize) -> Result<Executable, Error> {
    let b = Builder::new(objective.dtype);
    let net = &objective.network;
    let mut shape = vec![n];
    shape.extend_from_slice(net.input_shape());
    let x = b.input(INPUT, &shape);
    let out_shape = [n, net.output_shape()[0]];
    let y = b.input(TARGET, &objective.loss.target_shape(&out_shape));
    let params = net.param_vars(&b);
    let tangents: Vec<Var> = net
        .params()
        .iter()
        .map(|p| b.input(&format!("{TANGENT}{}", p.name), &p.shape))
        .collect();
    let f = net.forward_with(x, &params, objective.batchnorm)?.output;
    let terms = objective.loss.per_sample(f, y)?;
    let slopes = b.jvp(&[terms], &params, &tangents)?[0];
    Ok(Executable::compile(
        &b.finish()?,
        &[terms.id(), slopes.id()],
    )?)
}
