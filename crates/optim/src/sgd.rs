use crate::error::OptimError;
use crate::layout::{non_negative, Layout};
use crate::scalar::Scalar;
use crate::state::{restored_layout, OptimizerState};
use crate::Optimizer;

/// Hyperparameters of [`Sgd`], with `torch.optim.SGD`'s defaults.
///
/// ```
/// use secondo_optim::SgdConfig;
/// let c = SgdConfig::default();
/// assert_eq!((c.lr, c.momentum, c.dampening, c.weight_decay), (1e-3, 0.0, 0.0, 0.0));
/// assert!(!c.nesterov && !c.maximize);
/// let with_momentum = SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() };
/// # let _ = with_momentum;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate, `>= 0` (default `1e-3`).
    pub lr: f64,
    /// Momentum factor, `>= 0` (default 0: plain SGD, no state).
    pub momentum: f64,
    /// Dampening of the gradient added to the momentum buffer (default 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient as `weight_decay * param`, `>= 0`
    /// (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum; needs `momentum > 0` and `dampening == 0`
    /// (default false).
    pub nesterov: bool,
    /// Maximize the objective instead of minimizing it (default false).
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> SgdConfig {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

impl SgdConfig {
    fn validate(&self) -> Result<(), OptimError> {
        non_negative("lr", self.lr)?;
        non_negative("momentum", self.momentum)?;
        non_negative("weight_decay", self.weight_decay)?;
        if !self.dampening.is_finite() {
            return Err(OptimError::InvalidHyperparameter {
                name: "dampening",
                value: self.dampening,
                reason: "must be finite",
            });
        }
        if self.nesterov && self.momentum <= 0.0 {
            return Err(OptimError::InvalidHyperparameter {
                name: "momentum",
                value: self.momentum,
                reason: "nesterov needs momentum > 0",
            });
        }
        if self.nesterov && self.dampening != 0.0 {
            return Err(OptimError::InvalidHyperparameter {
                name: "dampening",
                value: self.dampening,
                reason: "nesterov needs dampening 0",
            });
        }
        Ok(())
    }
}

/// Stochastic gradient descent with optional momentum, dampening, Nesterov
/// momentum and L2 weight decay, following `torch.optim.SGD` step for step:
///
/// ```text
/// g = ±grad + weight_decay * p              (- when maximizing)
/// if momentum != 0:
///     b = g                                 (first step)
///     b = momentum * b + (1 - dampening) * g (later steps)
///     g = g + momentum * b  if nesterov  else  b
/// p = p - lr * g
/// ```
///
/// The momentum buffers are created at the first step; later steps must
/// pass the same number of slices with the same lengths.
///
/// ```
/// use secondo_optim::{Optimizer, Sgd, SgdConfig};
/// let mut opt = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() }).unwrap();
/// let mut w = vec![1.0f64];
/// for _ in 0..3 {
///     let g = w.clone(); // gradient of w^2 / 2
///     opt.step(&mut [&mut w], &[&g]).unwrap();
/// }
/// assert!((w[0] - 0.486).abs() < 1e-12); // 1 -> 0.9 -> 0.72 -> 0.486
/// ```
#[derive(Debug, Clone)]
pub struct Sgd<T> {
    config: SgdConfig,
    layout: Layout,
    momentum_buffers: Vec<Vec<T>>,
}

impl<T: Scalar> Sgd<T> {
    /// Creates the optimizer; errors on negative or non-finite `lr`,
    /// `momentum` or `weight_decay`, non-finite `dampening`, or Nesterov
    /// without momentum (or with dampening).
    ///
    /// ```
    /// use secondo_optim::{Sgd, SgdConfig};
    /// assert!(Sgd::<f32>::new(SgdConfig::default()).is_ok());
    /// assert!(Sgd::<f32>::new(SgdConfig { nesterov: true, ..SgdConfig::default() }).is_err());
    /// ```
    pub fn new(config: SgdConfig) -> Result<Sgd<T>, OptimError> {
        config.validate()?;
        Ok(Sgd {
            config,
            layout: Layout::default(),
            momentum_buffers: Vec::new(),
        })
    }

    /// The hyperparameters in use (with the current learning rate).
    ///
    /// ```
    /// use secondo_optim::{Sgd, SgdConfig};
    /// let opt = Sgd::<f64>::new(SgdConfig { momentum: 0.5, ..SgdConfig::default() }).unwrap();
    /// assert_eq!(opt.config().momentum, 0.5);
    /// ```
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl<T: Scalar> Optimizer<T> for Sgd<T> {
    fn step(&mut self, params: &mut [&mut [T]], grads: &[&[T]]) -> Result<(), OptimError> {
        let first = self.layout.check(params, grads)?;
        let c = self.config;
        let neg_lr = T::of(-c.lr);
        let wd = T::of(c.weight_decay);
        let mu = T::of(c.momentum);
        let keep = T::of(1.0 - c.dampening);
        if first && c.momentum != 0.0 {
            self.momentum_buffers = grads.iter().map(|g| vec![T::zero(); g.len()]).collect();
        }
        for (i, (param, grad)) in params.iter_mut().zip(grads).enumerate() {
            for (j, (p, &g)) in param.iter_mut().zip(grad.iter()).enumerate() {
                let mut d = if c.maximize { -g } else { g };
                if c.weight_decay != 0.0 {
                    d = d + wd * *p;
                }
                if c.momentum != 0.0 {
                    let b = &mut self.momentum_buffers[i][j];
                    *b = if first { d } else { *b * mu + keep * d };
                    d = if c.nesterov { d + mu * *b } else { *b };
                }
                *p = *p + neg_lr * d;
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<(), OptimError> {
        non_negative("lr", lr)?;
        self.config.lr = lr;
        Ok(())
    }

    fn state(&self) -> OptimizerState<T> {
        OptimizerState {
            buffers: vec![(MOMENTUM, self.momentum_buffers.clone())],
            counters: Vec::new(),
        }
    }

    fn restore(&mut self, mut state: OptimizerState<T>) -> Result<(), OptimError> {
        let buffers = state.take_buffers(MOMENTUM)?;
        if self.config.momentum == 0.0 && !buffers.is_empty() {
            return Err(OptimError::InvalidState(
                "momentum buffers for SGD without momentum".into(),
            ));
        }
        self.layout = restored_layout(&[(MOMENTUM, &buffers)])?;
        self.momentum_buffers = buffers;
        Ok(())
    }
}

/// PyTorch's name of SGD's buffers.
const MOMENTUM: &str = "momentum_buffer";

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    /// Runs `steps` steps on f(w) = sum_i a_i w_i^2 / 2 (gradient a_i w_i).
    fn run<T: Scalar>(config: SgdConfig, w0: &[T], a: &[T], steps: usize) -> Vec<Vec<T>> {
        let mut opt = Sgd::new(config).unwrap();
        let mut w = w0.to_vec();
        let mut traj = Vec::new();
        for _ in 0..steps {
            let g: Vec<T> = w.iter().zip(a).map(|(&w, &a)| a * w).collect();
            opt.step(&mut [&mut w], &[&g]).unwrap();
            traj.push(w.clone());
        }
        traj
    }

    /// Hand-derived trajectories of w' = w - lr * update with gradient w
    /// (a = 1), lr = 0.1, w0 = 1.
    #[test]
    fn literal_trajectories() {
        let base = SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        };
        // plain: w *= 0.9
        let t = run::<f64>(base, &[1.0], &[1.0], 3);
        for (w, e) in t.iter().zip([0.9, 0.81, 0.729]) {
            assert!(close(w[0], e, 1e-15), "{w:?} vs {e}");
        }
        // momentum 0.9: b = 1, 1.8, 2.34
        let m = SgdConfig {
            momentum: 0.9,
            ..base
        };
        let t = run::<f64>(m, &[1.0], &[1.0], 3);
        for (w, e) in t.iter().zip([0.9, 0.72, 0.486]) {
            assert!(close(w[0], e, 1e-15), "{w:?} vs {e}");
        }
        // nesterov: b1 = 1, step 1.9 -> 0.81; g = 0.81, b2 = 0.9 + 0.81 = 1.71,
        // step 0.81 + 0.9 * 1.71 = 2.349 -> 0.81 - 0.2349 = 0.5751
        let n = SgdConfig {
            nesterov: true,
            ..m
        };
        let t = run::<f64>(n, &[1.0], &[1.0], 2);
        assert!(close(t[0][0], 0.81, 1e-15));
        assert!(close(t[1][0], 0.5751, 1e-15));
        // dampening 0.5: b1 = g = 1 (no dampening on the first step) -> 0.9;
        // b2 = 0.9 * 1 + 0.5 * 0.9 = 1.35 -> 0.9 - 0.135 = 0.765
        let d = SgdConfig {
            dampening: 0.5,
            ..m
        };
        let t = run::<f64>(d, &[1.0], &[1.0], 2);
        assert!(close(t[0][0], 0.9, 1e-15));
        assert!(close(t[1][0], 0.765, 1e-15));
        // weight decay 0.5 with zero loss gradient (a = 0): w *= 1 - 0.05
        let wd = SgdConfig {
            weight_decay: 0.5,
            ..base
        };
        let t = run::<f64>(wd, &[2.0], &[0.0], 2);
        assert!(close(t[1][0], 2.0 * 0.95 * 0.95, 1e-15));
        // maximize ascends: w *= 1.1
        let up = SgdConfig {
            maximize: true,
            ..base
        };
        let t = run::<f64>(up, &[1.0], &[1.0], 2);
        assert!(close(t[1][0], 1.21, 1e-15));
    }

    /// An independent f64 implementation of the documented algorithm, with
    /// several parameter slices and gradients that are not the parameters.
    #[test]
    fn matches_reference_loop() {
        let configs = [
            SgdConfig {
                lr: 0.05,
                momentum: 0.8,
                dampening: 0.1,
                weight_decay: 0.01,
                ..SgdConfig::default()
            },
            SgdConfig {
                lr: 0.05,
                momentum: 0.8,
                weight_decay: 0.02,
                nesterov: true,
                maximize: true,
                ..SgdConfig::default()
            },
        ];
        for c in configs {
            let mut opt = Sgd::<f64>::new(c).unwrap();
            let mut a = vec![0.5, -1.0, 2.0];
            let mut b = vec![3.0];
            let (mut ra, mut rb) = (a.clone(), b.clone());
            let mut bufs: Vec<Vec<f64>> = vec![vec![0.0; 3], vec![0.0; 1]];
            for t in 0..6 {
                let ga: Vec<f64> = a
                    .iter()
                    .map(|x: &f64| (x * 1.3).sin() + t as f64 * 0.1)
                    .collect();
                let gb = vec![b[0] * b[0] - 1.0];
                opt.step(&mut [&mut a, &mut b], &[&ga, &gb]).unwrap();
                for (k, (ps, gs)) in [(&mut ra, &ga), (&mut rb, &gb)].into_iter().enumerate() {
                    for j in 0..ps.len() {
                        let mut g = if c.maximize { -gs[j] } else { gs[j] };
                        g += c.weight_decay * ps[j];
                        let buf = &mut bufs[k][j];
                        *buf = if t == 0 {
                            g
                        } else {
                            c.momentum * *buf + (1.0 - c.dampening) * g
                        };
                        let step = if c.nesterov {
                            g + c.momentum * *buf
                        } else {
                            *buf
                        };
                        ps[j] -= c.lr * step;
                    }
                }
                for (x, y) in a.iter().chain(&b).zip(ra.iter().chain(&rb)) {
                    assert!(close(*x, *y, 1e-14), "{x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn f32_tracks_f64_and_converges() {
        let c = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..SgdConfig::default()
        };
        let t64 = run::<f64>(c, &[1.0, -2.0], &[1.0, 3.0], 400);
        let t32 = run::<f32>(c, &[1.0, -2.0], &[1.0, 3.0], 400);
        for (x, y) in t32.iter().flatten().zip(t64.iter().flatten()) {
            assert!((f64::from(*x) - y).abs() < 1e-5, "{x} vs {y}");
        }
        assert!(t64[399].iter().all(|w| w.abs() < 1e-6));
    }

    #[test]
    fn invalid_configs_and_learning_rate() {
        let bad = [
            SgdConfig {
                lr: -0.1,
                ..SgdConfig::default()
            },
            SgdConfig {
                lr: f64::NAN,
                ..SgdConfig::default()
            },
            SgdConfig {
                momentum: -0.5,
                ..SgdConfig::default()
            },
            SgdConfig {
                weight_decay: -1.0,
                ..SgdConfig::default()
            },
            SgdConfig {
                dampening: f64::INFINITY,
                ..SgdConfig::default()
            },
            SgdConfig {
                nesterov: true,
                ..SgdConfig::default()
            },
            SgdConfig {
                nesterov: true,
                momentum: 0.9,
                dampening: 0.1,
                ..SgdConfig::default()
            },
        ];
        for c in bad {
            assert!(Sgd::<f64>::new(c).is_err(), "{c:?}");
        }
        let mut opt = Sgd::<f64>::new(SgdConfig::default()).unwrap();
        assert_eq!(opt.learning_rate(), 1e-3);
        opt.set_learning_rate(0.5).unwrap();
        assert_eq!(opt.learning_rate(), 0.5);
        assert_eq!(opt.config().lr, 0.5);
        assert!(opt.set_learning_rate(-1.0).is_err());
        assert_eq!(opt.learning_rate(), 0.5);
    }
}
