use num_traits::{One, Zero};

use crate::{Element, Tensor, TensorError};

/// One-hot encoding: a tensor of class indices (stored as floats) of shape `S`
/// becomes a 0/1 tensor of shape `S + [classes]` with the same dtype.
///
/// ```
/// use secondo_tensor::{one_hot, Tensor};
/// let y = Tensor::from_vec(vec![2], vec![2.0f32, 0.0]).unwrap();
/// let h = one_hot(&y, 3).unwrap();
/// assert_eq!(h.to_f64_vec(), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
/// ```
pub fn one_hot(labels: &Tensor, classes: usize) -> Result<Tensor, TensorError> {
    let mut shape = labels.shape().to_vec();
    shape.push(classes);
    crate::dispatch!(labels, v, T => {
        let mut out = vec![T::zero(); v.len() * classes];
        for (i, &l) in v.iter().enumerate() {
            let c = <T as Element>::to_f64(l);
            if !(c >= 0.0 && c < classes as f64 && c.fract() == 0.0) {
                return Err(TensorError::Invalid(format!(
                    "one_hot: label {c} at position {i} is not a class index in 0..{classes}"
                )));
            }
            out[i * classes + c as usize] = T::one();
        }
        Ok(Tensor::from_typed(shape, out))
    })
}
