//! Whole models with every activation and loss: reverse-mode gradients against
//! central finite differences in f64.

use secondo_graph::check::{pseudo_random, vjp_error};
use secondo_graph::Builder;
use secondo_nn::spec::ModelSpec;
use secondo_nn::{Loss, LossKind, Network, Reduction};
use secondo_tensor::Tensor;

const ACTIVATIONS: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "leakyrelu(0.1)",
    "elu",
    "selu",
    "softplus",
    "gelu",
    "identity",
    "dropout(0.5)",
];

fn targets(kind: LossKind, n: usize, c: usize) -> Tensor {
    match kind {
        LossKind::CrossEntropy => {
            Tensor::from_vec(vec![n], (0..n).map(|i| (i % c) as f64).collect()).unwrap()
        }
        LossKind::Mse => Tensor::from_vec(vec![n, c], pseudo_random(n * c, 5)).unwrap(),
        LossKind::BceWithLogits => {
            Tensor::from_vec(vec![n, c], (0..n * c).map(|i| (i % 2) as f64).collect()).unwrap()
        }
    }
}

#[test]
fn every_activation_and_loss_matches_finite_differences() {
    let (n, c) = (5, 3);
    for act in ACTIVATIONS {
        for kind in [
            LossKind::CrossEntropy,
            LossKind::Mse,
            LossKind::BceWithLogits,
        ] {
            for reduction in [Reduction::Mean, Reduction::Sum] {
                let spec: ModelSpec = format!("linear(4,6),{act},linear(6,{c})").parse().unwrap();
                let net = Network::new(spec, &[4]).unwrap();
                let shapes: Vec<Vec<usize>> =
                    net.params().iter().map(|p| p.shape.clone()).collect();
                let shape_refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
                let loss = Loss::new(kind, reduction);
                let x = Tensor::from_vec(
                    vec![n, 4],
                    pseudo_random(n * 4, 9).iter().map(|v| 2.0 * v).collect(),
                )
                .unwrap();
                let y = targets(kind, n, c);
                let err = vjp_error(
                    |b: &Builder, params| {
                        let out = net.forward(b.constant(x.clone()), params).unwrap();
                        loss.build(out, b.constant(y.clone())).unwrap()
                    },
                    &shape_refs,
                    3,
                )
                .unwrap();
                assert!(err < 1e-7, "{act} {kind} {reduction:?}: error {err:e}");
            }
        }
    }
}

#[test]
fn per_sample_terms_sum_to_the_loss() {
    use secondo_graph::{Executable, Feeds};
    let b = Builder::new(secondo_tensor::DType::F64);
    let net = Network::new("linear(4,3)".parse().unwrap(), &[4]).unwrap();
    let params = net.param_vars(&b);
    let x = b.constant(Tensor::from_vec(vec![6, 4], pseudo_random(24, 1)).unwrap());
    let out = net.forward(x, &params).unwrap();
    let loss = Loss::new(LossKind::CrossEntropy, Reduction::Mean);
    let y = b.constant(targets(LossKind::CrossEntropy, 6, 3));
    let total = loss.build(out, y).unwrap();
    let terms = loss.per_sample(out, y).unwrap();
    let g = b.finish().unwrap();
    let exe = Executable::compile(&g, &[total.id(), terms.id()]).unwrap();
    let mut feeds = Feeds::new();
    feeds.insert(
        "0.weight",
        Tensor::from_vec(vec![3, 4], pseudo_random(12, 2)).unwrap(),
    );
    feeds.insert(
        "0.bias",
        Tensor::from_vec(vec![3], pseudo_random(3, 3)).unwrap(),
    );
    let r = exe.run(&feeds).unwrap();
    let sum: f64 = r[1].to_f64_vec().iter().sum();
    assert!((r[0].item() - sum / 6.0).abs() < 1e-14);
}
