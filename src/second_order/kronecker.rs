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

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use rayon::prelude::*;

use secondo_curvature::{Curvature, Quantity};
use secondo_linalg::{dense_spd_inverse, symmetrized, DenseSymmetric};
use secondo_tensor::Tensor;

use super::diagonal::reduction_scale;
use super::eigenbasis::{matmul, Eigenbasis};
use super::preconditioner::{inverse_power, CurvatureBatch, Preconditioner, Quantities};
use super::{Ema, ParamGroup};
use crate::state::Scope;
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

/// A factor of [`KroneckerPreconditioner::factors`]: a weight's output
/// factor `B` is its bias's too (the engine's `B` of a bias is the same
/// matrix), so the two blocks share one average and one eigendecomposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FactorId(usize);

/// One parameter's block.
struct Block {
    /// Elements of the parameter.
    size: usize,
    /// The output factor `B` (`rows × rows`).
    b: FactorId,
    /// The input factor `A` of a weight (`cols × cols`); a bias has none.
    a: Option<FactorId>,
    /// EKFAC's eigenvalues, `rows × cols` row-major.
    corrected: Ema,
}

/// A Kronecker factor: its moving average and the average as it was at
/// the last refresh.
struct Factor {
    n: usize,
    /// The factor's name in the engine's output.
    name: String,
    average: Ema,
    snapshot: Option<Refreshed>,
}

/// A factor at its last refresh: what every solve until the next one uses.
struct Refreshed {
    n: usize,
    /// The average, row-major `n × n`.
    matrix: Vec<f64>,
    /// `tr(F) / n`, for factored damping's `π`.
    mean_eigenvalue: f64,
    /// The eigendecomposition, made when a solve first needs it: KFAC's
    /// factored damping at `α = 1` needs none (a Cholesky inverse does).
    eigen: OnceLock<Result<Eigenbasis, String>>,
}

impl Refreshed {
    fn eigen(&self) -> Result<&Eigenbasis, Error> {
        self.eigen
            .get_or_init(|| Eigenbasis::new(&self.matrix, self.n).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Invalid(e.clone()))
    }

    /// `(F + μI)^(-α)` as a matrix, the factor's eigenvalues below zero
    /// (rounding) taken as zero: by a Cholesky inverse at `α = 1` (about a
    /// tenth of an eigendecomposition), else, or where `F + μI` is not
    /// numerically positive definite, through the eigendecomposition.
    fn damped_power(&self, mu: f64, power: f64) -> Result<Vec<f64>, Error> {
        if power == 1.0 {
            let mut damped = self.matrix.clone();
            (0..self.n).for_each(|i| damped[i * self.n + i] += mu);
            let inverse = DenseSymmetric::new(self.n, damped).and_then(|m| dense_spd_inverse(&m));
            if let Ok(inverse) = inverse {
                return Ok(inverse);
            }
        }
        Ok(self.eigen()?.function(|c| inverse_power(c, mu, power)))
    }
}

impl Factor {
    fn new(n: usize, name: String, ema: f64) -> Factor {
        Factor {
            n,
            name,
            average: Ema::new(ema),
            snapshot: None,
        }
    }

    fn refreshed(&self) -> Result<&Refreshed, Error> {
        self.snapshot.as_ref().ok_or_else(|| {
            Error::Invalid("a Kronecker factor was used before its first update".into())
        })
    }

    fn eigen(&self) -> Result<&Eigenbasis, Error> {
        self.refreshed()?.eigen()
    }

    /// Saves the average and the last refresh, with its eigendecomposition
    /// where a solve made one.
    fn save(&self, state: &mut Scope<'_>) {
        self.average.save(state, "average");
        if let Some(r) = &self.snapshot {
            let mut s = state.scope("refreshed");
            s.put_values("matrix", &r.matrix);
            s.put_scalar("mean_eigenvalue", r.mean_eigenvalue);
            if let Some(Ok(e)) = r.eigen.get() {
                e.save(&mut s.scope("eigen"));
            }
        }
    }

    /// Restores what [`Factor::save`] wrote.
    fn restore(&mut self, state: &mut Scope<'_>) -> Result<(), Error> {
        let n = self.n;
        self.average.restore(state, "average", n * n)?;
        let mut s = state.scope("refreshed");
        if !s.has("matrix") {
            self.snapshot = None;
            return Ok(());
        }
        let eigen = OnceLock::new();
        if let Some(e) = Eigenbasis::restore_optional(&mut s.scope("eigen"), n)? {
            eigen.get_or_init(|| Ok(e));
        }
        self.snapshot = Some(Refreshed {
            n,
            matrix: s.take_values("matrix", n * n)?,
            mean_eigenvalue: s.take_scalar("mean_eigenvalue")?,
            eigen,
        });
        Ok(())
    }

    /// The current average, symmetrized (a matrix built in `f32` is
    /// symmetric up to rounding), as the solves until the next refresh see it.
    fn refresh(&self) -> Result<Refreshed, Error> {
        let m = self.average.get()?;
        let n = self.n;
        let matrix = symmetrized(m, n, 1.0);
        Ok(Refreshed {
            n,
            matrix,
            mean_eigenvalue: (0..n).map(|i| m[i * n + i]).sum::<f64>() / n as f64,
            eigen: OnceLock::new(),
        })
    }
}

/// Factored damping's inverse factors `(B + μ_B I)^(-α)` and `(A + π μ_A
/// I)^(-α)` as matrices, for one damping and power: built once per refresh
/// (while the damping stays), they turn each solve's four changes of basis
/// into two products.
struct FactoredInverses {
    damping: f64,
    power: f64,
    /// Per block: the output side, and the input side of a weight.
    matrices: Vec<(Vec<f64>, Option<Vec<f64>>)>,
}

impl FactoredInverses {
    /// Saves the damping and power they were built for and each block's
    /// matrices under its parameter's name.
    fn save(&self, state: &mut Scope<'_>, params: &[String]) {
        state.put_scalar("damping", self.damping);
        state.put_scalar("power", self.power);
        for ((left, right), name) in self.matrices.iter().zip(params) {
            let mut s = state.scope(name);
            s.put_values("out", left);
            s.put_optional("in", right.as_deref());
        }
    }

    /// Restores what [`FactoredInverses::save`] wrote for blocks of these
    /// output sizes and (for weights) input sizes; `None` where none was.
    fn restore(
        state: &mut Scope<'_>,
        params: &[String],
        sizes: &[(usize, Option<usize>)],
    ) -> Result<Option<FactoredInverses>, Error> {
        if !state.has("damping") {
            return Ok(None);
        }
        let damping = state.take_scalar("damping")?;
        let power = state.take_scalar("power")?;
        let matrices = params
            .iter()
            .zip(sizes)
            .map(|(name, &(rows, cols))| {
                let mut s = state.scope(name);
                let right = cols.map(|c| s.take_values("in", c * c)).transpose()?;
                Ok((s.take_values("out", rows * rows)?, right))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Some(FactoredInverses {
            damping,
            power,
            matrices,
        }))
    }
}

/// The Kronecker-factored preconditioner of every parameter of a network
/// of linear and convolution layers.
pub struct KroneckerPreconditioner {
    kind: Curvature,
    damping: FactorDamping,
    eigenvalues: Eigenvalues,
    blocks: Vec<Block>,
    factors: Vec<Factor>,
    /// The layer paths of the weight blocks (for EKFAC's per-sample gradients).
    layers: Vec<Option<String>>,
    /// The parameters' names, in order.
    params: Vec<String>,
    programs: Quantities,
    per_sample: Quantities,
    /// Factored damping's inverse factors since the last refresh.
    inverses: RefCell<Option<FactoredInverses>>,
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
        let mut factors: Vec<Factor> = Vec::new();
        let mut layers = Vec::new();
        let mut add = |name: String, n: usize| {
            factors.push(Factor::new(n, name, ema));
            FactorId(factors.len() - 1)
        };
        // The output factor of each layer's weight, for its bias to share.
        let mut outputs: HashMap<String, FactorId> = HashMap::new();
        let all = objective.network.params();
        for p in group.indices().iter().map(|&i| &all[i]) {
            let (layer, role) = p.name.rsplit_once('.').unwrap_or(("", &p.name));
            let size: usize = p.shape.iter().product();
            let rows = p.shape[0];
            let structured = kronecker_layers.contains(&layer.to_string());
            match role {
                "weight" if structured && p.shape.len() >= 2 => {
                    let b = add(format!("{quantity}/{}/out", p.name), rows);
                    outputs.insert(layer.to_string(), b);
                    blocks.push(Block {
                        size,
                        b,
                        a: Some(add(format!("{quantity}/{}/in", p.name), size / rows)),
                        corrected: Ema::new(ema),
                    });
                    layers.push(Some(layer.to_string()));
                }
                "bias" if structured => {
                    let b = match outputs.get(layer) {
                        Some(&b) => b,
                        None => add(format!("{quantity}/{}/out", p.name), rows),
                    };
                    blocks.push(Block {
                        size,
                        b,
                        a: None,
                        corrected: Ema::new(ema),
                    });
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
            factors,
            layers,
            params: group.names(objective),
            programs: Quantities::new(&[quantity], mc),
            per_sample: Quantities::new(&[Quantity::BatchGradFactors], None),
            inverses: RefCell::new(None),
        })
    }

    fn factor(&self, id: FactorId) -> &Factor {
        &self.factors[id.0]
    }

    /// Blends the factors of `batch` into the averages.
    fn update_factors(&mut self, batch: &CurvatureBatch<'_>) -> Result<(), Error> {
        let (x, y) = batch.tensors()?;
        let values = self.programs.run(batch, &x, &y)?;
        for factor in &mut self.factors {
            let value = values.get(&factor.name).ok_or_else(|| {
                Error::Invalid(format!("the engine computed no factor '{}'", factor.name))
            })?;
            factor.average.blend(value.to_f64_vec());
        }
        Ok(())
    }

    /// Takes every factor's average as the solves' until the next refresh.
    fn refresh(&mut self) -> Result<(), Error> {
        for factor in &mut self.factors {
            factor.snapshot = Some(factor.refresh()?);
        }
        self.inverses.replace(None);
        Ok(())
    }

    /// Decomposes every factor's snapshot not yet decomposed, two at a time
    /// (the decompositions are independent, and most of a refresh where a
    /// solve needs them).
    fn decompose(&self) -> Result<(), Error> {
        self.factors
            .par_iter()
            .try_for_each(|f| f.eigen().map(|_| ()))
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
        let mut all = Vec::with_capacity(self.blocks.len());
        for ((block, name), layer) in self.blocks.iter().zip(&self.params).zip(&self.layers) {
            let (qb, qa) = self.bases(block)?;
            let mut moments = second_moments(&values, name, layer.as_deref(), (qb, qa), n)?;
            moments.iter_mut().for_each(|m| *m /= s);
            all.push(moments);
        }
        for (block, moments) in self.blocks.iter_mut().zip(all) {
            block.corrected.blend(moments);
        }
        Ok(())
    }

    /// The block's `rows × cols` (a bias is one column).
    fn shape(&self, block: &Block) -> (usize, usize) {
        let cols = block.a.map_or(1, |a| self.factor(a).n);
        (self.factor(block.b).n, cols)
    }

    /// The block's eigenbases at the last refresh: `Q_B`, and `Q_A` of a weight.
    fn bases(&self, block: &Block) -> Result<KroneckerBases<'_>, Error> {
        let qa = block.a.map(|a| self.factor(a).eigen()).transpose()?;
        Ok((self.factor(block.b).eigen()?, qa))
    }

    /// The block's eigenvalues in its eigenbasis, `rows × cols`.
    fn eigenvalues(&self, block: &Block) -> Result<Vec<f64>, Error> {
        if self.eigenvalues == Eigenvalues::Corrected {
            return Ok(block.corrected.get()?.to_vec());
        }
        let (qb, qa) = self.bases(block)?;
        Ok(kronecker_values((qb, qa)))
    }

    /// `f` applied to the block's eigenvalues, on `v` (`rows × cols`): `Q f Qᵀ v`.
    fn apply_block(
        &self,
        block: &Block,
        v: &[f64],
        f: impl Fn(f64) -> f64,
    ) -> Result<Vec<f64>, Error> {
        let (qb, qa) = self.bases(block)?;
        Ok(in_eigenbasis((qb, qa), &self.eigenvalues(block)?, v, f))
    }

    /// The factors of `batch` alone (no moving average), each decomposed,
    /// with every output factor `B` scaled by `scale` (so that each block,
    /// `B ⊗ A` or a bias's `B`, is): one sub-sampled estimate of
    /// determinantal averaging. The averages and refreshes are untouched.
    pub(crate) fn batch_factors(
        &mut self,
        batch: &CurvatureBatch<'_>,
        scale: f64,
    ) -> Result<Vec<Eigenbasis>, Error> {
        let (x, y) = batch.tensors()?;
        let values = self.programs.run(batch, &x, &y)?;
        let outputs: Vec<FactorId> = self.blocks.iter().map(|b| b.b).collect();
        self.factors
            .par_iter()
            .enumerate()
            .map(|(i, factor)| {
                let value = values.get(&factor.name).ok_or_else(|| {
                    Error::Invalid(format!("the engine computed no factor '{}'", factor.name))
                })?;
                let mut eigen = Eigenbasis::new(&value.to_f64_vec(), factor.n)?;
                if outputs.contains(&FactorId(i)) {
                    eigen.values.iter_mut().for_each(|v| *v *= scale);
                }
                Ok(eigen)
            })
            .collect()
    }

    /// Every factor's size, in the order of [`Self::batch_factors`].
    pub(crate) fn factor_sizes(&self) -> Vec<usize> {
        self.factors.iter().map(|f| f.n).collect()
    }

    /// Each block's elements and eigenbases `(Q_B, Q_A)` among `factors`
    /// (from [`Self::batch_factors`]), in the order of the flat vector.
    pub(crate) fn blocks_in<'a>(
        &'a self,
        factors: &'a [Eigenbasis],
    ) -> impl Iterator<Item = (usize, KroneckerBases<'a>)> + 'a {
        self.blocks
            .iter()
            .map(move |b| (b.size, (&factors[b.b.0], b.a.map(|a| &factors[a.0]))))
    }

    /// Factored damping's inverse factors for `damping` and `power` (Martens
    /// & Grosse §6.3): `(B + λ^½/π I)^(-α)` and `(A + π λ^½ I)^(-α)` with
    /// `π² = (tr A / dim A) / (tr B / dim B)`, from the last refresh.
    fn factored_inverses(&self, damping: f64, power: f64) -> Result<FactoredInverses, Error> {
        let root = damping.sqrt();
        let factors = &self.factors;
        if power != 1.0 {
            self.decompose()?;
        }
        let matrices = self
            .blocks
            .par_iter()
            .map(|block| {
                let b = factors[block.b.0].refreshed()?;
                let Some(a) = block.a.map(|a| factors[a.0].refreshed()).transpose()? else {
                    return Ok((b.damped_power(damping, power)?, None));
                };
                let pi = (a.mean_eigenvalue / b.mean_eigenvalue).sqrt();
                let pi = if pi.is_finite() && pi > 0.0 { pi } else { 1.0 };
                Ok((
                    b.damped_power(root / pi, power)?,
                    Some(a.damped_power(pi * root, power)?),
                ))
            })
            .collect::<Result<_, Error>>()?;
        Ok(FactoredInverses {
            damping,
            power,
            matrices,
        })
    }

    /// `(B + μ_B I)^(-α) V (A + μ_A I)^(-α)` for every block of `v`, with the
    /// inverse factors of this damping and power built on first use.
    fn solve_factored(&self, v: &[f64], damping: f64, power: f64) -> Result<Vec<f64>, Error> {
        let mut cache = self.inverses.borrow_mut();
        if !cache
            .as_ref()
            .is_some_and(|c| c.damping == damping && c.power == power)
        {
            *cache = Some(self.factored_inverses(damping, power)?);
        }
        let inverses = cache.as_ref().expect("just built");
        let starts = self.blocks.iter().scan(0, |at, b| {
            *at += b.size;
            Some(*at - b.size)
        });
        // Blocks in parallel, each product on one thread: small products
        // gain nothing from splitting, and the result is the same on any pool.
        let parts: Vec<_> = starts
            .zip(&self.blocks)
            .zip(&inverses.matrices)
            .map(|((at, b), m)| (at, self.shape(b), m))
            .collect();
        let solved: Vec<Vec<f64>> = parts
            .into_par_iter()
            .map(|(at, (rows, cols), (left, right))| {
                let left = matmul(left, &v[at..at + rows * cols], rows, rows, cols);
                match right {
                    Some(right) => matmul(&left, right, rows, cols, cols),
                    None => left,
                }
            })
            .collect();
        Ok(solved.concat())
    }
}

/// A block's eigenbases: `Q_B`, and `Q_A` of a weight.
pub(crate) type KroneckerBases<'a> = (&'a Eigenbasis, Option<&'a Eigenbasis>);

/// KFAC's eigenvalues of a block, `b_i a_j` (`rows × cols` row-major; a
/// bias's are `B`'s).
pub(crate) fn kronecker_values((qb, qa): KroneckerBases<'_>) -> Vec<f64> {
    match qa {
        Some(qa) => qb
            .values
            .iter()
            .flat_map(|bi| qa.values.iter().map(move |aj| bi * aj))
            .collect(),
        None => qb.values.clone(),
    }
}

/// `Q f(m) Qᵀ v` for a block `v` (`rows × cols`) with eigenvectors
/// `Q = Q_B ⊗ Q_A` and eigenvalues `m` (`rows × cols`): two changes of
/// basis, `Q_B [(Q_Bᵀ V Q_A) ⊙ f(m)] Q_Aᵀ`.
pub(crate) fn in_eigenbasis(
    (qb, qa): KroneckerBases<'_>,
    values: &[f64],
    v: &[f64],
    f: impl Fn(f64) -> f64,
) -> Vec<f64> {
    let rows = qb.values.len();
    let cols = qa.map_or(1, |a| a.values.len());
    let mut c = qb.project_left(v, cols);
    if let Some(qa) = qa {
        c = qa.project_right(&c, rows);
    }
    for (x, value) in c.iter_mut().zip(values) {
        *x *= f(*value);
    }
    if let Some(qa) = qa {
        c = qa.back_right(&c, rows);
    }
    qb.back_left(&c, cols)
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
/// (`rows × cols`) in its eigenbases `(Q_B, Q_A)`: for a dense layer from the
/// factored form `C_n = g_n a_nᵀ`, as `(G Q_B)²ᵀ (A Q_A)²` with the squares
/// elementwise (a bias has no `A`), else from the engine's per-sample gradients.
fn second_moments(
    values: &HashMap<String, Tensor>,
    name: &str,
    layer: Option<&str>,
    (qb, qa): (&Eigenbasis, Option<&Eigenbasis>),
    n: usize,
) -> Result<Vec<f64>, Error> {
    let rows = qb.values.len();
    let cols = qa.map_or(1, |a| a.values.len());
    let squared = |v: Vec<f64>| v.into_iter().map(|x| x * x).collect::<Vec<f64>>();
    if let Some(full) = values.get(&format!("batch_grad_factors/{name}")) {
        let mut moments = vec![0.0; rows * cols];
        for c in full.to_f64_vec().chunks(rows * cols) {
            let mut projected = qb.project_left(c, cols);
            if let Some(qa) = qa {
                projected = qa.project_right(&projected, rows);
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
    Ok(match qa {
        Some(qa) => {
            let inputs = get(format!("batch_grad_factors/{path}/input"))?;
            let a = squared(qa.project_right(&inputs, n));
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
        let first = self.factors.iter().any(|f| f.snapshot.is_none());
        if refresh || first {
            self.refresh()?;
            if self.damping == FactorDamping::Tikhonov || self.eigenvalues == Eigenvalues::Corrected
            {
                self.decompose()?;
            }
        }
        if self.eigenvalues == Eigenvalues::Corrected {
            self.update_corrections(batch)?;
        }
        Ok(())
    }

    fn solve(&self, v: &[f64], damping: f64, power: f64) -> Result<Vec<f64>, Error> {
        if self.damping == FactorDamping::Factored {
            return self.solve_factored(v, damping, power);
        }
        let mut out = Vec::with_capacity(v.len());
        let mut at = 0;
        for block in &self.blocks {
            let part = &v[at..at + block.size];
            at += block.size;
            out.extend(self.apply_block(block, part, |c| inverse_power(c, damping, power))?);
        }
        Ok(out)
    }

    fn curvature(&self, v: &[f64]) -> Result<f64, Error> {
        self.decompose()?;
        let mut total = 0.0;
        let mut at = 0;
        for block in &self.blocks {
            let part = &v[at..at + block.size];
            at += block.size;
            let cv = self.apply_block(block, part, |c| c.max(0.0))?;
            total += super::vector::dot(part, &cv);
        }
        Ok(total)
    }

    fn save(&self, state: &mut Scope<'_>) {
        for f in &self.factors {
            f.save(&mut state.scope("factor").scope(&f.name));
        }
        for (block, name) in self.blocks.iter().zip(&self.params) {
            block.corrected.save(&mut state.scope("corrected"), name);
        }
        if let Some(inverses) = self.inverses.borrow().as_ref() {
            inverses.save(&mut state.scope("inverses"), &self.params);
        }
    }

    fn restore(&mut self, _objective: &Objective, state: &mut Scope<'_>) -> Result<(), Error> {
        for f in &mut self.factors {
            f.restore(&mut state.scope("factor").scope(&f.name.clone()))?;
        }
        for (block, name) in self.blocks.iter_mut().zip(&self.params) {
            block
                .corrected
                .restore(&mut state.scope("corrected"), name, block.size)?;
        }
        let sizes: Vec<(usize, Option<usize>)> = self
            .blocks
            .iter()
            .map(|b| (self.factor(b.b).n, b.a.map(|a| self.factor(a).n)))
            .collect();
        let inverses =
            FactoredInverses::restore(&mut state.scope("inverses"), &self.params, &sizes)?;
        self.inverses.replace(inverses);
        Ok(())
    }
}
