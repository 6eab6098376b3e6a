//! Curvature-structure measurements (beyond Cockpit), taken at checkpoints
//! on a fixed set of probe samples so that successive measurements compare
//! the same loss.
//!
//! - `hess_top_ev`, `ggn_top_ev`: the top `2C` eigenvalues (C classes) and
//!   the number of outliers, the eigenvalues before the largest ratio gap
//!   `λ_i / λ_{i+1}`; Sagun et al. (2017) and Papyan (2019) find about C
//!   outliers above the bulk.
//! - `ggn_class_means`: Papyan (2020, "Traces of class/cross-class structure
//!   pervade deep learning spectra") attributes the outliers to class means.
//!   With the class-mean gradients `μ_c` and class frequencies `π_c`, the
//!   eigenvalues of `Σ_c π_c μ_c μ_cᵀ` and the fraction of its range inside
//!   the GGN's top-C eigenspace (`top_overlap`, 1: the outliers are the
//!   class means).
//! - `grad_top_space`: Gur-Ari, Roberts & Dyer (2018), "Gradient descent
//!   happens in a tiny subspace": `‖P_C g‖² / ‖g‖²` for the projection onto
//!   the top-C Hessian eigenvectors.
//! - `top_space_rotation`: principal angles between the top-C Hessian
//!   eigenspaces of this and the previous checkpoint (0: it did not move).
//! - `ef_ggn`: Kunstner, Balles & Hennig (2019), "Limitations of the
//!   empirical Fisher approximation": `‖F_emp − G‖_F / ‖G‖_F` by Hutchinson
//!   (`‖A‖_F² = E‖Av‖²` over Rademacher `v`), the overlap
//!   `‖U_Fᵀ U_G‖_F² / C` of their top-C eigenspaces, and the angle between the
//!   damped natural-gradient steps `(F_emp + λI)⁻¹ g` and `(G + λI)⁻¹ g`,
//!   `λ = 10⁻² λ_max(G)`.
//! - `hess_density`: the spectral density by stochastic Lanczos quadrature
//!   (Ghorbani, Krishnan & Xiao 2019).

use std::collections::HashMap;

use rand::SeedableRng;
use secondo_curvature::{Curvature, CurvatureOperator, GradientProgram, Objective};
use secondo_data::Dataset;
use secondo_linalg::{
    conjugate_gradient, dense_symmetric_eigen, slq_density, CgOptions, DenseSymmetric, Eigen,
    Progress, SlqOptions,
};
use secondo_nn::ParamStore;
use secondo_tensor::memory::{bytes_of, ensure_fits};
use serde_json::{json, Value};

use super::Instrument;
use crate::spectrum::{top_eigen, AsSymmetric};
use crate::Error;

/// Residual tolerance of the eigenvalue runs (relative to the largest).
const TOL: f64 = 1e-4;
/// Rademacher probes of the Frobenius-distance estimate.
const HUTCHINSON_PROBES: usize = 8;
/// Lanczos probes and steps of the spectral density.
const SLQ_PROBES: usize = 2;
const SLQ_STEPS: usize = 40;
/// Damping of the natural-gradient steps, relative to the GGN's largest
/// eigenvalue: it bounds the condition number of the damped systems by 100,
/// so that CG solves them in a few dozen products.
const RELATIVE_DAMPING: f64 = 1e-2;

/// What persists between checkpoints: eigenvectors to warm-start from and
/// compare with, compiled gradient programs.
#[derive(Default)]
pub struct StructureState {
    hessian: Vec<f64>,
    ggn: Vec<f64>,
    ef: Vec<f64>,
    /// The top-C Hessian eigenvectors of the previous checkpoint.
    previous_space: Option<Vec<f64>>,
    programs: HashMap<usize, GradientProgram>,
}

/// The probe samples and what the measurements are relative to.
pub struct Probe<'a> {
    /// The samples.
    pub data: &'a Dataset,
    /// Classes (outputs for regression).
    pub classes: usize,
    /// Seed of the random probes.
    pub seed: u64,
}

/// Refuses structure measurements the model cannot take: too few
/// parameters for the top-2C eigenvalues, eigenvectors beyond memory, class
/// means without classes.
pub fn check(
    objective: &Objective,
    on: &[Instrument],
    classes: usize,
    classification: bool,
) -> Result<(), Error> {
    let dim = objective.network.spec().num_parameters();
    let Some(&first) = on.first() else {
        return Ok(());
    };
    let k = 2 * classes;
    if dim <= k {
        return Err(Error::Invalid(format!(
            "--monitor {first}: the top {k} eigenvalues (2 × {classes} classes) need more \
             than {k} parameters; the model has {dim}"
        )));
    }
    if on.contains(&Instrument::GgnClassMeans) && !classification {
        return Err(Error::Invalid(
            "--monitor ggn_class_means: class means need a classification loss".into(),
        ));
    }
    // Three sets of 2C eigenvectors kept, and the Lanczos basis while one runs.
    let vectors = 3 * k + (2 * k + 5).max(20);
    ensure_fits(
        format!("--monitor {first}: {vectors} vectors of {dim} parameters"),
        bytes_of(vectors.saturating_mul(dim), 8),
    )?;
    Ok(())
}

/// Takes the structure measurements among `due` at `params`.
pub fn measure(
    objective: &Objective,
    params: &ParamStore,
    probe: &Probe<'_>,
    due: &[Instrument],
    state: &mut StructureState,
) -> Result<Vec<(Instrument, Value)>, Error> {
    use Instrument as I;
    let wants = |i: Instrument| due.contains(&i);
    let c = probe.classes;
    let op = |kind| {
        CurvatureOperator::new(
            objective,
            params,
            probe.data,
            probe.data.len().min(256),
            kind,
            None,
        )
    };
    let mut out = Vec::new();
    let mut grad = None;
    // One Hessian operator for the top space and the density.
    let top_space = wants(I::HessTopEv) || wants(I::GradTopSpace) || wants(I::TopSpaceRotation);
    let hessian = (top_space || wants(I::HessDensity))
        .then(|| op(Curvature::Hessian))
        .transpose()?;
    if let (true, Some(hessian)) = (top_space, &hessian) {
        let eig = top_eigen(hessian, 2 * c, TOL, probe.seed, &state.hessian)?;
        state.hessian = eig.vectors.clone();
        if wants(I::HessTopEv) {
            out.push((I::HessTopEv, top_json(&eig, c)));
        }
        let space = &eig.vectors[..c * eig.dim];
        if wants(I::GradTopSpace) {
            let g = probe_gradient(objective, params, probe.data, state)?;
            out.push((
                I::GradTopSpace,
                json!({"k": c, "fraction": fraction_in(space, &g)}),
            ));
            grad = Some(g);
        }
        if wants(I::TopSpaceRotation) {
            if let Some(previous) = &state.previous_space {
                let angles = principal_angles(previous, space, eig.dim)?;
                out.push((I::TopSpaceRotation, json!({"k": c, "angles": angles})));
            }
            state.previous_space = Some(space.to_vec());
        }
    }
    if let (true, Some(hessian)) = (wants(I::HessDensity), &hessian) {
        out.push((I::HessDensity, density(hessian, probe.seed)?));
    }
    if wants(I::GgnTopEv) || wants(I::GgnClassMeans) || wants(I::EfGgn) {
        let ggn = op(Curvature::Ggn)?;
        let eig = top_eigen(&ggn, 2 * c, TOL, probe.seed, &state.ggn)?;
        state.ggn = eig.vectors.clone();
        let space = &eig.vectors[..c * eig.dim];
        if wants(I::GgnTopEv) {
            out.push((I::GgnTopEv, top_json(&eig, c)));
        }
        if wants(I::GgnClassMeans) {
            out.push((
                I::GgnClassMeans,
                class_means(objective, params, probe.data, space, state)?,
            ));
        }
        if wants(I::EfGgn) {
            let g = match grad.take() {
                Some(g) => g,
                None => probe_gradient(objective, params, probe.data, state)?,
            };
            let ef = op(Curvature::EmpiricalFisher)?;
            let ef_eig = top_eigen(&ef, c, TOL, probe.seed, &state.ef)?;
            state.ef = ef_eig.vectors.clone();
            let damping = RELATIVE_DAMPING * eig.values[0].abs().max(f64::MIN_POSITIVE);
            let value = json!({
                "frobenius": frobenius_distance(&ef, &ggn, probe.seed)?,
                "overlap": overlap(&ef_eig.vectors, space, eig.dim, c),
                "step_angle": step_angle(&ef, &ggn, &g, damping)?,
            });
            out.push((I::EfGgn, value));
        }
    }
    Ok(out)
}

fn top_json(eig: &Eigen, classes: usize) -> Value {
    json!({"eigenvalues": eig.values, "outliers": outliers(&eig.values), "classes": classes})
}

/// The number of eigenvalues (descending) before the largest ratio gap
/// `λ_i / λ_{i+1}` among the positive ones; a non-positive successor is an
/// infinite gap.
///
/// ```
/// use secondo::monitor::structure::outliers;
/// assert_eq!(outliers(&[50.0, 40.0, 30.0, 2.0, 1.5, 1.0]), 3);
/// assert_eq!(outliers(&[5.0, -1.0]), 1);
/// ```
pub fn outliers(values: &[f64]) -> usize {
    let mut best = (0, 0.0f64);
    for (i, pair) in values.windows(2).enumerate() {
        if pair[0] <= 0.0 {
            break;
        }
        let gap = if pair[1] > 0.0 {
            pair[0] / pair[1]
        } else {
            f64::INFINITY
        };
        if gap > best.1 {
            best = (i + 1, gap);
        }
    }
    best.0
}

/// The gradient of the loss on the probe samples, flattened.
fn probe_gradient(
    objective: &Objective,
    params: &ParamStore,
    data: &Dataset,
    state: &mut StructureState,
) -> Result<Vec<f64>, Error> {
    let n = data.len();
    if let std::collections::hash_map::Entry::Vacant(e) = state.programs.entry(n) {
        e.insert(objective.program(n, true)?);
    }
    let batch = data
        .batches(n)?
        .next()
        .ok_or_else(|| Error::Invalid("no probe samples".into()))?;
    let (x, y) = objective.batch_tensors(&batch)?;
    let out = state.programs[&n].run(params, x, y)?;
    let scale = match objective.loss.reduction {
        secondo_nn::Reduction::Mean => 1.0,
        secondo_nn::Reduction::Sum => 1.0 / n as f64,
    };
    Ok(out
        .grads
        .iter()
        .flat_map(|t| t.to_f64_vec())
        .map(|g| g * scale)
        .collect())
}

/// `‖Vᵀ g‖² / ‖g‖²` for orthonormal columns `V`.
fn fraction_in(space: &[f64], g: &[f64]) -> f64 {
    let norm2: f64 = g.iter().map(|x| x * x).sum();
    let projected: f64 = space.chunks_exact(g.len()).map(|v| dot(v, g).powi(2)).sum();
    projected / norm2
}

/// Principal angles (ascending, radians) between the ranges of two sets of
/// orthonormal columns of length `dim`.
///
/// ```
/// use secondo::monitor::structure::principal_angles;
/// let a = [1.0, 0.0, 0.0];
/// let b = [0.6, 0.8, 0.0];
/// let angles = principal_angles(&a, &b, 3).unwrap();
/// assert!((angles[0] - 0.8f64.asin()).abs() < 1e-12);
/// ```
pub fn principal_angles(a: &[f64], b: &[f64], dim: usize) -> Result<Vec<f64>, Error> {
    let (ka, kb) = (a.len() / dim, b.len() / dim);
    // M = AᵀB; the singular values of M are the cosines; eigen of MᵀM.
    let m: Vec<f64> = (0..ka)
        .flat_map(|i| (0..kb).map(move |j| (i, j)))
        .map(|(i, j)| dot(&a[i * dim..(i + 1) * dim], &b[j * dim..(j + 1) * dim]))
        .collect();
    let mtm: Vec<f64> = (0..kb)
        .flat_map(|i| (0..kb).map(move |j| (i, j)))
        .map(|(i, j)| (0..ka).map(|r| m[r * kb + i] * m[r * kb + j]).sum())
        .collect();
    let eig = dense_symmetric_eigen(&DenseSymmetric::new(kb, mtm)?)?;
    let mut angles: Vec<f64> = eig
        .values
        .iter()
        .rev()
        .take(ka.min(kb))
        .map(|s2| s2.max(0.0).sqrt().min(1.0).acos())
        .collect();
    angles.sort_by(f64::total_cmp);
    Ok(angles)
}

/// `‖Aᵀ B‖_F² / k` for the first `k` orthonormal columns of each.
fn overlap(a: &[f64], b: &[f64], dim: usize, k: usize) -> f64 {
    let column = |m: &[f64], j: usize| m[j * dim..(j + 1) * dim].to_vec();
    let total: f64 = (0..k)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| dot(&column(a, i), &column(b, j)).powi(2))
        .sum();
    total / k as f64
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The SLQ density of `op` as `{grid, values}`.
fn density(op: &CurvatureOperator, seed: u64) -> Result<Value, Error> {
    let options = SlqOptions {
        num_probes: SLQ_PROBES,
        lanczos_steps: SLQ_STEPS.min(op.dim()),
        grid_points: 200,
        seed,
        block_size: SLQ_PROBES,
        ..SlqOptions::default()
    };
    let d = slq_density(&AsSymmetric(op), &options, Progress::none())?;
    Ok(json!({"grid": d.grid, "values": d.values}))
}

/// The class-mean decomposition of the GGN's top-C space.
fn class_means(
    objective: &Objective,
    params: &ParamStore,
    data: &Dataset,
    space: &[f64],
    state: &mut StructureState,
) -> Result<Value, Error> {
    let labels: Vec<i64> = match &data.y {
        secondo_data::Targets::Classes { labels, .. } => labels.clone(),
        secondo_data::Targets::Values { .. } => Vec::new(),
    };
    let mut means = Vec::new();
    let mut weights = Vec::new();
    let classes = data.num_classes().unwrap_or(0);
    for c in 0..classes as i64 {
        let members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        if members.is_empty() {
            continue;
        }
        weights.push(members.len() as f64 / labels.len() as f64);
        means.push(probe_gradient(
            objective,
            params,
            &data.select(&members)?,
            state,
        )?);
    }
    let m = means.len();
    // K = W^{1/2} Mᵀ M W^{1/2}: the nonzero spectrum of Σ_c π_c μ_c μ_cᵀ.
    let gram: Vec<f64> = (0..m)
        .flat_map(|i| (0..m).map(move |j| (i, j)))
        .map(|(i, j)| (weights[i] * weights[j]).sqrt() * dot(&means[i], &means[j]))
        .collect();
    let eig = dense_symmetric_eigen(&DenseSymmetric::new(m, gram)?)?;
    let largest = eig.values.last().copied().unwrap_or(0.0);
    let dim = means.first().map_or(0, Vec::len);
    let (mut captured, mut rank) = (0.0, 0usize);
    for j in (0..m).rev() {
        let lambda = eig.values[j];
        if lambda <= 1e-12 * largest || dim == 0 {
            continue;
        }
        let u = eig.vector(j).unwrap_or(&[]);
        let mut q = vec![0.0; dim];
        for (c, mean) in means.iter().enumerate() {
            let w = weights[c].sqrt() * u[c] / lambda.sqrt();
            q.iter_mut().zip(mean).for_each(|(a, b)| *a += w * b);
        }
        captured += fraction_in(space, &q) * dot(&q, &q);
        rank += 1;
    }
    let values: Vec<f64> = eig.values.iter().rev().map(|v| v.max(0.0)).collect();
    Ok(json!({"eigenvalues": values, "top_overlap": captured / rank.max(1) as f64}))
}

/// `‖A − B‖_F / ‖B‖_F` by Hutchinson's estimator over Rademacher probes.
fn frobenius_distance(
    a: &CurvatureOperator,
    b: &CurvatureOperator,
    seed: u64,
) -> Result<f64, Error> {
    use rand::Rng;
    let dim = a.dim();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let probes: Vec<f64> = (0..dim * HUTCHINSON_PROBES)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect();
    let av = a.apply_block(&probes, HUTCHINSON_PROBES)?;
    let bv = b.apply_block(&probes, HUTCHINSON_PROBES)?;
    let difference: f64 = av.iter().zip(&bv).map(|(x, y)| (x - y).powi(2)).sum();
    let reference: f64 = bv.iter().map(|y| y * y).sum();
    Ok((difference / reference).sqrt())
}

/// The angle between `(A + λI)⁻¹ g` and `(B + λI)⁻¹ g`, by CG.
fn step_angle(
    a: &CurvatureOperator,
    b: &CurvatureOperator,
    g: &[f64],
    damping: f64,
) -> Result<f64, Error> {
    let options = CgOptions {
        tol: 1e-4,
        max_iter: 100,
    };
    let solve = |op: &CurvatureOperator| {
        conjugate_gradient(&AsSymmetric(op), g, damping, &options, Progress::none())
    };
    let (x, y) = (solve(a)?.x, solve(b)?.x);
    let cosine = dot(&x, &y) / (dot(&x, &x) * dot(&y, &y)).sqrt();
    Ok(cosine.clamp(-1.0, 1.0).acos())
}
