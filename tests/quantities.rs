//! BackPACK-style quantities against brute-force computations in f64:
//! explicit loops over samples with the plain gradient, dense GGN diagonals,
//! and Monte-Carlo estimates against their exact counterparts.

mod common;

use secondo_curvature::{
    compute_quantities, sample_mc_targets, Curvature, CurvatureOperator, Objective,
    ObjectiveConfig, Quantity,
};
use secondo_graph::check::pseudo_random;
use secondo_nn::ParamStore;
use secondo_tensor::{DType, Tensor};

fn problem(loss: &str, n: usize) -> (Objective, ParamStore, secondo_data::Dataset) {
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: "linear(3,5),tanh,linear(5,4),sigmoid,linear(4,3)".into(),
        input_shape: vec![3],
        loss: loss.into(),
        dtype: DType::F64,
        ..ObjectiveConfig::default()
    })
    .unwrap();
    let params = ParamStore::init(objective.network.spec(), 3, DType::F64);
    let x = pseudo_random(n * 3, 4).iter().map(|v| 2.0 * v).collect();
    let y = match loss {
        "cross_entropy" => secondo_data::Targets::Classes {
            labels: (0..n as i64).map(|i| i % 3).collect(),
            num_classes: 3,
        },
        "mse" => secondo_data::Targets::Values {
            values: pseudo_random(n * 3, 5),
            width: 3,
        },
        _ => secondo_data::Targets::Values {
            values: (0..n * 3).map(|i| ((i / 2) % 2) as f64).collect(),
            width: 3,
        },
    };
    (
        objective,
        params,
        secondo_data::Dataset::new(x, vec![3], y, "q").unwrap(),
    )
}

fn batch(objective: &Objective, data: &secondo_data::Dataset) -> (Tensor, Tensor) {
    objective
        .batch_tensors(&data.batches(data.len()).unwrap().next().unwrap())
        .unwrap()
}

/// The problem for `loss` with `n` samples and the quantities `qs` on it.
fn run(
    loss: &str,
    n: usize,
    qs: &[Quantity],
) -> (
    Objective,
    ParamStore,
    secondo_data::Dataset,
    Vec<(String, Tensor)>,
) {
    let (objective, params, data) = problem(loss, n);
    let (x, y) = batch(&objective, &data);
    let out = compute_quantities(&objective, &params, &x, &y, qs, None).unwrap();
    (objective, params, data, out)
}

fn get<'a>(out: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &out.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * scale)
}

#[test]
fn first_order_quantities_equal_loops_over_samples() {
    for loss in ["cross_entropy", "mse", "bce_with_logits"] {
        let n = 5;
        let (objective, params, data) = problem(loss, n);
        let (x, y) = batch(&objective, &data);
        let qs = [
            Quantity::Grad,
            Quantity::BatchGrad,
            Quantity::BatchL2,
            Quantity::SumGradSquared,
            Quantity::Variance,
        ];
        let out = compute_quantities(&objective, &params, &x, &y, &qs, None).unwrap();
        for (name, want) in common::first_order_by_loops(&objective, &params, &data) {
            // The variance subtracts two sums of squares: its rounding is larger.
            let tol = if name.starts_with("variance/") {
                1e-10
            } else {
                1e-12
            };
            assert!(
                close(&get(&out, &name).to_f64_vec(), &want, tol),
                "{loss} {name}"
            );
        }
    }
}

#[test]
fn diag_ggn_equals_the_dense_ggn_diagonal() {
    for loss in ["cross_entropy", "mse", "bce_with_logits"] {
        let (objective, params, data, out) = run(
            loss,
            6,
            &[Quantity::DiagGgnExact, Quantity::BatchDiagGgnExact],
        );
        let op =
            CurvatureOperator::new(&objective, &params, &data, 6, Curvature::Ggn, None).unwrap();
        let dense = op.to_dense().unwrap();
        let d = op.dim();
        let diag: Vec<f64> = (0..d).map(|i| dense[i * d + i]).collect();
        let mut got = Vec::new();
        for p in objective.network.params() {
            got.extend(get(&out, &format!("diag_ggn_exact/{}", p.name)).to_f64_vec());
            let per = get(&out, &format!("batch_diag_ggn_exact/{}", p.name));
            let summed = secondo_tensor::ReduceOp::Sum.apply(per, &[0]).unwrap();
            assert!(summed.max_abs_diff(get(&out, &format!("diag_ggn_exact/{}", p.name))) < 1e-14);
        }
        assert!(close(&got, &diag, 1e-10), "{loss}: {got:?} vs {diag:?}");
    }
}

#[test]
fn diag_ggn_mc_converges_to_the_exact_diagonal() {
    for loss in ["cross_entropy", "mse", "bce_with_logits"] {
        let (objective, params, data) = problem(loss, 6);
        let (x, y) = batch(&objective, &data);
        let exact =
            compute_quantities(&objective, &params, &x, &y, &[Quantity::DiagGgnExact], None)
                .unwrap();
        let exact: Vec<f64> = exact.iter().flat_map(|(_, t)| t.to_f64_vec()).collect();
        let err = |m: usize| -> f64 {
            (0..3)
                .map(|seed| {
                    let targets = sample_mc_targets(&objective, &params, &x, &y, m, seed).unwrap();
                    let mc = compute_quantities(
                        &objective,
                        &params,
                        &x,
                        &y,
                        &[Quantity::DiagGgnMc],
                        Some(&targets),
                    )
                    .unwrap();
                    let mc: Vec<f64> = mc.iter().flat_map(|(_, t)| t.to_f64_vec()).collect();
                    let scale = exact.iter().fold(0f64, |a, v| a.max(v.abs()));
                    mc.iter()
                        .zip(&exact)
                        .fold(0f64, |a, (u, v)| a.max((u - v).abs()))
                        / scale
                })
                .sum::<f64>()
                / 3.0
        };
        let (few, many) = (err(10), err(640));
        assert!(
            many < few / 3.0 && many < 0.15,
            "{loss}: {few:.3} at 10 samples, {many:.3} at 640"
        );
    }
}

#[test]
fn requesting_together_equals_one_by_one() {
    let (objective, params, data) = problem("cross_entropy", 4);
    let (x, y) = batch(&objective, &data);
    let all = [
        Quantity::BatchL2,
        Quantity::Variance,
        Quantity::DiagGgnExact,
    ];
    let together = compute_quantities(&objective, &params, &x, &y, &all, None).unwrap();
    for q in all {
        for (name, t) in compute_quantities(&objective, &params, &x, &y, &[q], None).unwrap() {
            assert_eq!(get(&together, &name).to_f64_vec(), t.to_f64_vec(), "{name}");
        }
    }
}

/// The optimized graph for `batch_l2` of a linear layer never holds a tensor of
/// size batch × out × in, while `batch_grad` materializes it exactly once.
#[test]
fn batch_l2_never_materializes_per_sample_gradients() {
    use secondo_curvature::QuantityProgram;
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: "linear(30,20)".into(),
        input_shape: vec![30],
        dtype: DType::F64,
        ..ObjectiveConfig::default()
    })
    .unwrap();
    let (n, out, inp) = (16, 20, 30);
    let big = |q: Quantity| {
        let p = QuantityProgram::compile(&objective, n, &[q], None).unwrap();
        p.graph()
            .nodes()
            .iter()
            .filter(|node| node.shape.iter().product::<usize>() >= n * out * inp)
            .count()
    };
    assert_eq!(big(Quantity::BatchL2), 0);
    assert_eq!(big(Quantity::SumGradSquared), 0);
    assert_eq!(big(Quantity::Variance), 0);
    assert_eq!(big(Quantity::DiagGgnExact), 0);
    assert_eq!(big(Quantity::BatchGrad), 1);
}

/// The multiply-adds the compiled graphs hold: the gradient's are the dense
/// count (forward, weight gradients, input gradients but the first layer's),
/// the variance's one more weight-sized product per layer and a sum of squares
/// per bias: the FLOP floor that keeps it above 1.3 gradients
/// (docs/PERFORMANCE.md).
#[test]
fn flops_of_the_gradient_and_variance_graphs() {
    use secondo_curvature::QuantityProgram;
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: "linear(30,20),relu,linear(20,16),tanh,linear(16,4)".into(),
        input_shape: vec![30],
        ..ObjectiveConfig::default()
    })
    .unwrap();
    let n = 9u64;
    let layers = [(30u64, 20u64), (20, 16), (16, 4)];
    let weight_products: u64 = layers.iter().map(|(i, o)| 2 * n * i * o).sum();
    let input_gradients: u64 = layers[1..].iter().map(|(i, o)| 2 * n * i * o).sum();
    let bias_squares: u64 = layers.iter().map(|(_, o)| 2 * n * o).sum();
    let gradient = objective
        .program(9, true)
        .unwrap()
        .executable()
        .graph()
        .flops();
    assert_eq!(gradient, 2 * weight_products + input_gradients);
    let variance = QuantityProgram::compile(&objective, 9, &[Quantity::Variance], None)
        .unwrap()
        .graph()
        .flops();
    assert_eq!(variance, gradient + weight_products + bias_squares);
}

/// For one sample the KFLR factors are exact: kron(B, A) equals the GGN block
/// of each weight (row-major vec(W) order), and B equals the bias block.
#[test]
fn kflr_of_one_sample_is_the_exact_ggn_block() {
    for loss in ["cross_entropy", "mse", "bce_with_logits"] {
        let (objective, params, data, out) = run(loss, 1, &[Quantity::Kflr]);
        for layer in ["0", "2", "4"] {
            let b = get(&out, &format!("kflr/{layer}.weight/out"));
            let a = get(&out, &format!("kflr/{layer}.weight/in"));
            let (o, i) = (b.shape()[0], a.shape()[0]);
            let (bv, av) = (b.to_f64_vec(), a.to_f64_vec());
            let mut kron = vec![0.0; o * i * o * i];
            for r in 0..o * i {
                for s in 0..o * i {
                    kron[r * o * i + s] = bv[(r / i) * o + s / i] * av[(r % i) * i + s % i];
                }
            }
            let weight = format!("{layer}.weight");
            let op = CurvatureOperator::new(
                &objective,
                &params,
                &data,
                1,
                Curvature::Ggn,
                Some(&[weight.as_str()]),
            )
            .unwrap();
            assert!(
                close(&kron, &op.to_dense().unwrap(), 1e-10),
                "{loss} layer {layer}"
            );
            let bias = format!("{layer}.bias");
            let op = CurvatureOperator::new(
                &objective,
                &params,
                &data,
                1,
                Curvature::Ggn,
                Some(&[bias.as_str()]),
            )
            .unwrap();
            assert!(close(
                &get(&out, &format!("kflr/{layer}.bias/out")).to_f64_vec(),
                &op.to_dense().unwrap(),
                1e-10
            ));
        }
    }
}

#[test]
fn diag_hessian_equals_the_dense_hessian_diagonal() {
    for loss in ["cross_entropy", "mse", "bce_with_logits"] {
        let (objective, params, data, out) = run(loss, 5, &[Quantity::DiagHessian]);
        let op = CurvatureOperator::new(&objective, &params, &data, 5, Curvature::Hessian, None)
            .unwrap();
        let dense = op.to_dense().unwrap();
        let d = op.dim();
        let diag: Vec<f64> = (0..d).map(|i| dense[i * d + i]).collect();
        let got: Vec<f64> = objective
            .network
            .params()
            .iter()
            .flat_map(|p| get(&out, &format!("diag_hessian/{}", p.name)).to_f64_vec())
            .collect();
        assert!(close(&got, &diag, 1e-10), "{loss}");
    }
}

/// For one sample KFRA's batch averages are exact, so its factors equal KFLR's.
#[test]
fn kfra_of_one_sample_equals_kflr() {
    for loss in ["cross_entropy", "mse", "bce_with_logits"] {
        let (_, _, _, out) = run(loss, 1, &[Quantity::Kflr, Quantity::Kfra]);
        for (name, t) in out.iter().filter(|(n, _)| n.starts_with("kfra/")) {
            let kflr = get(&out, &name.replace("kfra/", "kflr/"));
            assert!(
                close(&t.to_f64_vec(), &kflr.to_f64_vec(), 1e-10),
                "{loss} {name}"
            );
        }
    }
}
