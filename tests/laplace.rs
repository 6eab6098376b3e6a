//! Laplace approximations against dense computations in f64: posterior
//! precisions against the GGN from finite-difference Jacobians, the
//! evidence against Bayesian linear regression's closed form and a dense
//! evaluation, its gradient against finite differences (tempered or not),
//! the temperature against the data term scaled by hand and a dense
//! tempered posterior, evidence and predictive, the linearized
//! predictive against `J Σ Jᵀ`, and the link approximations and metrics
//! against hand-computed values.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secondo::laplace::marglik::{evidence, optimize_marglik, MarglikOptions};
use secondo::laplace::metrics;
use secondo::laplace::predictive::{
    bridge, glm_moments, glm_monte_carlo, outputs, predict, probit, softmax, with_weights,
    Predictive,
};
use secondo::laplace::{
    fit, load, save, CurvatureBlock, DenseCurvature, FactoredJacobians, Fisher, FitOptions,
    JacobianProgram, Laplace, LastLayer, LearnedPrior, Likelihood, Prior, PriorShape, Structure,
    Subset,
};
use secondo::{Objective, ObjectiveConfig};
use secondo_curvature::{Curvature, CurvatureOperator};
use secondo_data::{Dataset, Targets};
use secondo_linalg::{dense_symmetric_eigen, DenseSymmetric};
use secondo_nn::{ParamStore, Reduction};
use secondo_tensor::DType;

const CLASSIFIER: &str = "linear(4,5),tanh,linear(5,3)";
const REGRESSOR: &str = "linear(2,6),tanh,linear(6,1)";

fn objective(spec: &str, inputs: usize, loss: &str, reduction: Reduction) -> Objective {
    Objective::from_config(&ObjectiveConfig {
        spec: spec.into(),
        input_shape: vec![inputs],
        loss: loss.into(),
        reduction,
        dtype: DType::F64,
    })
    .unwrap()
}

fn gaussian(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    secondo::laplace::predictive::standard_normal(rng, n)
}

/// 24 samples of 4 features in 3 classes.
fn classification() -> (Objective, ParamStore, Dataset) {
    let obj = objective(CLASSIFIER, 4, "cross_entropy", Reduction::Mean);
    let params = ParamStore::init(obj.network.spec(), 3, DType::F64);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = gaussian(&mut rng, 24 * 4);
    let labels = (0..24).map(|_| rng.random_range(0..3)).collect();
    let y = Targets::Classes {
        labels,
        num_classes: 3,
    };
    (obj, params, Dataset::new(x, vec![4], y, "toy").unwrap())
}

/// `n` samples of `inputs` features with one noisy linear target.
fn regression_data(n: usize, inputs: usize) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = gaussian(&mut rng, n * inputs);
    let noise = gaussian(&mut rng, n);
    let values = (0..n)
        .map(|i| {
            (0..inputs)
                .map(|j| x[i * inputs + j] * (j as f64 + 1.0))
                .sum::<f64>()
                + 0.3 * noise[i]
        })
        .collect();
    Dataset::new(
        x,
        vec![inputs],
        Targets::Values { values, width: 1 },
        "line",
    )
    .unwrap()
}

fn regression() -> (Objective, ParamStore, Dataset) {
    let obj = objective(REGRESSOR, 2, "mse", Reduction::Mean);
    let params = ParamStore::init(obj.network.spec(), 5, DType::F64);
    (obj, params, regression_data(20, 2))
}

fn options(structure: Structure, subset: Subset, likelihood: Likelihood) -> FitOptions {
    FitOptions {
        structure,
        subset,
        likelihood,
        batch_size: 7,
        sigma: 0.8,
        ..FitOptions::default()
    }
}

/// Jacobians of the outputs in the covered weights by central differences:
/// `[N·C, P]` row-major.
fn fd_jacobian(obj: &Objective, params: &ParamStore, la: &Laplace, data: &Dataset) -> Vec<f64> {
    let (dim, rows) = (la.dim(), data.len() * la.n_outputs);
    let eps = 1e-6;
    let mut jac = vec![0.0; rows * dim];
    for j in 0..dim {
        let at = |delta: f64| {
            let mut w = la.mean.clone();
            w[j] += delta;
            outputs(obj, &with_weights(params, la, &w).unwrap(), data, 64).unwrap()
        };
        let (plus, minus) = (at(eps), at(-eps));
        for r in 0..rows {
            jac[r * dim + j] = (plus[r] - minus[r]) / (2.0 * eps);
        }
    }
    jac
}

/// `Σₙ Jₙᵀ Λₙ Jₙ` with `Λ` the Hessian of `−log p` in the outputs (σ = 1).
fn dense_ggn(obj: &Objective, params: &ParamStore, la: &Laplace, data: &Dataset) -> Vec<f64> {
    let (dim, c) = (la.dim(), la.n_outputs);
    let jac = fd_jacobian(obj, params, la, data);
    let f = outputs(obj, params, data, 64).unwrap();
    let mut h = vec![0.0; dim * dim];
    for n in 0..data.len() {
        let lambda: Vec<f64> = match la.likelihood {
            Likelihood::Classification => {
                let p = softmax(&f[n * c..(n + 1) * c], c);
                (0..c * c)
                    .map(|k| f64::from(u8::from(k / c == k % c)) * p[k / c] - p[k / c] * p[k % c])
                    .collect()
            }
            Likelihood::Regression => (0..c * c)
                .map(|k| f64::from(u8::from(k / c == k % c)))
                .collect(),
        };
        let jn = &jac[n * c * dim..(n + 1) * c * dim];
        for a in 0..c {
            for b in 0..c {
                for i in 0..dim {
                    for j in 0..dim {
                        h[i * dim + j] += jn[a * dim + i] * lambda[a * c + b] * jn[b * dim + j];
                    }
                }
            }
        }
    }
    h
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{i}]: {g} vs {w}");
    }
}

/// `H·s + diag(δ)`.
fn plus_prior(h: &[f64], la: &Laplace) -> Vec<f64> {
    let dim = la.dim();
    let s = la.likelihood.precision_scale(la.sigma);
    let delta = la.prior.per_weight();
    let mut p: Vec<f64> = h.iter().map(|v| v * s).collect();
    (0..dim).for_each(|i| p[i * dim + i] += delta[i]);
    p
}

/// Distinct prior precisions, one per group.
fn spread_prior(la: &mut Laplace) {
    let values = (0..la.prior.values.len())
        .map(|i| 0.5 + 0.25 * i as f64)
        .collect();
    la.prior = la.prior.with_values(values).unwrap();
}

#[test]
fn full_precision_is_the_dense_ggn_block_plus_the_prior() {
    let (obj, params, data) = classification();
    for subset in [
        Subset::All,
        Subset::LastLayer,
        Subset::Pattern("*.bias".into()),
    ] {
        let mut opts = options(Structure::Full, subset.clone(), Likelihood::Classification);
        opts.prior_shape = PriorShape::PerLayer;
        let mut la = fit(&obj, &params, &data, &opts).unwrap();
        spread_prior(&mut la);
        let want = plus_prior(&dense_ggn(&obj, &params, &la, &data), &la);
        let got = la.posterior().unwrap().dense_precision();
        assert_close(&got, &want, 1e-7, &format!("full {subset}"));
    }
    let (obj, params, data) = regression();
    for subset in [Subset::All, Subset::LastLayer] {
        let la = fit(
            &obj,
            &params,
            &data,
            &options(Structure::Full, subset.clone(), Likelihood::Regression),
        )
        .unwrap();
        let want = plus_prior(&dense_ggn(&obj, &params, &la, &data), &la);
        assert_close(
            &la.posterior().unwrap().dense_precision(),
            &want,
            1e-7,
            &format!("full regression {subset}"),
        );
    }
}

#[test]
fn diag_precision_is_the_dense_diagonal_plus_the_prior() {
    for (obj, params, data, likelihood) in [
        {
            let (o, p, d) = classification();
            (o, p, d, Likelihood::Classification)
        },
        {
            let (o, p, d) = regression();
            (o, p, d, Likelihood::Regression)
        },
    ] {
        let mut opts = options(Structure::Diag, Subset::All, likelihood);
        opts.prior_shape = PriorShape::Diagonal;
        let mut la = fit(&obj, &params, &data, &opts).unwrap();
        spread_prior(&mut la);
        let dim = la.dim();
        let dense = plus_prior(&dense_ggn(&obj, &params, &la, &data), &la);
        let want: Vec<f64> = (0..dim * dim)
            .map(|k| if k / dim == k % dim { dense[k] } else { 0.0 })
            .collect();
        assert_close(
            &la.posterior().unwrap().dense_precision(),
            &want,
            1e-7,
            "diag",
        );
    }
}

#[test]
fn kron_is_exact_on_a_squared_error_last_layer_and_sums_kflr_over_batches() {
    // Under squared error the output factor is the same for every sample,
    // so B ⊗ A is the GGN's weight block exactly (and B its bias block).
    let (obj, params, data) = regression();
    let mut opts = options(Structure::Kron, Subset::LastLayer, Likelihood::Regression);
    opts.prior_shape = PriorShape::PerLayer;
    let mut la = fit(&obj, &params, &data, &opts).unwrap();
    spread_prior(&mut la);
    let dim = la.dim();
    let dense = plus_prior(&dense_ggn(&obj, &params, &la, &data), &la);
    let blocks: Vec<f64> = (0..dim * dim)
        .map(|k| {
            let (i, j) = (k / dim, k % dim);
            if (i < 6) == (j < 6) {
                dense[k]
            } else {
                0.0
            }
        })
        .collect();
    assert_close(
        &la.posterior().unwrap().dense_precision(),
        &blocks,
        1e-7,
        "kron last layer",
    );

    // Over every layer and cross-entropy, fitting in batches of 7 gives the
    // KFLR factors of the whole dataset as one batch: (Σₙ Gₙ) ⊗ (1/N Σₙ aₙaₙᵀ).
    let (obj, params, data) = classification();
    let la = fit(
        &obj,
        &params,
        &data,
        &options(Structure::Kron, Subset::All, Likelihood::Classification),
    )
    .unwrap();
    let (x, y) = obj
        .batch_tensors(&data.batches(24).unwrap().next().unwrap())
        .unwrap();
    let q = secondo::curvature::compute_quantities(
        &obj,
        &params,
        &x,
        &y,
        &[secondo::curvature::Quantity::Kflr],
        None,
    )
    .unwrap();
    let get = |name: &str| q.iter().find(|(n, _)| n == name).unwrap().1.to_f64_vec();
    let precision = la.posterior().unwrap().dense_precision();
    let delta = la.prior.values[0];
    let mut at = 0;
    for (name, shape) in la.names.iter().zip(&la.shapes) {
        let b: Vec<f64> = get(&format!("kflr/{name}/out"))
            .iter()
            .map(|v| v * 24.0)
            .collect();
        let a = if shape.len() == 2 {
            get(&format!("kflr/{name}/in"))
        } else {
            vec![1.0]
        };
        let (o, i) = (shape[0], a.len().isqrt());
        let n = o * i;
        for r in 0..n {
            for s in 0..n {
                let want = b[(r / i) * o + s / i] * a[(r % i) * i + s % i]
                    + if r == s { delta } else { 0.0 };
                let got = precision[(at + r) * la.dim() + at + s];
                assert!(
                    (got - want).abs() < 1e-9 * want.abs().max(1.0),
                    "kron {name}[{r},{s}]: {got} vs {want}"
                );
            }
        }
        at += n;
    }
}

#[test]
fn low_rank_keeps_the_top_eigenpairs_and_the_prior_elsewhere() {
    let (obj, params, data) = classification();
    let subset = Subset::Pattern("2.bias".into());
    let full = fit(
        &obj,
        &params,
        &data,
        &options(Structure::Full, subset.clone(), Likelihood::Classification),
    )
    .unwrap();
    let dense = plus_prior(&dense_ggn(&obj, &params, &full, &data), &full);
    let exact = fit(
        &obj,
        &params,
        &data,
        &options(
            Structure::LowRank(3),
            subset.clone(),
            Likelihood::Classification,
        ),
    )
    .unwrap();
    assert_close(
        &exact.posterior().unwrap().dense_precision(),
        &dense,
        1e-7,
        "lowrank:3 of 3",
    );
    // The softmax GGN of one output bias is singular along 1: rank 2.
    let mut opts = options(Structure::LowRank(1), subset, Likelihood::Classification);
    opts.prior_precision = 0.7;
    let top = fit(&obj, &params, &data, &opts).unwrap();
    let h = dense_ggn(&obj, &params, &full, &data);
    let eig = dense_symmetric_eigen(&DenseSymmetric::new(3, h).unwrap()).unwrap();
    let delta = top.prior.values[0];
    let want = (eig.values[2] + delta).ln() + 2.0 * delta.ln();
    assert!((top.posterior().unwrap().log_det() - want).abs() < 1e-8);
}

/// `log det` and inverse of a dense symmetric positive definite matrix.
fn log_det_and_inverse(a: &[f64], n: usize) -> (f64, Vec<f64>) {
    let eig = dense_symmetric_eigen(&DenseSymmetric::new(n, a.to_vec()).unwrap()).unwrap();
    let log_det = eig.values.iter().map(|v| v.ln()).sum();
    let mut inv = vec![0.0; n * n];
    for (k, l) in eig.values.iter().enumerate() {
        let v = eig.vector(k).unwrap();
        for i in 0..n {
            for j in 0..n {
                inv[i * n + j] += v[i] * v[j] / l;
            }
        }
    }
    (log_det, inv)
}

#[test]
fn evidence_is_bayesian_linear_regressions_closed_form() {
    // linear(3,1) with a Gaussian likelihood is linear in its weights: the
    // Laplace approximation at the MAP is the exact posterior, and its
    // evidence log N(y; 0, σ² I + X̃ X̃ᵀ/δ) (X̃ the inputs with a column of ones).
    let (n, d, sigma, delta) = (20, 3, 0.7, 2.0);
    let data = regression_data(n, d);
    let Targets::Values { values: y, .. } = &data.y else {
        unreachable!()
    };
    let xt: Vec<f64> = (0..n)
        .flat_map(|i| data.x[i * d..(i + 1) * d].iter().copied().chain([1.0]))
        .collect();
    let p = d + 1;
    let mut a = vec![0.0; p * p];
    let mut rhs = vec![0.0; p];
    for i in 0..n {
        for r in 0..p {
            rhs[r] += xt[i * p + r] * y[i] / (sigma * sigma);
            for s in 0..p {
                a[r * p + s] += xt[i * p + r] * xt[i * p + s] / (sigma * sigma);
            }
        }
    }
    (0..p).for_each(|r| a[r * p + r] += delta);
    let (_, a_inv) = log_det_and_inverse(&a, p);
    let theta: Vec<f64> = (0..p)
        .map(|r| (0..p).map(|s| a_inv[r * p + s] * rhs[s]).sum())
        .collect();
    let obj = objective("linear(3,1)", 3, "mse", Reduction::Mean);
    let mut params = ParamStore::new();
    params.insert(
        "0.weight",
        secondo_tensor::Tensor::from_vec(vec![1, 3], theta[..3].to_vec()).unwrap(),
    );
    params.insert(
        "0.bias",
        secondo_tensor::Tensor::from_vec(vec![1], vec![theta[3]]).unwrap(),
    );
    let mut cov = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            cov[i * n + j] = (0..p).map(|r| xt[i * p + r] * xt[j * p + r]).sum::<f64>() / delta
                + if i == j { sigma * sigma } else { 0.0 };
        }
    }
    let (log_det, inv) = log_det_and_inverse(&cov, n);
    let quad: f64 = (0..n)
        .map(|i| (0..n).map(|j| y[i] * inv[i * n + j] * y[j]).sum::<f64>())
        .sum();
    let want = -0.5 * (quad + log_det + n as f64 * (2.0 * std::f64::consts::PI).ln());
    let mut opts = options(Structure::Full, Subset::All, Likelihood::Regression);
    (opts.sigma, opts.prior_precision) = (sigma, delta);
    let la = fit(&obj, &params, &data, &opts).unwrap();
    let got = la.log_marginal_likelihood().unwrap();
    assert!((got - want).abs() < 1e-9 * want.abs(), "{got} vs {want}");
}

#[test]
fn evidence_is_the_dense_evaluation_on_a_small_network() {
    let (obj, params, data) = classification();
    let mut opts = options(Structure::Full, Subset::All, Likelihood::Classification);
    opts.prior_shape = PriorShape::PerLayer;
    let mut la = fit(&obj, &params, &data, &opts).unwrap();
    spread_prior(&mut la);
    let p = plus_prior(&dense_ggn(&obj, &params, &la, &data), &la);
    let (log_det, _) = log_det_and_inverse(&p, la.dim());
    let probs = softmax(&outputs(&obj, &params, &data, 64).unwrap(), 3);
    let Targets::Classes { labels, .. } = &data.y else {
        unreachable!()
    };
    let log_lik: f64 = labels
        .iter()
        .enumerate()
        .map(|(i, &y)| probs[i * 3 + y as usize].ln())
        .sum();
    let delta = la.prior.per_weight();
    let prior_log_det: f64 = delta.iter().map(|d| d.ln()).sum();
    let scatter: f64 = delta.iter().zip(&la.mean).map(|(d, t)| d * t * t).sum();
    let want = log_lik - 0.5 * (log_det - prior_log_det + scatter);
    let got = la.log_marginal_likelihood().unwrap();
    assert!((got - want).abs() < 1e-7 * want.abs(), "{got} vs {want}");
}

#[test]
fn evidence_gradient_matches_finite_differences() {
    let cases = [
        (
            Structure::Full,
            PriorShape::PerLayer,
            Likelihood::Classification,
        ),
        (
            Structure::Full,
            PriorShape::Diagonal,
            Likelihood::Regression,
        ),
        (
            Structure::Diag,
            PriorShape::Diagonal,
            Likelihood::Regression,
        ),
        (
            Structure::Kron,
            PriorShape::PerLayer,
            Likelihood::Regression,
        ),
        (
            Structure::Kron,
            PriorShape::Scalar,
            Likelihood::Classification,
        ),
        (
            Structure::LowRank(4),
            PriorShape::Scalar,
            Likelihood::Regression,
        ),
        (
            Structure::Full,
            PriorShape::Scalar,
            Likelihood::Classification,
        ),
        (
            Structure::Diag,
            PriorShape::PerLayer,
            Likelihood::Classification,
        ),
    ];
    // Every other case tempered (laplace-torch's temperature).
    for (case, (structure, shape, likelihood)) in cases.into_iter().enumerate() {
        let (obj, params, data) = match likelihood {
            Likelihood::Classification => classification(),
            Likelihood::Regression => regression(),
        };
        let mut opts = options(structure, Subset::All, likelihood);
        opts.prior_shape = shape;
        opts.temperature = [1.0, 0.6, 2.5][case % 3];
        let mut la = fit(&obj, &params, &data, &opts).unwrap();
        spread_prior(&mut la);
        let e = evidence(&la, &la.prior, la.sigma).unwrap();
        let h = 1e-5;
        for g in 0..la.prior.values.len().min(6) {
            let at = |step: f64| {
                let mut v = la.prior.values.clone();
                v[g] *= step.exp();
                evidence(&la, &la.prior.with_values(v).unwrap(), la.sigma)
                    .unwrap()
                    .value
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - e.d_log_prior[g]).abs() < 1e-5 * fd.abs().max(1.0),
                "{structure} {shape:?} prior {g}: {fd} vs {}",
                e.d_log_prior[g]
            );
        }
        let at = |step: f64| {
            evidence(&la, &la.prior, la.sigma * step.exp())
                .unwrap()
                .value
        };
        let fd = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (fd - e.d_log_sigma).abs() < 1e-5 * fd.abs().max(1.0),
            "{structure} σ: {fd} vs {}",
            e.d_log_sigma
        );
    }
}

/// `la` with its data term divided by `t` and its temperature 1.
fn data_over(la: &Laplace, t: f64) -> Laplace {
    let mut out = la.clone();
    out.temperature = 1.0;
    out.nll /= t;
    for block in &mut out.blocks {
        match block {
            CurvatureBlock::Diag(h) => h.iter_mut().for_each(|v| *v /= t),
            CurvatureBlock::Dense(d) => {
                *d = DenseCurvature::new(d.matrix().iter().map(|v| v / t).collect(), d.dim());
            }
            _ => unreachable!("diag and full blocks"),
        }
    }
    out
}

#[test]
fn a_temperature_divides_the_data_term_of_the_evidence_not_the_normalizer() {
    for (structure, likelihood) in [
        (Structure::Diag, Likelihood::Regression),
        (Structure::Full, Likelihood::Regression),
        (Structure::Full, Likelihood::Classification),
    ] {
        let (obj, params, data) = match likelihood {
            Likelihood::Classification => classification(),
            Likelihood::Regression => regression(),
        };
        let mut opts = options(structure, Subset::All, likelihood);
        opts.prior_shape = PriorShape::Diagonal;
        opts.sigma = 0.8;
        let untempered = fit(&obj, &params, &data, &opts).unwrap();
        opts.temperature = 1.7;
        let mut la = fit(&obj, &params, &data, &opts).unwrap();
        spread_prior(&mut la);
        let scaled = data_over(&la, 1.7);
        let (got, want) = (
            evidence(&la, &la.prior, la.sigma).unwrap(),
            evidence(&scaled, &la.prior, la.sigma).unwrap(),
        );
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-10 * b.abs().max(1.0);
        assert!(
            close(got.value, want.value),
            "{structure}: {got:?} vs {want:?}"
        );
        assert!(close(got.d_log_sigma, want.d_log_sigma), "{structure} σ");
        for (g, w) in got.d_log_prior.iter().zip(&want.d_log_prior) {
            assert!(close(*g, *w), "{structure} prior: {g} vs {w}");
        }
        // The fit itself does not depend on the temperature.
        assert_eq!((la.nll, &la.blocks), (untempered.nll, &untempered.blocks));
    }
}

#[test]
fn a_tempered_posterior_is_the_dense_ggn_over_t_plus_the_prior() {
    for (likelihood, t) in [
        (Likelihood::Classification, 0.4),
        (Likelihood::Regression, 2.5),
    ] {
        let (obj, params, data) = match likelihood {
            Likelihood::Classification => classification(),
            Likelihood::Regression => regression(),
        };
        let mut opts = options(Structure::Full, Subset::All, likelihood);
        opts.prior_shape = PriorShape::PerLayer;
        opts.temperature = t;
        let mut la = fit(&obj, &params, &data, &opts).unwrap();
        spread_prior(&mut la);
        let (dim, c, sigma) = (la.dim(), la.n_outputs, la.sigma);
        let f = outputs(&obj, &params, &data, 64).unwrap();
        // The data term and its curvature over T, the normalizer not.
        let (scale, log_lik) = match &data.y {
            Targets::Classes { labels, .. } => {
                let p = softmax(&f, c);
                let log_p: f64 = (0..data.len())
                    .map(|n| p[n * c + labels[n] as usize].ln())
                    .sum();
                (1.0 / t, log_p / t)
            }
            Targets::Values { values, .. } => {
                let sse: f64 = f.iter().zip(values).map(|(f, y)| (f - y).powi(2)).sum();
                let normalizer =
                    (f.len() as f64) * (sigma * (2.0 * std::f64::consts::PI).sqrt()).ln();
                let s2 = sigma * sigma;
                (1.0 / (s2 * t), -sse / (2.0 * s2 * t) - normalizer)
            }
        };
        let delta = la.prior.per_weight();
        let mut p: Vec<f64> = dense_ggn(&obj, &params, &la, &data)
            .iter()
            .map(|h| h * scale)
            .collect();
        (0..dim).for_each(|i| p[i * dim + i] += delta[i]);
        assert_close(
            &la.posterior().unwrap().dense_precision(),
            &p,
            1e-8,
            &format!("{likelihood} precision at T = {t}"),
        );
        let (log_det, covariance) = log_det_and_inverse(&p, dim);
        let prior_log_det: f64 = delta.iter().map(|d| d.ln()).sum();
        let scatter: f64 = delta.iter().zip(&la.mean).map(|(d, w)| d * w * w).sum();
        let want = log_lik - 0.5 * (log_det - prior_log_det + scatter);
        let got = la.log_marginal_likelihood().unwrap();
        assert!(
            (got - want).abs() < 1e-7 * want.abs(),
            "{likelihood} evidence at T = {t}: {got} vs {want}"
        );
        // The linearized predictive's functional variance J P⁻¹ Jᵀ.
        let (_, f_var) =
            glm_moments(&obj, &params, &la, &la.posterior().unwrap(), &data, 5).unwrap();
        let jac = fd_jacobian(&obj, &params, &la, &data);
        let row = |r: usize| &jac[r * dim..(r + 1) * dim];
        let mut expected = vec![0.0; data.len() * c * c];
        for n in 0..data.len() {
            for a in 0..c {
                for b in 0..c {
                    let (ja, jb) = (row(n * c + a), row(n * c + b));
                    expected[(n * c + a) * c + b] = (0..dim)
                        .map(|i| {
                            ja[i]
                                * (0..dim)
                                    .map(|j| covariance[i * dim + j] * jb[j])
                                    .sum::<f64>()
                        })
                        .sum();
                }
            }
        }
        assert_close(
            &f_var,
            &expected,
            1e-7,
            &format!("{likelihood} GLM variance at T = {t}"),
        );
    }
}

#[test]
fn marglik_optimization_finds_a_stationary_point() {
    let (obj, params, data) = regression();
    let mut la = fit(
        &obj,
        &params,
        &data,
        &options(Structure::Kron, Subset::All, Likelihood::Regression),
    )
    .unwrap();
    let before = la.log_marginal_likelihood().unwrap();
    let after = optimize_marglik(
        &mut la,
        &MarglikOptions {
            steps: 400,
            ..MarglikOptions::default()
        },
    )
    .unwrap();
    assert!(after > before, "{after} ≤ {before}");
    let e = evidence(&la, &la.prior, la.sigma).unwrap();
    assert!(
        e.d_log_prior[0].abs() < 1e-3 && e.d_log_sigma.abs() < 1e-3,
        "{e:?}"
    );
}

#[test]
fn glm_variance_is_j_sigma_jt_with_dense_jacobians() {
    let (obj, params, data) = classification();
    let cases = [
        Structure::Full,
        Structure::Kron,
        Structure::Diag,
        Structure::LowRank(5),
    ]
    .into_iter()
    .flat_map(|s| {
        [
            Subset::All,
            Subset::LastLayer,
            Subset::Pattern("0.*".into()),
        ]
        .map(|subset| (s, subset))
    });
    for (structure, subset) in cases {
        let la = fit(
            &obj,
            &params,
            &data,
            &options(structure, subset.clone(), Likelihood::Classification),
        )
        .unwrap();
        let posterior = la.posterior().unwrap();
        let (f_mu, f_var) = glm_moments(&obj, &params, &la, &posterior, &data, 5).unwrap();
        assert_close(
            &f_mu,
            &outputs(&obj, &params, &data, 64).unwrap(),
            1e-12,
            "GLM mean",
        );
        let (dim, c) = (la.dim(), 3);
        let (_, sigma) = log_det_and_inverse(&posterior.dense_precision(), dim);
        let jac = fd_jacobian(&obj, &params, &la, &data);
        let mut want = vec![0.0; data.len() * c * c];
        for n in 0..data.len() {
            for a in 0..c {
                for b in 0..c {
                    let (ja, jb) = (
                        &jac[(n * c + a) * dim..][..dim],
                        &jac[(n * c + b) * dim..][..dim],
                    );
                    want[n * c * c + a * c + b] = (0..dim)
                        .map(|i| ja[i] * (0..dim).map(|j| sigma[i * dim + j] * jb[j]).sum::<f64>())
                        .sum();
                }
            }
        }
        assert_close(
            &f_var,
            &want,
            1e-7,
            &format!("GLM variance {structure} {subset}"),
        );
    }
}

/// The generic path's curvature of `Σₙ −log p` in `la`'s weights: the
/// engine's dense operator, rescaled from the reduced loss.
fn operator_curvature(
    obj: &Objective,
    params: &ParamStore,
    la: &Laplace,
    data: &Dataset,
    fisher: Fisher,
) -> Vec<f64> {
    let refs: Vec<&str> = la.names.iter().map(String::as_str).collect();
    let kind = match fisher {
        Fisher::Ggn => Curvature::Ggn,
        Fisher::Empirical => Curvature::EmpiricalFisher,
    };
    let op = CurvatureOperator::new(obj, params, data, 7, kind, Some(&refs)).unwrap();
    let to_sum =
        la.likelihood.curvature_factor(fisher) / obj.loss.scale(&[data.len(), la.n_outputs]);
    op.to_dense().unwrap().iter().map(|v| v * to_sum).collect()
}

/// The generic path's GLM covariances: per-sample Jacobians in one batch,
/// whitened, `W Wᵀ` per sample.
fn jacobian_covariances(
    obj: &Objective,
    params: &ParamStore,
    la: &Laplace,
    data: &Dataset,
) -> Vec<f64> {
    let (n, c) = (data.len(), la.n_outputs);
    let (x, _) = obj
        .batch_tensors(&data.batches(n).unwrap().next().unwrap())
        .unwrap();
    let (_, jac) = JacobianProgram::compile(obj, n, &la.names)
        .unwrap()
        .run(params, &x)
        .unwrap();
    let (w, width) = la.posterior().unwrap().whiten(&jac, n * c);
    (0..n * c * c)
        .map(|k| {
            let (s, a, b) = (k / (c * c), k / c % c, k % c);
            let (ra, rb) = (
                &w[(s * c + a) * width..][..width],
                &w[(s * c + b) * width..][..width],
            );
            ra.iter().zip(rb).map(|(x, y)| x * y).sum()
        })
        .collect()
}

#[test]
fn a_last_layer_in_closed_form_equals_the_generic_path() {
    let (obj, params, data) = classification();
    let (reg, reg_params, reg_data) = regression();
    let cases = [
        (
            &obj,
            &params,
            &data,
            Likelihood::Classification,
            Subset::LastLayer,
        ),
        (
            &obj,
            &params,
            &data,
            Likelihood::Classification,
            Subset::Pattern("2.weight".into()),
        ),
        (
            &reg,
            &reg_params,
            &reg_data,
            Likelihood::Regression,
            Subset::LastLayer,
        ),
    ];
    for (obj, params, data, likelihood, subset) in cases {
        for fisher in [Fisher::Ggn, Fisher::Empirical] {
            let what = format!("{likelihood} {subset} {fisher:?}");
            let mut opts = options(Structure::Full, subset.clone(), likelihood);
            opts.fisher = fisher;
            let la = fit(obj, params, data, &opts).unwrap();
            let last = LastLayer::of(obj, &la.names, false)
                .unwrap()
                .expect("a last layer");
            let closed = last
                .curvature(obj, params, data, likelihood, fisher, 5)
                .unwrap();
            let generic = operator_curvature(obj, params, &la, data, fisher);
            assert_close(&closed, &generic, 1e-10, &format!("curvature {what}"));
            let posterior = la.posterior().unwrap();
            let (f_mu, f_var) = last.glm_moments(obj, params, &posterior, data, 5).unwrap();
            assert_close(
                &f_mu,
                &outputs(obj, params, data, 64).unwrap(),
                1e-12,
                &format!("mean {what}"),
            );
            let want = jacobian_covariances(obj, params, &la, data);
            assert_close(&f_var, &want, 1e-10, &format!("GLM covariance {what}"));
        }
    }
    // No closed form: the output is not the layer's, another layer, a mask.
    let squashed = objective(
        &format!("{CLASSIFIER},tanh"),
        4,
        "cross_entropy",
        Reduction::Mean,
    );
    let last = ["2.weight".to_string(), "2.bias".to_string()];
    assert!(LastLayer::of(&squashed, &last, false).unwrap().is_none());
    let first = ["0.weight".to_string(), "0.bias".to_string()];
    assert!(LastLayer::of(&obj, &first, false).unwrap().is_none());
    assert!(LastLayer::of(&obj, &last, true).unwrap().is_none());
    assert!(LastLayer::of(&obj, &last, false).unwrap().is_some());
}

#[test]
fn factored_jacobians_equal_the_generic_path() {
    let (obj, params, data) = classification();
    for structure in [Structure::Kron, Structure::Diag] {
        for subset in [Subset::All, Subset::Pattern("*.bias".into())] {
            let la = fit(
                &obj,
                &params,
                &data,
                &options(structure, subset.clone(), Likelihood::Classification),
            )
            .unwrap();
            let factored = FactoredJacobians::of(&obj, &la)
                .unwrap()
                .expect("linear layers");
            let posterior = la.posterior().unwrap();
            let (_, f_var) = factored
                .glm_moments(&obj, &params, &posterior, &data, 5)
                .unwrap();
            let want = jacobian_covariances(&obj, &params, &la, &data);
            assert_close(&f_var, &want, 1e-10, &format!("{structure} {subset}"));
        }
    }
    // Full and low-rank blocks couple the tensors: no factored form.
    for structure in [Structure::Full, Structure::LowRank(3)] {
        let la = fit(
            &obj,
            &params,
            &data,
            &options(structure, Subset::All, Likelihood::Classification),
        )
        .unwrap();
        assert!(FactoredJacobians::of(&obj, &la).unwrap().is_none());
    }
}

#[test]
fn link_approximations_equal_their_closed_forms() {
    // Probit: softmax(μᵢ / √(1 + π/8 Σᵢᵢ)).
    let (mu, var) = ([1.0, -0.5], [2.0, 0.3, 0.3, 0.5]);
    let k = |v: f64| (1.0 + std::f64::consts::PI / 8.0 * v).sqrt();
    let (a, b) = (1.0 / k(2.0), -0.5 / k(0.5));
    let want = [a.exp() / (a.exp() + b.exp()), b.exp() / (a.exp() + b.exp())];
    assert_close(&probit(&mu, &var, 2), &want, 1e-15, "probit");
    // Bridge on μ = (1, 0, 0), Σ = [[2, ½, 0], [½, 1, 0], [0, 0, 1]]: row
    // sums (5/2, 3/2, 1) of total 5, so the zero-mean correction gives
    // m = (½, −3/10, −1/5) and variances (3/4, 11/20, 4/5); then
    // αᵢ ∝ (1 − 2/3 + e^{mᵢ}/9 · Σⱼ e^{−mⱼ}) / varᵢ.
    let m = [0.5, -0.3, -0.2];
    let variances = [0.75, 0.55, 0.8];
    let sum_exp: f64 = m.iter().map(|x: &f64| (-x).exp()).sum();
    let alpha: Vec<f64> = m
        .iter()
        .zip(variances)
        .map(|(x, v)| (1.0 / 3.0 + x.exp() / 9.0 * sum_exp) / v)
        .collect();
    let total: f64 = alpha.iter().sum();
    let want: Vec<f64> = alpha.iter().map(|a| a / total).collect();
    let var = [2.0, 0.5, 0.0, 0.5, 1.0, 0.0, 0.0, 0.0, 1.0];
    assert_close(&bridge(&[1.0, 0.0, 0.0], &var, 3), &want, 1e-14, "bridge");
    // Monte Carlo without variance is the softmax of the mean.
    let zero = [0.0; 9];
    assert_close(
        &glm_monte_carlo(&[1.0, 0.0, 2.0], &zero, 3, 5, 0).unwrap(),
        &softmax(&[1.0, 0.0, 2.0], 3),
        1e-15,
        "MC",
    );
}

#[test]
fn metrics_equal_hand_counts() {
    // Confidences 0.9 (right), 0.8 (wrong), 0.6 (right), 0.55 (wrong).
    let probs = [0.9, 0.1, 0.2, 0.8, 0.6, 0.4, 0.45, 0.55];
    let labels = [0, 0, 0, 0];
    assert_eq!(metrics::accuracy(&probs, &labels, 2), 0.5);
    // Bins (13/15, 14/15] holds 0.9, (11/15, 12/15] holds 0.8, (8/15, 9/15] holds 0.55 and 0.6.
    let want_ece = (0.1 + 0.8 + 2.0 * (0.5f64 - 0.575).abs()) / 4.0;
    assert!((metrics::ece(&probs, &labels, 2) - want_ece).abs() < 1e-15);
    let want_brier = (2.0 * 0.01 + 2.0 * 0.64 + 2.0 * 0.16 + 2.0 * 0.3025) / 4.0;
    assert!((metrics::brier(&probs, &labels, 2) - want_brier).abs() < 1e-15);
    let want_nll = -(0.9f64.ln() + 0.2f64.ln() + 0.6f64.ln() + 0.45f64.ln()) / 4.0;
    assert!((metrics::nll(&probs, &labels, 2) - want_nll).abs() < 1e-15);
    // Positives 0.5, 0.9 against negatives 0.1, 0.5, 0.7: pairs won 1 + ½ + 0 + 1 + 1 + 1 = 4.5 of 6.
    assert_eq!(metrics::auroc(&[0.1, 0.5, 0.7], &[0.5, 0.9]), 4.5 / 6.0);
}

#[test]
fn nn_predictive_under_a_tight_prior_is_the_map_network() {
    let (obj, params, data) = classification();
    let mut opts = options(Structure::Diag, Subset::All, Likelihood::Classification);
    opts.prior_precision = 1e14;
    let la = fit(&obj, &params, &data, &opts).unwrap();
    let p = predict(&obj, &params, &la, &data, Predictive::Nn(3), 0, 8).unwrap();
    assert_close(&p.mean, &p.map, 1e-6, "nn:3 at δ = 1e14");
}

#[test]
fn posteriors_round_trip_through_safetensors_and_fits_are_deterministic() {
    let (obj, params, data) = regression();
    let dir = tempfile::tempdir().unwrap();
    for structure in [
        Structure::Full,
        Structure::Kron,
        Structure::Diag,
        Structure::LowRank(2),
    ] {
        let opts = FitOptions {
            temperature: 0.5,
            ..options(structure, Subset::All, Likelihood::Regression)
        };
        let la = fit(&obj, &params, &data, &opts).unwrap();
        assert_eq!(la, fit(&obj, &params, &data, &opts).unwrap());
        let path = dir.path().join(format!(
            "{}.safetensors",
            structure.to_string().replace(':', "_")
        ));
        save(&la, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(load(&path).unwrap(), la, "{structure}");
        save(&load(&path).unwrap(), &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}

#[test]
fn learned_priors_round_trip_match_by_name_and_cover_subsets() {
    let (obj, params, data) = classification();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.prior.safetensors");
    let sizes: Vec<usize> = params.iter().map(|(_, t)| t.numel()).collect();
    let total: usize = sizes.iter().sum();
    for shape in [
        PriorShape::Scalar,
        PriorShape::PerLayer,
        PriorShape::Diagonal,
    ] {
        let count = match shape {
            PriorShape::Scalar => 1,
            PriorShape::PerLayer => sizes.len(),
            PriorShape::Diagonal => total,
        };
        let values: Vec<f64> = (0..count).map(|i| 0.5 + 0.01 * i as f64).collect();
        let prior = Prior::new(shape, values.clone(), &sizes).unwrap();
        let learned = LearnedPrior::new(Likelihood::Classification, &prior, &params, 1.0, 0.7);
        learned.save(&path, &params).unwrap();
        assert_eq!(
            LearnedPrior::load(&path, &params).unwrap(),
            learned,
            "{shape}"
        );
        // Over the last layer (2.weight, 2.bias): its tensors' precisions.
        let opts = FitOptions {
            prior_shape: shape,
            ..options(
                Structure::Diag,
                Subset::LastLayer,
                Likelihood::Classification,
            )
        };
        let la = fit(&obj, &params, &data, &opts).unwrap();
        let want = match shape {
            PriorShape::Scalar => values.clone(),
            PriorShape::PerLayer => values[2..].to_vec(),
            PriorShape::Diagonal => values[sizes[0] + sizes[1]..].to_vec(),
        };
        assert_eq!(learned.prior_for(&la).unwrap().values, want, "{shape}");
        // Another network's parameters: refused, naming the file and the tensor.
        let other = ParamStore::init(
            &"linear(4,7),tanh,linear(7,3)"
                .parse::<secondo_nn::spec::ModelSpec>()
                .unwrap(),
            0,
            DType::F64,
        );
        let e = LearnedPrior::load(&path, &other).unwrap_err().to_string();
        let tensor = "tensor 'prior_precision/0.weight' was learned for a parameter of shape \
                      [5, 4], '0.weight' of --model has [7, 4]";
        assert!(
            e.contains(&path.display().to_string()) && e.contains(tensor),
            "{e}"
        );
    }
    // A parameter without its tensor, a tensor for no parameter.
    let prior = Prior::uniform(PriorShape::PerLayer, 1.0, &sizes[..2]).unwrap();
    let mut first = ParamStore::new();
    for (name, t) in params.iter().take(2) {
        first.insert(name, t.clone());
    }
    LearnedPrior::new(Likelihood::Classification, &prior, &first, 1.0, 1.0)
        .save(&path, &first)
        .unwrap();
    let e = LearnedPrior::load(&path, &params).unwrap_err().to_string();
    assert!(e.contains("no tensor 'prior_precision/2.weight'"), "{e}");
    let e = LearnedPrior::load(&path, &ParamStore::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor 'prior_precision/0.bias' is for no parameter"),
        "{e}"
    );
}

#[test]
fn a_subnetwork_of_largest_variance_weights_is_the_dense_block_over_them() {
    let (obj, params, data) = classification();
    let opts = options(
        Structure::Full,
        Subset::LargestVariance(7),
        Likelihood::Classification,
    );
    let la = fit(&obj, &params, &data, &opts).unwrap();
    assert_eq!(la.dim(), 7);
    // The chosen weights are the 7 largest marginal variances of a diagonal Laplace.
    let diag = fit(
        &obj,
        &params,
        &data,
        &options(Structure::Diag, Subset::All, Likelihood::Classification),
    )
    .unwrap();
    let variances = diag.posterior().unwrap().covariance_diagonal();
    let mut sorted = variances.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut offset = 0;
    let mut picked = Vec::new();
    for (name, shape) in diag.names.iter().zip(&diag.shapes) {
        if let Some(k) = la.names.iter().position(|n| n == name) {
            let before: usize = la.shapes[..k]
                .iter()
                .map(|s| s.iter().product::<usize>())
                .sum();
            let n: usize = la.shapes[k].iter().product();
            picked.extend(
                la.mask
                    .as_ref()
                    .unwrap()
                    .iter()
                    .filter(|&&i| i >= before && i < before + n)
                    .map(|i| variances[offset + i - before]),
            );
        }
        offset += shape.iter().product::<usize>();
    }
    picked.sort_by(|a, b| b.total_cmp(a));
    assert_eq!(picked, sorted[..7]);
    // Its precision is the dense GGN block over those weights plus the prior,
    // and its GLM variance J Σ Jᵀ over them.
    let want = plus_prior(&dense_ggn(&obj, &params, &la, &data), &la);
    let posterior = la.posterior().unwrap();
    assert_close(&posterior.dense_precision(), &want, 1e-7, "subnetwork");
    let (_, f_var) = glm_moments(&obj, &params, &la, &posterior, &data, 5).unwrap();
    let (_, sigma) = log_det_and_inverse(&want, 7);
    let jac = fd_jacobian(&obj, &params, &la, &data);
    let n = 3 * 3 * 2;
    let direct: Vec<f64> = (0..n)
        .map(|k| {
            let (s, a, b) = (k / 9, (k / 3) % 3, k % 3);
            let (ja, jb) = (&jac[(s * 3 + a) * 7..][..7], &jac[(s * 3 + b) * 7..][..7]);
            (0..7)
                .map(|i| ja[i] * (0..7).map(|j| sigma[i * 7 + j] * jb[j]).sum::<f64>())
                .sum()
        })
        .collect();
    assert_close(&f_var[..n], &direct, 1e-7, "subnetwork GLM variance");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub.safetensors");
    save(&la, &path).unwrap();
    assert_eq!(load(&path).unwrap(), la);
}

#[test]
fn grid_search_keeps_the_prior_of_least_held_out_nll() {
    use secondo::laplace::marglik::{grid, grid_search};
    let (obj, params, data) = classification();
    let (train, val) = data.split(0.25, 0).unwrap();
    let mut la = fit(
        &obj,
        &params,
        &train,
        &options(Structure::Kron, Subset::All, Likelihood::Classification),
    )
    .unwrap();
    let Targets::Classes { labels, .. } = &val.y else {
        unreachable!()
    };
    let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let nll = |la: &Laplace| {
        let p = predict(
            &obj,
            &params,
            la,
            &val,
            Predictive::Glm(secondo::laplace::predictive::Link::Probit),
            0,
            8,
        )?;
        Ok(metrics::nll(&p.mean, &labels, 3))
    };
    let (best, best_nll) = grid_search(&mut la, &grid(), nll).unwrap();
    assert_eq!(la.prior.values, vec![best]);
    for c in grid() {
        let mut other = la.clone();
        other.prior = other.prior.with_values(vec![c]).unwrap();
        assert!(best_nll <= nll(&other).unwrap(), "{best} beaten by {c}");
    }
}

/// Fits through the Gram kernel (at most half as many samples × outputs as
/// weights, one prior precision) and through the dense `GᵀG` (the same
/// prior given per layer): every part of the posterior agrees, as the
/// kernel route is exact.
#[test]
fn full_through_the_gram_kernel_equals_the_dense_route() {
    let (obj, params, data) = classification();
    // 5 samples × 3 classes: at most half as many rows as the 30 weights.
    let few = data.select(&(0..5).collect::<Vec<_>>()).unwrap();
    let (robj, rparams, rdata) = regression();
    // 10 rows for 25 weights: the kernel takes at most half as many rows.
    let rdata = rdata.select(&(0..10).collect::<Vec<_>>()).unwrap();
    let cases = [
        (&obj, &params, &few, Likelihood::Classification, Subset::All),
        (
            &obj,
            &params,
            &few,
            Likelihood::Classification,
            Subset::LargestVariance(30),
        ),
        (&robj, &rparams, &rdata, Likelihood::Regression, Subset::All),
    ];
    for (obj, params, data, likelihood, subset) in cases {
        for fisher in [Fisher::Ggn, Fisher::Empirical] {
            let what = format!("{likelihood} {fisher:?} {subset}");
            let mut opts = options(Structure::Full, subset.clone(), likelihood);
            opts.fisher = fisher;
            opts.prior_precision = 0.7;
            let kernel = fit(obj, params, data, &opts).unwrap();
            opts.prior_shape = PriorShape::PerLayer;
            let dense = fit(obj, params, data, &opts).unwrap();
            assert!(
                matches!(kernel.blocks[..], [CurvatureBlock::LowRank { .. }]),
                "{what}: the kernel route"
            );
            assert!(
                matches!(dense.blocks[..], [CurvatureBlock::Dense { .. }]),
                "{what}: the dense route"
            );
            let (pk, pd) = (kernel.posterior().unwrap(), dense.posterior().unwrap());
            let precision = pd.dense_precision();
            assert_close(&pk.dense_precision(), &precision, 1e-10, &what);
            assert_close(
                &pk.covariance_diagonal(),
                &pd.covariance_diagonal(),
                1e-10,
                &format!("{what}: marginal variances"),
            );
            let (lk, ld) = (
                kernel.log_marginal_likelihood().unwrap(),
                dense.log_marginal_likelihood().unwrap(),
            );
            assert!(
                (lk - ld).abs() <= 1e-10 * ld.abs(),
                "{what}: evidence {lk} vs {ld}"
            );
            let (_, vk) = glm_moments(obj, params, &kernel, &pk, data, 4).unwrap();
            let (_, vd) = glm_moments(obj, params, &dense, &pd, data, 4).unwrap();
            assert_close(&vk, &vd, 1e-10, &format!("{what}: GLM variances"));
        }
    }
}
