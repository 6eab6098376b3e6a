//! The linearized predictive's covariance from per-sample Jacobians kept
//! as Kronecker products: a linear layer `zₙ = W aₙ + b` has `∂fₙ/∂W =
//! Gₙ ⊗ aₙᵀ` and `∂fₙ/∂b = Gₙ`, with `Gₙ = ∂fₙ/∂zₙ` (`C × O`), which the
//! engine gives for every layer at once (`vmap` over the output units of
//! one `vjp` to the layer outputs, as KFLR backpropagates its columns).
//! Against a diagonal or Kronecker-factored posterior block (Ritter et al.
//! 2018; laplace-torch's `functional_variance` multiplies full Jacobians
//! instead) `Jₙ P⁻¹ Jₙᵀ = Σₖ Hₙ[:,k] Hₙ[:,k]ᵀ tₙₖ` with `H = G Q_Bᵀ` and
//! `tₙₖ = Σₗ (Q_A aₙ)ₗ² / μₖₗ` (`Q_B = Q_A = I` for a diagonal block):
//! `N·(C·O² + I² + O·I + C²·O)` multiply-adds per layer instead of the
//! `N·C·O·I·(O + I)` of changing the basis of full Jacobian rows.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use secondo_curvature::{Objective, INPUT};
use secondo_data::Dataset;
use secondo_graph::{Builder, Executable, Feeds};
use secondo_nn::{Mode, ParamStore};
use secondo_tensor::Tensor;

use super::{Laplace, Posterior};
use crate::Error;

/// Most numbers one batch's `G` may hold (2²², 32 MiB in f64).
const BUDGET: usize = 1 << 22;

/// A covered tensor: which layer output its Jacobian is backpropagated
/// to, and whether it is a weight (times the layer input) or a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Factor {
    /// The index of the layer among the distinct covered layers.
    layer: usize,
    weight: bool,
}

/// The covered linear layers, when every covered tensor is the weight or
/// bias of a linear layer (no convolution) and the posterior is diagonal
/// or Kronecker-factored per tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactoredJacobians {
    /// The distinct layers' state_dict paths, in the network's order.
    layers: Vec<String>,
    /// Their output widths.
    widths: Vec<usize>,
    /// One per covered tensor, in order.
    factors: Vec<Factor>,
}

impl FactoredJacobians {
    /// The factored form of `la`'s Jacobians, or `None` where it does not
    /// apply (then the generic per-sample Jacobians do): a mask, a
    /// structure coupling tensors (full, low-rank), a tensor of no linear
    /// layer.
    pub fn of(objective: &Objective, la: &Laplace) -> Result<Option<FactoredJacobians>, Error> {
        use super::Structure;
        if la.mask.is_some() || !matches!(la.structure, Structure::Diag | Structure::Kron) {
            return Ok(None);
        }
        let net = &objective.network;
        let b = Builder::new(objective.dtype);
        let mut one = vec![1];
        one.extend_from_slice(net.input_shape());
        let forward = net.forward_with(b.input(INPUT, &one), &net.param_vars(&b), Mode::Eval)?;
        let (mut layers, mut widths, mut factors) = (Vec::new(), Vec::new(), Vec::new());
        for name in &la.names {
            let Some((layer, kind)) = name.rsplit_once('.') else {
                return Ok(None);
            };
            let tap = forward
                .taps
                .iter()
                .find(|t| t.layer == layer && !t.is_spatial());
            let (Some(tap), "weight" | "bias") = (tap, kind) else {
                return Ok(None);
            };
            if layers.last().is_none_or(|l: &String| l != layer) {
                layers.push(layer.to_string());
                widths.push(tap.output.shape()[1]);
            }
            factors.push(Factor {
                layer: layers.len() - 1,
                weight: kind == "weight",
            });
        }
        Ok(Some(FactoredJacobians {
            layers,
            widths,
            factors,
        }))
    }

    /// The linearized predictive's output means `[N, C]` and covariances
    /// `[N, C, C]`, as [`super::predictive::glm_moments`] computes them from
    /// full Jacobians.
    pub fn glm_moments(
        &self,
        objective: &Objective,
        params: &ParamStore,
        posterior: &Posterior,
        data: &Dataset,
        batch_size: usize,
    ) -> Result<(Vec<f64>, Vec<f64>), Error> {
        let c = objective.network.output_shape()[0];
        let mut feeds = Feeds::new();
        for (name, t) in params.iter().chain(params.buffers()) {
            feeds.insert(name, t.clone());
        }
        let mut programs: HashMap<usize, Executable> = HashMap::new();
        let (mut f_mu, mut f_var) = (Vec::new(), Vec::new());
        let per_sample = c * self.widths.iter().sum::<usize>();
        let chunk = (BUDGET / per_sample.max(1)).clamp(1, batch_size);
        for batch in data.batches(chunk)? {
            let n = batch.len();
            let exe = match programs.entry(n) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(self.program(objective, n)?),
            };
            let (x, _) = objective.batch_tensors(&batch)?;
            feeds.insert(INPUT, x);
            let values: Vec<Vec<f64>> = exe.run(&feeds)?.iter().map(Tensor::to_f64_vec).collect();
            let k = self.layers.len();
            let mut cov = vec![0.0; n * c * c];
            let (mut block, mut offset) = (0, 0);
            for factor in &self.factors {
                let g = &values[factor.layer];
                let out = g.len() / (c * n);
                let input = match factor.weight {
                    true => values[k + factor.layer].clone(),
                    false => vec![1.0; n],
                };
                let inputs = input.len() / n;
                let size = out * inputs;
                // The block holding this tensor's weights.
                while offset >= posterior.blocks[block].dim() {
                    offset -= posterior.blocks[block].dim();
                    block += 1;
                }
                let part = posterior.blocks[block].kronecker_rows_covariance(
                    offset,
                    (out, inputs),
                    g,
                    &input,
                    n,
                    c,
                )?;
                cov.iter_mut().zip(part).for_each(|(a, b)| *a += b);
                offset += size;
            }
            f_var.extend(cov);
            f_mu.extend(values[2 * k].iter().copied());
        }
        Ok((f_mu, f_var))
    }

    /// For batches of `n`: `G` per layer (`[C, n, O]`), the layer inputs
    /// (`[n, I]`), then the outputs (`[n, C]`).
    fn program(&self, objective: &Objective, n: usize) -> Result<Executable, Error> {
        let net = &objective.network;
        let c = net.output_shape()[0];
        let b = Builder::new(objective.dtype);
        let params = net.param_vars(&b);
        let mut shape = vec![n];
        shape.extend_from_slice(net.input_shape());
        let forward = net.forward_with(b.input(INPUT, &shape), &params, Mode::Eval)?;
        let taps: Vec<_> = self
            .layers
            .iter()
            .map(|l| {
                forward
                    .taps
                    .iter()
                    .find(|t| &t.layer == l)
                    .expect("a linear layer's tap")
            })
            .collect();
        let u = b.input("factored/u", &[n, c]);
        let outputs: Vec<_> = taps.iter().map(|t| t.output).collect();
        let g = b.vjp(&[forward.output], &[u], &outputs)?;
        let units: Vec<f64> = (0..c)
            .flat_map(|k| {
                (0..n).flat_map(move |_| (0..c).map(move |j| f64::from(u8::from(j == k))))
            })
            .collect();
        let units = b.constant(
            Tensor::from_f64(vec![c, n, c], &units, objective.dtype).expect("c·n·c values"),
        );
        let mut ids: Vec<usize> = b
            .vmap(&g, &[u], &[units], c)?
            .iter()
            .map(|v| v.id())
            .collect();
        ids.extend(taps.iter().map(|t| t.input.id()));
        ids.push(forward.output.id());
        Ok(Executable::compile(&b.finish()?, &ids)?)
    }
}
