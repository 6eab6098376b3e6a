//! Second-order preconditioners and optimizers against dense computation in
//! f64: Kronecker blocks against `(B ⊗ A + λI)` built and solved densely,
//! KFLR against the exact GGN blocks where it is exact, fractional powers
//! against a dense eigendecomposition, Newton-CG against the Newton step,
//! and the safeguard against a step that overflows.

use std::collections::HashMap;

use secondo::curvature::{compute_quantities, Curvature, CurvatureOperator, Quantity};
use secondo::data::{Dataset, Targets};
use secondo::linalg::{dense_symmetric_eigen, CgOptions, DenseSymmetric};
use secondo::second_order::{
    martens_cg, CurvatureBatch, DensePreconditioner, DeterminantalPreconditioner,
    DiagonalPreconditioner, Eigenvalues, FactorDamping, KroneckerPreconditioner,
    LowRankPreconditioner, MartensOptions, MatrixFreePreconditioner, Method, ParamGroup,
    Preconditioner, SecondOrderConfig, Structure, Subsampling, TrainingPass, MARTENS_XI,
};
use secondo::train::{train, OptimizerChoice, TrainConfig};
use secondo::{Objective, ObjectiveConfig};
use secondo_nn::ParamStore;
use secondo_tensor::{DType, Tensor};

/// Seeded values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn objective(spec: &str, inputs: usize, loss: &str) -> Objective {
    Objective::from_config(&ObjectiveConfig {
        spec: spec.into(),
        input_shape: vec![inputs],
        loss: loss.into(),
        dtype: DType::F64,
        ..ObjectiveConfig::default()
    })
    .unwrap()
}

/// `n` samples of `inputs` features: regression targets of `width` values,
/// or labels of `width` classes.
fn data(n: usize, inputs: usize, width: usize, classes: bool) -> Dataset {
    let x = values(n * inputs, 1);
    let y = if classes {
        Targets::Classes {
            labels: (0..n).map(|i| (i % width) as i64).collect(),
            num_classes: width,
        }
    } else {
        Targets::Values {
            values: values(n * width, 2),
            width,
        }
    };
    Dataset::new(x, vec![inputs], y, "test").unwrap()
}

fn batch<'a>(obj: &'a Objective, params: &'a ParamStore, data: &'a Dataset) -> CurvatureBatch<'a> {
    CurvatureBatch {
        objective: obj,
        params,
        data: data.clone(),
        seed: 0,
        output: None,
        loss: None,
    }
}

/// The engine's Kronecker factors of the batch, by name.
fn factors(obj: &Objective, params: &ParamStore, data: &Dataset) -> HashMap<String, Vec<f64>> {
    let b = batch(obj, params, data);
    let (x, y) = b.tensors().unwrap();
    compute_quantities(obj, params, &x, &y, &[Quantity::Kflr], None)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.to_f64_vec()))
        .collect()
}

/// Row-major `B ⊗ A`.
fn kron(b: &[f64], nb: usize, a: &[f64], na: usize) -> Vec<f64> {
    let n = nb * na;
    let mut k = vec![0.0; n * n];
    for i in 0..nb {
        for j in 0..na {
            for p in 0..nb {
                for q in 0..na {
                    k[(i * na + j) * n + p * na + q] = b[i * nb + p] * a[j * na + q];
                }
            }
        }
    }
    k
}

fn plus_identity(m: &[f64], n: usize, lambda: f64) -> Vec<f64> {
    let mut m = m.to_vec();
    (0..n).for_each(|i| m[i * n + i] += lambda);
    m
}

/// Solves `M x = v` by Gaussian elimination with partial pivoting.
fn solve(m: &[f64], v: &[f64]) -> Vec<f64> {
    let n = v.len();
    let mut a = m.to_vec();
    let mut x = v.to_vec();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))
            .unwrap();
        for k in 0..n {
            a.swap(c * n + k, p * n + k);
        }
        x.swap(c, p);
        for r in c + 1..n {
            let f = a[r * n + c] / a[c * n + c];
            for k in c..n {
                a[r * n + k] -= f * a[c * n + k];
            }
            x[r] -= f * x[c];
        }
    }
    for c in (0..n).rev() {
        let s: f64 = (c + 1..n).map(|k| a[c * n + k] * x[k]).sum();
        x[c] = (x[c] - s) / a[c * n + c];
    }
    x
}

/// `M^(-α) v` by a dense eigendecomposition.
fn dense_power(m: &[f64], v: &[f64], alpha: f64) -> Vec<f64> {
    let n = v.len();
    let e = dense_symmetric_eigen(&DenseSymmetric::new(n, m.to_vec()).unwrap()).unwrap();
    let mut out = vec![0.0; n];
    for (j, w) in e.values.iter().enumerate() {
        let q = e.vector(j).unwrap();
        let c: f64 = q.iter().zip(v).map(|(a, b)| a * b).sum::<f64>() * w.powf(-alpha);
        out.iter_mut().zip(q).for_each(|(o, q)| *o += c * q);
    }
    out
}

fn matvec(m: &[f64], v: &[f64]) -> Vec<f64> {
    m.chunks(v.len())
        .map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0.0_f64, |m, x| m.max(x.abs())).max(1e-300);
    let err = a
        .iter()
        .zip(b)
        .fold(0.0_f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        err <= tol * scale,
        "{what}: max error {err:e}, scale {scale:e}"
    );
}

/// The blocks of a network's flat vector: `(name, offset, size)`.
fn blocks(obj: &Objective) -> Vec<(String, usize, usize)> {
    let mut at = 0;
    obj.network
        .params()
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            at += n;
            (p.name.clone(), at - n, n)
        })
        .collect()
}

/// The dense damped block of parameter `name` from the engine's factors:
/// `B ⊗ A` for a weight, `B` for a bias.
fn dense_block(
    f: &HashMap<String, Vec<f64>>,
    name: &str,
) -> (Vec<f64>, Vec<f64>, Option<Vec<f64>>) {
    let b = f[&format!("kflr/{name}/out")].clone();
    let a = f.get(&format!("kflr/{name}/in")).cloned();
    let nb = (b.len() as f64).sqrt() as usize;
    let full = match &a {
        Some(a) => kron(&b, nb, a, (a.len() as f64).sqrt() as usize),
        None => b.clone(),
    };
    (full, b, a)
}

const MLP: &str = "linear(5,4),tanh,linear(4,3)";

fn kflr(obj: &Objective, damping: FactorDamping) -> KroneckerPreconditioner {
    KroneckerPreconditioner::new(
        obj,
        &ParamGroup::all(obj),
        Curvature::Ggn,
        damping,
        Eigenvalues::Kronecker,
        0.0,
    )
    .unwrap()
}

/// The KFLR preconditioner of the MLP on 6 samples at parameters seeded by
/// `seed`, with the engine's factors it was built from.
struct Fitted {
    obj: Objective,
    params: ParamStore,
    p: KroneckerPreconditioner,
    f: HashMap<String, Vec<f64>>,
}

fn fitted_kflr(damping: FactorDamping, seed: u64) -> Fitted {
    let obj = objective(MLP, 5, "cross_entropy");
    let params = ParamStore::init(obj.network.spec(), seed, DType::F64);
    let d = data(6, 5, 3, true);
    let mut p = kflr(&obj, damping);
    p.update(&batch(&obj, &params, &d), true).unwrap();
    let f = factors(&obj, &params, &d);
    Fitted { obj, params, p, f }
}

/// The gradient of the loss on all of `d`.
fn gradient(obj: &Objective, params: &ParamStore, d: &Dataset) -> Vec<Tensor> {
    let (x, y) = batch(obj, params, d).tensors().unwrap();
    obj.program(d.len(), true)
        .unwrap()
        .run(params, x, y)
        .unwrap()
        .grads
}

#[test]
fn kflr_blocks_solve_the_dense_damped_kronecker_system() {
    let Fitted { obj, params, p, f } = fitted_kflr(FactorDamping::Tikhonov, 3);
    let v = values(params.numel(), 7);
    let lambda = 0.3;
    let x = p.solve(&v, lambda, 1.0).unwrap();
    for (name, at, n) in blocks(&obj) {
        let (full, _, _) = dense_block(&f, &name);
        let expected = solve(&plus_identity(&full, n, lambda), &v[at..at + n]);
        assert_close(&x[at..at + n], &expected, 1e-10, &name);
        let quadratic: f64 = v[at..at + n]
            .iter()
            .zip(matvec(&full, &v[at..at + n]))
            .map(|(a, b)| a * b)
            .sum();
        let mut only = vec![0.0; v.len()];
        only[at..at + n].copy_from_slice(&v[at..at + n]);
        let got = p.curvature(&only).unwrap();
        assert!(
            (got - quadratic).abs() <= 1e-10 * quadratic.abs(),
            "{name}: vᵀCv"
        );
    }
}

#[test]
fn factored_damping_is_the_kronecker_product_of_damped_factors() {
    let Fitted { obj, params, p, f } = fitted_kflr(FactorDamping::Factored, 4);
    let v = values(params.numel(), 8);
    // The inverse factors are kept per damping: a changed one rebuilds them.
    for lambda in [0.05, 0.5, 0.05] {
        check_factored_solve(&obj, &p, &f, &v, lambda);
    }
}

fn check_factored_solve(
    obj: &Objective,
    p: &KroneckerPreconditioner,
    f: &HashMap<String, Vec<f64>>,
    v: &[f64],
    lambda: f64,
) {
    let x = p.solve(v, lambda, 1.0).unwrap();
    for (name, at, n) in blocks(obj) {
        let (full, b, a) = dense_block(f, &name);
        let expected = match a {
            Some(a) => {
                let (nb, na) = (
                    (b.len() as f64).sqrt() as usize,
                    (a.len() as f64).sqrt() as usize,
                );
                let trace =
                    |m: &[f64], k: usize| (0..k).map(|i| m[i * k + i]).sum::<f64>() / k as f64;
                let pi = (trace(&a, na) / trace(&b, nb)).sqrt();
                let damped = kron(
                    &plus_identity(&b, nb, lambda.sqrt() / pi),
                    nb,
                    &plus_identity(&a, na, pi * lambda.sqrt()),
                    na,
                );
                solve(&damped, &v[at..at + n])
            }
            None => solve(&plus_identity(&full, n, lambda), &v[at..at + n]),
        };
        assert_close(&x[at..at + n], &expected, 1e-10, &name);
    }
}

#[test]
fn fractional_powers_match_a_dense_eigendecomposition() {
    let Fitted { obj, params, p, f } = fitted_kflr(FactorDamping::Tikhonov, 5);
    let v = values(params.numel(), 9);
    for alpha in [0.5, 0.25] {
        let x = p.solve(&v, 0.1, alpha).unwrap();
        for (name, at, n) in blocks(&obj) {
            let (full, _, _) = dense_block(&f, &name);
            let expected = dense_power(&plus_identity(&full, n, 0.1), &v[at..at + n], alpha);
            assert_close(
                &x[at..at + n],
                &expected,
                1e-10,
                &format!("{name} α={alpha}"),
            );
        }
    }
}

/// The exact GGN block of one parameter.
fn ggn_block(
    obj: &Objective,
    params: &ParamStore,
    d: &Dataset,
    name: &str,
    kind: Curvature,
) -> Vec<f64> {
    CurvatureOperator::new(obj, params, d, d.len(), kind, Some(&[name]))
        .unwrap()
        .to_dense()
        .unwrap()
}

/// Asserts that the KFLR preconditioner inverts every exact damped GGN block.
fn assert_kflr_inverts_exact_blocks(obj: &Objective, d: &Dataset, seed: u64) {
    let params = ParamStore::init(obj.network.spec(), seed, DType::F64);
    let mut p = kflr(obj, FactorDamping::Tikhonov);
    p.update(&batch(obj, &params, d), true).unwrap();
    let v = values(params.numel(), seed + 1);
    let x = p.solve(&v, 1e-3, 1.0).unwrap();
    for (name, at, n) in blocks(obj) {
        let g = ggn_block(obj, &params, d, &name, Curvature::Ggn);
        let expected = solve(&plus_identity(&g, n, 1e-3), &v[at..at + n]);
        assert_close(&x[at..at + n], &expected, 1e-10, &name);
    }
}

#[test]
fn kflr_is_the_exact_block_ggn_of_a_deep_linear_network_with_mse() {
    let obj = objective("linear(4,3),linear(3,3),linear(3,2)", 4, "mse");
    assert_kflr_inverts_exact_blocks(&obj, &data(7, 4, 2, false), 11);
}

#[test]
fn kflr_is_exact_for_one_sample_through_a_nonlinear_network() {
    let obj = objective("linear(4,3),tanh,linear(3,3)", 4, "cross_entropy");
    assert_kflr_inverts_exact_blocks(&obj, &data(1, 4, 3, true), 12);
}

#[test]
fn ekfac_eigenvalues_are_the_empirical_fishers_diagonal_in_the_kronecker_basis() {
    let obj = objective(MLP, 5, "cross_entropy");
    let params = ParamStore::init(obj.network.spec(), 6, DType::F64);
    let d = data(5, 5, 3, true);
    let mut p = KroneckerPreconditioner::new(
        &obj,
        &ParamGroup::all(&obj),
        Curvature::EmpiricalFisher,
        FactorDamping::Tikhonov,
        Eigenvalues::Corrected,
        0.0,
    )
    .unwrap();
    p.update(&batch(&obj, &params, &d), true).unwrap();
    let f = factors(&obj, &params, &d);
    let (at, n) = (0, 20);
    let ef = ggn_block(&obj, &params, &d, "0.weight", Curvature::EmpiricalFisher);
    let (b, a) = (&f["kflr/0.weight/out"], &f["kflr/0.weight/in"]);
    let eb = dense_symmetric_eigen(&DenseSymmetric::new(4, b.clone()).unwrap()).unwrap();
    let ea = dense_symmetric_eigen(&DenseSymmetric::new(5, a.clone()).unwrap()).unwrap();
    for i in 0..4 {
        for j in 0..5 {
            let (qb, qa) = (eb.vector(i).unwrap(), ea.vector(j).unwrap());
            let u: Vec<f64> = qb
                .iter()
                .flat_map(|x| qa.iter().map(move |y| x * y))
                .collect();
            let exact: f64 = u.iter().zip(matvec(&ef, &u)).map(|(a, b)| a * b).sum();
            let mut only = vec![0.0; params.numel()];
            only[at..at + n].copy_from_slice(&u);
            let got = p.curvature(&only).unwrap();
            assert!(
                (got - exact).abs() <= 1e-10 * exact.abs().max(1e-12),
                "({i}, {j}): {got} vs {exact}"
            );
        }
    }
}

#[test]
fn dense_ngd_solves_the_damped_system_and_its_square_root_twice_is_the_inverse() {
    let obj = objective(MLP, 5, "cross_entropy");
    let params = ParamStore::init(obj.network.spec(), 7, DType::F64);
    let d = data(6, 5, 3, true);
    for kind in [Curvature::Ggn, Curvature::EmpiricalFisher] {
        let mut p = DensePreconditioner::new(&obj, ParamGroup::all(&obj), kind, "ngd").unwrap();
        p.update(&batch(&obj, &params, &d), true).unwrap();
        let op = CurvatureOperator::new(&obj, &params, &d, d.len(), kind, None).unwrap();
        let v = values(params.numel(), 3);
        let x = p.solve(&v, 0.01, 1.0).unwrap();
        let back: Vec<f64> = op
            .apply(&x)
            .unwrap()
            .iter()
            .zip(&x)
            .map(|(a, b)| a + 0.01 * b)
            .collect();
        assert_close(&back, &v, 1e-9, &format!("{kind}: (C + λI) x = v"));
        let half = p
            .solve(&p.solve(&v, 0.01, 0.5).unwrap(), 0.01, 0.5)
            .unwrap();
        assert_close(&half, &x, 1e-9, &format!("{kind}: α = 1/2 twice"));
    }
}

#[test]
fn diagonal_preconditioners_divide_by_the_dense_diagonal() {
    let obj = objective(MLP, 5, "cross_entropy");
    let params = ParamStore::init(obj.network.spec(), 8, DType::F64);
    let d = data(6, 5, 3, true);
    let v = values(params.numel(), 4);
    for kind in [
        Curvature::Ggn,
        Curvature::EmpiricalFisher,
        Curvature::Hessian,
    ] {
        let mut p = DiagonalPreconditioner::new(ParamGroup::all(&obj), kind, 0.0);
        p.update(&batch(&obj, &params, &d), true).unwrap();
        let dense = CurvatureOperator::new(&obj, &params, &d, d.len(), kind, None)
            .unwrap()
            .to_dense()
            .unwrap();
        let n = v.len();
        let expected: Vec<f64> = (0..n)
            .map(|i| v[i] / (dense[i * n + i].max(0.0) + 0.2))
            .collect();
        assert_close(
            &p.solve(&v, 0.2, 1.0).unwrap(),
            &expected,
            1e-10,
            &kind.to_string(),
        );
    }
}

#[test]
fn matrix_free_cg_solves_the_damped_curvature_system() {
    let obj = objective(MLP, 5, "cross_entropy");
    let params = ParamStore::init(obj.network.spec(), 9, DType::F64);
    let d = data(6, 5, 3, true);
    let options = CgOptions {
        tol: 1e-12,
        max_iter: 500,
    };
    let mut p = MatrixFreePreconditioner::new(ParamGroup::all(&obj), Curvature::Ggn, options, 1);
    p.update(&batch(&obj, &params, &d), true).unwrap();
    let v = values(params.numel(), 5);
    let x = p.solve(&v, 0.05, 1.0).unwrap();
    let dense = ggn_block_all(&obj, &params, &d);
    let expected = solve(&plus_identity(&dense, v.len(), 0.05), &v);
    assert_close(&x, &expected, 1e-8, "CG against Gaussian elimination");
}

#[test]
fn matrix_free_fractional_powers_by_lanczos_match_the_dense_eigendecomposition() {
    let obj = objective(MLP, 5, "cross_entropy");
    let params = ParamStore::init(obj.network.spec(), 9, DType::F64);
    let d = data(6, 5, 3, true);
    let dim = params.numel();
    let dense = ggn_block_all(&obj, &params, &d);
    let eig = dense_symmetric_eigen(&DenseSymmetric::new(dim, dense).unwrap()).unwrap();
    let v = values(dim, 5);
    let (lambda, alpha) = (0.05, 0.5);
    // Q diag((max(c, 0) + λ)^(-α)) Qᵀ v.
    let mut expected = vec![0.0; dim];
    for (c, q) in eig.values.iter().zip(eig.vectors.chunks_exact(dim)) {
        let along =
            q.iter().zip(&v).map(|(q, v)| q * v).sum::<f64>() * (c.max(0.0) + lambda).powf(-alpha);
        expected
            .iter_mut()
            .zip(q)
            .for_each(|(e, q)| *e += along * q);
    }
    let relative = |steps| {
        let mut p = MatrixFreePreconditioner::new(
            ParamGroup::all(&obj),
            Curvature::Ggn,
            CgOptions::default(),
            steps,
        );
        p.update(&batch(&obj, &params, &d), true).unwrap();
        let x = p.solve(&v, lambda, alpha).unwrap();
        let error: f64 = x.iter().zip(&expected).map(|(x, e)| (x - e).powi(2)).sum();
        (error / expected.iter().map(|e| e * e).sum::<f64>()).sqrt()
    };
    let exact = relative(dim);
    assert!(exact < 1e-10, "k = dim: relative error {exact}");
    // Two steps see only part of the spectrum.
    let short = relative(2);
    assert!(
        short > 1e3 * exact.max(1e-14),
        "k = 2: relative error {short}"
    );
}

/// `U (Λ + λ)^(-α) Uᵀ v + (bulk + λ)^(-α) (v − UUᵀv)` for the top `k`
/// eigenpairs (ascending `eig`, `k` of `n` from the end), eigenvalues
/// below zero taken as zero.
fn low_rank_power(
    eig: &secondo::linalg::SymmetricEigen,
    k: usize,
    bulk: f64,
    v: &[f64],
    (lambda, alpha): (f64, f64),
) -> Vec<f64> {
    let n = v.len();
    let f = |c: f64| (c.max(0.0) + lambda).powf(-alpha);
    let mut out: Vec<f64> = v.iter().map(|x| f(bulk) * x).collect();
    for (c, q) in eig
        .values
        .iter()
        .zip(eig.vectors.chunks_exact(n))
        .skip(n - k)
    {
        let along = q.iter().zip(v).map(|(q, v)| q * v).sum::<f64>() * (f(*c) - f(bulk));
        out.iter_mut().zip(q).for_each(|(o, q)| *o += along * q);
    }
    out
}

/// The low-rank preconditioner of the top `k` GGN eigenpairs with `probes`
/// bulk probes, refreshed on `d`.
fn low_rank(
    obj: &Objective,
    params: &ParamStore,
    d: &Dataset,
    k: usize,
    probes: usize,
) -> LowRankPreconditioner {
    let mut p =
        LowRankPreconditioner::new(ParamGroup::all(obj), Curvature::Ggn, k, probes).unwrap();
    p.update(&batch(obj, params, d), true).unwrap();
    p
}

#[test]
fn low_rank_with_every_eigenpair_is_the_dense_fractional_power() {
    let obj = objective(MLP, 5, "cross_entropy");
    let params = ParamStore::init(obj.network.spec(), 9, DType::F64);
    let d = data(6, 5, 3, true);
    let dim = params.numel();
    let dense = ggn_block_all(&obj, &params, &d);
    let v = values(dim, 5);
    let p = low_rank(&obj, &params, &d, dim, 4);
    assert_eq!(p.spectrum().unwrap().1, 0.0, "no bulk is left");
    for (lambda, alpha) in [(0.05, 0.5), (0.05, 1.0), (1e-3, 0.25)] {
        let expected = dense_power(&plus_identity(&dense, dim, lambda), &v, alpha);
        let x = p.solve(&v, lambda, alpha).unwrap();
        assert_close(&x, &expected, 1e-10, &format!("λ = {lambda}, α = {alpha}"));
    }
}

#[test]
fn low_rank_is_the_dense_top_eigenpairs_plus_the_mean_of_the_rest() {
    let obj = objective(MLP, 5, "cross_entropy");
    let params = ParamStore::init(obj.network.spec(), 9, DType::F64);
    let d = data(6, 5, 3, true);
    let dim = params.numel();
    let eig =
        dense_symmetric_eigen(&DenseSymmetric::new(dim, ggn_block_all(&obj, &params, &d)).unwrap())
            .unwrap();
    let k = 4;
    let largest = eig.values[dim - 1];
    // The GGN of 6 samples and 3 classes has rank 12: a bulk to estimate.
    let rest: f64 = eig.values[..dim - k].iter().sum::<f64>() / (dim - k) as f64;
    assert!(rest > 1e-3 * largest, "bulk {rest}, largest {largest}");
    let v = values(dim, 5);
    let p = low_rank(&obj, &params, &d, k, 4096);
    let (top, bulk) = p.spectrum().unwrap();
    let descending: Vec<f64> = eig.values.iter().rev().take(k).copied().collect();
    assert_close(top, &descending, 1e-10, "the top eigenvalues");
    // The probes' estimate of the bulk's mean (exact in expectation:
    // lowrank.rs's unit test with basis probes).
    assert!(
        (bulk - rest).abs() < 0.05 * rest,
        "bulk {bulk}, exact {rest}"
    );
    for (lambda, alpha) in [(0.05, 0.5), (1e-3, 1.0)] {
        let expected = low_rank_power(&eig, k, bulk, &v, (lambda, alpha));
        let x = p.solve(&v, lambda, alpha).unwrap();
        assert_close(&x, &expected, 1e-10, &format!("λ = {lambda}, α = {alpha}"));
    }
    // vᵀCv of the model.
    let model: f64 = low_rank_power(&eig, k, bulk, &v, (0.0, -1.0))
        .iter()
        .zip(&v)
        .map(|(a, b)| a * b)
        .sum();
    let got = p.curvature(&v).unwrap();
    assert!(
        (got - model).abs() < 1e-10 * model.abs(),
        "{got} against {model}"
    );
}

fn ggn_block_all(obj: &Objective, params: &ParamStore, d: &Dataset) -> Vec<f64> {
    CurvatureOperator::new(obj, params, d, d.len(), Curvature::Ggn, None)
        .unwrap()
        .to_dense()
        .unwrap()
}

#[test]
fn martens_cg_run_to_convergence_is_the_dense_damped_solve() {
    let n = 6;
    let r = values(n * n, 13);
    // M = RᵀR, positive semi-definite.
    let m: Vec<f64> = (0..n * n)
        .map(|k| (0..n).map(|l| r[l * n + k / n] * r[l * n + k % n]).sum())
        .collect();
    let b = values(n, 14);
    let lambda = 0.1;
    let options = MartensOptions {
        max_iter: 200,
        tolerance: 1e-14,
    };
    let cg = martens_cg(
        &mut |v| Ok(matvec(&m, v)),
        &b,
        lambda,
        vec![0.0; n],
        None,
        &options,
    )
    .unwrap();
    assert_close(
        cg.last(),
        &solve(&plus_identity(&m, n, lambda), &b),
        1e-10,
        "CG",
    );
    assert!(cg
        .iterates
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[1].2 <= w[0].2 + 1e-15));
    // Warm-started at the solution, the first iterate is already there.
    let warm = martens_cg(
        &mut |v| Ok(matvec(&m, v)),
        &b,
        lambda,
        cg.last().to_vec(),
        None,
        &options,
    )
    .unwrap();
    assert_close(&warm.iterates[0].1, cg.last(), 1e-10, "warm start");
}

#[test]
fn diagonally_preconditioned_martens_cg_solves_the_same_damped_system_faster() {
    let n = 8;
    let r = values(n * n, 21);
    // A = S (RᵀR/n + I) S with scales S from 10⁻² to 10²: the spread of its
    // curvature is on its diagonal, which is what the preconditioner takes.
    let scale: Vec<f64> = (0..n)
        .map(|i| 10f64.powf(-2.0 + 4.0 * i as f64 / (n - 1) as f64))
        .collect();
    let a: Vec<f64> = (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            let gram: f64 = (0..n).map(|l| r[l * n + i] * r[l * n + j]).sum::<f64>() / n as f64;
            scale[i] * scale[j] * (gram + f64::from(u8::from(i == j)))
        })
        .collect();
    let b = values(n, 22);
    let lambda = 1e-3;
    let inverse: Vec<f64> = (0..n)
        .map(|i| (a[i * n + i] + lambda).powf(-MARTENS_XI))
        .collect();
    let exact = solve(&plus_identity(&a, n, lambda), &b);
    let run = |inverse: Option<&[f64]>, max_iter| {
        let options = MartensOptions {
            max_iter,
            tolerance: 1e-15,
        };
        martens_cg(
            &mut |v| Ok(matvec(&a, v)),
            &b,
            lambda,
            vec![0.0; n],
            inverse,
            &options,
        )
        .unwrap()
    };
    let converged = run(Some(&inverse), 200);
    let error = |x: &[f64]| {
        let d: Vec<f64> = x.iter().zip(&exact).map(|(x, e)| x - e).collect();
        (d.iter().map(|d| d * d).sum::<f64>() / exact.iter().map(|e| e * e).sum::<f64>()).sqrt()
    };
    assert!(
        error(converged.last()) < 1e-10,
        "{}",
        error(converged.last())
    );
    // φ after four iterations: ten times nearer its minimum with the preconditioner.
    let phi = |cg: &secondo::second_order::MartensCg| cg.iterates.last().unwrap().2;
    let (plain, preconditioned) = (run(None, 4), run(Some(&inverse), 4));
    let best = phi(&converged);
    assert!(
        phi(&preconditioned) - best < 0.1 * (phi(&plain) - best),
        "φ − φ*: preconditioned {}, plain {}",
        phi(&preconditioned) - best,
        phi(&plain) - best
    );
}

#[test]
fn newton_cg_with_the_diagonal_preconditioner_takes_the_damped_newton_step() {
    use secondo::second_order::CgPreconditioning;
    let obj = objective("linear(3,2)", 3, "mse");
    let d = data(20, 3, 2, false);
    let lambda = 0.1;
    let params = ParamStore::init(obj.network.spec(), 1, DType::F64);
    let grads = gradient(&obj, &params, &d);
    let g: Vec<f64> = grads.iter().flat_map(Tensor::to_f64_vec).collect();
    let ggn = CurvatureOperator::new(&obj, &params, &d, d.len(), Curvature::Ggn, None)
        .unwrap()
        .to_dense()
        .unwrap();
    let damped: Vec<f64> = solve(&plus_identity(&ggn, g.len(), lambda), &g)
        .iter()
        .map(|x| -x)
        .collect();
    for preconditioning in [CgPreconditioning::None, CgPreconditioning::Diagonal] {
        let mut moved = params.clone();
        let config = SecondOrderConfig {
            damping: lambda,
            cg_precondition: preconditioning,
            ..newton_cg(Curvature::Ggn)
        };
        let mut opt = config.build(&obj, &ParamGroup::all(&obj), 0).unwrap();
        assert!(
            opt.step(&obj, &mut moved, &d, &TrainingPass::gradient(&grads))
                .unwrap()
                .accepted
        );
        let step: Vec<f64> = moved
            .iter()
            .zip(params.iter())
            .flat_map(|((_, a), (_, b))| {
                a.to_f64_vec()
                    .into_iter()
                    .zip(b.to_f64_vec())
                    .map(|(a, b)| a - b)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_close(
            &step,
            &damped,
            1e-9,
            &format!("{preconditioning}: −(G + λI)⁻¹ g"),
        );
    }
    let zero = SecondOrderConfig {
        damping: 0.0,
        cg_precondition: CgPreconditioning::Diagonal,
        ..newton_cg(Curvature::Ggn)
    };
    assert!(zero
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("--cg-precondition diag needs --damping > 0"));
    let kfac = SecondOrderConfig {
        cg_precondition: CgPreconditioning::Diagonal,
        ..SecondOrderConfig::new(Method::Kfac)
    };
    assert!(kfac
        .validate()
        .unwrap_err()
        .to_string()
        .contains("only newton-cg runs CG"));
}

fn newton_cg(curvature: Curvature) -> SecondOrderConfig {
    SecondOrderConfig {
        damping: 0.0,
        curvature,
        cg_iters: 200,
        ..SecondOrderConfig::new(Method::NewtonCg)
    }
}

#[test]
fn newton_cg_takes_the_newton_step_on_least_squares() {
    let obj = objective("linear(3,2)", 3, "mse");
    let d = data(20, 3, 2, false);
    for kind in [Curvature::Hessian, Curvature::Ggn] {
        let mut params = ParamStore::init(obj.network.spec(), 1, DType::F64);
        let grads = gradient(&obj, &params, &d);
        let g: Vec<f64> = grads.iter().flat_map(Tensor::to_f64_vec).collect();
        let h = CurvatureOperator::new(&obj, &params, &d, d.len(), Curvature::Hessian, None)
            .unwrap()
            .to_dense()
            .unwrap();
        let newton = solve(&h, &g);
        let before: Vec<f64> = params.iter().flat_map(|(_, t)| t.to_f64_vec()).collect();
        let mut opt = newton_cg(kind)
            .build(&obj, &ParamGroup::all(&obj), 0)
            .unwrap();
        let report = opt
            .step(&obj, &mut params, &d, &TrainingPass::gradient(&grads))
            .unwrap();
        assert!(report.accepted, "{kind}");
        let after: Vec<f64> = params.iter().flat_map(|(_, t)| t.to_f64_vec()).collect();
        let step: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let expected: Vec<f64> = newton.iter().map(|x| -x).collect();
        assert_close(&step, &expected, 1e-9, &format!("{kind}: the Newton step"));
    }
}

#[test]
fn a_step_that_overflows_is_rejected_and_the_damping_raised() {
    let obj = objective(MLP, 5, "mse");
    let d = data(6, 5, 3, false);
    for method in [Method::Ngd, Method::Kfac, Method::NewtonCg] {
        let mut params = ParamStore::init(obj.network.spec(), 2, DType::F64);
        let before = params.clone();
        let grads = gradient(&obj, &params, &d);
        // Steps of infinite values, and steps to weights whose loss overflows.
        for lr in [f64::MAX, 1e200] {
            let config = SecondOrderConfig {
                lr,
                kl_clip: None,
                ..SecondOrderConfig::new(method)
            };
            let mut opt = config.build(&obj, &ParamGroup::all(&obj), 0).unwrap();
            let report = opt
                .step(&obj, &mut params, &d, &TrainingPass::gradient(&grads))
                .unwrap();
            assert!(!report.accepted, "{method}, lr {lr}");
            assert!(report.damping > config.damping, "{method}: {report:?}");
            for ((_, a), (_, b)) in params.iter().zip(before.iter()) {
                assert_eq!(a.to_f64_vec(), b.to_f64_vec(), "{method}: parameters moved");
            }
        }
    }
}

#[test]
fn training_with_an_exploding_learning_rate_keeps_the_weights_finite() {
    let obj = objective(MLP, 5, "cross_entropy");
    let d = data(40, 5, 3, true);
    let mut params = ParamStore::init(obj.network.spec(), 0, DType::F64);
    let config = TrainConfig {
        epochs: 2,
        batch_size: 10,
        optimizer: OptimizerChoice::SecondOrder(SecondOrderConfig {
            lr: 1e300,
            ..SecondOrderConfig::new(Method::Ngd)
        }),
        seed: 0,
        ..TrainConfig::default()
    };
    let eval = train(&obj, &mut params, &d, &config, |_| {}).unwrap();
    assert!(eval.loss.is_finite());
    assert!(params.iter().all(|(_, t)| t.first_non_finite().is_none()));
}

fn trained(method: Method, seed: u64) -> (f64, Vec<f64>) {
    let obj = Objective::from_config(&ObjectiveConfig {
        spec: "linear(64,16),tanh,linear(16,10)".into(),
        input_shape: vec![64],
        ..ObjectiveConfig::default()
    })
    .unwrap();
    let d = secondo::data::digits()
        .select(&(0..256).collect::<Vec<_>>())
        .unwrap();
    let mut params = ParamStore::init(obj.network.spec(), seed, obj.dtype);
    let start = secondo::train::evaluate(&obj, &params, &d, 256)
        .unwrap()
        .loss;
    let config = TrainConfig {
        epochs: 3,
        batch_size: 64,
        optimizer: OptimizerChoice::SecondOrder(SecondOrderConfig {
            adapt_damping: true,
            ..SecondOrderConfig::new(method)
        }),
        seed,
        ..TrainConfig::default()
    };
    train(&obj, &mut params, &d, &config, |_| {}).unwrap();
    let end = secondo::train::evaluate(&obj, &params, &d, 256)
        .unwrap()
        .loss;
    assert!(end < 0.6 * start, "{method}: loss {start} → {end}");
    (
        end,
        params.iter().flat_map(|(_, t)| t.to_f64_vec()).collect(),
    )
}

#[test]
fn every_method_trains_and_repeats_bit_for_bit() {
    for method in [
        Method::NewtonCg,
        Method::Kfac,
        Method::Ekfac,
        Method::FractionalNgd,
    ] {
        let (_, first) = trained(method, 3);
        let (_, again) = trained(method, 3);
        assert_eq!(first, again, "{method}");
    }
}

#[test]
fn the_reduction_ratio_is_one_where_the_quadratic_model_is_exact() {
    // Least squares is its own quadratic model, for any damping and step.
    let obj = objective("linear(3,2)", 3, "mse");
    let d = data(20, 3, 2, false);
    for method in [Method::NewtonCg, Method::Ngd] {
        let mut params = ParamStore::init(obj.network.spec(), 1, DType::F64);
        let grads = gradient(&obj, &params, &d);
        let config = SecondOrderConfig {
            damping: 0.5,
            adapt_damping: true,
            lr: 0.7,
            ..SecondOrderConfig::new(method)
        };
        let report = config
            .build(&obj, &ParamGroup::all(&obj), 0)
            .unwrap()
            .step(&obj, &mut params, &d, &TrainingPass::gradient(&grads))
            .unwrap();
        let rho = report.rho.unwrap();
        assert!((rho - 1.0).abs() < 1e-9, "{method}: ρ = {rho}");
        assert_eq!(
            report.damping,
            0.5 / 1.5,
            "{method}: a good fit lowers the damping"
        );
    }
}

#[test]
fn late_phase_training_runs_the_first_order_optimizer_until_the_switch() {
    let obj = objective(MLP, 5, "cross_entropy");
    let d = data(40, 5, 3, true);
    let sgd = OptimizerChoice::parse("sgd", 0.1, 0.0, false, 0.0).unwrap();
    let kfac = OptimizerChoice::SecondOrder(SecondOrderConfig::new(Method::Kfac));
    let run = |optimizer, first_phase| {
        let mut params = ParamStore::init(obj.network.spec(), 0, DType::F64);
        let config = TrainConfig {
            epochs: 2,
            batch_size: 10,
            optimizer,
            seed: 0,
            first_phase,
            mixed: None,
        };
        train(&obj, &mut params, &d, &config, |_| {}).unwrap();
        params
            .iter()
            .flat_map(|(_, t)| t.to_f64_vec())
            .collect::<Vec<f64>>()
    };
    let phase = |until| {
        Some(secondo::train::FirstPhase {
            optimizer: sgd,
            until,
        })
    };
    use secondo::train::Switch;
    assert_eq!(
        run(kfac, phase(Switch::Step(8))),
        run(sgd, None),
        "never switched"
    );
    assert_eq!(
        run(kfac, phase(Switch::Step(0))),
        run(kfac, None),
        "switched at once"
    );
    let late = run(kfac, phase(Switch::Epoch(1)));
    assert!(late != run(sgd, None) && late != run(kfac, None));
}

#[test]
fn mixed_training_steps_each_group_as_its_own_optimizer_would() {
    let obj = objective(MLP, 5, "cross_entropy");
    let d = data(40, 5, 3, true);
    let sgd = OptimizerChoice::parse("sgd", 0.1, 0.0, false, 0.0).unwrap();
    // One step (the groups interact through later gradients); without
    // KL-clipping every block's step is its own, as SGD's is.
    let kfac = OptimizerChoice::SecondOrder(SecondOrderConfig {
        kl_clip: None,
        ..SecondOrderConfig::new(Method::Kfac)
    });
    let run = |optimizer, mixed: Option<&str>| {
        let mut params = ParamStore::init(obj.network.spec(), 0, DType::F64);
        let config = TrainConfig {
            epochs: 1,
            batch_size: 40,
            optimizer,
            seed: 0,
            first_phase: None,
            mixed: mixed.map(|p| secondo::train::Mixed {
                second_order: p.into(),
                first_order: sgd,
            }),
        };
        train(&obj, &mut params, &d, &config, |_| {}).unwrap();
        params
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_f64_vec()))
            .collect::<HashMap<_, _>>()
    };
    let (pure_sgd, pure_kfac) = (run(sgd, None), run(kfac, None));
    let mixed = run(kfac, Some("2.*"));
    for name in ["0.weight", "0.bias"] {
        assert_eq!(mixed[name], pure_sgd[name], "{name} is SGD's");
    }
    for name in ["2.weight", "2.bias"] {
        assert_eq!(mixed[name], pure_kfac[name], "{name} is KFAC's");
        assert_ne!(mixed[name], pure_sgd[name]);
    }
    assert_eq!(
        run(kfac, Some("*")),
        pure_kfac,
        "a pattern matching everything is plain KFAC"
    );
}

#[test]
fn martens_cg_stops_at_negative_curvature_keeping_its_iterates() {
    // diag(2, −1): the first direction b = (1, 1) has curvature 1, the next none.
    let m = [2.0, 0.0, 0.0, -1.0];
    let options = MartensOptions::default();
    let cg = martens_cg(
        &mut |v| Ok(matvec(&m, v)),
        &[1.0, 1.0],
        0.0,
        vec![0.0; 2],
        None,
        &options,
    )
    .unwrap();
    assert!(cg.negative_curvature);
    assert_eq!(cg.iterations, 1);
    assert_close(
        cg.last(),
        &[2.0, 2.0],
        1e-15,
        "the first CG iterate, (bᵀb / bᵀAb) b",
    );
}

#[test]
fn determinantal_averaging_over_every_subsample_is_the_exact_inverse() {
    // Least squares with one output: every sample's Hessian has rank one.
    let obj = objective("linear(3,1)", 3, "mse");
    let d = data(6, 3, 1, false);
    let params = ParamStore::init(obj.network.spec(), 2, DType::F64);
    let keep = 0.5;
    let mut p = determinantal(&obj, Structure::Dense, keep, 1);
    let n = d.len();
    let patterns: Vec<Vec<usize>> = (0..1usize << n)
        .map(|mask| (0..n).filter(|i| mask >> i & 1 == 1).collect())
        .collect();
    let priors: Vec<f64> = patterns
        .iter()
        .map(|s| keep.powi(s.len() as i32) * (1.0 - keep).powi((n - s.len()) as i32))
        .collect();
    p.fit_patterns(&batch(&obj, &params, &d), &patterns, &priors)
        .unwrap();
    let v = values(params.numel(), 21);
    let h = ggn_block_all(&obj, &params, &d);
    assert_close(
        &p.solve(&v, 0.0, 1.0).unwrap(),
        &solve(&h, &v),
        1e-9,
        "det-weighted average",
    );
    // One estimate on every sample is (C / p)⁻¹: each sub-sample is scaled
    // by the inverse keep probability, which only the average undoes.
    let full_only = [Vec::from_iter(0..n)];
    p.fit_patterns(&batch(&obj, &params, &d), &full_only, &[1.0])
        .unwrap();
    let scaled: Vec<f64> = solve(&h, &v).iter().map(|x| x * keep).collect();
    assert_close(
        &p.solve(&v, 0.0, 1.0).unwrap(),
        &scaled,
        1e-9,
        "one estimate: (C / p)⁻¹",
    );
}

/// det-avg of the `structure`'s estimates of the whole network's GGN,
/// keeping each sample with probability `keep`, over a window of `window`
/// refreshes.
fn determinantal(
    obj: &Objective,
    structure: Structure,
    keep: f64,
    window: usize,
) -> DeterminantalPreconditioner {
    let sampling = Subsampling {
        draws: 1,
        keep,
        window,
    };
    DeterminantalPreconditioner::new(
        obj,
        ParamGroup::all(obj),
        Curvature::Ggn,
        structure,
        sampling,
    )
    .unwrap()
}

/// `Σ_k det(M_k + λI) (M_k + λI)⁻¹ v / Σ_k det(M_k + λI)` by dense
/// determinants and solves, with the normalized weights.
fn dense_det_average(matrices: &[Vec<f64>], v: &[f64], lambda: f64) -> (Vec<f64>, Vec<f64>) {
    let n = v.len();
    let damped: Vec<Vec<f64>> = matrices
        .iter()
        .map(|m| plus_identity(m, n, lambda))
        .collect();
    let log_dets: Vec<f64> = damped
        .iter()
        .map(|m| {
            let e = dense_symmetric_eigen(&DenseSymmetric::new(n, m.clone()).unwrap()).unwrap();
            e.values.iter().map(|x| x.ln()).sum()
        })
        .collect();
    let top = log_dets.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = log_dets.iter().map(|l| (l - top).exp()).sum();
    let weights: Vec<f64> = log_dets.iter().map(|l| (l - top).exp() / total).collect();
    let mut out = vec![0.0; n];
    for (m, w) in damped.iter().zip(&weights) {
        out.iter_mut()
            .zip(solve(m, v))
            .for_each(|(o, x)| *o += w * x);
    }
    (out, weights)
}

/// Sub-samples of 6 samples, some overlapping.
const PATTERNS: [&[usize]; 3] = [&[0, 1, 2, 3], &[2, 3, 4, 5], &[0, 2, 4, 5]];

fn patterns() -> Vec<Vec<usize>> {
    PATTERNS.iter().map(|p| p.to_vec()).collect()
}

#[test]
fn det_avg_in_the_kfac_eigenbasis_is_the_dense_weighted_average_of_damped_kronecker_inverses() {
    let obj = objective(MLP, 5, "cross_entropy");
    let params = ParamStore::init(obj.network.spec(), 3, DType::F64);
    let d = data(6, 5, 3, true);
    let keep = 0.5;
    let lambda = 1e-2;
    let mut p = determinantal(&obj, Structure::Kronecker, keep, 1);
    p.fit_patterns(&batch(&obj, &params, &d), &patterns(), &[1.0; 3])
        .unwrap();
    let v = values(params.numel(), 31);
    let got = p.solve(&v, lambda, 1.0).unwrap();
    let weights = p.weights(lambda);
    // Each sub-sample's KFLR blocks, scaled by |S| / (p N) as the estimate is.
    let sub_factors: Vec<(HashMap<String, Vec<f64>>, f64)> = PATTERNS
        .iter()
        .map(|s| {
            let sub = d.select(s).unwrap();
            let scale = s.len() as f64 / (keep * d.len() as f64);
            (factors(&obj, &params, &sub), scale)
        })
        .collect();
    let blocks = blocks(&obj);
    assert_eq!(weights.len(), blocks.len(), "one set of weights per block");
    for ((name, at, size), w) in blocks.iter().zip(&weights) {
        let matrices: Vec<Vec<f64>> = sub_factors
            .iter()
            .map(|(f, scale)| dense_block(f, name).0.iter().map(|x| x * scale).collect())
            .collect();
        let (want, want_weights) = dense_det_average(&matrices, &v[*at..at + size], lambda);
        assert_close(&got[*at..at + size], &want, 1e-10, name);
        assert_close(w, &want_weights, 1e-10, &format!("{name}: weights"));
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{name}: {w:?}");
    }
}

#[test]
fn a_det_avg_window_weights_the_estimates_of_consecutive_refreshes_together() {
    let obj = objective("linear(3,2)", 3, "mse");
    let d = data(6, 3, 2, false);
    let keep = 0.5;
    let lambda = 1e-3;
    let mut p = determinantal(&obj, Structure::Dense, keep, 2);
    let v = values(
        obj.network
            .params()
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum(),
        5,
    );
    // Three refreshes at three parameters: the window keeps the last two.
    let mut matrices: Vec<Vec<Vec<f64>>> = Vec::new();
    for step in 0..3 {
        let params = ParamStore::init(obj.network.spec(), 10 + step, DType::F64);
        p.fit_patterns(&batch(&obj, &params, &d), &patterns(), &[1.0; 3])
            .unwrap();
        matrices.push(
            PATTERNS
                .iter()
                .map(|s| {
                    let scale = s.len() as f64 / (keep * d.len() as f64);
                    let h = ggn_block_all(&obj, &params, &d.select(s).unwrap());
                    h.iter().map(|x| x * scale).collect()
                })
                .collect(),
        );
        let window: Vec<Vec<f64>> = matrices[matrices.len().saturating_sub(2)..].concat();
        let (want, want_weights) = dense_det_average(&window, &v, lambda);
        let what = format!("refresh {step}");
        assert_close(&p.solve(&v, lambda, 1.0).unwrap(), &want, 1e-10, &what);
        assert_close(&p.weights(lambda)[0], &want_weights, 1e-10, &what);
    }
}

#[test]
fn det_avg_trains_least_squares() {
    let obj = objective("linear(3,2)", 3, "mse");
    let d = data(32, 3, 2, false);
    let mut params = ParamStore::init(obj.network.spec(), 4, DType::F64);
    let start = secondo::train::evaluate(&obj, &params, &d, 32)
        .unwrap()
        .loss;
    let config = TrainConfig {
        epochs: 5,
        batch_size: 16,
        optimizer: OptimizerChoice::SecondOrder(SecondOrderConfig {
            lr: 1.0,
            ..SecondOrderConfig::new(Method::DetAvg)
        }),
        seed: 0,
        ..TrainConfig::default()
    };
    train(&obj, &mut params, &d, &config, |_| {}).unwrap();
    let end = secondo::train::evaluate(&obj, &params, &d, 32)
        .unwrap()
        .loss;
    assert!(end < 0.7 * start, "loss {start} → {end}");
}

#[test]
fn the_quadratic_models_step_is_optimal_in_the_span_of_direction_and_previous_step() {
    // Least squares is its own quadratic model: after each step the new
    // gradient is orthogonal to the span the step was chosen in.
    let obj = objective("linear(3,2)", 3, "mse");
    let d = data(20, 3, 2, false);
    let mut params = ParamStore::init(obj.network.spec(), 6, DType::F64);
    let config = SecondOrderConfig {
        damping: 1e-12,
        adapt_damping: true,
        curvature: Curvature::Ggn,
        ..SecondOrderConfig::new(Method::Kfac)
    };
    let mut opt = config.build(&obj, &ParamGroup::all(&obj), 0).unwrap();
    let flat =
        |p: &ParamStore| -> Vec<f64> { p.iter().flat_map(|(_, t)| t.to_f64_vec()).collect() };
    let mut steps = Vec::new();
    for _ in 0..2 {
        let before = flat(&params);
        let grads = gradient(&obj, &params, &d);
        let report = opt
            .step(&obj, &mut params, &d, &TrainingPass::gradient(&grads))
            .unwrap();
        assert!(
            report.accepted && (report.rho.unwrap() - 1.0).abs() < 1e-8,
            "{report:?}"
        );
        steps.push(
            flat(&params)
                .iter()
                .zip(&before)
                .map(|(a, b)| a - b)
                .collect::<Vec<f64>>(),
        );
        let g: Vec<f64> = gradient(&obj, &params, &d)
            .iter()
            .flat_map(Tensor::to_f64_vec)
            .collect();
        let gn = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        for s in &steps[steps.len().saturating_sub(2)..] {
            let sn = s.iter().map(|x| x * x).sum::<f64>().sqrt();
            let cos = g.iter().zip(s).map(|(a, b)| a * b).sum::<f64>() / (gn * sn);
            assert!(
                cos.abs() < 1e-6,
                "gradient not orthogonal to the step: cos {cos:e}"
            );
        }
    }
}

/// A watched run: its records, the step the run's optimizer took over at,
/// and the final weights.
type Watched = (Vec<secondo::monitor::Record>, Option<usize>, Vec<f64>);

/// Trains with a monitor tracking `list` every step.
fn train_watched(
    obj: &Objective,
    d: &Dataset,
    config: &TrainConfig,
    list: &str,
) -> Result<Watched, secondo::Error> {
    use secondo::monitor::{Monitor, MonitorConfig, MonitorSetup};
    let mut params = ParamStore::init(obj.network.spec(), 0, DType::F64);
    let monitor_config = MonitorConfig::parse(list, 1).unwrap();
    let steps = d.len().div_ceil(config.batch_size) * config.epochs;
    let setup = MonitorSetup {
        config: &monitor_config,
        total_steps: steps,
        lr: 0.1,
        plain_sgd: false,
        probe: None,
        seed: 0,
    };
    let mut monitor = Monitor::new(obj, &params, setup).unwrap();
    let (mut records, mut switched_at) = (Vec::new(), None);
    secondo::train::train_monitored(
        obj,
        &mut params,
        d,
        config,
        &mut monitor,
        &mut |r| {
            records.extend(r);
            Ok(())
        },
        |p| switched_at = p.switched_at,
    )?;
    records.extend(monitor.finish());
    let flat = params.iter().flat_map(|(_, t)| t.to_f64_vec()).collect();
    Ok((records, switched_at, flat))
}

#[test]
fn switch_when_hands_over_the_step_after_a_record_meets_the_threshold() {
    use secondo::monitor::{Crossing, Instrument, Reading, Threshold};
    use secondo::train::{FirstPhase, Switch};
    let obj = objective(MLP, 5, "cross_entropy");
    let d = data(40, 5, 3, true);
    let sgd = OptimizerChoice::parse("sgd", 0.5, 0.0, false, 0.0).unwrap();
    let newton = OptimizerChoice::SecondOrder(SecondOrderConfig::new(Method::NewtonCg));
    let config = |until: Option<Switch>| TrainConfig {
        epochs: 4,
        batch_size: 10,
        optimizer: newton,
        seed: 0,
        first_phase: until.map(|until| FirstPhase {
            optimizer: sgd,
            until,
        }),
        mixed: None,
    };
    let when = |crossing, x| {
        Some(Switch::When(
            Threshold::new(Instrument::GradNorm, crossing, x).unwrap(),
        ))
    };
    // SGD throughout: a threshold no gradient norm falls below.
    let (records, never, sgd_only) =
        train_watched(&obj, &d, &config(when(Crossing::Below, 0.0)), "grad_norm").unwrap();
    assert_eq!(never, None);
    let mut plain = ParamStore::init(obj.network.spec(), 0, DType::F64);
    train(
        &obj,
        &mut plain,
        &d,
        &TrainConfig {
            optimizer: sgd,
            ..config(None)
        },
        |_| {},
    )
    .unwrap();
    let plain: Vec<f64> = plain.iter().flat_map(|(_, t)| t.to_f64_vec()).collect();
    assert_eq!(
        sgd_only, plain,
        "an unmet threshold leaves SGD's run as it is"
    );
    // The norm over all parameters of each step's gradient, as SGD runs.
    let norms: Vec<f64> = records
        .iter()
        .map(|r| Reading::Norm.apply(&r["grad_norm"]).unwrap())
        .collect();
    // A threshold between a step's norm and every norm before it, from step 3 on.
    let k = (3..norms.len())
        .find(|&k| norms[k] < norms[..k].iter().cloned().fold(f64::INFINITY, f64::min))
        .expect("a new lowest gradient norm");
    let x = 0.5 * (norms[k] + norms[..k].iter().cloned().fold(f64::INFINITY, f64::min));
    let (_, switched_at, params) =
        train_watched(&obj, &d, &config(when(Crossing::Below, x)), "grad_norm").unwrap();
    assert_eq!(switched_at, Some(k + 1), "norms {norms:?}, threshold {x}");
    let mut at_step = ParamStore::init(obj.network.spec(), 0, DType::F64);
    train(
        &obj,
        &mut at_step,
        &d,
        &config(Some(Switch::Step(k + 1))),
        |_| {},
    )
    .unwrap();
    let at_step: Vec<f64> = at_step.iter().flat_map(|(_, t)| t.to_f64_vec()).collect();
    assert_eq!(
        params,
        at_step,
        "the same run as --switch-at step={}",
        k + 1
    );
    assert_ne!(params, plain);
    // `>`: the loss rises above nothing it starts below; met at once, switched at step 1.
    let above = Some(Switch::When(
        Threshold::new(Instrument::Loss, Crossing::Above, 0.0).unwrap(),
    ));
    assert_eq!(
        train_watched(&obj, &d, &config(above), "loss").unwrap().1,
        Some(1)
    );
    // Without the monitor, or with a monitor that does not track it: refused.
    let mut p = ParamStore::init(obj.network.spec(), 0, DType::F64);
    let e = train(&obj, &mut p, &d, &config(when(Crossing::Below, x)), |_| {}).unwrap_err();
    assert!(e.to_string().starts_with("--switch-when grad_norm<"), "{e}");
    let e = train_watched(&obj, &d, &config(when(Crossing::Below, x)), "loss").unwrap_err();
    assert!(
        e.to_string().contains("the monitor must track grad_norm"),
        "{e}"
    );
}
