//! Curvature operators over a dataset against curvlinops' fixtures and against
//! brute-force computations from first principles, in f64.

mod common;

use common::{fixtures, relative_error_flat, Fixture};
use secondo_curvature::{Curvature, CurvatureOperator, Objective, ObjectiveConfig};
use secondo_graph::check::pseudo_random;
use secondo_nn::{ParamStore, Reduction};
use secondo_tensor::{DType, Tensor};

const TOL: f64 = 1e-10;

fn operator(f: &Fixture, kind: Curvature) -> CurvatureOperator {
    let objective = f.objective();
    let params = f.params(&objective);
    let data = f.dataset(objective.network.output_shape()[0]);
    let batch: usize = f.meta["batch_size"].parse().unwrap();
    CurvatureOperator::new(&objective, &params, &data, batch, kind, None).unwrap()
}

#[test]
fn operators_match_curvlinops() {
    for path in fixtures("curvlinops") {
        let f = Fixture::load(&path);
        let v = f.tensor("v").to_f64_vec();
        for (kind, dense, product) in [
            (Curvature::Hessian, "hessian", "hvp"),
            (Curvature::Ggn, "ggn", "ggnvp"),
            (Curvature::EmpiricalFisher, "ef", "efvp"),
        ] {
            let op = operator(&f, kind);
            let err = relative_error_flat(&op.apply(&v).unwrap(), &f.tensor(product).to_f64_vec());
            assert!(err < TOL, "{} {product}: {err:e}", path.display());
            let err = relative_error_flat(&op.to_dense().unwrap(), &f.tensor(dense).to_f64_vec());
            assert!(err < TOL, "{} {dense}: {err:e}", path.display());
        }
        let mut op = operator(&f, Curvature::Ggn);
        let err = relative_error_flat(
            &op.jacobian_vector(&v).unwrap(),
            &f.tensor("jvp").to_f64_vec(),
        );
        assert!(err < TOL, "{} jvp: {err:e}", path.display());
        let u = f.tensor("u").to_f64_vec();
        let err = relative_error_flat(
            &op.jacobian_transpose_vector(&u).unwrap(),
            &f.tensor("vjp").to_f64_vec(),
        );
        assert!(err < TOL, "{} vjp: {err:e}", path.display());
    }
}

fn small_objective(
    spec: &str,
    loss: &str,
    reduction: Reduction,
) -> (Objective, ParamStore, secondo_data::Dataset) {
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: spec.into(),
        input_shape: vec![3],
        loss: loss.into(),
        reduction,
        dtype: DType::F64,
    })
    .unwrap();
    let params = ParamStore::init(objective.network.spec(), 7, DType::F64);
    let n = 7;
    let c = objective.network.output_shape()[0];
    let x = pseudo_random(n * 3, 11).iter().map(|v| 2.0 * v).collect();
    let y = match loss {
        "cross_entropy" => secondo_data::Targets::Classes {
            labels: (0..n as i64).map(|i| i % c as i64).collect(),
            num_classes: c,
        },
        "mse" => secondo_data::Targets::Values {
            values: pseudo_random(n * c, 12),
            width: c,
        },
        _ => secondo_data::Targets::Values {
            values: (0..n * c).map(|i| (i % 2) as f64).collect(),
            width: c,
        },
    };
    let data = secondo_data::Dataset::new(x, vec![3], y, "small").unwrap();
    (objective, params, data)
}

/// Per-sample network Jacobians `J_n` (C × P), each row a reverse-mode gradient
/// of one output of one sample, by explicit loops.
fn per_sample_jacobians(
    objective: &Objective,
    params: &ParamStore,
    data: &secondo_data::Dataset,
) -> Vec<Vec<Vec<f64>>> {
    use secondo_graph::{Builder, Executable, Feeds};
    let c = objective.network.output_shape()[0];
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[1, 3]);
    let pick = b.input("pick", &[1, c]);
    let pv = objective.network.param_vars(&b);
    let out = objective.network.forward(x, &pv).unwrap();
    let grads = b.grad((out * pick).sum_all(), &pv).unwrap();
    let ids: Vec<usize> = grads.iter().map(|g| g.id()).collect();
    let exe = Executable::compile(&b.finish().unwrap(), &ids).unwrap();
    (0..data.len())
        .map(|n| {
            (0..c)
                .map(|k| {
                    let mut feeds = Feeds::new();
                    for (name, t) in params.iter() {
                        feeds.insert(name, t.clone());
                    }
                    feeds.insert(
                        "x",
                        Tensor::from_vec(vec![1, 3], data.x[n * 3..n * 3 + 3].to_vec()).unwrap(),
                    );
                    let mut e = vec![0.0; c];
                    e[k] = 1.0;
                    feeds.insert("pick", Tensor::from_vec(vec![1, c], e).unwrap());
                    exe.run(&feeds)
                        .unwrap()
                        .iter()
                        .flat_map(|t| t.to_f64_vec())
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Loss Hessian with respect to one sample's outputs, analytically.
fn loss_hessian(loss: &str, f: &[f64]) -> Vec<Vec<f64>> {
    let c = f.len();
    let mut h = vec![vec![0.0; c]; c];
    match loss {
        "cross_entropy" => {
            let m = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = f.iter().map(|v| (v - m).exp()).sum();
            let p: Vec<f64> = f.iter().map(|v| (v - m).exp() / z).collect();
            for i in 0..c {
                for j in 0..c {
                    h[i][j] = if i == j { p[i] } else { 0.0 } - p[i] * p[j];
                }
            }
        }
        "mse" => (0..c).for_each(|i| h[i][i] = 2.0),
        _ => (0..c).for_each(|i| {
            let s = 1.0 / (1.0 + (-f[i]).exp());
            h[i][i] = s * (1.0 - s);
        }),
    }
    h
}

#[test]
fn ggn_and_ef_equal_brute_force_sums_over_samples() {
    for loss in ["cross_entropy", "mse", "bce_with_logits"] {
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let (objective, params, data) =
                small_objective("linear(3,4),tanh,linear(4,2)", loss, reduction);
            let c = 2;
            let jac = per_sample_jacobians(&objective, &params, &data);
            let p = jac[0][0].len();
            // Network outputs and per-sample gradients by explicit loops.
            let mut ggn = vec![0.0; p * p];
            let mut ef = vec![0.0; p * p];
            let scale = objective.loss.scale(&[data.len(), c]);
            for (n, jn) in jac.iter().enumerate() {
                let one = data.select(&[n]).unwrap();
                let batch = one.batches(1).unwrap().next().unwrap();
                let (x, y) = objective.batch_tensors(&batch).unwrap();
                let out = objective
                    .program(1, true)
                    .unwrap()
                    .run(&params, x, y)
                    .unwrap();
                let f = out.output.to_f64_vec();
                // The program's loss on one sample has reduction factor 1/C (mean) for mse/bce: undo it.
                let unscale = 1.0 / objective.loss.scale(&[1, c]);
                let g: Vec<f64> = out
                    .grads
                    .iter()
                    .flat_map(|t| t.to_f64_vec())
                    .map(|v| v * unscale)
                    .collect();
                let h = loss_hessian(loss, &f);
                for a in 0..p {
                    for b in 0..p {
                        let mut s = 0.0;
                        for i in 0..c {
                            for j in 0..c {
                                s += jn[i][a] * h[i][j] * jn[j][b];
                            }
                        }
                        ggn[a * p + b] += scale * s;
                        ef[a * p + b] += scale * g[a] * g[b];
                    }
                }
            }
            let got_ggn =
                CurvatureOperator::new(&objective, &params, &data, 3, Curvature::Ggn, None)
                    .unwrap()
                    .to_dense()
                    .unwrap();
            let got_ef = CurvatureOperator::new(
                &objective,
                &params,
                &data,
                3,
                Curvature::EmpiricalFisher,
                None,
            )
            .unwrap()
            .to_dense()
            .unwrap();
            assert!(
                relative_error_flat(&got_ggn, &ggn) < TOL,
                "{loss} {reduction:?} ggn"
            );
            assert!(
                relative_error_flat(&got_ef, &ef) < TOL,
                "{loss} {reduction:?} ef"
            );
        }
    }
}

#[test]
fn hessian_equals_finite_differences_of_gradients() {
    let (objective, params, data) = small_objective(
        "linear(3,4),softplus,linear(4,3)",
        "cross_entropy",
        Reduction::Mean,
    );
    let h =
        CurvatureOperator::new(&objective, &params, &data, 4, Curvature::Hessian, None).unwrap();
    let dense = h.to_dense().unwrap();
    let d = h.dim();
    let full = data.batches(data.len()).unwrap().next().unwrap();
    let grad_at = |p: &ParamStore| -> Vec<f64> {
        let (x, y) = objective.batch_tensors(&full).unwrap();
        let out = objective
            .program(data.len(), true)
            .unwrap()
            .run(p, x, y)
            .unwrap();
        out.grads.iter().flat_map(|t| t.to_f64_vec()).collect()
    };
    let eps = 1e-5;
    for j in 0..d {
        let shifted = |sign: f64| {
            let mut p = params.clone();
            let mut at = 0;
            for t in p.tensors_mut() {
                let n = t.numel();
                if (at..at + n).contains(&j) {
                    t.as_mut_slice::<f64>().unwrap()[j - at] += sign * eps;
                }
                at += n;
            }
            grad_at(&p)
        };
        let (gp, gm) = (shifted(1.0), shifted(-1.0));
        for i in 0..d {
            let fd = (gp[i] - gm[i]) / (2.0 * eps);
            assert!(
                (fd - dense[i * d + j]).abs() < 1e-7,
                "H[{i},{j}] = {} vs fd {fd}",
                dense[i * d + j]
            );
        }
    }
}

#[test]
fn ggn_equals_hessian_for_linear_model_with_mse() {
    let (objective, params, data) = small_objective("linear(3,2)", "mse", Reduction::Mean);
    let h = CurvatureOperator::new(&objective, &params, &data, 3, Curvature::Hessian, None)
        .unwrap()
        .to_dense()
        .unwrap();
    let g = CurvatureOperator::new(&objective, &params, &data, 3, Curvature::Ggn, None)
        .unwrap()
        .to_dense()
        .unwrap();
    assert!(relative_error_flat(&g, &h) < 1e-13);
}

#[test]
fn mc_fisher_converges_to_the_ggn() {
    for loss in ["cross_entropy", "mse", "bce_with_logits"] {
        let (objective, params, data) =
            small_objective("linear(3,4),tanh,linear(4,3)", loss, Reduction::Mean);
        let ggn = CurvatureOperator::new(&objective, &params, &data, 7, Curvature::Ggn, None)
            .unwrap()
            .to_dense()
            .unwrap();
        let err = |samples: usize| -> f64 {
            // Average over seeds to measure the typical error at this sample count.
            (0..4)
                .map(|seed| {
                    let f = CurvatureOperator::new(
                        &objective,
                        &params,
                        &data,
                        7,
                        Curvature::FisherMc { samples, seed },
                        None,
                    )
                    .unwrap()
                    .to_dense()
                    .unwrap();
                    relative_error_flat(&f, &ggn)
                })
                .sum::<f64>()
                / 4.0
        };
        let (few, many) = (err(16), err(1024));
        // Monte-Carlo error shrinks like 1/√samples: 8x fewer at 64x the samples.
        assert!(
            many < few / 4.0,
            "{loss}: error {few:.3} at 16 samples, {many:.3} at 1024"
        );
        assert!(many < 0.1, "{loss}: error {many:.3} at 1024 samples");
    }
}

#[test]
fn group_restriction_is_a_diagonal_block() {
    let (objective, params, data) = small_objective(
        "linear(3,4),tanh,linear(4,2)",
        "cross_entropy",
        Reduction::Mean,
    );
    let full =
        CurvatureOperator::new(&objective, &params, &data, 3, Curvature::Hessian, None).unwrap();
    let dense = full.to_dense().unwrap();
    let block = CurvatureOperator::new(
        &objective,
        &params,
        &data,
        3,
        Curvature::Hessian,
        Some(&["2.weight"]),
    )
    .unwrap();
    let sub = block.to_dense().unwrap();
    let (d, start, k) = (full.dim(), 12 + 4, 8);
    assert_eq!(block.dim(), k);
    for i in 0..k {
        for j in 0..k {
            assert!((sub[i * k + j] - dense[(start + i) * d + start + j]).abs() < 1e-14);
        }
    }
    assert!(CurvatureOperator::new(
        &objective,
        &params,
        &data,
        3,
        Curvature::Hessian,
        Some(&["9.weight"])
    )
    .is_err());
}

#[test]
fn parameter_list_and_block_forms_agree_with_flat_products() {
    let (objective, params, data) =
        small_objective("linear(3,4),tanh,linear(4,2)", "mse", Reduction::Mean);
    let op = CurvatureOperator::new(&objective, &params, &data, 4, Curvature::Ggn, None).unwrap();
    let d = op.dim();
    let v1 = pseudo_random(d, 1);
    let v2 = pseudo_random(d, 2);
    let flat1 = op.apply(&v1).unwrap();
    let flat2 = op.apply(&v2).unwrap();
    let block = op.apply_block(&[v1.clone(), v2].concat(), 2).unwrap();
    assert_eq!(block, [flat1.clone(), flat2].concat());
    let tensors: Vec<Tensor> = {
        let mut at = 0;
        objective
            .network
            .params()
            .iter()
            .map(|p| {
                let n = p.numel();
                at += n;
                Tensor::from_vec(p.shape.clone(), v1[at - n..at].to_vec()).unwrap()
            })
            .collect()
    };
    let out: Vec<f64> = op
        .apply_tensors(&tensors)
        .unwrap()
        .iter()
        .flat_map(|t| t.to_f64_vec())
        .collect();
    assert_eq!(out, flat1);
    assert!(op.apply(&v1[1..]).is_err());
}

/// Operators keep the forward and backward values of every batch between
/// products, from the first; recomputing them gives the same products, for
/// every kind, on batches of uneven size.
#[test]
fn kept_values_give_the_products_of_recomputation() {
    let (objective, params, data) = small_objective(
        "linear(3,4),sigmoid,linear(4,3)",
        "cross_entropy",
        Reduction::Mean,
    );
    for kind in [
        Curvature::Hessian,
        Curvature::Ggn,
        Curvature::EmpiricalFisher,
        Curvature::FisherMc {
            samples: 2,
            seed: 3,
        },
    ] {
        let op = CurvatureOperator::new(&objective, &params, &data, 3, kind, None).unwrap();
        assert_eq!(op.kept_values(), 0, "{kind:?}");
        let v = pseudo_random(op.dim(), 5);
        let kept = op.apply(&v).unwrap();
        assert!(op.kept_values() > 0, "{kind:?}");
        let recomputed = op.without_kept_values().apply(&v).unwrap();
        assert!(relative_error_flat(&kept, &recomputed) < 1e-13, "{kind:?}");
    }
}

/// `vᵢᵀ C vⱼ` of the vectors `vs` from the dense matrix.
fn dense_form(dense: &[f64], vs: &[Vec<f64>]) -> Vec<f64> {
    let d = vs[0].len();
    let cv: Vec<Vec<f64>> = vs
        .iter()
        .map(|v| {
            (0..d)
                .map(|r| (0..d).map(|c| dense[r * d + c] * v[c]).sum())
                .collect()
        })
        .collect();
    vs.iter()
        .flat_map(|u| {
            cv.iter()
                .map(move |w| u.iter().zip(w).map(|(a, b)| a * b).sum())
        })
        .collect()
}

/// The bilinear form from Jacobian-vector products is the dense matrix's
/// and `vᵢᵀ apply(vⱼ)`, for every kind, loss and reduction, on batches of
/// uneven size, for an MLP and a CNN.
#[test]
fn gram_is_the_bilinear_form_of_the_products_and_the_dense_matrix() {
    let cnn = |loss: &str, reduction| {
        let objective = Objective::from_config(&ObjectiveConfig {
            spec: "conv2d(1,2,k=3,p=1),tanh,maxpool2d(2),flatten,linear(8,3)".into(),
            input_shape: vec![1, 4, 4],
            loss: loss.into(),
            reduction,
            dtype: DType::F64,
        })
        .unwrap();
        let (_, _, small) = small_objective("linear(3,3)", loss, reduction);
        let x = pseudo_random(small.len() * 16, 13);
        let data = secondo_data::Dataset::new(x, vec![1, 4, 4], small.y, "images").unwrap();
        let params = ParamStore::init(objective.network.spec(), 7, DType::F64);
        (objective, params, data)
    };
    let mut cases = Vec::new();
    for loss in ["cross_entropy", "mse", "bce_with_logits"] {
        for reduction in [Reduction::Mean, Reduction::Sum] {
            cases.push(small_objective(
                "linear(3,4),tanh,linear(4,3)",
                loss,
                reduction,
            ));
        }
        cases.push(cnn(loss, Reduction::Mean));
    }
    for (objective, params, data) in cases {
        for kind in [
            Curvature::Ggn,
            Curvature::EmpiricalFisher,
            Curvature::FisherMc {
                samples: 2,
                seed: 3,
            },
            Curvature::Hessian,
        ] {
            let case = format!("{} {kind:?}", objective.network.spec());
            let mut op = CurvatureOperator::new(&objective, &params, &data, 3, kind, None).unwrap();
            let vs: Vec<Vec<f64>> = (0..3).map(|s| pseudo_random(op.dim(), 20 + s)).collect();
            let refs: Vec<&[f64]> = vs.iter().map(Vec::as_slice).collect();
            let gram = op.gram(&refs).unwrap();
            let products: Vec<f64> = vs
                .iter()
                .flat_map(|u| {
                    let cols: Vec<Vec<f64>> = vs.iter().map(|w| op.apply(w).unwrap()).collect();
                    cols.into_iter()
                        .map(|cw| u.iter().zip(&cw).map(|(a, b)| a * b).sum::<f64>())
                        .collect::<Vec<_>>()
                })
                .collect();
            let dense = dense_form(&op.to_dense().unwrap(), &vs);
            assert!(relative_error_flat(&gram, &products) < TOL, "{case}");
            assert!(relative_error_flat(&gram, &dense) < TOL, "{case}");
            assert_eq!(op.gram(&refs[..1]).unwrap().len(), 1);
            assert!(op.gram(&[&vs[0][1..]]).is_err());
        }
    }
}
