//! `secondo quantities`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use secondo::curvature::{sample_mc_targets, Quantity, QuantityProgram};

use secondo::output::Output;
use secondo_tensor::memory::ensure_fits;

use super::common::{at_least_one, ModelArgs};

#[derive(Debug, Args)]
pub struct QuantitiesArgs {
    #[command(flatten)]
    common: ModelArgs,
    /// Comma-separated quantity names, e.g. grad.
    #[arg(long)]
    quantities: String,
    /// Monte-Carlo samples for MC quantities.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    mc_samples: usize,
    /// Print the optimized graph that computes the quantities (to stderr).
    #[arg(long)]
    explain: bool,
    /// Output safetensors file with tensors `<quantity>/<parameter>`.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: QuantitiesArgs) -> anyhow::Result<()> {
    let out = Output::file(&a.out, "--out", &a.common.inputs()?)?;
    let names: Vec<&str> = a
        .quantities
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        bail!("--quantities: no quantity named");
    }
    for n in &names {
        if n.parse::<Quantity>().is_err() {
            let known: Vec<&str> = Quantity::all().iter().map(|q| q.name()).collect();
            bail!(
                "--quantities: unknown quantity '{n}' (expected one of: {})",
                known.join(", ")
            );
        }
    }
    let (data, objective, params) = a.common.load()?;
    let batch = data
        .batches(data.len().max(1))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: no samples", a.common.data))?;
    let (x, y) = objective.batch_tensors(&batch)?;
    let mut wanted: Vec<Quantity> = Vec::new();
    for n in &names {
        let q: Quantity = n.parse()?;
        if !wanted.contains(&q) {
            wanted.push(q);
        }
    }
    let draws = wanted
        .iter()
        .any(|q| matches!(q, Quantity::DiagGgnMc | Quantity::Kfac))
        .then_some(a.mc_samples);
    let program = QuantityProgram::compile(&objective, batch.len(), &wanted, draws)?;
    // Before sampling anything: the MC targets alone grow with the draws.
    let what = match draws {
        Some(m) => format!(
            "--quantities {} for {} samples and {m} MC samples",
            a.quantities,
            batch.len()
        ),
        None => format!("--quantities {} for {} samples", a.quantities, batch.len()),
    };
    ensure_fits(what, program.executable().peak_bytes())?;
    let mc = match draws {
        Some(m) => Some(sample_mc_targets(
            &objective,
            &params,
            &x,
            &y,
            m,
            a.common.seed,
        )?),
        None => None,
    };
    let loss = objective
        .program(batch.len(), false)?
        .run(&params, x.clone(), y.clone())?
        .loss;
    if a.explain {
        let graph = program.graph();
        eprint!("{graph}");
        eprintln!(
            "{} nodes; contractions: {:.3} MFLOP",
            graph.len(),
            graph.flops() as f64 / 1e6
        );
    }
    if !loss.is_finite() {
        bail!(
            "the loss on {} is {loss}: the forward pass overflows on this data and these weights",
            a.common.data
        );
    }
    let tensors = program.run(&params, &x, &y, mc.as_ref())?;
    for (name, t) in &tensors {
        if let Some(i) = t.first_non_finite() {
            bail!(
                "{name} is not finite (at flat index {i}; the loss is {loss}): \
                 the backward pass overflows on {}",
                a.common.data
            );
        }
    }
    let metadata: HashMap<String, String> = [
        ("model", a.common.model.clone()),
        ("loss", a.common.loss.clone()),
        ("reduction", a.common.reduction.clone()),
        ("samples", data.len().to_string()),
        ("loss_value", format!("{loss}")),
        ("mc_samples", a.mc_samples.to_string()),
        ("seed", a.common.seed.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let staged = out.stage()?;
    secondo_nn::write_safetensors(
        &staged.file_path(),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &metadata,
    )?;
    staged.commit()?;
    println!(
        "loss {loss:.6}; wrote {} tensors to {}",
        tensors.len(),
        a.out.display()
    );
    Ok(())
}
