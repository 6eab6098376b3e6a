//! `secondo bench`.

use std::path::PathBuf;

use clap::Args;
use secondo::bench::{default_python, dense_gradient_flops, time, torch_reference};
use secondo::{Objective, ObjectiveConfig};
use secondo_nn::ParamStore;
use secondo_tensor::{measure_gemm_gflops, DType, Tensor};

/// The benchmark model of the issues.
const SPEC: &str = "linear(784,256),relu,linear(256,256),relu,linear(256,10)";

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Timed repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 200)]
    repeats: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Python with PyTorch for the side-by-side reference (default .venv/bin/python, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Skip the PyTorch reference.
    #[arg(long)]
    no_torch: bool,
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let n = a.batch.max(1);
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: SPEC.into(),
        input_shape: vec![784],
        ..ObjectiveConfig::default()
    })?;
    let params = ParamStore::init(objective.network.spec(), 0, DType::F32);
    let xs: Vec<f64> = secondo_graph::check::pseudo_random(n * 784, 1);
    let x = Tensor::from_f64(vec![n, 784], &xs, DType::F32)?;
    let labels: Vec<f64> = (0..n).map(|i| (i % 10) as f64).collect();
    let y = Tensor::from_f64(vec![n], &labels, DType::F32)?;

    let threads = rayon::current_num_threads();
    let peak = measure_gemm_gflops(1024, DType::F32, 5);
    println!("secondo bench: MLP {SPEC}, batch {n}, f32, cross_entropy, {threads} threads");
    println!("GEMM peak (1024^3, f32): {peak:.1} GFLOP/s");

    let program = objective.program(n, true)?;
    let grad = time(20, a.repeats, || {
        std::hint::black_box(program.run(&params, x.clone(), y.clone()).expect("benchmark step"));
    });
    let flops = dense_gradient_flops(objective.network.spec(), n) as f64;
    let rate = flops / grad.median / 1e9;

    let torch = if a.no_torch {
        Err("skipped (--no-torch)".to_string())
    } else {
        let python = a.python.clone().unwrap_or_else(default_python);
        let repeats = a.repeats.to_string();
        torch_reference(&python, &["--only", "grad", "--repeats", &repeats])
    };
    let torch_grad_ms = torch
        .as_ref()
        .ok()
        .and_then(|v| v["median_ms"]["grad"].as_f64());

    println!(
        "{:<10} {:>12} {:>10} {:>10} {:>12} {:>14}",
        "quantity", "secondo ms", "GFLOP/s", "% of peak", "PyTorch ms", "secondo/torch"
    );
    let (torch_col, ratio_col) = match torch_grad_ms {
        Some(t) => (format!("{t:.3}"), format!("{:.2}", grad.median * 1e3 / t)),
        None => ("-".into(), "-".into()),
    };
    println!(
        "{:<10} {:>12.3} {:>10.1} {:>9.0}% {:>12} {:>14}",
        "grad",
        grad.median * 1e3,
        rate,
        100.0 * rate / peak,
        torch_col,
        ratio_col
    );
    match torch {
        Ok(v) => println!(
            "PyTorch {} with {} threads measured in the same run",
            v["torch_version"].as_str().unwrap_or("?"),
            v["threads"]
        ),
        Err(reason) => println!("PyTorch reference: {reason}"),
    }
    Ok(())
}
