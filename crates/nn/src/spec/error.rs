use thiserror::Error;

use super::Layer;

/// An error in a model spec string, or a disagreement between a spec and the
/// shape of its input.
///
/// Every error carries a 0-based character offset into the spec string (see
/// [`SpecError::position`]); its message is one line that starts with
/// `model spec: `.
///
/// ```
/// use secondo_nn::spec::{ModelSpec, SpecError};
/// let err = ModelSpec::parse("linear(784,256x)").unwrap_err();
/// assert!(matches!(err, SpecError::Syntax { position: 14, .. }));
/// assert_eq!(
///     err.to_string(),
///     "model spec: at position 14: expected ',' or ')' after the number, found 'x'"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A token other than the one the grammar requires.
    #[error("model spec: at position {position}: expected {expected}, found {found}")]
    Syntax {
        /// Character offset of the offending token (the string's length for
        /// its end).
        position: usize,
        /// What the grammar allows there, in words.
        expected: String,
        /// The token found, quoted, or `end of input`.
        found: String,
    },
    /// A letter or digit outside ASCII, in or beside a word: names are ASCII.
    #[error(
        "model spec: at position {position}: unexpected character {found} (names are ASCII letters, digits and '_')"
    )]
    Character {
        /// Character offset of the character.
        position: usize,
        /// The character, quoted.
        found: String,
    },
    /// A layer name that is not one of [`Layer::NAMES`].
    #[error(
        "model spec: unknown layer '{name}' at position {position} (expected one of: {})",
        Layer::NAMES.join(", ")
    )]
    UnknownLayer {
        /// The name as written (shortened when very long).
        name: String,
        /// Character offset of the name.
        position: usize,
    },
    /// A well-formed argument list that the layer does not accept: unknown,
    /// repeated, missing or surplus arguments, or a value out of range.
    #[error("model spec: at position {position}: {message}")]
    InvalidArgument {
        /// Character offset of the offending argument (of the closing
        /// parenthesis for a missing one, of the layer name for a layer that
        /// is too large as a whole).
        position: usize,
        /// What is wrong, in words.
        message: String,
    },
    /// A layer that cannot take the shape its predecessor produces (from
    /// [`ModelSpec::output_shapes`](super::ModelSpec::output_shapes)).
    #[error("model spec: layer {layer} `{text}` at position {position} {message}")]
    Shape {
        /// The layer's path in the model as its state_dict names give it:
        /// its index, or inside a residual block e.g. `3.body.0`.
        layer: String,
        /// The layer's source text, on one line.
        text: String,
        /// Character offset of the layer in the spec string.
        position: usize,
        /// What the layer expects and what it got.
        message: String,
    },
}

impl SpecError {
    /// The error with its layer path put under `parent` (a layer index or
    /// a residual block's branch name), as the state_dict nests names.
    pub(super) fn within(mut self, parent: &str) -> Self {
        if let Self::Shape { layer, .. } = &mut self {
            *layer = format!("{parent}.{layer}");
        }
        self
    }

    /// The 0-based character offset into the spec string that the error
    /// refers to.
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// let err = ModelSpec::parse("relu,lineer(3,4)").unwrap_err();
    /// assert_eq!(err.position(), 5);
    /// ```
    pub fn position(&self) -> usize {
        match self {
            Self::Syntax { position, .. }
            | Self::Character { position, .. }
            | Self::UnknownLayer { position, .. }
            | Self::InvalidArgument { position, .. }
            | Self::Shape { position, .. } => *position,
        }
    }
}
