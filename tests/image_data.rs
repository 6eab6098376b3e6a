//! Image inputs through the binary: `--input-shape` views flat features as
//! images, IDX images load with a channel axis, CIFAR batches load from a
//! file or a directory, and specs whose first layer is linear take images as
//! flat features.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::binary::{assert_bad_input, s, secondo, stderr};
use secondo_tensor::Tensor;

/// A spec that needs the digits as 8×8 (a linear layer on the last axis of 8,
/// then a flatten): flat `[64]` samples cannot go through it.
const ROWS_SPEC: &str = "linear(8,3),flatten,linear(24,10)";

/// `secondo quantities --quantities grad` with `extra` arguments.
fn grad(model: &str, data: &str, extra: &[&str], out: &Path) -> Output {
    let mut args = vec![
        "quantities",
        "--model",
        model,
        "--data",
        data,
        "--quantities",
        "grad",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    secondo(&args)
}

/// Asserts success and returns the written tensors.
fn written(o: &Output, out: &Path) -> std::collections::HashMap<String, Tensor> {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    secondo_nn::read_safetensors(out).expect("results load")
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

#[test]
fn input_shape_views_the_digits_as_images() {
    let d = Dir::new();
    let out = d.path("q.safetensors");
    let flat = grad(ROWS_SPEC, "digits", &[], &out);
    assert_bad_input(&flat, "expects 8 input features, got 64", &out);
    let images = written(
        &grad(ROWS_SPEC, "digits", &["--input-shape", "1,8,8"], &out),
        &out,
    );
    let rows_out = d.path("rows.safetensors");
    let rows = written(
        &grad(ROWS_SPEC, "digits", &["--input-shape", "8,8"], &rows_out),
        &rows_out,
    );
    assert_eq!(images["grad/0.weight"].shape(), &[3, 8]);
    assert_eq!(
        images["grad/0.weight"].to_f64_vec(),
        rows["grad/0.weight"].to_f64_vec()
    );
}

#[test]
fn train_fits_its_default_model_to_the_input_shape() {
    let d = Dir::new();
    let out = d.path("w.safetensors");
    let o = secondo(&[
        "train",
        "--input-shape",
        "1,8,8",
        "--epochs",
        "1",
        "--out",
        s(&out),
    ]);
    let weights = written(&o, &out);
    // flatten comes first, so the first linear layer is layer 1
    assert_eq!(weights["1.weight"].shape(), &[256, 64]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("trained flatten,linear(64,256)"));
}

#[test]
fn an_input_shape_of_another_size_names_both_shapes() {
    let d = Dir::new();
    let out = d.path("q.safetensors");
    let o = grad(ROWS_SPEC, "digits", &["--input-shape", "1,9,9"], &out);
    assert_bad_input(
        &o,
        "--input-shape 1,9,9 holds 81 values per sample, but --data digits has samples of shape [64] (64 values)",
        &out,
    );
    let o = secondo(&["train", "--input-shape", "2,8,8", "--out", s(&out)]);
    assert_bad_input(&o, "--input-shape 2,8,8 holds 128 values", &out);
    // the test data is viewed as the training data is
    let test = d.write("test_batch.bin", &cifar10(2));
    let o = secondo(&[
        "train",
        "--input-shape",
        "1,8,8",
        "--test-data",
        s(&test),
        "--out",
        s(&out),
    ]);
    assert_bad_input(
        &o,
        "--input-shape 1,8,8 holds 64 values per sample, but --test-data",
        &out,
    );
    assert_bad_input(
        &o,
        "test_batch.bin has samples of shape [3, 32, 32] (3072 values)",
        &out,
    );
    for (bad, why) in [
        ("1,0,8", "sizes must be at least 1"),
        ("1,x", "'x' is not a size"),
    ] {
        let o = grad(ROWS_SPEC, "digits", &["--input-shape", bad], &out);
        assert_bad_input(&o, why, &out);
    }
}

#[test]
fn a_convolution_on_flat_samples_asks_for_an_input_shape() {
    let d = Dir::new();
    let out = d.path("q.safetensors");
    let o = grad(
        "conv2d(1,4,k=3),flatten,linear(144,10)",
        "digits",
        &[],
        &out,
    );
    assert_bad_input(
        &o,
        "--data digits has samples of shape [64], not images [C, H, W]; give --input-shape C,H,W",
        &out,
    );
}

/// An IDX file of unsigned bytes: magic, dimensions, data.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    out.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
    out.extend_from_slice(data);
    out
}

#[test]
fn idx_images_have_a_channel_axis_and_linear_specs_take_them_flat() {
    let d = Dir::new();
    let pixels: Vec<u8> = (0..5 * 16).map(|v| (v * 3) as u8).collect();
    let images = d.write("images.idx", &idx(&[5, 4, 4], &pixels));
    let labels = d.write("labels.idx", &idx(&[5], &[0, 1, 2, 1, 0]));
    let data = format!("{},{}", s(&images), s(&labels));
    let out = d.path("q.safetensors");
    let o = grad("linear(16,3)", &data, &["--input-shape", "17"], &out);
    assert_bad_input(&o, "has samples of shape [1, 4, 4] (16 values)", &out);
    let linear = written(&grad("linear(16,3)", &data, &[], &out), &out);
    let flatten_out = d.path("flatten.safetensors");
    let flatten = written(
        &grad("flatten,linear(16,3)", &data, &[], &flatten_out),
        &flatten_out,
    );
    assert_eq!(linear["grad/0.weight"].shape(), &[3, 16]);
    assert_eq!(
        linear["grad/0.weight"].to_f64_vec(),
        flatten["grad/1.weight"].to_f64_vec()
    );
}

/// CIFAR-10 records: label `k % 10` and pixels following `k`.
fn cifar10(records: usize) -> Vec<u8> {
    (0..records)
        .flat_map(|k| {
            let pixels = (0..3072).map(move |j| ((k * 7 + j) % 256) as u8);
            std::iter::once((k % 10) as u8).chain(pixels)
        })
        .collect()
}

/// A directory as the CIFAR-10 archive unpacks: two training batches of 4
/// records and a test batch of 3.
fn cifar10_dir() -> Dir {
    let d = Dir::new();
    d.write("data_batch_1.bin", &cifar10(4));
    d.write("data_batch_2.bin", &cifar10(4));
    d.write("test_batch.bin", &cifar10(3));
    d
}

#[test]
fn cifar_directories_and_files_load() {
    let d = cifar10_dir();
    let out = d.path("w.safetensors");
    let dir = s(d.0.path());
    let test = d.path("test_batch.bin");
    // the linear spec takes the training and the test images as flat features
    let o = secondo(&[
        "train",
        "--model",
        "linear(3072,10)",
        "--data",
        dir,
        "--test-data",
        s(&test),
        "--epochs",
        "1",
        "--out",
        s(&out),
    ]);
    let weights = written(&o, &out);
    assert_eq!(weights["0.weight"].shape(), &[10, 3072]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("(8 train / 3 test samples"), "{stdout}");

    let hundred = Dir::new();
    let records: Vec<u8> = (0..3u8)
        .flat_map(|k| [&[k, 90 + k][..], &[k; 3072]].concat())
        .collect();
    let train = hundred.write("train.bin", &records);
    let q = hundred.path("q.safetensors");
    let grads = written(&grad("linear(3072,100)", s(&train), &[], &q), &q);
    assert_eq!(grads["grad/0.weight"].shape(), &[100, 3072]);
}

#[test]
fn bad_cifar_input_fails_in_one_line() {
    let d = cifar10_dir();
    let out = d.path("q.safetensors");
    let short = d.write("train.bin", &cifar10(2));
    let o = grad("linear(3072,10)", s(&short), &[], &out);
    assert_bad_input(
        &o,
        "train.bin: 6146 bytes are not a whole number of CIFAR-100 records of 3074 bytes",
        &out,
    );
    let empty = Dir::new();
    let o = grad("linear(3072,10)", s(empty.0.path()), &[], &out);
    assert_bad_input(&o, "holds no CIFAR training batches", &out);
    // an output over one of a directory's batches
    let batch = d.path("data_batch_2.bin");
    let o = grad("linear(3072,10)", s(d.0.path()), &[], &batch);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is also the input --data"), "{err}");
    assert_eq!(std::fs::read(&batch).unwrap(), cifar10(4));
}
