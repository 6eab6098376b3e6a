//! Compositions of the derivative rules (grad of grad, forward-over-reverse,
//! adjointness through several primitives) and build and feed errors. Each
//! primitive's own rules are checked by the table of cases
//! (`src/prims/cases.rs`).

use secondo_graph::{Builder, Executable, Feeds};
use secondo_tensor::{DType, Tensor};

/// Second derivative of f(x) = sin-free scalar function x³·e^x via grad of grad
/// against the analytic f''(x) = e^x (x³ + 6x² + 6x).
#[test]
fn grad_of_grad_matches_analytic_second_derivative() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[]);
    let f = x.powf(3.0) * x.exp();
    let df = b.grad(f, &[x]).unwrap()[0];
    let d2f = b.grad(df, &[x]).unwrap()[0];
    let d3f = b.grad(d2f, &[x]).unwrap()[0];
    let g = b.finish().unwrap();
    let exe = Executable::compile(&g, &[df.id(), d2f.id(), d3f.id()]).unwrap();
    for &v in &[-1.3, 0.2, 0.7, 2.0] {
        let mut feeds = Feeds::new();
        feeds.insert("x", Tensor::scalar(v, DType::F64));
        let out = exe.run(&feeds).unwrap();
        let e = f64::exp(v);
        let want1 = e * (v.powi(3) + 3.0 * v * v);
        let want2 = e * (v.powi(3) + 6.0 * v * v + 6.0 * v);
        let want3 = e * (v.powi(3) + 9.0 * v * v + 18.0 * v + 6.0);
        assert!((out[0].item() - want1).abs() < 1e-12 * (1.0 + want1.abs()));
        assert!((out[1].item() - want2).abs() < 1e-12 * (1.0 + want2.abs()));
        assert!((out[2].item() - want3).abs() < 1e-12 * (1.0 + want3.abs()));
    }
}

/// Hessian-vector product by reverse-over-reverse on a vector function
/// f(x) = Σ tanh(W x)² against the analytic Hessian built column by column.
#[test]
fn hessian_vector_product_by_double_vjp() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[3]);
    let w = b.input("w", &[2, 3]);
    let v = b.input("v", &[3]);
    let z = b.einsum("oi,i->o", &[w, x]);
    let f = z.tanh().square().sum_all();
    let g = b.grad(f, &[x]).unwrap()[0];
    let gv = (g * v).sum_all();
    let hv = b.grad(gv, &[x]).unwrap()[0];
    let graph = b.finish().unwrap();
    let exe = Executable::compile(&graph, &[hv.id()]).unwrap();
    let xs = [0.3, -0.2, 0.5];
    let ws = [0.1, 0.4, -0.3, 0.7, -0.5, 0.2];
    let vs = [1.0, -2.0, 0.5];
    let mut feeds = Feeds::new();
    feeds.insert("x", Tensor::from_vec(vec![3], xs.to_vec()).unwrap());
    feeds.insert("w", Tensor::from_vec(vec![2, 3], ws.to_vec()).unwrap());
    feeds.insert("v", Tensor::from_vec(vec![3], vs.to_vec()).unwrap());
    let got = exe.run(&feeds).unwrap()[0].to_f64_vec();
    // H = Σ_o s''(z_o) w_o w_oᵀ with s(z) = tanh(z)², s'' = 2 sech⁴ − 4 tanh² sech².
    let mut want = [0.0; 3];
    for o in 0..2 {
        let zo: f64 = (0..3).map(|i| ws[o * 3 + i] * xs[i]).sum();
        let (t, sech2) = (zo.tanh(), 1.0 - zo.tanh().powi(2));
        let s2 = 2.0 * sech2 * sech2 - 4.0 * t * t * sech2;
        let wv: f64 = (0..3).map(|i| ws[o * 3 + i] * vs[i]).sum();
        for (i, wi) in want.iter_mut().enumerate() {
            *wi += s2 * ws[o * 3 + i] * wv;
        }
    }
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{got:?} vs {want:?}");
    }
}

#[test]
fn build_errors_are_reported_not_panicked() {
    let b = Builder::new(DType::F32);
    let x = b.input("x", &[2, 3]);
    let y = b.einsum("ij,jk->ik", &[x, x]);
    let _ = y.exp().sum(&[5]);
    let err = b.finish().unwrap_err().to_string();
    assert!(err.contains("einsum"), "{err}");

    let b = Builder::new(DType::F32);
    let x = b.input("x", &[2, 3]);
    let _ = x.reshape(&[7]);
    assert!(b
        .finish()
        .unwrap_err()
        .to_string()
        .contains("cannot reshape"));
}

#[test]
fn executor_checks_feeds() {
    let b = Builder::new(DType::F32);
    let x = b.input("x", &[2]);
    let y = x.exp();
    let exe = Executable::compile(&b.finish().unwrap(), &[y.id()]).unwrap();
    let mut feeds = Feeds::new();
    feeds.insert("x", Tensor::zeros(vec![3], DType::F32));
    assert_eq!(
        exe.run(&feeds).unwrap_err().to_string(),
        "input 'x': expected shape [2], got [3]"
    );
    feeds.insert("x", Tensor::zeros(vec![2], DType::F64));
    assert_eq!(
        exe.run(&feeds).unwrap_err().to_string(),
        "input 'x': expected dtype f32, got f64"
    );
}

#[test]
fn cse_and_dce_shrink_the_graph() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[4]);
    let y = (x.exp() * x.exp()).sum_all();
    let _dead = x.log();
    let g = b.grad(y, &[x]).unwrap()[0];
    let graph = b.finish().unwrap();
    let exe = Executable::compile(&graph, &[g.id()]).unwrap();
    assert!(exe.graph().len() < graph.len());
    let exps = exe
        .graph()
        .nodes()
        .iter()
        .filter(|n| n.op.to_string() == "exp")
        .count();
    assert_eq!(exps, 1, "{}", exe.graph());
}

/// Hessian-vector product by forward-over-reverse equals reverse-over-reverse.
#[test]
fn forward_over_reverse_equals_reverse_over_reverse() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[4]);
    let w = b.input("w", &[3, 4]);
    let v = b.input("v", &[4]);
    let z = b.einsum("oi,i->o", &[w, x]);
    let f = (z.tanh().square() + z.exp() * 0.1).sum_all() + x.powf(3.0).sum_all();
    let g = b.grad(f, &[x]).unwrap()[0];
    let hv_fwd = b.jvp(&[g], &[x], &[v]).unwrap()[0];
    let hv_rev = b.grad((g * v).sum_all(), &[x]).unwrap()[0];
    let graph = b.finish().unwrap();
    let exe = Executable::compile(&graph, &[hv_fwd.id(), hv_rev.id()]).unwrap();
    let mut feeds = Feeds::new();
    feeds.insert(
        "x",
        Tensor::from_vec(vec![4], vec![0.3, -0.2, 0.5, 0.1]).unwrap(),
    );
    feeds.insert(
        "w",
        Tensor::from_vec(
            vec![3, 4],
            (0..12).map(|i| (i as f64 - 6.0) / 10.0).collect(),
        )
        .unwrap(),
    );
    feeds.insert(
        "v",
        Tensor::from_vec(vec![4], vec![1.0, -2.0, 0.5, 3.0]).unwrap(),
    );
    let out = exe.run(&feeds).unwrap();
    assert!(
        out[0].max_abs_diff(&out[1]) < 1e-12,
        "{:?} vs {:?}",
        out[0],
        out[1]
    );
    assert!(out[0].to_f64_vec().iter().any(|v| v.abs() > 0.1));
}

/// ⟨u, J v⟩ = ⟨Jᵀ u, v⟩ for a vector function.
#[test]
fn jvp_and_vjp_are_adjoint() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[3, 2]);
    let u = b.input("u", &[3]);
    let v = b.input("v", &[3, 2]);
    let y = (x.exp() * x.sum(&[0])).max_over(&[1]) + x.tanh().sum(&[1]);
    let jv = b.jvp(&[y], &[x], &[v]).unwrap()[0];
    let jtu = b.vjp(&[y], &[u], &[x]).unwrap()[0];
    let lhs = (u * jv).sum_all();
    let rhs = (jtu * v).sum_all();
    let graph = b.finish().unwrap();
    let exe = Executable::compile(&graph, &[lhs.id(), rhs.id()]).unwrap();
    let mut feeds = Feeds::new();
    feeds.insert(
        "x",
        Tensor::from_vec(vec![3, 2], vec![0.1, 0.9, -0.4, 0.3, 0.7, -0.8]).unwrap(),
    );
    feeds.insert(
        "u",
        Tensor::from_vec(vec![3], vec![1.0, -1.5, 0.5]).unwrap(),
    );
    feeds.insert(
        "v",
        Tensor::from_vec(vec![3, 2], vec![0.2, -0.3, 1.0, 0.4, -0.6, 0.5]).unwrap(),
    );
    let out = exe.run(&feeds).unwrap();
    assert!((out[0].item() - out[1].item()).abs() < 1e-12);
}
