mod common;

use common::with_spectrum;
use secondo_linalg::{
    conjugate_gradient, dense_symmetric_eigen, CgOptions, DenseSymmetric, LinalgError, Progress,
    SymmetricOperator,
};

/// `(A + λI)⁻¹ b` through the dense eigendecomposition.
fn dense_solve(a: &DenseSymmetric, b: &[f64], damping: f64) -> Vec<f64> {
    let eig = dense_symmetric_eigen(a).unwrap();
    let n = b.len();
    let mut x = vec![0.0; n];
    for (j, value) in eig.values.iter().enumerate() {
        let v = eig.vector(j).unwrap();
        let c = v.iter().zip(b).map(|(v, b)| v * b).sum::<f64>() / (value + damping);
        x.iter_mut().zip(v).for_each(|(x, v)| *x += c * v);
    }
    x
}

fn rhs(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 7 + 3) % 11) as f64 - 5.0).collect()
}

fn relative_error(x: &[f64], reference: &[f64]) -> f64 {
    let diff: f64 = x.iter().zip(reference).map(|(a, b)| (a - b).powi(2)).sum();
    let norm: f64 = reference.iter().map(|b| b * b).sum();
    (diff / norm).sqrt()
}

#[test]
fn matches_a_dense_solve() {
    let n = 200;
    let eigs: Vec<f64> = (0..n)
        .map(|i| 0.01 + 10.0 * (i as f64 / n as f64).powi(2))
        .collect();
    let a = with_spectrum(&eigs, 21);
    let b = rhs(n);
    for damping in [0.0, 0.1, 2.0] {
        let opts = CgOptions {
            tol: 1e-12,
            ..CgOptions::default()
        };
        let sol = conjugate_gradient(&a, &b, damping, &opts, Progress::none()).unwrap();
        assert!(sol.converged, "damping {damping}");
        assert_eq!(sol.products, sol.iterations);
        let error = relative_error(&sol.x, &dense_solve(&a, &b, damping));
        assert!(error < 1e-9, "damping {damping}: relative error {error}");
        // The reported residual is that of the returned x.
        let mut ax = vec![0.0; n];
        a.apply_block(&sol.x, 1, &mut ax).unwrap();
        let true_residual: f64 = ax
            .iter()
            .zip(&sol.x)
            .zip(&b)
            .map(|((ax, x), b)| (b - ax - damping * x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            (true_residual - sol.residual_norm).abs()
                < 1e-9 * b.iter().map(|b| b * b).sum::<f64>().sqrt()
        );
    }
}

#[test]
fn damping_makes_a_singular_psd_matrix_solvable() {
    let n = 150;
    let eigs: Vec<f64> = (0..n)
        .map(|i| if i < 100 { 0.0 } else { i as f64 / 50.0 })
        .collect();
    let a = with_spectrum(&eigs, 22);
    let b = rhs(n);
    let sol = conjugate_gradient(&a, &b, 0.5, &CgOptions::default(), Progress::none()).unwrap();
    assert!(sol.converged);
    assert!(relative_error(&sol.x, &dense_solve(&a, &b, 0.5)) < 1e-7);
}

#[test]
fn negative_damping_is_allowed_while_definite() {
    let n = 100;
    let eigs: Vec<f64> = (0..n).map(|i| 2.0 + i as f64 / 10.0).collect();
    let a = with_spectrum(&eigs, 23);
    let b = rhs(n);
    let sol = conjugate_gradient(&a, &b, -1.0, &CgOptions::default(), Progress::none()).unwrap();
    assert!(sol.converged);
    assert!(relative_error(&sol.x, &dense_solve(&a, &b, -1.0)) < 1e-7);
}

#[test]
fn indefinite_systems_are_detected() {
    let n = 100;
    let eigs: Vec<f64> = (0..n).map(|i| i as f64 / 10.0 - 3.0).collect();
    let a = with_spectrum(&eigs, 24);
    let err =
        conjugate_gradient(&a, &rhs(n), 0.0, &CgOptions::default(), Progress::none()).unwrap_err();
    let LinalgError::NotPositiveDefinite {
        iteration,
        curvature,
        ..
    } = err
    else {
        panic!("{err}")
    };
    assert!(iteration >= 1 && curvature <= 0.0);
    assert!(err
        .to_string()
        .contains(&format!("at CG iteration {iteration}")));

    let positive: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
    let a = with_spectrum(&positive, 25);
    let err = conjugate_gradient(&a, &rhs(n), -50.0, &CgOptions::default(), Progress::none())
        .unwrap_err();
    assert!(matches!(
        err,
        LinalgError::NotPositiveDefinite { damping: -50.0, .. }
    ));
}

#[test]
fn running_out_of_iterations_is_not_an_error() {
    let n = 100;
    let eigs: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
    let a = with_spectrum(&eigs, 26);
    let mut last = (0, 0);
    let mut record = |done: usize, planned: usize| last = (done, planned);
    let opts = CgOptions {
        max_iter: 5,
        tol: 1e-12,
    };
    let sol = conjugate_gradient(&a, &rhs(n), 0.0, &opts, Progress::new(&mut record)).unwrap();
    assert!(!sol.converged);
    assert_eq!(sol.iterations, 5);
    assert!(sol.residual_norm > 0.0);
    assert_eq!(last, (5, 5));
}

#[test]
fn trivial_and_invalid_inputs() {
    let a = with_spectrum(&[1.0, 2.0, 3.0], 27);
    let sol =
        conjugate_gradient(&a, &[0.0; 3], 0.0, &CgOptions::default(), Progress::none()).unwrap();
    assert!(sol.converged && sol.iterations == 0 && sol.x == vec![0.0; 3]);
    let err = conjugate_gradient(&a, &[1.0; 4], 0.0, &CgOptions::default(), Progress::none())
        .unwrap_err();
    assert_eq!(err.to_string(), "right-hand side has length 4, expected 3");
    assert!(conjugate_gradient(
        &a,
        &[f64::NAN, 0.0, 0.0],
        0.0,
        &CgOptions::default(),
        Progress::none()
    )
    .is_err());
    assert!(conjugate_gradient(
        &a,
        &[1.0; 3],
        f64::INFINITY,
        &CgOptions::default(),
        Progress::none()
    )
    .is_err());
    let bad_tol = CgOptions {
        tol: -1.0,
        ..CgOptions::default()
    };
    assert!(conjugate_gradient(&a, &[1.0; 3], 0.0, &bad_tol, Progress::none()).is_err());
}
