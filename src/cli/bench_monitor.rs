//! `secondo bench --monitor`: training steps with the monitor on, against
//! plain training steps timed alternately in the same run, per
//! configuration (tracked every step and every 16th) and per instrument;
//! beside cockpit-for-pytorch's ratios measured by
//! `scripts/reference/bench_cockpit.py` when it is installed.

use std::path::Path;

use secondo::bench::{python_reference, time_paired};
use secondo::curvature::GradientProgram;
use secondo::monitor::{Instrument, Monitor, MonitorConfig, MonitorSetup, STRUCTURE};
use secondo::optim::{Optimizer, Sgd, SgdConfig};
use secondo::Objective;
use secondo_data::Dataset;
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

/// Steps per timed block (every-16th tracking then tracks one of them).
const BLOCK: usize = 16;
/// The learning rate of the timed SGD steps.
const LR: f64 = 0.01;

/// What every timed step works on.
pub struct Problem<'a> {
    pub name: &'a str,
    pub objective: &'a Objective,
    pub params: &'a ParamStore,
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    pub data: &'a Dataset,
}

/// One training run being timed: parameters, optimizer and (maybe) a monitor.
struct Run<'a> {
    problem: &'a Problem<'a>,
    program: &'a GradientProgram,
    params: ParamStore,
    sgd: Sgd<f32>,
    monitor: Option<Monitor<'a>>,
    step: usize,
}

impl<'a> Run<'a> {
    fn new(
        problem: &'a Problem<'a>,
        program: &'a GradientProgram,
        config: Option<&MonitorConfig>,
    ) -> anyhow::Result<Run<'a>> {
        let monitor = match config {
            Some(config) => {
                let setup = MonitorSetup {
                    config,
                    total_steps: usize::MAX,
                    lr: LR,
                    plain_sgd: true,
                    probe: None,
                    seed: 0,
                };
                let mut m = Monitor::new(problem.objective, problem.params, setup)?;
                m.ensure_fits(problem.x.shape()[0])?;
                Some(m)
            }
            None => None,
        };
        Ok(Run {
            problem,
            program,
            params: problem.params.clone(),
            sgd: Sgd::new(SgdConfig {
                lr: LR,
                ..SgdConfig::default()
            })?,
            monitor,
            step: 0,
        })
    }

    /// One training step (monitored where the run has a monitor).
    fn step(&mut self) -> anyhow::Result<()> {
        let p = self.problem;
        let (x, y) = (p.x, p.y);
        let out = match self.monitor.as_mut() {
            Some(m) => {
                let params = &self.params;
                let program = self.program;
                let mut plain = || Ok(program.run(params, x.clone(), y.clone())?);
                m.step(
                    self.step,
                    1,
                    params,
                    x,
                    y,
                    &|| Ok(p.data.clone()),
                    &mut plain,
                )?
            }
            None => self.program.run(&self.params, x.clone(), y.clone())?,
        };
        let grads: Vec<&[f32]> = out
            .grads
            .iter()
            .map(|g| g.as_slice::<f32>().expect("f32 gradients"))
            .collect();
        let mut params: Vec<&mut [f32]> = self
            .params
            .tensors_mut()
            .map(|t| t.as_mut_slice::<f32>().expect("f32 parameters"))
            .collect();
        self.sgd.step(&mut params, &grads)?;
        if let Some(m) = self.monitor.as_mut() {
            m.updated(&self.params)?;
            std::hint::black_box(m.drain());
        }
        self.step += 1;
        Ok(())
    }

    /// FLOPs of this run's step graph with every instrument due (the plain
    /// step's when nothing per-sample is).
    fn step_flops(&mut self) -> anyhow::Result<u64> {
        let n = self.problem.x.shape()[0];
        let monitored = match self.monitor.as_mut() {
            Some(m) => m.step_flops(n)?,
            None => None,
        };
        Ok(monitored.unwrap_or_else(|| self.program.executable().graph().flops()))
    }

    /// Prints the costliest nodes of this run's step graph with every
    /// instrument due (along the parameters themselves where a step reads
    /// a direction).
    fn print_profile(&mut self, name: &str, repeats: usize) -> anyhow::Result<()> {
        let p = self.problem;
        let Some(program) = self
            .monitor
            .as_mut()
            .map(|m| m.step_program(p.x.shape()[0]))
        else {
            return Ok(());
        };
        let Some(program) = program? else {
            return Ok(());
        };
        let feeds = if program.needs_direction() {
            let direction: Vec<Tensor> = p.params.iter().map(|(_, t)| t.clone()).collect();
            program.feeds_along(p.params, p.x, p.y, &direction)?
        } else {
            program.feeds(p.params, p.x, p.y, None)?
        };
        super::bench::print_profile(name, program.executable(), &feeds, repeats)
    }

    fn block(&mut self) {
        for _ in 0..BLOCK {
            self.step().expect("benchmark step");
        }
    }
}

/// A timed row: a monitor list and its tracking interval.
struct Row {
    name: String,
    list: String,
    every: usize,
}

/// The rows: the three configurations every step and every 16th, then
/// each of Cockpit's instruments alone every step.
fn rows(only: Option<&[String]>) -> Vec<Row> {
    let mut rows = Vec::new();
    for config in ["economy", "business", "full"] {
        for every in [1, BLOCK] {
            rows.push(Row {
                name: format!("{config}/{every}"),
                list: config.into(),
                every,
            });
        }
    }
    for i in Instrument::all()
        .into_iter()
        .filter(|i| !STRUCTURE.contains(i))
    {
        rows.push(Row {
            name: format!("{i}/1"),
            list: i.name().into(),
            every: 1,
        });
    }
    rows.retain(|r| only.is_none_or(|o| o.iter().any(|n| n.trim() == r.name)));
    rows
}

/// Times the rows and prints the table.
pub fn run(
    problem: &Problem<'_>,
    repeats: usize,
    only: Option<&[String]>,
    python: Option<&Path>,
    profile: bool,
) -> anyhow::Result<()> {
    let rows = rows(only);
    if rows.is_empty() {
        anyhow::bail!(
            "--only: no monitor row named (rows: economy/1, economy/16, ..., alpha/1, ...)"
        );
    }
    let n = problem.x.shape()[0];
    let program = problem.objective.program(n, true)?;
    let mut plain = Run::new(problem, &program, None)?;
    let cockpit = python.map(|py| cockpit_reference(py, problem, &rows));
    println!(
        "monitored training steps (SGD, lr {LR}) against plain steps, blocks of {BLOCK} \
         steps timed alternately, median of {repeats}"
    );
    println!(
        "{:<18} {:>10} {:>9} {:>9} {:>10} {:>12}",
        "row", "ms/step", "× plain", "FLOPs ×", "cockpit ×", "overhead ÷"
    );
    let plain_flops = plain.step_flops()? as f64;
    for row in &rows {
        let config = MonitorConfig::parse(&row.list, row.every)?;
        let mut monitored = Run::new(problem, &program, Some(&config))?;
        // A tracked step's graph, averaged over the block when tracked every 16th.
        let tracked = monitored.step_flops()? as f64 / plain_flops;
        let flops = 1.0 + (tracked - 1.0) / row.every as f64;
        let (ours, base) =
            time_paired(1, repeats, &mut || monitored.block(), &mut || plain.block());
        let ratio = ours.median / base.median;
        let theirs = cockpit
            .as_ref()
            .and_then(|c| c.as_ref().ok())
            .and_then(|c| c["rows"][&row.name]["ratio"].as_f64());
        let (column, less) = match theirs {
            Some(t) => (
                format!("{t:.2}"),
                format!("{:.0}", (t - 1.0) / (ratio - 1.0).max(1e-3)),
            ),
            None => ("—".into(), "—".into()),
        };
        println!(
            "{:<18} {:>10.3} {:>9.2} {:>9.2} {:>10} {:>12}",
            row.name,
            1e3 * ours.median / BLOCK as f64,
            ratio,
            flops,
            column,
            less
        );
        if profile {
            monitored.print_profile(&row.name, repeats)?;
        }
    }
    if let Some(Err(why)) = cockpit {
        println!("cockpit: {why}");
    }
    println!(
        "× plain: the monitored step's time over the plain step's; FLOPs ×: its graph's FLOPs \
         over the plain step's (without λmax's products or histogram binning: a floor under \
         the time); overhead ÷: Cockpit's overhead (ratio − 1) over ours, \
         in its own run on the same problem"
    );
    Ok(())
}

/// Cockpit's ratios for the rows, from the reference script.
fn cockpit_reference(
    python: &Path,
    problem: &Problem<'_>,
    rows: &[Row],
) -> Result<serde_json::Value, String> {
    let batch = problem.x.shape()[0].to_string();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let only = names.join(",");
    eprintln!(
        "timing cockpit-for-pytorch on {} (minutes)...",
        problem.name
    );
    python_reference(
        python,
        "bench_cockpit.py",
        &[
            "--problem",
            problem.name,
            "--batch",
            &batch,
            "--only",
            &only,
        ],
    )
}
