//! The binary's results are byte-identical whatever the number of rayon
//! threads (docs/ARCHITECTURE.md, "Determinism"): trained weights, curvature
//! quantities and spectra, each computed with 1, 2 and 4 threads.

mod common;

use std::path::{Path, PathBuf};

use common::binary::secondo_with;

const THREADS: [&str; 3] = ["1", "2", "4"];

/// Runs `secondo <args> --out <dir>/<threads>/<out>` with each of [`THREADS`]
/// threads and returns the outputs' paths.
fn on_every_thread_count(dir: &Path, args: &[&str], out: &str) -> Vec<PathBuf> {
    THREADS
        .iter()
        .map(|threads| {
            let path = dir.join(threads).join(out);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut all = args.to_vec();
            all.extend(["--out", path.to_str().unwrap()]);
            let o = secondo_with(&all, &[("RAYON_NUM_THREADS", threads)]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{args:?} on {threads} threads: {err}");
            path
        })
        .collect()
}

/// Asserts that every file in `paths` holds the same bytes as the first.
fn assert_same_bytes(paths: &[PathBuf]) {
    let first = std::fs::read(&paths[0]).unwrap();
    for (path, threads) in paths.iter().zip(THREADS).skip(1) {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            bytes == first,
            "{}: {threads} threads differ from 1",
            path.display()
        );
    }
}

#[test]
fn training_gives_the_same_weights_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "train",
        "--model",
        "linear(64,512),tanh,linear(512,10)",
        "--batch",
        "128",
        "--epochs",
        "2",
    ];
    assert_same_bytes(&on_every_thread_count(dir.path(), &args, "w.safetensors"));
}

#[test]
fn quantities_are_the_same_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "quantities",
        "--model",
        "linear(64,128),tanh,linear(128,10)",
        "--data",
        "digits",
        "--quantities",
        "grad,variance,diag_ggn_exact,kflr,diag_hessian",
    ];
    assert_same_bytes(&on_every_thread_count(dir.path(), &args, "q.safetensors"));
}

#[test]
fn spectra_are_the_same_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "spectrum",
        "--model",
        "linear(64,32),tanh,linear(32,10)",
        "--data",
        "digits",
        "--top",
        "5",
        "--trace",
        "--density",
    ];
    let dirs = on_every_thread_count(dir.path(), &args, "spectrum");
    let files: Vec<PathBuf> = dirs.iter().map(|d| d.join("spectrum.json")).collect();
    assert_same_bytes(&files);
}
