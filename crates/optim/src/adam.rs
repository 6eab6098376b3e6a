use crate::error::OptimError;
use crate::layout::{non_negative, Layout};
use crate::scalar::Scalar;
use crate::state::{restored_layout, OptimizerState};
use crate::Optimizer;

/// Hyperparameters of [`Adam`]. [`AdamConfig::default`] is
/// `torch.optim.Adam`'s defaults, [`AdamConfig::adamw`] `torch.optim.AdamW`'s.
///
/// ```
/// use secondo_optim::AdamConfig;
/// let adam = AdamConfig::default();
/// assert_eq!((adam.lr, adam.betas, adam.eps, adam.weight_decay), (1e-3, (0.9, 0.999), 1e-8, 0.0));
/// assert!(!adam.decoupled && !adam.amsgrad && !adam.maximize);
/// let adamw = AdamConfig::adamw();
/// assert!(adamw.decoupled && adamw.weight_decay == 0.01);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate, `>= 0` (default `1e-3`).
    pub lr: f64,
    /// Decay rates `(beta1, beta2)` of the moment averages, each in `[0, 1)`
    /// (default `(0.9, 0.999)`).
    pub betas: (f64, f64),
    /// Added to the denominator, `>= 0` (default `1e-8`).
    pub eps: f64,
    /// Weight decay, `>= 0`: an L2 term `weight_decay * param` added to the
    /// gradient (Adam), or with `decoupled` a shrink `param *= 1 - lr *
    /// weight_decay` (AdamW). Default 0 (Adam), 0.01 (AdamW).
    pub weight_decay: f64,
    /// Decoupled weight decay, i.e. AdamW (default false).
    pub decoupled: bool,
    /// The AMSGrad variant: divide by the running maximum of the second
    /// moment (default false).
    pub amsgrad: bool,
    /// Maximize the objective instead of minimizing it (default false).
    pub maximize: bool,
}

impl Default for AdamConfig {
    fn default() -> AdamConfig {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            amsgrad: false,
            maximize: false,
        }
    }
}

impl AdamConfig {
    /// `torch.optim.AdamW`'s defaults: Adam's, with decoupled weight decay
    /// 0.01.
    ///
    /// ```
    /// use secondo_optim::AdamConfig;
    /// let c = AdamConfig { lr: 3e-4, ..AdamConfig::adamw() };
    /// assert_eq!(c.weight_decay, 0.01);
    /// ```
    pub fn adamw() -> AdamConfig {
        AdamConfig {
            weight_decay: 0.01,
            decoupled: true,
            ..AdamConfig::default()
        }
    }

    fn validate(&self) -> Result<(), OptimError> {
        non_negative("lr", self.lr)?;
        non_negative("eps", self.eps)?;
        non_negative("weight_decay", self.weight_decay)?;
        for (name, beta) in [("beta1", self.betas.0), ("beta2", self.betas.1)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(OptimError::InvalidHyperparameter {
                    name,
                    value: beta,
                    reason: "must be in [0, 1)",
                });
            }
        }
        Ok(())
    }
}

/// Adam, AdamW and AMSGrad, following `torch.optim.Adam` / `torch.optim.AdamW`
/// (single-tensor CPU path) step for step. At step `t` (from 1):
///
/// ```text
/// g = ±grad                                   (- when maximizing)
/// AdamW: p = p * (1 - lr * weight_decay)      Adam: g = g + weight_decay * p
/// m = lerp(m, g, 1 - beta1)                   (= beta1 * m + (1 - beta1) * g)
/// v = beta2 * v + (1 - beta2) * g * g
/// vmax = max(vmax, v); use vmax for v         (AMSGrad only)
/// denom = sqrt(v) / sqrt(1 - beta2^t) + eps
/// p = p - (lr / (1 - beta1^t)) * m / denom
/// ```
///
/// The moment buffers are created at the first step; later steps must pass
/// the same number of slices with the same lengths.
///
/// ```
/// use secondo_optim::{Adam, AdamConfig, Optimizer};
/// let mut opt = Adam::new(AdamConfig { lr: 0.1, ..AdamConfig::default() }).unwrap();
/// let mut w = vec![1.0f64];
/// opt.step(&mut [&mut w], &[&[2.0]]).unwrap();
/// // first step: m_hat = g, v_hat = g^2, so w -= 0.1 * 2 / (2 + 1e-8)
/// assert!((w[0] - 0.900_000_000_5).abs() < 1e-15);
/// ```
#[derive(Debug, Clone)]
pub struct Adam<T> {
    config: AdamConfig,
    layout: Layout,
    steps: u64,
    exp_avg: Vec<Vec<T>>,
    exp_avg_sq: Vec<Vec<T>>,
    max_exp_avg_sq: Vec<Vec<T>>,
}

impl<T: Scalar> Adam<T> {
    /// Creates the optimizer; errors on negative or non-finite `lr`, `eps` or
    /// `weight_decay`, or betas outside `[0, 1)`.
    ///
    /// ```
    /// use secondo_optim::{Adam, AdamConfig};
    /// assert!(Adam::<f32>::new(AdamConfig::adamw()).is_ok());
    /// assert!(Adam::<f32>::new(AdamConfig { betas: (0.9, 1.0), ..AdamConfig::default() }).is_err());
    /// ```
    pub fn new(config: AdamConfig) -> Result<Adam<T>, OptimError> {
        config.validate()?;
        Ok(Adam {
            config,
            layout: Layout::default(),
            steps: 0,
            exp_avg: Vec::new(),
            exp_avg_sq: Vec::new(),
            max_exp_avg_sq: Vec::new(),
        })
    }

    /// The hyperparameters in use (with the current learning rate).
    ///
    /// ```
    /// use secondo_optim::{Adam, AdamConfig};
    /// let opt = Adam::<f64>::new(AdamConfig::adamw()).unwrap();
    /// assert!(opt.config().decoupled);
    /// ```
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Number of steps taken so far (the `t` of the bias corrections).
    ///
    /// ```
    /// use secondo_optim::{Adam, AdamConfig, Optimizer};
    /// let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    /// let mut w = vec![0.0f32; 2];
    /// opt.step(&mut [&mut w], &[&[1.0, 1.0]]).unwrap();
    /// assert_eq!(opt.steps(), 1);
    /// ```
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// `torch.lerp(start, end, weight)` as ATen computes it.
fn lerp<T: Scalar>(start: T, end: T, weight: T) -> T {
    if weight.abs() < T::of(0.5) {
        start + weight * (end - start)
    } else {
        end - (end - start) * (T::one() - weight)
    }
}

impl<T: Scalar> Optimizer<T> for Adam<T> {
    fn step(&mut self, params: &mut [&mut [T]], grads: &[&[T]]) -> Result<(), OptimError> {
        if self.layout.check(params, grads)? {
            let zeros = || grads.iter().map(|g| vec![T::zero(); g.len()]).collect();
            self.exp_avg = zeros();
            self.exp_avg_sq = zeros();
            if self.config.amsgrad {
                self.max_exp_avg_sq = zeros();
            }
        }
        self.steps += 1;
        let c = self.config;
        let (beta1, beta2) = c.betas;
        // Python-float arithmetic in PyTorch: done in f64, then cast.
        let t = self.steps as f64;
        let bias_correction1 = 1.0 - beta1.powf(t);
        let bias_correction2_sqrt = (1.0 - beta2.powf(t)).sqrt();
        let neg_step_size = T::of(-(c.lr / bias_correction1));
        let bc2_sqrt = T::of(bias_correction2_sqrt);
        let shrink = T::of(1.0 - c.lr * c.weight_decay);
        let wd = T::of(c.weight_decay);
        let one_minus_beta1 = T::of(1.0 - beta1);
        let beta2_t = T::of(beta2);
        let one_minus_beta2 = T::of(1.0 - beta2);
        let eps = T::of(c.eps);
        for (i, (param, grad)) in params.iter_mut().zip(grads).enumerate() {
            let m = &mut self.exp_avg[i];
            let v = &mut self.exp_avg_sq[i];
            for (j, (p, &g)) in param.iter_mut().zip(grad.iter()).enumerate() {
                let mut g = if c.maximize { -g } else { g };
                if c.weight_decay != 0.0 {
                    if c.decoupled {
                        *p = *p * shrink;
                    } else {
                        g = g + wd * *p;
                    }
                }
                m[j] = lerp(m[j], g, one_minus_beta1);
                v[j] = v[j] * beta2_t + one_minus_beta2 * g * g;
                let second = if c.amsgrad {
                    let vmax = &mut self.max_exp_avg_sq[i][j];
                    *vmax = vmax.max(v[j]);
                    *vmax
                } else {
                    v[j]
                };
                let denom = second.sqrt() / bc2_sqrt + eps;
                *p = *p + neg_step_size * m[j] / denom;
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
            buffers: vec![
                (EXP_AVG, self.exp_avg.clone()),
                (EXP_AVG_SQ, self.exp_avg_sq.clone()),
                (MAX_EXP_AVG_SQ, self.max_exp_avg_sq.clone()),
            ],
            counters: vec![(STEP, self.steps)],
        }
    }

    fn restore(&mut self, mut state: OptimizerState<T>) -> Result<(), OptimError> {
        let steps = state.counter(STEP)?;
        let m = state.take_buffers(EXP_AVG)?;
        let v = state.take_buffers(EXP_AVG_SQ)?;
        let vmax = state.take_buffers(MAX_EXP_AVG_SQ)?;
        // Moments exist exactly from the first step on; the maximum only for AMSGrad.
        let started = steps > 0;
        if m.is_empty() == started
            || v.is_empty() == started
            || vmax.is_empty() == (started && self.config.amsgrad)
        {
            return Err(OptimError::InvalidState(format!(
                "Adam's moments do not fit {steps} steps{}",
                if self.config.amsgrad {
                    " of AMSGrad"
                } else {
                    ""
                }
            )));
        }
        let groups = [
            (EXP_AVG, &m[..]),
            (EXP_AVG_SQ, &v[..]),
            (MAX_EXP_AVG_SQ, &vmax[..]),
        ];
        self.layout = restored_layout(&groups)?;
        (
            self.steps,
            self.exp_avg,
            self.exp_avg_sq,
            self.max_exp_avg_sq,
        ) = (steps, m, v, vmax);
        Ok(())
    }
}

/// PyTorch's names of Adam's state.
const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const MAX_EXP_AVG_SQ: &str = "max_exp_avg_sq";
const STEP: &str = "step";

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    /// Textbook Adam from the `torch.optim.Adam` documentation, in f64 with
    /// plain loops, over several parameter slices.
    struct Reference {
        c: AdamConfig,
        t: i32,
        m: Vec<Vec<f64>>,
        v: Vec<Vec<f64>>,
        vmax: Vec<Vec<f64>>,
    }

    impl Reference {
        fn new(c: AdamConfig, lens: &[usize]) -> Self {
            let z: Vec<Vec<f64>> = lens.iter().map(|&n| vec![0.0; n]).collect();
            Reference {
                c,
                t: 0,
                m: z.clone(),
                v: z.clone(),
                vmax: z,
            }
        }

        fn step(&mut self, params: &mut [Vec<f64>], grads: &[Vec<f64>]) {
            self.t += 1;
            let (b1, b2) = self.c.betas;
            for k in 0..params.len() {
                for j in 0..params[k].len() {
                    let mut g = grads[k][j];
                    if self.c.maximize {
                        g = -g;
                    }
                    let mut theta = params[k][j];
                    if self.c.decoupled {
                        theta -= self.c.lr * self.c.weight_decay * theta;
                    } else {
                        g += self.c.weight_decay * theta;
                    }
                    self.m[k][j] = b1 * self.m[k][j] + (1.0 - b1) * g;
                    self.v[k][j] = b2 * self.v[k][j] + (1.0 - b2) * g * g;
                    let m_hat = self.m[k][j] / (1.0 - b1.powi(self.t));
                    let v_hat = if self.c.amsgrad {
                        self.vmax[k][j] = self.vmax[k][j].max(self.v[k][j]);
                        self.vmax[k][j] / (1.0 - b2.powi(self.t))
                    } else {
                        self.v[k][j] / (1.0 - b2.powi(self.t))
                    };
                    params[k][j] = theta - self.c.lr * m_hat / (v_hat.sqrt() + self.c.eps);
                }
            }
        }
    }

    fn grads_at(params: &[Vec<f64>], t: usize) -> Vec<Vec<f64>> {
        params
            .iter()
            .enumerate()
            .map(|(k, p)| {
                p.iter()
                    .enumerate()
                    .map(|(j, &x)| {
                        (x * (k + 1) as f64).cos() * 2.0 - 0.3 * j as f64 + 1.0 / (t + 1) as f64
                    })
                    .collect()
            })
            .collect()
    }

    fn configs() -> Vec<AdamConfig> {
        let base = AdamConfig {
            lr: 0.05,
            betas: (0.8, 0.95),
            eps: 1e-6,
            ..AdamConfig::default()
        };
        vec![
            AdamConfig::default(),
            base,
            AdamConfig {
                weight_decay: 0.1,
                ..base
            },
            AdamConfig {
                weight_decay: 0.1,
                decoupled: true,
                ..base
            },
            AdamConfig {
                amsgrad: true,
                maximize: true,
                ..base
            },
            AdamConfig {
                amsgrad: true,
                weight_decay: 0.2,
                decoupled: true,
                ..AdamConfig::adamw()
            },
        ]
    }

    #[test]
    fn matches_reference_loop() {
        for c in configs() {
            let mut opt = Adam::<f64>::new(c).unwrap();
            let mut p = vec![vec![0.5, -1.0, 2.0], vec![3.0], vec![-0.25, 0.75]];
            let mut r = p.clone();
            let mut reference = Reference::new(c, &[3, 1, 2]);
            for t in 0..8 {
                let g = grads_at(&p, t);
                let gs: Vec<&[f64]> = g.iter().map(Vec::as_slice).collect();
                let mut ps: Vec<&mut [f64]> = p.iter_mut().map(Vec::as_mut_slice).collect();
                opt.step(&mut ps, &gs).unwrap();
                reference.step(&mut r, &g);
                for (x, y) in p.iter().flatten().zip(r.iter().flatten()) {
                    assert!(close(*x, *y, 1e-13), "{c:?} step {t}: {x} vs {y}");
                }
            }
            assert_eq!(opt.steps(), 8);
        }
    }

    /// Numbers derived by hand.
    #[test]
    fn literal_values() {
        // Constant gradient: m_hat = g and v_hat = g^2 at every step, so each
        // step moves lr * g / (|g| + eps).
        let mut opt = Adam::<f64>::new(AdamConfig {
            lr: 0.1,
            ..AdamConfig::default()
        })
        .unwrap();
        let mut w = vec![1.0, 1.0];
        for _ in 0..3 {
            opt.step(&mut [&mut w], &[&[2.0, -0.5]]).unwrap();
        }
        assert!(close(w[0], 1.0 - 0.3 * 2.0 / (2.0 + 1e-8), 1e-14), "{w:?}");
        assert!(close(w[1], 1.0 + 0.3 * 0.5 / (0.5 + 1e-8), 1e-14), "{w:?}");

        // AdamW with zero gradient: only the decay acts, w *= 1 - lr * wd.
        let mut opt = Adam::<f64>::new(AdamConfig {
            lr: 0.1,
            ..AdamConfig::adamw()
        })
        .unwrap();
        let mut w = vec![1.0];
        opt.step(&mut [&mut w], &[&[0.0]]).unwrap();
        assert_eq!(w[0], 0.999);
        opt.step(&mut [&mut w], &[&[0.0]]).unwrap();
        assert!(close(w[0], 0.999 * 0.999, 1e-15));

        // Adam's L2 with zero gradient: g = 0.5 * 2 = 1 at step 1, so
        // w = 2 - 0.1 * 1 / (1 + 1e-8).
        let mut opt = Adam::<f64>::new(AdamConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..AdamConfig::default()
        })
        .unwrap();
        let mut w = vec![2.0];
        opt.step(&mut [&mut w], &[&[0.0]]).unwrap();
        assert!(close(w[0], 2.0 - 0.1 / (1.0 + 1e-8), 1e-15));

        // AMSGrad with g = 1 then g = 0, betas (0.5, 0.5), eps 0, lr 1:
        // step 1: m = 0.5, v = 0.5 -> w = 0 - 1 * (0.5/0.5) / sqrt(0.5/0.5) = -1.
        // step 2: m = 0.25, v = 0.25, vmax = 0.5; m_hat = 0.25/0.75 = 1/3,
        //   v_hat = 0.5/0.75 = 2/3 -> w = -1 - (1/3)/sqrt(2/3) = -1 - 0.408248...
        // (plain Adam would use v_hat = 1/3: w = -1 - (1/3)/sqrt(1/3) = -1.57735...)
        for (amsgrad, expected) in [
            (true, -1.408_248_290_463_863),
            (false, -1.577_350_269_189_626),
        ] {
            let mut opt = Adam::<f64>::new(AdamConfig {
                lr: 1.0,
                betas: (0.5, 0.5),
                eps: 0.0,
                amsgrad,
                ..AdamConfig::default()
            })
            .unwrap();
            let mut w = vec![0.0];
            opt.step(&mut [&mut w], &[&[1.0]]).unwrap();
            assert!(close(w[0], -1.0, 1e-15), "{w:?}");
            opt.step(&mut [&mut w], &[&[0.0]]).unwrap();
            assert!(close(w[0], expected, 1e-14), "amsgrad {amsgrad}: {w:?}");
        }
    }

    #[test]
    fn lerp_matches_aten_both_branches() {
        assert_eq!(lerp(1.0f64, 3.0, 0.25), 1.5);
        assert_eq!(lerp(1.0f64, 3.0, 0.75), 2.5);
        assert_eq!(lerp(2.0f32, -2.0, 1.0), -2.0);
    }

    #[test]
    fn f32_and_f64_minimize_a_quadratic() {
        // f(w) = sum a_i (w_i - c_i)^2 / 2
        let a = [1.0, 10.0, 0.1];
        let target = [1.0, -2.0, 0.5];
        for config in [
            AdamConfig {
                lr: 0.05,
                ..AdamConfig::default()
            },
            AdamConfig {
                lr: 0.05,
                weight_decay: 0.0,
                amsgrad: true,
                ..AdamConfig::adamw()
            },
        ] {
            let mut o64 = Adam::<f64>::new(config).unwrap();
            let mut o32 = Adam::<f32>::new(config).unwrap();
            let mut w64 = vec![0.0f64; 3];
            let mut w32 = vec![0.0f32; 3];
            for step in 0..3000 {
                let g64: Vec<f64> = (0..3).map(|i| a[i] * (w64[i] - target[i])).collect();
                let g32: Vec<f32> = (0..3)
                    .map(|i| (a[i] * (f64::from(w32[i]) - target[i])) as f32)
                    .collect();
                o64.step(&mut [&mut w64], &[&g64]).unwrap();
                o32.step(&mut [&mut w32], &[&g32]).unwrap();
                if step < 20 {
                    for (x, y) in w32.iter().zip(&w64) {
                        assert!((f64::from(*x) - y).abs() < 1e-5, "{x} vs {y}");
                    }
                }
            }
            for i in 0..3 {
                assert!((w64[i] - target[i]).abs() < 1e-3, "{config:?}: {w64:?}");
                assert!(
                    (f64::from(w32[i]) - target[i]).abs() < 1e-3,
                    "{config:?}: {w32:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_configs() {
        let bad = [
            AdamConfig {
                lr: -1e-3,
                ..AdamConfig::default()
            },
            AdamConfig {
                eps: -1.0,
                ..AdamConfig::default()
            },
            AdamConfig {
                weight_decay: f64::NAN,
                ..AdamConfig::default()
            },
            AdamConfig {
                betas: (1.0, 0.999),
                ..AdamConfig::default()
            },
            AdamConfig {
                betas: (0.9, -0.1),
                ..AdamConfig::default()
            },
            AdamConfig {
                betas: (f64::NAN, 0.9),
                ..AdamConfig::default()
            },
        ];
        for c in bad {
            assert!(Adam::<f64>::new(c).is_err(), "{c:?}");
        }
        let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
        assert!(opt.set_learning_rate(f64::INFINITY).is_err());
        opt.set_learning_rate(0.0).unwrap();
        assert_eq!(opt.learning_rate(), 0.0);
        assert_eq!(opt.config().lr, 0.0);
    }

    #[test]
    fn layout_errors_leave_state_untouched() {
        let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
        let mut a = vec![1.0, 2.0];
        let mut b = vec![3.0];
        assert_eq!(
            opt.step(&mut [&mut a], &[&[1.0, 1.0], &[1.0]]),
            Err(OptimError::CountMismatch {
                params: 1,
                grads: 2
            })
        );
        assert_eq!(
            opt.step(&mut [&mut a, &mut b], &[&[1.0, 1.0], &[1.0, 2.0]]),
            Err(OptimError::LengthMismatch {
                index: 1,
                param: 1,
                grad: 2
            })
        );
        assert_eq!(opt.steps(), 0);
        opt.step(&mut [&mut a, &mut b], &[&[1.0, 1.0], &[1.0]])
            .unwrap();
        let snapshot = (a.clone(), b.clone());
        assert_eq!(
            opt.step(&mut [&mut a], &[&[1.0, 1.0]]),
            Err(OptimError::ParamCountChanged {
                expected: 2,
                got: 1
            })
        );
        let mut c = vec![0.0; 3];
        assert_eq!(
            opt.step(&mut [&mut a, &mut c], &[&[1.0, 1.0], &[1.0; 3]]),
            Err(OptimError::ParamLengthChanged {
                index: 1,
                expected: 1,
                got: 3
            })
        );
        assert_eq!((a.clone(), b.clone()), snapshot);
        assert_eq!(opt.steps(), 1);
        let err = OptimError::ParamLengthChanged {
            index: 1,
            expected: 1,
            got: 3,
        };
        assert_eq!(
            err.to_string(),
            "parameter 1 had 1 values at the first step but now has 3"
        );
    }

    #[test]
    fn a_restored_state_continues_step_for_step_and_bad_states_are_refused() {
        let config = AdamConfig {
            amsgrad: true,
            ..AdamConfig::adamw()
        };
        let grads = |w: &[f32]| w.iter().map(|x| 2.0 * x - 1.0).collect::<Vec<f32>>();
        let mut straight = Adam::<f32>::new(config).unwrap();
        let mut w = vec![0.3f32, -0.7];
        for _ in 0..3 {
            let g = grads(&w);
            straight.step(&mut [&mut w], &[&g]).unwrap();
        }
        let mut resumed = Adam::<f32>::new(config).unwrap();
        resumed.restore(straight.state()).unwrap();
        let mut v = w.clone();
        for _ in 0..3 {
            let (g, h) = (grads(&w), grads(&v));
            straight.step(&mut [&mut w], &[&g]).unwrap();
            resumed.step(&mut [&mut v], &[&h]).unwrap();
        }
        assert_eq!(w, v);
        assert_eq!(resumed.steps(), 6);
        let mut no_max = straight.state();
        no_max.buffers[2].1.clear();
        let err = resumed.restore(no_max).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid optimizer state: Adam's moments do not fit 6 steps of AMSGrad"
        );
        let mut ragged = straight.state();
        ragged.buffers[1].1[0].pop();
        assert!(resumed.restore(ragged).is_err());
        assert_eq!(resumed.steps(), 6, "a refused state changes nothing");
    }
}
