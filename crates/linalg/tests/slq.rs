mod common;

use std::time::Instant;

use common::gaussian;
use faer::linalg::matmul::matmul;
use faer::{get_global_parallelism, Accum, MatMut, MatRef};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use secondo_linalg::{
    lanczos_top_k, slq_density, DenseSymmetric, FnOperator, LanczosOptions, LinalgError, Progress,
    SlqOptions, Which,
};

/// The mass of the density on `[lo, hi]` (trapezoidal rule on the grid).
fn mass(grid: &[f64], values: &[f64], lo: f64, hi: f64) -> f64 {
    grid.windows(2)
        .zip(values.windows(2))
        .filter(|(x, _)| x[0] >= lo && x[1] <= hi)
        .map(|(x, y)| 0.5 * (x[1] - x[0]) * (y[0] + y[1]))
        .sum()
}

fn value_at(grid: &[f64], values: &[f64], t: f64) -> f64 {
    let i = grid.iter().position(|g| *g >= t).unwrap();
    values[i]
}

/// Papyan's check: `Y = diag(5, 4, 3, 0, …) + Z Zᵀ / N` with `Z` an `N × N`
/// standard normal matrix. `Z Zᵀ / N` has a Marchenko–Pastur bulk on `[0, 4]`;
/// a spike `θ > 2` added to it moves to `θ + θ / (θ − 1)`: 6.25, 5.33 and 4.5.
#[test]
fn papyan_spiked_marchenko_pastur() {
    let start = Instant::now();
    let n = 2000;
    let z = gaussian(&mut ChaCha8Rng::seed_from_u64(2019), n * n);
    let spikes = [5.0, 4.0, 3.0];
    let op = FnOperator::new(n, |v: &[f64], k: usize, out: &mut [f64]| {
        let z = MatRef::from_column_major_slice(&z, n, n);
        let mut ztv = vec![0.0; n * k];
        let par = get_global_parallelism();
        let v_mat = MatRef::from_column_major_slice(v, n, k);
        matmul(
            MatMut::from_column_major_slice_mut(&mut ztv, n, k),
            Accum::Replace,
            z.transpose(),
            v_mat,
            1.0,
            par,
        );
        let out_mat = MatMut::from_column_major_slice_mut(out, n, k);
        let ztv = MatRef::from_column_major_slice(&ztv, n, k);
        matmul(out_mat, Accum::Replace, z, ztv, 1.0 / n as f64, par);
        for j in 0..k {
            for (i, spike) in spikes.iter().enumerate() {
                out[j * n + i] += spike * v[j * n + i];
            }
        }
        Ok(())
    });

    let opts = LanczosOptions {
        block_size: Some(3),
        tol: 1e-8,
        ..LanczosOptions::default()
    };
    let top = lanczos_top_k(&op, 3, Which::Largest, &opts, Progress::none()).unwrap();
    assert!(top.converged);
    for (value, theta) in top.values.iter().zip(spikes) {
        let predicted = theta + theta / (theta - 1.0);
        assert!(
            (value - predicted).abs() < 0.12,
            "outlier {value} vs BBP {predicted}"
        );
    }

    let opts = SlqOptions {
        num_probes: 10,
        lanczos_steps: 80,
        ..SlqOptions::default()
    };
    let density = slq_density(&op, &opts, Progress::none()).unwrap();
    let (grid, values) = (&density.grid, &density.values);
    assert_eq!(density.products, 800);
    assert!((mass(grid, values, f64::NEG_INFINITY, f64::INFINITY) - 1.0).abs() < 1e-12);
    let bulk = mass(grid, values, -0.25, 4.25);
    assert!(
        (bulk - (1.0 - 3.0 / n as f64)).abs() < 0.01,
        "bulk mass {bulk}"
    );
    // Each spike carries weight ≈ 1/N and shows as a bump separated from its neighbours.
    for theta in spikes {
        let at = theta + theta / (theta - 1.0);
        let bump = mass(grid, values, at - 0.2, at + 0.2);
        assert!((1e-4..3e-3).contains(&bump), "mass {bump} near {at}");
        assert!(value_at(grid, values, at) > 1e-3);
    }
    assert!(value_at(grid, values, 5.8) < 1e-6);
    assert!(value_at(grid, values, 4.9) < 1e-6);
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
}

#[test]
fn exact_quadrature_when_the_krylov_space_is_full() {
    let n = 12;
    let mut data = vec![0.0; n * n];
    for i in 0..n {
        data[i * n + i] = (i * i) as f64;
    }
    let a = DenseSymmetric::new(n, data).unwrap();
    let opts = SlqOptions {
        num_probes: 3,
        lanczos_steps: 50,
        grid_points: 2000,
        block_size: 2,
        ..SlqOptions::default()
    };
    let density = slq_density(&a, &opts, Progress::none()).unwrap();
    assert_eq!(density.products, 3 * n);
    // Normalized Rademacher probes weigh every eigenvector by exactly 1/n.
    for (node, weight) in density.nodes.iter().zip(&density.weights) {
        let nearest = node.max(0.0).sqrt().round();
        assert!((node - nearest * nearest).abs() < 1e-9);
        assert!((weight - 1.0 / (3 * n) as f64).abs() < 1e-9);
    }
    let spread = 121.0 * 1.1;
    let papyan = spread / (n - 1) as f64 / (8.0 * 3.0_f64.ln()).sqrt();
    assert!((density.kernel_width - papyan).abs() < 1e-9);
    assert!(
        density.grid[0] < -0.05 * 121.0 + 1e-9
            && *density.grid.last().unwrap() > 121.0 * 1.05 - 1e-9
    );
}

#[test]
fn explicit_kernel_width_and_progress() {
    let a = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, -1.0]).unwrap();
    let mut last = (0, 0);
    let mut record = |done: usize, planned: usize| last = (done, planned);
    let opts = SlqOptions {
        kernel_width: Some(0.5),
        ..SlqOptions::default()
    };
    let density = slq_density(&a, &opts, Progress::new(&mut record)).unwrap();
    assert_eq!(density.kernel_width, 0.5);
    assert_eq!(last, (density.products, density.products));
    assert!(density.grid[0] <= -3.0 && *density.grid.last().unwrap() >= 3.0);
}

#[test]
fn invalid_options_are_errors() {
    let a = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, 2.0]).unwrap();
    let run = |opts: SlqOptions| slq_density(&a, &opts, Progress::none());
    let bad = [
        SlqOptions {
            grid_points: 1,
            ..SlqOptions::default()
        },
        SlqOptions {
            num_probes: 0,
            ..SlqOptions::default()
        },
        SlqOptions {
            lanczos_steps: 0,
            ..SlqOptions::default()
        },
        SlqOptions {
            block_size: 0,
            ..SlqOptions::default()
        },
        SlqOptions {
            kernel_width: Some(-1.0),
            ..SlqOptions::default()
        },
        SlqOptions {
            kernel_width: Some(1e-300),
            grid_points: 3,
            ..SlqOptions::default()
        },
    ];
    for opts in bad {
        assert!(
            matches!(run(opts), Err(LinalgError::InvalidOption { .. })),
            "{opts:?}"
        );
    }
}
