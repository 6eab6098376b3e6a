use thiserror::Error;

/// Errors from building or stepping an optimizer, or clipping gradients.
///
/// ```
/// use secondo_optim::{OptimError, Sgd, SgdConfig};
/// let err = Sgd::<f64>::new(SgdConfig { lr: -1.0, ..SgdConfig::default() }).unwrap_err();
/// assert!(matches!(err, OptimError::InvalidHyperparameter { name: "lr", .. }));
/// assert_eq!(err.to_string(), "invalid lr -1: must be finite and >= 0");
/// ```
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum OptimError {
    /// A hyperparameter is out of its valid range.
    #[error("invalid {name} {value}: {reason}")]
    InvalidHyperparameter {
        /// The hyperparameter's name (`lr`, `momentum`, `beta1`, ...).
        name: &'static str,
        /// The value given.
        value: f64,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// `params` and `grads` have different numbers of slices.
    #[error("got {params} parameter slices but {grads} gradient slices")]
    CountMismatch {
        /// Number of parameter slices.
        params: usize,
        /// Number of gradient slices.
        grads: usize,
    },
    /// A parameter slice and its gradient have different lengths.
    #[error("parameter {index} has {param} values but its gradient has {grad}")]
    LengthMismatch {
        /// Index of the parameter slice.
        index: usize,
        /// Its length.
        param: usize,
        /// Its gradient's length.
        grad: usize,
    },
    /// The number of parameter slices differs from the first step's.
    #[error("optimizer state holds {expected} parameters but this step got {got}")]
    ParamCountChanged {
        /// Number of slices at the first step.
        expected: usize,
        /// Number of slices now.
        got: usize,
    },
    /// A parameter slice's length differs from the first step's.
    #[error("parameter {index} had {expected} values at the first step but now has {got}")]
    ParamLengthChanged {
        /// Index of the parameter slice.
        index: usize,
        /// Its length at the first step.
        expected: usize,
        /// Its length now.
        got: usize,
    },
    /// A state handed to [`crate::Optimizer::restore`] that the optimizer
    /// could not have saved.
    #[error("invalid optimizer state: {0}")]
    InvalidState(String),
    /// The total gradient norm is NaN or infinite and the caller asked for an
    /// error in that case.
    #[error("total gradient norm is {norm}, not finite")]
    NonFiniteNorm {
        /// The norm found.
        norm: f64,
    },
}
