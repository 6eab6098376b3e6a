//! Optimizers over flat parameter slices with PyTorch's exact update rules
//! and defaults: [`Sgd`] (`torch.optim.SGD`), [`Adam`] (`torch.optim.Adam`,
//! and `torch.optim.AdamW` with [`AdamConfig::adamw`]), plus
//! [`clip_grad_norm`] (`torch.nn.utils.clip_grad_norm_`). Generic over `f32`
//! and `f64`.
//!
//! ```
//! use secondo_optim::{clip_grad_norm, Adam, AdamConfig, Optimizer};
//! // minimize (w - 3)^2
//! let mut opt = Adam::new(AdamConfig { lr: 0.1, ..AdamConfig::default() }).unwrap();
//! let mut w = vec![0.0f32];
//! for _ in 0..500 {
//!     let mut g = vec![2.0 * (w[0] - 3.0)];
//!     clip_grad_norm(&mut [&mut g], 1.0, 2.0, true).unwrap();
//!     opt.step(&mut [&mut w], &[&g]).unwrap();
//! }
//! assert!((w[0] - 3.0).abs() < 1e-2);
//! ```
#![warn(missing_docs)]

mod adam;
mod clip;
mod error;
mod layout;
mod scalar;
mod sgd;
mod state;

pub use adam::{Adam, AdamConfig};
pub use clip::clip_grad_norm;
pub use error::OptimError;
pub use scalar::Scalar;
pub use sgd::{Sgd, SgdConfig};
pub use state::OptimizerState;

/// An optimizer updating parameter slices in place from their gradients.
///
/// `params[i]` and `grads[i]` must have equal lengths. State (momentum,
/// moments) is created at the first step for that layout; later steps must
/// pass the same number of slices with the same lengths, in the same order,
/// or get an error. On error nothing is changed.
///
/// ```
/// use secondo_optim::{Optimizer, Sgd, SgdConfig};
/// fn train(opt: &mut dyn Optimizer<f64>, w: &mut Vec<f64>) {
///     for _ in 0..100 {
///         let g: Vec<f64> = w.iter().map(|x| 2.0 * x).collect();
///         opt.step(&mut [w.as_mut_slice()], &[&g]).unwrap();
///     }
/// }
/// let mut opt = Sgd::new(SgdConfig { lr: 0.1, ..SgdConfig::default() }).unwrap();
/// let mut w = vec![1.0, -1.0];
/// train(&mut opt, &mut w);
/// assert!(w.iter().all(|x| x.abs() < 1e-9));
/// ```
pub trait Optimizer<T> {
    /// Applies one update to `params` given `grads`.
    ///
    /// ```
    /// use secondo_optim::{Optimizer, Sgd, SgdConfig};
    /// let mut opt = Sgd::new(SgdConfig { lr: 0.5, ..SgdConfig::default() }).unwrap();
    /// let mut w = [1.0f32, 2.0];
    /// opt.step(&mut [&mut w], &[&[1.0, 1.0]]).unwrap();
    /// assert_eq!(w, [0.5, 1.5]);
    /// assert!(opt.step(&mut [&mut w], &[&[1.0]]).is_err());
    /// ```
    fn step(&mut self, params: &mut [&mut [T]], grads: &[&[T]]) -> Result<(), OptimError>;

    /// The current learning rate.
    ///
    /// ```
    /// use secondo_optim::{Adam, AdamConfig, Optimizer};
    /// let opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    /// assert_eq!(opt.learning_rate(), 1e-3);
    /// ```
    fn learning_rate(&self) -> f64;

    /// Changes the learning rate (for schedules); errors, changing nothing,
    /// unless `lr` is finite and `>= 0`.
    ///
    /// ```
    /// use secondo_optim::{Optimizer, Sgd, SgdConfig};
    /// let mut opt = Sgd::<f64>::new(SgdConfig::default()).unwrap();
    /// opt.set_learning_rate(0.01).unwrap();
    /// assert_eq!(opt.learning_rate(), 0.01);
    /// assert!(opt.set_learning_rate(-0.01).is_err());
    /// ```
    fn set_learning_rate(&mut self, lr: f64) -> Result<(), OptimError>;

    /// The state kept between steps (empty buffers before the first).
    fn state(&self) -> OptimizerState<T>;

    /// Continues from `state`, as [`Optimizer::state`] gave it: the next
    /// step is the one the saving optimizer would have taken. Refuses,
    /// changing nothing, a state this optimizer's configuration cannot have
    /// (missing buffers, buffers of different layouts, moments without a
    /// step count).
    fn restore(&mut self, state: OptimizerState<T>) -> Result<(), OptimError>;
}
