mod common;

use common::{residual, with_spectrum};
use secondo_linalg::{power_iteration, DenseSymmetric, LinalgError, PowerOptions, Progress};

#[test]
fn finds_the_dominant_eigenpair() {
    let n = 200;
    let mut eigs: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
    eigs[0] = -4.0;
    eigs[1] = 6.0;
    let a = with_spectrum(&eigs, 31);
    let pair = power_iteration(&a, &PowerOptions::default(), Progress::none()).unwrap();
    assert!(pair.converged);
    assert!((pair.value - 6.0).abs() < 1e-8 * 6.0);
    assert!(residual(&a, pair.value, &pair.vector) <= 1e-8 * 6.0 + 1e-15);
    assert_eq!(pair.products, pair.iterations);

    eigs[1] = 3.0;
    let a = with_spectrum(&eigs, 32);
    let pair = power_iteration(
        &a,
        &PowerOptions {
            seed: 9,
            ..PowerOptions::default()
        },
        Progress::none(),
    )
    .unwrap();
    assert!(pair.converged && (pair.value + 4.0).abs() < 1e-8 * 4.0);
}

#[test]
fn opposite_extremes_do_not_converge() {
    let a = with_spectrum(&[2.0, -2.0, 0.5, 0.1], 33);
    let opts = PowerOptions {
        max_iter: 50,
        ..PowerOptions::default()
    };
    let pair = power_iteration(&a, &opts, Progress::none()).unwrap();
    assert!(!pair.converged);
    assert_eq!(pair.iterations, 50);
}

#[test]
fn invalid_inputs_are_errors() {
    let a = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, 2.0]).unwrap();
    let zero_iter = PowerOptions {
        max_iter: 0,
        ..PowerOptions::default()
    };
    assert!(matches!(
        power_iteration(&a, &zero_iter, Progress::none()),
        Err(LinalgError::InvalidOption {
            name: "max_iter",
            ..
        })
    ));
    let empty = DenseSymmetric::new(0, vec![]).unwrap();
    assert!(matches!(
        power_iteration(&empty, &PowerOptions::default(), Progress::none()),
        Err(LinalgError::EmptyOperator)
    ));
}
