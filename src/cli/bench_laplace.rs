//! `secondo bench --laplace`: fit, marginal-likelihood optimization and the
//! GLM predictive of Laplace approximations, timed beside laplace-torch
//! (`scripts/reference/bench_laplace.py`, its default backend for each
//! structure) on the same data: the digits MLP with kron and diag over all
//! weights and full over the last layer, and a 1-50-1 tanh regression
//! network on 150 points with full over all weights; and, ours alone
//! (laplace-torch's dense 50,622² matrix would not fit in memory), full
//! over the 50,622 weights of a 1-223-223-1 network on those points.

use std::path::Path;

use secondo::bench::{python_reference, time};
use secondo::laplace::marglik::{optimize_marglik, MarglikOptions};
use secondo::laplace::predictive::{predict, Link, Predictive};
use secondo::laplace::{fit, FitOptions, Likelihood, Structure, Subset};
use secondo::{Objective, ObjectiveConfig};
use secondo_data::Dataset;
use secondo_nn::ParamStore;
use secondo_tensor::DType;

/// One benchmark case.
struct Case {
    name: &'static str,
    spec: &'static str,
    regression: bool,
    structure: Structure,
    subset: Subset,
}

/// A 1-223-223-1 tanh network: 50,622 weights.
const WIDE_REGRESSOR: &str = "linear(1,223),tanh,linear(223,223),tanh,linear(223,1)";

fn cases() -> Vec<Case> {
    let mlp = "linear(64,128),tanh,linear(128,10)";
    vec![
        Case {
            name: "mlp_kron",
            spec: mlp,
            regression: false,
            structure: Structure::Kron,
            subset: Subset::All,
        },
        Case {
            name: "mlp_diag",
            spec: mlp,
            regression: false,
            structure: Structure::Diag,
            subset: Subset::All,
        },
        Case {
            name: "mlp_last_layer_full",
            spec: mlp,
            regression: false,
            structure: Structure::Full,
            subset: Subset::LastLayer,
        },
        Case {
            name: "regression_full",
            spec: "linear(1,50),tanh,linear(50,1)",
            regression: true,
            structure: Structure::Full,
            subset: Subset::All,
        },
        // 50,622 weights: their dense GGN and its eigenvectors would take
        // 41 GB in f64; the Gram kernel of the 150 points is exact.
        Case {
            name: "regression_full_50k",
            spec: WIDE_REGRESSOR,
            regression: true,
            structure: Structure::Full,
            subset: Subset::All,
        },
    ]
}

/// The digits with pixels in [0, 1], as `--data digits` reads them.
pub(super) fn digits() -> Dataset {
    let mut d = secondo_data::digits();
    d.x.iter_mut().for_each(|v| *v /= 16.0);
    d
}

/// The median seconds of fit, 100 marglik steps and the predictive.
fn time_case(case: &Case, data: &Dataset, repeats: usize) -> anyhow::Result<[f64; 3]> {
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: case.spec.into(),
        input_shape: data.sample_shape.clone(),
        loss: if case.regression {
            "mse"
        } else {
            "cross_entropy"
        }
        .into(),
        ..ObjectiveConfig::default()
    })?;
    let params = ParamStore::init(objective.network.spec(), 0, DType::F32);
    let opts = FitOptions {
        structure: case.structure,
        subset: case.subset.clone(),
        likelihood: if case.regression {
            Likelihood::Regression
        } else {
            Likelihood::Classification
        },
        ..FitOptions::default()
    };
    let la = fit(&objective, &params, data, &opts)?;
    let mut failed = None;
    let fit_time = time(0, repeats, || {
        if let Err(e) = fit(&objective, &params, data, &opts) {
            failed.get_or_insert(e);
        }
    });
    let marglik = MarglikOptions {
        sigma: false,
        ..MarglikOptions::default()
    };
    let marglik_time = time(0, repeats, || {
        if let Err(e) = optimize_marglik(&mut la.clone(), &marglik) {
            failed.get_or_insert(e);
        }
    });
    let predictive = Predictive::Glm(Link::Probit);
    let predict_time = time(0, repeats, || {
        if let Err(e) = predict(&objective, &params, &la, data, predictive, 0, 256) {
            failed.get_or_insert(e);
        }
    });
    match failed {
        Some(e) => Err(e.into()),
        None => Ok([fit_time.median, marglik_time.median, predict_time.median]),
    }
}

/// The process's peak resident set, from /proc (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

pub fn run(repeats: usize, python: Option<&Path>) -> anyhow::Result<()> {
    let (digits, wave) = (digits(), secondo_data::wave());
    let reference = match python {
        Some(py) => {
            let dir = tempfile_dir()?;
            let (d, w) = (dir.join("digits.safetensors"), dir.join("wave.safetensors"));
            secondo_data::save_safetensors(&digits, &d)?;
            secondo_data::save_safetensors(&wave, &w)?;
            let r = repeats.to_string();
            let args = [
                "--data",
                path_str(&d)?,
                "--regression",
                path_str(&w)?,
                "--repeats",
                &r,
            ];
            let result = python_reference(py, "bench_laplace.py", &args);
            std::fs::remove_dir_all(&dir)?;
            result
        }
        None => Err("skipped (--no-torch)".into()),
    };
    println!(
        "secondo bench --laplace: f32, {} threads, median of {repeats}; seconds (laplace-torch seconds, ratio)",
        rayon::current_num_threads()
    );
    if let Err(why) = &reference {
        println!("laplace-torch: {why}");
    }
    println!(
        "{:<22} {:>24} {:>24} {:>24}",
        "case", "fit", "marglik (100 steps)", "predict (GLM probit)"
    );
    for case in cases() {
        let data = if case.regression { &wave } else { &digits };
        let ours = time_case(&case, data, repeats)?;
        let theirs = reference.as_ref().ok().map(|r| &r[case.name]);
        let cell = |k: usize, key: &str| match theirs.and_then(|t| t[key].as_f64()) {
            Some(t) => format!("{:.4} ({t:.4}, {:.1}×)", ours[k], t / ours[k]),
            None => format!("{:.4}", ours[k]),
        };
        println!(
            "{:<22} {:>24} {:>24} {:>24}",
            case.name,
            cell(0, "fit"),
            cell(1, "marglik"),
            cell(2, "predict")
        );
    }
    println!(
        "regression_full_50k: secondo alone; laplace-torch's full structure would hold the dense \
         50,622² GGN (10 GB in f32) beside its Cholesky factor"
    );
    let mb = |b: u64| b as f64 / 1e6;
    if let Some(b) = peak_rss() {
        print!("peak memory: secondo {:.0} MB", mb(b));
        match reference
            .as_ref()
            .ok()
            .and_then(|r| r["peak_rss_bytes"].as_u64())
        {
            Some(t) => println!(", laplace-torch {:.0} MB", mb(t)),
            None => println!(),
        }
    }
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("{}: not UTF-8", p.display()))
}

/// A fresh directory for the data handed to the reference script.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("secondo-bench-laplace-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
