use thiserror::Error;

/// Errors from tensor construction and kernels; each message is one line.
///
/// ```
/// use secondo_tensor::Tensor;
/// let err = Tensor::from_vec(vec![2, 2], vec![1.0f32]).unwrap_err();
/// assert!(err.to_string().contains("4"));
/// ```
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TensorError {
    /// The number of values does not match the product of the shape.
    #[error("shape {shape:?} needs {expected} values, got {got}")]
    DataLength {
        /// The requested shape.
        shape: Vec<usize>,
        /// Product of the shape.
        expected: usize,
        /// Number of values supplied.
        got: usize,
    },
    /// Operands disagree in shape.
    #[error("{op}: incompatible shapes {a:?} and {b:?}")]
    ShapeMismatch {
        /// The operation.
        op: String,
        /// First operand's shape.
        a: Vec<usize>,
        /// Second operand's shape.
        b: Vec<usize>,
    },
    /// Operands disagree in element type.
    #[error("{op}: mixed dtypes {a} and {b}")]
    DTypeMismatch {
        /// The operation.
        op: String,
        /// First dtype.
        a: crate::DType,
        /// Second dtype.
        b: crate::DType,
    },
    /// An invalid axis, permutation or other argument.
    #[error("{0}")]
    Invalid(String),
    /// A malformed einsum specification.
    #[error("einsum '{spec}': {reason}")]
    Einsum {
        /// The specification.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
}
