//! `secondo train` with the monitor as a user runs it: the default run
//! writes its report, bad monitor requests fail on one line, an
//! interrupted run leaves a readable log and report, same seed same bytes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::binary::{assert_bad_input, s, secondo, secondo_with, stderr};

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn default_run_writes_instruments_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let weights = dir.path().join("w.safetensors");
    let o = secondo(&[
        "train",
        "--epochs",
        "2",
        "--report",
        s(&report),
        "--out",
        s(&weights),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("report.html"), "{stdout}");
    let records = lines(&report.join("instruments.jsonl"));
    // 1437 training samples in batches of 32, two epochs: 90 steps, all tracked.
    assert_eq!(records.len(), 90);
    for (step, r) in records.iter().enumerate() {
        assert_eq!(r["step"], step);
        for key in [
            "loss",
            "grad_norm",
            "distance",
            "update_size",
            "norm_test",
            "inner_test",
            "ortho_test",
            "grad_hist_1d",
        ] {
            assert!(r.get(key).is_some(), "step {step} lacks {key}");
        }
        assert_eq!(r.get("alpha").is_some(), step < 89, "alpha at step {step}");
    }
    let structure: Vec<usize> = (0..90)
        .filter(|&t| records[t].get("hess_top_ev").is_some())
        .collect();
    assert_eq!(structure, [0, 30, 60, 89]);
    assert!(records[30]["top_space_rotation"]["angles"].is_array());
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["finished"], true);
    assert_eq!(run["classes"], 10);
    assert!(run["final"]["test_accuracy"].as_f64().unwrap() > 0.8);
    assert!(report.join("report.html").exists());
}

#[test]
fn same_seed_same_instruments() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let report = dir.path().join(name);
        let w = dir.path().join(format!("{name}.safetensors"));
        let o = secondo(&[
            "train",
            "--epochs",
            "1",
            "--monitor",
            "full,structure",
            "--report",
            s(&report),
            "--out",
            s(&w),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(report.join("instruments.jsonl")).unwrap()
    };
    assert_eq!(run("a"), run("b"));
}

#[test]
fn bad_monitor_requests_fail_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w.safetensors");
    let report = dir.path().join("report");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--epochs",
            "1",
            "--report",
            s(&report),
            "--out",
            s(&w),
        ];
        args.extend_from_slice(extra);
        secondo(&args)
    };
    for (extra, needle) in [
        (&["--monitor", "alpah"][..], "unknown instrument 'alpah'"),
        (&["--monitor", "economy@0"], "interval after '@'"),
        (&["--track-every", "0"], "--track-every 0"),
        (
            &["--monitor", "cabs"],
            "--monitor cabs: defined for SGD without momentum",
        ),
        (
            &[
                "--model",
                "linear(64,10),dropout(0.5),linear(10,10)",
                "--monitor",
                "alpha",
            ],
            "per-sample instruments need",
        ),
        (
            &[
                "--model",
                "linear(64,4000000),relu,linear(4000000,10)",
                "--monitor",
                "hess_top_ev",
            ],
            "--monitor hess_top_ev",
        ),
    ] {
        let o = train(extra);
        assert_bad_input(&o, needle, &w);
        assert!(!report.exists(), "{extra:?} left a report");
    }
    // A report directory that is a file.
    std::fs::write(&report, b"not a directory").unwrap();
    let o = train(&[]);
    assert_bad_input(&o, "--report", &w);
}

/// The monitored step's memory comes from its compiled graph: the Hessian
/// diagonal's factor columns (10 × 200 × 20 000 values) are refused up front,
/// while economy, whose per-sample gradients stay factored, runs in the same
/// memory (a count of `N·P` per-sample gradients would have refused it).
#[test]
fn a_monitored_step_beyond_memory_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = |monitor: &str| {
        let report = dir.path().join(format!("report-{monitor}"));
        let args = [
            "train",
            "--model",
            "linear(64,20000),relu,linear(20000,10)",
            "--batch",
            "200",
            "--epochs",
            "1",
            "--optimizer",
            "sgd",
            "--monitor",
            monitor,
            "--report",
            s(&report),
        ];
        (
            secondo_with(&args, &[("SECONDO_MEMORY_LIMIT", "150M")]),
            report,
        )
    };
    let (o, report) = run("hess_trace");
    assert_bad_input(
        &o,
        "the monitored step of --batch 200 (--monitor) would need",
        &report,
    );
    let (o, report) = run("economy");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&report.join("instruments.jsonl")).len(), 8);
}

#[test]
fn a_model_with_batch_norm_gets_the_instruments_it_can_take() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let w = dir.path().join("w.safetensors");
    let model = "linear(64,32),batchnorm1d(32),relu,linear(32,10)";
    let o = secondo(&[
        "train",
        "--model",
        model,
        "--epochs",
        "1",
        "--report",
        s(&report),
        "--out",
        s(&w),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let records = lines(&report.join("instruments.jsonl"));
    assert!(records[0].get("grad_norm").is_some() && records[0].get("hess_top_ev").is_some());
    assert!(records[0].get("alpha").is_none() && records[0].get("norm_test").is_none());
}

#[test]
fn ctrl_c_leaves_a_readable_log_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let w = dir.path().join("w.safetensors");
    let child = Command::new(env!("CARGO_BIN_EXE_secondo"))
        .args([
            "train",
            "--epochs",
            "1000",
            "--monitor",
            "economy",
            "--report",
            s(&report),
            "--out",
            s(&w),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = report.join("instruments.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no records appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("report"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let records = lines(&log);
    assert!(records.len() >= 20);
    for (step, r) in records.iter().enumerate() {
        assert_eq!(r["step"], step);
    }
    assert!(report.join("report.html").exists());
    assert!(!w.exists(), "weights of an interrupted run were written");
}
