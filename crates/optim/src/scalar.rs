/// The floating-point element types the optimizers work on: `f32` and `f64`.
///
/// Hyperparameters are `f64` (as Python floats in PyTorch) and are converted
/// to the element type with [`Scalar::of`] where the update uses them.
///
/// ```
/// use secondo_optim::Scalar;
/// assert_eq!(<f32 as Scalar>::of(0.5), 0.5f32);
/// assert_eq!(<f64 as Scalar>::of(0.1), 0.1f64);
/// ```
pub trait Scalar: num_traits::Float + std::fmt::Debug + Send + Sync + 'static {
    /// Converts an `f64` to this type (rounding to nearest for `f32`).
    ///
    /// ```
    /// use secondo_optim::Scalar;
    /// assert_eq!(f32::of(1.0 / 3.0), 1.0f32 / 3.0);
    /// ```
    fn of(value: f64) -> Self;
}

impl Scalar for f32 {
    fn of(value: f64) -> f32 {
        value as f32
    }
}

impl Scalar for f64 {
    fn of(value: f64) -> f64 {
        value
    }
}
