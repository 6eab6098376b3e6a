//! `secondo train --online-marglik` as a user runs it: the hyperparameters
//! file beside the weights, the evidence per phase on the embedded digits,
//! σ learned for regression, the monitor's run.json, and bad flag
//! combinations refused in one line with exit status 2.

mod common;

use std::path::Path;

use common::binary::{assert_bad_input, s, secondo};
use secondo_data::{Dataset, Targets};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn numbers(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// `secondo train --online-marglik --monitor off --out weights` with `extra`.
fn train_online(weights: &Path, extra: &[&str]) -> std::process::Output {
    let base = [
        "train",
        "--online-marglik",
        "--monitor",
        "off",
        "--out",
        s(weights),
    ];
    secondo(&[&base[..], extra].concat())
}

#[test]
fn digits_learn_a_prior_per_layer_written_beside_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let report = dir.path().join("report");
    let o = secondo(&[
        "train",
        "--model",
        "linear(64,16),tanh,linear(16,10)",
        "--epochs",
        "6",
        "--online-marglik",
        "--marglik-every",
        "2",
        "--marglik-burnin",
        "2",
        "--marglik-structure",
        "diag",
        "--monitor",
        "grad_norm",
        "--track-every",
        "50",
        "--report",
        s(&report),
        "--out",
        s(&weights),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("online marginal likelihood: 2 phases"),
        "{stdout}"
    );
    assert!(weights.exists());
    let summary = json(&dir.path().join("w.marglik.json"));
    assert_eq!(summary["structure"], "diag");
    assert_eq!(summary["prior_shape"], "layer");
    assert_eq!(
        summary["parameters"],
        serde_json::json!(["0.weight", "0.bias", "2.weight", "2.bias"])
    );
    let phases = summary["phases"].as_array().unwrap();
    let epochs: Vec<u64> = phases
        .iter()
        .map(|p| p["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [4, 6]);
    let evidence: Vec<f64> = phases
        .iter()
        .map(|p| p["log_marginal_likelihood"].as_f64().unwrap())
        .collect();
    assert!(evidence[1] > evidence[0], "{evidence:?}");
    let prior = numbers(&summary["prior_precision"]);
    assert_eq!(prior, numbers(&phases[1]["prior_precision"]));
    assert_eq!(prior.len(), 4);
    assert!(prior.iter().all(|&p| p > 0.0 && p != 1.0), "{prior:?}");
    // The monitor's run.json carries the same summary.
    let run = json(&report.join("run.json"));
    assert_eq!(run["online_marglik"], summary);
}

#[test]
fn regression_learns_sigma() {
    let dir = tempfile::tempdir().unwrap();
    let n = 80;
    let x: Vec<f64> = (0..n).map(|i| -2.0 + 4.0 * i as f64 / n as f64).collect();
    let values = x
        .iter()
        .map(|v| (2.0 * v).sin() + 0.1 * (7.0 * v).cos())
        .collect();
    let data = Dataset::new(x, vec![1], Targets::Values { values, width: 1 }, "wave").unwrap();
    let file = dir.path().join("wave.safetensors");
    secondo_data::save_safetensors(&data, &file).unwrap();
    let weights = dir.path().join("w.safetensors");
    let o = train_online(
        &weights,
        &[
            "--model",
            "linear(1,16),tanh,linear(16,1)",
            "--data",
            s(&file),
            "--loss",
            "mse",
            "--lr",
            "0.01",
            "--epochs",
            "30",
            "--marglik-structure",
            "full",
            "--marglik-prior-shape",
            "scalar",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = json(&dir.path().join("w.marglik.json"));
    assert_eq!(summary["likelihood"], "regression");
    assert_eq!(numbers(&summary["prior_precision"]).len(), 1);
    let sigma = summary["sigma"].as_f64().unwrap();
    assert!(sigma > 0.0 && sigma < 0.9, "{sigma}");
    assert!(String::from_utf8_lossy(&o.stdout).contains(", σ "));
    // `secondo laplace` takes the learned prior and σ.
    let la = dir.path().join("la");
    let o = secondo(&[
        "laplace",
        "--model",
        "linear(1,16),tanh,linear(16,1)",
        "--weights",
        s(&weights),
        "--data",
        s(&file),
        "--loss",
        "mse",
        "--likelihood",
        "regression",
        "--test-fraction",
        "0.2",
        "--structure",
        "full",
        "--prior-precision",
        &format!("file:{}", dir.path().join("w.marglik.json").display()),
        "--out",
        s(&la),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fitted = json(&la.join("laplace.json"));
    assert_eq!(fitted["sigma"].as_f64().unwrap(), sigma);
    assert_eq!(fitted["prior_precision"], summary["prior_precision"]);
    close(&fitted, &summary);
}

/// The evidence `secondo laplace` reports is the kept phase's.
fn close(fitted: &serde_json::Value, summary: &serde_json::Value) {
    let got = fitted["log_marginal_likelihood"].as_f64().unwrap();
    let want = summary["log_marginal_likelihood"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9 * want.abs(), "{got} vs {want}");
}

#[test]
fn laplace_takes_the_learned_diagonal_prior_of_the_best_phase() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let o = train_online(
        &weights,
        &[
            "--model",
            "linear(64,10)",
            "--epochs",
            "3",
            "--marglik-structure",
            "full",
            "--marglik-prior-shape",
            "diagonal",
            "--marglik-temperature",
            "1.5",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = json(&dir.path().join("w.marglik.json"));
    assert_eq!(
        (
            &summary["prior_shape"],
            &summary["keep"],
            &summary["temperature"]
        ),
        (&"diagonal".into(), &"best".into(), &1.5.into())
    );
    assert_eq!(summary["prior_file"], "w.prior.safetensors");
    assert!(summary["prior_precision"].is_null());
    let phases = summary["phases"].as_array().unwrap();
    let best = phases
        .iter()
        .max_by(|a, b| {
            let e = |p: &serde_json::Value| p["log_marginal_likelihood"].as_f64().unwrap();
            e(a).total_cmp(&e(b))
        })
        .unwrap();
    assert_eq!(summary["kept_epoch"], best["epoch"]);
    assert_eq!(
        summary["log_marginal_likelihood"],
        best["log_marginal_likelihood"]
    );
    let la = dir.path().join("la");
    let laplace = |prior: &str, extra: &[&str]| {
        let base = [
            "laplace",
            "--data",
            "digits",
            "--test-fraction",
            "0.2",
            "--prior-precision",
            prior,
            "--out",
            s(&la),
        ];
        secondo(&[&base[..], extra].concat())
    };
    let trained = ["--model", "linear(64,10)", "--weights", s(&weights)];
    let from_json = format!("file:{}", dir.path().join("w.marglik.json").display());
    let from_file = format!("file:{}", dir.path().join("w.prior.safetensors").display());
    let mut evidence = Vec::new();
    for prior in [&from_json, &from_file] {
        let o = laplace(prior, &[&trained[..], &["--structure", "full"]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let fitted = json(&la.join("laplace.json"));
        assert_eq!(fitted["prior_shape"], "diagonal");
        assert_eq!(fitted["temperature"], 1.5);
        assert_eq!(fitted["prior_precision"].as_array().unwrap().len(), 650);
        close(&fitted, &summary);
        evidence.push(fitted["log_marginal_likelihood"].clone());
        std::fs::remove_dir_all(&la).unwrap();
    }
    assert_eq!(evidence[0], evidence[1]);
    // What the learned prior cannot be used with: a Kronecker posterior,
    // a shape of its own, another network.
    let cases: &[(&str, &[&str], &str)] = &[
        (
            &from_json,
            &["--structure", "kron"],
            "a diagonal prior (one precision per weight) needs --structure diag or full",
        ),
        (
            &from_json,
            &["--structure", "full", "--prior-shape", "layer"],
            "--prior-shape: --prior-precision file:",
        ),
        (
            &from_file,
            &[
                "--structure",
                "full",
                "--model",
                "linear(64,8),tanh,linear(8,10)",
            ],
            "w.prior.safetensors: tensor 'prior_precision/0.weight' was learned for a \
             parameter of shape [10, 64], '0.weight' of --model has [8, 64]",
        ),
    ];
    for (prior, extra, needle) in cases {
        let model = match extra.contains(&"--model") {
            true => &[][..],
            false => &trained[..],
        };
        assert_bad_input(&laplace(prior, &[model, extra].concat()), needle, &la);
    }
}

#[test]
fn bad_flag_combinations_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.safetensors");
    let floats = dir.path().join("floats.safetensors");
    let values = vec![0.5; 8];
    let data = Dataset::new(
        vec![0.0; 8],
        vec![1],
        Targets::Values { values, width: 1 },
        "floats",
    )
    .unwrap();
    secondo_data::save_safetensors(&data, &floats).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--marglik-every", "2"],
            "--marglik-every needs --online-marglik",
        ),
        (
            &["--online-marglik", "--weight-decay", "0.1"],
            "drop --weight-decay",
        ),
        (
            &["--online-marglik", "--optimizer", "kfac"],
            "--online-marglik trains with sgd, adam or adamw",
        ),
        (
            &["--online-marglik", "--marglik-structure", "lowrank:0"],
            "--marglik-structure 'lowrank:0'",
        ),
        (
            &["--online-marglik", "--marglik-lr", "-1"],
            "--marglik-lr must be positive",
        ),
        (
            &["--online-marglik", "--marglik-burnin", "3"],
            "leave no hyperparameter phase in 3 epochs",
        ),
        (
            &["--online-marglik", "--marglik-prior-shape", "diagonal"],
            "--marglik-prior-shape diagonal: a Kronecker-factored or low-rank posterior",
        ),
        (
            &["--online-marglik", "--marglik-prior-shape", "weight"],
            "--marglik-prior-shape 'weight': expected scalar, layer or diagonal",
        ),
        (
            &["--online-marglik", "--marglik-temperature", "-1"],
            "--marglik-temperature must be positive and finite, got -1",
        ),
        (
            &["--marglik-temperature", "2"],
            "--marglik-temperature needs --online-marglik",
        ),
        (
            &["--online-marglik", "--marglik-keep", "first"],
            "--marglik-keep 'first': expected best or last",
        ),
        (
            &[
                "--online-marglik",
                "--model",
                "linear(64,8),layernorm(8),linear(8,10)",
            ],
            "--structure kron: parameter '1.weight' has no Kronecker factors",
        ),
        (
            &[
                "--online-marglik",
                "--model",
                "linear(1,1)",
                "--data",
                s(&floats),
                "--test-fraction",
                "0.5",
                "--loss",
                "bce_with_logits",
            ],
            "--loss bce_with_logits is the negative log of no likelihood",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["train"];
        if !extra.contains(&"--model") {
            args.extend(["--model", "linear(64,10)"]);
        }
        args.extend(["--epochs", "3", "--monitor", "off", "--out", s(&out)]);
        args.extend_from_slice(extra);
        assert_bad_input(&secondo(&args), needle, &out);
        assert!(!dir.path().join("w.marglik.json").exists());
        assert!(!dir.path().join("w.prior.safetensors").exists());
    }
}
