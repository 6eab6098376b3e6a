//! Closed forms for a last linear layer `f = W φ + b` (Kristiadi et al.
//! 2020; laplace-torch's `LLLaplace` computes the same from its backends'
//! Jacobians). With the layer's input `φₙ` (the features) extended by a 1
//! for the bias, `φ̃ₙ`, the Jacobian of the outputs in `(W, b)` is `Jₙ =
//! I_C ⊗ φ̃ₙᵀ`, so one forward pass to the features gives
//! - the GGN `Σₙ Λₙ ⊗ φ̃ₙφ̃ₙᵀ`, `Λₙ` the curvature of `−log p` in the outputs
//!   ([`Likelihood::output_curvature`]; `rₙrₙᵀ` for the empirical Fisher),
//!   a diagonal plus a rank-one term: about `N·(C·F)²` multiply-adds (one
//!   `[N, C·F]` Gram matrix), where `Σₙ Jₙᵀ Λₙ Jₙ` from per-sample
//!   Jacobians or one operator product per weight costs `N·C·(C·F)²`;
//! - the linearized predictive's `Jₙ P⁻¹ Jₙᵀ = (Jₙ M)(Jₙ M)ᵀ` for `M Mᵀ =
//!   P⁻¹` ([`Posterior::whitening`]), `Jₙ M` being `φ̃ₙᵀ` times the rows of
//!   `M` of each class: one `[n, F̃] × [F̃, C·width]` product per batch
//!   instead of `[n·C, C·F̃] × [C·F̃, width]`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use secondo_curvature::{Objective, INPUT};
use secondo_data::{Batch, Dataset};
use secondo_graph::{Builder, Executable, Feeds};
use secondo_nn::{Mode, ParamStore};
use secondo_tensor::{einsum, Tensor};

use super::likelihood::{Fisher, Likelihood};
use super::Posterior;
use crate::Error;

/// Most numbers one batch's `Jₙ M` may hold (2²², 32 MiB in f64).
const BUDGET: usize = 1 << 22;

/// A last linear layer whose weight (and bias) a Laplace approximation
/// covers, and whose output is the network's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastLayer {
    classes: usize,
    features: usize,
    bias: bool,
}

impl LastLayer {
    /// The layer, when `names` (the covered tensors, in order) are the
    /// weight of the network's last linear layer, optionally with its bias,
    /// whose output is the network's; `None` otherwise (then the generic
    /// per-sample Jacobians apply), and for a `masked` subnetwork.
    pub fn of(
        objective: &Objective,
        names: &[String],
        masked: bool,
    ) -> Result<Option<LastLayer>, Error> {
        let net = &objective.network;
        let b = Builder::new(objective.dtype);
        let params = net.param_vars(&b);
        let mut one = vec![1];
        one.extend_from_slice(net.input_shape());
        let forward = net.forward_with(b.input(INPUT, &one), &params, Mode::Eval)?;
        let Some(tap) = forward.taps.last() else {
            return Ok(None);
        };
        let weight = format!("{}.weight", tap.layer);
        let bias = format!("{}.bias", tap.layer);
        let covered = match names {
            [w] if *w == weight => Some(false),
            [w, b] if *w == weight && *b == bias => Some(true),
            _ => None,
        };
        let shape = tap.input.shape();
        Ok(match covered {
            Some(bias)
                if !masked && !tap.is_spatial() && tap.output.id() == forward.output.id() =>
            {
                Some(LastLayer {
                    classes: tap.output.shape()[1],
                    features: shape[1],
                    bias,
                })
            }
            _ => None,
        })
    }

    /// `F̃`: the features with the bias's 1.
    fn width(&self) -> usize {
        self.features + usize::from(self.bias)
    }

    /// The flat index among the covered weights of `W[c, f]`, or of `b[c]`
    /// for `f` = the number of features.
    fn index(&self, c: usize, f: usize) -> usize {
        match f == self.features {
            true => self.classes * self.features + c,
            false => c * self.features + f,
        }
    }

    /// The dimension `C·F̃`.
    fn dim(&self) -> usize {
        self.classes * self.width()
    }

    /// Runs the network on `data` in batches of at most `batch_size` in
    /// `mode`, handing `visit` each batch with its features `φ̃` (`[n, F̃]`)
    /// and outputs (`[n, C]`), in f64.
    fn for_each_batch(
        &self,
        objective: &Objective,
        params: &ParamStore,
        data: &Dataset,
        batch_size: usize,
        mode: Mode,
        mut visit: impl FnMut(&Batch<'_>, Vec<f64>, Vec<f64>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut programs: HashMap<usize, Executable> = HashMap::new();
        let mut feeds = Feeds::new();
        for (name, t) in params.iter().chain(params.buffers()) {
            feeds.insert(name, t.clone());
        }
        for batch in data.batches(batch_size)? {
            let n = batch.len();
            let exe = match programs.entry(n) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(features_program(objective, n, mode)?),
            };
            let (x, _) = objective.batch_tensors(&batch)?;
            feeds.insert(INPUT, x);
            let values = exe.run(&feeds)?;
            let phi = values[0].to_f64_vec();
            let phi = match self.bias {
                true => phi
                    .chunks(self.features)
                    .flat_map(|row| row.iter().copied().chain([1.0]))
                    .collect(),
                false => phi,
            };
            visit(&batch, phi, values[1].to_f64_vec())?;
        }
        Ok(())
    }

    /// The curvature of `Σₙ −log p(yₙ | f(xₙ))` at σ = 1 in the covered
    /// weights, dense and row-major in their order: `Σₙ Λₙ ⊗ φ̃ₙφ̃ₙᵀ` with
    /// `Λₙ = diag(dₙ) + s·vₙvₙᵀ` ([`Likelihood::output_curvature`]), so two
    /// products per batch: `Σₙ dₙ[c] φ̃ₙφ̃ₙᵀ` for each class's diagonal block
    /// (`[n, C, F̃] × [n, F̃]`) and `s·QᵀQ` with `Qₙ = vₙ ⊗ φ̃ₙ` (`[n, C·F̃]`,
    /// its columns in the weights' order), in the objective's element type
    /// as the engine's products are; batches of `batch_size` (see
    /// [`Self::curvature_batch`]).
    pub fn curvature(
        &self,
        objective: &Objective,
        params: &ParamStore,
        data: &Dataset,
        likelihood: Likelihood,
        fisher: Fisher,
        batch_size: usize,
    ) -> Result<Vec<f64>, Error> {
        let (c, w, dim) = (self.classes, self.width(), self.dim());
        let mut h = vec![0.0; dim * dim];
        let mut blocks = vec![0.0; c * w * w];
        let dtype = objective.dtype;
        let tensor = |shape: Vec<usize>, values: &[f64]| {
            Tensor::from_f64(shape, values, dtype).expect("shape matches values")
        };
        self.for_each_batch(
            objective,
            params,
            data,
            batch_size,
            objective.batchnorm,
            |batch, phi, f| {
                let n = batch.len();
                let (mut scaled, mut q, mut sign) = (Vec::new(), Vec::new(), 0.0);
                for s in 0..n {
                    let lambda =
                        likelihood.output_curvature(fisher, &f[s * c..(s + 1) * c], &batch.y, s);
                    let row = &phi[s * w..(s + 1) * w];
                    if let Some(d) = &lambda.diag {
                        scaled.resize(n * dim, 0.0);
                        outer_into(&mut scaled[s * dim..(s + 1) * dim], d, row);
                    }
                    if let Some((factor, v)) = &lambda.rank_one {
                        sign = *factor;
                        q.resize(n * dim, 0.0);
                        self.weights_row(&mut q[s * dim..(s + 1) * dim], v, row);
                    }
                }
                let phi = tensor(vec![n, w], &phi);
                if !scaled.is_empty() {
                    einsum("nak,ng->akg", &[&tensor(vec![n, c, w], &scaled), &phi])
                        .expect("consistent contraction")
                        .accumulate_into(&mut blocks, 1.0);
                }
                if !q.is_empty() {
                    let q = tensor(vec![n, dim], &q);
                    einsum("nx,ny->xy", &[&q, &q])
                        .expect("consistent contraction")
                        .accumulate_into(&mut h, sign);
                }
                Ok(())
            },
        )?;
        for (a, block) in blocks.chunks(w * w).enumerate() {
            for (kg, v) in block.iter().enumerate() {
                h[self.index(a, kg / w) * dim + self.index(a, kg % w)] += v;
            }
        }
        Ok(h)
    }

    /// The batch size [`Self::curvature`] runs fastest at, from the
    /// caller's `batch_size`: as many samples as the budget of `Q` allows, as
    /// the product `QᵀQ` is fastest over a long inner dimension.
    pub fn curvature_batch(&self, batch_size: usize) -> usize {
        (BUDGET / self.dim().max(1)).max(batch_size)
    }

    /// `v ⊗ φ̃` in the covered weights' order: `W[c, f]` row-major, then `b[c]`
    /// (`φ̃`'s last entry, the bias's, is 1).
    fn weights_row(&self, out: &mut [f64], v: &[f64], phi: &[f64]) {
        let (weights, bias) = out.split_at_mut(self.classes * self.features);
        outer_into(weights, v, &phi[..self.features]);
        bias.copy_from_slice(&v[..bias.len()]);
    }

    /// The linearized predictive's output means `[N, C]` and covariances
    /// `[N, C, C]` under `posterior` (over the covered weights), as
    /// [`super::predictive::glm_moments`] computes them from per-sample
    /// Jacobians.
    pub fn glm_moments(
        &self,
        objective: &Objective,
        params: &ParamStore,
        posterior: &Posterior,
        data: &Dataset,
        batch_size: usize,
    ) -> Result<(Vec<f64>, Vec<f64>), Error> {
        let (c, w) = (self.classes, self.width());
        let (m, width) = posterior.whitening();
        // M's rows by feature, then class: [F̃, C·width].
        let mut by_feature = vec![0.0; w * c * width];
        for k in 0..w {
            for a in 0..c {
                let from = self.index(a, k) * width;
                by_feature[(k * c + a) * width..][..width].copy_from_slice(&m[from..from + width]);
            }
        }
        let by_feature =
            Tensor::from_vec(vec![w, c * width], by_feature).expect("shape matches values");
        let chunk = (BUDGET / (c * width).max(1)).clamp(1, batch_size);
        let (mut f_mu, mut f_var) = (Vec::new(), Vec::new());
        self.for_each_batch(
            objective,
            params,
            data,
            chunk,
            Mode::Eval,
            |batch, phi, f| {
                let phi =
                    Tensor::from_vec(vec![batch.len(), w], phi).expect("shape matches values");
                let jm = einsum("nf,fx->nx", &[&phi, &by_feature]).expect("consistent contraction");
                let jm = jm.as_slice::<f64>().expect("f64 operands");
                f_var.extend(super::predictive::gram_per_sample(jm, c, width));
                f_mu.extend(f);
                Ok(())
            },
        )?;
        Ok((f_mu, f_var))
    }
}

/// `out = a ⊗ b` (row-major `a.len() × b.len()`).
fn outer_into(out: &mut [f64], a: &[f64], b: &[f64]) {
    for (chunk, x) in out.chunks_exact_mut(b.len()).zip(a) {
        chunk.iter_mut().zip(b).for_each(|(o, y)| *o = x * y);
    }
}

/// The network's last linear layer's input and the network's output for
/// batches of `n`, in `mode`.
fn features_program(objective: &Objective, n: usize, mode: Mode) -> Result<Executable, Error> {
    let net = &objective.network;
    let b = Builder::new(objective.dtype);
    let params = net.param_vars(&b);
    let mut shape = vec![n];
    shape.extend_from_slice(net.input_shape());
    let forward = net.forward_with(b.input(INPUT, &shape), &params, mode)?;
    let tap = forward
        .taps
        .last()
        .ok_or_else(|| Error::Invalid("the network has no linear layer".into()))?;
    let ids = [tap.input.id(), forward.output.id()];
    Ok(Executable::compile(&b.finish()?, &ids)?)
}
