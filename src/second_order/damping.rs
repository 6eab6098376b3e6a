//! Tikhonov damping `λ` and its Levenberg–Marquardt adaptation by the
//! reduction ratio (Martens 2010, "Deep learning via Hessian-free
//! optimization", §4.1; Martens & Grosse 2015, §6.5).

use crate::state::Scope;
use crate::Error;

/// Below this the damping stops shrinking: a damping of zero would undo the
/// safeguard that `(C + λI)` is invertible for a singular curvature.
pub const MIN_DAMPING: f64 = 1e-8;
/// Above this the damping stops growing: the step is then a tiny gradient step.
pub const MAX_DAMPING: f64 = 1e8;
/// Martens' factor: `λ ← 3/2 λ` after a poor model fit, `2/3 λ` after a good one.
const LM_FACTOR: f64 = 1.5;
/// A step whose loss or values were not finite lies far outside the region
/// the quadratic model holds in, so the damping grows faster than after a
/// poor fit.
const REJECTION_FACTOR: f64 = 10.0;
/// The damping a rejected step raises an undamped (`λ = 0`) method to.
const REJECTION_FLOOR: f64 = 1e-4;

/// The damping of a second-order step, fixed or adapted.
///
/// ```
/// use secondo::second_order::Damping;
/// let mut d = Damping::new(1.0, true);
/// d.adapt(0.1); // the model predicted a much larger decrease: trust it less
/// assert_eq!(d.value(), 1.5);
/// d.adapt(0.9); // the model fitted well: trust it more
/// assert_eq!(d.value(), 1.0);
/// d.adapt(0.5);
/// assert_eq!(d.value(), 1.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Damping {
    lambda: f64,
    adaptive: bool,
}

impl Damping {
    /// A damping starting at `lambda`, adapted by [`Damping::adapt`] when `adaptive`.
    pub fn new(lambda: f64, adaptive: bool) -> Damping {
        Damping { lambda, adaptive }
    }

    /// The current `λ`.
    pub fn value(&self) -> f64 {
        self.lambda
    }

    /// The Levenberg–Marquardt rule: `ρ < 1/4` multiplies `λ` by 3/2,
    /// `ρ > 3/4` by 2/3, within [[`MIN_DAMPING`], [`MAX_DAMPING`]]; a fixed
    /// damping stays.
    pub fn adapt(&mut self, rho: f64) {
        if !self.adaptive {
            return;
        }
        if rho < 0.25 {
            self.lambda = (self.lambda * LM_FACTOR).min(MAX_DAMPING);
        } else if rho > 0.75 {
            self.lambda = (self.lambda / LM_FACTOR).max(MIN_DAMPING);
        }
    }

    /// Saves `λ` as `damping` (whether it adapts is configuration).
    pub(crate) fn save(&self, state: &mut Scope<'_>) {
        state.put_scalar("damping", self.lambda);
    }

    /// Restores what [`Damping::save`] wrote.
    pub(crate) fn restore(&mut self, state: &mut Scope<'_>) -> Result<(), Error> {
        let lambda = state.take_scalar("damping")?;
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(state.invalid("damping", &format!("is {lambda}, not a damping")));
        }
        self.lambda = lambda;
        Ok(())
    }

    /// After a rejected step (non-finite loss or values): `λ` grows tenfold
    /// (from at least 10⁻⁴), fixed or not, so that the next step is shorter.
    ///
    /// ```
    /// use secondo::second_order::Damping;
    /// let mut d = Damping::new(0.0, false);
    /// d.raise();
    /// assert_eq!(d.value(), 1e-4);
    /// d.raise();
    /// assert_eq!(d.value(), 1e-3);
    /// ```
    pub fn raise(&mut self) {
        self.lambda = (self.lambda * REJECTION_FACTOR).clamp(REJECTION_FLOOR, MAX_DAMPING);
    }
}

/// The reduction ratio `ρ = (f(θ + Δ) − f(θ)) / (q(Δ) − q(0))` of the actual
/// change of the loss to the change the quadratic model `q` predicted; `None`
/// when the model predicts no decrease (a zero or non-descent step), which
/// says nothing about how far to trust it.
///
/// ```
/// use secondo::second_order::reduction_ratio;
/// assert_eq!(reduction_ratio(-0.5, -1.0), Some(0.5));
/// assert_eq!(reduction_ratio(0.2, -1.0), Some(-0.2));
/// assert_eq!(reduction_ratio(-0.5, 0.0), None);
/// ```
pub fn reduction_ratio(actual: f64, predicted: f64) -> Option<f64> {
    (predicted < 0.0).then(|| actual / predicted)
}
