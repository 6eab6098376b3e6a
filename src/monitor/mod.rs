//! The training monitor: Cockpit's instruments (Schneider, Dangel & Hennig
//! 2021, "Cockpit: a practical debugging tool for the training of deep
//! neural networks") and curvature-structure measurements, computed during
//! training from one compiled graph per set of due instruments that also
//! yields the step's gradient.
//!
//! A [`Monitor`] sits inside the training loop: [`Monitor::step`] replaces
//! the plain training step at tracked steps and records what is due;
//! [`Monitor::updated`] completes the instruments that need the update
//! (`update_size`, `alpha`'s start); finished records come out of
//! [`Monitor::drain`], one per tracked step, keyed by instrument name.
//!
//! ```
//! use secondo::monitor::{Monitor, MonitorConfig, MonitorSetup};
//! use secondo::{Objective, ObjectiveConfig};
//! use secondo_nn::ParamStore;
//! let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
//! let mut params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
//! let config = MonitorConfig::parse("loss,grad_norm,norm_test", 1).unwrap();
//! let setup = MonitorSetup { config: &config, total_steps: 1, lr: 0.1, plain_sgd: true, probe: None, seed: 0 };
//! let mut monitor = Monitor::new(&obj, &params, setup).unwrap();
//! let data = secondo_data::digits().select(&(0..8).collect::<Vec<_>>()).unwrap();
//! let batch = data.batches(8).unwrap().next().unwrap();
//! let (x, y) = obj.batch_tensors(&batch).unwrap();
//! let out = monitor.step(0, 1, &params, &x, &y, &|| Ok(data.clone()), &mut || unreachable!()).unwrap();
//! assert_eq!(out.grads.len(), 2);
//! monitor.updated(&params).unwrap();
//! let records = monitor.drain();
//! assert!(records[0]["norm_test"].as_f64().unwrap() > 0.0);
//! ```

pub mod alpha;
pub mod curvature;
mod directional;
pub mod gradient_tests;
pub mod histogram;
mod instrument;
pub mod log;
pub mod reading;
pub mod snr;
mod step;
pub mod structure;
mod threshold;

pub use instrument::{
    Instrument, Interval, MonitorConfig, Schedule, BUSINESS_EXTRA, ECONOMY, FULL_EXTRA, STRUCTURE,
};
pub use reading::Reading;
pub use step::{PerSample, StepValues};
pub use threshold::{Crossing, Threshold};

use secondo_curvature::{Objective, QuantityProgram, StepOutput};
use secondo_data::Dataset;
use secondo_nn::ParamStore;
use secondo_tensor::memory::{bytes_of, ensure_fits};
use secondo_tensor::{BinaryOp, Tensor};
use serde_json::{json, Value};

use crate::Error;
use alpha::Observation;
use directional::DirectionalPrograms;
use histogram::{Histogram1d, Histogram2d};
use step::StepPrograms;
use structure::{Probe, StructureState};

/// One line of `instruments.jsonl`.
pub type Record = serde_json::Map<String, Value>;

/// How the monitor is set up for a run.
pub struct MonitorSetup<'a> {
    /// Which instruments, at which intervals.
    pub config: &'a MonitorConfig,
    /// Steps the run will take (the structure checkpoints spread over them).
    pub total_steps: usize,
    /// The learning rate (recorded, and CABS's `lr`).
    pub lr: f64,
    /// Whether the optimizer is SGD without momentum or weight decay (CABS
    /// and the early-stopping criterion assume it).
    pub plain_sgd: bool,
    /// The probe samples of the structure measurements.
    pub probe: Option<Dataset>,
    /// Seed of the structure measurements' random probes.
    pub seed: u64,
}

/// The record of a step waiting for the parameter update.
struct Pending {
    record: Record,
    /// `θ_t`, when the update is measured (α starts from it too).
    before: Option<ParamStore>,
    /// α's start point, when α starts here.
    alpha: Option<StartPoint>,
    update_size: bool,
}

/// What α's start point is observed from.
enum StartPoint {
    /// The step's own values (SGD: the step is along `−g`).
    Observed(Observation),
    /// The batch loss and the batch, observed along the step once it is
    /// known (any other optimizer).
    Batch(f64, Tensor, Tensor),
}

/// α's start point, waiting for the next step's observation.
struct AlphaStart {
    record: Record,
    start: Observation,
    /// `θ_{t+1} − θ_t` per parameter.
    direction: Vec<Tensor>,
    length: f64,
}

/// The monitor of one training run.
pub struct Monitor<'a> {
    objective: &'a Objective,
    schedule: Schedule,
    lr: f64,
    plain_sgd: bool,
    initial: ParamStore,
    programs: StepPrograms,
    directional: DirectionalPrograms,
    pending: Option<Pending>,
    alpha_start: Option<AlphaStart>,
    finished: Vec<Record>,
    max_ev: curvature::MaxEigen,
    structure: StructureState,
    probe: Option<Dataset>,
    classes: usize,
    seed: u64,
}

impl<'a> Monitor<'a> {
    /// A monitor for training `objective` from `params`; refuses instruments
    /// the model or optimizer cannot take, with a one-line reason.
    pub fn new(
        objective: &'a Objective,
        params: &ParamStore,
        setup: MonitorSetup<'_>,
    ) -> Result<Monitor<'a>, Error> {
        Self::check(objective, &setup)?;
        let classes = setup
            .probe
            .as_ref()
            .and_then(Dataset::num_classes)
            .unwrap_or(objective.network.output_shape()[0]);
        Ok(Monitor {
            objective,
            schedule: setup.config.schedule(setup.total_steps),
            lr: setup.lr,
            plain_sgd: setup.plain_sgd,
            initial: params.clone(),
            programs: StepPrograms::default(),
            directional: DirectionalPrograms::default(),
            pending: None,
            alpha_start: None,
            finished: Vec::new(),
            max_ev: curvature::MaxEigen::default(),
            structure: StructureState::default(),
            probe: setup.probe,
            classes,
            seed: setup.seed,
        })
    }

    /// Refuses instruments the model or optimizer cannot take, with a
    /// one-line reason, before any parameters exist ([`Monitor::new`] runs
    /// it too).
    pub fn check(objective: &Objective, setup: &MonitorSetup<'_>) -> Result<(), Error> {
        let on: Vec<Instrument> = setup.config.instruments.iter().map(|e| e.0).collect();
        check_model(objective, &on, setup.plain_sgd)?;
        let structure: Vec<Instrument> = on.iter().copied().filter(|i| i.is_structure()).collect();
        let Some(&first) = structure.first() else {
            return Ok(());
        };
        let Some(probe) = &setup.probe else {
            return Err(Error::Invalid(format!(
                "--monitor {first}: structure measurements need probe samples"
            )));
        };
        let classes = probe
            .num_classes()
            .unwrap_or(objective.network.output_shape()[0]);
        structure::check(
            objective,
            &structure,
            classes,
            probe.num_classes().is_some(),
        )
    }

    /// FLOPs of the monitored step with every instrument on the schedule due
    /// (compiled once, as for [`Monitor::ensure_fits`]); `None` when the
    /// plain step serves. Products outside the step (λmax's, the structure
    /// measurements') are not counted.
    pub fn step_flops(&mut self, batch: usize) -> Result<Option<u64>, Error> {
        Ok(self.step_program(batch)?.map(|step| step.graph().flops()))
    }

    /// The program of a step with every instrument on the schedule due
    /// (`None` when a plain step serves them all), e.g. to profile it.
    pub fn step_program(&mut self, batch: usize) -> Result<Option<&QuantityProgram>, Error> {
        let quantities = self.all_due();
        if quantities.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.programs.get(
            self.objective,
            &quantities,
            batch,
        )?))
    }

    /// The step's quantities with every instrument on the schedule due (and
    /// α's end point, when α is on).
    fn all_due(&self) -> Vec<secondo_curvature::Quantity> {
        let on: Vec<Instrument> = self.schedule.instruments().collect();
        step::quantities_for(&on, self.plain_sgd, on.contains(&Instrument::Alpha))
    }

    /// Refuses a batch size whose monitored step would not fit in memory:
    /// from the compiled step of every instrument due at once (its values'
    /// peak, beside the parameters, θ₀ and θ_t the monitor keeps), before
    /// any step runs. The step is compiled here once and reused.
    pub fn ensure_fits(&mut self, batch: usize) -> Result<(), Error> {
        let quantities = self.all_due();
        if quantities.is_empty() {
            return Ok(());
        }
        let step = self.programs.get(self.objective, &quantities, batch)?;
        let copies = bytes_of(
            self.objective.network.spec().num_parameters(),
            3 * self.objective.dtype.size_bytes(),
        );
        ensure_fits(
            format!("the monitored step of --batch {batch} (--monitor)"),
            step.executable().peak_bytes().saturating_add(copies),
        )?;
        Ok(())
    }

    /// Whether `i` is on the schedule (at some interval).
    pub fn tracks_instrument(&self, i: Instrument) -> bool {
        self.schedule.instruments().any(|j| j == i)
    }

    /// Whether anything is tracked at `step` (the training loop then builds
    /// the batch's dataset only when [`Monitor::step`] asks for it).
    pub fn tracks(&self, step: usize) -> bool {
        !self.schedule.due_at(step).is_empty() || self.alpha_start.is_some()
    }

    /// The training step at `step` (from 0) of `epoch` on `(x, y)`, with the
    /// instruments due: runs the monitored program when per-sample values are
    /// needed and `plain` (the ordinary training step) otherwise, and returns
    /// the step's loss, outputs and gradient. `batch` gives the batch as a
    /// dataset, for the mini-batch Hessian.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        step: usize,
        epoch: usize,
        params: &ParamStore,
        x: &Tensor,
        y: &Tensor,
        batch: &dyn Fn() -> Result<Dataset, Error>,
        plain: &mut dyn FnMut() -> Result<StepOutput, Error>,
    ) -> Result<StepOutput, Error> {
        let due = self.schedule.due_at(step);
        let end = self.alpha_start.as_ref().map(|a| a.direction.as_slice());
        let quantities = step::quantities_for(&due, self.plain_sgd, end.is_some());
        let (out, values) = if quantities.is_empty() {
            let out = plain()?;
            let values = StepValues {
                batch: x.shape()[0],
                loss: out.loss,
                grad: out.grads.clone(),
                ..StepValues::default()
            };
            (out, values)
        } else {
            self.programs
                .run(self.objective, &quantities, params, (x, y), end)?
        };
        if !out.loss.is_finite() {
            // The training loop stops with the reason; nothing to measure.
            return Ok(out);
        }
        if let Some(start) = self.alpha_start.take() {
            self.finish_alpha(start, &values);
        }
        if due.is_empty() {
            return Ok(out);
        }
        let mut record = Record::new();
        record.insert("step".into(), json!(step));
        record.insert("epoch".into(), json!(epoch));
        record.insert("lr".into(), json!(self.lr));
        record.insert("batch_size".into(), json!(values.batch));
        for &i in &due {
            if let Some(v) = self.single_step(i, params, &values, batch)? {
                record.insert(i.name().into(), v);
            }
        }
        let structure: Vec<Instrument> = due.iter().copied().filter(|i| i.is_structure()).collect();
        if let (false, Some(data)) = (structure.is_empty(), self.probe.as_ref()) {
            let probe = Probe {
                data,
                classes: self.classes,
                seed: self.seed,
            };
            for (i, v) in structure::measure(
                self.objective,
                params,
                &probe,
                &structure,
                &mut self.structure,
            )? {
                record.insert(i.name().into(), v);
            }
        }
        let update_size = due.contains(&Instrument::UpdateSize);
        let alpha = due.contains(&Instrument::Alpha);
        self.pending = Some(Pending {
            record,
            before: (update_size || alpha).then(|| params.clone()),
            alpha: alpha.then(|| match self.plain_sgd {
                true => StartPoint::Observed(self.start_along_gradient(&values)),
                false => StartPoint::Batch(values.loss, x.clone(), y.clone()),
            }),
            update_size,
        });
        Ok(out)
    }

    /// Completes the current step's record once the optimizer has moved the
    /// parameters to `params`.
    pub fn updated(&mut self, params: &ParamStore) -> Result<(), Error> {
        let Some(mut pending) = self.pending.take() else {
            return Ok(());
        };
        let Some(before) = pending.before.take() else {
            self.finished.push(pending.record);
            return Ok(());
        };
        let direction = differences(params, &before)?;
        let squared: Vec<f64> = direction.iter().map(|d| d.dot(d)).collect();
        if pending.update_size {
            let norms: Vec<f64> = squared.iter().map(|s| s.sqrt()).collect();
            pending.record.insert("update_size".into(), json!(norms));
        }
        let length = squared.iter().sum::<f64>().sqrt();
        let start = match pending.alpha.take() {
            None => {
                self.finished.push(pending.record);
                return Ok(());
            }
            Some(StartPoint::Observed(start)) => start,
            Some(StartPoint::Batch(loss, x, y)) => {
                let (terms, along) =
                    self.directional
                        .run(self.objective, &before, &x, &y, &direction)?;
                let slopes: Vec<f64> = along.iter().map(|s| s / length).collect();
                alpha::observe(loss, &terms, &slopes)
            }
        };
        self.alpha_start = Some(AlphaStart {
            record: pending.record,
            start,
            direction,
            length,
        });
        Ok(())
    }

    /// The records finished so far, in step order.
    pub fn drain(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.finished)
    }

    /// Ends the run: records still waiting (α of the last step has no end
    /// point) are finished without what they waited for.
    pub fn finish(&mut self) -> Vec<Record> {
        if let Some(p) = self.pending.take() {
            self.finished.push(p.record);
        }
        if let Some(a) = self.alpha_start.take() {
            self.finished.push(a.record);
        }
        self.drain()
    }

    /// α's end point from the step after it (`values` has the loss terms and
    /// the per-sample gradients' projections on the last step).
    fn finish_alpha(&mut self, start: AlphaStart, values: &StepValues) {
        let end = self.observe(values, start.length, values.batch_dot_direction.as_deref());
        let mut record = start.record;
        record.insert(
            Instrument::Alpha.name().into(),
            json!(alpha::alpha(start.length, start.start, end)),
        );
        self.finished.push(record);
    }

    /// α's start point of an SGD step, whose direction is `−g/‖g‖`.
    fn start_along_gradient(&self, values: &StepValues) -> Observation {
        let norm = values.grad_l2_squared().sqrt();
        self.observe(values, -norm, values.batch_dot_grad.as_deref())
    }

    /// The observation of `values` along a direction `d` of length `length`
    /// from the per-sample projections `c_n · d`: slopes
    /// `∇ℓ_n · d / ‖d‖ = c_n · d / (s ‖d‖)` for the loss's reduction factor `s`
    /// (for a mean loss, Cockpit's `(B c_n)·d / ‖d‖`).
    fn observe(&self, values: &StepValues, length: f64, along: Option<&[f64]>) -> Observation {
        let n = values.batch;
        let s = self
            .objective
            .loss
            .scale(&[n, self.objective.network.output_shape()[0]]);
        let slopes: Vec<f64> = along
            .unwrap_or(&[])
            .iter()
            .map(|a| if length == 0.0 { 0.0 } else { a / (s * length) })
            .collect();
        alpha::observe(
            values.loss,
            values.batch_loss.as_deref().unwrap_or(&[]),
            &slopes,
        )
    }

    /// The value of a single-step instrument (`None` for the two-step and
    /// structure instruments, filled in elsewhere).
    fn single_step(
        &mut self,
        i: Instrument,
        params: &ParamStore,
        v: &StepValues,
        batch: &dyn Fn() -> Result<Dataset, Error>,
    ) -> Result<Option<Value>, Error> {
        use Instrument as I;
        let b = v.batch;
        let g2 = v.grad_l2_squared();
        let l2 = || v.batch_l2.as_deref().unwrap_or(&[]);
        let dots = || v.batch_dot_grad.as_deref().unwrap_or(&[]);
        let sgs = || v.sum_grad_squared.as_deref().unwrap_or(&[]);
        let diag_h = || v.diag_hessian.as_deref().unwrap_or(&[]);
        let with_diag = || sgs().iter().flatten().zip(diag_h().iter().flatten());
        Ok(Some(match i {
            I::Loss => json!(v.loss),
            I::GradNorm => json!(v.grad.iter().map(|g| g.dot(g).sqrt()).collect::<Vec<_>>()),
            I::Distance => json!(params
                .iter()
                .zip(self.initial.iter())
                .map(|((_, t), (_, r))| t.squared_distance(r).sqrt())
                .collect::<Vec<_>>()),
            I::NormTest => json!(gradient_tests::norm_test(b, l2(), g2)),
            I::InnerTest => json!(gradient_tests::inner_test(b, dots(), g2)),
            I::OrthoTest => json!(gradient_tests::ortho_test(b, l2(), dots(), g2)),
            I::MeanGsnr | I::Cabs | I::EarlyStopping => {
                let grad: Vec<Vec<f64>> = v.grad.iter().map(Tensor::to_f64_vec).collect();
                let with_grad = grad.iter().flatten().zip(sgs().iter().flatten());
                match i {
                    I::MeanGsnr => json!(snr::mean_gsnr(b, with_grad)),
                    I::Cabs => json!(snr::cabs(b, self.lr, v.loss, with_grad)),
                    _ => json!(snr::early_stopping(b, with_grad)),
                }
            }
            I::GradHist1d => {
                let mut h = Histogram1d::cockpit();
                for p in v.batch_grad.iter().flatten() {
                    h.add_per_sample(p, b as f64);
                }
                h.to_json()
            }
            I::GradHist2d => {
                let mut h = Histogram2d::cockpit();
                for (p, theta) in v.batch_grad.iter().flatten().zip(flat_params(params)) {
                    h.add_per_sample(p, &theta, b as f64);
                }
                h.to_json()
            }
            I::HessTrace => json!(curvature::hess_trace(diag_h())),
            I::TicDiag => json!(curvature::tic_diag(b, with_diag())),
            I::TicTrace => json!(curvature::tic_trace(b, with_diag())),
            I::HessMaxEv => json!(curvature::hess_max_ev(
                self.objective,
                params,
                &batch()?,
                &mut self.max_ev
            )?),
            I::UpdateSize
            | I::Alpha
            | I::HessTopEv
            | I::GgnTopEv
            | I::GgnClassMeans
            | I::GradTopSpace
            | I::TopSpaceRotation
            | I::EfGgn
            | I::HessDensity => return Ok(None),
        }))
    }
}

/// Refuses instruments the network or optimizer cannot take.
fn check_model(objective: &Objective, on: &[Instrument], plain_sgd: bool) -> Result<(), Error> {
    for &i in on {
        if let Some(why) = unavailable(objective, i, plain_sgd) {
            let instead = match i.needs_plain_sgd() {
                true => format!("use --optimizer sgd, or leave {i} out"),
                false => "monitor loss, grad_norm, distance, update_size, hess_max_ev, hess_trace \
                          and the structure measurements instead"
                    .into(),
            };
            return Err(Error::Invalid(format!("--monitor {i}: {why}; {instead}")));
        }
    }
    Ok(())
}

/// Why `objective`'s training (with plain SGD or not) cannot track `i`,
/// if it cannot: what `--monitor` and `--switch-when` refuse.
///
/// ```
/// use secondo::monitor::{unavailable, Instrument};
/// use secondo::{Objective, ObjectiveConfig};
/// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(4,3),dropout(0.5),linear(3,2)".into(), input_shape: vec![4], ..Default::default() }).unwrap();
/// assert!(unavailable(&obj, Instrument::MeanGsnr, false).unwrap().contains("batch norm or dropout"));
/// assert!(unavailable(&obj, Instrument::GradNorm, false).is_none());
/// ```
pub fn unavailable(objective: &Objective, i: Instrument, plain_sgd: bool) -> Option<String> {
    if i.needs_plain_sgd() && !plain_sgd {
        return Some(
            "defined for SGD without momentum or weight decay (its formula takes the step as −lr·g)"
                .into(),
        );
    }
    if i.is_per_sample() && instrument::samples_coupled(objective) {
        return Some(
            "per-sample instruments need a network without batch norm or dropout (in training \
             they couple or mask the samples)"
                .into(),
        );
    }
    None
}

/// `θ − reference` per parameter, in the parameters' dtype.
fn differences(params: &ParamStore, reference: &ParamStore) -> Result<Vec<Tensor>, Error> {
    params
        .iter()
        .zip(reference.iter())
        .map(|((name, t), (_, r))| {
            BinaryOp::Sub
                .apply(t.clone(), r.clone())
                .map_err(|e| Error::Invalid(format!("the step of parameter '{name}': {e}")))
        })
        .collect()
}

fn flat_params(params: &ParamStore) -> Vec<Vec<f64>> {
    params.iter().map(|(_, t)| t.to_f64_vec()).collect()
}
