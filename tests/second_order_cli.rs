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
        (&["--optimizer", "det-avg"], "at most 4096 parameters"),
        (
            &["--optimizer", "det-avg", "--structure", "matrix-free"],
            "--structure matrix-free: det-avg weights by determinants",
        ),
        (
            &["--optimizer", "fractional-ngd", "--structure", "dense"],
            "--structure dense: fractional-ngd",
        ),
        (
            &["--optimizer", "kfac", "--structure", "dense"],
            "only fractional-ngd and det-avg choose their structure",
        ),
        (
            &[
                "--optimizer",
                "det-avg",
                "--structure",
                "kronecker",
                "--curvature",
                "hessian",
            ],
            "--curvature hessian: det-avg --structure kronecker",
        ),
        (
            &["--optimizer", "fractional-ngd", "--structure", "lowrank:0"],
            "--structure 'lowrank:0': expected kronecker, matrix-free, dense or lowrank:K with K ≥ 1",
        ),
        (
            &["--optimizer", "fractional-ngd", "--structure", "lowrank:"],
            "--structure 'lowrank:'",
        ),
        (
            &[
                "--optimizer",
                "ngd",
                "--structure",
                "lowrank:650",
                "--model",
                "linear(64,10)",
            ],
            "--structure lowrank:650: K must be below the 650 parameters",
        ),
        (
            &["--optimizer", "kfac", "--structure", "lowrank:4"],
            "--structure lowrank:4: only fractional-ngd, ngd and ef take a low-rank curvature (not kfac)",
        ),
        (
            &["--optimizer", "det-avg", "--structure", "lowrank:4"],
            "(not det-avg)",
        ),
        (
            &["--optimizer", "fractional-ngd", "--bulk-probes", "4"],
            "--bulk-probes applies to --structure lowrank:K",
        ),
        (
            &[
                "--optimizer",
                "fractional-ngd",
                "--structure",
                "lowrank:4",
                "--bulk-probes",
                "0",
            ],
            "--bulk-probes",
        ),
        (
            &["--optimizer", "kfac", "--det-avg-window", "2"],
            "--det-avg-window 2: only det-avg",
        ),
        (
            &["--optimizer", "det-avg", "--det-avg-window", "0"],
            "--det-avg-window",
        ),
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
            "--switch-at needs --first-order-optimizer",
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
            "--second-order needs --first-order-optimizer",
        ),
        (
            &["--optimizer", "kfac", "--first-order-optimizer", "sgd"],
            "needs --switch-at, --switch-when or --second-order",
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
    fn late(when: &str) -> Vec<&str> {
        vec![
            "--optimizer",
            "newton-cg",
            "--first-order-optimizer",
            "sgd",
            "--switch-when",
            when,
        ]
    }
    let switch_cases: Vec<(Vec<&str>, &str)> = vec![
        (
            late("grad_nrm<0.05"),
            "--switch-when 'grad_nrm<0.05': unknown instrument 'grad_nrm'",
        ),
        (
            late("grad_norm=0.05"),
            "--switch-when 'grad_norm=0.05': expected INSTRUMENT<X or INSTRUMENT>X",
        ),
        (late("grad_norm<"), "--switch-when 'grad_norm<': expected"),
        (late("alpha>big"), "--switch-when 'alpha>big': expected"),
        (
            late("grad_hist_1d<1"),
            "grad_hist_1d is not one number per step",
        ),
        (
            late("hess_top_ev>1"),
            "hess_top_ev is not one number per step",
        ),
        (late("cabs<100"), "--switch-when cabs<100: defined for SGD"),
        (
            [
                late("mean_gsnr<1"),
                vec![
                    "--model",
                    "linear(64,16),batchnorm1d(16),relu,linear(16,10)",
                ],
            ]
            .concat(),
            "--switch-when mean_gsnr<1: per-sample instruments need",
        ),
        (
            [late("loss<1"), vec!["--switch-at", "step=3"]].concat(),
            "'--switch-when <INSTRUMENT<X>' cannot be used with '--switch-at",
        ),
        (
            vec!["--optimizer", "newton-cg", "--switch-when", "loss<1"],
            "--switch-when needs --first-order-optimizer",
        ),
        (
            vec!["--switch-when", "loss<1"],
            "needs --first-order-optimizer",
        ),
    ];
    let cases = cases
        .iter()
        .map(|(args, needle)| (args.to_vec(), *needle))
        .chain(switch_cases);
    for (args, needle) in cases {
        let mut all = vec!["train", "--epochs", "1", "--out", s(&out)];
        all.extend_from_slice(&args);
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
        "--cg-precondition",
        "--structure",
        "--det-avg-window",
        "--lanczos-steps",
        "--bulk-probes",
        "lowrank:K",
        "--trust-radius",
        "--kl-clip",
        "--switch-at",
        "--switch-when",
        "--first-order-optimizer",
        "--first-order-lr",
        "--second-order",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("newton-cg"), "{help}");
}

/// The lines of a run's `instruments.jsonl`.
fn records(report: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(report.join("instruments.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The norm over all parameters of a record's per-parameter `grad_norm`.
fn grad_norm(record: &serde_json::Value) -> f64 {
    record["grad_norm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_f64().unwrap().powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn switch_when_hands_over_to_newton_cg_the_step_after_the_threshold_is_met() {
    let dir = tempfile::tempdir().unwrap();
    let run = |when: &str, name: &str| {
        let out = dir.path().join(format!("{name}.safetensors"));
        let report = dir.path().join(name);
        let o = secondo(&[
            "train",
            "--model",
            SMALL,
            "--epochs",
            "2",
            "--batch",
            "128",
            "--optimizer",
            "newton-cg",
            "--first-order-optimizer",
            "sgd",
            "--switch-when",
            when,
            "--monitor",
            "off",
            "--out",
            s(&out),
            "--report",
            s(&report),
        ]);
        assert!(o.status.success(), "{when}: {}", stderr(&o));
        let run: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report.join("run.json")).unwrap())
                .unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            records(&report),
            run["switched_at"].clone(),
        )
    };
    // No gradient norm falls below 0: SGD throughout, grad_norm tracked
    // though --monitor is off.
    let (stdout, sgd, switched_at) = run("grad_norm<0", "never");
    assert!(
        stdout.contains("never switched (--switch-when grad_norm<0): sgd ran throughout"),
        "{stdout}"
    );
    assert!(switched_at.is_null());
    assert_eq!(sgd.len(), 24, "every step tracked");
    // A threshold between a step's norm and every norm before it, from step 2 on.
    let norms: Vec<f64> = sgd.iter().map(grad_norm).collect();
    let lowest = |k: usize| norms[..k].iter().cloned().fold(f64::INFINITY, f64::min);
    let k = (2..norms.len() - 3)
        .find(|&k| norms[k] < lowest(k))
        .expect("a new lowest norm");
    let x = 0.5 * (norms[k] + lowest(k));
    let (stdout, switched, switched_at) = run(&format!("grad_norm<{x}"), "late");
    let line = format!(
        "switched from sgd to newton-cg at step {} (--switch-when grad_norm<{x})",
        k + 1
    );
    assert!(stdout.contains(&line), "norms {norms:?}: {stdout}");
    assert_eq!(switched_at, serde_json::json!(k + 1));
    // SGD's run up to the switch (the record of step k + 1 is taken before
    // its update), newton-cg's after it.
    assert_eq!(switched[..=k + 1], sgd[..=k + 1]);
    assert_ne!(switched[k + 2]["grad_norm"], sgd[k + 2]["grad_norm"]);
}

/// Two epochs of `SMALL` with `optimizer` and `flags`: the final train
/// loss and the written weights.
fn train_small(dir: &std::path::Path, optimizer: &str, flags: &[&str]) -> (f64, Vec<u8>) {
    let out = dir.join(format!("{optimizer}{}.safetensors", flags.join("")));
    let mut args = vec![
        "train",
        "--model",
        SMALL,
        "--epochs",
        "2",
        "--batch",
        "128",
        "--optimizer",
        optimizer,
        "--monitor",
        "off",
        "--out",
        s(&out),
    ];
    args.extend_from_slice(flags);
    let o = secondo(&args);
    assert!(o.status.success(), "{optimizer} {flags:?}: {}", stderr(&o));
    (train_loss(&o.stdout), std::fs::read(&out).unwrap())
}

#[test]
fn newton_cg_trains_with_the_diagonal_cg_preconditioner() {
    let dir = tempfile::tempdir().unwrap();
    let run = |precondition: &str| {
        let (loss, weights) = train_small(
            dir.path(),
            "newton-cg",
            &["--cg-precondition", precondition],
        );
        assert!(loss < 0.5, "{precondition}: train loss {loss}");
        weights
    };
    // Preconditioning changes CG's iterates, so where Martens' rule stops.
    assert!(run("diag") != run("none"), "the preconditioner was applied");
}

#[test]
fn fractional_ngd_trains_on_the_matrix_free_structure() {
    let dir = tempfile::tempdir().unwrap();
    let run =
        |structure: &str| train_small(dir.path(), "fractional-ngd", &["--structure", structure]);
    let (loss, weights) = run("matrix-free");
    // ln 10 ≈ 2.3 at the start.
    assert!(loss < 1.5, "matrix-free: train loss {loss}");
    assert!(weights != run("kronecker").1, "the structure was applied");
}

#[test]
fn fractional_ngd_and_ngd_train_on_the_low_rank_structure() {
    let dir = tempfile::tempdir().unwrap();
    let low_rank = ["--structure", "lowrank:8"];
    let (loss, weights) = train_small(dir.path(), "fractional-ngd", &low_rank);
    // ln 10 ≈ 2.3 at the start.
    assert!(loss < 1.5, "fractional-ngd: train loss {loss}");
    let kronecker = train_small(dir.path(), "fractional-ngd", &[]).1;
    assert!(weights != kronecker, "the structure was applied");
    let probes = [&low_rank[..], &["--bulk-probes", "2"]].concat();
    let fewer = train_small(dir.path(), "fractional-ngd", &probes).1;
    assert!(weights != fewer, "the probes were applied");
    // Any curvature: a Hessian's negative eigenvalues count as zero.
    let hessian = [&low_rank[..], &["--curvature", "hessian"]].concat();
    let (loss, _) = train_small(dir.path(), "fractional-ngd", &hessian);
    assert!(loss < 1.5, "hessian: train loss {loss}");
    // ngd takes it too (for models beyond its dense limit), here with the
    // quadratic model's step: the bulk's mean is small where the GGN's
    // rank is, and a fixed step along the complement too long.
    let adaptive = [&low_rank[..], &["--adapt-damping"]].concat();
    let (loss, _) = train_small(dir.path(), "ngd", &adaptive);
    assert!(loss < 1.5, "ngd: train loss {loss}");
}

#[test]
fn det_avg_trains_in_the_kfac_eigenbasis_and_over_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let kronecker = ["--structure", "kronecker"];
    let (loss, weights) = train_small(dir.path(), "det-avg", &kronecker);
    // ln 10 ≈ 2.3 at the start.
    assert!(loss < 1.5, "kronecker: train loss {loss}");
    let windowed = [&kronecker[..], &["--det-avg-window", "3"]].concat();
    let (loss, windowed) = train_small(dir.path(), "det-avg", &windowed);
    assert!(loss < 1.5, "window: train loss {loss}");
    assert!(weights != windowed, "the window was applied");
}

#[test]
fn bench_optimizers_prints_the_table_and_writes_the_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let args = [
        "bench",
        "--optimizers",
        "--networks",
        "autoencoder,cnn",
        "--only",
        "sgd,adam,kfac,newton-cg",
        "--steps",
        "2",
        "--out",
        s(&out),
    ];
    let o = secondo(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for column in [
        "optimizer",
        "steps→target",
        "s→target",
        "× sgd step",
        "train loss",
        "test loss",
        "test acc.",
    ] {
        assert!(text.contains(column), "no column '{column}' in:\n{text}");
    }
    for row in ["sgd ", "adam ", "kfac ", "newton-cg ", "adam grid"] {
        assert!(text.contains(row), "no row '{row}' in:\n{text}");
    }
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "autoencoder-loss-vs-steps.svg",
            "autoencoder-loss-vs-time.svg",
            "cnn-loss-vs-steps.svg",
            "cnn-loss-vs-time.svg",
            "optimizers.json"
        ]
    );
    let svg = std::fs::read_to_string(out.join("cnn-loss-vs-steps.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("kfac"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("optimizers.json")).unwrap()).unwrap();
    let adam = &json["autoencoder"]["rows"]["adam"];
    assert_eq!(adam["runs"].as_array().unwrap().len(), 5);
    assert_eq!(adam["runs"][0]["train_loss"].as_array().unwrap().len(), 3);
    // Same seed, same curves: the loss against steps repeats byte for byte.
    let again = dir.path().join("again");
    let mut args = args.to_vec();
    let last = args.len() - 1;
    args[last] = s(&again);
    assert!(secondo(&args).status.success());
    let read =
        |d: &std::path::Path| std::fs::read(d.join("autoencoder-loss-vs-steps.svg")).unwrap();
    assert_eq!(read(&out), read(&again));
}

#[test]
fn bench_optimizers_refuses_bad_flags_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    for (args, needle) in [
        (&["--optimizers", "--steps", "0"][..], "--steps"),
        (
            &["--optimizers", "--only", "lbfgs"],
            "unknown optimizer row 'lbfgs'",
        ),
        (&["--optimizers", "--only", ","], "no optimizer row named"),
        (&["--optimizers", "--networks", "resnet"], "--networks"),
        (&["--steps", "5"], "--optimizers"),
        (&["--optimizers", "--monitor"], "--monitor"),
    ] {
        let mut all = vec!["bench", "--no-torch", "--out", s(&out)];
        all.extend_from_slice(args);
        assert_bad_input(&secondo(&all), needle, &out);
    }
}
