//! The dense kernels give the same bits whatever the size of the rayon pool
//! they run in (docs/ARCHITECTURE.md, "Determinism"): products of tall
//! blocks in f64 (through `faer`) and f32 (the vector kernels), projections
//! long enough to be summed from several row blocks, matrix-vector products
//! and the dense decompositions.

use secondo_tensor::in_thread_pools;

use crate::blas::{self, Stored};
use crate::dense::{symmetric_eigen, thin_svd};
use crate::random::{fill_uniform, generator};

const POOLS: [usize; 4] = [1, 2, 3, 4];

/// Seeded values uniform on [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut v = vec![0.0; n];
    fill_uniform(&mut generator(seed), &mut v);
    v
}

/// Asserts that `f` gives the same bits in every pool of [`POOLS`].
fn assert_thread_independent(what: &str, f: impl Fn() -> Vec<f64> + Sync) {
    let bits = in_thread_pools(&POOLS, || {
        f().iter().map(|x| x.to_bits()).collect::<Vec<u64>>()
    });
    for (threads, b) in POOLS.iter().zip(&bits).skip(1) {
        assert!(b == &bits[0], "{what}: {threads} threads differ from 1");
    }
}

/// `Aᵀ B` and `B − A C` for a tall `A` stored as `S`, with `q` columns in `B`.
fn projections<S: Stored>(n: usize, m: usize, q: usize) -> Vec<f64> {
    let a: Vec<S> = values(n * m, 1).into_iter().map(S::from_f64).collect();
    let mut b = values(n * q, 2);
    let mut coef = vec![0.0; m * q];
    blas::matmul_tn(&mut coef, &a, &b, n, m, q);
    blas::matmul_sub(&mut b, &a, &coef, n, m, q);
    coef.extend(b);
    coef
}

#[test]
fn projections_do_not_depend_on_the_thread_count() {
    // Longer than three row blocks of the vector kernels, and odd.
    for &(n, m, q) in &[(300_007, 7, 1), (300_007, 7, 3), (5_001, 40, 2)] {
        let what = format!("{n}x{m} basis, {q} columns");
        assert_thread_independent(&format!("f64 {what}"), || projections::<f64>(n, m, q));
        assert_thread_independent(&format!("f32 {what}"), || projections::<f32>(n, m, q));
    }
}

#[test]
fn products_and_dots_do_not_depend_on_the_thread_count() {
    let (x, y) = (values(300_001, 3), values(300_001, 4));
    assert_thread_independent("dot", || vec![blas::dot(&x, &y)]);
    for &(m, k, n) in &[(700, 701, 1), (1, 701, 700), (513, 300, 9), (300, 513, 300)] {
        let (a, b) = (values(m * k, 5), values(k * n, 6));
        assert_thread_independent(&format!("{m}x{k}x{n} product"), || {
            let mut out = vec![0.0; m * n];
            blas::matmul(&mut out, &a, &b, m, k, n);
            out
        });
    }
}

#[test]
fn decompositions_do_not_depend_on_the_thread_count() {
    let n = 300;
    let a = values(n * n, 7);
    let sym: Vec<f64> = (0..n * n).map(|i| a[i] + a[(i % n) * n + i / n]).collect();
    assert_thread_independent("eigendecomposition", || {
        let eig = symmetric_eigen(&sym, n).unwrap();
        eig.values.into_iter().chain(eig.vectors).collect()
    });
    let (rows, cols) = (20_011, 24);
    let tall = values(rows * cols, 8);
    assert_thread_independent("thin SVD", || {
        let svd = thin_svd(&tall, rows, cols).unwrap();
        svd.u.into_iter().chain(svd.s).chain(svd.v).collect()
    });
}
