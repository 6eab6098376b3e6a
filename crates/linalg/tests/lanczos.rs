mod common;

use common::{dot, residual, with_spectrum};
use secondo_linalg::{
    dense_symmetric_eigen, lanczos_top_k, BasisPrecision, DenseSymmetric, LanczosOptions,
    LinalgError, Progress, Which,
};

/// Checks `k` pairs from Lanczos against the dense eigendecomposition.
fn check(a: &DenseSymmetric, k: usize, which: Which, opts: &LanczosOptions) {
    let n = a.as_slice().len().isqrt();
    let eig = lanczos_top_k(a, k, which, opts, Progress::none()).unwrap();
    assert!(
        eig.converged,
        "k = {k}, {which:?}: not converged after {} products",
        eig.products
    );
    let mut reference = dense_symmetric_eigen(a).unwrap().values;
    match which {
        Which::Largest => reference.reverse(),
        Which::Smallest => {}
        Which::LargestMagnitude => reference.sort_by(|x, y| y.abs().total_cmp(&x.abs())),
    }
    let scale = reference.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
    assert_eq!(eig.values.len(), k);
    for (j, (got, want)) in eig.values.iter().zip(&reference).enumerate() {
        assert!(
            (got - want).abs() <= 1e-8 * scale,
            "k = {k}, {which:?}, pair {j}: {got} vs {want}"
        );
        let x = eig.vector(j).unwrap();
        assert!(
            residual(a, *got, x) <= 1e-8 * scale,
            "pair {j}: residual {}",
            residual(a, *got, x)
        );
        for i in 0..j {
            assert!(dot(x, eig.vector(i).unwrap()).abs() < 1e-8);
        }
        assert!((dot(x, x) - 1.0).abs() < 1e-10);
    }
    assert_eq!(eig.dim, n);
}

fn spread_spectrum(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 10.0 * (i as f64 / n as f64).powi(3) - 1.0)
        .collect()
}

#[test]
fn matches_dense_eigendecomposition_for_k_up_to_ten() {
    let a = with_spectrum(&spread_spectrum(300), 1);
    for k in 1..=10 {
        check(&a, k, Which::Largest, &LanczosOptions::default());
    }
    let linear: Vec<f64> = (0..300).map(|i| -1.0 + 11.0 * i as f64 / 300.0).collect();
    check(
        &with_spectrum(&linear, 9),
        4,
        Which::Smallest,
        &LanczosOptions::default(),
    );
}

#[test]
fn clustered_and_degenerate_eigenvalues() {
    let mut clustered = spread_spectrum(250);
    for (i, x) in clustered.iter_mut().rev().take(6).enumerate() {
        *x = 12.0 - 1e-7 * i as f64;
    }
    check(
        &with_spectrum(&clustered, 2),
        6,
        Which::Largest,
        &LanczosOptions::default(),
    );

    let mut degenerate = spread_spectrum(250);
    for x in degenerate.iter_mut().rev().take(3) {
        *x = 15.0;
    }
    for x in degenerate.iter_mut().rev().skip(3).take(2) {
        *x = 14.0;
    }
    let a = with_spectrum(&degenerate, 3);
    check(&a, 5, Which::Largest, &LanczosOptions::default());
    check(
        &a,
        3,
        Which::Largest,
        &LanczosOptions {
            block_size: Some(3),
            ..LanczosOptions::default()
        },
    );
}

#[test]
fn indefinite_hessian_like_spectrum() {
    // A bulk near zero, a few large positive outliers and some negative curvature.
    let n = 400;
    let mut eigs: Vec<f64> = (0..n).map(|i| 0.05 * ((i as f64 * 0.37).sin())).collect();
    eigs[0] = -2.0;
    eigs[1] = -0.7;
    eigs[2] = 8.0;
    eigs[3] = 5.5;
    eigs[4] = 3.0;
    let a = with_spectrum(&eigs, 4);
    let opts = LanczosOptions::default();
    check(&a, 3, Which::Largest, &opts);
    check(&a, 2, Which::Smallest, &opts);
    check(&a, 5, Which::LargestMagnitude, &opts);
}

/// A basis stored in f32 gives eigenvalues to about f32 precision, with
/// thick restarts (basis 25 on dimension 1000).
#[test]
fn basis_in_f32_is_accurate_to_single_precision() {
    let n = 1000;
    let spectrum: Vec<f64> = (0..n)
        .map(|i| (i as f64 / n as f64).powi(2) * 4.0 - 2.0)
        .collect();
    let a = with_spectrum(&spectrum, 4);
    let reference = dense_symmetric_eigen(&a).unwrap().values;
    let opts = LanczosOptions {
        tol: 1e-6,
        max_basis: Some(25),
        basis: BasisPrecision::F32,
        ..LanczosOptions::default()
    };
    for k in [1, 5, 10] {
        let which = Which::Largest;
        let eig = lanczos_top_k(&a, k, which, &opts, Progress::none()).unwrap();
        assert!(eig.converged, "{which:?}: residuals {:?}", eig.residuals);
        for (j, (got, want)) in eig.values.iter().zip(reference.iter().rev()).enumerate() {
            assert!(
                (got - want).abs() <= 1e-6 * 2.0,
                "{which:?} {j}: {got} vs {want}"
            );
            let x = eig.vector(j).unwrap();
            assert!(residual(&a, *got, x) <= 1e-5 * 2.0, "{which:?} {j}");
        }
    }
}

#[test]
fn thick_restart_with_a_small_basis() {
    let a = with_spectrum(&spread_spectrum(300), 5);
    let opts = LanczosOptions {
        block_size: Some(2),
        max_basis: Some(12),
        ..LanczosOptions::default()
    };
    check(&a, 4, Which::Largest, &opts);
}

#[test]
fn whole_space_is_exact() {
    let a = with_spectrum(&[3.0, -1.0, 2.0, 0.5, 7.0, 7.0], 6);
    check(&a, 6, Which::Largest, &LanczosOptions::default());
    check(
        &a,
        6,
        Which::Smallest,
        &LanczosOptions {
            block_size: Some(1),
            ..LanczosOptions::default()
        },
    );
}

#[test]
fn zero_and_identity_operators() {
    let zero = DenseSymmetric::new(5, vec![0.0; 25]).unwrap();
    let eig = lanczos_top_k(
        &zero,
        2,
        Which::Largest,
        &LanczosOptions::default(),
        Progress::none(),
    )
    .unwrap();
    assert!(eig.converged && eig.values == vec![0.0, 0.0]);
    let mut id = vec![0.0; 100];
    for i in 0..10 {
        id[i * 10 + i] = 2.0;
    }
    let id = DenseSymmetric::new(10, id).unwrap();
    let eig = lanczos_top_k(
        &id,
        3,
        Which::Largest,
        &LanczosOptions::default(),
        Progress::none(),
    )
    .unwrap();
    assert!(eig.converged);
    assert!(eig.values.iter().all(|v| (v - 2.0).abs() < 1e-12));
}

#[test]
fn running_out_of_iterations_is_reported() {
    let a = with_spectrum(&spread_spectrum(200), 7);
    let opts = LanczosOptions {
        max_iter: 3,
        block_size: Some(1),
        ..LanczosOptions::default()
    };
    let eig = lanczos_top_k(&a, 1, Which::Largest, &opts, Progress::none()).unwrap();
    assert!(!eig.converged);
    assert_eq!((eig.iterations, eig.products), (3, 3));
}

#[test]
fn progress_counts_products() {
    let a = with_spectrum(&spread_spectrum(100), 8);
    let mut reports = Vec::new();
    let mut record = |done: usize, planned: usize| reports.push((done, planned));
    let eig = lanczos_top_k(
        &a,
        2,
        Which::Largest,
        &LanczosOptions::default(),
        Progress::new(&mut record),
    )
    .unwrap();
    assert!(reports.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(reports.iter().all(|&(done, planned)| done <= planned));
    assert_eq!(reports.last(), Some(&(eig.products, eig.products)));
}

#[test]
fn bad_requests_are_errors() {
    let a = DenseSymmetric::new(10, vec![0.0; 100]).unwrap();
    let run =
        |k, opts: LanczosOptions| lanczos_top_k(&a, k, Which::Largest, &opts, Progress::none());
    let err = run(12, LanczosOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "k = 12 is larger than the dimension 10");
    assert!(matches!(
        run(0, LanczosOptions::default()),
        Err(LinalgError::InvalidOption { name: "k", .. })
    ));
    let tiny = LanczosOptions {
        max_basis: Some(5),
        ..LanczosOptions::default()
    };
    assert!(matches!(
        run(3, tiny),
        Err(LinalgError::InvalidOption {
            name: "max_basis",
            ..
        })
    ));
    let wide = LanczosOptions {
        block_size: Some(11),
        ..LanczosOptions::default()
    };
    assert!(matches!(
        run(1, wide),
        Err(LinalgError::InvalidOption {
            name: "block_size",
            ..
        })
    ));
    let nan = LanczosOptions {
        tol: f64::NAN,
        ..LanczosOptions::default()
    };
    assert!(matches!(
        run(1, nan),
        Err(LinalgError::InvalidOption { name: "tol", .. })
    ));
    let empty = DenseSymmetric::new(0, vec![]).unwrap();
    let err = lanczos_top_k(
        &empty,
        1,
        Which::Largest,
        &LanczosOptions::default(),
        Progress::none(),
    );
    assert!(matches!(err, Err(LinalgError::EmptyOperator)));
}

/// `f(A) v` by the dense eigendecomposition of `a`.
fn dense_function(a: &DenseSymmetric, v: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    let n = v.len();
    let eig = dense_symmetric_eigen(a).unwrap();
    let mut out = vec![0.0; n];
    for (c, q) in eig.values.iter().zip(eig.vectors.chunks_exact(n)) {
        let along = dot(q, v) * f(*c);
        out.iter_mut().zip(q).for_each(|(o, q)| *o += along * q);
    }
    out
}

#[test]
fn lanczos_function_is_the_dense_function_once_the_krylov_space_is_full() {
    use secondo_linalg::lanczos_function;
    let n = 40;
    // Eigenvalues spread over four orders of magnitude.
    let spectrum: Vec<f64> = (0..n)
        .map(|i| 10f64.powf(-2.0 + 4.0 * i as f64 / (n - 1) as f64))
        .collect();
    let a = with_spectrum(&spectrum, 7);
    let v: Vec<f64> = (0..n).map(|i| ((i * 7 + 3) % 11) as f64 - 5.0).collect();
    for alpha in [0.25, 0.5, 0.75] {
        let f = |c: f64| (c + 1e-3).powf(-alpha);
        let want = dense_function(&a, &v, f);
        let error = |steps| {
            let got = lanczos_function(&a, &v, steps, f, Progress::none()).unwrap();
            assert!(got.products <= steps);
            let d: Vec<f64> = got.x.iter().zip(&want).map(|(g, w)| g - w).collect();
            (dot(&d, &d) / dot(&want, &want)).sqrt()
        };
        let full = error(n);
        assert!(
            full < 1e-10,
            "α = {alpha}: relative error {full} with k = n"
        );
        assert!(
            error(5) > 1e3 * full.max(1e-15),
            "α = {alpha}: five steps are not exact"
        );
    }
    let bad = lanczos_function(&a, &v[1..], n, f64::sqrt, Progress::none());
    assert!(matches!(bad, Err(LinalgError::LengthMismatch { .. })));
    let none = lanczos_function(&a, &v, 0, f64::sqrt, Progress::none());
    assert!(matches!(
        none,
        Err(LinalgError::InvalidOption { name: "steps", .. })
    ));
}
