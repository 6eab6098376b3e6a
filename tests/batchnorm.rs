//! Normalization layers against PyTorch and curvlinops: gradients in
//! evaluation and training mode, the running statistics after one training
//! step, and curvature products on a residual network with batch norm in
//! both modes.

mod common;

use common::{fixtures, relative_error, relative_error_flat, Fixture};
use secondo::train::{train, OptimizerChoice, TrainConfig};
use secondo_curvature::{Curvature, CurvatureOperator};
use secondo_nn::Mode;
use secondo_tensor::DType;

fn tol(f: &Fixture) -> f64 {
    if f.dtype() == DType::F32 {
        1e-5
    } else {
        1e-10
    }
}

/// Gradients with batch statistics (`mode = train`) or running statistics.
#[test]
fn gradients_match_pytorch() {
    for path in fixtures("grad_norm") {
        let f = Fixture::load(&path);
        let objective = f.objective();
        let params = f.params(&objective);
        let (x, y) = f.data();
        let n = x.shape()[0];
        let program = match f.meta["mode"].as_str() {
            "train" => objective.training_program(n).unwrap(),
            _ => objective.program(n, true).unwrap(),
        };
        let out = program.run(&params, x, y).unwrap();
        // Relative to the largest gradient: a bias followed by a normalization
        // has a gradient of rounding noise around 0.
        let scale = out
            .grads
            .iter()
            .flat_map(|g| g.to_f64_vec())
            .fold(0f64, |m, v| m.max(v.abs()));
        for (p, g) in objective.network.params().iter().zip(&out.grads) {
            let want = f.tensor(&format!("grad/{}", p.name)).to_dtype(f.dtype());
            let err = g.max_abs_diff(&want) / scale;
            assert!(err < tol(&f), "{} grad/{}: {err:e}", path.display(), p.name);
        }
        assert!((out.loss - f.tensor("loss").item()).abs() < tol(&f) * out.loss.abs());
    }
}

/// One SGD step updates the weights, the running statistics (momentum 0.1,
/// unbiased variance) and the batch counters as PyTorch does.
#[test]
fn a_training_step_updates_the_running_statistics_as_pytorch() {
    let mut checked = 0;
    for path in fixtures("grad_norm")
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("train_step"))
    {
        let f = Fixture::load(&path);
        let objective = f.objective();
        let mut params = f.params(&objective);
        let data = f.dataset(objective.network.output_shape()[0]);
        let lr: f64 = f.meta["lr"].parse().unwrap();
        let config = TrainConfig {
            epochs: 1,
            batch_size: data.len(),
            optimizer: OptimizerChoice::parse("sgd", lr, 0.0, false, 0.0).unwrap(),
            seed: 0,
            ..TrainConfig::default()
        };
        train(&objective, &mut params, &data, &config, |_| {}).unwrap();
        for (name, t) in params.iter().chain(params.buffers()) {
            let want = f.tensor(&format!("updated/{name}")).to_dtype(f.dtype());
            let err = relative_error(t, &want);
            assert!(err < tol(&f), "{} {name}: {err:e}", path.display());
            checked += 1;
        }
        for name in objective.network.spec().batch_counters() {
            let want = f.tensor(&format!("updated/{name}")).item() as i64;
            assert_eq!(params.counter(&name), Some(want), "{name}");
        }
    }
    assert!(checked >= 28, "{checked}");
}

/// Hessian- and GGN-vector products on a residual network with batch norm,
/// with the running statistics (eval) and with the batch's (train), as
/// curvlinops computes them (in train mode the Hessian's reference is
/// PyTorch's reverse-over-reverse autograd, which agrees with finite
/// differences where curvlinops' torch.func product does not; see
/// scripts/reference/README.md).
#[test]
fn curvature_products_match_curvlinops_in_both_batchnorm_modes() {
    for path in fixtures("curvlinops_resnet") {
        let f = Fixture::load(&path);
        let mode = match f.meta["batchnorm"].as_str() {
            "train" => Mode::BatchStatistics,
            _ => Mode::Eval,
        };
        let objective = f.objective().with_batchnorm(mode).unwrap();
        let params = f.params(&objective);
        let data = f.dataset(objective.network.output_shape()[0]);
        let v = f.tensor("v").to_f64_vec();
        let dim = v.len() / 2;
        for (kind, product) in [(Curvature::Hessian, "hvp"), (Curvature::Ggn, "ggnvp")] {
            let op =
                CurvatureOperator::new(&objective, &params, &data, data.len(), kind, None).unwrap();
            let want = f.tensor(product).to_f64_vec();
            for k in 0..2 {
                let got = op.apply(&v[k * dim..(k + 1) * dim]).unwrap();
                let err = relative_error_flat(&got, &want[k * dim..(k + 1) * dim]);
                assert!(err < 1e-10, "{} {product} {k}: {err:e}", path.display());
            }
        }
    }
}

/// With `--batchnorm train` the Monte-Carlo Fisher draws its targets from
/// the train-mode predictive distribution, so with many draws it approaches
/// the train-mode GGN (for cross-entropy the Fisher is the GGN in
/// expectation). The digits' pre-normalization activations are far from
/// the initial running statistics, so eval-mode draws would approach a
/// different matrix.
#[test]
fn train_mode_fisher_draws_from_train_mode_outputs() {
    let config = secondo::ObjectiveConfig {
        spec: "linear(64,8),batchnorm1d(8),relu,linear(8,10)".into(),
        input_shape: vec![64],
        dtype: DType::F64,
        ..Default::default()
    };
    let objective = secondo::Objective::from_config(&config)
        .unwrap()
        .with_batchnorm(Mode::BatchStatistics)
        .unwrap();
    let params = secondo_nn::ParamStore::init(objective.network.spec(), 3, DType::F64);
    let data = secondo_data::digits()
        .select(&(0..16).collect::<Vec<_>>())
        .unwrap();
    let op = |kind| CurvatureOperator::new(&objective, &params, &data, 16, kind, None).unwrap();
    let ggn = op(Curvature::Ggn);
    let fisher = op(Curvature::FisherMc {
        samples: 4000,
        seed: 1,
    });
    let v: Vec<f64> = (0..ggn.dim())
        .map(|i| ((i * 37 % 11) as f64 - 5.0) / 5.0)
        .collect();
    let err = relative_error_flat(&fisher.apply(&v).unwrap(), &ggn.apply(&v).unwrap());
    assert!(err < 0.05, "Monte-Carlo Fisher against the GGN: {err:e}");
}

/// curvlinops' KFAC (`kfac_approx=expand`, type-2 Fisher: exact for
/// cross-entropy) on the residual network in evaluation mode against KFLR:
/// its input factor averages over the `L` output positions as well
/// (`A_curvlinops = A / L`), and its output factor sums per-position outer
/// products where BackPACK (and secondo) sum over positions first, so the
/// output factors agree on the linear layer only.
#[test]
fn kronecker_factors_relate_to_curvlinops_expand_convention() {
    use secondo_curvature::{compute_quantities, Quantity};
    let path = &fixtures("curvlinops_resnet")[0];
    let f = Fixture::load(path);
    assert_eq!(f.meta["batchnorm"], "eval");
    let objective = f.objective();
    let params = f.params(&objective);
    let (x, y) = f.data();
    let out = compute_quantities(&objective, &params, &x, &y, &[Quantity::Kflr], None).unwrap();
    let ours = |name: &str| &out.iter().find(|(k, _)| k == name).unwrap().1;
    for (layer, positions) in [
        ("0", 64.0),
        ("3.body.0", 64.0),
        ("3.body.3", 64.0),
        ("5.body.0", 16.0),
        ("5.shortcut.0", 16.0),
        ("9", 1.0),
    ] {
        let theirs = f.tensor(&format!("kfac_type2/{layer}.weight/in"));
        let scaled: Vec<f64> = theirs.to_f64_vec().iter().map(|v| v * positions).collect();
        let err = relative_error_flat(
            &ours(&format!("kflr/{layer}.weight/in")).to_f64_vec(),
            &scaled,
        );
        assert!(err < 1e-10, "A of {layer}: {err:e}");
    }
    let theirs = f.tensor("kfac_type2/9.weight/out").to_f64_vec();
    let err = relative_error_flat(&ours("kflr/9.weight/out").to_f64_vec(), &theirs);
    assert!(err < 1e-10, "B of the linear layer: {err:e}");
}
