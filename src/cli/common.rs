//! Pieces shared by the subcommands: data sources, models, weights.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use secondo::{Objective, ObjectiveConfig};
use secondo_data::{Dataset, Targets};
use secondo_nn::{ParamStore, Reduction};
use secondo_tensor::DType;

/// The model, data and loss options `quantities` and `spectrum` share.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Model spec, e.g. "linear(784,256),relu,linear(256,10)".
    #[arg(long)]
    pub model: String,
    /// Weights (safetensors, PyTorch names); absent: PyTorch's default init with --seed.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Data: a safetensors file with `x` and `y`, IDX files `IMAGES,LABELS`, or `digits`.
    #[arg(long)]
    pub data: String,
    /// Loss: cross_entropy, mse or bce_with_logits.
    #[arg(long, default_value = "cross_entropy")]
    pub loss: String,
    /// Reduction of the loss over samples: mean or sum.
    #[arg(long, default_value = "mean")]
    pub reduction: String,
    /// Seed for initialisation and every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Element type: f32 or f64.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    /// Loads the data, builds the objective and loads or initialises the weights.
    pub fn load(&self) -> anyhow::Result<(Dataset, Objective, ParamStore)> {
        let dtype = parse_dtype(&self.dtype)?;
        let data = load_data(&self.data)?;
        let objective = objective(&self.model, &data, &self.loss, &self.reduction, dtype)?;
        let params = weights(&objective, self.weights.as_ref(), self.seed)?;
        Ok((data, objective, params))
    }
}

/// Hidden width of the default model built for a dataset.
const DEFAULT_HIDDEN: usize = 256;

/// Loads `digits` (the embedded dataset, pixels scaled to [0, 1]), a pair of
/// MNIST-format IDX files `IMAGES,LABELS` (raw or gzip), or a safetensors data file.
pub fn load_data(source: &str) -> anyhow::Result<Dataset> {
    if source == "digits" {
        let mut d = secondo_data::digits();
        d.x.iter_mut().for_each(|v| *v /= 16.0);
        return Ok(d);
    }
    if let Some((images, labels)) = source.split_once(',') {
        return Ok(secondo_data::load_idx_pair(images, labels)?);
    }
    let path = Path::new(source);
    Ok(secondo_data::load_safetensors(path)?)
}

/// The default model for a dataset: one hidden ReLU layer.
pub fn default_model(data: &Dataset) -> String {
    let inputs: usize = data.sample_shape.iter().product();
    let outputs = match &data.y {
        Targets::Classes { num_classes, .. } => *num_classes,
        Targets::Values { width, .. } => *width,
    };
    let flatten = if data.sample_shape.len() > 1 {
        "flatten,"
    } else {
        ""
    };
    format!("{flatten}linear({inputs},{DEFAULT_HIDDEN}),relu,linear({DEFAULT_HIDDEN},{outputs})")
}

/// Parses `f32`/`f64`.
pub fn parse_dtype(s: &str) -> anyhow::Result<DType> {
    s.parse::<DType>().map_err(anyhow::Error::msg)
}

/// Builds the objective for a model on a dataset.
pub fn objective(
    spec: &str,
    data: &Dataset,
    loss: &str,
    reduction: &str,
    dtype: DType,
) -> anyhow::Result<Objective> {
    let reduction: Reduction = reduction.parse()?;
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: spec.to_string(),
        input_shape: data.sample_shape.clone(),
        loss: loss.to_string(),
        reduction,
        dtype,
    })?;
    objective
        .check_targets(&data.y)
        .with_context(|| format!("data '{}'", data.name))?;
    Ok(objective)
}

/// Loads weights from a file, or initialises them like PyTorch with `seed`.
pub fn weights(
    objective: &Objective,
    path: Option<&PathBuf>,
    seed: u64,
) -> anyhow::Result<ParamStore> {
    match path {
        Some(p) => Ok(ParamStore::load(
            p,
            objective.network.spec(),
            objective.dtype,
        )?),
        None => Ok(ParamStore::init(
            objective.network.spec(),
            seed,
            objective.dtype,
        )),
    }
}

/// Refuses an output path whose directory does not exist (before any work is done).
pub fn check_output(path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "{}: directory '{}' does not exist",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}
