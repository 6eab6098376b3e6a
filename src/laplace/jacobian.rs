//! Per-sample Jacobians of the network outputs with respect to the covered
//! weights, `J_n` (`C × P` per sample), for the linearized predictive's
//! `J_n P⁻¹ J_nᵀ`: one graph of `vmap` over samples of `vmap` over output
//! units of the single-sample `vjp` (the engine's transformations; the same
//! construction as the per-sample curvature diagonals).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use secondo_curvature::{Objective, INPUT};
use secondo_data::{Batch, Dataset};
use secondo_graph::{Builder, Executable, Feeds};
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use super::dense::identity;
use crate::Error;

/// A compiled Jacobian program for batches of one size.
pub struct JacobianProgram {
    exe: Executable,
    n: usize,
    outputs: usize,
}

impl JacobianProgram {
    /// Compiles the program for batches of `n` samples, differentiating with
    /// respect to the parameters named in `wrt` (in order).
    pub fn compile(
        objective: &Objective,
        n: usize,
        wrt: &[String],
    ) -> Result<JacobianProgram, Error> {
        let net = &objective.network;
        let c = net.output_shape()[0];
        let b = Builder::new(objective.dtype);
        let params = net.param_vars(&b);
        let chosen: Vec<_> = wrt
            .iter()
            .map(|w| {
                let k = net
                    .params()
                    .iter()
                    .position(|p| &p.name == w)
                    .ok_or_else(|| Error::Invalid(format!("unknown parameter '{w}'")))?;
                Ok(params[k])
            })
            .collect::<Result<_, Error>>()?;
        let mut one = vec![1];
        one.extend_from_slice(net.input_shape());
        let x1 = b.input("jacobian/x", &one);
        let f1 = net.forward(x1, &params)?;
        let u = b.input("jacobian/u", &[1, c]);
        let rows = b.vjp(&[f1], &[u], &chosen)?;
        let units = b.constant(
            Tensor::from_f64(vec![c, 1, c], &identity(c), objective.dtype).expect("c·c values"),
        );
        let mut per_unit = b.vmap(&rows, &[u], &[units], c)?;
        per_unit.push(f1);
        // The batch [n, ...] as n single samples [n, 1, ...].
        let batch: Vec<usize> = std::iter::once(n)
            .chain(net.input_shape().iter().copied())
            .collect();
        let stacked: Vec<usize> = std::iter::once(n).chain(one.iter().copied()).collect();
        let xs = b.input(INPUT, &batch).reshape(&stacked);
        let per_sample = b.vmap(&per_unit, &[x1], &[xs], n)?;
        let ids: Vec<usize> = per_sample.iter().map(|v| v.id()).collect();
        let exe = Executable::compile(&b.finish()?, &ids)?;
        Ok(JacobianProgram { exe, n, outputs: c })
    }

    /// The program of [`JacobianProgram::compile`], compiled once for the
    /// last few networks, batch sizes and weights asked for: predicting
    /// from posteriors again and again (a grid search, the phases of online
    /// marginal-likelihood training, a service) compiles each program once.
    /// A program is a pure function of its key, so the memo changes no
    /// result.
    pub fn cached(
        objective: &Objective,
        n: usize,
        wrt: &[String],
    ) -> Result<Arc<JacobianProgram>, Error> {
        let net = &objective.network;
        let key = format!(
            "{}|{:?}|{:?}|{:?}|{n}|{wrt:?}",
            net.spec(),
            net.input_shape(),
            objective.dtype,
            objective.batchnorm
        );
        let found = {
            let programs = PROGRAMS.lock().unwrap_or_else(PoisonError::into_inner);
            programs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, p)| Arc::clone(p))
        };
        // Compiled outside the lock; kept most recent first.
        let program = match found {
            Some(p) => p,
            None => Arc::new(JacobianProgram::compile(objective, n, wrt)?),
        };
        let mut programs = PROGRAMS.lock().unwrap_or_else(PoisonError::into_inner);
        programs.retain(|(k, _)| *k != key);
        programs.insert(0, (key, Arc::clone(&program)));
        programs.truncate(REMEMBERED);
        Ok(program)
    }

    /// The outputs `[n, C]` and the Jacobians `[n, C, P]` (row-major) of a
    /// batch `x` of the compiled size.
    pub fn run(&self, params: &ParamStore, x: &Tensor) -> Result<(Vec<f64>, Vec<f64>), Error> {
        let mut feeds = Feeds::new();
        for (name, t) in params.iter().chain(params.buffers()) {
            feeds.insert(name, t.clone());
        }
        feeds.insert(INPUT, x.clone());
        let mut values = self.exe.run(&feeds)?;
        let output = values.pop().expect("the outputs").to_f64_vec();
        let parts: Vec<Vec<f64>> = values.iter().map(Tensor::to_f64_vec).collect();
        let rows = self.n * self.outputs;
        let widths: Vec<usize> = parts.iter().map(|p| p.len() / rows).collect();
        let dim: usize = widths.iter().sum();
        let mut jac = vec![0.0; rows * dim];
        let mut at = 0;
        for (p, w) in parts.iter().zip(&widths) {
            for r in 0..rows {
                jac[r * dim + at..r * dim + at + w].copy_from_slice(&p[r * w..(r + 1) * w]);
            }
            at += w;
        }
        Ok((output, jac))
    }
}

/// How many compiled programs [`JacobianProgram::cached`] keeps.
const REMEMBERED: usize = 8;

/// The programs [`JacobianProgram::cached`] keeps, most recent first.
static PROGRAMS: Mutex<Vec<(String, Arc<JacobianProgram>)>> = Mutex::new(Vec::new());

/// Most numbers one batch's Jacobians may hold (2²², 32 MiB in f64): the
/// batches of [`for_each_jacobian_batch`] shrink to fit it.
const JACOBIAN_BUDGET: usize = 1 << 22;

/// Runs Jacobian programs with respect to the parameters `wrt` over `data`
/// in batches of at most `batch_size` samples (fewer where their
/// Jacobians would pass [`JACOBIAN_BUDGET`]), compiled once per batch
/// size ([`JacobianProgram::cached`]), handing `visit` each batch with its
/// outputs `[n, C]` and Jacobians `[n, C, P]`.
pub(crate) fn for_each_jacobian_batch(
    objective: &Objective,
    params: &ParamStore,
    data: &Dataset,
    wrt: &[String],
    batch_size: usize,
    mut visit: impl FnMut(&Batch<'_>, Vec<f64>, Vec<f64>) -> Result<(), Error>,
) -> Result<(), Error> {
    let c = objective.network.output_shape()[0];
    let dim: usize = params
        .iter()
        .filter(|(name, _)| wrt.iter().any(|w| w == name))
        .map(|(_, t)| t.numel())
        .sum();
    let chunk = (JACOBIAN_BUDGET / (c * dim).max(1)).clamp(1, batch_size);
    let mut programs: HashMap<usize, Arc<JacobianProgram>> = HashMap::new();
    for batch in data.batches(chunk)? {
        let n = batch.len();
        let (x, _) = objective.batch_tensors(&batch)?;
        let program = match programs.entry(n) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(JacobianProgram::cached(objective, n, wrt)?),
        };
        let (out, jac) = program.run(params, &x)?;
        visit(&batch, out, jac)?;
    }
    Ok(())
}
