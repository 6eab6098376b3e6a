use secondo_data::{Batch, BatchTargets};
use secondo_graph::{Builder, Executable, Feeds};
use secondo_nn::spec::ModelSpec;
use secondo_nn::{DropoutMask, Loss, LossKind, Mode, Network, ParamStore, Reduction};
use secondo_tensor::{DType, Tensor};

use crate::CurvatureError as Error;

/// Name of the input node holding a batch of samples.
pub const INPUT: &str = "x";
/// Name of the input node holding a batch of targets.
pub const TARGET: &str = "y";

/// What an [`Objective`] is made of, as plain values (e.g. from the command line).
///
/// ```
/// let c = secondo_curvature::ObjectiveConfig::default();
/// assert_eq!(c.loss, "cross_entropy");
/// ```
#[derive(Debug, Clone)]
pub struct ObjectiveConfig {
    /// Model spec string.
    pub spec: String,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Loss name (`cross_entropy`, `mse`, `bce_with_logits`).
    pub loss: String,
    /// Reduction over samples.
    pub reduction: Reduction,
    /// Element type of every computation.
    pub dtype: DType,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            spec: String::new(),
            input_shape: Vec::new(),
            loss: "cross_entropy".into(),
            reduction: Reduction::Mean,
            dtype: DType::F32,
        }
    }
}

/// A network and a loss in one element type: the function whose derivatives
/// secondo computes.
///
/// ```
/// use secondo_curvature::{Objective, ObjectiveConfig};
/// use secondo_nn::ParamStore;
/// let obj = Objective::from_config(&ObjectiveConfig {
///     spec: "linear(3,2)".into(),
///     input_shape: vec![3],
///     ..ObjectiveConfig::default()
/// })
/// .unwrap();
/// let params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
/// assert_eq!(params.numel(), 8);
/// ```
#[derive(Debug, Clone)]
pub struct Objective {
    /// The network.
    pub network: Network,
    /// The loss.
    pub loss: Loss,
    /// Element type.
    pub dtype: DType,
    /// How batch norms normalize in the curvature operators: with the
    /// running statistics ([`Mode::Eval`], the default) or with the batch's
    /// ([`Mode::BatchStatistics`], `--batchnorm train`).
    pub batchnorm: Mode,
}

/// A batch norm's statistics on one training batch.
#[derive(Debug, Clone)]
pub struct BatchStatistics {
    /// The layer's state_dict path.
    pub layer: String,
    /// Per-channel mean.
    pub mean: Tensor,
    /// Per-channel unbiased variance.
    pub var: Tensor,
}

/// What one evaluation of a [`GradientProgram`] returns.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The reduced loss.
    pub loss: f64,
    /// The network's outputs `[N, ...]`.
    pub output: Tensor,
    /// Gradients in parameter order (empty for forward-only programs).
    pub grads: Vec<Tensor>,
    /// Batch norms' batch statistics (training programs only).
    pub stats: Vec<BatchStatistics>,
}

/// A compiled graph computing the loss, the outputs and (optionally) the
/// gradient for batches of one size.
#[derive(Debug, Clone)]
pub struct GradientProgram {
    exe: Executable,
    batch_size: usize,
    /// The batch norms whose statistics follow the gradients in the outputs.
    stats: Vec<String>,
    masks: Vec<DropoutMask>,
}

impl Objective {
    /// Parses the spec and loss and checks that they fit the input shape.
    ///
    /// ```
    /// use secondo_curvature::{Objective, ObjectiveConfig};
    /// let bad = ObjectiveConfig { spec: "linear(3,2)".into(), input_shape: vec![3], loss: "hinge".into(), ..Default::default() };
    /// assert!(Objective::from_config(&bad).is_err());
    /// ```
    pub fn from_config(c: &ObjectiveConfig) -> Result<Objective, Error> {
        let spec: ModelSpec = c.spec.parse()?;
        let kind: LossKind = c.loss.parse()?;
        let network = Network::new(spec, &c.input_shape)?;
        let out = network.output_shape();
        if out.len() != 1 {
            return Err(Error::Invalid(format!(
                "the network's per-sample output must be a vector for a loss, got shape {out:?}"
            )));
        }
        Ok(Objective {
            network,
            loss: Loss::new(kind, c.reduction),
            dtype: c.dtype,
            batchnorm: Mode::Eval,
        })
    }

    /// The objective with batch norms in the curvature operators normalizing
    /// by `mode` ([`Mode::Eval`] or [`Mode::BatchStatistics`]; dropout is
    /// never on in a curvature operator).
    ///
    /// ```
    /// use secondo_curvature::{Objective, ObjectiveConfig};
    /// use secondo_nn::Mode;
    /// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(3,2)".into(), input_shape: vec![3], ..Default::default() }).unwrap();
    /// assert!(obj.clone().with_batchnorm(Mode::BatchStatistics).is_ok());
    /// assert!(obj.with_batchnorm(Mode::Train).is_err());
    /// ```
    pub fn with_batchnorm(mut self, mode: Mode) -> Result<Objective, Error> {
        if mode == Mode::Train {
            return Err(Error::Invalid(
                "curvature operators take batch norms in eval or batch-statistics mode, not with dropout on"
                    .into(),
            ));
        }
        self.batchnorm = mode;
        Ok(self)
    }

    /// Whether the network has a batch norm.
    pub fn has_batchnorm(&self) -> bool {
        !self.network.spec().buffers().is_empty()
    }

    /// The number of network outputs per sample.
    fn width(&self) -> usize {
        self.network.output_shape()[0]
    }

    /// Checks that a dataset's targets fit the loss and the network's outputs.
    ///
    /// ```
    /// use secondo_curvature::{Objective, ObjectiveConfig};
    /// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,3)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
    /// assert!(obj.check_targets(&secondo_data::digits().y).is_err());
    /// let y = secondo_data::Targets::Classes { labels: vec![0, 2, 7, 1], num_classes: 8 };
    /// let err = obj.check_targets(&y).unwrap_err().to_string();
    /// assert!(err.contains("label 7 of sample 2"), "{err}");
    /// ```
    pub fn check_targets(&self, y: &secondo_data::Targets) -> Result<(), Error> {
        let width = self.width();
        match (self.loss.kind, y) {
            (
                LossKind::CrossEntropy,
                secondo_data::Targets::Classes {
                    labels,
                    num_classes,
                },
            ) if *num_classes > width => {
                let (sample, label) = labels
                    .iter()
                    .enumerate()
                    .find(|(_, &l)| l as usize >= width)
                    .map_or((0, *num_classes as i64 - 1), |(i, &l)| (i, l));
                return Err(Error::Invalid(format!(
                    "label {label} of sample {sample} is not one of the network's {width} classes \
                     (the data has {num_classes})"
                )));
            }
            (LossKind::CrossEntropy, secondo_data::Targets::Classes { .. }) => {}
            (LossKind::CrossEntropy, _) => {
                return Err(Error::Invalid(
                    "cross_entropy needs integer class labels in 'y'".into(),
                ))
            }
            (_, secondo_data::Targets::Values { width: w, .. }) if *w != width => {
                return Err(Error::Invalid(format!(
                    "the targets have {w} values per sample but the network has {width} outputs"
                )))
            }
            (_, secondo_data::Targets::Classes { .. }) => {
                return Err(Error::Invalid(format!(
                    "{} needs float targets in 'y', got class labels",
                    self.loss.kind
                )))
            }
            _ => {}
        }
        Ok(())
    }

    /// The input and target tensors of a batch.
    ///
    /// ```
    /// use secondo_curvature::{Objective, ObjectiveConfig};
    /// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
    /// let digits = secondo_data::digits();
    /// let batch = digits.batches(5).unwrap().next().unwrap();
    /// let (x, y) = obj.batch_tensors(&batch).unwrap();
    /// assert_eq!((x.shape(), y.shape()), (&[5, 64][..], &[5][..]));
    /// ```
    pub fn batch_tensors(&self, batch: &Batch) -> Result<(Tensor, Tensor), Error> {
        let n = batch.len();
        let mut shape = vec![n];
        shape.extend_from_slice(self.network.input_shape());
        let x = Tensor::from_f64(shape, batch.x, self.dtype)
            .map_err(|e| Error::Invalid(format!("inputs: {e}")))?;
        let y = match batch.y {
            BatchTargets::Classes { labels, .. } => {
                let v: Vec<f64> = labels.iter().map(|&l| l as f64).collect();
                Tensor::from_f64(vec![n], &v, self.dtype)
            }
            BatchTargets::Values { values, width } => {
                Tensor::from_f64(vec![n, width], values, self.dtype)
            }
        }
        .map_err(|e| Error::Invalid(format!("targets: {e}")))?;
        Ok((x, y))
    }

    /// Compiles the loss (and its gradient when `with_grad`) for batches of `batch_size`.
    ///
    /// ```
    /// use secondo_curvature::{Objective, ObjectiveConfig};
    /// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
    /// let program = obj.program(8, true).unwrap();
    /// assert_eq!(program.batch_size(), 8);
    /// ```
    pub fn program(&self, batch_size: usize, with_grad: bool) -> Result<GradientProgram, Error> {
        self.compile_program(batch_size, with_grad, Mode::Eval)
    }

    /// The loss (without its gradient) of the function the curvature
    /// operators see: batch statistics with `--batchnorm train`
    /// ([`Objective::batchnorm`]), running statistics otherwise; what
    /// Monte-Carlo targets are drawn from.
    ///
    /// ```
    /// use secondo_curvature::{Objective, ObjectiveConfig};
    /// use secondo_nn::Mode;
    /// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10),batchnorm1d(10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
    /// assert!(obj.with_batchnorm(Mode::BatchStatistics).unwrap().curvature_program(1).is_err());
    /// ```
    pub fn curvature_program(&self, batch_size: usize) -> Result<GradientProgram, Error> {
        self.compile_program(batch_size, false, self.batchnorm)
    }

    /// The loss and its gradient in training mode (batch statistics, dropout
    /// masks to feed) for batches of `batch_size`, with each batch norm's
    /// batch statistics among the outputs.
    ///
    /// ```
    /// use secondo_curvature::{Objective, ObjectiveConfig};
    /// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10),batchnorm1d(10),dropout(0.5)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
    /// let program = obj.training_program(8).unwrap();
    /// assert_eq!(program.masks()[0].name, "2.dropout_mask");
    /// assert!(obj.training_program(1).is_err()); // one value per channel
    /// ```
    pub fn training_program(&self, batch_size: usize) -> Result<GradientProgram, Error> {
        self.compile_program(batch_size, true, Mode::Train)
    }

    fn compile_program(
        &self,
        batch_size: usize,
        with_grad: bool,
        mode: Mode,
    ) -> Result<GradientProgram, Error> {
        let b = Builder::new(self.dtype);
        let mut shape = vec![batch_size];
        shape.extend_from_slice(self.network.input_shape());
        let x = b.input(INPUT, &shape);
        let out_shape = [batch_size, self.width()];
        let y = b.input(TARGET, &self.loss.target_shape(&out_shape));
        let params = self.network.param_vars(&b);
        let forward = self.network.forward_with(x, &params, mode)?;
        let loss = self.loss.build(forward.output, y)?;
        let mut outputs = vec![loss.id(), forward.output.id()];
        if with_grad {
            outputs.extend(b.grad(loss, &params)?.iter().map(|g| g.id()));
        }
        for s in &forward.stats {
            if s.count == 1 {
                return Err(Error::Invalid(format!(
                    "layer {}: a batch norm in training needs more than one value per channel, \
                     and a batch of {batch_size} gives one (choose a --batch-size that leaves no such batch)",
                    s.layer
                )));
            }
            outputs.extend([s.mean.id(), s.var.id()]);
        }
        let exe = Executable::compile(&b.finish()?, &outputs)?;
        Ok(GradientProgram {
            exe,
            batch_size,
            stats: forward.stats.into_iter().map(|s| s.layer).collect(),
            masks: forward.masks,
        })
    }
}

impl GradientProgram {
    /// The batch size the program was compiled for.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The compiled graph (for inspection).
    pub fn executable(&self) -> &Executable {
        &self.exe
    }

    /// Runs the program on one batch.
    ///
    /// ```
    /// use secondo_curvature::{Objective, ObjectiveConfig};
    /// use secondo_nn::ParamStore;
    /// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
    /// let params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
    /// let digits = secondo_data::digits();
    /// let batch = digits.batches(8).unwrap().next().unwrap();
    /// let (x, y) = obj.batch_tensors(&batch).unwrap();
    /// let out = obj.program(8, true).unwrap().run(&params, x, y).unwrap();
    /// assert_eq!(out.grads.len(), 2);
    /// assert!(out.loss.is_finite());
    /// ```
    pub fn run(&self, params: &ParamStore, x: Tensor, y: Tensor) -> Result<StepOutput, Error> {
        self.run_with_masks(params, x, y, Vec::new())
    }

    /// The dropout masks a training program needs fed.
    pub fn masks(&self) -> &[DropoutMask] {
        &self.masks
    }

    /// [`GradientProgram::run`] with the dropout masks (name, 0/1 tensor).
    pub fn run_with_masks(
        &self,
        params: &ParamStore,
        x: Tensor,
        y: Tensor,
        masks: Vec<(String, Tensor)>,
    ) -> Result<StepOutput, Error> {
        let mut feeds = batch_feeds(params, &x, &y);
        for (name, t) in masks {
            feeds.insert(&name, t);
        }
        let mut out = self.exe.run(&feeds)?;
        let tail = out.split_off(out.len() - 2 * self.stats.len());
        let mut out = out.into_iter();
        let loss = out.next().map(|t| t.item()).unwrap_or(f64::NAN);
        let output = out
            .next()
            .ok_or_else(|| Error::Invalid("no output".into()))?;
        let stats = self
            .stats
            .iter()
            .zip(tail.chunks(2))
            .map(|(layer, mv)| BatchStatistics {
                layer: layer.clone(),
                mean: mv[0].clone(),
                var: mv[1].clone(),
            })
            .collect();
        Ok(StepOutput {
            loss,
            output,
            grads: out.collect(),
            stats,
        })
    }
}

/// The feeds of a batch for the programs built from an [`Objective`]: every
/// parameter and buffer under its name, the inputs as [`INPUT`] and the targets as
/// [`TARGET`].
///
/// ```
/// use secondo_curvature::{batch_feeds, INPUT};
/// use secondo_nn::{spec::ModelSpec, ParamStore};
/// use secondo_tensor::{DType, Tensor};
/// let spec: ModelSpec = "linear(2,1)".parse().unwrap();
/// let params = ParamStore::init(&spec, 0, DType::F32);
/// let x = Tensor::zeros(vec![3, 2], DType::F32);
/// let feeds = batch_feeds(&params, &x, &Tensor::zeros(vec![3, 1], DType::F32));
/// assert!(feeds.get("0.weight").is_some() && feeds.get(INPUT).is_some());
/// ```
pub fn batch_feeds(params: &ParamStore, x: &Tensor, y: &Tensor) -> Feeds {
    let mut feeds = Feeds::new();
    for (name, t) in params.iter().chain(params.buffers()) {
        feeds.insert(name, t.clone());
    }
    feeds.insert(INPUT, x.clone());
    feeds.insert(TARGET, y.clone());
    feeds
}
