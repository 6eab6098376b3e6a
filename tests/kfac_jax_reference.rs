//! secondo's KFAC optimizer against kfac-jax 0.0.8's through the committed
//! fixtures of `scripts/reference/make_kfac_jax_fixtures.py`, in f64: the
//! weights after each of 2–3 steps on a tanh MLP with MSE, with fixed
//! learning rate and damping; with momentum, KL-clipping (kfac-jax's
//! `norm_constraint`) and inverses every 2 steps; with a moving average of
//! the factors; and with the quadratic model's learning rate and momentum.
//!
//! The conventions mapped (scripts/reference/README.md, section 5):
//! kfac-jax's `ggn_exact` estimate with a squared-error loss of weight `1/C`
//! is secondo's KFLR (`--curvature ggn`) of the mean MSE; its π-adjusted
//! damping is secondo's factored Tikhonov damping; its moving average is
//! normalized by the sum of its weights, which two steps of secondo's
//! `--ema e` match at `e = d / (1 + d)` (the fixture's `secondo_ema`); its
//! adaptive damping moves every 5 steps by 0.9⁵, so the fixture feeds it
//! secondo's Levenberg–Marquardt rule instead. kfac-jax treats a weight and
//! its bias as one block over the inputs `[a; 1]`, secondo as two: the
//! network with biases checks that difference instead of the steps.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::binary::{s, secondo, stderr};
use common::{relative_error_flat, Fixture};
use secondo::curvature::{compute_quantities, Curvature, Quantity};
use secondo::data::Dataset;
use secondo::linalg::{dense_spd_inverse, DenseSymmetric};
use secondo::second_order::{
    CurvatureBatch, Method, ParamGroup, SecondOrderConfig, StepReport, TrainingPass,
};
use secondo::Objective;
use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

/// Agreement demanded of every step's weights.
const TOL: f64 = 1e-10;

fn fixture(name: &str) -> Fixture {
    Fixture::load(&Path::new("tests/fixtures/kfac_jax").join(format!("{name}.safetensors")))
}

fn meta(f: &Fixture, key: &str) -> f64 {
    f.meta[key]
        .parse()
        .unwrap_or_else(|_| panic!("{}: {key} = {}", f.path.display(), f.meta[key]))
}

fn flat(params: &ParamStore) -> Vec<f64> {
    params.iter().flat_map(|(_, t)| t.to_f64_vec()).collect()
}

/// The fixture's weights after step `k` in the network's order.
fn stored(f: &Fixture, params: &ParamStore, k: usize) -> Vec<f64> {
    params
        .iter()
        .flat_map(|(name, _)| f.tensor(&format!("step{k}/param/{name}")).to_f64_vec())
        .collect()
}

fn scalar(f: &Fixture, name: &str) -> f64 {
    f.tensor(name).to_f64_vec()[0]
}

/// The settings of the fixture's kfac-jax run as secondo's: KFLR, factored
/// damping, inverses every `inverse_every`, no trust region; the adaptive
/// case takes its learning rate and momentum from the quadratic model, as
/// `--adapt-damping` does.
fn config(f: &Fixture) -> SecondOrderConfig {
    let adaptive = f.meta["adaptive"] == "true";
    let fixed = |key: &str, adaptive_value: f64| match adaptive {
        true => adaptive_value,
        false => meta(f, key),
    };
    SecondOrderConfig {
        lr: fixed("lr", 1.0),
        momentum: fixed("momentum", 0.0),
        damping: meta(f, "damping"),
        adapt_damping: adaptive,
        curvature: Curvature::Ggn,
        curvature_batch: None,
        inverse_every: meta(f, "inverse_every") as usize,
        ema: meta(f, "secondo_ema"),
        trust_radius: None,
        kl_clip: match f.meta["norm_constraint"].as_str() {
            "none" => None,
            _ => Some(meta(f, "norm_constraint")),
        },
        ..SecondOrderConfig::new(Method::Kfac)
    }
}

/// The loss and its gradient on all of `data`.
fn loss_and_gradient(obj: &Objective, params: &ParamStore, data: &Dataset) -> (f64, Vec<Tensor>) {
    let batch = CurvatureBatch {
        objective: obj,
        params,
        data: data.clone(),
        seed: 0,
        output: None,
        loss: None,
    };
    let (x, y) = batch.tensors().unwrap();
    let out = obj
        .program(data.len(), true)
        .unwrap()
        .run(params, x, y)
        .unwrap();
    (out.loss, out.grads)
}

/// Runs secondo's KFAC for the fixture's steps on its batch and checks the
/// loss before and the weights after each step (and, with the quadratic
/// model, the damping the next step uses).
fn check(name: &str) {
    let f = fixture(name);
    let obj = f.objective();
    let data = f.dataset(0);
    let mut params = f.params(&obj);
    let config = config(&f);
    let mut opt = config.build(&obj, &ParamGroup::all(&obj), 0).unwrap();
    let steps = meta(&f, "steps") as usize;
    for k in 1..=steps {
        let (loss, grads) = loss_and_gradient(&obj, &params, &data);
        let want = scalar(&f, &format!("step{k}/loss"));
        assert!(
            ((loss - want) / want).abs() < TOL,
            "{name} step {k}: loss {loss} against kfac-jax's {want}"
        );
        let report: StepReport = opt
            .step(&obj, &mut params, &data, &TrainingPass::gradient(&grads))
            .unwrap();
        assert!(report.accepted, "{name} step {k}: {report:?}");
        let err = relative_error_flat(&flat(&params), &stored(&f, &params, k));
        assert!(err < TOL, "{name} step {k}: weights differ by {err:e}");
        if config.adapt_damping && k < steps {
            let next = scalar(&f, &format!("step{}/damping", k + 1));
            assert!(
                ((report.damping - next) / next).abs() < 1e-12,
                "{name} step {k}: damping {} against {next}",
                report.damping
            );
        }
    }
}

#[test]
fn fixed_learning_rate_and_damping_steps_match_kfac_jax() {
    check("nobias_plain");
}

#[test]
fn momentum_kl_clipping_and_inverses_every_two_steps_match_kfac_jax() {
    check("nobias_momentum_kl_inverse_every_2");
}

#[test]
fn the_moving_average_of_the_factors_matches_kfac_jax_normalized_one_over_two_steps() {
    check("nobias_ema");
}

#[test]
fn the_quadratic_models_learning_rate_and_momentum_match_kfac_jax() {
    check("nobias_adaptive");
}

/// Row-major `m (r × k)` times `n (k × c)`.
fn matmul(m: &[f64], n: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for l in 0..k {
            let a = m[i * k + l];
            for j in 0..c {
                out[i * c + j] += a * n[l * c + j];
            }
        }
    }
    out
}

fn mean_diagonal(m: &[f64], n: usize) -> f64 {
    (0..n).map(|i| m[i * n + i]).sum::<f64>() / n as f64
}

fn damped_inverse(m: &[f64], n: usize, mu: f64) -> Vec<f64> {
    let mut d = m.to_vec();
    (0..n).for_each(|i| d[i * n + i] += mu);
    dense_spd_inverse(&DenseSymmetric::new(n, d).unwrap()).unwrap()
}

#[test]
fn kfac_jax_damps_a_weight_and_its_bias_as_one_block_over_the_augmented_inputs() {
    // The engine's factors are kfac-jax's (A the top-left block of its
    // augmented input factor over [a; 1]); kfac-jax's step is the π-damped
    // inverse of that one block on [Wᵀ; bᵀ]; secondo's two blocks (B ⊗ A for
    // W, B for b) take another step.
    let f = fixture("bias_plain");
    let obj = f.objective();
    let data = f.dataset(0);
    let params = f.params(&obj);
    let (lr, damping) = (meta(&f, "lr"), meta(&f, "damping"));
    let batch = CurvatureBatch {
        objective: &obj,
        params: &params,
        data: data.clone(),
        seed: 0,
        output: None,
        loss: None,
    };
    let (x, y) = batch.tensors().unwrap();
    let factors: HashMap<String, Vec<f64>> =
        compute_quantities(&obj, &params, &x, &y, &[Quantity::Kflr], None)
            .unwrap()
            .into_iter()
            .map(|(name, t)| (name, t.to_f64_vec()))
            .collect();
    let (_, grads) = loss_and_gradient(&obj, &params, &data);
    let grad = |name: &str| {
        let i = params.iter().position(|(n, _)| n == name).unwrap();
        grads[i].to_f64_vec()
    };
    let mut kfac_jax_step = Vec::new();
    for info in obj.network.params() {
        let Some(layer) = info.name.strip_suffix(".weight") else {
            continue;
        };
        let (rows, cols) = (info.shape[0], info.shape[1]);
        let aug = f
            .tensor(&format!("step1/factor/{}/in", info.name))
            .to_f64_vec();
        let b = f
            .tensor(&format!("step1/factor/{}/out", info.name))
            .to_f64_vec();
        let a: Vec<f64> = (0..cols * cols)
            .map(|k| aug[(k / cols) * (cols + 1) + k % cols])
            .collect();
        let engine = |side: &str| &factors[&format!("kflr/{}/{side}", info.name)];
        for (what, got, want) in [("A", engine("in"), &a), ("B", engine("out"), &b)] {
            let err = relative_error_flat(got, want);
            assert!(err < TOL, "{}: {what} differs by {err:e}", info.name);
        }
        let bias_out = &factors[&format!("kflr/{layer}.bias/out")];
        assert!(relative_error_flat(bias_out, &b) < TOL, "{layer}: bias B");
        // [Wᵀ; bᵀ] ((cols + 1) × rows), kfac-jax's layout of the block.
        let (gw, gb) = (grad(&info.name), grad(&format!("{layer}.bias")));
        let mut m: Vec<f64> = (0..cols * rows)
            .map(|k| gw[(k % rows) * cols + k / rows])
            .collect();
        m.extend(&gb);
        let n = cols + 1;
        let pi = (mean_diagonal(&aug, n) / mean_diagonal(&b, rows)).sqrt();
        let p = matmul(
            &matmul(
                &damped_inverse(&aug, n, pi * damping.sqrt()),
                &m,
                n,
                n,
                rows,
            ),
            &damped_inverse(&b, rows, damping.sqrt() / pi),
            n,
            rows,
            rows,
        );
        // Back to secondo's order: W (rows × cols) row-major, then b.
        kfac_jax_step.extend((0..rows * cols).map(|k| -lr * p[(k % cols) * rows + k / cols]));
        kfac_jax_step.extend(p[cols * rows..].iter().map(|v| -lr * v));
    }
    let before = flat(&params);
    let stored_step: Vec<f64> = stored(&f, &params, 1)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    let err = relative_error_flat(&kfac_jax_step, &stored_step);
    assert!(err < TOL, "kfac-jax's augmented step differs by {err:e}");

    let mut moved = params.clone();
    let mut opt = config(&f).build(&obj, &ParamGroup::all(&obj), 0).unwrap();
    opt.step(&obj, &mut moved, &data, &TrainingPass::gradient(&grads))
        .unwrap();
    let ours: Vec<f64> = flat(&moved)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    let apart = relative_error_flat(&ours, &stored_step);
    assert!(
        apart > 1e-3,
        "secondo's step is kfac-jax's to {apart:e}: if biases joined their weights' blocks, \
         check the steps with biases directly"
    );
}

#[test]
fn bench_optimizers_notes_a_missing_kfac_jax_and_carries_on() {
    // CI has no Python: the kfac-jax row is skipped with a note, the
    // benchmark's table and files are still written.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-python");
    for (flag, note) in [
        (vec!["--no-torch"], "kfac-jax: skipped (--no-torch)"),
        (vec!["--python", s(&missing)], "kfac-jax: "),
    ] {
        let out = dir.path().join("bench");
        let mut args = vec![
            "bench",
            "--optimizers",
            "--networks",
            "autoencoder",
            "--only",
            "sgd,kfac-jax",
            "--steps",
            "2",
            "--out",
            s(&out),
        ];
        args.extend(flag);
        let o = secondo(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(note), "no '{note}' in:\n{text}");
        assert!(text.contains("sgd "), "no sgd row in:\n{text}");
        assert!(out.join("optimizers.json").exists());
    }
}
