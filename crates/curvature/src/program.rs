//! Compiled graphs for curvature products on one batch.

use secondo_graph::{Builder, Executable, Var};
use secondo_nn::Reduction;

use crate::objective::{INPUT, TARGET};
use crate::{CurvatureError, Objective};

/// Prefix of the input nodes holding the vector a product is applied to.
pub const TANGENT: &str = "v/";
/// Prefix of the input nodes holding the `k` vectors of a bilinear form,
/// stacked along a leading axis (`[k, ...]` per parameter).
pub(crate) const STACKED_TANGENTS: &str = "vs/";
/// Name of the input node holding output-space cotangents (`Jᵀu`).
pub(crate) const COTANGENT: &str = "u";

/// Which product a program computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Product {
    /// `H v` of the summed loss.
    Hessian,
    /// `Jᵀ H_f J v` of the summed loss.
    Ggn,
    /// `Σ_n g_n g_nᵀ v` of the per-sample losses with the fed targets
    /// (empirical Fisher; with sampled targets, one Monte-Carlo Fisher term).
    OuterGradients,
    /// `J v`, shape `[N, C]`.
    Jacobian,
    /// `Jᵀ u`.
    JacobianTranspose,
    /// The per-sample loss terms `ℓ_n` and their derivatives `∇ℓ_n · v`
    /// along the tangent, `[N]` each.
    DirectionalTerms,
    /// The GGN's bilinear form on `k` stacked vectors, `[k, k]`:
    /// `(J vᵢ)ᵀ H_f (J vⱼ)`, from Jacobian-vector products only.
    GgnGram(usize),
    /// The outer gradients' bilinear form on `k` stacked vectors, `[k, k]`:
    /// `Σ_n (∇ℓ_n · vᵢ)(∇ℓ_n · vⱼ)`, from Jacobian-vector products only.
    OuterGradientsGram(usize),
}

/// The per-sample loss terms of `objective` on batches of `n` samples and
/// their derivatives along a direction fed per parameter as
/// `v/<parameter name>`: outputs `ℓ_n` and `∇ℓ_n · v`, `[N]` each, from one
/// forward pass with a tangent.
pub fn directional_terms(objective: &Objective, n: usize) -> Result<Executable, CurvatureError> {
    let all: Vec<usize> = (0..objective.network.params().len()).collect();
    compile(objective, Product::DirectionalTerms, n, &all)
}

/// Builds and compiles `product` for batches of `n` samples, for the
/// parameters at `group` (indices into the network's parameter list). The loss
/// is summed over the batch (the caller applies the dataset's reduction).
pub(crate) fn compile(
    objective: &Objective,
    product: Product,
    n: usize,
    group: &[usize],
) -> Result<Executable, CurvatureError> {
    let b = Builder::new(objective.dtype);
    let net = &objective.network;
    let mut shape = vec![n];
    shape.extend_from_slice(net.input_shape());
    let x = b.input(INPUT, &shape);
    let out_shape = [n, net.output_shape()[0]];
    let y = b.input(TARGET, &objective.loss.target_shape(&out_shape));
    let params = net.param_vars(&b);
    let wrt: Vec<Var> = group.iter().map(|&i| params[i]).collect();
    let tangents: Vec<Var> = group
        .iter()
        .map(|&i| {
            let p = &net.params()[i];
            b.input(&format!("{TANGENT}{}", p.name), &p.shape)
        })
        .collect();
    let f = net.forward_with(x, &params, objective.batchnorm)?.output;
    let summed = secondo_nn::Loss::new(objective.loss.kind, Reduction::Sum);
    let outputs: Vec<Var> = match product {
        Product::Hessian => {
            let loss = summed.build(f, y)?;
            let g = b.grad(loss, &wrt)?;
            b.jvp(&g, &wrt, &tangents)?
        }
        Product::Ggn => {
            let loss = summed.build(f, y)?;
            let jv = b.jvp(&[f], &wrt, &tangents)?[0];
            let gf = b.grad(loss, &[f])?[0];
            let hjv = b.jvp(&[gf], &[f], &[jv])?[0];
            b.vjp(&[f], &[hjv], &wrt)?
        }
        Product::OuterGradients => {
            let terms = summed.per_sample(f, y)?;
            let gv = b.jvp(&[terms], &wrt, &tangents)?[0];
            b.vjp(&[terms], &[gv], &wrt)?
        }
        Product::Jacobian => b.jvp(&[f], &wrt, &tangents)?,
        Product::DirectionalTerms => {
            let terms = summed.per_sample(f, y)?;
            vec![terms, b.jvp(&[terms], &wrt, &tangents)?[0]]
        }
        Product::JacobianTranspose => {
            let u = b.input(COTANGENT, &out_shape);
            b.vjp(&[f], &[u], &wrt)?
        }
        Product::GgnGram(k) | Product::OuterGradientsGram(k) => {
            // One vector's factor `F v` and `Λ F v` (the GGN's `J v` and
            // `H_f J v`; the outer gradients' `∇ℓ_n · v` twice), vectorized
            // over the k stacked vectors: one forward pass carries them all,
            // and the primal values are shared, unbatched.
            let (factor, weighted, spec) = if let Product::GgnGram(_) = product {
                let jv = b.jvp(&[f], &wrt, &tangents)?[0];
                let gf = b.grad(summed.build(f, y)?, &[f])?[0];
                (jv, b.jvp(&[gf], &[f], &[jv])?[0], "anc,bnc->ab")
            } else {
                let terms = summed.per_sample(f, y)?;
                let gv = b.jvp(&[terms], &wrt, &tangents)?[0];
                (gv, gv, "an,bn->ab")
            };
            let stacked: Vec<Var> = group
                .iter()
                .map(|&i| {
                    let p = &net.params()[i];
                    let mut shape = vec![k];
                    shape.extend_from_slice(&p.shape);
                    b.input(&format!("{STACKED_TANGENTS}{}", p.name), &shape)
                })
                .collect();
            let batched = b.vmap(&[factor, weighted], &tangents, &stacked, k)?;
            vec![b.einsum(spec, &batched)]
        }
    };
    let ids: Vec<usize> = outputs.iter().map(|v| v.id()).collect();
    Ok(Executable::compile(&b.finish()?, &ids)?)
}
