//! The `secondo` binary as a user drives it: success paths and bad input
//! (one-line error, exit status 2, no output file left behind).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::binary::{assert_bad_input, s, secondo, stderr};
use common::{fixtures, relative_error, Fixture};
use secondo_nn::ParamStore;
use secondo_tensor::{DType, Tensor};

const SPEC: &str = "linear(20,16),tanh,linear(16,16),relu,linear(16,5)";

/// `secondo quantities --quantities <quantities>` on `model` and `data`, plus
/// `extra` arguments.
fn quantities_cmd(model: &str, data: &str, quantities: &str, extra: &[&str], out: &Path) -> Output {
    let mut args = vec![
        "quantities",
        "--model",
        model,
        "--data",
        data,
        "--quantities",
        quantities,
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    secondo(&args)
}

/// `secondo quantities --quantities grad` on `model` and `data`, plus `extra` arguments.
fn grad_cmd(model: &str, data: &str, extra: &[&str], out: &Path) -> Output {
    quantities_cmd(model, data, "grad", extra, out)
}

struct Setup {
    dir: tempfile::TempDir,
    fixture: PathBuf,
    weights: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let fixture = fixtures("grad")
            .into_iter()
            .find(|p| p.ends_with("mlp_f64.safetensors"))
            .unwrap();
        let f = Fixture::load(&fixture);
        let objective = f.objective();
        let weights = dir.path().join("weights.safetensors");
        f.params(&objective).save(&weights).unwrap();
        Setup {
            dir,
            fixture,
            weights,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }
}

#[test]
fn quantities_grad_matches_pytorch_through_the_cli() {
    let t = Setup::new();
    let out = t.path("grad.safetensors");
    let o = secondo(&[
        "quantities",
        "--model",
        SPEC,
        "--weights",
        s(&t.weights),
        "--data",
        s(&t.fixture),
        "--quantities",
        "grad",
        "--dtype",
        "f64",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = secondo_nn::read_safetensors(&out).unwrap();
    let f = Fixture::load(&t.fixture);
    for name in [
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias",
    ] {
        let key = format!("grad/{name}");
        let err = relative_error(&got[&key], f.tensor(&key));
        assert!(err < 1e-10, "{key}: {err:e}");
    }
}

#[test]
fn malformed_spec_names_the_position() {
    let t = Setup::new();
    let out = t.path("o.safetensors");
    let o = grad_cmd("linear(20,16),relu,lineer(16,5)", s(&t.fixture), &[], &out);
    assert_bad_input(&o, "unknown layer 'lineer' at position 19", &out);
    let o = secondo(&[
        "train",
        "--model",
        "linear(64,10",
        "--epochs",
        "1",
        "--out",
        s(&out),
    ]);
    assert_bad_input(&o, "position", &out);
}

#[test]
fn spec_that_does_not_fit_the_data_is_refused() {
    let t = Setup::new();
    let out = t.path("o.safetensors");
    let o = grad_cmd("linear(21,5)", s(&t.fixture), &[], &out);
    assert_bad_input(&o, "linear(21,5)", &out);
}

#[test]
fn weights_missing_a_parameter_or_with_a_wrong_shape() {
    let t = Setup::new();
    let out = t.path("o.safetensors");
    let mut partial = ParamStore::new();
    partial.insert("0.weight", Tensor::zeros(vec![16, 20], DType::F32));
    let missing = t.path("missing.safetensors");
    partial.save(&missing).unwrap();
    let o = grad_cmd(SPEC, s(&t.fixture), &["--weights", s(&missing)], &out);
    assert_bad_input(&o, "missing parameter '0.bias'", &out);

    let mut wrong = ParamStore::new();
    wrong.insert("0.weight", Tensor::zeros(vec![20, 16], DType::F32));
    let wrong_path = t.path("wrong.safetensors");
    wrong.save(&wrong_path).unwrap();
    let o = grad_cmd(SPEC, s(&t.fixture), &["--weights", s(&wrong_path)], &out);
    assert_bad_input(
        &o,
        "tensor '0.weight': expected shape [16, 20], got [20, 16]",
        &out,
    );
}

#[test]
fn nan_in_data_names_the_tensor() {
    let t = Setup::new();
    let out = t.path("o.safetensors");
    let mut d = secondo_data::load_safetensors(&t.fixture).unwrap();
    d.x[7] = f64::NAN;
    let bad = t.path("nan.safetensors");
    // Written by hand: the data crate's writer refuses non-finite values.
    let x = Tensor::from_vec(vec![d.len(), 20], d.x.clone()).unwrap();
    let y = Tensor::from_vec(
        vec![d.len()],
        (0..d.len()).map(|i| (i % 5) as f64).collect(),
    )
    .unwrap();
    secondo_nn::write_safetensors(&bad, [("x", &x), ("y", &y)], &Default::default()).unwrap();
    let o = grad_cmd(SPEC, s(&bad), &[], &out);
    assert_bad_input(
        &o,
        "tensor `x` has non-finite value NaN at flat index 7",
        &out,
    );
}

#[test]
fn truncated_files_are_reported() {
    let t = Setup::new();
    let out = t.path("o.safetensors");
    let bytes = std::fs::read(&t.fixture).unwrap();
    let cut = t.write("cut.safetensors", &bytes[..bytes.len() / 2]);
    let o = grad_cmd(SPEC, s(&cut), &[], &out);
    assert_bad_input(&o, "cut.safetensors", &out);

    let wbytes = std::fs::read(&t.weights).unwrap();
    let wcut = t.write("wcut.safetensors", &wbytes[..wbytes.len() - 10]);
    let o = grad_cmd(SPEC, s(&t.fixture), &["--weights", s(&wcut)], &out);
    assert_bad_input(&o, "wcut.safetensors", &out);

    // IDX: 3 images of 2x2 declared, only 1 present.
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2];
    images.extend_from_slice(&[1, 2, 3, 4]);
    let labels = [0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 0];
    let img = t.write("images.idx", &images);
    let lab = t.write("labels.idx", &labels);
    let pair = format!("{},{}", s(&img), s(&lab));
    let o = secondo(&["train", "--data", &pair, "--epochs", "1", "--out", s(&out)]);
    assert_bad_input(&o, "images.idx", &out);
}

#[test]
fn unknown_names_are_refused() {
    let t = Setup::new();
    let out = t.path("o.safetensors");
    let base = [
        "quantities",
        "--model",
        SPEC,
        "--data",
        s(&t.fixture),
        "--out",
        s(&out),
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        secondo(&a)
    };
    assert_bad_input(
        &with(&["--quantities", "gradd"]),
        "unknown quantity 'gradd'",
        &out,
    );
    assert_bad_input(
        &with(&["--quantities", "grad", "--loss", "hinge"]),
        "unknown loss 'hinge'",
        &out,
    );
    assert_bad_input(
        &with(&["--quantities", "grad", "--dtype", "f16"]),
        "unknown dtype 'f16'",
        &out,
    );
    assert_bad_input(
        &with(&["--quantities", "grad", "--mc-samples", "0"]),
        "--mc-samples",
        &out,
    );
    let o = secondo(&[
        "train",
        "--optimizer",
        "lbfgs",
        "--epochs",
        "1",
        "--out",
        s(&out),
    ]);
    assert_bad_input(&o, "unknown optimizer 'lbfgs'", &out);
    let o = secondo(&["train", "--loss", "mse", "--epochs", "1", "--out", s(&out)]);
    assert_bad_input(&o, "mse", &out);
}

#[test]
fn train_writes_loadable_weights() {
    let t = Setup::new();
    let out = t.path("trained.safetensors");
    let o = secondo(&["train", "--epochs", "2", "--seed", "3", "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("test  loss"), "{text}");
    let w = secondo_nn::read_safetensors(&out).unwrap();
    assert_eq!(w["0.weight"].shape(), &[256, 64]);
    assert_eq!(w["2.bias"].shape(), &[10]);
}

/// The default `secondo train` (MLP on digits) reaches 95% test accuracy and is
/// deterministic for a fixed seed.
#[test]
fn default_training_is_accurate_and_deterministic() {
    let t = Setup::new();
    let (a, b) = (t.path("a.safetensors"), t.path("b.safetensors"));
    let run = |out: &Path| {
        let o = secondo(&["train", "--out", s(out)]);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = run(&a);
    run(&b);
    let test_line = text
        .lines()
        .find(|l| l.starts_with("test "))
        .expect("test line");
    let accuracy: f64 = test_line
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(accuracy >= 0.95, "{text}");
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same seed, different weights"
    );
}

/// Kronecker factors of a grouped convolution (which has no single patch
/// matrix, and which BackPACK refuses too) are refused in one line naming
/// the parameter.
#[test]
fn kronecker_factors_of_grouped_convolutions_are_refused() {
    let t = Setup::new();
    let out = t.path("o.safetensors");
    let images = t.path("images.safetensors");
    let n = 6;
    let x = Tensor::from_vec(vec![n, 2, 4, 5], vec![0.5f64; n * 40]).unwrap();
    let y = Tensor::from_vec(vec![n, 3], vec![0.25f64; n * 3]).unwrap();
    secondo_nn::write_safetensors(&images, [("x", &x), ("y", &y)], &Default::default()).unwrap();
    let o = secondo(&[
        "quantities",
        "--model",
        "conv2d(2,2,k=3,groups=2),relu,flatten,linear(12,3)",
        "--data",
        s(&images),
        "--loss",
        "mse",
        "--quantities",
        "kflr",
        "--out",
        s(&out),
    ]);
    assert_bad_input(
        &o,
        "parameter 0.weight belongs to a grouped convolution",
        &out,
    );
}

/// `--explain` prints the optimized graph and its contractions' FLOPs; for
/// `batch_l2` no node is as large as the per-sample gradients of a layer.
#[test]
fn explain_prints_the_optimized_graph_and_its_flops() {
    let t = Setup::new();
    let out = t.path("l2.safetensors");
    let o = quantities_cmd(SPEC, s(&t.fixture), "batch_l2", &["--explain"], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let n = Fixture::load(&t.fixture).data().0.shape()[0];
    let shapes: Vec<usize> = err
        .lines()
        .filter_map(|l| l.split_once(" : ["))
        .map(|(_, rest)| {
            rest.split(']')
                .next()
                .unwrap()
                .split(", ")
                .filter(|d| !d.is_empty())
                .map(|d| d.parse::<usize>().unwrap())
                .product()
        })
        .collect();
    assert!(shapes.len() > 10, "{err}");
    assert!(shapes.iter().all(|&size| size < n * 16 * 16), "{err}");
    let flops = err.lines().last().unwrap();
    assert!(
        flops.contains("contractions:") && flops.ends_with(" MFLOP"),
        "{flops}"
    );
    assert!(out.exists());
}

/// Work that cannot fit in memory is refused before anything is computed or
/// sampled (here 10¹² MC targets, for quantities and for a spectrum), in one
/// line, instead of ending in the kernel's OOM killer.
#[test]
fn work_beyond_memory_is_refused_before_sampling() {
    let t = Setup::new();
    let out = t.path("kfac.safetensors");
    let o = quantities_cmd(
        SPEC,
        s(&t.fixture),
        "kfac",
        &["--mc-samples", "1000000000000"],
        &out,
    );
    assert_bad_input(&o, "GB of memory at once", &out);

    let dir = t.path("spectrum");
    let o = secondo(&[
        "spectrum",
        "--model",
        SPEC,
        "--data",
        s(&t.fixture),
        "--curvature",
        "fisher",
        "--mc-samples",
        "1000000000000",
        "--out",
        s(&dir),
    ]);
    assert_bad_input(&o, "MC samples) of 8 samples would need", &dir);
}
