//! `secondo quantities`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use secondo::curvature::{sample_mc_targets, Quantity, QuantityProgram};

use secondo_tensor::memory::ensure_fits;

use super::common::{check_output, ModelArgs};

#[derive(Debug, Args)]
pub struct QuantitiesArgs {
    #[command(flatten)]
    common: ModelArgs,
    /// Comma-separated quantity names, e.g. grad.
    #[arg(long)]
    quantities: String,
    /// Monte-Carlo samples for MC quantities.
    #[arg(long, default_value_t = 1)]
    mc_samples: usize,
    /// Print the optimized graph that computes the quantities (to stderr).
    #[arg(long)]
    explain: bool,
    /// Output safetensors file with tensors `<quantity>/<parameter>`.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: QuantitiesArgs) -> anyhow::Result<()> {
    check_output(&a.out)?;
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
    if a.mc_samples == 0 {
        bail!("--mc-samples must be at least 1");
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
    let tensors = program.run(&params, &x, &y, mc.as_ref())?;
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
    secondo_nn::write_safetensors(
        &a.out,
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &metadata,
    )?;
    println!(
        "loss {loss:.6}; wrote {} tensors to {}",
        tensors.len(),
        a.out.display()
    );
    Ok(())
}
