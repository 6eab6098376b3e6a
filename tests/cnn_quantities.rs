//! Every quantity on convolutional and residual networks against brute force
//! in f64: loops over samples with the plain gradient, and dense GGN and
//! Hessian matrices built column by column from the curvature operators.
//! The networks together cover stride, padding, dilation, groups, overlapping
//! max and average pools, adaptive pooling (to a size that does not divide
//! the input), batch norm in evaluation mode, layer norm, smooth activations
//! after convolutions, and residual blocks with and without a projection.

mod common;

use secondo_curvature::{
    compute_quantities, Curvature, CurvatureOperator, Objective, ObjectiveConfig, Quantity,
};
use secondo_graph::check::pseudo_random;
use secondo_nn::ParamStore;
use secondo_tensor::{DType, Tensor};

const INPUT: [usize; 3] = [2, 7, 7];
const N: usize = 4;
const TOL: f64 = 1e-10;

const NETS: &[&str] = &[
    "conv2d(2,3,k=3,s=2,p=1),relu,maxpool2d(3,s=2,p=1),flatten,linear(12,3)",
    "conv2d(2,4,k=2,d=2,groups=2,bias=false),tanh,avgpool2d(2,s=1),adaptiveavgpool2d(3),flatten,linear(36,3)",
    "conv2d(2,3,k=3,p=1),batchnorm2d(3),relu,\
     residual(conv2d(3,3,k=3,p=1),batchnorm2d(3),relu,conv2d(3,3,k=3,p=1)),relu,\
     residual(conv2d(3,4,k=3,s=2,p=1),relu | conv2d(3,4,k=1,s=2,bias=false)),\
     flatten,linear(64,3)",
    "conv2d(2,2,k=3),layernorm(5),sigmoid,avgpool2d(3,s=2,p=1),flatten,linear(18,3)",
];

/// A network of `NETS`, its parameters (batch-norm running statistics set
/// away from their initial values) and `N` samples for `loss`.
fn problem(spec: &str, loss: &str) -> (Objective, ParamStore, secondo_data::Dataset) {
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: spec.into(),
        input_shape: INPUT.to_vec(),
        loss: loss.into(),
        dtype: DType::F64,
        ..ObjectiveConfig::default()
    })
    .unwrap();
    let mut params = ParamStore::init(objective.network.spec(), 5, DType::F64);
    let buffers: Vec<(String, Vec<usize>)> = params
        .buffers()
        .map(|(n, t)| (n.to_owned(), t.shape().to_vec()))
        .collect();
    for (i, (name, shape)) in buffers.into_iter().enumerate() {
        let v: Vec<f64> = pseudo_random(shape[0], 40 + i as u64)
            .iter()
            .map(|r| {
                if name.ends_with("var") {
                    0.5 + r.abs()
                } else {
                    0.3 * r
                }
            })
            .collect();
        params.insert_buffer(&name, Tensor::from_vec(shape, v).unwrap());
    }
    let features: usize = INPUT.iter().product();
    let x = pseudo_random(N * features, 7)
        .iter()
        .map(|v| 2.0 * v)
        .collect();
    let y = match loss {
        "cross_entropy" => secondo_data::Targets::Classes {
            labels: (0..N as i64).map(|i| (i * 2) % 3).collect(),
            num_classes: 3,
        },
        _ => secondo_data::Targets::Values {
            values: pseudo_random(N * 3, 8),
            width: 3,
        },
    };
    let data = secondo_data::Dataset::new(x, INPUT.to_vec(), y, "cnn").unwrap();
    (objective, params, data)
}

fn tensors(objective: &Objective, data: &secondo_data::Dataset) -> (Tensor, Tensor) {
    objective
        .batch_tensors(&data.batches(data.len()).unwrap().next().unwrap())
        .unwrap()
}

fn get(out: &[(String, Tensor)], name: &str) -> Vec<f64> {
    out.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
        .to_f64_vec()
}

/// Relative error at most [`TOL`], relative to the largest magnitude (at
/// least 1e-6: a layer norm over the last axis cancels the preceding conv's
/// bias, whose derivatives are then rounding noise around zero).
fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let err = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs() / scale));
    assert!(err <= TOL, "{what}: relative error {err:e}");
}

/// The diagonal of a dense curvature matrix.
fn dense_diagonal(
    objective: &Objective,
    params: &ParamStore,
    data: &secondo_data::Dataset,
    kind: Curvature,
    group: Option<&[&str]>,
) -> Vec<f64> {
    let op = CurvatureOperator::new(objective, params, data, data.len(), kind, group).unwrap();
    let (dense, d) = (op.to_dense().unwrap(), op.dim());
    (0..d).map(|i| dense[i * d + i]).collect()
}

#[test]
fn first_order_quantities_equal_loops_over_samples() {
    for spec in NETS {
        let (objective, params, data) = problem(spec, "cross_entropy");
        let (x, y) = tensors(&objective, &data);
        let qs = [
            Quantity::Grad,
            Quantity::BatchGrad,
            Quantity::BatchL2,
            Quantity::SumGradSquared,
            Quantity::Variance,
        ];
        let out = compute_quantities(&objective, &params, &x, &y, &qs, None).unwrap();
        for (name, want) in common::first_order_by_loops(&objective, &params, &data) {
            assert_close(&format!("{spec}: {name}"), &get(&out, &name), &want);
        }
    }
}

#[test]
fn curvature_diagonals_equal_the_dense_matrices() {
    for spec in NETS {
        for loss in ["cross_entropy", "mse"] {
            let (objective, params, data) = problem(spec, loss);
            let (x, y) = tensors(&objective, &data);
            let qs = [
                Quantity::DiagGgnExact,
                Quantity::BatchDiagGgnExact,
                Quantity::DiagHessian,
            ];
            let out = compute_quantities(&objective, &params, &x, &y, &qs, None).unwrap();
            let collect = |q: &str| -> Vec<f64> {
                objective
                    .network
                    .params()
                    .iter()
                    .flat_map(|p| get(&out, &format!("{q}/{}", p.name)))
                    .collect()
            };
            let ggn = dense_diagonal(&objective, &params, &data, Curvature::Ggn, None);
            assert_close(
                &format!("{spec} {loss}: diag_ggn_exact"),
                &collect("diag_ggn_exact"),
                &ggn,
            );
            let hessian = dense_diagonal(&objective, &params, &data, Curvature::Hessian, None);
            assert_close(
                &format!("{spec} {loss}: diag_hessian"),
                &collect("diag_hessian"),
                &hessian,
            );
            // Sample i's slice is its own GGN diagonal, with the batch's reduction.
            let scale = objective.loss.scale(&[N, 3]) / objective.loss.scale(&[1, 3]);
            let i = 2;
            let one = data.select(&[i]).unwrap();
            let own: Vec<f64> = dense_diagonal(&objective, &params, &one, Curvature::Ggn, None)
                .iter()
                .map(|v| v * scale)
                .collect();
            let slice: Vec<f64> = objective
                .network
                .params()
                .iter()
                .flat_map(|p| {
                    let all = get(&out, &format!("batch_diag_ggn_exact/{}", p.name));
                    all[i * p.numel()..(i + 1) * p.numel()].to_vec()
                })
                .collect();
            assert_close(
                &format!("{spec} {loss}: batch_diag_ggn_exact"),
                &slice,
                &own,
            );
        }
    }
}

/// KFLR's output factor of a convolution is the exact GGN block of its bias
/// (BackPACK sums the backpropagated columns over positions first), and its
/// input factor is the patches' second moment.
#[test]
fn kflr_output_factors_are_the_exact_bias_blocks() {
    let spec = NETS[2];
    let (objective, params, data) = problem(spec, "cross_entropy");
    let (x, y) = tensors(&objective, &data);
    let out = compute_quantities(&objective, &params, &x, &y, &[Quantity::Kflr], None).unwrap();
    for layer in ["0", "3.body.0", "3.body.3", "5.body.0", "7"] {
        let bias = format!("{layer}.bias");
        let op = CurvatureOperator::new(
            &objective,
            &params,
            &data,
            N,
            Curvature::Ggn,
            Some(&[bias.as_str()]),
        )
        .unwrap();
        assert_close(
            &format!("kflr {layer}"),
            &get(&out, &format!("kflr/{layer}.bias/out")),
            &op.to_dense().unwrap(),
        );
        assert_eq!(
            get(&out, &format!("kflr/{layer}.weight/out")),
            get(&out, &format!("kflr/{layer}.bias/out"))
        );
    }
    assert!(get(&out, "kflr/5.shortcut.0.weight/in").len() == 9);
}
