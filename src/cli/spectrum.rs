//! `secondo spectrum`.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};
use secondo::curvature::{Curvature, CurvatureOperator};
use secondo::spectrum::{compute, SpectrumOptions};

use secondo::output::Output;

use super::common::{at_least_one, ModelArgs};

const JSON: &str = "spectrum.json";
const SVG: &str = "spectrum.svg";

#[derive(Debug, Args)]
pub struct SpectrumArgs {
    #[command(flatten)]
    common: ModelArgs,
    /// Curvature matrix: hessian, ggn, fisher (Monte-Carlo) or ef (empirical Fisher).
    #[arg(long, default_value = "hessian")]
    curvature: String,
    /// Number of largest eigenvalues to compute (default 10 when neither
    /// --trace nor --density is given, else none).
    #[arg(long)]
    top: Option<usize>,
    /// Estimate the trace (Hutch++).
    #[arg(long)]
    trace: bool,
    /// Estimate the spectral density (stochastic Lanczos quadrature).
    #[arg(long)]
    density: bool,
    /// Monte-Carlo samples per input for --curvature fisher.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    mc_samples: usize,
    /// Samples per batch when passing over the data.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    batch: usize,
    /// Output directory for spectrum.json and spectrum.svg.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: SpectrumArgs) -> anyhow::Result<()> {
    let kind = match a.curvature.parse::<Curvature>()? {
        Curvature::FisherMc { .. } => Curvature::FisherMc {
            samples: a.mc_samples,
            seed: a.common.seed,
        },
        other => other,
    };
    let top = match a.top {
        Some(k) => k,
        None if a.trace || a.density => 0,
        None => 10,
    };
    if top == 0 && !a.trace && !a.density {
        anyhow::bail!("nothing to compute: give --top K, --trace or --density");
    }
    let out = Output::dir(&a.out, &[JSON, SVG], "--out", &a.common.inputs()?)?;
    let (data, objective, params) = a.common.load()?;
    let dtype = objective.dtype;
    let op = CurvatureOperator::new(&objective, &params, &data, a.batch, kind, None)?;
    let opts = SpectrumOptions {
        top: (top > 0).then_some(top),
        trace: a.trace,
        density: a.density,
        seed: a.common.seed,
        ..SpectrumOptions::default()
    };
    let bar = ProgressBar::new(0).with_finish(ProgressFinish::AndClear);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} matrix-vector products  [{elapsed_precise}<{eta_precise}]",
        )
        .expect("valid template"),
    );
    let start = std::time::Instant::now();
    let spectrum = compute(&op, &opts, &mut |done, planned| {
        bar.set_length(planned as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let staged = out.stage()?;
    spectrum.write(
        &staged.path(JSON),
        &staged.path(SVG),
        &a.curvature,
        op.dim(),
    )?;
    staged.commit()?;
    println!(
        "{} of {} on {} ({} samples, {} parameters, {dtype}): {} matrix-vector products in {:.1} s",
        kind,
        a.common.model,
        data.name,
        data.len(),
        op.dim(),
        spectrum.products,
        start.elapsed().as_secs_f64()
    );
    if let Some(v) = &spectrum.top_eigenvalues {
        let shown: Vec<String> = v.iter().map(|x| format!("{x:.6e}")).collect();
        println!("top eigenvalues: {}", shown.join(", "));
    }
    if let Some((t, se)) = spectrum.trace {
        println!("trace: {t:.6e} ± {se:.2e}");
    }
    println!(
        "wrote {} and {}",
        a.out.join(JSON).display(),
        a.out.join(SVG).display()
    );
    Ok(())
}
