//! `secondo spectrum`.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use secondo::curvature::{Curvature, CurvatureOperator};
use secondo::spectrum::{compute, SpectrumOptions};

use secondo_tensor::memory::ensure_fits;

use super::common::ModelArgs;

#[derive(Debug, Args)]
pub struct SpectrumArgs {
    #[command(flatten)]
    common: ModelArgs,
    /// Curvature matrix: hessian, ggn, fisher (Monte-Carlo) or ef (empirical Fisher).
    #[arg(long, default_value = "hessian")]
    curvature: String,
    /// Number of largest eigenvalues to compute (0: none).
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Estimate the trace (Hutch++).
    #[arg(long)]
    trace: bool,
    /// Estimate the spectral density (stochastic Lanczos quadrature).
    #[arg(long)]
    density: bool,
    /// Monte-Carlo samples per input for --curvature fisher.
    #[arg(long, default_value_t = 1)]
    mc_samples: usize,
    /// Samples per batch when passing over the data.
    #[arg(long, default_value_t = 256)]
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
    if a.top == 0 && !a.trace && !a.density {
        anyhow::bail!("nothing to compute: give --top K, --trace or --density");
    }
    if a.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let (data, objective, params) = a.common.load()?;
    let dtype = objective.dtype;
    if let Curvature::FisherMc { samples, .. } = kind {
        // Every draw's targets for every batch are sampled up front.
        let width: usize = objective.network.output_shape().iter().product();
        let per_draw = (data.len() * width * dtype.size_bytes()) as u64;
        ensure_fits(
            &format!(
                "the MC targets of --mc-samples {samples} for {} samples",
                data.len()
            ),
            per_draw.saturating_mul(samples as u64),
        )?;
    }
    let op = CurvatureOperator::new(&objective, &params, &data, a.batch, kind, None)?;
    let opts = SpectrumOptions {
        top: (a.top > 0).then_some(a.top),
        trace: a.trace,
        density: a.density,
        seed: a.common.seed,
        ..SpectrumOptions::default()
    };
    if let Some(k) = opts.top {
        if k > op.dim() {
            anyhow::bail!(
                "--top {k} is larger than the number of parameters, {}",
                op.dim()
            );
        }
    }
    eprintln!(
        "{} of {} on {} ({} samples, {} parameters, {dtype})",
        kind,
        a.common.model,
        data.name,
        data.len(),
        op.dim()
    );
    let bar = ProgressBar::new(0);
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
    spectrum.write(&a.out, &a.curvature, op.dim())?;
    println!(
        "{} matrix-vector products in {:.1} s",
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
        a.out.join("spectrum.json").display(),
        a.out.join("spectrum.svg").display()
    );
    Ok(())
}
