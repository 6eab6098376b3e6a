//! Small dense helpers for the posterior's algebra: row-major `f64`
//! matrices multiplied through the tensor crate's einsum (its GEMM), and the
//! symmetric eigendecomposition of `secondo-linalg`, with eigenvectors
//! returned as rows.

use secondo_linalg::{dense_symmetric_eigen, DenseSymmetric};
use secondo_tensor::{einsum, Tensor};

use crate::Error;

/// `einsum(spec)` of two row-major `f64` operands of the given shapes.
pub(crate) fn contract(
    spec: &str,
    a: &[f64],
    a_shape: &[usize],
    b: &[f64],
    b_shape: &[usize],
) -> Vec<f64> {
    contract_owned(spec, a.to_vec(), a_shape, b.to_vec(), b_shape)
}

/// [`contract`] of operands it may keep (no copy into the tensors).
pub(crate) fn contract_owned(
    spec: &str,
    a: Vec<f64>,
    a_shape: &[usize],
    b: Vec<f64>,
    b_shape: &[usize],
) -> Vec<f64> {
    let a = Tensor::from_vec(a_shape.to_vec(), a).expect("shape matches values");
    let b = Tensor::from_vec(b_shape.to_vec(), b).expect("shape matches values");
    let out = einsum(spec, &[&a, &b]).expect("consistent contraction");
    match out.as_slice::<f64>() {
        Some(values) => values.to_vec(),
        None => out.to_f64_vec(),
    }
}

/// Eigenvalues (ascending) and eigenvectors as the rows of an `n × n`
/// row-major matrix `E` (so `A = Eᵀ diag(λ) E`) of the symmetric `a`.
pub(crate) fn eigen_rows(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let eig = dense_symmetric_eigen(&DenseSymmetric::new(n, a.to_vec())?)?;
    // faer's column-major eigenvector matrix read row-major is its transpose.
    Ok((eig.values, eig.vectors))
}

/// The `n × n` identity, row-major.
pub(crate) fn identity(n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    (0..n).for_each(|i| m[i * n + i] = 1.0);
    m
}
