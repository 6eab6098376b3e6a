//! `secondo train`.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use secondo::train::{evaluate, train, OptimizerChoice, TrainConfig};

use super::common::{check_output, default_model, load_data, objective, parse_dtype, weights};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model spec, e.g. "linear(64,256),relu,linear(256,10)" (default: one hidden ReLU layer of 256 fitted to the data).
    #[arg(long)]
    model: Option<String>,
    /// Training data: a safetensors file with `x` and `y`, IDX files `IMAGES,LABELS`, or `digits` (embedded, pixels scaled to [0, 1]).
    #[arg(long, default_value = "digits")]
    data: String,
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
    /// Optimizer: sgd, adam or adamw.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Passes over the training data.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Learning rate (default 1e-3 for adam/adamw, 0.1 for sgd).
    #[arg(long)]
    lr: Option<f64>,
    /// SGD momentum.
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
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    check_output(&a.out)?;
    let dtype = parse_dtype(&a.dtype)?;
    let data = load_data(&a.data)?;
    let (train_set, test_set) = match &a.test_data {
        Some(t) => (data, load_data(t)?),
        None => {
            if !(a.test_fraction > 0.0 && a.test_fraction < 1.0) {
                anyhow::bail!("--test-fraction must be in (0, 1), got {}", a.test_fraction);
            }
            data.split(a.test_fraction, a.seed)?
        }
    };
    let spec = a.model.clone().unwrap_or_else(|| default_model(&train_set));
    let objective = objective(&spec, &train_set, &a.loss, &a.reduction, dtype)?;
    objective.check_targets(&test_set.y)?;
    let mut params = weights(&objective, a.weights.as_ref(), a.seed)?;
    let lr =
        a.lr.unwrap_or(if a.optimizer == "sgd" { 0.1 } else { 1e-3 });
    let optimizer =
        OptimizerChoice::parse(&a.optimizer, lr, a.momentum, a.nesterov, a.weight_decay)?;
    let config = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch,
        optimizer,
        seed: a.seed,
    };
    eprintln!(
        "training {spec} on {} ({} train / {} test samples, {} parameters, {dtype})",
        train_set.name,
        train_set.len(),
        test_set.len(),
        params.numel()
    );
    let bar = ProgressBar::new((train_set.len().div_ceil(a.batch.max(1)) * a.epochs) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}<{eta_precise}]",
        )
        .expect("valid template"),
    );
    let start = std::time::Instant::now();
    let last = train(&objective, &mut params, &train_set, &config, |p| {
        bar.set_position(p.step as u64);
        let acc = p
            .accuracy
            .map(|a| format!("  accuracy {:.4}", a))
            .unwrap_or_default();
        bar.set_message(format!(
            "epoch {}/{}  loss {:.4}{acc}",
            p.epoch, a.epochs, p.loss
        ));
    })?;
    bar.finish_and_clear();
    let train_eval = evaluate(&objective, &params, &train_set, 256)?;
    let test_eval = evaluate(&objective, &params, &test_set, 256)?;
    params.save(&a.out)?;
    println!(
        "trained {} epochs in {:.1} s; last epoch running loss {:.4}",
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
    println!("weights written to {}", a.out.display());
    Ok(())
}
