//! `secondo laplace` and `secondo predict` as a user runs them: the files
//! they write, byte-for-byte determinism, a saved posterior applied again,
//! and bad input refused in one line with exit status 2 and nothing written.

mod common;

use std::path::Path;

use common::binary::{assert_bad_input, s, secondo, secondo_with};
use secondo_data::{Dataset, Targets};

const MODEL: &str = "linear(64,10)";

fn laplace(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "laplace",
        "--model",
        MODEL,
        "--data",
        "digits",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    secondo(&args)
}

/// `secondo predict` of the digits with the saved `posterior` (which holds
/// the network): the bytes it writes (into `dir`).
fn predict(dir: &Path, posterior: &Path) -> Vec<u8> {
    let p = dir.join("p.safetensors");
    let o = secondo(&[
        "predict",
        "--posterior",
        s(posterior),
        "--data",
        "digits",
        "--out",
        s(&p),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(&p).unwrap()
}

fn json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("laplace.json")).unwrap()).unwrap()
}

#[test]
fn classification_writes_posterior_predictions_metrics_and_a_reliability_diagram() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let extra = [
        "--structure",
        "kron",
        "--prior-precision",
        "optimize",
        "--marglik-steps",
        "20",
        "--ood-data",
        "digits",
        "--test-fraction",
        "0.2",
    ];
    // The same bytes on one thread as on all of them.
    for (out, threads) in [(&a, None), (&b, Some("1"))] {
        let mut args = vec![
            "laplace",
            "--model",
            MODEL,
            "--data",
            "digits",
            "--out",
            s(out),
        ];
        args.extend_from_slice(&extra);
        let env: Vec<(&str, &str)> = threads
            .map(|t| ("RAYON_NUM_THREADS", t))
            .into_iter()
            .collect();
        let o = secondo_with(&args, &env);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for name in [
        "laplace.safetensors",
        "predictions.safetensors",
        "laplace.json",
        "reliability.svg",
    ] {
        assert_eq!(
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
            "{name}"
        );
    }
    let summary = json(&a);
    assert_eq!(summary["weights"], 650);
    assert_eq!(summary["test_samples"], 360);
    assert_eq!(summary["tuning"]["method"], "marglik");
    assert!(summary["log_marginal_likelihood"]
        .as_f64()
        .unwrap()
        .is_finite());
    for side in ["map", "laplace"] {
        for metric in ["nll", "accuracy", "ece", "brier"] {
            assert!(
                summary["metrics"][side][metric]
                    .as_f64()
                    .unwrap()
                    .is_finite(),
                "{side} {metric}"
            );
        }
    }
    // Test and OOD sets from one distribution: entropy cannot tell them apart well.
    let auroc = summary["ood_auroc"]["laplace"].as_f64().unwrap();
    assert!((0.3..0.7).contains(&auroc), "{auroc}");
    assert!(!a.join("band.svg").exists());
    assert!(!a.join("samples.safetensors").exists());

    // The saved posterior applied by `predict` to all digits, and `laplace`
    // predicting on all digits, agree to the byte.
    let whole = dir.path().join("whole");
    let o = laplace(
        &whole,
        &[
            "--structure",
            "kron",
            "--prior-precision",
            "3",
            "--samples",
            "4",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let posterior = whole.join("laplace.safetensors");
    assert_eq!(
        predict(dir.path(), &posterior),
        std::fs::read(whole.join("predictions.safetensors")).unwrap()
    );
    // Another network needs its own weights: the saved ones are the posterior's.
    let p = dir.path().join("other.safetensors");
    let o = secondo(&[
        "predict",
        "--posterior",
        s(&posterior),
        "--model",
        "linear(64,10),tanh,linear(10,10)",
        "--data",
        "digits",
        "--out",
        s(&p),
    ]);
    assert_bad_input(&o, "not the network saved with the posterior", &p);
    // Four draws of the 650 weights, around the MAP.
    let samples = secondo_nn::read_safetensors(&whole.join("samples.safetensors")).unwrap();
    assert_eq!(samples["samples"].shape(), &[4, 650]);
}

#[test]
fn a_temperature_is_saved_with_the_posterior_and_applied_by_predict() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let args = [
            &["--structure", "diag", "--prior-precision", "3"][..],
            extra,
        ]
        .concat();
        let o = laplace(&out, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let (cold, plain) = (run("cold", &["--temperature", "0.25"]), run("plain", &[]));
    let (summary, untempered) = (json(&cold), json(&plain));
    assert_eq!(summary["temperature"], 0.25);
    assert_eq!(untempered["temperature"], 1.0);
    assert_ne!(
        summary["log_marginal_likelihood"],
        untempered["log_marginal_likelihood"]
    );
    let posterior = cold.join("laplace.safetensors");
    let saved = secondo_nn::read_safetensors(&posterior).unwrap();
    assert_eq!(saved["temperature"].to_f64_vec(), vec![0.25]);
    // A colder posterior, other predictions; `predict` on the saved one
    // reproduces them to the byte (it applies the saved temperature).
    let predictions = std::fs::read(cold.join("predictions.safetensors")).unwrap();
    assert_ne!(
        predictions,
        std::fs::read(plain.join("predictions.safetensors")).unwrap()
    );
    assert_eq!(predict(dir.path(), &posterior), predictions);
}

#[test]
fn regression_tunes_sigma_and_draws_the_predictive_band() {
    let dir = tempfile::tempdir().unwrap();
    let n = 60;
    let x: Vec<f64> = (0..n).map(|i| -2.0 + 4.0 * i as f64 / n as f64).collect();
    let values = x
        .iter()
        .map(|v| (2.0 * v).sin() + 0.1 * (7.0 * v).cos())
        .collect();
    let data = Dataset::new(x, vec![1], Targets::Values { values, width: 1 }, "wave").unwrap();
    let file = dir.path().join("wave.safetensors");
    secondo_data::save_safetensors(&data, &file).unwrap();
    let out = dir.path().join("out");
    let o = secondo(&[
        "laplace",
        "--model",
        "linear(1,8),tanh,linear(8,1)",
        "--data",
        s(&file),
        "--loss",
        "mse",
        "--likelihood",
        "regression",
        "--sigma",
        "0.5",
        "--structure",
        "full",
        "--prior-precision",
        "optimize",
        "--predictive",
        "glm-probit",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = json(&out);
    let sigma = summary["sigma"].as_f64().unwrap();
    assert!(sigma > 0.0 && sigma != 0.5, "{sigma}");
    assert!(summary["metrics"]["laplace"]["rmse"]
        .as_f64()
        .unwrap()
        .is_finite());
    assert!(std::fs::read_to_string(out.join("band.svg"))
        .unwrap()
        .contains("polyline"));
    assert!(!out.join("reliability.svg").exists());
}

#[test]
fn bad_input_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cases: &[(&[&str], &str)] = &[
        (&["--prior-precision", "0"], "--prior-precision '0'"),
        (&["--prior-precision", "optimize:cv"], "--val-data"),
        (
            &["--sigma", "1"],
            "--sigma is the observation noise of --likelihood regression",
        ),
        (
            &["--likelihood", "regression"],
            "--likelihood regression needs --loss mse",
        ),
        (
            &[
                "--likelihood",
                "regression",
                "--loss",
                "mse",
                "--sigma",
                "0",
            ],
            "--sigma must be positive",
        ),
        (
            &["--subset", "subnetwork:9.*"],
            "--subset subnetwork:9.* selects no parameter",
        ),
        (&["--structure", "lowrank:0"], "--structure 'lowrank:0'"),
        (
            &["--temperature", "0"],
            "--temperature must be positive and finite, got 0",
        ),
        (
            &["--temperature", "-2"],
            "--temperature must be positive and finite, got -2",
        ),
        (
            &["--temperature", "inf"],
            "--temperature must be positive and finite, got inf",
        ),
        (
            &["--temperature", "NaN"],
            "--temperature must be positive and finite, got NaN",
        ),
        (
            &[
                "--prior-precision",
                "file:prior.safetensors",
                "--temperature",
                "2",
            ],
            "--temperature: --prior-precision file:prior.safetensors gives the prior's shape, \
             σ and temperature",
        ),
        (&["--predictive", "nn:0"], "--predictive 'nn:0'"),
        (&["--prior-shape", "diagonal"], "--prior-shape diagonal"),
        (&["--curvature", "ef"], "--curvature ef"),
        (
            &["--subset", "subnetwork:variance:5"],
            "takes --structure full",
        ),
        (
            &["--subset", "subnetwork:variance:0"],
            "--subset 'subnetwork:variance:0'",
        ),
    ];
    for (extra, needle) in cases {
        assert_bad_input(&laplace(&out, extra), needle, &out);
    }
    // Learned priors that cannot be read (secondo train --online-marglik
    // writes readable ones: tests/online_marglik_cli.rs).
    let not_json = dir.path().join("w.marglik.json");
    std::fs::write(&not_json, "{ not json").unwrap();
    let no_file = dir.path().join("other.json");
    std::fs::write(&no_file, "{}").unwrap();
    let not_prior = dir.path().join("x.safetensors");
    let d = Dataset::new(
        vec![0.0; 2],
        vec![1],
        Targets::Values {
            values: vec![0.0; 2],
            width: 1,
        },
        "x",
    )
    .unwrap();
    secondo_data::save_safetensors(&d, &not_prior).unwrap();
    let file = |p: &Path| format!("file:{}", p.display());
    let cases = [
        (
            file(&dir.path().join("missing.json")),
            "missing.json: cannot read it",
        ),
        (file(&not_json), "w.marglik.json: not valid JSON"),
        (file(&no_file), "other.json: no \"prior_file\""),
        (file(&not_prior), "x.safetensors: not a learned prior"),
        (
            file(&dir.path().join("none.safetensors")),
            "none.safetensors",
        ),
    ];
    for (prior, needle) in &cases {
        assert_bad_input(&laplace(&out, &["--prior-precision", prior]), needle, &out);
    }
    // A full posterior over 9610 weights does not fit in 100 MB.
    let big = [
        "laplace",
        "--model",
        "linear(64,128),tanh,linear(128,10)",
        "--data",
        "digits",
        "--structure",
        "full",
        "--out",
        s(&out),
    ];
    let o = secondo_with(&big, &[("SECONDO_MEMORY_LIMIT", "100M")]);
    assert_bad_input(&o, "--structure full over 9610 weights", &out);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--structure kron, diag or lowrank:K"));
}
