//! Fitting an [`Objective`] to a dataset with a first-order optimizer or a
//! second-order one ([`crate::second_order`]).

use std::collections::HashMap;

use secondo_data::{Dataset, Targets};
use secondo_nn::ParamStore;
use secondo_optim::{Adam, AdamConfig, Optimizer, OptimizerState, Sgd, SgdConfig};
use secondo_tensor::memory::{bytes_of, ensure_fits};
use secondo_tensor::{DType, Tensor};

use crate::monitor::{Monitor, Record, Threshold};
use crate::second_order::{
    Method, ParamGroup, SecondOrderConfig, SecondOrderOptimizer, TrainingPass,
};
use crate::state::{Scope, State};
use crate::{Error, GradientProgram, Objective};

/// Which optimizer, with its hyperparameters (PyTorch's meanings and defaults).
///
/// ```
/// use secondo::train::OptimizerChoice;
/// let o = OptimizerChoice::parse("adam", 1e-3, 0.0, false, 0.0).unwrap();
/// assert!(matches!(o, OptimizerChoice::Adam(_)));
/// assert!(OptimizerChoice::parse("lbfgs", 1e-3, 0.0, false, 0.0).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerChoice {
    /// Stochastic gradient descent (momentum, Nesterov, weight decay).
    Sgd(SgdConfig),
    /// Adam, or AdamW when decoupled.
    Adam(AdamConfig),
    /// A second-order method: newton-cg, kfac, ekfac, ngd, ef, fractional-ngd, det-avg.
    SecondOrder(SecondOrderConfig),
}

impl OptimizerChoice {
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerChoice::Sgd(c) => c.lr,
            OptimizerChoice::Adam(c) => c.lr,
            OptimizerChoice::SecondOrder(c) => c.lr,
        }
    }

    /// The learning rate `name` runs with when none is given: 0.1 for SGD,
    /// 10⁻³ for Adam, each second-order method's own.
    ///
    /// ```
    /// use secondo::train::OptimizerChoice;
    /// assert_eq!(OptimizerChoice::default_lr("sgd"), 0.1);
    /// assert_eq!(OptimizerChoice::default_lr("newton-cg"), 1.0);
    /// ```
    pub fn default_lr(name: &str) -> f64 {
        match (name, Method::parse(name)) {
            ("sgd", _) => 0.1,
            (_, Some(m)) => SecondOrderConfig::new(m).lr,
            _ => 1e-3,
        }
    }

    /// Whether this is SGD whose step is `−lr·g` (no momentum, weight decay
    /// or maximization), what Cockpit's CABS and early-stopping assume.
    ///
    /// ```
    /// use secondo::train::OptimizerChoice;
    /// assert!(OptimizerChoice::parse("sgd", 0.1, 0.0, false, 0.0).unwrap().is_plain_sgd());
    /// assert!(!OptimizerChoice::parse("sgd", 0.1, 0.9, false, 0.0).unwrap().is_plain_sgd());
    /// ```
    pub fn is_plain_sgd(&self) -> bool {
        matches!(self, OptimizerChoice::Sgd(c)
            if c.momentum == 0.0 && c.weight_decay == 0.0 && !c.maximize)
    }

    /// Builds a choice from a name (`sgd`, `adam`, `adamw`, or a second-order
    /// method with its defaults, see [`Method`]) and common hyperparameters.
    pub fn parse(
        name: &str,
        lr: f64,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    ) -> Result<OptimizerChoice, Error> {
        match name {
            "sgd" => Ok(OptimizerChoice::Sgd(SgdConfig {
                lr,
                momentum,
                nesterov,
                weight_decay,
                ..SgdConfig::default()
            })),
            "adam" => Ok(OptimizerChoice::Adam(AdamConfig {
                lr,
                weight_decay,
                ..AdamConfig::default()
            })),
            "adamw" => Ok(OptimizerChoice::Adam(AdamConfig {
                lr,
                weight_decay,
                ..AdamConfig::adamw()
            })),
            other => match Method::parse(other) {
                Some(_) if nesterov || weight_decay != 0.0 => Err(Error::Invalid(format!(
                    "--optimizer {other} takes neither --nesterov nor --weight-decay"
                ))),
                Some(method) => Ok(OptimizerChoice::SecondOrder(SecondOrderConfig {
                    lr,
                    momentum,
                    ..SecondOrderConfig::new(method)
                })),
                None => Err(Error::Invalid(format!(
                    "unknown optimizer '{other}' (expected sgd, adam, adamw or one of {})",
                    Method::names().join(", ")
                ))),
            },
        }
    }
}

/// When a run with a first-order phase switches to its optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Switch {
    /// After this many epochs.
    Epoch(usize),
    /// After this many steps.
    Step(usize),
    /// At the step after the monitor's record of a step meets the
    /// threshold (`--switch-when`; for `alpha`, whose record waits for the
    /// next step, the step after that). Needs the monitor to track the
    /// instrument: the condition is checked at its interval.
    When(Threshold),
}

impl Switch {
    /// Parses `epoch=N` or `step=N` (`N ≥ 1`), as `--switch-at` takes it.
    ///
    /// ```
    /// use secondo::train::Switch;
    /// assert_eq!(Switch::parse("epoch=5").unwrap(), Switch::Epoch(5));
    /// assert_eq!(Switch::parse("step=100").unwrap(), Switch::Step(100));
    /// assert!(Switch::parse("epoch=0").is_err() && Switch::parse("5").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Switch, Error> {
        let bad = || {
            Error::Invalid(format!(
                "--switch-at '{text}': expected epoch=N or step=N with N at least 1"
            ))
        };
        let (unit, n) = text.split_once('=').ok_or_else(bad)?;
        let n: usize = n.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
        match unit {
            "epoch" => Ok(Switch::Epoch(n)),
            "step" => Ok(Switch::Step(n)),
            _ => Err(bad()),
        }
    }

    /// Whether a step in `epoch` (from 1) after `step` steps (from 0) is
    /// past the switch, `met` saying whether a record met its threshold.
    fn reached(self, epoch: usize, step: usize, met: bool) -> bool {
        match self {
            Switch::Epoch(n) => epoch > n,
            Switch::Step(n) => step >= n,
            Switch::When(_) => met,
        }
    }

    /// Whether one of the finished `records` meets the threshold.
    fn met_by(self, records: &[Record]) -> bool {
        match self {
            Switch::When(t) => records.iter().any(|r| t.met_by(r)),
            Switch::Epoch(_) | Switch::Step(_) => false,
        }
    }
}

/// Late-phase training (Tatzel, Hennig & Schneider 2022): a first-order
/// optimizer until the switch, then the run's optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstPhase {
    /// The first-order optimizer of the first phase.
    pub optimizer: OptimizerChoice,
    /// When the run's optimizer takes over.
    pub until: Switch,
}

/// Mixed training: a second-order optimizer for the parameters whose names
/// match, a first-order one for the others.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixed {
    /// Comma-separated name patterns (`*` any run of characters) of the
    /// parameters the second-order optimizer owns, e.g. `body.*,3.weight`.
    pub second_order: String,
    /// The optimizer of the other parameters.
    pub first_order: OptimizerChoice,
}

/// How to train.
///
/// ```
/// let c = secondo::train::TrainConfig::default();
/// assert_eq!(c.batch_size, 32);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// The optimizer.
    pub optimizer: OptimizerChoice,
    /// Seed for the shuffling of every epoch.
    pub seed: u64,
    /// A first-order phase before `optimizer` takes over (none: `optimizer` throughout).
    pub first_phase: Option<FirstPhase>,
    /// Mixed training: `optimizer` (second-order) for some parameters only.
    pub mixed: Option<Mixed>,
}

impl TrainConfig {
    /// Refuses settings training cannot run with, before any work: no epochs,
    /// empty batches, invalid optimizer hyperparameters.
    ///
    /// ```
    /// use secondo::train::{OptimizerChoice, TrainConfig};
    /// let bad_lr = OptimizerChoice::parse("sgd", -1.0, 0.0, false, 0.0).unwrap();
    /// let config = TrainConfig { optimizer: bad_lr, ..TrainConfig::default() };
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        if self.batch_size == 0 || self.epochs == 0 {
            return Err(Error::Invalid(
                "--epochs and --batch must be at least 1".into(),
            ));
        }
        if let Some(phase) = self.first_phase {
            if matches!(phase.optimizer, OptimizerChoice::SecondOrder(_)) {
                return Err(Error::Invalid(
                    "--first-order-optimizer must be sgd, adam or adamw".into(),
                ));
            }
            FirstOrder::new(phase.optimizer, DType::F64)?;
            match phase.until {
                Switch::Epoch(n) if n >= self.epochs => {
                    return Err(Error::Invalid(format!(
                        "--switch-at epoch={n} leaves none of the {} epochs to --optimizer",
                        self.epochs
                    )))
                }
                _ => {}
            }
        }
        if let Some(m) = &self.mixed {
            if !matches!(self.optimizer, OptimizerChoice::SecondOrder(_)) {
                return Err(Error::Invalid(
                    "--second-order needs a second-order --optimizer".into(),
                ));
            }
            FirstOrder::new(m.first_order, DType::F64).map_err(|_| {
                Error::Invalid("--first-order-optimizer must be sgd, adam or adamw".into())
            })?;
        }
        match self.optimizer {
            OptimizerChoice::SecondOrder(c) => c.validate(),
            first_order => FirstOrder::new(first_order, DType::F64).map(|_| ()),
        }
    }

    /// Copies of the parameters the optimizer keeps beside them (momentum
    /// buffers, Adam's moments).
    fn optimizer_state(&self) -> usize {
        match self.optimizer {
            OptimizerChoice::Sgd(c) => usize::from(c.momentum != 0.0),
            OptimizerChoice::Adam(_) => 2,
            OptimizerChoice::SecondOrder(c) => c.state_copies(),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 20,
            batch_size: 32,
            optimizer: OptimizerChoice::Adam(AdamConfig::default()),
            seed: 0,
            first_phase: None,
            mixed: None,
        }
    }
}

/// Progress reported after every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Current epoch (from 1).
    pub epoch: usize,
    /// Steps done in total.
    pub step: usize,
    /// Steps planned in total.
    pub total_steps: usize,
    /// Mean loss over the epoch so far.
    pub loss: f64,
    /// Accuracy over the epoch so far (classification only).
    pub accuracy: Option<f64>,
    /// The step (from 0, as the monitor's records count them) from which
    /// the run's optimizer took over from a first phase, once it has.
    pub switched_at: Option<usize>,
}

/// Loss and accuracy of parameters on a dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean per-sample loss term (the loss with mean reduction over samples).
    pub loss: f64,
    /// Fraction of correctly classified samples (classification only).
    pub accuracy: Option<f64>,
}

/// A first-order optimizer, in the parameters' element type.
enum FirstOrder {
    F32(Box<dyn Optimizer<f32>>),
    F64(Box<dyn Optimizer<f64>>),
}

impl FirstOrder {
    fn new(choice: OptimizerChoice, dtype: DType) -> Result<FirstOrder, Error> {
        Ok(match (choice, dtype) {
            (OptimizerChoice::Sgd(c), DType::F32) => FirstOrder::F32(Box::new(Sgd::new(c)?)),
            (OptimizerChoice::Sgd(c), DType::F64) => FirstOrder::F64(Box::new(Sgd::new(c)?)),
            (OptimizerChoice::Adam(c), DType::F32) => FirstOrder::F32(Box::new(Adam::new(c)?)),
            (OptimizerChoice::Adam(c), DType::F64) => FirstOrder::F64(Box::new(Adam::new(c)?)),
            (OptimizerChoice::SecondOrder(c), _) => {
                return Err(Error::Invalid(format!("{} is not first-order", c.method)))
            }
        })
    }

    /// Saves the optimizer's buffers of the `slices` it steps (name and
    /// size of each, in order) under their parameters' names.
    fn save(&self, state: &mut Scope<'_>, slices: &[(String, usize)]) {
        match self {
            FirstOrder::F32(o) => save_first_order(&o.state(), state, slices),
            FirstOrder::F64(o) => save_first_order(&o.state(), state, slices),
        }
    }

    /// Restores what [`FirstOrder::save`] wrote.
    fn restore(&mut self, state: &mut Scope<'_>, slices: &[(String, usize)]) -> Result<(), Error> {
        match self {
            FirstOrder::F32(o) => restore_first_order(o.as_mut(), state, slices),
            FirstOrder::F64(o) => restore_first_order(o.as_mut(), state, slices),
        }
    }

    /// Steps the parameters at the indices `owned` accepts.
    fn step(
        &mut self,
        params: &mut ParamStore,
        grads: &[Tensor],
        owned: &dyn Fn(usize) -> bool,
    ) -> Result<(), Error> {
        match self {
            FirstOrder::F32(o) => step_typed(o.as_mut(), params, grads, owned),
            FirstOrder::F64(o) => step_typed(o.as_mut(), params, grads, owned),
        }
    }
}

enum AnyOptimizer {
    FirstOrder(FirstOrder),
    SecondOrder(Box<dyn SecondOrderOptimizer>),
    /// Mixed training: the second-order optimizer steps its group, the
    /// first-order one the `others`.
    Mixed {
        second: Box<dyn SecondOrderOptimizer>,
        first: FirstOrder,
        others: ParamGroup,
    },
}

impl AnyOptimizer {
    /// `choice` for every parameter.
    fn new(choice: OptimizerChoice, objective: &Objective, seed: u64) -> Result<Self, Error> {
        match choice {
            OptimizerChoice::SecondOrder(c) => Ok(AnyOptimizer::SecondOrder(c.build(
                objective,
                &ParamGroup::all(objective),
                seed,
            )?)),
            first_order => Ok(AnyOptimizer::FirstOrder(FirstOrder::new(
                first_order,
                objective.dtype,
            )?)),
        }
    }

    /// The run's optimizer after any first phase: `config.optimizer`, or
    /// with mixed training its group beside the first-order optimizer.
    fn for_run(config: &TrainConfig, objective: &Objective) -> Result<Self, Error> {
        match (&config.mixed, config.optimizer) {
            (Some(m), OptimizerChoice::SecondOrder(c)) => {
                let group = ParamGroup::matching(objective, &m.second_order)?;
                Ok(AnyOptimizer::Mixed {
                    second: c.build(objective, &group, config.seed)?,
                    first: FirstOrder::new(m.first_order, objective.dtype)?,
                    others: group.complement(objective),
                })
            }
            _ => AnyOptimizer::new(config.optimizer, objective, config.seed),
        }
    }

    /// Saves every optimizer's state: the first-order one's under
    /// `first_order`, the second-order one's under `second_order`.
    fn save(&self, objective: &Objective, state: &mut State) {
        let all = ParamGroup::all(objective);
        match self {
            AnyOptimizer::FirstOrder(o) => {
                o.save(&mut state.scope("first_order"), &slices(objective, &all))
            }
            AnyOptimizer::SecondOrder(o) => o.save(&mut state.scope("second_order")),
            AnyOptimizer::Mixed {
                second,
                first,
                others,
            } => {
                second.save(&mut state.scope("second_order"));
                first.save(&mut state.scope("first_order"), &slices(objective, others));
            }
        }
    }

    /// Restores what [`AnyOptimizer::save`] wrote for the same optimizers.
    fn restore(&mut self, objective: &Objective, state: &mut State) -> Result<(), Error> {
        let all = ParamGroup::all(objective);
        match self {
            AnyOptimizer::FirstOrder(o) => {
                o.restore(&mut state.scope("first_order"), &slices(objective, &all))
            }
            AnyOptimizer::SecondOrder(o) => o.restore(objective, &mut state.scope("second_order")),
            AnyOptimizer::Mixed {
                second,
                first,
                others,
            } => {
                second.restore(objective, &mut state.scope("second_order"))?;
                first.restore(&mut state.scope("first_order"), &slices(objective, others))
            }
        }
    }

    /// One update from the training step `out` on a batch; a second-order
    /// optimizer also takes the objective and the batch (`batch` builds it
    /// only for them) and, where `program` ran in evaluation mode's image
    /// (no dropout masks, no batch statistics), the step's outputs.
    fn step(
        &mut self,
        objective: &Objective,
        params: &mut ParamStore,
        (program, out): (&GradientProgram, &crate::StepOutput),
        batch: impl FnOnce() -> Result<Dataset, Error>,
    ) -> Result<(), Error> {
        let grads = &out.grads;
        let evaluation = program.masks().is_empty() && out.stats.is_empty();
        let pass = || TrainingPass {
            grads,
            output: evaluation.then_some(&out.output),
            loss: evaluation.then_some(out.loss),
        };
        match self {
            AnyOptimizer::FirstOrder(o) => o.step(params, grads, &|_| true),
            AnyOptimizer::SecondOrder(o) => {
                o.step(objective, params, &batch()?, &pass())?;
                Ok(())
            }
            AnyOptimizer::Mixed {
                second,
                first,
                others,
            } => {
                second.step(objective, params, &batch()?, &pass())?;
                first.step(params, grads, &|i| others.contains(i))
            }
        }
    }
}

/// The names and sizes of `group`'s parameters, the slices a first-order
/// optimizer steps.
fn slices(objective: &Objective, group: &ParamGroup) -> Vec<(String, usize)> {
    let all = objective.network.params();
    group
        .indices()
        .iter()
        .map(|&i| (all[i].name.clone(), all[i].shape.iter().product()))
        .collect()
}

/// `state`'s buffers as `KIND/PARAMETER` tensors in the element type, its counters as counts.
fn save_first_order<T: secondo_tensor::Element>(
    state: &OptimizerState<T>,
    into: &mut Scope<'_>,
    slices: &[(String, usize)],
) {
    for (kind, buffers) in &state.buffers {
        for (b, (name, _)) in buffers.iter().zip(slices) {
            let t = Tensor::from_vec(vec![b.len()], b.clone()).expect("a vector");
            into.scope(kind).put(name, t);
        }
    }
    for (name, count) in &state.counters {
        into.put_count(name, *count as usize);
    }
}

/// Restores `opt` from what [`save_first_order`] wrote, reading the names
/// of its buffers and counters from its own (fresh) state.
fn restore_first_order<T: secondo_tensor::Element + secondo_optim::Scalar>(
    opt: &mut dyn Optimizer<T>,
    from: &mut Scope<'_>,
    slices: &[(String, usize)],
) -> Result<(), Error> {
    let mut state = opt.state();
    for (kind, buffers) in state.buffers.iter_mut() {
        *buffers = restore_buffers(&mut from.scope(kind), slices)?;
    }
    for (name, count) in state.counters.iter_mut() {
        *count = from.take_count(name)? as u64;
    }
    opt.restore(state).map_err(|e| from.refuse(&e.to_string()))
}

/// One buffer of each slice, or none (before the first step).
fn restore_buffers<T: secondo_tensor::Element>(
    from: &mut Scope<'_>,
    slices: &[(String, usize)],
) -> Result<Vec<Vec<T>>, Error> {
    if !slices.iter().any(|(name, _)| from.has(name)) {
        return Ok(Vec::new());
    }
    slices
        .iter()
        .map(|(name, len)| {
            let t = from.take(name)?;
            match t.as_slice::<T>() {
                Some(v) if v.len() == *len => Ok(v.to_vec()),
                _ => Err(from.invalid(name, &format!("is not {len} values of the run's dtype"))),
            }
        })
        .collect()
}

fn step_typed<T: secondo_tensor::Element + secondo_optim::Scalar>(
    opt: &mut dyn Optimizer<T>,
    params: &mut ParamStore,
    grads: &[Tensor],
    owned: &dyn Fn(usize) -> bool,
) -> Result<(), Error> {
    let dtype_err = || Error::Invalid("parameters and gradients differ in dtype".into());
    let g: Vec<&[T]> = grads
        .iter()
        .enumerate()
        .filter(|(i, _)| owned(*i))
        .map(|(_, t)| t.as_slice::<T>().ok_or_else(dtype_err))
        .collect::<Result<_, _>>()?;
    let mut p: Vec<&mut [T]> = params
        .tensors_mut()
        .enumerate()
        .filter(|(i, _)| owned(*i))
        .map(|(_, t)| t.as_mut_slice::<T>().ok_or_else(dtype_err))
        .collect::<Result<_, _>>()?;
    if !p.is_empty() {
        opt.step(&mut p, &g)?;
    }
    Ok(())
}

/// Compiled programs per batch size (the last batch of an epoch may be
/// smaller): training steps (batch statistics, dropout, gradients) or
/// evaluation (running statistics, no dropout, no gradients).
struct Programs<'a> {
    objective: &'a Objective,
    training: bool,
    cache: HashMap<usize, GradientProgram>,
}

impl<'a> Programs<'a> {
    fn new(objective: &'a Objective, training: bool) -> Self {
        Programs {
            objective,
            training,
            cache: HashMap::new(),
        }
    }

    fn get(&mut self, n: usize) -> Result<&GradientProgram, Error> {
        if !self.cache.contains_key(&n) {
            let p = match self.training {
                true => self.objective.training_program(n)?,
                false => self.objective.program(n, false)?,
            };
            self.cache.insert(n, p);
        }
        Ok(&self.cache[&n])
    }
}

/// PyTorch's default batch-norm momentum: the weight of the newest batch in
/// the running statistics.
const BATCHNORM_MOMENTUM: f64 = 0.1;

/// Fresh 0/1 dropout masks for one step, keeping each unit with probability
/// `1 − p`, seeded by the run's seed and the step (same seed, same masks).
fn dropout_masks(
    program: &GradientProgram,
    seed: u64,
    step: usize,
    dtype: DType,
) -> Vec<(String, Tensor)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (step as u64).rotate_left(32));
    program
        .masks()
        .iter()
        .map(|m| {
            let n: usize = m.shape.iter().product();
            let keep: Vec<f64> = (0..n)
                .map(|_| f64::from(u8::from(rng.random::<f64>() >= m.p)))
                .collect();
            let t = Tensor::from_f64(m.shape.clone(), &keep, dtype).expect("mask values");
            (m.name.clone(), t)
        })
        .collect()
}

/// PyTorch's running-statistics update after a training step:
/// `running ← (1 − m) running + m · batch` for the mean and the unbiased
/// variance, and one more batch counted.
fn update_running_statistics(params: &mut ParamStore, stats: &[crate::BatchStatistics]) {
    let blend = |old: &Tensor, new: &Tensor| {
        let v: Vec<f64> = old
            .to_f64_vec()
            .iter()
            .zip(new.to_f64_vec())
            .map(|(o, b)| (1.0 - BATCHNORM_MOMENTUM) * o + BATCHNORM_MOMENTUM * b)
            .collect();
        Tensor::from_f64(old.shape().to_vec(), &v, old.dtype()).expect("same shape")
    };
    for s in stats {
        for (kind, batch) in [("running_mean", &s.mean), ("running_var", &s.var)] {
            let name = format!("{}.{kind}", s.layer);
            if let Some(old) = params.buffer(&name) {
                let new = blend(old, batch);
                params.insert_buffer(&name, new);
            }
        }
    }
    if !stats.is_empty() {
        params.count_batch();
    }
}

/// Number of samples whose arg-max output equals the label.
fn correct(output: &Tensor, labels: &[i64]) -> usize {
    let width = output.shape().get(1).copied().unwrap_or(1).max(1);
    output
        .to_f64_vec()
        .chunks(width)
        .zip(labels)
        .filter(|(row, &l)| {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
                );
            best.0 as i64 == l
        })
        .count()
}

/// Trains `params` in place; calls `progress` after every step. Returns the
/// evaluation on the training data of the last epoch (running averages).
///
/// ```
/// use secondo::train::{train, TrainConfig};
/// use secondo::{Objective, ObjectiveConfig};
/// use secondo_nn::ParamStore;
/// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
/// let mut params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
/// let data = secondo_data::digits().select(&(0..100).collect::<Vec<_>>()).unwrap();
/// let config = TrainConfig { epochs: 1, ..TrainConfig::default() };
/// let eval = train(&obj, &mut params, &data, &config, |_| {}).unwrap();
/// assert!(eval.loss.is_finite());
/// ```
pub fn train(
    objective: &Objective,
    params: &mut ParamStore,
    data: &Dataset,
    config: &TrainConfig,
    progress: impl FnMut(Progress),
) -> Result<Evaluation, Error> {
    train_with(objective, params, data, config, None, None, progress)
}

/// A term of the training objective beyond the loss, which may adapt
/// between epochs: online marginal-likelihood training
/// ([`crate::laplace::online`]) adds its prior to every gradient and
/// updates the prior's hyperparameters after epochs.
pub trait Regularizer {
    /// Adds the term's gradient at `params` to `grads` (one per parameter,
    /// in the network's order) of a step on `batch` samples.
    fn add_gradient(
        &self,
        params: &ParamStore,
        grads: &mut [Tensor],
        batch: usize,
    ) -> Result<(), Error>;

    /// Runs after epoch `epoch` (from 1) of training on `data`.
    fn end_epoch(&mut self, epoch: usize, params: &ParamStore, data: &Dataset)
        -> Result<(), Error>;
}

/// Where a monitored run's finished records go, as they finish (e.g. a
/// line each of `instruments.jsonl`).
pub type RecordSink<'s> = dyn FnMut(Vec<Record>) -> Result<(), Error> + 's;

/// Where a run's parameters and [`State`] go after an epoch: the epoch (from 1).
pub type CheckpointSink<'s> = dyn FnMut(usize, &ParamStore, &State) -> Result<(), Error> + 's;

/// Checkpoints of a run: the state it resumes from, and how often it saves its own.
///
/// Every random draw of training is a function of the seed and the
/// position (the shuffle of the seed and the epoch, dropout masks of the
/// seed and the step, Monte-Carlo targets of the seed and the optimizer's
/// step count), so the position and the optimizers' states are all a
/// resumed run needs to take the steps the uninterrupted run takes.
#[derive(Default)]
pub struct Checkpoints<'c> {
    /// A state a checkpoint saved, the parameters already holding its
    /// weights: training continues after its epoch, with the same
    /// configuration (only `epochs` may grow).
    pub resume: Option<State>,
    /// After every this many epochs, the parameters and the state go to the sink.
    pub every: Option<(usize, &'c mut CheckpointSink<'c>)>,
}

/// Where a run stands after an epoch, and the late phase's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Position {
    /// Epochs done.
    epoch: usize,
    /// Steps done.
    step: usize,
    /// The step the run's optimizer took over from a first phase, once it has.
    switched_at: Option<usize>,
    /// Whether a record met `--switch-when`'s threshold.
    met: bool,
}

impl Position {
    fn save(&self, state: &mut Scope<'_>) {
        state.put_count("epoch", self.epoch);
        state.put_count("step", self.step);
        if let Some(s) = self.switched_at {
            state.put_count("switched_at", s);
        }
        state.put_count("met", usize::from(self.met));
    }

    fn restore(state: &mut Scope<'_>) -> Result<Position, Error> {
        let switched_at = match state.has("switched_at") {
            true => Some(state.take_count("switched_at")?),
            false => None,
        };
        Ok(Position {
            epoch: state.take_count("epoch")?,
            step: state.take_count("step")?,
            switched_at,
            met: state.take_count("met")? != 0,
        })
    }
}

/// What a run does beside training: a monitor with the sink of its
/// records, a regularizer, checkpoints.
#[derive(Default)]
pub struct Hooks<'h, 'm> {
    /// The monitor, tracking its instruments at the steps they are due.
    pub monitor: Option<(&'h mut Monitor<'m>, &'h mut RecordSink<'h>)>,
    /// A term added to every gradient, with work after every epoch.
    pub regularizer: Option<&'h mut dyn Regularizer>,
    /// Where the run resumes from and how often it saves checkpoints.
    pub checkpoints: Checkpoints<'h>,
}

/// [`train`] with `monitor` tracking its instruments at the steps they are
/// due, each record handed to `sink` as soon as it is finished. Stops with
/// [`Error::Interrupted`] between steps when [`crate::interrupt::requested`];
/// the caller then takes the waiting records from [`Monitor::finish`].
///
/// ```
/// use secondo::monitor::{Monitor, MonitorConfig, MonitorSetup};
/// use secondo::train::{train_monitored, OptimizerChoice, TrainConfig};
/// use secondo::{Objective, ObjectiveConfig};
/// use secondo_nn::ParamStore;
/// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
/// let mut params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
/// let data = secondo_data::digits().select(&(0..64).collect::<Vec<_>>()).unwrap();
/// let config = TrainConfig { epochs: 1, ..TrainConfig::default() };
/// let monitor_config = MonitorConfig::parse("economy", 1).unwrap();
/// let setup = MonitorSetup { config: &monitor_config, total_steps: 2, lr: 1e-3, plain_sgd: false, probe: None, seed: 0 };
/// let mut monitor = Monitor::new(&obj, &params, setup).unwrap();
/// let mut records = Vec::new();
/// train_monitored(&obj, &mut params, &data, &config, &mut monitor, &mut |r| Ok(records.extend(r)), |_| {}).unwrap();
/// records.extend(monitor.finish());
/// assert_eq!(records.len(), 2);
/// assert!(records[0]["alpha"].is_number() && records[1].get("alpha").is_none());
/// ```
pub fn train_monitored(
    objective: &Objective,
    params: &mut ParamStore,
    data: &Dataset,
    config: &TrainConfig,
    monitor: &mut Monitor<'_>,
    sink: &mut RecordSink<'_>,
    progress: impl FnMut(Progress),
) -> Result<Evaluation, Error> {
    train_with(
        objective,
        params,
        data,
        config,
        Some((monitor, sink)),
        None,
        progress,
    )
}

/// [`train`], or [`train_monitored`] with `monitor`, adding `regularizer`'s
/// gradient to every step and running its work after every epoch.
pub fn train_with(
    objective: &Objective,
    params: &mut ParamStore,
    data: &Dataset,
    config: &TrainConfig,
    monitor: Option<(&mut Monitor<'_>, &mut RecordSink<'_>)>,
    regularizer: Option<&mut dyn Regularizer>,
    progress: impl FnMut(Progress),
) -> Result<Evaluation, Error> {
    // Each reference shortened to the hooks' one lifetime (a coercion
    // Rust makes at a function's result, not inside an `Option`).
    let hooks = Hooks {
        monitor: monitor.map(|(m, s)| -> (_, &mut RecordSink<'_>) { (m, s) }),
        regularizer: regularizer.map(|r| -> &mut dyn Regularizer { r }),
        checkpoints: Checkpoints::default(),
    };
    train_with_hooks(objective, params, data, config, hooks, progress)
}

/// [`train_with`] with its hooks, checkpoints among them: a run resumed
/// from a checkpoint of a run takes the steps that run would have taken
/// next, so its weights are the uninterrupted run's, byte for byte.
///
/// ```
/// use secondo::state::State;
/// use secondo::train::{train, train_with_hooks, Checkpoints, Hooks, OptimizerChoice, TrainConfig};
/// use secondo::{Objective, ObjectiveConfig};
/// use secondo_nn::ParamStore;
/// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
/// let data = secondo_data::digits().select(&(0..64).collect::<Vec<_>>()).unwrap();
/// let config = TrainConfig { epochs: 2, ..TrainConfig::default() };
/// let mut straight = ParamStore::init(obj.network.spec(), 0, obj.dtype);
/// train(&obj, &mut straight, &data, &config, |_| {}).unwrap();
/// // One epoch, saved, then resumed for the second.
/// let mut params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
/// let mut saved = None;
/// let mut sink = |_epoch: usize, p: &ParamStore, s: &State| Ok(saved = Some((p.clone(), s.clone())));
/// let hooks = Hooks { checkpoints: Checkpoints { resume: None, every: Some((1, &mut sink)) }, ..Hooks::default() };
/// train_with_hooks(&obj, &mut params, &data, &TrainConfig { epochs: 1, ..config.clone() }, hooks, |_| {}).unwrap();
/// let (mut params, state) = saved.unwrap();
/// let hooks = Hooks { checkpoints: Checkpoints { resume: Some(state), every: None }, ..Hooks::default() };
/// train_with_hooks(&obj, &mut params, &data, &config, hooks, |_| {}).unwrap();
/// assert_eq!(params.get("0.weight").unwrap().to_f64_vec(), straight.get("0.weight").unwrap().to_f64_vec());
/// ```
pub fn train_with_hooks(
    objective: &Objective,
    params: &mut ParamStore,
    data: &Dataset,
    config: &TrainConfig,
    hooks: Hooks<'_, '_>,
    mut progress: impl FnMut(Progress),
) -> Result<Evaluation, Error> {
    let Hooks {
        mut monitor,
        mut regularizer,
        mut checkpoints,
    } = hooks;
    config.validate()?;
    objective.check_targets(&data.y)?;
    if data.is_empty() {
        return Err(Error::Invalid(format!(
            "data '{}' has no samples",
            data.name
        )));
    }
    let mut phase = config.first_phase;
    if let Some(FirstPhase {
        until: Switch::When(t),
        ..
    }) = phase
    {
        let instrument = t.instrument();
        if !monitor
            .as_ref()
            .is_some_and(|(m, _)| m.tracks_instrument(instrument))
        {
            return Err(Error::Invalid(format!(
                "--switch-when {t}: the monitor must track {instrument}"
            )));
        }
    }
    let start = match checkpoints.resume.as_mut() {
        Some(state) => Position::restore(&mut state.scope("train"))?,
        None => Position::default(),
    };
    if start.epoch >= config.epochs && checkpoints.resume.is_some() {
        return Err(Error::Invalid(format!(
            "--epochs {}: the checkpoint is at epoch {} already; ask for more",
            config.epochs, start.epoch
        )));
    }
    if start.switched_at.is_some() {
        phase = None;
    }
    let (mut met, mut switched_at, mut step) = (start.met, start.switched_at, start.step);
    let mut opt = match phase {
        Some(p) => AnyOptimizer::new(p.optimizer, objective, config.seed)?,
        None => AnyOptimizer::for_run(config, objective)?,
    };
    if let Some(mut state) = checkpoints.resume.take() {
        opt.restore(objective, &mut state)?;
        state.finish()?;
    }
    let mut programs = Programs::new(objective, true);
    let steps_per_epoch = data.len().div_ceil(config.batch_size);
    let total_steps = steps_per_epoch * config.epochs;
    let mut last = Evaluation {
        loss: f64::NAN,
        accuracy: None,
    };
    for epoch in start.epoch + 1..=config.epochs {
        let shuffled = data.shuffled(config.seed.wrapping_add(epoch as u64))?;
        let (mut loss_sum, mut hits, mut seen) = (0.0, 0usize, 0usize);
        for batch in shuffled.batches(config.batch_size)? {
            if crate::interrupt::requested() {
                return Err(Error::Interrupted(format!(
                    "interrupted by a signal after {step} of {total_steps} steps"
                )));
            }
            if phase.is_some_and(|p| p.until.reached(epoch, step, met)) {
                phase = None;
                switched_at = Some(step);
                opt = AnyOptimizer::for_run(config, objective)?;
            }
            let (x, y) = objective.batch_tensors(&batch)?;
            let program = programs.get(batch.len())?;
            let masks = dropout_masks(program, config.seed, step, objective.dtype);
            let mut out = match monitor.as_mut() {
                Some((m, _)) if m.tracks(step) => {
                    let range: Vec<usize> = (batch.start..batch.end).collect();
                    let batch_data = || Ok(shuffled.select(&range)?);
                    let mut plain = || {
                        Ok(program.run_with_masks(params, x.clone(), y.clone(), masks.clone())?)
                    };
                    m.step(step, epoch, params, &x, &y, &batch_data, &mut plain)?
                }
                _ => program.run_with_masks(params, x, y, masks)?,
            };
            if !out.loss.is_finite() {
                return Err(diverged(out.loss, step, Some(epoch), config.optimizer));
            }
            if let Some(r) = regularizer.as_deref() {
                r.add_gradient(params, &mut out.grads, batch.len())?;
            }
            let range = batch.start..batch.end;
            opt.step(objective, params, (program, &out), || {
                Ok(shuffled.select(&range.collect::<Vec<_>>())?)
            })?;
            update_running_statistics(params, &out.stats);
            if let Some((m, sink)) = monitor.as_mut() {
                m.updated(params)?;
                let records = m.drain();
                met = met || phase.is_some_and(|p| p.until.met_by(&records));
                sink(records)?;
            }
            loss_sum += mean_term(objective, out.loss, batch.len()) * batch.len() as f64;
            if let secondo_data::BatchTargets::Classes { labels, .. } = batch.y {
                hits += correct(&out.output, labels);
            }
            seen += batch.len();
            step += 1;
            last = Evaluation {
                loss: loss_sum / seen as f64,
                accuracy: matches!(data.y, Targets::Classes { .. })
                    .then(|| hits as f64 / seen as f64),
            };
            progress(Progress {
                epoch,
                step,
                total_steps,
                loss: last.loss,
                accuracy: last.accuracy,
                switched_at,
            });
        }
        if let Some(r) = regularizer.as_deref_mut() {
            r.end_epoch(epoch, params, data)?;
        }
        if let Some((every, sink)) = checkpoints.every.as_mut() {
            if epoch.is_multiple_of(*every) {
                let mut state = State::new();
                let position = Position {
                    epoch,
                    step,
                    switched_at,
                    met,
                };
                position.save(&mut state.scope("train"));
                opt.save(objective, &mut state);
                sink(epoch, params, &state)?;
            }
        }
    }
    if let Some(name) = params
        .iter()
        .find_map(|(n, t)| t.first_non_finite().map(|_| n))
    {
        return Err(Error::Invalid(format!(
            "the last step made parameter '{name}' non-finite; try a smaller --lr"
        )));
    }
    Ok(last)
}

/// Refuses training whose parameters, gradients, optimizer state and one
/// step's values would not fit in memory: from the spec's sizes and the
/// compiled step, before the parameters exist. [`train`] runs it; a caller
/// that initialises large parameters first can run it before that.
///
/// ```
/// use secondo::train::{ensure_training_fits, TrainConfig};
/// use secondo::{Objective, ObjectiveConfig};
/// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
/// assert!(ensure_training_fits(&obj, 1000, &TrainConfig::default()).is_ok());
/// ```
pub fn ensure_training_fits(
    objective: &Objective,
    samples: usize,
    config: &TrainConfig,
) -> Result<(), Error> {
    if let OptimizerChoice::SecondOrder(c) = config.optimizer {
        let group = match &config.mixed {
            Some(m) => ParamGroup::matching(objective, &m.second_order)?,
            None => ParamGroup::all(objective),
        };
        c.check_model(objective, &group)?;
    }
    let batch = config.batch_size.min(samples).max(1);
    let step = objective.training_program(batch)?.executable().peak_bytes();
    let numel = objective.network.spec().num_parameters();
    let copies = 2 + config.optimizer_state();
    let state = bytes_of(numel, objective.dtype.size_bytes() * copies);
    ensure_fits(
        format!("training with --batch {batch}"),
        state.saturating_add(step),
    )?;
    Ok(())
}

/// Why the loss stopped being finite at `step` (counted from 0) of
/// `epoch` (where the run counts epochs).
fn diverged(loss: f64, step: usize, epoch: Option<usize>, optimizer: OptimizerChoice) -> Error {
    let cause = match optimizer {
        _ if step == 0 => {
            "before any update: the forward pass overflows on the data or the initial weights"
                .to_string()
        }
        OptimizerChoice::Sgd(c) if c.momentum >= 1.0 => format!(
            "--momentum {} keeps every past gradient undiminished; use one below 1",
            c.momentum
        ),
        _ => "try a smaller --lr".to_string(),
    };
    let epoch = epoch.map(|e| format!(" (epoch {e})")).unwrap_or_default();
    Error::Invalid(format!(
        "the loss became {loss} at step {}{epoch}; {cause}",
        step + 1
    ))
}

/// The loss as a mean over samples, whatever the reduction.
fn mean_term(objective: &Objective, loss: f64, n: usize) -> f64 {
    match objective.loss.reduction {
        secondo_nn::Reduction::Mean => loss,
        secondo_nn::Reduction::Sum => loss / n.max(1) as f64,
    }
}

/// Loss and accuracy of `params` on a dataset, in batches of `batch_size`.
///
/// ```
/// use secondo::train::evaluate;
/// use secondo::{Objective, ObjectiveConfig};
/// use secondo_nn::ParamStore;
/// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
/// let params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
/// let e = evaluate(&obj, &params, &secondo_data::digits(), 256).unwrap();
/// assert!(e.accuracy.unwrap() < 0.5);
/// ```
pub fn evaluate(
    objective: &Objective,
    params: &ParamStore,
    data: &Dataset,
    batch_size: usize,
) -> Result<Evaluation, Error> {
    Evaluator::new(objective).evaluate(params, data, batch_size)
}

/// [`evaluate`] with its compiled programs kept between calls, for a caller
/// that evaluates the same model again and again (a loss curve): compiling
/// a program costs more than running it on a small dataset.
pub struct Evaluator<'a> {
    programs: Programs<'a>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator of `objective`, compiling nothing yet.
    pub fn new(objective: &'a Objective) -> Evaluator<'a> {
        Evaluator {
            programs: Programs::new(objective, false),
        }
    }

    /// Loss and accuracy of `params` on a dataset, in batches of `batch_size`.
    pub fn evaluate(
        &mut self,
        params: &ParamStore,
        data: &Dataset,
        batch_size: usize,
    ) -> Result<Evaluation, Error> {
        let objective = self.programs.objective;
        objective.check_targets(&data.y)?;
        let (mut loss_sum, mut hits) = (0.0, 0usize);
        for batch in data.batches(batch_size.max(1))? {
            let (x, y) = objective.batch_tensors(&batch)?;
            let out = self.programs.get(batch.len())?.run(params, x, y)?;
            loss_sum += mean_term(objective, out.loss, batch.len()) * batch.len() as f64;
            if let secondo_data::BatchTargets::Classes { labels, .. } = batch.y {
                hits += correct(&out.output, labels);
            }
        }
        let n = data.len().max(1) as f64;
        Ok(Evaluation {
            loss: loss_sum / n,
            accuracy: matches!(data.y, Targets::Classes { .. }).then(|| hits as f64 / n),
        })
    }
}

/// One optimizer stepped through batches its caller chooses, for a caller
/// that owns the loop: `secondo bench --optimizers` times every step and
/// evaluates between them. [`train`] runs the same optimizers over epochs,
/// with a monitor and a first phase.
///
/// ```
/// use secondo::train::{OptimizerChoice, Stepper, TrainConfig};
/// use secondo::{Objective, ObjectiveConfig};
/// use secondo_nn::ParamStore;
/// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
/// let mut params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
/// let batch = secondo_data::digits().select(&(0..32).collect::<Vec<_>>()).unwrap();
/// let kfac = OptimizerChoice::parse("kfac", 0.1, 0.0, false, 0.0).unwrap();
/// let mut stepper = Stepper::new(&obj, &TrainConfig { optimizer: kfac, ..TrainConfig::default() }).unwrap();
/// let first = stepper.step(&mut params, &batch).unwrap();
/// assert!(stepper.step(&mut params, &batch).unwrap() < first);
/// ```
pub struct Stepper<'a> {
    objective: &'a Objective,
    optimizer: AnyOptimizer,
    choice: OptimizerChoice,
    programs: Programs<'a>,
    seed: u64,
    steps: usize,
}

impl<'a> Stepper<'a> {
    /// `config.optimizer` (beside its first-order optimizer with
    /// `config.mixed`); refuses a first phase, which [`train`] schedules.
    pub fn new(objective: &'a Objective, config: &TrainConfig) -> Result<Stepper<'a>, Error> {
        config.validate()?;
        if config.first_phase.is_some() {
            return Err(Error::Invalid(
                "a stepper runs one optimizer; late-phase training runs in train".into(),
            ));
        }
        Ok(Stepper {
            objective,
            optimizer: AnyOptimizer::for_run(config, objective)?,
            choice: config.optimizer,
            programs: Programs::new(objective, true),
            seed: config.seed,
            steps: 0,
        })
    }

    /// One update from the gradient on `batch`; returns the batch's loss
    /// before it (the mean term, whatever the reduction).
    pub fn step(&mut self, params: &mut ParamStore, batch: &Dataset) -> Result<f64, Error> {
        let whole = batch
            .batches(batch.len().max(1))?
            .next()
            .ok_or_else(|| Error::Invalid("a step on an empty batch".into()))?;
        let (x, y) = self.objective.batch_tensors(&whole)?;
        let program = self.programs.get(batch.len())?;
        let masks = dropout_masks(program, self.seed, self.steps, self.objective.dtype);
        let out = program.run_with_masks(params, x, y, masks)?;
        if !out.loss.is_finite() {
            return Err(diverged(out.loss, self.steps, None, self.choice));
        }
        self.optimizer.step(
            self.objective,
            params,
            (program, &out),
            || Ok(batch.clone()),
        )?;
        update_running_statistics(params, &out.stats);
        self.steps += 1;
        Ok(mean_term(self.objective, out.loss, batch.len()))
    }
}
