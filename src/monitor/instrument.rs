//! The instruments' names, Cockpit's configurations and the schedule that
//! says which instruments are due at a step.

use std::fmt;
use std::str::FromStr;

use super::Reading;
use crate::Error;

/// One instrument: a value computed during training at the steps its
/// interval selects. The names are stable (`--monitor LIST`, the keys of
/// `instruments.jsonl`).
///
/// ```
/// use secondo::monitor::Instrument;
/// assert_eq!("alpha".parse::<Instrument>().unwrap(), Instrument::Alpha);
/// assert_eq!(Instrument::GradHist1d.name(), "grad_hist_1d");
/// assert!("alpah".parse::<Instrument>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instrument {
    /// The mini-batch loss.
    Loss,
    /// ‖g‖ per parameter.
    GradNorm,
    /// ‖θ_t − θ_0‖ per parameter.
    Distance,
    /// ‖θ_{t+1} − θ_t‖ per parameter.
    UpdateSize,
    /// The normalized step length on a noisy 1-D quadratic fit.
    Alpha,
    /// Byrd et al.'s norm test.
    NormTest,
    /// Bollapragada et al.'s inner-product test.
    InnerTest,
    /// Bollapragada et al.'s orthogonality test.
    OrthoTest,
    /// The mean gradient signal-to-noise ratio.
    MeanGsnr,
    /// The CABS batch size (SGD).
    Cabs,
    /// The evidence-based early-stopping criterion (SGD).
    EarlyStopping,
    /// Histogram of per-sample gradient elements.
    GradHist1d,
    /// Histogram of per-sample gradient elements against parameter values.
    GradHist2d,
    /// The largest eigenvalue of the mini-batch Hessian.
    HessMaxEv,
    /// The trace of the mini-batch Hessian per parameter.
    HessTrace,
    /// Takeuchi's information criterion from the Hessian diagonal.
    TicDiag,
    /// Takeuchi's information criterion from the Hessian trace.
    TicTrace,
    /// Top Hessian eigenvalues and their outliers (structure).
    HessTopEv,
    /// Top GGN eigenvalues and their outliers (structure).
    GgnTopEv,
    /// The class-mean part of the GGN's top space (structure).
    GgnClassMeans,
    /// The gradient's fraction in the top Hessian eigenspace (structure).
    GradTopSpace,
    /// Rotation of the top Hessian eigenspace since the last measurement (structure).
    TopSpaceRotation,
    /// How alike the empirical Fisher and the GGN are (structure).
    EfGgn,
    /// The Hessian's spectral density by SLQ (structure).
    HessDensity,
}

use Instrument as I;

/// Every instrument with its name, in the order of INTERFACES.md.
const NAMES: &[(&str, Instrument)] = &[
    ("loss", I::Loss),
    ("grad_norm", I::GradNorm),
    ("distance", I::Distance),
    ("update_size", I::UpdateSize),
    ("alpha", I::Alpha),
    ("norm_test", I::NormTest),
    ("inner_test", I::InnerTest),
    ("ortho_test", I::OrthoTest),
    ("mean_gsnr", I::MeanGsnr),
    ("cabs", I::Cabs),
    ("early_stopping", I::EarlyStopping),
    ("grad_hist_1d", I::GradHist1d),
    ("grad_hist_2d", I::GradHist2d),
    ("hess_max_ev", I::HessMaxEv),
    ("hess_trace", I::HessTrace),
    ("tic_diag", I::TicDiag),
    ("tic_trace", I::TicTrace),
    ("hess_top_ev", I::HessTopEv),
    ("ggn_top_ev", I::GgnTopEv),
    ("ggn_class_means", I::GgnClassMeans),
    ("grad_top_space", I::GradTopSpace),
    ("top_space_rotation", I::TopSpaceRotation),
    ("ef_ggn", I::EfGgn),
    ("hess_density", I::HessDensity),
];

/// Cockpit's "economy" configuration (cockpit/utils/configuration.py).
pub const ECONOMY: &[Instrument] = &[
    I::Alpha,
    I::Distance,
    I::GradHist1d,
    I::GradNorm,
    I::InnerTest,
    I::Loss,
    I::NormTest,
    I::OrthoTest,
    I::UpdateSize,
];
/// "business": economy with the Hessian trace and TIC (diagonal).
pub const BUSINESS_EXTRA: &[Instrument] = &[I::TicDiag, I::HessTrace];
/// "full": business with the largest Hessian eigenvalue and the 2-D histogram.
pub const FULL_EXTRA: &[Instrument] = &[I::HessMaxEv, I::GradHist2d];
/// The curvature-structure measurements (beyond Cockpit).
pub const STRUCTURE: &[Instrument] = &[
    I::HessTopEv,
    I::GgnTopEv,
    I::GgnClassMeans,
    I::GradTopSpace,
    I::TopSpaceRotation,
    I::EfGgn,
    I::HessDensity,
];

impl Instrument {
    /// The stable name.
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|p| p.1 == self).map_or("?", |p| p.0)
    }

    /// Every instrument, in the order of INTERFACES.md.
    pub fn all() -> Vec<Instrument> {
        NAMES.iter().map(|p| p.1).collect()
    }

    /// Whether this is a curvature-structure measurement (measured on the
    /// fixed probe samples at checkpoints rather than on the mini-batch).
    pub fn is_structure(self) -> bool {
        STRUCTURE.contains(&self)
    }

    /// Whether the instrument needs per-sample gradients of the training step.
    pub fn is_per_sample(self) -> bool {
        !matches!(
            self,
            I::Loss | I::GradNorm | I::Distance | I::UpdateSize | I::HessMaxEv | I::HessTrace
        ) && !self.is_structure()
    }

    /// How the instrument's value at a step reads as one number: the
    /// per-parameter norms as the norm over all parameters, the
    /// per-parameter traces as the trace; `None` for the histograms and
    /// the structure measurements (objects, at checkpoints).
    ///
    /// ```
    /// use secondo::monitor::{Instrument, Reading};
    /// assert_eq!(Instrument::GradNorm.reading(), Some(Reading::Norm));
    /// assert_eq!(Instrument::Alpha.reading(), Some(Reading::Number));
    /// assert_eq!(Instrument::GradHist1d.reading(), None);
    /// ```
    pub fn reading(self) -> Option<Reading> {
        match self {
            I::GradNorm | I::Distance | I::UpdateSize => Some(Reading::Norm),
            I::HessTrace => Some(Reading::Sum),
            I::Loss
            | I::Alpha
            | I::NormTest
            | I::InnerTest
            | I::OrthoTest
            | I::MeanGsnr
            | I::Cabs
            | I::EarlyStopping
            | I::HessMaxEv
            | I::TicDiag
            | I::TicTrace => Some(Reading::Number),
            I::GradHist1d
            | I::GradHist2d
            | I::HessTopEv
            | I::GgnTopEv
            | I::GgnClassMeans
            | I::GradTopSpace
            | I::TopSpaceRotation
            | I::EfGgn
            | I::HessDensity => None,
        }
    }

    /// Whether the instrument is defined only for plain SGD (Cockpit raises
    /// for any other optimizer: its formula takes the step as `−lr·g`).
    pub fn needs_plain_sgd(self) -> bool {
        matches!(self, I::Cabs | I::EarlyStopping)
    }
}

impl FromStr for Instrument {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|p| p.1)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "--monitor: unknown instrument '{s}' (known: off, economy, business, full, \
                 structure, {})",
                    NAMES.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
                ))
            })
    }
}

impl fmt::Display for Instrument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When an instrument is computed: every `every` steps from step 0 (Cockpit's
/// linear schedule); structure measurements also at the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Every `n` steps.
    Every(usize),
    /// The schedule's default for the instrument: `--track-every` for
    /// Cockpit's instruments, a few checkpoints for structure measurements.
    Default,
}

/// Which instruments run, at which intervals.
///
/// ```
/// use secondo::monitor::{Instrument, MonitorConfig};
/// let c = MonitorConfig::parse("economy,hess_max_ev@10", 1).unwrap();
/// assert!(c.contains(Instrument::Alpha) && c.contains(Instrument::HessMaxEv));
/// assert!(!c.contains(Instrument::GradHist2d));
/// let s = c.schedule(100);
/// assert!(s.due(Instrument::HessMaxEv, 20) && !s.due(Instrument::HessMaxEv, 21));
/// assert!(MonitorConfig::parse("economy", 0).is_err());
/// assert!(MonitorConfig::parse("off", 1).unwrap().is_off());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// The instruments on, each with its interval, in name order.
    pub instruments: Vec<(Instrument, Interval)>,
    /// `--track-every`: the default interval of Cockpit's instruments.
    pub track_every: usize,
}

impl MonitorConfig {
    /// Parses `--monitor`: `off`, a configuration (`economy`, `business`,
    /// `full`), `structure` (every structure measurement) or a comma-separated
    /// list of these and instrument names, each optionally with `@N` for its
    /// own interval.
    pub fn parse(list: &str, track_every: usize) -> Result<MonitorConfig, Error> {
        if track_every == 0 {
            return Err(Error::Invalid(
                "--track-every 0: the interval must be at least 1 step".into(),
            ));
        }
        let mut instruments: Vec<(Instrument, Interval)> = Vec::new();
        for item in list.split(',').map(str::trim) {
            if item == "off" {
                continue;
            }
            let (name, interval) = match item.split_once('@') {
                Some((name, n)) => (name, Interval::Every(parse_interval(item, n)?)),
                None => (item, Interval::Default),
            };
            for i in expand(name)? {
                instruments.retain(|(j, _)| *j != i);
                instruments.push((i, interval));
            }
        }
        instruments.sort_by_key(|e| e.0);
        Ok(MonitorConfig {
            instruments,
            track_every,
        })
    }

    /// Turns off the instruments the network cannot take (the per-sample
    /// ones when batch norm or dropout couple or mask the samples in
    /// training, the class means without a classification loss), for
    /// defaults that suit every network.
    ///
    /// ```
    /// use secondo::monitor::MonitorConfig;
    /// use secondo::{Objective, ObjectiveConfig};
    /// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(4,3),dropout(0.5),linear(3,2)".into(), input_shape: vec![4], ..Default::default() }).unwrap();
    /// let mut c = MonitorConfig::parse("economy", 1).unwrap();
    /// c.keep_available(&obj);
    /// assert_eq!(c.names(), ["loss", "grad_norm", "distance", "update_size"]);
    /// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(4,3),tanh,linear(3,1)".into(), input_shape: vec![4], loss: "mse".into(), ..Default::default() }).unwrap();
    /// let mut c = MonitorConfig::parse("structure", 1).unwrap();
    /// c.keep_available(&obj);
    /// assert!(!c.names().contains(&"ggn_class_means") && c.names().contains(&"ggn_top_ev"));
    /// ```
    pub fn keep_available(&mut self, objective: &secondo_curvature::Objective) {
        if samples_coupled(objective) {
            self.instruments.retain(|(i, _)| !i.is_per_sample());
        }
        if objective.loss.kind != secondo_nn::LossKind::CrossEntropy {
            self.instruments
                .retain(|(i, _)| *i != Instrument::GgnClassMeans);
        }
    }

    /// Turns `i` on at its default interval unless it is on already (at
    /// its own): what a `--switch-when` threshold on `i` needs.
    ///
    /// ```
    /// use secondo::monitor::{Instrument, MonitorConfig};
    /// let mut c = MonitorConfig::parse("off", 1).unwrap();
    /// c.track(Instrument::GradNorm);
    /// assert_eq!(c.names(), ["grad_norm"]);
    /// let mut c = MonitorConfig::parse("loss,grad_norm@5", 1).unwrap();
    /// c.track(Instrument::GradNorm);
    /// assert!(c.schedule(20).due(Instrument::GradNorm, 5) && !c.schedule(20).due(Instrument::GradNorm, 1));
    /// ```
    pub fn track(&mut self, i: Instrument) {
        if !self.contains(i) {
            self.instruments.push((i, Interval::Default));
            self.instruments.sort_by_key(|e| e.0);
        }
    }

    /// Whether no instrument is on.
    pub fn is_off(&self) -> bool {
        self.instruments.is_empty()
    }

    /// Whether `i` is on.
    pub fn contains(&self, i: Instrument) -> bool {
        self.instruments.iter().any(|(j, _)| *j == i)
    }

    /// The names of the instruments on.
    pub fn names(&self) -> Vec<&'static str> {
        self.instruments.iter().map(|(i, _)| i.name()).collect()
    }

    /// The schedule for a run of `total_steps` steps.
    pub fn schedule(&self, total_steps: usize) -> Schedule {
        // Structure measurements by default at four checkpoints: the start,
        // a third and two thirds of the way, and the end.
        let checkpoints = total_steps.div_ceil(3).max(1);
        let entries = self
            .instruments
            .iter()
            .map(|&(i, interval)| {
                let every = match interval {
                    Interval::Every(n) => n,
                    Interval::Default if i.is_structure() => checkpoints,
                    Interval::Default => self.track_every,
                };
                (i, every)
            })
            .collect();
        Schedule {
            entries,
            last_step: total_steps.saturating_sub(1),
        }
    }
}

/// Whether training couples (batch norm) or masks (dropout) the samples,
/// so that per-sample gradients of the training step are not defined.
pub(super) fn samples_coupled(objective: &secondo_curvature::Objective) -> bool {
    objective.has_batchnorm() || objective.network.spec().has_dropout()
}

fn parse_interval(item: &str, n: &str) -> Result<usize, Error> {
    match n.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(Error::Invalid(format!(
            "--monitor {item}: the interval after '@' must be a whole number of steps of at least 1"
        ))),
    }
}

/// The instruments a name stands for.
fn expand(name: &str) -> Result<Vec<Instrument>, Error> {
    let economy = ECONOMY.to_vec();
    let business = [ECONOMY, BUSINESS_EXTRA].concat();
    Ok(match name {
        "economy" => economy,
        "business" => business,
        "full" => [business.as_slice(), FULL_EXTRA].concat(),
        "structure" => STRUCTURE.to_vec(),
        other => vec![other.parse()?],
    })
}

/// The steps each instrument is due at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    entries: Vec<(Instrument, usize)>,
    last_step: usize,
}

impl Schedule {
    /// Whether `i` is computed at `step` (from 0).
    pub fn due(&self, i: Instrument, step: usize) -> bool {
        self.entries.iter().any(|&(j, every)| {
            j == i && (step.is_multiple_of(every) || (i.is_structure() && step == self.last_step))
        })
    }

    /// Every instrument on the schedule.
    pub fn instruments(&self) -> impl Iterator<Item = Instrument> + '_ {
        self.entries.iter().map(|e| e.0)
    }

    /// The instruments due at `step`.
    pub fn due_at(&self, step: usize) -> Vec<Instrument> {
        self.entries
            .iter()
            .map(|e| e.0)
            .filter(|&i| self.due(i, step))
            .collect()
    }
}
