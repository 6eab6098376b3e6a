//! The full curvature from its square root's rows: densely as `GᵀG`, or
//! through its Gram kernel where the data give far fewer rows than there
//! are weights. `H = Σₙ Jₙᵀ Λₙ Jₙ = GᵀG`, with `G` stacking
//! `Lₙᵀ Jₙ` per sample (`Λₙ = Lₙ Lₙᵀ`,
//! [`Likelihood::output_curvature_root`]: `k = C` rows per sample for the
//! GGN, one for the empirical Fisher), has rank at most `r = N·k`. The
//! eigendecomposition `K = G Gᵀ = Eᵀ diag(λ) E` of the `r × r` kernel gives
//! every nonzero eigenpair of `H` exactly: `λᵢ` with the unit eigenvector
//! `vᵢ = Gᵀ eᵢ / √λᵢ` (as `H Gᵀ eᵢ = Gᵀ K eᵢ = λᵢ Gᵀ eᵢ`). The rest of the
//! space has curvature zero, so the posterior is a low-rank block with all
//! `r` eigenpairs, and nothing about it is approximate. It takes `2·r·P`
//! numbers where the dense matrix and its eigenvectors take `2·P²` (a
//! 50,000-weight network on 150 regression points: 120 MB instead of 40
//! GB), and about `4·r²·P` flops for the two products beside the kernel's
//! `r × r` decomposition where the dense matrix takes `r·P²` for `GᵀG` and
//! a `P × P` decomposition when the posterior is first used: the kernel
//! wins where `2r ≤ P`, and above 8192 weights wherever `r < P`
//! (`super::fit`). It is the duality behind the Gaussian-process
//! view of the linearized Laplace (Khan et al. 2019, "Approximate inference
//! turns deep networks into Gaussian processes").

use secondo_curvature::Objective;
use secondo_data::Dataset;
use secondo_linalg::{row_major_product, row_major_product_add, symmetrized, RowMajor};
use secondo_nn::ParamStore;

use super::dense::eigen_rows;
use super::jacobian::for_each_jacobian_batch;
use super::likelihood::{Fisher, Likelihood};
use super::masked_columns;
use super::structure::{CurvatureBlock, DenseCurvature};
use crate::Error;

/// The rows of `G` for `n_data` samples of `c` outputs.
pub(crate) fn kernel_rows(fisher: Fisher, n_data: usize, c: usize) -> usize {
    n_data.saturating_mul(Likelihood::root_width(fisher, c))
}

/// How the full curvature is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FullRoute {
    /// The dense matrix from the operator, column by column: for a batch
    /// that couples its samples (batch normalization in train mode).
    Dense,
    /// The dense matrix `GᵀG`, summed over batches of `G`'s rows
    /// ([`gram_block`]).
    Gram,
    /// The Gram kernel of `rows` rows ([`full_block`]).
    Kernel { rows: usize },
}

/// The samples whose Jacobians make `G`, and what `G`'s rows are.
pub(crate) struct KernelInputs<'a> {
    pub(crate) objective: &'a Objective,
    pub(crate) params: &'a ParamStore,
    pub(crate) data: &'a Dataset,
    /// The covered parameter tensors.
    pub(crate) names: &'a [String],
    /// The covered weights of their concatenation, for a subnetwork.
    pub(crate) mask: Option<&'a [usize]>,
    pub(crate) likelihood: Likelihood,
    pub(crate) fisher: Fisher,
    pub(crate) batch_size: usize,
}

/// `H` of the summed negative log-likelihood at `σ = 1` over `dim` covered
/// weights as a low-rank block of all its nonzero eigenpairs. Eigenvalues
/// of the kernel at its round-off (below `r·ε` of the largest) are left to
/// the complement: their eigenvectors are not determined by `G`.
pub(crate) fn full_block(inputs: &KernelInputs<'_>, dim: usize) -> Result<CurvatureBlock, Error> {
    let g = stacked_roots(inputs, dim)?;
    let r = g.len() / dim.max(1);
    let gm = RowMajor::new(&g, r, dim);
    let kernel = row_major_product(gm, gm.t());
    let (values, vectors) = eigen_rows(&kernel, r)?;
    drop(kernel);
    let largest = values.last().copied().unwrap_or(0.0);
    let floor = largest * f64::EPSILON * r as f64;
    let kept: Vec<usize> = (0..r).filter(|&i| values[i] > floor).collect();
    let scaled: Vec<f64> = kept
        .iter()
        .flat_map(|&i| {
            let root = values[i].sqrt();
            vectors[i * r..(i + 1) * r].iter().map(move |e| e / root)
        })
        .collect();
    drop(vectors);
    let rows = row_major_product(RowMajor::new(&scaled, kept.len(), r), gm);
    Ok(CurvatureBlock::LowRank {
        values: kept.iter().map(|&i| values[i]).collect(),
        rows,
        dim,
    })
}

/// `H = GᵀG` over `dim` covered weights as a dense block (decomposed when
/// first used), one product per batch of `G`'s rows: `N·k·P²` flops where
/// the operator's columns take `P` passes over the data.
pub(crate) fn gram_block(inputs: &KernelInputs<'_>, dim: usize) -> Result<CurvatureBlock, Error> {
    let mut h = vec![0.0; dim * dim];
    for_each_root_batch(inputs, dim, |g| {
        let gm = RowMajor::new(g, g.len() / dim.max(1), dim);
        row_major_product_add(&mut h, gm.t(), gm);
    })?;
    Ok(CurvatureBlock::Dense(DenseCurvature::new(
        symmetrized(&h, dim, 1.0),
        dim,
    )))
}

/// `G` (`r × dim`, row-major): per sample `Lₙᵀ Jₙ` over the covered weights.
fn stacked_roots(inputs: &KernelInputs<'_>, dim: usize) -> Result<Vec<f64>, Error> {
    let c = inputs.objective.network.output_shape()[0];
    let mut g = Vec::with_capacity(kernel_rows(inputs.fisher, inputs.data.len(), c) * dim);
    for_each_root_batch(inputs, dim, |rows| g.extend_from_slice(rows))?;
    Ok(g)
}

/// Hands `visit` the rows of `G` batch by batch (row-major, `dim` wide).
fn for_each_root_batch(
    inputs: &KernelInputs<'_>,
    dim: usize,
    mut visit: impl FnMut(&[f64]),
) -> Result<(), Error> {
    let c = inputs.objective.network.output_shape()[0];
    let k = Likelihood::root_width(inputs.fisher, c);
    for_each_jacobian_batch(
        inputs.objective,
        inputs.params,
        inputs.data,
        inputs.names,
        inputs.batch_size,
        |batch, out, jac| {
            let n = batch.len();
            let jac = masked_columns(inputs.mask, jac, n * c);
            let mut g = Vec::with_capacity(n * k * dim);
            for s in 0..n {
                let f = &out[s * c..(s + 1) * c];
                let root = inputs
                    .likelihood
                    .output_curvature_root(inputs.fisher, f, &batch.y, s);
                let j = RowMajor::new(&jac[s * c * dim..(s + 1) * c * dim], c, dim);
                g.extend(row_major_product(RowMajor::new(&root, c, k).t(), j));
            }
            visit(&g);
            Ok(())
        },
    )
}
