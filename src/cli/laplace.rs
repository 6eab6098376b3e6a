//! `secondo laplace` (fit a Laplace approximation, tune it, predict and
//! score) and `secondo predict` (apply a saved posterior to new data).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};
use secondo::laplace::marglik::{grid, grid_search, optimize_marglik, MarglikOptions};
use secondo::laplace::metrics;
use secondo::laplace::predictive::{predict, sample_weights, Predictions, Predictive};
use secondo::laplace::{
    fit, load_with_network, save_with_network, FitOptions, FittedNetwork, Laplace, LearnedPrior,
    Likelihood, PriorShape,
};
use secondo::output::{Input, Output};
use secondo::plot::{Chart, Layer};
use secondo::Objective;
use secondo_data::{Dataset, Targets};
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use super::common::{
    at_least_one, check_targets, shape_samples, weights, BatchNorm, DataSource, ModelArgs,
    SampleShape,
};

const POSTERIOR: &str = "laplace.safetensors";
const PREDICTIONS: &str = "predictions.safetensors";
const JSON: &str = "laplace.json";
const RELIABILITY: &str = "reliability.svg";
const BAND: &str = "band.svg";
const SAMPLES: &str = "samples.safetensors";

#[derive(Debug, Args)]
pub struct LaplaceArgs {
    #[command(flatten)]
    common: ModelArgs,
    /// Data the predictions and metrics are computed on (default: --test-fraction of --data, else --data).
    #[arg(long)]
    test_data: Option<String>,
    /// Without --test-data: hold out this fraction of --data for testing,
    /// split with --seed as `secondo train` splits it.
    #[arg(long)]
    test_fraction: Option<f64>,
    /// Out-of-distribution data: reports the AUROC of predictive entropy against the test data.
    #[arg(long)]
    ood_data: Option<String>,
    /// Held-out data for --prior-precision optimize:cv.
    #[arg(long)]
    val_data: Option<String>,
    /// Weights covered: all, last-layer, subnetwork:PATTERN (`*` any run, e.g. subnetwork:2.*) or subnetwork:variance:K (the K weights of largest diagonal-Laplace variance; --structure full).
    #[arg(long, default_value = "all")]
    subset: String,
    /// Posterior structure: full, kron, diag or lowrank:K.
    #[arg(long, default_value = "kron")]
    structure: String,
    /// Likelihood: classification (needs --loss cross_entropy) or regression (--loss mse).
    #[arg(long, default_value = "classification")]
    likelihood: String,
    /// Curvature: ggn or ef (empirical Fisher; full, diag and lowrank).
    #[arg(long, default_value = "ggn")]
    curvature: String,
    /// Prior precision X > 0, optimize (= optimize:marglik), optimize:cv, or file:W.marglik.json (or file:W.prior.safetensors): the prior learned by `secondo train --online-marglik` (scalar, per layer or diagonal, matched to the parameters by name), with its σ and likelihood temperature.
    #[arg(long, default_value = "1")]
    prior_precision: String,
    /// How many prior precisions: scalar, layer (one per parameter tensor) or diagonal [default: scalar; with --prior-precision file: the file's].
    #[arg(long)]
    prior_shape: Option<String>,
    /// Observation noise σ > 0 (regression; optimized with the prior by optimize:marglik; with --prior-precision file: the file's).
    #[arg(long)]
    sigma: Option<f64>,
    /// Likelihood temperature T > 0, as laplace-torch's Laplace(temperature=T): the data term of the evidence and its curvature over T (posterior precision H/(σ²T) + δ; T < 1 concentrates the posterior), kept in laplace.safetensors for secondo predict [default: 1; with --prior-precision file: the file's].
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    temperature: Option<f64>,
    /// Predictive: glm-probit, glm-bridge, glm-mc:S or nn:S.
    #[arg(long, default_value = "glm-probit")]
    predictive: String,
    /// Adam steps of optimize:marglik.
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    marglik_steps: usize,
    /// Also write S draws of the covered weights from the posterior to DIR/samples.safetensors.
    #[arg(long, value_parser = at_least_one)]
    samples: Option<usize>,
    /// Samples per batch when passing over the data.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    batch: usize,
    /// Output directory for laplace.safetensors, predictions.safetensors, laplace.json and the SVG charts.
    #[arg(long)]
    out: PathBuf,
}

/// How the prior precision is chosen.
#[derive(Debug, Clone, PartialEq)]
enum Tuning {
    Fixed(f64),
    Marglik,
    CrossValidation,
    /// A learned prior: the file named (a `.marglik.json` or the prior
    /// file itself) and the prior file it resolves to.
    Learned {
        given: PathBuf,
        prior: PathBuf,
    },
}

fn parse_tuning(text: &str) -> anyhow::Result<Tuning> {
    Ok(match text {
        "optimize" | "optimize:marglik" => Tuning::Marglik,
        "optimize:cv" => Tuning::CrossValidation,
        _ if text.starts_with("file:") => {
            let given = PathBuf::from(&text["file:".len()..]);
            let prior = learned_prior_path(&given)
                .with_context(|| format!("--prior-precision file:{}", given.display()))?;
            Tuning::Learned { given, prior }
        }
        _ => match text.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Tuning::Fixed(x),
            _ => bail!(
                "--prior-precision '{text}': expected a positive number, optimize, \
                 optimize:marglik, optimize:cv or file:PATH"
            ),
        },
    })
}

/// The prior file `given` names: itself, or for a `.json` (the
/// `W.marglik.json` of `secondo train --online-marglik`) the file its
/// `prior_file` names, beside it.
fn learned_prior_path(given: &Path) -> anyhow::Result<PathBuf> {
    if given.extension().is_none_or(|e| e != "json") {
        return Ok(given.to_path_buf());
    }
    let text = std::fs::read_to_string(given).context("cannot read it")?;
    let json: serde_json::Value = serde_json::from_str(&text).context("not valid JSON")?;
    let Some(name) = json.get("prior_file").and_then(|v| v.as_str()) else {
        bail!("no \"prior_file\" (written by secondo train --online-marglik)");
    };
    Ok(given.parent().unwrap_or(Path::new("")).join(name))
}

/// The options of `laplace`, checked before any data is read.
struct Parsed {
    fit: FitOptions,
    tuning: Tuning,
    predictive: Predictive,
}

fn parse(a: &LaplaceArgs) -> anyhow::Result<Parsed> {
    let likelihood: Likelihood = a.likelihood.parse()?;
    let sigma = match (a.sigma, likelihood) {
        (Some(_), Likelihood::Classification) => {
            bail!("--sigma is the observation noise of --likelihood regression")
        }
        (Some(s), _) if !(s.is_finite() && s > 0.0) => {
            bail!("--sigma must be positive and finite, got {s}")
        }
        (s, _) => s.unwrap_or(1.0),
    };
    let tuning = parse_tuning(&a.prior_precision)?;
    if tuning == Tuning::CrossValidation && a.val_data.is_none() {
        bail!("--prior-precision optimize:cv needs held-out --val-data");
    }
    if let Tuning::Learned { given, .. } = &tuning {
        let given_flags = [
            ("--prior-shape", a.prior_shape.is_some()),
            ("--sigma", a.sigma.is_some()),
            ("--temperature", a.temperature.is_some()),
        ];
        if let Some((flag, _)) = given_flags.iter().find(|(_, given)| *given) {
            bail!(
                "{flag}: --prior-precision file:{} gives the prior's shape, σ and temperature \
                 (it was learned at them)",
                given.display()
            );
        }
    }
    if let Some(f) = a.test_fraction {
        if a.test_data.is_some() || !(f > 0.0 && f < 1.0) {
            bail!("--test-fraction must be in (0, 1) and without --test-data, got {f}");
        }
    }
    Ok(Parsed {
        fit: FitOptions {
            subset: a.subset.parse()?,
            structure: a.structure.parse()?,
            likelihood,
            fisher: a.curvature.parse()?,
            prior_shape: a.prior_shape.as_deref().unwrap_or("scalar").parse()?,
            prior_precision: match tuning {
                Tuning::Fixed(x) => x,
                _ => 1.0,
            },
            sigma,
            temperature: a.temperature.unwrap_or(1.0),
            batch_size: a.batch,
            seed: a.common.seed,
        },
        tuning,
        predictive: a.predictive.parse()?,
    })
}

/// Loads an extra dataset given by `flag` shaped and checked like --data.
fn extra_data(
    flag: &str,
    text: &str,
    common: &ModelArgs,
    objective: &Objective,
) -> anyhow::Result<Dataset> {
    let data = DataSource::parse(flag, text)?.load()?;
    let data = shape_samples(data, common.input_shape.as_ref(), &common.model, flag, text)?;
    check_targets(objective, &data, flag, text)?;
    Ok(data)
}

/// The files of the optional data flags.
fn extra_inputs(flags: &[(&'static str, &Option<String>)]) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for (flag, text) in flags {
        if let Some(t) = text {
            inputs.extend(DataSource::parse(flag, t)?.inputs(flag)?);
        }
    }
    Ok(inputs)
}

pub fn run(a: LaplaceArgs) -> anyhow::Result<()> {
    let mut parsed = parse(&a)?;
    let mut inputs = a.common.inputs()?;
    if let Tuning::Learned { given, prior } = &parsed.tuning {
        for path in [given, prior] {
            inputs.push(Input {
                flag: "--prior-precision",
                path: path.clone(),
            });
        }
    }
    inputs.extend(extra_inputs(&[
        ("--test-data", &a.test_data),
        ("--ood-data", &a.ood_data),
        ("--val-data", &a.val_data),
    ])?);
    // Classification draws a reliability diagram, regression its predictive band.
    let chart = match parsed.fit.likelihood {
        Likelihood::Classification => RELIABILITY,
        Likelihood::Regression => BAND,
    };
    let mut files = vec![POSTERIOR, PREDICTIONS, JSON, chart];
    files.extend(a.samples.map(|_| SAMPLES));
    let out = Output::dir(&a.out, &files, "--out", &inputs)?;
    let (data, objective, params) = a.common.load()?;
    parsed
        .fit
        .likelihood
        .check_loss(objective.loss.kind)
        .context("--likelihood")?;
    let (train, test) = match (&a.test_data, a.test_fraction) {
        (Some(t), _) => (data, extra_data("--test-data", t, &a.common, &objective)?),
        (None, Some(f)) => data.split(f, a.common.seed)?,
        (None, None) => (data.clone(), data),
    };
    let ood = a
        .ood_data
        .as_deref()
        .map(|t| extra_data("--ood-data", t, &a.common, &objective))
        .transpose()?;
    let val = a
        .val_data
        .as_deref()
        .map(|t| extra_data("--val-data", t, &a.common, &objective))
        .transpose()?;
    let learned = match &parsed.tuning {
        Tuning::Learned { given, prior } => {
            let context = || format!("--prior-precision file:{}", given.display());
            let learned = LearnedPrior::load(prior, &params).with_context(context)?;
            check_learned(&learned, &parsed.fit).with_context(context)?;
            parsed.fit.prior_shape = learned.shape;
            parsed.fit.sigma = learned.sigma;
            parsed.fit.temperature = learned.temperature;
            Some(learned)
        }
        _ => None,
    };
    let start = std::time::Instant::now();
    let phase = spinner(format!(
        "fitting the {} posterior on {} samples",
        parsed.fit.structure,
        train.len()
    ));
    let mut la = fit(&objective, &params, &train, &parsed.fit)?;
    phase.set_message(format!("tuning the prior over {} weights", la.dim()));
    if let Some(learned) = &learned {
        la.prior = learned.prior_for(&la)?;
    }
    let fitted = start.elapsed().as_secs_f64();
    let seed = a.common.seed;
    let tuning = match (parsed.tuning, &val) {
        (Tuning::Marglik, _) => {
            let opts = MarglikOptions {
                steps: a.marglik_steps,
                ..MarglikOptions::default()
            };
            optimize_marglik(&mut la, &opts)?;
            serde_json::json!({"method": "marglik", "adam_steps": a.marglik_steps, "lr": opts.lr})
        }
        (Tuning::CrossValidation, Some(val)) => {
            let score = |la: &Laplace| {
                let p = predict(
                    &objective,
                    &params,
                    la,
                    val,
                    parsed.predictive,
                    seed,
                    a.batch,
                )?;
                Ok(score(&p, &val.y, la.sigma).laplace_nll)
            };
            let (best, nll) = grid_search(&mut la, &grid(), score)?;
            serde_json::json!({"method": "cv", "grid": grid(), "best": best, "val_nll": nll})
        }
        (Tuning::Learned { prior, .. }, _) => {
            serde_json::json!({"method": "file", "file": prior.display().to_string()})
        }
        _ => serde_json::json!({"method": "fixed"}),
    };
    let tuned = start.elapsed().as_secs_f64() - fitted;
    phase.set_message(format!("predicting {} samples", test.len()));
    let predictions = predict(
        &objective,
        &params,
        &la,
        &test,
        parsed.predictive,
        seed,
        a.batch,
    )?;
    let scores = score(&predictions, &test.y, la.sigma);
    let ood_auroc = match &ood {
        Some(o) => {
            let p = predict(
                &objective,
                &params,
                &la,
                o,
                parsed.predictive,
                seed,
                a.batch,
            )?;
            Some(entropy_auroc(&predictions, &p))
        }
        None => None,
    };
    let predicted = start.elapsed().as_secs_f64() - fitted - tuned;
    phase.finish_and_clear();
    let evidence = la.log_marginal_likelihood()?;
    let staged = out.stage()?;
    let network = FittedNetwork {
        spec: a.common.model.clone(),
        input_shape: objective.network.input_shape().to_vec(),
        weights: params
            .iter()
            .chain(params.buffers())
            .map(|(name, t)| (name.to_string(), t.clone()))
            .collect(),
    };
    save_with_network(&la, &network, &staged.path(POSTERIOR))?;
    write_predictions(&predictions, &staged.path(PREDICTIONS))?;
    if let Some(draws) = a.samples {
        let theta = sample_weights(&la, &la.posterior()?, draws, seed);
        let t = Tensor::from_vec(vec![draws, la.dim()], theta)?;
        secondo_nn::write_safetensors(&staged.path(SAMPLES), [("samples", &t)], &HashMap::new())?;
    }
    let summary = serde_json::json!({
        "model": a.common.model,
        "data": train.name,
        "train_samples": train.len(),
        "test_samples": test.len(),
        "subset": parsed.fit.subset.to_string(),
        "parameters": la.names,
        "weights": la.dim(),
        "structure": la.structure.to_string(),
        "likelihood": la.likelihood.to_string(),
        "curvature": a.curvature,
        "prior_shape": la.prior.shape.to_string(),
        "prior_precision": la.prior.values,
        "sigma": la.sigma,
        "temperature": la.temperature,
        "tuning": tuning,
        "log_marginal_likelihood": evidence,
        "predictive": parsed.predictive.to_string(),
        "metrics": scores.to_json(),
        "ood_auroc": ood_auroc.map(|(map, laplace)| serde_json::json!({"map": map, "laplace": laplace})),
    });
    std::fs::write(
        staged.path(JSON),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    let svg = match la.likelihood {
        Likelihood::Classification => reliability_svg(&predictions, &test.y),
        Likelihood::Regression => band_svg(&predictions, &test),
    };
    std::fs::write(staged.path(chart), svg)?;
    staged.commit()?;
    println!(
        "Laplace ({} {}, {} weights) of {} on {}: fit {fitted:.2} s, tuning {tuned:.2} s, \
         prediction {predicted:.2} s; log marginal likelihood {evidence:.4}",
        la.structure,
        parsed.fit.subset,
        la.dim(),
        a.common.model,
        train.name,
    );
    println!("{}", scores.line());
    if let Some((map, laplace)) = ood_auroc {
        println!("OOD AUROC of predictive entropy: MAP {map:.4}, Laplace {laplace:.4}");
    }
    println!("wrote {}", a.out.display());
    Ok(())
}

/// Refuses a learned prior of another likelihood, or a diagonal one for a
/// structure that takes none.
fn check_learned(learned: &LearnedPrior, fit: &FitOptions) -> anyhow::Result<()> {
    if learned.likelihood != fit.likelihood {
        bail!(
            "a prior learned for {} used with --likelihood {}",
            learned.likelihood,
            fit.likelihood
        );
    }
    if learned.shape == PriorShape::Diagonal && !fit.structure.takes_diagonal_prior() {
        bail!(
            "a diagonal prior (one precision per weight) needs --structure diag or full, \
             not {}",
            fit.structure
        );
    }
    Ok(())
}

/// The MAP network's and the Laplace predictive's scores side by side.
struct Scores {
    names: Vec<&'static str>,
    map: Vec<f64>,
    laplace: Vec<f64>,
    laplace_nll: f64,
}

impl Scores {
    fn to_json(&self) -> serde_json::Value {
        let side = |values: &[f64]| {
            self.names
                .iter()
                .zip(values)
                .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({"map": side(&self.map), "laplace": side(&self.laplace)})
    }

    fn line(&self) -> String {
        let parts: Vec<String> = self
            .names
            .iter()
            .zip(self.map.iter().zip(&self.laplace))
            .map(|(n, (m, l))| format!("{n} MAP {m:.4} / Laplace {l:.4}"))
            .collect();
        parts.join(", ")
    }
}

/// NLL, accuracy, ECE and Brier for classification; Gaussian NLL and RMSE
/// for regression (the MAP's predictive variance is σ²).
fn score(p: &Predictions, targets: &Targets, sigma: f64) -> Scores {
    match targets {
        Targets::Classes { labels, .. } => {
            let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
            let all = |probs: &[f64]| {
                vec![
                    metrics::nll(probs, &labels, p.c),
                    metrics::accuracy(probs, &labels, p.c),
                    metrics::ece(probs, &labels, p.c),
                    metrics::brier(probs, &labels, p.c),
                ]
            };
            let laplace = all(&p.mean);
            Scores {
                names: vec!["nll", "accuracy", "ece", "brier"],
                map: all(&p.map),
                laplace_nll: laplace[0],
                laplace,
            }
        }
        Targets::Values { values, .. } => {
            let map_var: Vec<f64> = vec![sigma * sigma; p.map.len()];
            let nll = metrics::gaussian_nll(&p.mean, &p.variance, values, p.c);
            Scores {
                names: vec!["nll", "rmse"],
                map: vec![
                    metrics::gaussian_nll(&p.map, &map_var, values, p.c),
                    metrics::rmse(&p.map, values),
                ],
                laplace: vec![nll, metrics::rmse(&p.mean, values)],
                laplace_nll: nll,
            }
        }
    }
}

/// The AUROC of predictive entropy separating `ood` from `test`: MAP's and Laplace's.
fn entropy_auroc(test: &Predictions, ood: &Predictions) -> (f64, f64) {
    let auroc = |a: &[f64], b: &[f64]| {
        metrics::auroc(&metrics::entropy(a, test.c), &metrics::entropy(b, test.c))
    };
    (auroc(&test.map, &ood.map), auroc(&test.mean, &ood.mean))
}

fn tensor(values: &[f64], p: &Predictions) -> Tensor {
    Tensor::from_vec(vec![p.n, p.c], values.to_vec()).expect("[N, C] values")
}

/// `map` and `mean` (probabilities or means) and, for regression, `variance`, each `[N, C]`.
fn write_predictions(p: &Predictions, path: &Path) -> anyhow::Result<()> {
    let mut tensors = vec![("map", tensor(&p.map, p)), ("mean", tensor(&p.mean, p))];
    if !p.variance.is_empty() {
        tensors.push(("variance", tensor(&p.variance, p)));
    }
    secondo_nn::write_safetensors(path, tensors.iter().map(|(n, t)| (*n, t)), &HashMap::new())?;
    Ok(())
}

/// Accuracy against confidence per bin of the top-class probability, MAP and
/// Laplace, with the diagonal of perfect calibration (empty for regression).
fn reliability_svg(p: &Predictions, targets: &Targets) -> String {
    let mut chart = Chart::new(480.0, 420.0, "confidence", "accuracy");
    chart.title = Some("reliability (15 bins)");
    let Targets::Classes { labels, .. } = targets else {
        return chart.to_svg();
    };
    let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let bins = |probs: &[f64]| -> (Vec<f64>, Vec<f64>) {
        metrics::reliability(probs, &labels, p.c)
            .into_iter()
            .filter(|b| b.3 > 0)
            .map(|(_, conf, acc, _)| (conf, acc))
            .unzip()
    };
    let (map, laplace) = (bins(&p.map), bins(&p.mean));
    chart.layers.push(Layer::Line {
        x: &[0.0, 1.0],
        y: &[0.0, 1.0],
        color: "#999999",
        label: None,
    });
    chart.layers.push(Layer::Line {
        x: &map.0,
        y: &map.1,
        color: "#d62728",
        label: Some("MAP"),
    });
    chart.layers.push(Layer::Line {
        x: &laplace.0,
        y: &laplace.1,
        color: "#1f77b4",
        label: Some("Laplace"),
    });
    chart.to_svg()
}

/// Regression: the test points, the predictive mean and a band of two
/// predictive standard deviations of the first output against the first
/// input feature (the whole input for 1-D regression).
fn band_svg(p: &Predictions, data: &Dataset) -> String {
    let label = match data.num_features() {
        1 => "x",
        _ => "first input feature",
    };
    let mut chart = Chart::new(640.0, 400.0, label, "y");
    chart.title = Some("predictive mean ± 2 sd");
    let Targets::Values { values, .. } = &data.y else {
        return chart.to_svg();
    };
    let (f, c) = (data.num_features(), p.c);
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by(|&i, &j| data.x[i * f].total_cmp(&data.x[j * f]));
    let pick =
        |v: &[f64], width: usize| -> Vec<f64> { order.iter().map(|&i| v[i * width]).collect() };
    let (x, y, mean) = (pick(&data.x, f), pick(values, c), pick(&p.mean, c));
    let sd = pick(&p.variance, c);
    let edge = |sign: f64| -> Vec<f64> {
        mean.iter()
            .zip(&sd)
            .map(|(m, v)| m + sign * 2.0 * v.sqrt())
            .collect()
    };
    let (low, high) = (edge(-1.0), edge(1.0));
    chart.layers.push(Layer::Dots {
        x: &x,
        y: &y,
        color: "#555555",
        label: Some("data"),
    });
    let lines = [
        (&low, "#9ecae1", None),
        (&high, "#9ecae1", Some("± 2 sd")),
        (&mean, "#1f77b4", Some("mean")),
    ];
    for (y, color, label) in lines {
        chart.layers.push(Layer::Line {
            x: &x,
            y,
            color,
            label,
        });
    }
    chart.to_svg()
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A posterior written by `secondo laplace` (DIR/laplace.safetensors);
    /// it holds the network it was fitted on.
    #[arg(long, visible_alias = "laplace")]
    posterior: PathBuf,
    /// Data: a safetensors file with `x` and `y`, IDX files `IMAGES,LABELS`, CIFAR batches (a `.bin` file or a directory of them), or `digits` (built-in, pixels scaled to [0, 1]) or `wave` (built-in 1-D regression, 150 points).
    #[arg(long)]
    data: String,
    /// Model spec; absent: the posterior's.
    #[arg(long)]
    model: Option<String>,
    /// Weights (safetensors, PyTorch names); absent: the posterior's MAP weights.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// View each sample's features as this shape; absent: the posterior's.
    #[arg(long, value_name = "C,H,W")]
    input_shape: Option<SampleShape>,
    /// Seed of the Monte-Carlo predictives.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Element type: f32 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Predictive: glm-probit, glm-bridge, glm-mc:S or nn:S.
    #[arg(long, default_value = "glm-probit")]
    predictive: String,
    /// Samples per batch.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    batch: usize,
    /// Output safetensors file with `map`, `mean` and (regression) `variance`.
    #[arg(long)]
    out: PathBuf,
}

pub fn run_predict(a: PredictArgs) -> anyhow::Result<()> {
    let predictive: Predictive = a.predictive.parse()?;
    let flag = |e: secondo::Error| {
        anyhow::Error::from(e).context(format!("--posterior {}", a.posterior.display()))
    };
    let (la, saved) = load_with_network(&a.posterior).map_err(flag)?;
    let common = predict_model(&a, &la, saved.as_ref())?;
    let mut inputs = common.inputs()?;
    inputs.push(Input {
        flag: "--posterior",
        path: a.posterior.clone(),
    });
    let out = Output::file(&a.out, "--out", &inputs)?;
    let (data, objective) = common.load_objective()?;
    let params = match (&a.weights, &saved) {
        (None, Some(network)) => ParamStore::from_named(
            &format!("--posterior {}", a.posterior.display()),
            &network.weights,
            objective.network.spec(),
            objective.dtype,
        )?,
        _ => weights(&objective, a.weights.as_ref(), a.seed)?,
    };
    check_covers(&la, &params)?;
    let p = predict(&objective, &params, &la, &data, predictive, a.seed, a.batch)?;
    let staged = out.stage()?;
    write_predictions(&p, &staged.file_path())?;
    staged.commit()?;
    println!("{}", score(&p, &data.y, la.sigma).line());
    println!("wrote {}", a.out.display());
    Ok(())
}

/// The model `predict` runs: the flags', else the network saved with the
/// posterior, with the loss its likelihood is the negative log of.
fn predict_model(
    a: &PredictArgs,
    la: &Laplace,
    saved: Option<&FittedNetwork>,
) -> anyhow::Result<ModelArgs> {
    let model = match (&a.model, saved) {
        (Some(m), _) => m.clone(),
        (None, Some(n)) => n.spec.clone(),
        (None, None) => bail!(
            "--posterior {}: it holds no network (written by an older secondo); give --model and --weights",
            a.posterior.display()
        ),
    };
    if a.weights.is_none() && saved.is_none_or(|n| n.spec != model) {
        bail!("--model {model}: not the network saved with the posterior; give its --weights");
    }
    let input_shape = match (&a.input_shape, saved) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(n)) => Some(SampleShape(n.input_shape.clone())),
        (None, None) => None,
    };
    Ok(ModelArgs {
        model,
        weights: a.weights.clone(),
        data: a.data.clone(),
        input_shape,
        loss: la.likelihood.loss().to_string(),
        reduction: "mean".into(),
        seed: a.seed,
        dtype: a.dtype.clone(),
        batchnorm: BatchNorm::Eval,
    })
}

/// A spinner on stderr (drawn on a terminal only) naming the phase under way
/// and its elapsed time: a full posterior over many weights takes minutes.
fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_finish(ProgressFinish::AndClear);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}  [{elapsed_precise}]")
            .expect("valid template"),
    );
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Refuses weights whose covered parameters differ in shape from the posterior's.
fn check_covers(la: &Laplace, params: &ParamStore) -> anyhow::Result<()> {
    for (name, shape) in la.names.iter().zip(&la.shapes) {
        match params.get(name) {
            Some(t) if t.shape() == shape.as_slice() => {}
            _ => bail!("--laplace covers '{name}' of shape {shape:?}, which --model does not have"),
        }
    }
    Ok(())
}
