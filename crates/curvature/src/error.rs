use thiserror::Error;

/// Errors of objectives and curvature operators; one line each.
///
/// ```
/// let e = secondo_curvature::CurvatureError::Invalid("vector of length 3, expected 5".into());
/// assert_eq!(e.to_string(), "vector of length 3, expected 5");
/// ```
#[derive(Debug, Error)]
pub enum CurvatureError {
    /// A network, loss or weights problem.
    #[error(transparent)]
    Nn(#[from] secondo_nn::NnError),
    /// A spec problem.
    #[error(transparent)]
    Spec(#[from] secondo_nn::spec::SpecError),
    /// A data problem.
    #[error(transparent)]
    Data(#[from] secondo_data::DataError),
    /// A graph problem.
    #[error(transparent)]
    Graph(#[from] secondo_graph::GraphError),
    /// Work that would not fit in memory.
    #[error(transparent)]
    Memory(#[from] secondo_tensor::memory::OutOfMemory),
    /// An invalid argument.
    #[error("{0}")]
    Invalid(String),
}
