//! `secondo train --checkpoint-every` and `--resume`: a run of 4 epochs
//! and a run of 2 epochs resumed from its checkpoint to 4 write the same
//! bytes, for every optimizer and schedule; bad resumes fail on one line.

mod common;

use std::path::{Path, PathBuf};

use common::binary::{assert_bad_input, s, secondo, stderr};

const SMALL: &str = "linear(64,16),tanh,linear(16,10)";
/// Small enough for the dense curvatures of ngd, ef and det-avg.
const DENSE: &str = "linear(64,10)";

/// `train` of `model` for `epochs` with `flags` and `extra`, weights to
/// `dir/name.safetensors`; asserts success.
fn train(dir: &Path, name: &str, epochs: &str, flags: &[&str], extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{name}.safetensors"));
    let mut args = vec![
        "train",
        "--epochs",
        epochs,
        "--batch",
        "512",
        "--out",
        s(&out),
    ];
    args.extend_from_slice(flags);
    args.extend_from_slice(extra);
    let o = secondo(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    out
}

/// Asserts that 4 epochs straight and 2 epochs + checkpoint + resume to 4
/// write byte-identical weights, with `report` extra flags for each run's
/// monitor (their report directories named by the run).
fn assert_resume_is_exact(flags: &[&str], report: impl Fn(&str) -> Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |name: &str, epochs: &str, extra: &[&str]| {
        let report = report(name);
        let mut all = extra.to_vec();
        all.extend(report.iter().map(String::as_str));
        train(d, name, epochs, flags, &all)
    };
    let straight = run("straight", "4", &[]);
    let checkpoint = d.join("split.checkpoint");
    // On past the checkpoint of epoch 2 to epoch 3, as an interrupted run goes.
    run("split", "3", &["--checkpoint-every", "2"]);
    let resumed = run("split", "4", &["--resume", s(&checkpoint)]);
    assert!(
        std::fs::read(&straight).unwrap() == std::fs::read(&resumed).unwrap(),
        "{flags:?}: the resumed run's weights differ"
    );
}

/// Each optimizer and schedule of `cases` on `model` (with `common`
/// flags), unmonitored.
fn assert_all_resume_exactly(model: &str, common: &[&str], cases: &[&[&str]]) {
    for flags in cases {
        let mut all = vec!["--model", model, "--monitor", "off"];
        all.extend(common.iter().chain(flags.iter()));
        assert_resume_is_exact(&all, |_| Vec::new());
    }
}

#[test]
fn first_order_runs_resume_bit_for_bit() {
    let cases: &[&[&str]] = &[
        &["--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05"],
        &["--optimizer", "adam", "--dtype", "f64"],
        &["--optimizer", "adamw", "--weight-decay", "0.1"],
    ];
    assert_all_resume_exactly(SMALL, &[], cases);
    // Batch norm's running statistics are in the checkpoint's weights.
    let batchnorm = "linear(64,16),batchnorm1d(16),relu,linear(16,10)";
    assert_all_resume_exactly(batchnorm, &[], &[&["--optimizer", "adam"]]);
}

#[test]
fn kronecker_and_hessian_free_runs_resume_bit_for_bit() {
    let cases: &[&[&str]] = &[
        &["kfac", "--momentum", "0.5", "--inverse-every", "2"],
        &["kfac", "--adapt-damping"],
        &["ekfac", "--inverse-every", "4"],
        &["fractional-ngd", "--inverse-every", "5"],
        // Refreshes at steps 0, 4, 8: the checkpoint after step 5 holds the
        // subspace of step 4, used in steps 6 and 7 and warm-starting step 8.
        &[
            "fractional-ngd",
            "--structure",
            "lowrank:6",
            "--inverse-every",
            "4",
        ],
        &[
            "ngd",
            "--structure",
            "lowrank:4",
            "--curvature",
            "fisher",
            "--inverse-every",
            "2",
            "--adapt-damping",
        ],
        // Refreshes at steps 0, 4, 8 (3 steps an epoch): the checkpoint after
        // step 5 holds two, both in steps 6 and 7, the first dropped at 8.
        &[
            "det-avg",
            "--structure",
            "kronecker",
            "--det-avg-window",
            "2",
            "--inverse-every",
            "4",
        ],
        &["newton-cg", "--cg-iters", "5", "--adapt-damping"],
        &["newton-cg", "--cg-iters", "5", "--cg-precondition", "diag"],
    ];
    assert_all_resume_exactly(SMALL, &["--optimizer"], cases);
}

#[test]
fn dense_curvature_runs_resume_bit_for_bit() {
    let cases: &[&[&str]] = &[
        &["ngd", "--inverse-every", "4"],
        &["ef", "--inverse-every", "4", "--momentum", "0.5"],
        // One estimate at the first step, used by every later one.
        &["det-avg", "--inverse-every", "100"],
        // The first refresh's estimates, and the second's after the checkpoint.
        &["det-avg", "--inverse-every", "8", "--det-avg-window", "2"],
    ];
    assert_all_resume_exactly(DENSE, &["--curvature-batch", "16", "--optimizer"], cases);
}

#[test]
fn mixed_and_late_phase_runs_resume_bit_for_bit() {
    let first = [
        "--first-order-optimizer",
        "sgd",
        "--momentum",
        "0.9",
        "--optimizer",
    ];
    let cases: &[&[&str]] = &[
        &["kfac", "--second-order", "2.*"],
        // Switched before the checkpoint (3 steps an epoch), and after it.
        &["kfac", "--switch-at", "step=4"],
        &["newton-cg", "--cg-iters", "5", "--switch-at", "step=8"],
    ];
    assert_all_resume_exactly(SMALL, &first, cases);
}

/// The steps of a report's records, in order.
fn steps(report: &Path) -> Vec<u64> {
    std::fs::read_to_string(report.join("instruments.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_resumed_monitor_appends_one_record_per_step_after_the_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let report = |run: &str| root.path().join(format!("{run}-report"));
    let flags = [
        "--model",
        SMALL,
        "--optimizer",
        "sgd",
        "--monitor",
        "economy",
    ];
    assert_resume_is_exact(&flags, |run| {
        vec!["--report".into(), s(&report(run)).into()]
    });
    // The split run went on to epoch 3 past its checkpoint of epoch 2: the
    // resume replaced those steps' records by its own.
    let all: Vec<u64> = (0..12).collect();
    assert_eq!(steps(&report("straight")), all);
    assert_eq!(steps(&report("split")), all);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report("split").join("run.json")).unwrap())
            .unwrap();
    assert_eq!(run["resumed_from"]["epoch"], 2);
}

#[test]
fn a_checkpoint_is_replaced_whole_and_leaves_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--model", SMALL, "--optimizer", "kfac", "--monitor", "off"];
    let ckpt = dir.path().join("ckpt");
    train(
        dir.path(),
        "w",
        "3",
        &flags,
        &["--checkpoint-every", "1", "--checkpoint", s(&ckpt)],
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ckpt", "w.safetensors"]);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(
        (doc["epoch"].as_u64(), doc["step"].as_u64()),
        (Some(3), Some(9))
    );
    // The last checkpoint's weights are the run's.
    let (a, b) = (
        ckpt.join("weights.safetensors"),
        dir.path().join("w.safetensors"),
    );
    assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap());
}

#[test]
fn bad_resumes_fail_on_one_line_naming_the_flag_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let flags = [
        "--model",
        SMALL,
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--monitor",
        "off",
    ];
    train(d, "w", "2", &flags, &["--checkpoint-every", "2"]);
    let ckpt = d.join("w.checkpoint");
    let out = d.join("resumed.safetensors");
    // The run's flags with `changed` (a flag and its value) replacing or adding one.
    let resume = |changed: &[&str]| {
        let mut args = vec!["train", "--epochs", "4", "--batch", "512", "--out", s(&out)];
        args.extend_from_slice(&flags);
        if let [flag, value] = changed {
            match args.iter().position(|a| a == flag) {
                Some(i) => args[i + 1] = value,
                None => args.extend([*flag, *value]),
            }
        }
        args.extend(["--resume", s(&ckpt)]);
        secondo(&args)
    };
    let differs = |flag: &str, value: &str, needle: &str| {
        assert_bad_input(&resume(&[flag, value]), needle, &out);
    };
    differs(
        "--model",
        "linear(64,10)",
        "--model differs from the checkpoint's",
    );
    differs("--optimizer", "sgd", "--optimizer differs");
    differs(
        "--lr",
        "0.02",
        "--lr differs from the checkpoint's (0.01 there, 0.02 here)",
    );
    differs("--seed", "1", "--seed differs");
    differs("--epochs", "2", "the checkpoint is at epoch 2 already");
    let missing = d.join("nowhere");
    let o = secondo(&["train", "--out", s(&out), "--resume", s(&missing)]);
    assert_bad_input(&o, "no such checkpoint directory", &out);
    let o = secondo(&["train", "--out", s(&out), "--checkpoint", s(&missing)]);
    assert_bad_input(&o, "--checkpoint needs --checkpoint-every", &out);

    let state = ckpt.join("state.safetensors");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() - 9]).unwrap();
    assert_bad_input(&resume(&[]), "state.safetensors", &out);
    std::fs::write(&state, &bytes).unwrap();
    let json = ckpt.join("checkpoint.json");
    std::fs::write(&json, "{\"format\": ").unwrap();
    assert_bad_input(
        &resume(&[]),
        "checkpoint.json: not a secondo checkpoint",
        &out,
    );
}

#[test]
fn a_state_of_another_optimizer_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = ["--model", SMALL, "--monitor", "off"];
    let every = ["--checkpoint-every", "1", "--optimizer"];
    train(
        d,
        "sgd",
        "1",
        &base,
        &[&every[..], &["sgd", "--momentum", "0.9"]].concat(),
    );
    let adam = [&base[..], &["--optimizer", "adam"]].concat();
    train(d, "adam", "1", &adam, &every[..2]);
    // Adam's checkpoint with SGD's state: the arguments agree, the state does not.
    let state = |run: &str| d.join(format!("{run}.checkpoint/state.safetensors"));
    std::fs::copy(state("sgd"), state("adam")).unwrap();
    let out = d.join("resumed.safetensors");
    let mut args = vec!["train", "--epochs", "2", "--batch", "512", "--out", s(&out)];
    let checkpoint = d.join("adam.checkpoint");
    args.extend(adam.iter().copied().chain(["--resume", s(&checkpoint)]));
    let needle = "adam.checkpoint/state.safetensors: no tensor 'first_order/step'";
    assert_bad_input(&secondo(&args), needle, &out);
}

#[test]
fn help_explains_the_checkpoint_flags() {
    let o = secondo(&["train", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in ["--checkpoint-every", "--checkpoint <DIR>", "--resume"] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
