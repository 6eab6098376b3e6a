//! Convolutional and residual networks through the binary: a small CNN
//! learns the digits as images, and bad input around the image layers fails
//! in one line with exit status 2 and nothing written.

mod common;

use common::binary::{assert_bad_input, s, secondo, stderr};

const CNN: &str =
    "conv2d(1,16,k=3,p=1),relu,conv2d(16,32,k=3,p=1),relu,maxpool2d(2),flatten,linear(512,10)";
const RESNET: &str = "conv2d(1,8,k=3,p=1),batchnorm2d(8),relu,\
                      residual(conv2d(8,8,k=3,p=1),batchnorm2d(8),relu,conv2d(8,8,k=3,p=1)),relu,\
                      maxpool2d(2),flatten,linear(128,10)";

/// The README's example: ≥ 98% test accuracy on the digits viewed as 1×8×8
/// images (about 7 s on two cores in release mode).
#[test]
fn a_small_cnn_learns_the_digits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cnn.safetensors");
    let o = secondo(&[
        "train",
        "--data",
        "digits",
        "--input-shape",
        "1,8,8",
        "--model",
        CNN,
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let accuracy: f64 = text
        .lines()
        .find(|l| l.starts_with("test "))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in {text}"));
    assert!(accuracy >= 0.98, "{text}");
}

/// Trained batch-norm weights carry their running statistics and counters;
/// quantities, and spectra in both batch-norm modes, run on them.
#[test]
fn a_residual_network_with_batch_norm_runs_through_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("res.safetensors");
    let common = [
        "--data",
        "digits",
        "--input-shape",
        "1,8,8",
        "--model",
        RESNET,
    ];
    let o = secondo(&[&["train", "--epochs", "1", "--out", s(&w)][..], &common].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let state = secondo_nn::read_safetensors(&w).unwrap();
    assert_eq!(state["1.num_batches_tracked"].item(), 45.0); // ⌈1437 / 32⌉ steps
    assert!(state["1.running_var"]
        .to_f64_vec()
        .iter()
        .any(|v| (v - 1.0).abs() > 1e-3));
    let q = dir.path().join("q.safetensors");
    let with_weights = [&common[..], &["--weights", s(&w)]].concat();
    let o = secondo(
        &[
            &[
                "quantities",
                "--quantities",
                "diag_ggn_exact,kflr,batch_l2",
                "--out",
                s(&q),
            ][..],
            &with_weights,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(secondo_nn::read_safetensors(&q)
        .unwrap()
        .contains_key("kflr/3.body.0.weight/in"));
    for mode in ["eval", "train"] {
        let out = dir.path().join(format!("s-{mode}"));
        let o = secondo(
            &[
                &[
                    "spectrum",
                    "--top",
                    "2",
                    "--batchnorm",
                    mode,
                    "--out",
                    s(&out),
                ][..],
                &with_weights,
            ]
            .concat(),
        );
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
    }
}

#[test]
fn bad_input_around_image_layers_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let run = |model: &str, extra: &[&str]| {
        let args = [
            &[
                "quantities",
                "--data",
                "digits",
                "--input-shape",
                "1,8,8",
                "--model",
                model,
                "--quantities",
                "batch_l2",
                "--out",
                s(&out),
            ][..],
            extra,
        ]
        .concat();
        secondo(&args)
    };
    // A channel mismatch names the layer and both sizes.
    let o = run("conv2d(1,4,k=3),conv2d(3,4,k=3),flatten,linear(64,10)", &[]);
    assert_bad_input(
        &o,
        "layer 1 `conv2d(3,4,k=3)` at position 16 expects 3 input channels, got 4",
        &out,
    );
    // A kernel larger than its padded input.
    let o = run("conv2d(1,4,k=11,p=1),flatten,linear(4,10)", &[]);
    assert_bad_input(&o, "does not fit the input axis of size 8", &out);
    // Per-sample quantities with batch statistics.
    let o = run(
        "conv2d(1,4,k=3),batchnorm2d(4),flatten,linear(144,10)",
        &["--batchnorm", "train"],
    );
    assert_bad_input(
        &o,
        "--batchnorm train: quantities are computed per sample",
        &out,
    );
    // Weights without a batch norm's running statistics.
    let w = dir.path().join("w.safetensors");
    let model = "conv2d(1,4,k=3),batchnorm2d(4),flatten,linear(144,10)";
    let mut params = secondo_nn::ParamStore::new();
    let init = secondo_nn::ParamStore::init(&model.parse().unwrap(), 0, secondo_tensor::DType::F32);
    for (name, t) in init.iter() {
        params.insert(name, t.clone());
    }
    params.save(&w).unwrap();
    let o = run(model, &["--weights", s(&w)]);
    assert_bad_input(&o, "1.running_mean", &out);
}
