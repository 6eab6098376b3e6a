use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while loading, saving or transforming a
/// [`Dataset`](crate::Dataset).
///
/// Each message is a single line that names the file (or dataset), the tensor
/// and the position involved.
///
/// ```
/// use secondo_data::{load_idx_pair, DataError};
/// let err = load_idx_pair("/no/such/images.idx", "/no/such/labels.idx").unwrap_err();
/// assert!(matches!(err, DataError::Io { .. }));
/// assert!(err.to_string().starts_with("/no/such/images.idx: "));
/// ```
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be read or written.
    ///
    /// The I/O error is part of the message and not exposed as the error's
    /// source, so that printing the chain (anyhow's `{:#}`) says it once.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The file's bytes are not what its format requires (bad magic, truncated,
    /// corrupt header, inconsistent counts, ...).
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// A required tensor is absent from a safetensors file.
    #[error("{}: missing tensor `{tensor}`", path.display())]
    MissingTensor {
        /// The file involved.
        path: PathBuf,
        /// The tensor name that was looked for.
        tensor: String,
    },
    /// A tensor has a data type or shape the loader cannot use.
    #[error("{}: tensor `{tensor}` is {found}, expected {expected}", path.display())]
    WrongType {
        /// The file involved.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The data type or shape found.
        found: String,
        /// What the loader accepts.
        expected: String,
    },
    /// `x` and `y` disagree on the number of samples.
    #[error("{origin}: x has {x} samples but y has {y}")]
    SampleCountMismatch {
        /// The file or dataset involved.
        origin: String,
        /// Samples in `x` (its first axis).
        x: usize,
        /// Samples in `y` (its first axis).
        y: usize,
    },
    /// A class label is negative.
    #[error("{origin}: tensor `{tensor}` has negative class label {value} at flat index {index}")]
    NegativeLabel {
        /// The file or dataset involved.
        origin: String,
        /// The tensor name.
        tensor: String,
        /// Flat (row-major) index of the first negative label.
        index: usize,
        /// The label found.
        value: i64,
    },
    /// A value is NaN or infinite.
    #[error("{origin}: tensor `{tensor}` has non-finite value {value} at flat index {index}")]
    NonFinite {
        /// The file or dataset involved.
        origin: String,
        /// The tensor name.
        tensor: String,
        /// Flat (row-major) index of the first bad value.
        index: usize,
        /// The value found.
        value: f64,
    },
    /// Loading a file would need more memory than is available; the message
    /// names the file and what its header declares.
    #[error(transparent)]
    Memory(#[from] secondo_tensor::memory::OutOfMemory),
    /// An in-memory dataset or an argument is inconsistent (shapes, indices,
    /// fractions, batch sizes, labels out of range).
    #[error("{0}")]
    Invalid(String),
}

/// Result type of this crate.
///
/// ```
/// fn test_size(d: &secondo_data::Dataset) -> secondo_data::Result<usize> {
///     let (_, test) = d.split(0.1, 0)?;
///     Ok(test.len())
/// }
/// assert_eq!(test_size(&secondo_data::digits()).unwrap(), 180);
/// ```
pub type Result<T> = std::result::Result<T, DataError>;
