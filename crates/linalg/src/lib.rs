//! Matrix-free numerical linear algebra over symmetric linear operators.
//!
//! Curvature matrices of neural networks (Hessian, generalized Gauss–Newton,
//! Fisher) are only available through matrix–vector products. This crate
//! works with any [`SymmetricOperator`] — a dense matrix ([`DenseSymmetric`]),
//! a closure ([`FnOperator`]) or a user type — and provides:
//!
//! - extreme eigenpairs by block Lanczos with reorthogonalization (the basis
//!   kept semi-orthogonal) and thick restart ([`lanczos_top_k`]) or by power iteration ([`power_iteration`]);
//! - trace estimators ([`hutchinson`], [`hutch_plus_plus`], [`xtrace`]) and a
//!   diagonal estimator ([`diag_estimate`]);
//! - spectral densities by stochastic Lanczos quadrature ([`slq_density`]);
//! - conjugate gradients for damped systems ([`conjugate_gradient`]);
//! - a dense symmetric eigendecomposition ([`dense_symmetric_eigen`]).
//!
//! Every algorithm takes a [`Progress`] that is told how many products were
//! done out of how many are planned, and reports failures as [`LinalgError`].
//!
//! # Example
//!
//! ```
//! use secondo_linalg::{hutchinson, lanczos_top_k, FnOperator, LanczosOptions, Progress,
//!     TraceOptions, Which};
//!
//! // diag(1, 2, …, 100), known only through products.
//! let n = 100;
//! let op = FnOperator::new(n, |v: &[f64], _k: usize, out: &mut [f64]| {
//!     for (i, (o, x)) in out.iter_mut().zip(v).enumerate() {
//!         *o = ((i % n) + 1) as f64 * x;
//!     }
//!     Ok(())
//! });
//! let top = lanczos_top_k(&op, 2, Which::Largest, &LanczosOptions::default(), Progress::none())?;
//! assert!((top.values[0] - 100.0).abs() < 1e-8 && (top.values[1] - 99.0).abs() < 1e-8);
//! let trace = hutchinson(&op, &TraceOptions::default(), Progress::none())?;
//! assert!((trace.estimate - 5050.0).abs() < 1e-9);
//! # Ok::<(), secondo_linalg::LinalgError>(())
//! ```

#![warn(missing_docs)]

mod blas;
mod cg;
mod dense;
#[cfg(test)]
mod determinism;
mod error;
mod lanczos;
mod metered;
mod operator;
mod ortho;
mod power;
mod progress;
mod random;
mod slq;
mod trace;

pub use blas::{row_major_product, row_major_product_add, sum_ln, RowMajor};
pub use cg::{conjugate_gradient, CgOptions, CgSolution};
pub use dense::{
    dense_spd_inverse, dense_spd_inverse_log_det, dense_symmetric_eigen, symmetrized,
    SymmetricEigen,
};
pub use error::LinalgError;
pub use lanczos::{
    lanczos_function, lanczos_top_k, lanczos_top_k_from, BasisPrecision, Eigen, LanczosOptions,
    MatrixFunction, Which,
};
pub use operator::{DenseSymmetric, FnOperator, SymmetricOperator};
pub use power::{power_iteration, power_iteration_from, EigenPair, PowerOptions};
pub use progress::Progress;
pub use random::rademacher;
pub use slq::{slq_density, Density, SlqOptions};
pub use trace::{
    diag_estimate, hutch_plus_plus, hutchinson, xtrace, DiagonalEstimate, Estimate, TraceOptions,
};
