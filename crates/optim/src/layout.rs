use crate::error::OptimError;

/// The parameter layout (number and lengths of slices) an optimizer's state
/// was created for at its first step.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    lengths: Option<Vec<usize>>,
}

impl Layout {
    /// The layout of slices of these lengths, as after a first step.
    pub(crate) fn of(lengths: Vec<usize>) -> Layout {
        Layout {
            lengths: Some(lengths),
        }
    }

    /// Checks that `params` and `grads` pair up and match the first step's
    /// layout. Returns `true` on the first step (state must be created), after
    /// which the layout is fixed. Nothing is recorded if an error is returned.
    pub(crate) fn check<T>(
        &mut self,
        params: &[&mut [T]],
        grads: &[&[T]],
    ) -> Result<bool, OptimError> {
        if params.len() != grads.len() {
            return Err(OptimError::CountMismatch {
                params: params.len(),
                grads: grads.len(),
            });
        }
        for (index, (p, g)) in params.iter().zip(grads).enumerate() {
            if p.len() != g.len() {
                return Err(OptimError::LengthMismatch {
                    index,
                    param: p.len(),
                    grad: g.len(),
                });
            }
        }
        match &self.lengths {
            None => {
                self.lengths = Some(params.iter().map(|p| p.len()).collect());
                Ok(true)
            }
            Some(lengths) => {
                if lengths.len() != params.len() {
                    return Err(OptimError::ParamCountChanged {
                        expected: lengths.len(),
                        got: params.len(),
                    });
                }
                for (index, (&expected, p)) in lengths.iter().zip(params).enumerate() {
                    if p.len() != expected {
                        return Err(OptimError::ParamLengthChanged {
                            index,
                            expected,
                            got: p.len(),
                        });
                    }
                }
                Ok(false)
            }
        }
    }
}

/// Errors unless `value` is finite and `>= 0`.
pub(crate) fn non_negative(name: &'static str, value: f64) -> Result<(), OptimError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(OptimError::InvalidHyperparameter {
            name,
            value,
            reason: "must be finite and >= 0",
        })
    }
}
