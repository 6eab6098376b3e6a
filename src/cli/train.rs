//! `secondo train`.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};
use secondo::laplace::online::OnlineMarglik;
use secondo::monitor::log::{self, RunLog};
use secondo::monitor::{Monitor, MonitorConfig, MonitorSetup, Record};
use secondo::nn::ParamStore;
use secondo::output::{Input, Output};
use secondo::state::State;
use secondo::train::{
    ensure_training_fits, evaluate, train_with_hooks, CheckpointSink, Checkpoints, Hooks,
    OptimizerChoice, Regularizer, Switch, TrainConfig,
};
use std::cell::{Cell, RefCell};

use secondo_data::Dataset;

use super::checkpoint::{self, CheckpointArgs};
use super::common::{
    at_least_one, check_targets, default_model, objective, parse_dtype, shape_samples, weights,
    weights_input, DataSource, SampleShape,
};
use super::online_marglik::{self, OnlineMarglikArgs};
use super::second_order::{FirstOrder, SecondOrderArgs};

#[derive(Debug, Args, serde::Serialize)]
pub struct TrainArgs {
    /// Model spec, e.g. "linear(64,256),relu,linear(256,10)" (default: one hidden ReLU layer of 256 fitted to the data).
    #[arg(long)]
    model: Option<String>,
    /// Training data: a safetensors file with `x` and `y`, IDX files `IMAGES,LABELS`, CIFAR batches (a `.bin` file or a directory of them), or `digits` (embedded, pixels scaled to [0, 1]) or `wave` (embedded 1-D regression, 150 points).
    #[arg(long, default_value = "digits")]
    data: String,
    /// View each sample's features (of --data and --test-data) as this shape, e.g. 1,8,8 for the digits as images.
    #[arg(long, value_name = "C,H,W")]
    input_shape: Option<SampleShape>,
    /// Test data file; without it a seeded split of --data is held out.
    #[arg(long)]
    test_data: Option<String>,
    /// Fraction of --data held out for testing when no --test-data is given.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Loss: cross_entropy, mse or bce_with_logits.
    #[arg(long, default_value = "cross_entropy")]
    loss: String,
    /// Reduction of the loss over samples: mean or sum.
    #[arg(long, default_value = "mean")]
    reduction: String,
    /// Optimizer: sgd, adam, adamw, or second-order: newton-cg (Hessian-free), kfac, ekfac, ngd (dense Fisher/GGN), ef (dense empirical Fisher), fractional-ngd, det-avg (determinantal averaging of sub-sampled Newton steps).
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Passes over the training data.
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    epochs: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    batch: usize,
    /// Learning rate (default 1e-3 for adam/adamw, 0.1 for sgd, kfac, ekfac, ngd, ef and fractional-ngd, 1 for newton-cg).
    #[arg(long)]
    lr: Option<f64>,
    /// SGD momentum (heavy-ball momentum of kfac, ekfac, ngd, ef and fractional-ngd).
    #[arg(long, default_value_t = 0.0)]
    momentum: f64,
    /// Nesterov momentum for SGD.
    #[arg(long)]
    nesterov: bool,
    /// Weight decay (L2 for sgd/adam, decoupled for adamw).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Seed for initialisation, the test split and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Element type: f32 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Start from these weights instead of a fresh initialisation.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Where to write the trained weights (safetensors, PyTorch names).
    #[arg(long, default_value = "weights.safetensors")]
    out: PathBuf,
    /// Instruments to track: off, economy, business, full (Cockpit's configurations), structure (the curvature-structure measurements) or a comma-separated list of these and instrument names, each optionally with @N for its own interval (e.g. economy,hess_max_ev@10).
    /// [default: economy,structure; for networks with batch norm or dropout, the instruments that do not need per-sample gradients]
    #[arg(long)]
    monitor: Option<String>,
    /// Track Cockpit's instruments every N steps (structure measurements default to four checkpoints).
    #[arg(long, default_value_t = 1)]
    track_every: usize,
    /// Directory of the monitor's instruments.jsonl, run.json and report.html.
    #[arg(long, default_value = "report")]
    report: PathBuf,
    /// Training samples the structure measurements are taken on (the first N of the training split).
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    probe_samples: usize,
    #[command(flatten)]
    #[serde(flatten)]
    second_order: Box<SecondOrderArgs>,
    #[command(flatten)]
    #[serde(flatten)]
    online_marglik: OnlineMarglikArgs,
    #[command(flatten)]
    #[serde(flatten)]
    checkpoints: CheckpointArgs,
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let dtype = parse_dtype(&a.dtype)?;
    let source = DataSource::parse("--data", &a.data)?;
    let test_source = a
        .test_data
        .as_deref()
        .map(|t| DataSource::parse("--test-data", t))
        .transpose()?;
    if test_source.is_none() && !(a.test_fraction > 0.0 && a.test_fraction < 1.0) {
        anyhow::bail!("--test-fraction must be in (0, 1), got {}", a.test_fraction);
    }
    let lr =
        a.lr.unwrap_or_else(|| OptimizerChoice::default_lr(&a.optimizer));
    let common = FirstOrder {
        momentum: a.momentum,
        nesterov: a.nesterov,
        weight_decay: a.weight_decay,
    };
    let (first_phase, mixed) = a.second_order.schedule(common)?;
    // With a first-order optimizer beside, the first-order hyperparameters are its own.
    let main = match first_phase.is_some() || mixed.is_some() {
        true => FirstOrder {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        false => common,
    };
    let optimizer = match OptimizerChoice::parse(
        &a.optimizer,
        lr,
        main.momentum,
        main.nesterov,
        main.weight_decay,
    )? {
        OptimizerChoice::SecondOrder(c) => OptimizerChoice::SecondOrder(a.second_order.apply(c)?),
        first_order => match a.second_order.given().first() {
            Some(flag) => anyhow::bail!(
                "{flag} applies to second-order optimizers (--optimizer newton-cg, kfac, ekfac, ngd, ef, fractional-ngd, det-avg), not {}",
                a.optimizer
            ),
            None => first_order,
        },
    };
    let config = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch,
        optimizer,
        seed: a.seed,
        first_phase,
        mixed,
    };
    config.validate()?;
    let online_options = a.online_marglik.options(&config, a.weight_decay)?;
    let args = serde_json::to_value(&a)?;
    if online_options.is_some() && a.checkpoints.used() {
        anyhow::bail!(
            "--online-marglik's hyperparameters are not checkpointed; drop --checkpoint-every and --resume"
        );
    }
    let resume = a.checkpoints.resume(&args)?;
    let monitor_list = a
        .monitor
        .clone()
        .unwrap_or_else(|| "economy,structure".into());
    let mut monitor_config = MonitorConfig::parse(&monitor_list, a.track_every)?;
    let mut inputs = inputs(&a, &source, test_source.as_ref())?;
    // The checkpoint may replace the one resumed from: that is read whole first.
    let checkpoint_out = a.checkpoints.output(&a.out, &inputs)?;
    inputs.extend(resume.iter().map(|r| Input {
        flag: "--resume",
        path: r.dir.join("weights.safetensors"),
    }));
    let out = Output::file(&a.out, "--out", &inputs)?;
    let report = Output::dir(&a.report, log::FILES, "--report", &inputs)?;
    let hyper_out = online_options
        .map(|_| online_marglik::Files::new(&a.out, &inputs))
        .transpose()?;

    let data = source.load()?;
    let spec = a.model.clone().unwrap_or_else(|| {
        let shape = a.input_shape.as_ref().map_or(&data.sample_shape, |s| &s.0);
        default_model(shape, &data.y)
    });
    let data = shape_samples(data, a.input_shape.as_ref(), &spec, "--data", &a.data)?;
    // Labels are checked on the file as it is, before any split or shuffle,
    // so that a bad one is reported at its index in the file.
    let objective = objective(&spec, &data, &a.loss, &a.reduction, dtype)?;
    check_targets(&objective, &data, "--data", &a.data)?;
    let (train_set, test_set) = match (&test_source, &a.test_data) {
        (Some(source), Some(text)) => {
            let test = source.load()?;
            let test = shape_samples(test, a.input_shape.as_ref(), &spec, "--test-data", text)?;
            check_targets(&objective, &test, "--test-data", text)?;
            (data, test)
        }
        _ => data.split(a.test_fraction, a.seed)?,
    };
    ensure_samples(&a, &train_set, &test_set)?;
    ensure_training_fits(&objective, train_set.len(), &config)?;
    let header = format!(
        "{spec} on {} ({} train / {} test samples, {} parameters, {dtype})",
        train_set.name,
        train_set.len(),
        test_set.len(),
        objective.network.spec().num_parameters()
    );
    let bar = progress_bar((train_set.len().div_ceil(a.batch) * a.epochs) as u64);
    let start = std::time::Instant::now();
    let key_values = RefCell::new(String::new());
    let switched_at = Cell::new(None);
    let on_progress = |p: secondo::train::Progress| {
        switched_at.set(p.switched_at);
        bar.set_position(p.step as u64);
        let acc = p
            .accuracy
            .map(|a| format!("  accuracy {:.4}", a))
            .unwrap_or_default();
        bar.set_message(format!(
            "epoch {}/{}  loss {:.4}{acc}{}",
            p.epoch,
            a.epochs,
            p.loss,
            key_values.borrow()
        ));
    };
    if a.monitor.is_none() {
        monitor_config.keep_available(&objective);
    }
    if let Some(Switch::When(t)) = config.first_phase.map(|p| p.until) {
        let i = t.instrument();
        if let Some(why) = secondo::monitor::unavailable(&objective, i, optimizer.is_plain_sgd()) {
            anyhow::bail!("--switch-when {t}: {why}");
        }
        monitor_config.track(i);
    }
    let total = train_set.len().div_ceil(a.batch) * a.epochs;
    let probe_len = a.probe_samples.min(train_set.len());
    let setup = MonitorSetup {
        config: &monitor_config,
        total_steps: total,
        lr,
        plain_sgd: optimizer.is_plain_sgd(),
        probe: Some(train_set.select(&(0..probe_len).collect::<Vec<_>>())?),
        seed: a.seed,
    };
    Monitor::check(&objective, &setup)?;
    let mut params = match &resume {
        Some(r) => r.weights(&objective)?,
        None => weights(&objective, a.weights.as_ref(), a.seed)?,
    };
    let resumed_at = resume.as_ref().map(|r| (r.dir.clone(), r.epoch, r.step));
    let steps_per_epoch = train_set.len().div_ceil(a.batch);
    let last_checkpoint = Cell::new(None);
    let mut save = |epoch: usize, p: &ParamStore, s: &State| {
        if let Some((output, _)) = &checkpoint_out {
            checkpoint::write(output, &args, (epoch, epoch * steps_per_epoch), p, s)?;
            last_checkpoint.set(Some(epoch));
        }
        Ok(())
    };
    let checkpoints = Checkpoints {
        resume: resume.map(|r| r.state),
        every: a
            .checkpoints
            .every()
            .map(|e| (e, &mut save as &mut CheckpointSink<'_>)),
    };
    let mut online = online_options
        .map(|o| OnlineMarglik::new(&objective, &params, &train_set, o))
        .transpose()?;
    let monitored = if monitor_config.is_off() {
        None
    } else {
        let mut monitor = Monitor::new(&objective, &params, setup)?;
        monitor.ensure_fits(a.batch.min(train_set.len()))?;
        let parts = header_parts(&spec, &train_set, &params);
        let mut run = run_json(&a, lr, &parts, &monitor_config, total);
        let log = match &resumed_at {
            Some((dir, epoch, step)) => {
                run["resumed_from"] = serde_json::json!({"checkpoint": dir, "epoch": epoch});
                RunLog::resume(&report, &run, *step)?
            }
            None => RunLog::create(&report, &run)?,
        };
        Some((monitor, log, run))
    };
    let regularizer = online.as_mut().map(|o| o as &mut dyn Regularizer);
    let (last, finished_log) = match monitored {
        None => {
            let hooks = Hooks {
                monitor: None,
                regularizer,
                checkpoints,
            };
            let last = train_with_hooks(
                &objective,
                &mut params,
                &train_set,
                &config,
                hooks,
                on_progress,
            )?;
            (last, None)
        }
        Some((mut monitor, mut log, mut run)) => {
            secondo::interrupt::defer();
            let mut sink = |records: Vec<Record>| {
                if let Some(r) = records.last() {
                    *key_values.borrow_mut() = key_instruments(r);
                }
                log.append(&records)
            };
            let hooks = Hooks {
                monitor: Some((&mut monitor, &mut sink)),
                regularizer,
                checkpoints,
            };
            let result = train_with_hooks(
                &objective,
                &mut params,
                &train_set,
                &config,
                hooks,
                on_progress,
            );
            bar.finish_and_clear();
            log.append(&monitor.finish())?;
            match result {
                Ok(last) => {
                    run["finished"] = serde_json::json!(true);
                    (last, Some((log, run)))
                }
                Err(e) => return Err(stopped(e, &log, &run)?.into()),
            }
        }
    };
    bar.finish_and_clear();
    if let Some(o) = online.as_mut() {
        o.finish(&mut params);
    }
    let train_eval = evaluate(&objective, &params, &train_set, 256)?;
    let test_eval = evaluate(&objective, &params, &test_set, 256)?;
    let staged = out.stage()?;
    params.save(&staged.file_path())?;
    staged.commit()?;
    println!(
        "trained {header}: {} epochs in {:.1} s; last epoch running loss {:.4}",
        a.epochs,
        start.elapsed().as_secs_f64(),
        last.loss
    );
    match (train_eval.accuracy, test_eval.accuracy) {
        (Some(tr), Some(te)) => println!(
            "train loss {:.4}  accuracy {:.4}\ntest  loss {:.4}  accuracy {:.4}",
            train_eval.loss, tr, test_eval.loss, te
        ),
        _ => println!(
            "train loss {:.6}\ntest  loss {:.6}",
            train_eval.loss, test_eval.loss
        ),
    }
    let late_phase = a
        .second_order
        .late_phase_line(&a.optimizer, switched_at.get());
    if let Some(line) = late_phase {
        println!("{line}");
    }
    println!("weights written to {}", a.out.display());
    if let Some((dir, epoch, _)) = &resumed_at {
        println!(
            "resumed from the checkpoint of epoch {epoch} in {}",
            dir.display()
        );
    }
    if let (Some(epoch), Some((_, dir))) = (last_checkpoint.get(), &checkpoint_out) {
        println!("checkpoint of epoch {epoch} written to {}", dir.display());
    }
    let hyper = (online.as_ref().zip(hyper_out.as_ref())).map(|(o, f)| f.summary(o, &params));
    if let (Some(o), Some(summary), Some(files)) = (&online, &hyper, hyper_out) {
        files.write(o, summary, &params)?;
    }
    if let Some((log, mut run)) = finished_log {
        if config.first_phase.is_some() {
            run["switched_at"] = serde_json::json!(switched_at.get());
        }
        if let Some(summary) = hyper {
            run["online_marglik"] = summary;
        }
        run["final"] = serde_json::json!({
            "train_loss": train_eval.loss,
            "train_accuracy": train_eval.accuracy,
            "test_loss": test_eval.loss,
            "test_accuracy": test_eval.accuracy,
        });
        log.update_run(&run)?;
        let html = secondo::report::write_report(log.dir())?;
        println!(
            "monitor: {} tracked steps; open {} in a browser",
            log.records(),
            html.display()
        );
    }
    Ok(())
}

/// The error that stopped a monitored run, saying where the report of the
/// steps so far is; a run that stopped before its first record leaves no
/// report behind.
fn stopped(
    e: secondo::Error,
    log: &RunLog,
    run: &serde_json::Value,
) -> anyhow::Result<secondo::Error> {
    if log.records() == 0 {
        for name in log::FILES {
            let _ = std::fs::remove_file(log.dir().join(name));
        }
        let _ = std::fs::remove_dir(log.dir());
        return Ok(e);
    }
    log.update_run(run)?;
    let html = secondo::report::write_report(log.dir())?;
    let note = format!(
        "the report of the {} steps tracked so far is in {}; no weights were written",
        log.records(),
        html.display()
    );
    Ok(match e {
        secondo::Error::Interrupted(m) => secondo::Error::Interrupted(format!("{m}; {note}")),
        other => secondo::Error::Invalid(format!("{other}; {note}")),
    })
}

fn progress_bar(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps).with_finish(ProgressFinish::AndClear);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}<{eta_precise}]",
        )
        .expect("valid template"),
    );
    bar
}

/// The key instruments of a record for the progress bar: α, the gradient
/// norm, the norm test and the largest Hessian eigenvalue, where tracked.
fn key_instruments(r: &Record) -> String {
    let scalar = |k: &str| r.get(k).and_then(serde_json::Value::as_f64);
    let norm = |k: &str| {
        r.get(k).and_then(|v| v.as_array()).map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_f64)
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
        })
    };
    [
        ("α", scalar("alpha")),
        ("‖g‖", norm("grad_norm")),
        ("norm test", scalar("norm_test")),
        ("λmax", scalar("hess_max_ev")),
    ]
    .iter()
    .filter_map(|(name, v)| v.map(|v| format!("  {name} {v:.3}")))
    .collect()
}

/// What `run.json` says about the run.
struct HeaderParts {
    spec: String,
    data: String,
    samples: usize,
    classes: Option<usize>,
    parameters: Vec<serde_json::Value>,
}

fn header_parts(spec: &str, data: &Dataset, params: &secondo::nn::ParamStore) -> HeaderParts {
    HeaderParts {
        spec: spec.to_string(),
        data: data.name.clone(),
        samples: data.len(),
        classes: data.num_classes(),
        parameters: params
            .iter()
            .map(|(name, t)| serde_json::json!({"name": name, "numel": t.numel()}))
            .collect(),
    }
}

fn run_json(
    a: &TrainArgs,
    lr: f64,
    h: &HeaderParts,
    m: &MonitorConfig,
    steps: usize,
) -> serde_json::Value {
    serde_json::json!({
        "model": h.spec,
        "data": h.data,
        "samples": h.samples,
        "classes": h.classes,
        "parameters": h.parameters,
        "optimizer": a.optimizer,
        "lr": lr,
        "batch_size": a.batch,
        "epochs": a.epochs,
        "steps": steps,
        "monitor": m.names(),
        "track_every": m.track_every,
        "seed": a.seed,
        "finished": false,
    })
}

/// The files `train` reads.
fn inputs(
    a: &TrainArgs,
    data: &DataSource,
    test: Option<&DataSource>,
) -> anyhow::Result<Vec<Input>> {
    let mut inputs = data.inputs("--data")?;
    if let Some(test) = test {
        inputs.extend(test.inputs("--test-data")?);
    }
    inputs.extend(weights_input(a.weights.as_ref()));
    Ok(inputs)
}

/// Refuses a training or test set without samples: training on nothing would
/// write untouched weights, and an empty test set report an accuracy of 0.
fn ensure_samples(a: &TrainArgs, train_set: &Dataset, test_set: &Dataset) -> anyhow::Result<()> {
    let refuse = |role: &str| match &a.test_data {
        Some(t) => {
            let flag = if role == "train" {
                ("--data", &a.data)
            } else {
                ("--test-data", t)
            };
            anyhow::anyhow!("{} {}: no samples to {role} on", flag.0, flag.1)
        }
        None => anyhow::anyhow!(
            "--test-fraction {} of {} samples leaves none to {role} on",
            a.test_fraction,
            train_set.len() + test_set.len()
        ),
    };
    if train_set.is_empty() {
        return Err(refuse("train"));
    }
    if test_set.is_empty() {
        return Err(refuse("test"));
    }
    Ok(())
}
