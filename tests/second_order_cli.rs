//! `secondo train --optimizer` with the second-order methods as a user runs
//! them: they train the digits MLP under the default monitor, repeat bit for
//! bit, and refuse bad settings on one line with exit status 2.

mod common;

use common::binary::{assert_bad_input, s, secondo, stderr};

const SMALL: &str = "linear(64,16),tanh,linear(16,10)";

fn train_loss(stdout: &[u8]) -> f64 {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().find(|l| l.starts_with("train loss")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn second_order_methods_train_under_the_default_monitor_and_repeat() {
    let dir = tempfile::tempdir().unwrap();
    for (optimizer, extra) in [
        ("kfac", &[][..]),
        (
            "newton-cg",
            &["--adapt-damping", "--curvature-batch", "32"][..],
        ),
        (
            "ekfac",
            &[
                "--second-order",
                "2.*",
                "--first-order-optimizer",
                "adam",
                "--first-order-lr",
                "1e-2",
            ][..],
        ),
    ] {
        let mut weights = Vec::new();
        for run in 0..2 {
            let out = dir.path().join(format!("{optimizer}{run}.safetensors"));
            let report = dir.path().join(format!("{optimizer}{run}"));
            let mut args = vec![
                "train",
                "--optimizer",
                optimizer,
                "--model",
                SMALL,
                "--epochs",
                "2",
                "--batch",
                "128",
                "--out",
                s(&out),
                "--report",
                s(&report),
            ];
            args.extend_from_slice(extra);
            let o = secondo(&args);
            assert!(o.status.success(), "{optimizer}: {}", stderr(&o));
            assert!(
                report.join("report.html").exists(),
                "{optimizer}: no report"
            );
            assert!(
                train_loss(&o.stdout) < 0.5,
                "{optimizer}: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            weights.push(std::fs::read(&out).unwrap());
        }
        assert_eq!(weights[0], weights[1], "{optimizer}: same seed, same bytes");
    }
}

#[test]
fn bad_second_order_settings_fail_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.safetensors");
    let cases: &[(&[&str], &str)] = &[
        (&["--optimizer", "kfac", "--damping", "-1"], "--damping"),
        (
            &["--optimizer", "fractional-ngd", "--power", "1.5"],
            "--power",
        ),
        (&["--optimizer", "kfac", "--power", "0"], "--power"),
        (
            &["--optimizer", "kfac", "--inverse-every", "0"],
            "--inverse-every",
        ),
        (&["--optimizer", "kfac", "--ema", "1"], "--ema"),
        (
            &["--optimizer", "newton-cg", "--cg-iters", "0"],
            "--cg-iters",
        ),
        (
            &["--optimizer", "newton-cg", "--trust-radius", "0"],
            "--trust-radius",
        ),
        (
            &["--optimizer", "kfac", "--curvature", "hessian"],
            "--curvature hessian",
        ),
        (
            &["--optimizer", "kfac", "--curvature", "hesian"],
            "--curvature",
        ),
        (&["--optimizer", "ngd"], "at most 4096 parameters"),
        (&["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
        (
            &["--damping", "0.1"],
            "--damping applies to second-order optimizers",
        ),
        (
            &[
                "--optimizer",
                "kfac",
                "--switch-at",
                "epoch=1",
                "--first-order-optimizer",
                "sgd",
            ],
            "leaves none of the 1 epochs",
        ),
        (
            &[
                "--optimizer",
                "kfac",
                "--switch-at",
                "step=0",
                "--first-order-optimizer",
                "sgd",
            ],
            "--switch-at 'step=0'",
        ),
        (
            &["--optimizer", "kfac", "--switch-at", "step=5"],
            "need --first-order-optimizer",
        ),
        (
            &[
                "--optimizer",
                "kfac",
                "--second-order",
                "9.*",
                "--first-order-optimizer",
                "sgd",
            ],
            "--second-order '9.*' matches no parameter",
        ),
        (
            &["--optimizer", "kfac", "--second-order", "2.*"],
            "need --first-order-optimizer",
        ),
        (
            &["--optimizer", "kfac", "--first-order-optimizer", "sgd"],
            "needs --switch-at or --second-order",
        ),
        (
            &[
                "--optimizer",
                "kfac",
                "--switch-at",
                "step=5",
                "--first-order-optimizer",
                "ekfac",
            ],
            "--first-order-optimizer ekfac",
        ),
        (
            &[
                "--optimizer",
                "kfac",
                "--model",
                "linear(64,16),batchnorm1d(16),linear(16,10)",
            ],
            "no Kronecker structure",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["train", "--epochs", "1", "--out", s(&out)];
        all.extend_from_slice(args);
        assert_bad_input(&secondo(&all), needle, &out);
    }
}

#[test]
fn help_explains_every_second_order_flag() {
    let o = secondo(&["train", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--damping",
        "--adapt-damping",
        "--curvature ",
        "--curvature-batch",
        "--inverse-every",
        "--ema",
        "--power",
        "--cg-iters",
        "--trust-radius",
        "--kl-clip",
        "--switch-at",
        "--first-order-optimizer",
        "--first-order-lr",
        "--second-order",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("newton-cg"), "{help}");
}
