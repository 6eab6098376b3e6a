//! Pieces shared by the subcommands: data sources, models, weights.

use std::path::PathBuf;

use anyhow::{bail, Context};
use secondo::output::Input;
use secondo::{Objective, ObjectiveConfig};
use secondo_data::{Dataset, Targets};
use secondo_nn::spec::ModelSpec;
use secondo_nn::{ParamStore, Reduction};
use secondo_tensor::memory::{bytes_of, ensure_fits};
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
    /// Data: a safetensors file with `x` and `y`, IDX files `IMAGES,LABELS`, CIFAR batches (a `.bin` file or a directory of them), or `digits` (built-in, pixels scaled to [0, 1]) or `wave` (built-in 1-D regression, 150 points).
    #[arg(long)]
    pub data: String,
    /// View each sample's features as this shape, e.g. 1,8,8 for the digits as images.
    #[arg(long, value_name = "C,H,W")]
    pub input_shape: Option<SampleShape>,
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
    /// Batch norms with their running statistics (eval) or the batch's
    /// (train: the batch couples the samples, as in curvlinops; curvature
    /// operators and spectra only).
    #[arg(long, value_enum, default_value_t = BatchNorm::Eval)]
    pub batchnorm: BatchNorm,
}

/// `--batchnorm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchNorm {
    /// Running statistics: every sample on its own.
    Eval,
    /// Batch statistics over each batch.
    Train,
}

impl ModelArgs {
    /// The files this command reads, for the check that no output replaces one.
    pub fn inputs(&self) -> anyhow::Result<Vec<Input>> {
        let mut inputs = DataSource::parse("--data", &self.data)?.inputs("--data")?;
        inputs.extend(weights_input(self.weights.as_ref()));
        Ok(inputs)
    }

    /// Loads the data, builds the objective and loads or initialises the weights.
    pub fn load(&self) -> anyhow::Result<(Dataset, Objective, ParamStore)> {
        let (data, objective) = self.load_objective()?;
        let params = weights(&objective, self.weights.as_ref(), self.seed)?;
        Ok((data, objective, params))
    }

    /// Loads the data and builds the objective, for weights found elsewhere.
    pub fn load_objective(&self) -> anyhow::Result<(Dataset, Objective)> {
        let dtype = parse_dtype(&self.dtype)?;
        let data = DataSource::parse("--data", &self.data)?.load()?;
        let data = shape_samples(
            data,
            self.input_shape.as_ref(),
            &self.model,
            "--data",
            &self.data,
        )?;
        let mode = match self.batchnorm {
            BatchNorm::Eval => secondo_nn::Mode::Eval,
            BatchNorm::Train => secondo_nn::Mode::BatchStatistics,
        };
        let objective = objective(&self.model, &data, &self.loss, &self.reduction, dtype)?
            .with_batchnorm(mode)?;
        check_targets(&objective, &data, "--data", &self.data)?;
        Ok((data, objective))
    }
}

/// The `--weights` file, when one is given, as an input.
pub fn weights_input(weights: Option<&PathBuf>) -> Option<Input> {
    weights.map(|w| Input {
        flag: "--weights",
        path: w.clone(),
    })
}

/// Where a `--data` (or `--test-data`) flag says the samples are.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// The embedded digits, pixels scaled to [0, 1].
    Digits,
    /// The built-in 1-D regression points ([`secondo_data::wave`]).
    Wave,
    /// A safetensors file with `x` and `y`.
    Safetensors(PathBuf),
    /// MNIST-format IDX files (raw or gzip).
    Idx {
        /// The images file.
        images: PathBuf,
        /// The labels file.
        labels: PathBuf,
    },
    /// A CIFAR-10 / CIFAR-100 binary batch file, or a directory whose
    /// training batches are read.
    Cifar(PathBuf),
}

impl DataSource {
    /// `digits`, `IMAGES,LABELS` (exactly two non-empty names), a CIFAR
    /// batch (a name ending in `.bin`, as all of the archives' do) or
    /// directory, or else a safetensors path.
    pub fn parse(flag: &str, text: &str) -> anyhow::Result<DataSource> {
        if text == "digits" {
            return Ok(DataSource::Digits);
        }
        if text == "wave" {
            return Ok(DataSource::Wave);
        }
        if !text.contains(',') {
            if text.is_empty() {
                bail!("{flag}: no file named");
            }
            let path = PathBuf::from(text);
            if text.ends_with(".bin") || path.is_dir() {
                return Ok(DataSource::Cifar(path));
            }
            return Ok(DataSource::Safetensors(path));
        }
        match text.split(',').collect::<Vec<_>>()[..] {
            [images, labels] if !images.is_empty() && !labels.is_empty() => Ok(DataSource::Idx {
                images: images.into(),
                labels: labels.into(),
            }),
            ref names => bail!(
                "{flag} '{text}': IDX data is two files IMAGES,LABELS, got {} name{} ({} empty)",
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                names.iter().filter(|n| n.is_empty()).count()
            ),
        }
    }

    /// The files read, under `flag` (a CIFAR directory's batches, listed now).
    pub fn inputs(&self, flag: &'static str) -> anyhow::Result<Vec<Input>> {
        let paths = match self {
            DataSource::Digits | DataSource::Wave => vec![],
            DataSource::Safetensors(p) => vec![p.clone()],
            DataSource::Idx { images, labels } => vec![images.clone(), labels.clone()],
            DataSource::Cifar(p) => secondo_data::cifar_files(p)?,
        };
        Ok(paths.into_iter().map(|path| Input { flag, path }).collect())
    }

    /// Loads the samples.
    pub fn load(&self) -> anyhow::Result<Dataset> {
        Ok(match self {
            DataSource::Digits => {
                let mut d = secondo_data::digits();
                d.x.iter_mut().for_each(|v| *v /= 16.0);
                d
            }
            DataSource::Wave => secondo_data::wave(),
            DataSource::Safetensors(p) => secondo_data::load_safetensors(p)?,
            DataSource::Idx { images, labels } => secondo_data::load_idx_pair(images, labels)?,
            DataSource::Cifar(p) => secondo_data::load_cifar(p)?,
        })
    }
}

/// A per-sample shape given on the command line (`--input-shape C,H,W`):
/// sizes of at least 1, separated by commas.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SampleShape(pub Vec<usize>);

impl std::str::FromStr for SampleShape {
    type Err = String;

    fn from_str(text: &str) -> Result<SampleShape, String> {
        text.split(',')
            .map(|size| match size.trim().parse::<usize>() {
                Ok(0) => Err("sizes must be at least 1".to_string()),
                Ok(n) => Ok(n),
                Err(_) => Err(format!("'{size}' is not a size (expected e.g. 1,8,8)")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(SampleShape)
    }
}

/// The samples shaped for the model `spec`. With `--input-shape` they are
/// viewed as that shape, which must hold as many values. Without it they
/// stay as loaded, unless the spec cannot take that shape and its first
/// layer asks for flat features of the samples' size: then they are viewed
/// as flat (so `linear(784,..)` takes IDX images `[1, 28, 28]` and
/// `linear(3072,..)` CIFAR's `[3, 32, 32]`, which a layer acting on the last
/// axis would refuse). Samples with fewer than three axes that a spec
/// starting with a convolution or pooling refuses get the advice to give
/// `--input-shape`; any other mismatch is left to the model to report.
pub fn shape_samples(
    data: Dataset,
    input_shape: Option<&SampleShape>,
    spec: &str,
    flag: &str,
    source: &str,
) -> anyhow::Result<Dataset> {
    if let Some(SampleShape(shape)) = input_shape {
        let values = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if values != Some(data.num_features()) {
            let values = values.map_or("too many".to_string(), |v| v.to_string());
            bail!(
                "--input-shape {} holds {values} values per sample, but {flag} {source} has samples of shape {:?} ({} values)",
                join(shape),
                data.sample_shape,
                data.num_features()
            );
        }
        return Ok(data.with_sample_shape(shape.clone())?);
    }
    // A spec that does not parse is reported when the model is built.
    let Ok(spec) = ModelSpec::parse(spec) else {
        return Ok(data);
    };
    let Err(refused) = spec.output_shapes(&data.sample_shape) else {
        return Ok(data);
    };
    match spec.input_shape_hint() {
        Some(flat) if flat == [data.num_features()] => Ok(data.with_sample_shape(flat)?),
        None if data.sample_shape.len() < 3 => bail!(
            "{flag} {source} has samples of shape {:?}, not images [C, H, W]; \
             give --input-shape C,H,W to view them as images ({refused})",
            data.sample_shape
        ),
        _ => Ok(data),
    }
}

/// Sizes as the command line writes them: `1,8,8`.
fn join(shape: &[usize]) -> String {
    let sizes: Vec<String> = shape.iter().map(usize::to_string).collect();
    sizes.join(",")
}

/// Parses a count that must be at least 1 (`--batch`, `--epochs`, ...).
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Hidden width of the default model built for a dataset.
const DEFAULT_HIDDEN: usize = 256;

/// The default model for samples of `sample_shape` (as loaded, or the
/// `--input-shape` they are viewed as) and these targets: one hidden ReLU
/// layer, after a `flatten` for samples with more than one axis.
pub fn default_model(sample_shape: &[usize], targets: &Targets) -> String {
    let inputs: usize = sample_shape.iter().product();
    let outputs = match targets {
        Targets::Classes { num_classes, .. } => *num_classes,
        Targets::Values { width, .. } => *width,
    };
    let flatten = if sample_shape.len() > 1 {
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

/// Builds the objective for a model on a dataset's samples.
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
    Ok(objective)
}

/// Refuses targets that do not fit the objective, naming the flag and the
/// file as the user gave them (the dataset's own name may differ).
pub fn check_targets(
    objective: &Objective,
    data: &Dataset,
    flag: &str,
    source: &str,
) -> anyhow::Result<()> {
    objective
        .check_targets(&data.y)
        .with_context(|| format!("{flag} {source}"))
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
        None => {
            let numel = objective.network.spec().num_parameters();
            // Drawn in f64, then converted to the model's dtype.
            let bytes = bytes_of(numel, 8 + objective.dtype.size_bytes());
            ensure_fits(format!("the {numel} parameters of --model"), bytes)?;
            Ok(ParamStore::init(
                objective.network.spec(),
                seed,
                objective.dtype,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idx_data_names_exactly_two_files() {
        assert_eq!(
            DataSource::parse("--data", "img,lab").unwrap(),
            DataSource::Idx {
                images: "img".into(),
                labels: "lab".into()
            }
        );
        assert_eq!(
            DataSource::parse("--data", "digits").unwrap(),
            DataSource::Digits
        );
        assert_eq!(
            DataSource::parse("--data", "wave").unwrap(),
            DataSource::Wave
        );
        let err = |t| DataSource::parse("--data", t).unwrap_err().to_string();
        assert_eq!(
            err("img,lab,lab"),
            "--data 'img,lab,lab': IDX data is two files IMAGES,LABELS, got 3 names (0 empty)"
        );
        assert_eq!(
            err("img,"),
            "--data 'img,': IDX data is two files IMAGES,LABELS, got 2 names (1 empty)"
        );
        assert_eq!(err(""), "--data: no file named");
    }

    #[test]
    fn bin_files_and_directories_are_cifar() {
        let parse = |t| DataSource::parse("--data", t).unwrap();
        assert_eq!(
            parse("cifar/data_batch_1.bin"),
            DataSource::Cifar("cifar/data_batch_1.bin".into())
        );
        let dir = std::env::temp_dir();
        let dir = dir.to_str().unwrap();
        assert_eq!(parse(dir), DataSource::Cifar(dir.into()));
        assert_eq!(
            parse("d.safetensors"),
            DataSource::Safetensors("d.safetensors".into())
        );
    }

    #[test]
    fn input_shapes_are_sizes_of_at_least_one() {
        let shape = |t: &str| t.parse::<SampleShape>();
        assert_eq!(shape("1,8,8"), Ok(SampleShape(vec![1, 8, 8])));
        assert_eq!(shape(" 64 "), Ok(SampleShape(vec![64])));
        assert_eq!(shape("1,0").unwrap_err(), "sizes must be at least 1");
        assert_eq!(
            shape("1,,8").unwrap_err(),
            "'' is not a size (expected e.g. 1,8,8)"
        );
    }
}
