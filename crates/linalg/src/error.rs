//! The error type shared by every algorithm in the crate.

/// Errors reported by the operators and algorithms of this crate.
///
/// Every message is a single line that names the offending quantity.
///
/// # Example
///
/// ```
/// use secondo_linalg::{lanczos_top_k, DenseSymmetric, LanczosOptions, LinalgError, Progress, Which};
///
/// let a = DenseSymmetric::new(2, vec![2.0, 0.0, 0.0, 1.0])?;
/// let err = lanczos_top_k(&a, 3, Which::Largest, &LanczosOptions::default(), Progress::none())
///     .unwrap_err();
/// assert!(matches!(err, LinalgError::TooManyEigenpairs { k: 3, dim: 2 }));
/// assert_eq!(err.to_string(), "k = 3 is larger than the dimension 2");
/// # Ok::<(), LinalgError>(())
/// ```
#[derive(Debug, thiserror::Error)]
pub enum LinalgError {
    /// The operator acts on a space of dimension zero.
    #[error("the operator has dimension 0")]
    EmptyOperator,
    /// More eigenpairs were requested than the dimension of the operator.
    #[error("k = {k} is larger than the dimension {dim}")]
    TooManyEigenpairs {
        /// The number of eigenpairs requested.
        k: usize,
        /// The dimension of the operator.
        dim: usize,
    },
    /// A buffer or vector does not have the length the operation needs.
    #[error("{what} has length {actual}, expected {expected}")]
    LengthMismatch {
        /// The buffer that has the wrong length.
        what: &'static str,
        /// The length the operation needs.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// An option has a value the algorithm cannot work with.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The name of the option.
        name: &'static str,
        /// Why the value is rejected.
        reason: String,
    },
    /// A dense matrix is not symmetric up to rounding.
    #[error(
        "matrix is not symmetric: entry ({row}, {col}) = {value} but ({col}, {row}) = {mirror}"
    )]
    NotSymmetric {
        /// Row of the first entry.
        row: usize,
        /// Column of the first entry.
        col: usize,
        /// Value at `(row, col)`.
        value: f64,
        /// Value at `(col, row)`.
        mirror: f64,
    },
    /// Input data or an operator output contains NaN or an infinity.
    #[error("{what} contains a non-finite value at index {index}")]
    NonFinite {
        /// The data that contains the value.
        what: &'static str,
        /// Position of the first non-finite value.
        index: usize,
    },
    /// A dense eigendecomposition or singular value decomposition did not converge.
    #[error("dense {0} did not converge")]
    DenseNoConvergence(&'static str),
    /// Conjugate gradients met a direction of non-positive curvature.
    #[error(
        "the damped operator A + {damping}·I is not positive definite: pᵀ(A + λI)p = {curvature:e} at CG iteration {iteration}"
    )]
    NotPositiveDefinite {
        /// The 1-based CG iteration at which the curvature was seen.
        iteration: usize,
        /// The damping λ of the system.
        damping: f64,
        /// The curvature pᵀ(A + λI)p that was not positive.
        curvature: f64,
    },
    /// A Cholesky factorization met a pivot that is not positive.
    #[error("the dense matrix is not positive definite (pivot {pivot})")]
    NotPositiveDefiniteMatrix {
        /// The index of the first pivot that was not positive.
        pivot: usize,
    },
    /// A user-supplied operator reported a failure.
    #[error("operator failed: {0}")]
    Operator(#[source] Box<dyn std::error::Error + Send + Sync>),
}
