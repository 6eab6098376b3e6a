use secondo_data::{Batch, BatchTargets};
use secondo_graph::{Builder, Executable, Feeds};
use secondo_nn::spec::ModelSpec;
use secondo_nn::{Loss, LossKind, Network, ParamStore, Reduction};
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
}

/// A compiled graph computing the loss, the outputs and (optionally) the
/// gradient for batches of one size.
#[derive(Debug, Clone)]
pub struct GradientProgram {
    exe: Executable,
    batch_size: usize,
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
        })
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
        let b = Builder::new(self.dtype);
        let mut shape = vec![batch_size];
        shape.extend_from_slice(self.network.input_shape());
        let x = b.input(INPUT, &shape);
        let out_shape = [batch_size, self.width()];
        let y = b.input(TARGET, &self.loss.target_shape(&out_shape));
        let params = self.network.param_vars(&b);
        let output = self.network.forward(x, &params)?;
        let loss = self.loss.build(output, y)?;
        let mut outputs = vec![loss.id(), output.id()];
        if with_grad {
            outputs.extend(b.grad(loss, &params)?.iter().map(|g| g.id()));
        }
        let exe = Executable::compile(&b.finish()?, &outputs)?;
        Ok(GradientProgram { exe, batch_size })
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
        let mut out = self.exe.run(&batch_feeds(params, &x, &y))?.into_iter();
        let loss = out.next().map(|t| t.item()).unwrap_or(f64::NAN);
        let output = out
            .next()
            .ok_or_else(|| Error::Invalid("no output".into()))?;
        Ok(StepOutput {
            loss,
            output,
            grads: out.collect(),
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
