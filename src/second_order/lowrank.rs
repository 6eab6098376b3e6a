//! The curvature as its top `K` eigenpairs plus one scalar for the rest of
//! the spectrum: `C ≈ U Λ Uᵀ + λ_bulk (I − UUᵀ)`, what `fractional-ngd
//! --structure lowrank:K` (and `ngd`, `ef`) take their powers from.
//!
//! Huh 2020 ("Curvature-corrected learning dynamics") steps along
//! `−η C^(-α) g`; the spectrum's top end is where the curvature is known
//! well enough to correct for, and a low-rank model alone would leave the
//! complement of `U` undamped (`λ^(-α)` for a small `λ`, a step that grows
//! without bound as `λ → 0`). One scalar for the complement is the least
//! that keeps the step scaled there: the mean eigenvalue of the bulk,
//! `tr(PCP) / tr(P)` with `P = I − UUᵀ`, estimated by Hutchinson on the
//! complement.

use secondo_curvature::{Curvature, CurvatureOperator};
use secondo_linalg::{rademacher, SymmetricOperator};
use secondo_tensor::memory::{bytes_of, ensure_fits};
use secondo_tensor::DType;

use super::eigenbasis::Eigenbasis;
use super::matrix_free::bind_operator;
use super::preconditioner::{inverse_power, CurvatureBatch, Preconditioner};
use super::vector::dot;
use super::ParamGroup;
use crate::spectrum::{top_eigen, AsSymmetric};
use crate::state::Scope;
use crate::{Error, Objective};

/// Rademacher probes of the bulk estimate a refresh, where not given.
pub const DEFAULT_BULK_PROBES: usize = 8;

/// Residual tolerance of the top-`K` Lanczos run, relative to the largest
/// eigenvalue: about what the operator's products are accurate to (an f32
/// product cannot be resolved further, and asking for more only runs
/// Lanczos to its step limit).
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-4,
        DType::F64 => 1e-10,
    }
}

/// `C ≈ U Λ Uᵀ + λ_bulk (I − UUᵀ)` on `dim` parameters: `U` orthonormal,
/// `dim × K` column-major; `λ_bulk ≥ 0`.
#[derive(Debug, Clone, PartialEq)]
struct LowRank {
    values: Vec<f64>,
    vectors: Vec<f64>,
    bulk: f64,
    dim: usize,
}

impl LowRank {
    /// `f(C) v = U (f(Λ) − f(λ_bulk)) Uᵀ v + f(λ_bulk) v`, the spectral
    /// function on the subspace and the bulk's value on its complement,
    /// without forming `v − UUᵀv`.
    fn apply(&self, v: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
        let rest = f(self.bulk);
        let mut out: Vec<f64> = v.iter().map(|x| rest * x).collect();
        for (c, u) in self.values.iter().zip(self.vectors.chunks_exact(self.dim)) {
            let along = dot(u, v) * (f(*c) - rest);
            out.iter_mut().zip(u).for_each(|(o, u)| *o += along * u);
        }
        out
    }

    fn save(&self, state: &mut Scope<'_>) {
        state.put_values("eigenvalues", &self.values);
        state.put_values("eigenvectors", &self.vectors);
        state.put_scalar("bulk", self.bulk);
    }

    fn restore(state: &mut Scope<'_>, rank: usize, dim: usize) -> Result<Option<LowRank>, Error> {
        if !state.has("eigenvalues") {
            return Ok(None);
        }
        Ok(Some(LowRank {
            values: state.take_values("eigenvalues", rank)?,
            vectors: state.take_values("eigenvectors", rank * dim)?,
            bulk: state.take_scalar("bulk")?,
            dim,
        }))
    }
}

/// The eigenpairs of `C` on the span of `vectors` (`dim × K` column-major),
/// descending: Rayleigh–Ritz with the vectors orthonormalized first, at
/// `K` more products. Lanczos keeps its basis only semi-orthogonal (to
/// `√ε`, Simon 1984), so its Ritz vectors are orthonormal and
/// eigenvectors to about `10⁻⁸`; the model needs `UUᵀ` to be a projector
/// and the subspace's eigenpairs exact for it (with `K` = all of them, the
/// step is then the dense one to rounding).
fn rayleigh_ritz<O: SymmetricOperator + ?Sized>(
    op: &O,
    mut vectors: Vec<f64>,
) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let dim = op.dim();
    let k = vectors.len() / dim.max(1);
    // Gram–Schmidt.
    for j in 0..k {
        let (done, rest) = vectors.split_at_mut(j * dim);
        let u = &mut rest[..dim];
        project_out(u, done);
        let norm = dot(u, u).sqrt();
        u.iter_mut().for_each(|u| *u /= norm);
    }
    let mut image = vec![0.0; vectors.len()];
    op.apply_block(&vectors, k, &mut image)?;
    let column = |m: &[f64], j: usize| m[j * dim..(j + 1) * dim].to_vec();
    let projected: Vec<f64> = (0..k * k)
        .map(|ij| dot(&column(&vectors, ij / k), &column(&image, ij % k)))
        .collect();
    let eigen = Eigenbasis::new(&projected, k)?;
    // Row j of Sᵀ Uᵀ is the Ritz vector Σᵢ S_ij uᵢ.
    let rotated = eigen.project_left(&vectors, dim);
    let values = eigen.values.iter().rev().copied().collect();
    let vectors = rotated.chunks_exact(dim).rev().flatten().copied().collect();
    Ok((values, vectors))
}

/// `λ_bulk = Σᵢ zᵢᵀPCPzᵢ / Σᵢ zᵢᵀPzᵢ` for the `probes.len() / dim` probes
/// `zᵢ` (`dim × P` column-major) and `P = I − UUᵀ` of the orthonormal
/// `vectors` `U` (`dim × K` column-major): both sums are Hutchinson
/// estimates, of `tr(PCP) = Σ_{i>K} λᵢ` and of `tr(P) = dim − K` where `U`
/// holds the top eigenvectors, so their ratio is the mean eigenvalue of the
/// rest. Clamped at 0 from below (a Hessian's bulk, or rounding), and 0
/// where `U` spans the whole space (no complement to estimate).
pub(crate) fn bulk_estimate<O: SymmetricOperator + ?Sized>(
    op: &O,
    vectors: &[f64],
    mut probes: Vec<f64>,
) -> Result<f64, Error> {
    let dim = op.dim();
    if vectors.len() >= dim * dim {
        // What is left of a probe is rounding, its ratio noise.
        return Ok(0.0);
    }
    let count = probes.len() / dim.max(1);
    // zᵢ ← P zᵢ (P² = P in exact arithmetic).
    for z in probes.chunks_exact_mut(dim) {
        project_out(z, vectors);
    }
    let mut image = vec![0.0; probes.len()];
    op.apply_block(&probes, count, &mut image)?;
    let quadratic = dot(&probes, &image);
    let mass = dot(&probes, &probes);
    Ok(match mass > 0.0 {
        true => (quadratic / mass).max(0.0),
        false => 0.0,
    })
}

/// `count` Rademacher vectors of `dim` entries (`dim × count`
/// column-major), seeded by `seed` on a stream of their own: Lanczos draws
/// its random start from the same seed's first stream.
fn probes(dim: usize, count: usize, seed: u64) -> Vec<f64> {
    rademacher(dim * count, seed, 1)
}

/// `z ← (I − UUᵀ) z` for the orthonormal columns `U` of `basis` (`dim × K`
/// column-major), twice ("twice is enough", Giraud et al. 2005).
fn project_out(z: &mut [f64], basis: &[f64]) {
    for _ in 0..2 {
        for u in basis.chunks_exact(z.len()) {
            let along = dot(u, z);
            z.iter_mut().zip(u).for_each(|(z, u)| *z -= along * u);
        }
    }
}

/// The top `rank` eigenpairs of the curvature operator on the curvature
/// batch by Lanczos (warm-started from the previous refresh's
/// eigenvectors), and the bulk estimate of the rest from `probes`
/// Rademacher vectors, recomputed every `--inverse-every` steps;
/// `(C + λI)^(-α) v ≈ U (Λ + λ)^(-α) Uᵀ v + (λ_bulk + λ)^(-α) (v − UUᵀv)`,
/// eigenvalues below zero taken as zero.
pub struct LowRankPreconditioner {
    kind: Curvature,
    group: ParamGroup,
    rank: usize,
    probes: usize,
    /// The operator of the last refresh, kept for its compiled products.
    operator: Option<CurvatureOperator>,
    model: Option<LowRank>,
}

impl LowRankPreconditioner {
    /// The top `rank` eigenpairs of `kind` for the group's parameters, the
    /// rest estimated from `probes` probes (at least one).
    pub fn new(
        group: ParamGroup,
        kind: Curvature,
        rank: usize,
        probes: usize,
    ) -> Result<LowRankPreconditioner, Error> {
        if rank == 0 || probes == 0 {
            return Err(Error::Invalid(format!(
                "--structure lowrank:{rank} --bulk-probes {probes}: both must be at least 1"
            )));
        }
        Ok(LowRankPreconditioner {
            kind,
            group,
            rank,
            probes,
            operator: None,
            model: None,
        })
    }

    /// The eigenvalues of the subspace (descending) and the bulk estimate
    /// of the last refresh.
    pub fn spectrum(&self) -> Result<(&[f64], f64), Error> {
        let m = self.model()?;
        Ok((&m.values, m.bulk))
    }

    fn model(&self) -> Result<&LowRank, Error> {
        self.model.as_ref().ok_or_else(|| {
            Error::Invalid("the low-rank curvature was used before an update".into())
        })
    }
}

/// Refuses a low-rank structure of `rank` over a group of `dim` parameters
/// that leaves no bulk (use ngd's dense curvature), or whose vectors would
/// not fit in memory.
pub(crate) fn check_low_rank(rank: usize, probes: usize, dim: usize) -> Result<(), Error> {
    if rank >= dim {
        return Err(Error::Invalid(format!(
            "--structure lowrank:{rank}: K must be below the {dim} parameters it approximates \
             (for all of them use --optimizer ngd)"
        )));
    }
    // The eigenvectors, their warm start, Lanczos' basis and the probes.
    let vectors = 2 * rank + (2 * rank + 5).max(20) + 2 * probes;
    ensure_fits(
        format!("--structure lowrank:{rank}: {vectors} vectors of {dim} parameters"),
        bytes_of(vectors.saturating_mul(dim), 8),
    )?;
    Ok(())
}

impl Preconditioner for LowRankPreconditioner {
    fn update(&mut self, batch: &CurvatureBatch<'_>, refresh: bool) -> Result<(), Error> {
        if !refresh && self.model.is_some() {
            return Ok(());
        }
        let op = bind_operator(self.operator.take(), self.kind, &self.group, batch)?;
        let start = self.model.as_ref().map_or(&[][..], |m| &m.vectors);
        let tol = tolerance(op.dtype());
        let eigen = top_eigen(&op, self.rank, tol, batch.seed, start)?;
        let (values, vectors) = rayleigh_ritz(&AsSymmetric(&op), eigen.vectors)?;
        let probes = probes(op.dim(), self.probes, batch.seed);
        let bulk = bulk_estimate(&AsSymmetric(&op), &vectors, probes)?;
        self.model = Some(LowRank {
            values,
            vectors,
            bulk,
            dim: op.dim(),
        });
        self.operator = Some(op);
        Ok(())
    }

    fn solve(&self, v: &[f64], damping: f64, power: f64) -> Result<Vec<f64>, Error> {
        Ok(self.model()?.apply(v, |c| inverse_power(c, damping, power)))
    }

    /// `vᵀ C v` of the model (`λ_bulk` on the complement), as the step
    /// sees the curvature.
    fn curvature(&self, v: &[f64]) -> Result<f64, Error> {
        Ok(dot(v, &self.model()?.apply(v, |c| c.max(0.0))))
    }

    /// The subspace and the bulk as they are: a fresh Lanczos run would
    /// start elsewhere and differ in the last bits.
    fn save(&self, state: &mut Scope<'_>) {
        if let Some(m) = &self.model {
            m.save(state);
        }
    }

    fn restore(&mut self, objective: &Objective, state: &mut Scope<'_>) -> Result<(), Error> {
        let dim = self.group.numel(objective);
        self.model = LowRank::restore(state, self.rank, dim)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secondo_linalg::{dense_symmetric_eigen, DenseSymmetric};

    /// A symmetric 6 × 6 matrix with a negative eigenvalue.
    fn matrix() -> DenseSymmetric {
        let n = 6;
        let mut m = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let x = ((i * 7 + j * 3) % 5) as f64 - 1.0 + ((j * 7 + i * 3) % 5) as f64;
                m[i * n + j] = x + if i == j { 3.0 * i as f64 } else { 0.0 };
            }
        }
        DenseSymmetric::new(n, m).unwrap()
    }

    #[test]
    fn basis_probes_give_the_mean_eigenvalue_of_the_complement_exactly() {
        let a = matrix();
        let n = a.dim();
        let eig = dense_symmetric_eigen(&a).unwrap(); // ascending
        assert!(eig.values[0] < 0.0, "the test wants a negative eigenvalue");
        let identity: Vec<f64> = (0..n * n)
            .map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        for k in 1..n {
            // The top k eigenvectors; the rest's mean eigenvalue.
            let top = eig.vectors[(n - k) * n..].to_vec();
            let rest: f64 = eig.values[..n - k].iter().sum::<f64>() / (n - k) as f64;
            let bulk = bulk_estimate(&a, &top, identity.clone()).unwrap();
            assert!(
                (bulk - rest.max(0.0)).abs() < 1e-12 * eig.values[n - 1],
                "k = {k}: {bulk} against {rest}"
            );
        }
        // Nothing left: no bulk.
        assert_eq!(bulk_estimate(&a, &eig.vectors, identity).unwrap(), 0.0);
    }

    #[test]
    fn the_model_is_the_spectral_function_on_the_subspace_and_the_bulk_on_the_rest() {
        let a = matrix();
        let n = a.dim();
        let eig = dense_symmetric_eigen(&a).unwrap();
        let k = 2;
        let model = LowRank {
            values: eig.values[n - k..].to_vec(),
            vectors: eig.vectors[(n - k) * n..].to_vec(),
            bulk: 0.75,
            dim: n,
        };
        let v: Vec<f64> = (0..n).map(|i| i as f64 - 2.5).collect();
        let f = |c: f64| (c + 0.1).powf(-0.5);
        // Q diag(f(m)) Qᵀ v with the bottom eigenvalues replaced by the bulk.
        let mut expected = vec![0.0; n];
        for (j, q) in eig.vectors.chunks_exact(n).enumerate() {
            let c = if j < n - k { 0.75 } else { eig.values[j] };
            let along = dot(q, &v) * f(c);
            expected
                .iter_mut()
                .zip(q)
                .for_each(|(e, q)| *e += along * q);
        }
        let got = model.apply(&v, f);
        assert!(got
            .iter()
            .zip(&expected)
            .all(|(g, e)| (g - e).abs() < 1e-12));
    }

    #[test]
    fn rademacher_probes_are_signs_seeded_per_seed() {
        let a = probes(100, 3, 5);
        assert_eq!(a, probes(100, 3, 5));
        assert_ne!(a, probes(100, 3, 6));
        assert!(a.iter().all(|x| x.abs() == 1.0));
    }
}
