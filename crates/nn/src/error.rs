use thiserror::Error;

use crate::spec::SpecError;

/// Errors from building networks, losses and parameter stores; one line each,
/// naming the file, tensor or layer concerned.
///
/// ```
/// use secondo_nn::NnError;
/// let e = NnError::MissingParameter { file: "w.safetensors".into(), name: "0.weight".into() };
/// assert_eq!(e.to_string(), "w.safetensors: missing parameter '0.weight'");
/// ```
#[derive(Debug, Error)]
pub enum NnError {
    /// The model spec is malformed or its shapes do not fit together.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A layer the spec language names but this operation does not support yet.
    #[error("layer {index} `{text}`: {reason}")]
    Unsupported {
        /// Layer index.
        index: usize,
        /// The layer's source text.
        text: String,
        /// Why.
        reason: String,
    },
    /// An unknown loss name.
    #[error("unknown loss '{0}' (expected cross_entropy, mse or bce_with_logits)")]
    UnknownLoss(String),
    /// Targets that do not fit the loss or the network output.
    #[error("targets: {0}")]
    Targets(String),
    /// A weights file lacks a parameter of the model.
    #[error("{file}: missing parameter '{name}'")]
    MissingParameter {
        /// The file.
        file: String,
        /// The parameter name.
        name: String,
    },
    /// A parameter tensor has the wrong shape or dtype, or non-finite values.
    #[error("{file}: tensor '{name}': {reason}")]
    BadTensor {
        /// The file.
        file: String,
        /// The tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read, parsed or written.
    #[error("{file}: {reason}")]
    File {
        /// The file.
        file: String,
        /// What went wrong.
        reason: String,
    },
    /// Building or running the graph failed.
    #[error(transparent)]
    Graph(#[from] secondo_graph::GraphError),
}
