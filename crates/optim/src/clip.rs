use crate::error::OptimError;
use crate::scalar::Scalar;

/// Rescales gradients in place so that their total norm is at most
/// `max_norm`, with `torch.nn.utils.clip_grad_norm_` semantics, and returns
/// the total norm before clipping.
///
/// The total norm is the `norm_type`-norm of the per-slice norms (equal to the
/// norm of all values together); `norm_type` is a finite `p > 0` or
/// `f64::INFINITY` (largest absolute value). Every gradient is multiplied by
/// `min(1, max_norm / (total_norm + 1e-6))`. Norms are accumulated in `f64`.
///
/// If the total norm is NaN or infinite, `error_if_nonfinite` makes this
/// return [`OptimError::NonFiniteNorm`] without touching the gradients;
/// otherwise the gradients are scaled as PyTorch does (which turns them into
/// NaN). Errors on a negative or NaN `max_norm` or an invalid `norm_type`.
/// No gradients give a norm of 0.
///
/// ```
/// use secondo_optim::clip_grad_norm;
/// let mut a = vec![3.0f32];
/// let mut b = vec![4.0f32];
/// let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0, 2.0, false).unwrap();
/// assert_eq!(norm, 5.0);
/// assert!((a[0] - 0.6).abs() < 1e-6 && (b[0] - 0.8).abs() < 1e-6);
/// ```
pub fn clip_grad_norm<T: Scalar>(
    grads: &mut [&mut [T]],
    max_norm: f64,
    norm_type: f64,
    error_if_nonfinite: bool,
) -> Result<f64, OptimError> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(OptimError::InvalidHyperparameter {
            name: "max_norm",
            value: max_norm,
            reason: "must be >= 0",
        });
    }
    if norm_type.is_nan() || norm_type <= 0.0 {
        return Err(OptimError::InvalidHyperparameter {
            name: "norm_type",
            value: norm_type,
            reason: "must be > 0 or infinity",
        });
    }
    if grads.is_empty() {
        return Ok(0.0);
    }
    let per_slice: Vec<f64> = grads
        .iter()
        .map(|g| vector_norm(g.iter().map(|v| v.to_f64().unwrap_or(f64::NAN)), norm_type))
        .collect();
    let total = vector_norm(per_slice.into_iter(), norm_type);
    if error_if_nonfinite && !total.is_finite() {
        return Err(OptimError::NonFiniteNorm { norm: total });
    }
    // torch.clamp(max=1) keeps NaN, unlike f64::min
    let coef = max_norm / (total + 1e-6);
    let coef = T::of(if coef > 1.0 { 1.0 } else { coef });
    for g in grads.iter_mut() {
        for v in g.iter_mut() {
            *v = *v * coef;
        }
    }
    Ok(total)
}

/// The `p`-norm (or max-abs for infinite `p`) of the values; NaN propagates.
fn vector_norm(values: impl Iterator<Item = f64>, p: f64) -> f64 {
    if p == f64::INFINITY {
        values.fold(0.0, |acc: f64, v| {
            if v.is_nan() || acc.is_nan() {
                f64::NAN
            } else {
                acc.max(v.abs())
            }
        })
    } else if p == 1.0 {
        values.map(f64::abs).sum()
    } else if p == 2.0 {
        values.map(|v| v * v).sum::<f64>().sqrt()
    } else {
        values.map(|v| v.abs().powf(p)).sum::<f64>().powf(1.0 / p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_max_norm_keeps_gradients() {
        let mut a = vec![0.3f64, -0.4];
        let n = clip_grad_norm(&mut [&mut a], 1.0, 2.0, true).unwrap();
        assert!((n - 0.5).abs() < 1e-15);
        assert_eq!(a, vec![0.3, -0.4]);
    }

    #[test]
    fn clips_to_max_norm_with_torch_epsilon() {
        let mut a = vec![3.0f64, 0.0];
        let mut b = vec![-4.0f64];
        let n = clip_grad_norm(&mut [&mut a, &mut b], 2.0, 2.0, false).unwrap();
        assert_eq!(n, 5.0);
        let coef = 2.0 / (5.0 + 1e-6);
        assert_eq!(a, vec![3.0 * coef, 0.0]);
        assert_eq!(b, vec![-4.0 * coef]);
    }

    #[test]
    fn other_norms() {
        let mut a = vec![1.0f32, -2.0];
        let mut b = vec![3.0f32];
        let n = clip_grad_norm(&mut [&mut a, &mut b], 1.0, f64::INFINITY, false).unwrap();
        assert_eq!(n, 3.0);
        let coef = (1.0 / (3.0 + 1e-6)) as f32;
        assert_eq!(b, vec![3.0 * coef]);
        let mut a = vec![1.0f64, -2.0];
        let mut b = vec![3.0f64];
        assert_eq!(
            clip_grad_norm(&mut [&mut a, &mut b], 100.0, 1.0, false).unwrap(),
            6.0
        );
        // p = 3: (1 + 8 + 27)^(1/3) = 36^(1/3)
        let n = clip_grad_norm(&mut [&mut a, &mut b], 100.0, 3.0, false).unwrap();
        assert!((n - 36f64.cbrt()).abs() < 1e-12);
        assert_eq!(clip_grad_norm::<f64>(&mut [], 1.0, 2.0, true).unwrap(), 0.0);
        let mut z = vec![0.0f64; 4];
        assert_eq!(clip_grad_norm(&mut [&mut z], 0.0, 2.0, true).unwrap(), 0.0);
        assert_eq!(z, vec![0.0; 4]);
    }

    #[test]
    fn non_finite_and_invalid_arguments() {
        let mut a = vec![1.0f64, f64::INFINITY];
        let e = clip_grad_norm(&mut [&mut a], 1.0, 2.0, true).unwrap_err();
        assert_eq!(
            e,
            OptimError::NonFiniteNorm {
                norm: f64::INFINITY
            }
        );
        assert_eq!(a, vec![1.0, f64::INFINITY]);
        let mut a = vec![f64::NAN, 1.0];
        assert!(clip_grad_norm(&mut [&mut a], 1.0, f64::INFINITY, true).is_err());
        let n = clip_grad_norm(&mut [&mut a], 1.0, 2.0, false).unwrap();
        assert!(n.is_nan() && a.iter().all(|v| v.is_nan()));
        let mut a = vec![1.0f64];
        for (max_norm, p) in [
            (-1.0, 2.0),
            (f64::NAN, 2.0),
            (1.0, 0.0),
            (1.0, -1.0),
            (1.0, f64::NAN),
            (1.0, f64::NEG_INFINITY),
        ] {
            assert!(matches!(
                clip_grad_norm(&mut [&mut a], max_norm, p, false),
                Err(OptimError::InvalidHyperparameter { .. })
            ));
        }
        assert_eq!(a, vec![1.0]);
    }
}
