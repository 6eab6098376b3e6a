//! Block-diagonal Kronecker-factored curvature: KFAC (Martens & Grosse
//! 2015; Grosse & Martens 2016 for convolutions), KFLR (Botev et al. 2017)
//! and EKFAC (George et al. 2018, "Fast approximate natural gradient descent
//! in a Kronecker-factored eigenbasis").
//!
//! Each layer's weight block is `B ⊗ A` (the engine's factors: `A` of the
//! layer inputs, `B` of the backpropagated output gradients, with `vec(W)`
//! row-major) and each bias block `B`. Both factors are exponential moving
//! averages over curvature batches; their eigendecompositions
//! `A = Q_A diag(a) Q_Aᵀ`, `B = Q_B diag(b) Q_Bᵀ` are recomputed on refresh.
//! In the eigenbasis `B ⊗ A` is diagonal with entries `b_i a_j`, so any
//! power of the damped block costs two changes of basis:
//! `(B ⊗ A + λI)^(-α) vec(V) = vec(Q_B [(Q_Bᵀ V Q_A) ⊘ (b aᵀ + λ)^α] Q_Aᵀ)`.
//! EKFAC replaces `b_i a_j` by the second moments of the per-sample
//! gradients in that basis, re-estimated every update.

use std::collections::HashMap;

use secondo_curvature::{Curvature, Quantity};
use secondo_tensor::Tensor;

use super::diagonal::reduction_scale;
use super::eigenbasis::{matmul, Eigenbasis};
use super::preconditioner::{inverse_power, CurvatureBatch, Preconditioner, Quantities};
use super::{Ema, ParamGroup};
use crate::{Error, Objective};

/// How a Kronecker block is damped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorDamping {
    /// Exact Tikhonov damping of the block, `(B ⊗ A + λI)^(-α)`.
    Tikhonov,
    /// Martens & Grosse's factored Tikhonov damping (§6.3): `(B + λ^½/π I) ⊗
    /// (A + π λ^½ I)` with `π² = (tr A / dim A) / (tr B / dim B)`, whose
    /// inverse is the Kronecker product of the factors' inverses.
    Factored,
}

/// Which eigenvalues the blocks have in the Kronecker eigenbasis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eigenvalues {
    /// KFAC's `b_i a_j`.
    Kronecker,
    /// EKFAC's second moments of the per-sample gradients in the eigenbasis.
    Corrected,
}

/// One parameter's block.
struct Block {
    /// Elements of the parameter.
    size: usize,
    /// The output factor `B` (`rows × rows`).
    b: Factor,
    /// The input factor `A` of a weight (`cols × cols`); a bias has none.
    a: Option<Factor>,
    /// EKFAC's eigenvalues, `rows × cols` row-major.
    corrected: Ema,
}

impl Block {
    fn rows(&self) -> usize {
        self.b.n
    }

    fn cols(&self) -> usize {
        self.a.as_ref().map_or(1, |a| a.n)
    }
}

/// A Kronecker factor: its moving average and the eigendecomposition of it
/// last refreshed.
struct Factor {
    n: usize,
    average: Ema,
    eigen: Option<Eigenbasis>,
}

impl Factor {
    fn new(n: usize, ema: f64) -> Factor {
        Factor {
            n,
            average: Ema::new(ema),
            eigen: None,
        }
    }

    fn eigen(&self) -> Result<&Eigenbasis, Error> {
        self.eigen.as_ref().ok_or_else(|| {
            Error::Invalid("a Kronecker factor was used before its first update".into())
        })
    }

    fn refresh(&mut self) -> Result<(), Error> {
        self.eigen = Some(Eigenbasis::new(self.average.get()?, self.n)?);
        Ok(())
    }

    /// `tr(F) / n`.
    fn mean_eigenvalue(&self) -> Result<f64, Error> {
        let m = self.average.get()?;
        Ok((0..self.n).map(|i| m[i * self.n + i]).sum::<f64>() / self.n as f64)
    }
}

/// The Kronecker-factored preconditioner of every parameter of a network
/// of linear and convolution layers.
pub struct KroneckerPreconditioner {
    kind: Curvature,
    damping: FactorDamping,
    eigenvalues: Eigenvalues,
    blocks: Vec<Block>,
    /// The factors' names in the engine's output, per block: `(out, in)`.
    names: Vec<(String, Option<String>)>,
    /// The layer paths of the weight blocks (for EKFAC's per-sample gradients).
    layers: Vec<Option<String>>,
    /// The parameters' names, in order.
    params: Vec<String>,
    factors: Quantities,
    per_sample: Quantities,
}

impl KroneckerPreconditioner {
    /// Blocks for every parameter of the group; `kind` is the GGN (KFLR) or
    /// the Monte-Carlo Fisher (KFAC); EKFAC's corrected eigenvalues take the
    /// Fisher's or the empirical Fisher's per-sample gradients. Refuses a
    /// parameter without a Kronecker structure, or another curvature.
    pub fn new(
        objective: &Objective,
        group: &ParamGroup,
        kind: Curvature,
        damping: FactorDamping,
        eigenvalues: Eigenvalues,
        ema: f64,
    ) -> Result<KroneckerPreconditioner, Error> {
        let quantity = factor_quantity(kind, eigenvalues)?;
        let spec = objective.network.spec();
        let kronecker_layers = kronecker_layers(objective)?;
        let mut blocks = Vec::new();
        let mut names = Vec::new();
        let mut layers = Vec::new();
        let all = objective.network.params();
        for p in group.indices().iter().map(|&i| &all[i]) {
            let (layer, role) = p.name.rsplit_once('.').unwrap_or(("", &p.name));
            let size: usize = p.shape.iter().product();
            let rows = p.shape[0];
            let structured = kronecker_layers.contains(&layer.to_string());
            match role {
                "weight" if structured && p.shape.len() >= 2 => {
                    let cols = size / rows;
                    blocks.push(Block {
                        size,
                        b: Factor::new(rows, ema),
                        a: Some(Factor::new(cols, ema)),
                        corrected: Ema::new(ema),
                    });
                    names.push((
                        format!("{quantity}/{}/out", p.name),
                        Some(format!("{quantity}/{}/in", p.name)),
                    ));
                    layers.push(Some(layer.to_string()));
                }
                "bias" if structured => {
                    blocks.push(Block {
                        size,
                        b: Factor::new(rows, ema),
                        a: None,
                        corrected: Ema::new(ema),
                    });
                    names.push((format!("{quantity}/{}/out", p.name), None));
                    layers.push(None);
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "parameter '{}' of '{}' has no Kronecker structure (KFAC covers \
                         linear and convolution layers); use newton-cg, or leave it to \
                         --first-order-optimizer by --second-order",
                        p.name, spec
                    )))
                }
            }
        }
        let mc = match kind {
            Curvature::FisherMc { samples, .. } => Some(samples),
            _ => None,
        };
        Ok(KroneckerPreconditioner {
            kind,
            damping,
            eigenvalues,
            blocks,
            names,
            layers,
            params: group.names(objective),
            factors: Quantities::new(&[quantity], mc),
            per_sample: Quantities::new(&[Quantity::BatchGradFactors], None),
        })
    }

    /// Blends the factors of `batch` into the averages.
    fn update_factors(&mut self, batch: &CurvatureBatch<'_>) -> Result<(), Error> {
        let (x, y) = batch.tensors()?;
        let values = self.factors.run(batch, &x, &y)?;
        let factor = |name: &str| {
            values
                .get(name)
                .map(Tensor::to_f64_vec)
                .ok_or_else(|| Error::Invalid(format!("the engine computed no factor '{name}'")))
        };
        for (block, (out, input)) in self.blocks.iter_mut().zip(&self.names) {
            block.b.average.blend(factor(out)?);
            if let (Some(a), Some(name)) = (block.a.as_mut(), input) {
                a.average.blend(factor(name)?);
            }
        }
        Ok(())
    }

    /// EKFAC's eigenvalues: `(1/s) Σ_n (Q_Bᵀ C_n Q_A)²` elementwise over the
    /// per-sample gradients `C_n` (scaled by `s`, the reduction factor) with
    /// targets drawn from the model (Fisher) or the data's (empirical Fisher).
    fn update_corrections(&mut self, batch: &CurvatureBatch<'_>) -> Result<(), Error> {
        let (x, y) = batch.tensors()?;
        let targets = match self.kind {
            Curvature::FisherMc { .. } => {
                let t = self.per_sample.sampled_targets(batch, &x, &y, 1)?;
                t.reshape(y.shape().to_vec())
                    .map_err(|e| Error::Invalid(format!("sampled targets: {e}")))?
            }
            _ => y,
        };
        let values = self.per_sample.run(batch, &x, &targets)?;
        let s = reduction_scale(batch);
        let n = batch.data.len();
        for ((block, name), layer) in self.blocks.iter_mut().zip(&self.params).zip(&self.layers) {
            let mut moments = second_moments(&values, name, layer.as_deref(), block, n)?;
            moments.iter_mut().for_each(|m| *m /= s);
            block.corrected.blend(moments);
        }
        Ok(())
    }

    /// The block's eigenvalues in its eigenbasis, `rows × cols`.
    fn eigenvalues(&self, block: &Block) -> Result<Vec<f64>, Error> {
        if self.eigenvalues == Eigenvalues::Corrected {
            return Ok(block.corrected.get()?.to_vec());
        }
        let b = &block.b.eigen()?.values;
        Ok(match &block.a {
            Some(a) => {
                let a = &a.eigen()?.values;
                b.iter()
                    .flat_map(|bi| a.iter().map(move |aj| bi * aj))
                    .collect()
            }
            None => b.clone(),
        })
    }

    /// `f` applied to the block's eigenvalues, on `v` (`rows × cols`): `Q f Qᵀ v`.
    fn apply_block(
        &self,
        block: &Block,
        v: &[f64],
        f: impl Fn(usize, usize, f64) -> f64,
    ) -> Result<Vec<f64>, Error> {
        let (rows, cols) = (block.rows(), block.cols());
        let qb = block.b.eigen()?;
        let mut c = qb.project_left(v, cols);
        if let Some(a) = &block.a {
            c = a.eigen()?.project_right(&c, rows);
        }
        let values = self.eigenvalues(block)?;
        for (k, x) in c.iter_mut().enumerate() {
            *x *= f(k / cols, k % cols, values[k]);
        }
        if let Some(a) = &block.a {
            c = a.eigen()?.back_right(&c, rows);
        }
        Ok(qb.back_left(&c, cols))
    }
}

/// The quantity whose factors the blocks average (KFAC with sampled
/// targets, KFLR with the exact GGN), or why `kind` has none.
fn factor_quantity(kind: Curvature, eigenvalues: Eigenvalues) -> Result<Quantity, Error> {
    match (kind, eigenvalues) {
        (Curvature::FisherMc { .. }, _) => Ok(Quantity::Kfac),
        (Curvature::Ggn, Eigenvalues::Kronecker) => Ok(Quantity::Kflr),
        // EKFAC's basis from the GGN's factors, its eigenvalues from the
        // per-sample gradients with the data's targets.
        (Curvature::EmpiricalFisher, Eigenvalues::Corrected) => Ok(Quantity::Kflr),
        (other, Eigenvalues::Kronecker) => Err(Error::Invalid(format!(
            "--curvature {other}: the engine has Kronecker factors of the fisher (KFAC) and the ggn (KFLR)"
        ))),
        (other, Eigenvalues::Corrected) => Err(Error::Invalid(format!(
            "--curvature {other}: EKFAC corrects with per-sample gradients of the fisher or the ef"
        ))),
    }
}

/// The layers the engine computes Kronecker factors for: linear and
/// ungrouped convolution layers.
fn kronecker_layers(objective: &Objective) -> Result<Vec<String>, Error> {
    let b = secondo_graph::Builder::new(objective.dtype);
    let mut shape = vec![1];
    shape.extend_from_slice(objective.network.input_shape());
    let x = b.input(secondo_curvature::INPUT, &shape);
    let params = objective.network.param_vars(&b);
    let forward = objective
        .network
        .forward_with(x, &params, secondo_nn::Mode::Eval)?;
    Ok(forward.taps.iter().map(|t| t.layer.clone()).collect())
}

/// `Σ_n (Q_Bᵀ C_n Q_A)²` of one block's per-sample gradients `C_n`
/// (`rows × cols`): for a dense layer from the factored form `C_n = g_n a_nᵀ`,
/// as `(G Q_B)²ᵀ (A Q_A)²` with the squares elementwise (a bias has no `A`),
/// else from the engine's per-sample gradients.
fn second_moments(
    values: &HashMap<String, Tensor>,
    name: &str,
    layer: Option<&str>,
    block: &Block,
    n: usize,
) -> Result<Vec<f64>, Error> {
    let (rows, cols) = (block.rows(), block.cols());
    let qb = block.b.eigen()?;
    let squared = |v: Vec<f64>| v.into_iter().map(|x| x * x).collect::<Vec<f64>>();
    if let Some(full) = values.get(&format!("batch_grad_factors/{name}")) {
        let mut moments = vec![0.0; rows * cols];
        for c in full.to_f64_vec().chunks(rows * cols) {
            let mut projected = qb.project_left(c, cols);
            if let Some(a) = &block.a {
                projected = a.eigen()?.project_right(&projected, rows);
            }
            moments
                .iter_mut()
                .zip(squared(projected))
                .for_each(|(m, p)| *m += p);
        }
        return Ok(moments);
    }
    let get = |key: String| {
        values
            .get(&key)
            .map(Tensor::to_f64_vec)
            .ok_or_else(|| Error::Invalid(format!("the engine computed no '{key}'")))
    };
    let path = layer.unwrap_or_else(|| name.rsplit_once('.').map_or(name, |p| p.0));
    let g = squared(qb.project_right(&get(format!("batch_grad_factors/{path}/output_grad"))?, n));
    Ok(match &block.a {
        Some(a) => {
            let inputs = get(format!("batch_grad_factors/{path}/input"))?;
            let a = squared(a.eigen()?.project_right(&inputs, n));
            matmul(&transpose(&g, n, rows), &a, rows, n, cols)
        }
        None => matmul(&vec![1.0; n], &g, 1, n, rows),
    })
}

/// The transpose of a row-major `rows × cols` matrix.
fn transpose(m: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols * rows)
        .map(|k| m[(k % rows) * cols + k / rows])
        .collect()
}

impl Preconditioner for KroneckerPreconditioner {
    fn update(&mut self, batch: &CurvatureBatch<'_>, refresh: bool) -> Result<(), Error> {
        self.update_factors(batch)?;
        let first = self.blocks.iter().any(|b| b.b.eigen.is_none());
        if refresh || first {
            for block in &mut self.blocks {
                block.b.refresh()?;
                if let Some(a) = block.a.as_mut() {
                    a.refresh()?;
                }
            }
        }
        if self.eigenvalues == Eigenvalues::Corrected {
            self.update_corrections(batch)?;
        }
        Ok(())
    }

    fn solve(&self, v: &[f64], damping: f64, power: f64) -> Result<Vec<f64>, Error> {
        let mut out = Vec::with_capacity(v.len());
        let mut at = 0;
        for block in &self.blocks {
            let part = &v[at..at + block.size];
            at += block.size;
            let solved = match (self.damping, &block.a) {
                (FactorDamping::Factored, Some(a)) => {
                    let pi = (a.mean_eigenvalue()? / block.b.mean_eigenvalue()?).sqrt();
                    let pi = if pi.is_finite() && pi > 0.0 { pi } else { 1.0 };
                    let (mu_a, mu_b) = (pi * damping.sqrt(), damping.sqrt() / pi);
                    let (bv, av) = (&block.b.eigen()?.values, &a.eigen()?.values);
                    self.apply_block(block, part, |i, j, _| {
                        inverse_power(
                            (bv[i].max(0.0) + mu_b) * (av[j].max(0.0) + mu_a),
                            0.0,
                            power,
                        )
                    })?
                }
                _ => self.apply_block(block, part, |_, _, c| inverse_power(c, damping, power))?,
            };
            out.extend(solved);
        }
        Ok(out)
    }

    fn curvature(&self, v: &[f64]) -> Result<f64, Error> {
        let mut total = 0.0;
        let mut at = 0;
        for block in &self.blocks {
            let part = &v[at..at + block.size];
            at += block.size;
            let cv = self.apply_block(block, part, |_, _, c| c.max(0.0))?;
            total += super::vector::dot(part, &cv);
        }
        Ok(total)
    }
}
