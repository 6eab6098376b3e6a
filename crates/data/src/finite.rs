use crate::error::{DataError, Result};

/// Checks that every value is finite, naming `origin` (a file or dataset) and
/// `tensor` with the flat index of the first NaN or infinity otherwise.
///
/// All loaders run their data through this check.
///
/// ```
/// use secondo_data::{check_finite, DataError};
/// assert!(check_finite("a.safetensors", "x", &[0.0, 1.5]).is_ok());
/// let err = check_finite("a.safetensors", "x", &[0.0, f64::NAN]).unwrap_err();
/// assert!(matches!(err, DataError::NonFinite { index: 1, .. }));
/// assert_eq!(
///     err.to_string(),
///     "a.safetensors: tensor `x` has non-finite value NaN at flat index 1"
/// );
/// ```
pub fn check_finite(origin: &str, tensor: &str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(DataError::NonFinite {
            origin: origin.to_string(),
            tensor: tensor.to_string(),
            index,
            value: values[index],
        }),
    }
}
