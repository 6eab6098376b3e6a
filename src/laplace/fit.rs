//! Fitting: the curvature of the summed negative log-likelihood at the MAP
//! weights, in the chosen structure, from the engine's operators and
//! quantities, or for a full last linear layer in closed form from its
//! features ([`LastLayer::curvature`]).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use secondo_curvature::{Curvature, CurvatureOperator, Objective, Quantity, QuantityProgram};
use secondo_data::Dataset;
use secondo_linalg::symmetrized;
use secondo_nn::{Mode, ParamStore};
use secondo_tensor::memory::{bytes_of, ensure_fits};
use secondo_tensor::Tensor;

use super::dense::identity;
use super::kernel::{self, kernel_rows, FullRoute, KernelInputs};
use super::likelihood::{check_temperature, Fisher, Likelihood};
use super::prior::{Prior, PriorShape};
use super::structure::{diagonal_prior_refused, CurvatureBlock, DenseCurvature, Eigen, Structure};
use super::{Laplace, LastLayer, Subset};
use crate::Error;

/// What to fit.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// The weights covered.
    pub subset: Subset,
    /// The curvature's structure.
    pub structure: Structure,
    /// The observation model.
    pub likelihood: Likelihood,
    /// GGN or empirical Fisher (the Kronecker factors are the GGN's, KFLR).
    pub fisher: Fisher,
    /// How many prior precisions.
    pub prior_shape: PriorShape,
    /// Their initial value.
    pub prior_precision: f64,
    /// The Gaussian likelihood's observation noise (regression).
    pub sigma: f64,
    /// The likelihood's temperature ([`Laplace::temperature`]).
    pub temperature: f64,
    /// Samples per batch when passing over the data.
    pub batch_size: usize,
    /// Seed of the low-rank structure's Lanczos start.
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> FitOptions {
        FitOptions {
            subset: Subset::All,
            structure: Structure::Kron,
            likelihood: Likelihood::Classification,
            fisher: Fisher::Ggn,
            prior_shape: PriorShape::Scalar,
            prior_precision: 1.0,
            sigma: 1.0,
            temperature: 1.0,
            batch_size: 256,
            seed: 0,
        }
    }
}

/// Fits a Laplace approximation of `objective` around the MAP weights
/// `params` on the training data `data`.
pub fn fit(
    objective: &Objective,
    params: &ParamStore,
    data: &Dataset,
    opts: &FitOptions,
) -> Result<Laplace, Error> {
    opts.likelihood.check_loss(objective.loss.kind)?;
    if !(opts.sigma.is_finite() && opts.sigma > 0.0) {
        return Err(Error::Invalid(format!(
            "--sigma must be positive and finite, got {}",
            opts.sigma
        )));
    }
    check_temperature("--temperature", opts.temperature)?;
    if opts.batch_size == 0 || data.is_empty() {
        return Err(Error::Invalid(
            "Laplace needs at least one sample and a batch size of at least 1".into(),
        ));
    }
    if opts.structure == Structure::Kron && opts.fisher == Fisher::Empirical {
        return Err(Error::Invalid(
            "--curvature ef: the Kronecker factors are the GGN's (KFLR); use --curvature ggn \
             or --structure full, diag or lowrank:K"
                .into(),
        ));
    }
    if opts.prior_shape == PriorShape::Diagonal && !opts.structure.takes_diagonal_prior() {
        return Err(diagonal_prior_refused("--prior-shape", "--structure"));
    }
    objective.check_targets(&data.y)?;
    let Selection {
        names,
        shapes,
        mask,
    } = select(objective, params, data, opts)?;
    let sizes: Vec<usize> = match &mask {
        Some(m) => counts_per_tensor(m, &shapes),
        None => shapes.iter().map(|s| s.iter().product()).collect(),
    };
    let dim: usize = sizes.iter().sum();
    let last_layer = match opts.structure {
        Structure::Full => LastLayer::of(objective, &names, mask.is_some())?,
        _ => None,
    };
    let route = match last_layer {
        // The closed form is dense.
        Some(_) => FullRoute::Dense,
        None => full_route(objective, opts, data.len(), dim),
    };
    ensure_structure_fits(opts.structure, route, &shapes, dim)?;
    let prior = Prior::uniform(opts.prior_shape, opts.prior_precision, &sizes)?;
    let factor = opts.likelihood.curvature_factor(opts.fisher);
    let pass = Pass {
        objective,
        params,
        data,
        batch_size: opts.batch_size,
    };
    let (nll, blocks) = match (opts.structure, last_layer) {
        (Structure::Full, Some(last)) => {
            let h = last.curvature(
                objective,
                params,
                data,
                opts.likelihood,
                opts.fisher,
                last.curvature_batch(opts.batch_size),
            )?;
            let block = CurvatureBlock::Dense(DenseCurvature::new(symmetrized(&h, dim, 1.0), dim));
            (pass.nll(opts.likelihood)?, vec![block])
        }
        (Structure::Full, None) if route != FullRoute::Dense => {
            let inputs = KernelInputs {
                objective,
                params,
                data,
                names: &names,
                mask: mask.as_deref(),
                likelihood: opts.likelihood,
                fisher: opts.fisher,
                batch_size: opts.batch_size,
            };
            let block = match route {
                FullRoute::Gram => kernel::gram_block(&inputs, dim)?,
                _ => kernel::full_block(&inputs, dim)?,
            };
            (pass.nll(opts.likelihood)?, vec![block])
        }
        (Structure::Full | Structure::LowRank(_), _) => {
            let kind = match opts.fisher {
                Fisher::Ggn => Curvature::Ggn,
                Fisher::Empirical => Curvature::EmpiricalFisher,
            };
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let op = CurvatureOperator::new(
                objective,
                params,
                data,
                opts.batch_size,
                kind,
                Some(&refs),
            )?;
            // The operator's matrix is that of the loss as reduced over all the data.
            let c = objective.network.output_shape()[0];
            let to_sum = factor / objective.loss.scale(&[data.len(), c]);
            let block = match opts.structure {
                Structure::LowRank(k) => {
                    let top = crate::spectrum::top_eigen(&op, k.min(dim), 1e-8, opts.seed, &[])?;
                    CurvatureBlock::LowRank {
                        values: top.values.iter().map(|v| v * to_sum).collect(),
                        rows: top.vectors,
                        dim,
                    }
                }
                _ => {
                    let dense = match &mask {
                        Some(m) => masked_dense(&op, m)?,
                        None => op.to_dense()?,
                    };
                    CurvatureBlock::Dense(DenseCurvature::new(
                        symmetrized(&dense, dim, to_sum),
                        dim,
                    ))
                }
            };
            (pass.nll(opts.likelihood)?, vec![block])
        }
        (Structure::Diag, _) => {
            let q = match opts.fisher {
                Fisher::Ggn => Quantity::DiagGgnExact,
                Fisher::Empirical => Quantity::SumGradSquared,
            };
            let mut h = vec![0.0; dim];
            let nll = pass.run(opts.likelihood, &[q], |values, _, scale| {
                // Per-sample gradients carry the batch's scale once, their squares twice.
                let to_sum = match opts.fisher {
                    Fisher::Ggn => factor / scale,
                    Fisher::Empirical => factor / (scale * scale),
                };
                let mut at = 0;
                for name in &names {
                    let t = &values[&format!("{q}/{name}")];
                    t.accumulate_into(&mut h[at..at + t.numel()], to_sum);
                    at += t.numel();
                }
            })?;
            (nll, vec![CurvatureBlock::Diag(h)])
        }
        (Structure::Kron, _) => kron_blocks(&pass, opts.likelihood, &names, &shapes, factor)?,
    };
    let all = subset_values(params, &names)?;
    let mean = match &mask {
        Some(m) => m.iter().map(|&i| all[i]).collect(),
        None => all,
    };
    Ok(Laplace {
        likelihood: opts.likelihood,
        structure: opts.structure,
        names,
        shapes,
        mean,
        blocks,
        nll,
        n_data: data.len(),
        n_outputs: objective.network.output_shape()[0],
        prior,
        sigma: opts.sigma,
        temperature: opts.temperature,
        mask,
    })
}

/// The covered parameter tensors and, for a subnetwork of single weights,
/// which of their weights (indices into their concatenation, ascending).
struct Selection {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    mask: Option<Vec<usize>>,
}

/// Resolves the subset; for [`Subset::LargestVariance`] by a diagonal
/// Laplace approximation over every weight at the same prior, keeping the
/// weights of largest marginal variance (Daxberger et al. 2021, "Bayesian
/// deep learning via subnetwork inference", §4), and then only the tensors
/// holding them.
fn select(
    objective: &Objective,
    params: &ParamStore,
    data: &Dataset,
    opts: &FitOptions,
) -> Result<Selection, Error> {
    let shapes_of = |names: &[String]| -> Vec<Vec<usize>> {
        let all = objective.network.params();
        names
            .iter()
            .map(|n| {
                all.iter()
                    .find(|p| &p.name == n)
                    .expect("the network's names")
                    .shape
                    .clone()
            })
            .collect()
    };
    let Subset::LargestVariance(k) = opts.subset else {
        let names = opts.subset.resolve(&objective.network)?;
        return Ok(Selection {
            shapes: shapes_of(&names),
            names,
            mask: None,
        });
    };
    if opts.structure != Structure::Full {
        return Err(Error::Invalid(format!(
            "--subset {}: a subnetwork of single weights takes --structure full",
            opts.subset
        )));
    }
    let diag = fit(
        objective,
        params,
        data,
        &FitOptions {
            subset: Subset::All,
            structure: Structure::Diag,
            prior_shape: PriorShape::Scalar,
            ..opts.clone()
        },
    )?;
    let variances = diag.posterior()?.covariance_diagonal();
    if k > variances.len() {
        return Err(Error::Invalid(format!(
            "--subset {}: the model has {} weights",
            opts.subset,
            variances.len()
        )));
    }
    // The k largest, ties to the lower index; then in order.
    let mut order: Vec<usize> = (0..variances.len()).collect();
    order.sort_by(|&a, &b| variances[b].total_cmp(&variances[a]).then(a.cmp(&b)));
    let mut chosen = order[..k].to_vec();
    chosen.sort_unstable();
    // Keep the tensors holding a chosen weight, and renumber within them.
    let (mut names, mut shapes, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    let (mut start, mut kept) = (0, 0);
    for (name, shape) in diag.names.iter().zip(&diag.shapes) {
        let n: usize = shape.iter().product();
        let inside: Vec<usize> = chosen
            .iter()
            .filter(|&&i| i >= start && i < start + n)
            .map(|i| i - start + kept)
            .collect();
        if !inside.is_empty() {
            names.push(name.clone());
            shapes.push(shape.clone());
            mask.extend(inside);
            kept += n;
        }
        start += n;
    }
    Ok(Selection {
        names,
        shapes,
        mask: Some(mask),
    })
}

/// How many of the `mask`'s weights fall in each tensor of `shapes`.
pub(crate) fn counts_per_tensor(mask: &[usize], shapes: &[Vec<usize>]) -> Vec<usize> {
    let mut start = 0;
    shapes
        .iter()
        .map(|s| {
            let n: usize = s.iter().product();
            let count = mask
                .iter()
                .filter(|&&i| i >= start && i < start + n)
                .count();
            start += n;
            count
        })
        .collect()
}

/// The operator's dense matrix restricted to the rows and columns of
/// `mask`, from one product per masked column.
fn masked_dense(op: &CurvatureOperator, mask: &[usize]) -> Result<Vec<f64>, Error> {
    let k = mask.len();
    let mut m = vec![0.0; k * k];
    let mut e = vec![0.0; op.dim()];
    for (j, &col) in mask.iter().enumerate() {
        e[col] = 1.0;
        let column = op.apply(&e)?;
        e[col] = 0.0;
        for (i, &row) in mask.iter().enumerate() {
            m[i * k + j] = column[row];
        }
    }
    Ok(m)
}

/// The selected weights' values, flat in order.
pub(crate) fn subset_values(params: &ParamStore, names: &[String]) -> Result<Vec<f64>, Error> {
    let mut mean = Vec::new();
    for n in names {
        let t = params
            .get(n)
            .ok_or_else(|| Error::Invalid(format!("the weights have no parameter '{n}'")))?;
        mean.extend(t.to_f64_vec());
    }
    Ok(mean)
}

/// The full structure's route: through the Gram kernel
/// ([`kernel::full_block`]) where `G` has fewer rows than there are
/// weights, the prior is one precision (so the kernel's eigenbasis is the
/// posterior's) and the samples are independent (no batch statistics);
/// the dense matrix otherwise. The choice depends on the problem alone, not
/// on the machine, so the same inputs give the same bytes everywhere.
fn full_route(objective: &Objective, opts: &FitOptions, n_data: usize, dim: usize) -> FullRoute {
    let c = objective.network.output_shape()[0];
    let rows = kernel_rows(opts.fisher, n_data, c);
    let independent = !objective.has_batchnorm() || objective.batchnorm == Mode::Eval;
    // From the problem alone, never from the machine's memory, so that the
    // same inputs give the same bytes everywhere.
    let kernel_saves = 2 * rows <= dim || dim > DENSE_WEIGHTS;
    match (
        opts.structure == Structure::Full && independent,
        opts.prior_shape,
    ) {
        (false, _) => FullRoute::Dense,
        (true, PriorShape::Scalar) if rows < dim && kernel_saves => FullRoute::Kernel { rows },
        (true, _) => FullRoute::Gram,
    }
}

/// Above this many weights a dense curvature (1.6 GB with its eigenvectors
/// and workspace) gives way to the kernel wherever there are fewer rows.
const DENSE_WEIGHTS: usize = 8192;

/// The numbers of a dense `dim × dim` curvature: the matrix, its
/// eigenvectors and the decomposition's workspace.
fn dense_numbers(dim: usize) -> usize {
    dim.saturating_mul(dim).saturating_mul(3)
}

/// Refuses, before any work, a structure whose matrices would not fit in
/// memory, with the alternatives.
fn ensure_structure_fits(
    structure: Structure,
    route: FullRoute,
    shapes: &[Vec<usize>],
    dim: usize,
) -> Result<(), Error> {
    let numbers = match (structure, route) {
        // `G` and the eigenvectors beside it, the kernel, its eigenvectors
        // and the decomposition's workspace.
        (Structure::Full, FullRoute::Kernel { rows }) => rows
            .saturating_mul(dim)
            .saturating_mul(2)
            .saturating_add(rows.saturating_mul(rows).saturating_mul(3)),
        (Structure::Full, FullRoute::Dense | FullRoute::Gram) => dense_numbers(dim),
        (Structure::LowRank(k), _) => dim.saturating_mul(k.saturating_mul(4).max(40)),
        (Structure::Diag, _) => dim.saturating_mul(4),
        (Structure::Kron, _) => shapes
            .iter()
            .map(|s| {
                let inputs: usize = s[1..].iter().product();
                3 * (s[0] * s[0] + inputs * inputs)
            })
            .sum(),
    };
    let alternatives = "use --structure kron, diag or lowrank:K, or --subset last-layer";
    let what = match (structure, route) {
        (Structure::Full, FullRoute::Kernel { rows }) => format!(
            "--structure full over {dim} weights through its {rows}-row Gram kernel ({alternatives})"
        ),
        (Structure::Full, FullRoute::Dense | FullRoute::Gram) => format!(
            "--structure full over {dim} weights ({alternatives}; with fewer samples × outputs \
             than weights, --prior-shape scalar takes the exact Gram-kernel route)"
        ),
        _ => format!("--structure {structure} over {dim} weights ({alternatives})"),
    };
    Ok(ensure_fits(what, bytes_of(numbers, 8))?)
}

/// One pass over the data in batches, running quantity programs compiled
/// once per batch size.
struct Pass<'a> {
    objective: &'a Objective,
    params: &'a ParamStore,
    data: &'a Dataset,
    batch_size: usize,
}

impl Pass<'_> {
    /// Runs `quantities` (with the per-sample losses) on every batch, handing
    /// `visit` the values by name, the batch size and the loss's scale on
    /// it; returns the summed negative log-likelihood at `σ = 1`.
    fn run(
        &self,
        likelihood: Likelihood,
        quantities: &[Quantity],
        mut visit: impl FnMut(&HashMap<String, Tensor>, usize, f64),
    ) -> Result<f64, Error> {
        let mut wanted = quantities.to_vec();
        wanted.push(Quantity::BatchLoss);
        let mut programs: HashMap<usize, QuantityProgram> = HashMap::new();
        let c = self.objective.network.output_shape()[0];
        let mut terms = 0.0;
        for batch in self.data.batches(self.batch_size)? {
            let n = batch.len();
            let (x, y) = self.objective.batch_tensors(&batch)?;
            let program = match programs.entry(n) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    e.insert(QuantityProgram::compile(self.objective, n, &wanted, None)?)
                }
            };
            let values: HashMap<String, Tensor> = program
                .run(self.params, &x, &y, None)?
                .into_iter()
                .collect();
            terms += values["batch_loss"].to_f64_vec().iter().sum::<f64>();
            visit(&values, n, self.objective.loss.scale(&[n, c]));
        }
        Ok(likelihood.loss_factor() * terms)
    }

    /// The summed negative log-likelihood at `σ = 1` alone.
    fn nll(&self, likelihood: Likelihood) -> Result<f64, Error> {
        self.run(likelihood, &[], |_, _, _| {})
    }
}

/// KFLR blocks: `B ⊗ A` per weight and `B` per bias, accumulated over
/// batches as `A = (1/N) Σₙ aₙaₙᵀ` and `B = Σₙ Gₙ` (the summed output
/// factor), so that `B ⊗ A` is exact for one sample and for a layer whose
/// output factor is the same for every sample (a last layer under squared
/// error); Martens & Grosse 2015, Botev et al. 2017.
fn kron_blocks(
    pass: &Pass<'_>,
    likelihood: Likelihood,
    names: &[String],
    shapes: &[Vec<usize>],
    factor: f64,
) -> Result<(f64, Vec<CurvatureBlock>), Error> {
    let q = Quantity::Kflr;
    let mut outs: Vec<Vec<f64>> = shapes.iter().map(|s| vec![0.0; s[0] * s[0]]).collect();
    let mut ins: Vec<Vec<f64>> = shapes
        .iter()
        .map(|s| {
            let i: usize = s[1..].iter().product();
            vec![0.0; i * i]
        })
        .collect();
    let total = pass.data.len() as f64;
    let mut missing = None;
    let nll = pass.run(likelihood, &[q], |values, n, scale| {
        for (k, name) in names.iter().enumerate() {
            let Some(b) = values.get(&format!("{q}/{name}/out")) else {
                missing.get_or_insert_with(|| name.clone());
                continue;
            };
            b.accumulate_into(&mut outs[k], factor / scale);
            if let Some(a) = values.get(&format!("{q}/{name}/in")) {
                a.accumulate_into(&mut ins[k], n as f64 / total);
            }
        }
    })?;
    if let Some(name) = missing {
        return Err(Error::Invalid(format!(
            "--structure kron: parameter '{name}' has no Kronecker factors (linear and \
             convolution layers only); use --structure diag or full, or a --subset without it"
        )));
    }
    let mut blocks = Vec::new();
    for ((shape, b), a) in shapes.iter().zip(outs).zip(ins) {
        let inputs: usize = shape[1..].iter().product();
        // A bias's input factor is the scalar 1.
        let a = if shape.len() == 1 { identity(1) } else { a };
        blocks.push(CurvatureBlock::Kron {
            out: Eigen::of(&b, shape[0])?,
            input: Eigen::of(&a, inputs)?,
        });
    }
    Ok((nll, blocks))
}
