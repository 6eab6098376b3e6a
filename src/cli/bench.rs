//! `secondo bench`.

use std::path::PathBuf;

use clap::Args;
use secondo::bench::{default_python, time, time_paired, torch_reference, Timing, TorchGradient};
use secondo::curvature::{
    batch_feeds, sample_mc_targets, Curvature, CurvatureOperator, Quantity, QuantityProgram,
};
use secondo::spectrum::{compute, SpectrumOptions};
use secondo::{Objective, ObjectiveConfig};
use secondo_nn::ParamStore;
use secondo_tensor::memory::{bytes_of, ensure_fits};
use secondo_tensor::{measure_gemm_gflops, DType, Tensor};

use super::bench_optimizers::{self, Network};
use super::common::at_least_one;

/// A benchmark problem: the networks curvature is studied on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Problem {
    /// `784-256-256-10` MLP on flat 28×28 inputs, batch 128.
    Mlp,
    /// DeepOBS' 2C2D on 1×28×28, batch 128.
    #[value(name = "2c2d")]
    C2d2,
    /// DeepOBS' 3C3D on 3×32×32, batch 64.
    #[value(name = "3c3d")]
    C3d3,
    /// CIFAR ResNet-20 (16/32/64 channels, batch norm in evaluation mode) on
    /// 3×32×32, batch 64.
    Resnet,
}

impl Problem {
    /// The model spec.
    fn spec(self) -> String {
        match self {
            Problem::Mlp => "linear(784,256),relu,linear(256,256),relu,linear(256,10)".into(),
            Problem::C2d2 => "conv2d(1,32,k=5,p=2),relu,maxpool2d(2),conv2d(32,64,k=5,p=2),relu,\
                              maxpool2d(2),flatten,linear(3136,1024),relu,linear(1024,10)"
                .into(),
            Problem::C3d3 => "conv2d(3,64,k=5),relu,maxpool2d(3,s=2,p=1),conv2d(64,96,k=3),relu,\
                              maxpool2d(3,s=2,p=1),conv2d(96,128,k=3,p=1),relu,maxpool2d(3,s=2,p=1),\
                              flatten,linear(1152,512),relu,linear(512,256),relu,linear(256,10)"
                .into(),
            Problem::Resnet => resnet20(),
        }
    }

    /// The per-sample input shape.
    fn input_shape(self) -> Vec<usize> {
        match self {
            Problem::Mlp => vec![784],
            Problem::C2d2 => vec![1, 28, 28],
            Problem::C3d3 | Problem::Resnet => vec![3, 32, 32],
        }
    }

    /// The batch size the problem is defined with.
    fn batch(self) -> usize {
        match self {
            Problem::Mlp | Problem::C2d2 => 128,
            Problem::C3d3 | Problem::Resnet => 64,
        }
    }

    /// The name `--problem` takes.
    fn name(self) -> &'static str {
        match self {
            Problem::Mlp => "mlp",
            Problem::C2d2 => "2c2d",
            Problem::C3d3 => "3c3d",
            Problem::Resnet => "resnet",
        }
    }
}

/// He et al.'s CIFAR ResNet-20: a 3×3 stem to 16 channels, three stages of
/// three basic blocks (16, 32, 64 channels; stride 2 and a 1×1 projection
/// shortcut where a stage starts), global average pooling, a linear head.
fn resnet20() -> String {
    let conv_bn = |i: usize, o: usize, s: usize| {
        format!("conv2d({i},{o},k=3,s={s},p=1,bias=false),batchnorm2d({o})")
    };
    let mut layers = vec![conv_bn(3, 16, 1), "relu".into()];
    let mut channels = 16;
    for (stage, width) in [16, 32, 64].into_iter().enumerate() {
        for block in 0..3 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let body = format!(
                "{},relu,{}",
                conv_bn(channels, width, stride),
                conv_bn(width, width, 1)
            );
            layers.push(if channels == width {
                format!("residual({body})")
            } else {
                format!(
                    "residual({body}|conv2d({channels},{width},k=1,s={stride},bias=false),batchnorm2d({width}))"
                )
            });
            layers.push("relu".into());
            channels = width;
        }
    }
    layers.extend([
        "adaptiveavgpool2d(1)".into(),
        "flatten".into(),
        "linear(64,10)".into(),
    ]);
    layers.join(",")
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Timed repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 200, value_parser = at_least_one)]
    repeats: usize,
    /// The network: the MLP, DeepOBS' 2C2D or 3C3D, or a CIFAR ResNet-20.
    #[arg(long, value_enum, default_value_t = Problem::Mlp)]
    problem: Problem,
    /// Batch size (default: the problem's, 128 or 64; with --optimizers, every network's).
    #[arg(long, value_parser = at_least_one)]
    batch: Option<usize>,
    /// Python with PyTorch for the side-by-side reference (default .venv/bin/python, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Skip the Python reference (PyTorch; with --optimizers, kfac-jax).
    #[arg(long)]
    no_torch: bool,
    /// Print the most expensive nodes of the gradient graph and of every
    /// timed quantity's graph (with --monitor, of every row's monitored
    /// step).
    #[arg(long)]
    profile: bool,
    /// Only these rows (comma-separated names as printed, e.g.
    /// `hvp,diag_hessian,eigsh_top10`); the gradient is always timed.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Time training steps with the monitor on (each configuration tracked
    /// every step and every 16th, each instrument alone) against plain steps,
    /// beside cockpit-for-pytorch when installed; `--only` then takes those
    /// rows (e.g. `economy/1,alpha/1`).
    #[arg(long)]
    monitor: bool,
    /// Time Laplace approximations (fit, marginal-likelihood optimization,
    /// prediction) beside laplace-torch when installed.
    #[arg(long)]
    laplace: bool,
    /// Train with each optimizer (SGD with momentum and Adam over learning-rate
    /// grids, kfac, ekfac, fractional-ngd, newton-cg; kfac-jax on the
    /// autoencoder where Python has it) for a fixed number of
    /// steps: steps and seconds to a target training loss, the step's cost in
    /// SGD steps timed alternately, final training loss and test metric, and
    /// loss-versus-steps and loss-versus-time plots in --out; `--only` then
    /// takes optimizer rows (e.g. `adam,kfac-adaptive`).
    #[arg(long, conflicts_with_all = ["monitor", "laplace"])]
    optimizers: bool,
    /// The networks of --optimizers: autoencoder (64-256-128-64-16-64-128-256-64,
    /// tanh, MSE, batch 256), mlp (digits classifier, batch 128), cnn (digits as
    /// 1×8×8 images, batch 128).
    #[arg(long, value_enum, value_delimiter = ',', requires = "optimizers",
          default_values_t = [Network::Autoencoder, Network::Mlp, Network::Cnn])]
    networks: Vec<Network>,
    /// Steps of every --optimizers run (default per network: 2,000 for the
    /// autoencoder, 500 for the MLP, 200 for the CNN).
    #[arg(long, value_name = "N", value_parser = at_least_one, requires = "optimizers")]
    steps: Option<usize>,
    /// Directory of --optimizers' plots and curves, optimizers.json (default bench-optimizers).
    #[arg(long, value_name = "DIR", requires = "optimizers")]
    out: Option<PathBuf>,
}

/// Every row `bench` can time, in the order it prints them.
const ROWS: [&str; 17] = [
    "grad",
    "hvp",
    "hvp_recomputed",
    "ggnvp",
    "efvp",
    "fishervp",
    "batch_grad",
    "batch_l2",
    "sum_grad_squared",
    "variance",
    "diag_ggn_mc",
    "diag_ggn_exact",
    "kfac",
    "kflr",
    "diag_hessian",
    "together",
    "eigsh_top10",
];

impl BenchArgs {
    /// Refuses `--only` lists that name no row or an unknown one.
    fn check_rows(&self) -> anyhow::Result<()> {
        let Some(rows) = &self.only else {
            return Ok(());
        };
        if rows.iter().all(|r| r.trim().is_empty()) {
            anyhow::bail!("--only: no row named (rows: {})", ROWS.join(", "));
        }
        if let Some(r) = rows.iter().find(|r| !ROWS.contains(&r.trim())) {
            anyhow::bail!("--only: unknown row '{r}' (rows: {})", ROWS.join(", "));
        }
        Ok(())
    }

    fn wants(&self, row: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|rows| rows.iter().any(|r| r.trim() == row))
    }
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.optimizers {
        let out = a.out.clone().unwrap_or_else(bench_optimizers::default_out);
        let python = a.python.clone().unwrap_or_else(default_python);
        return bench_optimizers::run_all(&bench_optimizers::Options {
            networks: &a.networks,
            only: a.only.as_deref(),
            steps: a.steps,
            batch: a.batch,
            out: &out,
            python: (!a.no_torch).then_some(python.as_path()),
        });
    }
    if a.laplace {
        let python = a.python.clone().unwrap_or_else(default_python);
        let repeats = (a.repeats / 40).max(3);
        return super::bench_laplace::run(repeats, (!a.no_torch).then_some(python.as_path()));
    }
    if !a.monitor {
        a.check_rows()?;
    }
    let problem = a.problem;
    let n = a.batch.unwrap_or(problem.batch());
    let shape = problem.input_shape();
    let features: usize = shape.iter().product();
    // The inputs and labels in f64 and f32, and the dataset the operators pass over.
    ensure_fits(
        format!("--batch {n} of {features}-value inputs"),
        bytes_of(n.saturating_mul(features + 1), 8 + 4 + 8),
    )?;
    let spec = problem.spec();
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: spec.clone(),
        input_shape: shape.clone(),
        ..ObjectiveConfig::default()
    })?;
    let params = ParamStore::init(objective.network.spec(), 0, DType::F32);
    let xs: Vec<f64> = secondo_graph::check::pseudo_random(n * features, 1);
    let x = Tensor::from_f64([vec![n], shape.clone()].concat(), &xs, DType::F32)?;
    let labels: Vec<f64> = (0..n).map(|i| (i % 10) as f64).collect();
    let y = Tensor::from_f64(vec![n], &labels, DType::F32)?;

    if a.monitor {
        let data = benchmark_dataset(&xs, &shape, &labels)?;
        println!(
            "secondo bench --monitor: {} {spec} on {shape:?}, batch {n}, f32, {} threads",
            problem.name(),
            rayon::current_num_threads()
        );
        let python = a.python.clone().unwrap_or_else(default_python);
        let bench = super::bench_monitor::Problem {
            name: problem.name(),
            objective: &objective,
            params: &params,
            x: &x,
            y: &y,
            data: &data,
        };
        let repeats = (a.repeats / 20).max(3);
        let python = (!a.no_torch).then_some(python.as_path());
        return super::bench_monitor::run(&bench, repeats, a.only.as_deref(), python, a.profile);
    }
    let threads = rayon::current_num_threads();
    let peak = measure_gemm_gflops(1024, DType::F32, 5);
    println!(
        "secondo bench: {} {spec} on {shape:?}, batch {n}, f32, cross_entropy, {threads} threads",
        problem.name()
    );
    println!("GEMM peak (1024^3, f32): {peak:.1} GFLOP/s");

    let program = objective.program(n, true)?;
    ensure_fits(
        format!("the gradient of --batch {n}"),
        program.executable().peak_bytes(),
    )?;
    let step = || {
        std::hint::black_box(
            program
                .run(&params, x.clone(), y.clone())
                .expect("benchmark step"),
        );
    };
    let grad = time(20, a.repeats, step);
    if a.profile {
        let feeds = batch_feeds(&params, &x, &y);
        print_profile("gradient", program.executable(), &feeds, a.repeats)?;
    }
    let flops = program.executable().graph().flops();
    let rate = flops as f64 / grad.median / 1e9;
    println!(
        "gradient: {:.3} ms, {rate:.1} GFLOP/s ({:.0}% of the GEMM peak)",
        grad.median * 1e3,
        100.0 * rate / peak
    );

    let data = benchmark_dataset(&xs, &shape, &labels)?;
    // Every row is timed alternately with a gradient step; its "x grad" is the
    // ratio of the two medians (steady where the machine's speed drifts). Each
    // carries the FLOPs of its contractions, where they are known.
    let mut rows = vec![Row {
        name: "grad",
        time: grad,
        grad,
        flops: Some(flops),
    }];
    let v: Vec<f64> = secondo_graph::check::pseudo_random(params.numel(), 2);
    for (name, kind) in [
        ("hvp", Curvature::Hessian),
        ("ggnvp", Curvature::Ggn),
        ("efvp", Curvature::EmpiricalFisher),
        (
            "fishervp",
            Curvature::FisherMc {
                samples: 1,
                seed: 0,
            },
        ),
    ] {
        if !a.wants(name) {
            continue;
        }
        let op = CurvatureOperator::new(&objective, &params, &data, n, kind, None)?;
        let product = |name, op: &CurvatureOperator| {
            let (time, grad) = time_paired(
                5,
                (a.repeats / 4).max(1),
                &mut || {
                    std::hint::black_box(op.apply(&v).expect("benchmark product"));
                },
                &mut &step,
            );
            Row {
                name,
                time,
                grad,
                flops: Some(op.flops_per_product()),
            }
        };
        rows.push(product(name, &op));
        if kind == Curvature::Hessian {
            // What a single product costs: forward and backward recomputed.
            rows.push(product("hvp_recomputed", &op.without_kept_values()));
        }
    }
    let timed = [
        Quantity::BatchGrad,
        Quantity::BatchL2,
        Quantity::SumGradSquared,
        Quantity::Variance,
        Quantity::DiagGgnMc,
        Quantity::DiagGgnExact,
        Quantity::Kfac,
        Quantity::Kflr,
        Quantity::DiagHessian,
    ];
    let targets = sample_mc_targets(&objective, &params, &x, &y, 1, 0)?;
    let time_quantities = |name: &'static str, qs: &[Quantity]| -> anyhow::Result<Row> {
        let program = QuantityProgram::compile(&objective, n, qs, Some(1))?;
        ensure_fits(
            format!("the {name} row of --batch {n}"),
            program.executable().peak_bytes(),
        )?;
        if a.profile && qs.len() == 1 {
            let feeds = program.feeds(&params, &x, &y, Some(&targets))?;
            print_profile(qs[0].name(), program.executable(), &feeds, a.repeats)?;
        }
        let (time, grad) = time_paired(
            5,
            (a.repeats / 4).max(1),
            &mut || {
                std::hint::black_box(
                    program
                        .run(&params, &x, &y, Some(&targets))
                        .expect("benchmark quantity"),
                );
            },
            &mut &step,
        );
        Ok(Row {
            name,
            time,
            grad,
            flops: Some(program.graph().flops()),
        })
    };
    for q in timed {
        if a.wants(q.name()) {
            rows.push(time_quantities(q.name(), &[q])?);
        }
    }
    // Requesting several quantities shares the forward and backward work.
    let together: Vec<Quantity> = timed
        .iter()
        .copied()
        .filter(|&q| q != Quantity::DiagHessian)
        .collect();
    let joint = match a.only {
        None => Some(time_quantities("together", &together)?),
        Some(_) => None,
    };
    // In units of the paired gradient steps.
    let separate: f64 = rows
        .iter()
        .filter(|row| together.iter().any(|q| q.name() == row.name))
        .map(Row::steps)
        .sum();
    if a.wants("eigsh_top10") {
        let hessian =
            CurvatureOperator::new(&objective, &params, &data, n, Curvature::Hessian, None)?;
        let top10 = SpectrumOptions {
            top: Some(10),
            ..SpectrumOptions::default()
        };
        let (warmup, repeats) = (1, 3);
        let (time, grad) = time_paired(
            warmup,
            repeats,
            &mut || {
                std::hint::black_box(
                    compute(&hessian, &top10, &mut |_, _| {}).expect("benchmark eigenvalues"),
                );
            },
            &mut &step,
        );
        // The products' contractions (the Lanczos arithmetic is not counted).
        let products = hessian.products() / (warmup + repeats);
        rows.push(Row {
            name: "eigsh_top10",
            time,
            grad,
            flops: Some(products as u64 * hessian.flops_per_product()),
        });
    }

    let python = a.python.clone().unwrap_or_else(default_python);
    let torch = if a.no_torch {
        Err("skipped (--no-torch)".to_string())
    } else {
        let repeats = (a.repeats / 4).max(5).to_string();
        let mut names: Vec<&str> = rows.iter().map(|row| torch_row(row.name)).collect();
        names.dedup();
        let batch = n.to_string();
        let problem_args = ["--problem", problem.name(), "--batch", &batch];
        torch_reference(
            &python,
            &[
                &problem_args[..],
                &["--only", &names.join(","), "--repeats", &repeats],
            ]
            .concat(),
        )
        .and_then(|v| {
            // Our gradient step against PyTorch's, alternately: the link
            // between the two runs' "x grad" columns.
            let (ours, theirs) =
                TorchGradient::start(&python, &problem_args)?.paired_with(a.repeats, &mut &step)?;
            Ok((v, ours.median / theirs.median))
        })
    };
    // PyTorch's time of a row and its ratio to the gradient steps it alternated with.
    let torch_row_ms = |key: &str| {
        let (v, _) = torch.as_ref().ok()?;
        let ms = v["median_ms"][key].as_f64()?;
        Some((ms, ms / v["paired_grad_ms"][key].as_f64()?))
    };
    println!(
        "{:<16} {:>10} {:>7} {:>8} {:>8} {:>11} {:>12} {:>13}",
        "quantity",
        "secondo ms",
        "x grad",
        "MFLOP",
        "x limit",
        "PyTorch ms",
        "torch x grad",
        "secondo/torch"
    );
    for row in &rows {
        let ms = row.time.median * 1e3;
        let (tc, tx, ratio) = match (torch_row_ms(torch_row(row.name)), &torch) {
            // Paired ratios only: ours to our gradient, our gradient to
            // PyTorch's, PyTorch's to its gradient.
            (Some((tm, steps)), Ok((_, grads))) => (
                format!("{tm:.3}"),
                format!("{steps:.2}"),
                format!("{:.2}", row.steps() * grads / steps),
            ),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        // The physical limit: the contractions' FLOPs at the GEMM peak. The
        // row's time is taken as its paired gradient steps times the gradient
        // step timed next to the peak, so that drift between the two
        // measurements does not enter.
        let (mflop, limit) = match row.flops {
            Some(f) => (
                format!("{:.1}", f as f64 / 1e6),
                format!("{:.2}", row.steps() * grad.median * peak * 1e9 / f as f64),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<16} {ms:>10.3} {:>7.2} {mflop:>8} {limit:>8} {tc:>11} {tx:>12} {ratio:>13}",
            row.name,
            row.steps()
        );
    }
    if let Some(joint) = joint {
        println!(
            "{} quantities requested together: {:.2} gradient steps; one by one: {:.2} (together / separate = {:.2})",
            together.len(),
            joint.steps(),
            separate,
            joint.steps() / separate
        );
    }
    match torch {
        Ok((v, grads)) => println!(
            "PyTorch {} (curvlinops for products, BackPACK for quantities) with {} threads, measured in the same run; \
             our gradient step / PyTorch's, timed alternately: {grads:.2}",
            v["torch_version"].as_str().unwrap_or("?"),
            v["threads"]
        ),
        Err(reason) => println!("PyTorch reference: {reason}"),
    }
    Ok(())
}

/// One line of the table: a timing, the gradient steps timed alternately
/// with it, and the FLOPs of its contractions where known.
struct Row {
    name: &'static str,
    time: Timing,
    grad: Timing,
    flops: Option<u64>,
}

impl Row {
    /// Its median in units of the paired gradient steps' median.
    fn steps(&self) -> f64 {
        self.time.median / self.grad.median
    }
}

/// Sums per-node times of `exe` over `repeats` runs and prints the top nodes.
pub(super) fn print_profile(
    what: &str,
    exe: &secondo_graph::Executable,
    feeds: &secondo_graph::Feeds,
    repeats: usize,
) -> anyhow::Result<()> {
    let mut total = vec![0.0; exe.graph().len()];
    let start = std::time::Instant::now();
    for _ in 0..repeats.max(1) {
        let (_, times) = exe.run_timed(feeds)?;
        total.iter_mut().zip(times).for_each(|(t, s)| *t += s);
    }
    let wall = start.elapsed().as_secs_f64();
    let mut order: Vec<usize> = (0..total.len()).collect();
    order.sort_by(|&a, &b| total[b].total_cmp(&total[a]));
    println!(
        "profile of {what}: {} nodes, {:.3} ms per run ({} side by side), top 15 (ms per run, each node in full):",
        total.len(),
        wall * 1e3 / repeats.max(1) as f64,
        exe.side_by_side().iter().map(|g| g.len()).sum::<usize>()
    );
    println!("  by operation: {}", by_operation(exe, &total, repeats));
    for &i in order.iter().take(15) {
        let node = exe.graph().node(i);
        let inputs: Vec<String> = node
            .inputs
            .iter()
            .map(|&j| format!("%{j}{:?}", exe.graph().node(j).shape))
            .collect();
        println!(
            "  {:>8.4}  %{i} = {}({}) : {:?}",
            total[i] * 1e3 / repeats.max(1) as f64,
            node.op,
            inputs.join(", "),
            node.shape
        );
    }
    Ok(())
}

/// Per-node times summed by operation (the first word of a node's
/// operation, e.g. `einsum` or `unfold`), costliest first, in ms per run.
fn by_operation(exe: &secondo_graph::Executable, total: &[f64], repeats: usize) -> String {
    let mut sums: Vec<(String, f64)> = Vec::new();
    for (i, t) in total.iter().enumerate() {
        let op = exe.graph().node(i).op.to_string();
        let kind = op.split_whitespace().next().unwrap_or_default().to_string();
        match sums.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, s)) => *s += t,
            None => sums.push((kind, *t)),
        }
    }
    sums.sort_by(|a, b| b.1.total_cmp(&a.1));
    let per_run = 1e3 / repeats.max(1) as f64;
    sums.iter()
        .take(10)
        .map(|(k, t)| format!("{k} {:.1}", t * per_run))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The PyTorch row a row compares with: curvlinops recomputes the forward
/// and backward pass in every product, so both Hessian rows compare with its
/// one.
fn torch_row(name: &str) -> &str {
    match name {
        "hvp_recomputed" => "hvp",
        other => other,
    }
}

/// The benchmark batch as a dataset (for the curvature operators).
fn benchmark_dataset(
    xs: &[f64],
    shape: &[usize],
    labels: &[f64],
) -> anyhow::Result<secondo_data::Dataset> {
    let y = secondo_data::Targets::Classes {
        labels: labels.iter().map(|&l| l as i64).collect(),
        num_classes: 10,
    };
    Ok(secondo_data::Dataset::new(
        xs.to_vec(),
        shape.to_vec(),
        y,
        "benchmark",
    )?)
}
