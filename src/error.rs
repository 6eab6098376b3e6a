use thiserror::Error;

/// Everything that can go wrong in secondo's top-level operations; one line each.
///
/// ```
/// let e = secondo::Error::Invalid("--batch must be at least 1".into());
/// assert_eq!(e.to_string(), "--batch must be at least 1");
/// ```
#[derive(Debug, Error)]
pub enum Error {
    /// A network, loss or weights problem.
    #[error(transparent)]
    Nn(#[from] secondo_nn::NnError),
    /// A data problem.
    #[error(transparent)]
    Data(#[from] secondo_data::DataError),
    /// A graph problem.
    #[error(transparent)]
    Graph(#[from] secondo_graph::GraphError),
    /// An optimizer problem.
    #[error(transparent)]
    Optim(#[from] secondo_optim::OptimError),
    /// A spec problem.
    #[error(transparent)]
    Spec(#[from] secondo_nn::spec::SpecError),
    /// An objective or curvature problem.
    #[error(transparent)]
    Curvature(#[from] secondo_curvature::CurvatureError),
    /// A linear-algebra problem.
    #[error(transparent)]
    Linalg(#[from] secondo_linalg::LinalgError),
    /// Work that would not fit in memory.
    #[error(transparent)]
    Memory(#[from] secondo_tensor::memory::OutOfMemory),
    /// The run was stopped by a signal (Ctrl-C) between two steps.
    #[error("{0}")]
    Interrupted(String),
    /// An invalid argument or combination of inputs.
    #[error("{0}")]
    Invalid(String),
}
