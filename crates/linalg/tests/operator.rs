use secondo_linalg::{
    dense_symmetric_eigen, hutchinson, DenseSymmetric, FnOperator, LinalgError, Progress,
    SymmetricOperator, TraceOptions,
};

#[test]
fn dense_products_match_the_definition() {
    let n = 7;
    let data: Vec<f64> = (0..n * n)
        .map(|k| ((k / n) * (k % n)) as f64 + ((k / n) + (k % n)) as f64)
        .collect();
    let a = DenseSymmetric::new(n, data.clone()).unwrap();
    let v: Vec<f64> = (0..3 * n).map(|i| (i as f64).sin()).collect();
    let mut out = vec![0.0; 3 * n];
    a.apply_block(&v, 3, &mut out).unwrap();
    for j in 0..3 {
        for i in 0..n {
            let expected: f64 = (0..n).map(|c| data[i * n + c] * v[j * n + c]).sum();
            assert!((out[j * n + i] - expected).abs() < 1e-12);
        }
    }
}

#[test]
fn dense_construction_is_validated() {
    let err = DenseSymmetric::new(2, vec![1.0; 3]).unwrap_err();
    assert_eq!(err.to_string(), "matrix data has length 3, expected 4");
    let err = DenseSymmetric::new(2, vec![1.0, f64::NAN, f64::NAN, 1.0]).unwrap_err();
    assert!(matches!(err, LinalgError::NonFinite { index: 1, .. }));
    let err = DenseSymmetric::new(2, vec![1.0, 2.0, 2.5, 1.0]).unwrap_err();
    assert!(matches!(
        err,
        LinalgError::NotSymmetric { row: 0, col: 1, .. }
    ));
    // Rounding-level asymmetry is accepted and removed.
    let a = DenseSymmetric::new(2, vec![1.0, 2.0, 2.0 + 1e-14, 1.0]).unwrap();
    assert_eq!(a.as_slice()[1], a.as_slice()[2]);
}

#[test]
fn blocks_of_the_wrong_length_are_errors() {
    let a = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
    let mut out = [0.0; 4];
    let err = a.apply_block(&[1.0; 3], 2, &mut out).unwrap_err();
    assert_eq!(err.to_string(), "input block has length 3, expected 4");
    let op = FnOperator::new(2, |_: &[f64], _: usize, _: &mut [f64]| Ok(()));
    assert!(matches!(
        op.apply_block(&[1.0; 4], 2, &mut [0.0; 2]),
        Err(LinalgError::LengthMismatch { .. })
    ));
}

#[test]
fn operator_failures_and_non_finite_outputs_are_reported() {
    let failing = FnOperator::new(3, |_: &[f64], _: usize, _: &mut [f64]| {
        Err(LinalgError::Operator("graph evaluation failed".into()))
    });
    let err = hutchinson(&failing, &TraceOptions::default(), Progress::none()).unwrap_err();
    assert_eq!(err.to_string(), "operator failed: graph evaluation failed");
    let nan = FnOperator::new(3, |_: &[f64], _: usize, out: &mut [f64]| {
        out.fill(f64::NAN);
        Ok(())
    });
    let err = hutchinson(&nan, &TraceOptions::default(), Progress::none()).unwrap_err();
    assert!(matches!(
        err,
        LinalgError::NonFinite {
            what: "operator output",
            index: 0
        }
    ));
}

#[test]
fn dense_eigendecomposition_reconstructs_the_matrix() {
    let n = 30;
    let data: Vec<f64> = (0..n * n)
        .map(|k| (((k / n) + (k % n)) as f64).cos() * ((k / n) * (k % n)) as f64)
        .collect();
    let a = DenseSymmetric::new(n, data.clone()).unwrap();
    let eig = dense_symmetric_eigen(&a).unwrap();
    assert!(eig.values.windows(2).all(|w| w[0] <= w[1]));
    for i in 0..n {
        for j in 0..n {
            let rebuilt: f64 = (0..n)
                .map(|k| eig.vectors[k * n + i] * eig.values[k] * eig.vectors[k * n + j])
                .sum();
            assert!((rebuilt - data[i * n + j]).abs() < 1e-10);
        }
    }
}

#[test]
fn the_zero_operator_is_handled_everywhere() {
    use secondo_linalg::{
        diag_estimate, hutch_plus_plus, lanczos_top_k, power_iteration, slq_density, xtrace,
        LanczosOptions, PowerOptions, SlqOptions, Which,
    };
    let zero = DenseSymmetric::new(6, vec![0.0; 36]).unwrap();
    let opts = TraceOptions {
        products: 9,
        ..TraceOptions::default()
    };
    for est in [
        hutchinson(&zero, &opts, Progress::none()).unwrap(),
        hutch_plus_plus(&zero, &opts, Progress::none()).unwrap(),
        xtrace(&zero, &opts, Progress::none()).unwrap(),
    ] {
        assert_eq!((est.estimate, est.stderr), (0.0, 0.0));
    }
    assert_eq!(
        diag_estimate(&zero, &opts, Progress::none())
            .unwrap()
            .estimate,
        vec![0.0; 6]
    );
    let pair = power_iteration(&zero, &PowerOptions::default(), Progress::none()).unwrap();
    assert!(pair.converged && pair.value == 0.0);
    let eig = lanczos_top_k(
        &zero,
        6,
        Which::LargestMagnitude,
        &LanczosOptions::default(),
        Progress::none(),
    )
    .unwrap();
    assert!(eig.converged && eig.values.iter().all(|v| *v == 0.0));
    let density = slq_density(&zero, &SlqOptions::default(), Progress::none()).unwrap();
    assert!(density.nodes.iter().all(|v| *v == 0.0));
    assert!(density.values.iter().all(|v| v.is_finite()));
}
