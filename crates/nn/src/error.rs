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
    /// The name is escaped: names read from a file may hold line breaks.
    #[error("{file}: tensor '{}': {reason}", name.escape_debug())]
    BadTensor {
        /// The file.
        file: String,
        /// The tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A weights file holds tensors that are neither parameters nor buffers
    /// of the model, which PyTorch's strict loading refuses too.
    #[error(
        "{file}: unexpected tensors {}, which the model has no parameter or buffer for",
        few(names)
    )]
    UnexpectedTensors {
        /// The file.
        file: String,
        /// The unexpected tensor names, sorted.
        names: Vec<String>,
    },
    /// A file could not be read or parsed (reading checks the sizes a
    /// safetensors header declares against the file and the memory).
    #[error(transparent)]
    Data(#[from] secondo_data::DataError),
    /// A file could not be written.
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

/// Names listed in a message before the rest are only counted.
const LISTED_NAMES: usize = 5;

/// The first [`LISTED_NAMES`] names, quoted and escaped so that they stay on
/// one line, then how many more there are.
fn few(names: &[String]) -> String {
    let listed: Vec<String> = names
        .iter()
        .take(LISTED_NAMES)
        .map(|n| format!("'{}'", n.escape_debug()))
        .collect();
    match names.len().saturating_sub(LISTED_NAMES) {
        0 => listed.join(", "),
        more => format!("{} and {more} more", listed.join(", ")),
    }
}
