//! Finite-difference tests of every primitive's vjp and jvp rules, and of
//! their compositions (grad of grad, forward-over-reverse).

use secondo_graph::check::{jvp_error, vjp_error};
use secondo_graph::{Builder, Executable, Feeds, Var};
use secondo_tensor::{BinaryOp, DType, Tensor};

const TOL: f64 = 1e-7;

fn assert_fd(
    name: &str,
    f: impl for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a>,
    shapes: &[&[usize]],
) {
    for seed in 1..4 {
        let err = vjp_error(&f, shapes, seed).unwrap();
        assert!(err < TOL, "{name}: vjp error {err:e} (seed {seed})");
        let err = jvp_error(&f, shapes, seed).unwrap();
        assert!(err < TOL, "{name}: jvp error {err:e} (seed {seed})");
    }
}

#[test]
fn unary_rules() {
    assert_fd("neg", |_, x| -x[0], &[&[3, 2]]);
    assert_fd("exp", |_, x| x[0].exp(), &[&[3, 2]]);
    assert_fd("log", |_, x| (x[0].square() + 0.5).log(), &[&[3, 2]]);
    assert_fd("tanh", |_, x| x[0].tanh(), &[&[3, 2]]);
    assert_fd("erf", |_, x| x[0].erf(), &[&[3, 2]]);
    assert_fd("pow3", |_, x| x[0].powf(3.0), &[&[3, 2]]);
    assert_fd("pow-1.5", |_, x| (x[0].square() + 1.0).powf(-1.5), &[&[4]]);
    assert_fd("sqrt", |_, x| (x[0].square() + 1.0).sqrt(), &[&[4]]);
    assert_fd("square", |_, x| x[0].square(), &[&[4]]);
}

#[test]
fn binary_rules() {
    assert_fd("add", |_, x| x[0] + x[1], &[&[3, 2], &[3, 2]]);
    assert_fd("sub", |_, x| x[0] - x[1], &[&[3, 2], &[3, 2]]);
    assert_fd("mul", |_, x| x[0] * x[1], &[&[3, 2], &[3, 2]]);
    assert_fd(
        "div",
        |_, x| x[0] / (x[1].square() + 0.5),
        &[&[3, 2], &[3, 2]],
    );
    assert_fd("max", |_, x| x[0].max(x[1]), &[&[3, 2], &[3, 2]]);
    assert_fd("scalar operand", |_, x| x[0] * x[1] - x[1], &[&[3, 2], &[]]);
    assert_fd(
        "scalar first",
        |_, x| x[1] / (x[0].square() + 1.0),
        &[&[3, 2], &[]],
    );
    assert_fd("broadcast add", |_, x| x[0] + x[1], &[&[3, 2], &[2]]);
    assert_fd("broadcast mul", |_, x| x[0] * x[1], &[&[3, 1], &[1, 4]]);
    assert_fd(
        "compare masks",
        |_, x| x[0] * x[0].gt(x[1]) + x[1] * x[0].binary(BinaryOp::Lt, x[1]) + x[0].eq(x[1]),
        &[&[5], &[5]],
    );
    assert_fd(
        "where",
        |b, x| b.select(x[0].gt(x[1]), x[0].exp(), x[1].square()),
        &[&[6], &[6]],
    );
    assert_fd(
        "where scalar",
        |b, x| b.select(x[0].gt(b.scalar(0.0)), x[0], x[1]),
        &[&[6], &[]],
    );
}

#[test]
fn reduction_and_shape_rules() {
    assert_fd("sum axis 0", |_, x| x[0].sum(&[0]), &[&[3, 4]]);
    assert_fd("sum axes 0,2", |_, x| x[0].sum(&[0, 2]), &[&[2, 3, 4]]);
    assert_fd("sum all", |_, x| x[0].sum_all(), &[&[2, 3]]);
    assert_fd("mean", |_, x| x[0].mean(&[1]), &[&[2, 3]]);
    assert_fd("max over", |_, x| x[0].max_over(&[1]), &[&[3, 4]]);
    assert_fd("reshape", |_, x| x[0].reshape(&[6, 2]).exp(), &[&[3, 4]]);
    assert_fd(
        "permute",
        |_, x| x[0].permute(&[2, 0, 1]).tanh(),
        &[&[2, 3, 4]],
    );
    assert_fd(
        "broadcast",
        |_, x| x[0].broadcast_to(&[2, 3, 4]).tanh(),
        &[&[3, 1]],
    );
}

#[test]
fn einsum_rules() {
    assert_fd(
        "matmul",
        |b, x| b.einsum("ij,jk->ik", &[x[0], x[1]]),
        &[&[3, 4], &[4, 2]],
    );
    assert_fd(
        "linear",
        |b, x| b.einsum("ni,oi->no", &[x[0], x[1]]),
        &[&[5, 3], &[2, 3]],
    );
    assert_fd(
        "outer per sample",
        |b, x| b.einsum("no,ni->noi", &[x[0], x[1]]),
        &[&[3, 2], &[3, 4]],
    );
    assert_fd(
        "private summed letter",
        |b, x| b.einsum("ij,k->i", &[x[0], x[1]]),
        &[&[3, 2], &[4]],
    );
    assert_fd(
        "three operands",
        |b, x| b.einsum("ij,jk,kl->il", &[x[0], x[1], x[2]]),
        &[&[2, 3], &[3, 2], &[2, 2]],
    );
    assert_fd(
        "same operand twice",
        |b, x| b.einsum("ij,ij->i", &[x[0], x[0]]),
        &[&[3, 2]],
    );
    assert_fd(
        "unary einsum",
        |b, x| b.einsum("ijk->ki", &[x[0]]),
        &[&[2, 3, 4]],
    );
}

#[test]
fn one_hot_has_no_gradient_but_passes_values() {
    assert_fd(
        "one hot weights",
        |b, x| {
            let labels = b.constant(Tensor::from_vec(vec![3], vec![2.0f64, 0.0, 1.0]).unwrap());
            (labels.one_hot(3) * x[0]).sum(&[1])
        },
        &[&[3, 3]],
    );
}

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

/// A binary op whose operand covers only the trailing axes of the other (as
/// the compiler leaves a bias added to a batch) differentiates and batches
/// as if that operand were broadcast: its cotangent sums over the axes it
/// lacks, its tangent and its batch axis line up with the result's.
#[test]
fn binary_ops_with_an_operand_over_trailing_axes() {
    use secondo_graph::{Graph, Op};
    let mut g = Graph::new();
    let x = g
        .push(Op::Input("x".into()), vec![], Some(vec![3, 4]), DType::F64)
        .unwrap();
    let v = g
        .push(Op::Input("v".into()), vec![], Some(vec![4]), DType::F64)
        .unwrap();
    let y = g
        .push(Op::Binary(BinaryOp::Mul), vec![x, v], None, DType::F64)
        .unwrap();
    assert_eq!(g.node(y).shape, vec![3, 4]);
    let b = Builder::from_graph(g, DType::F64);
    let (x, v, y) = (b.var(x), b.var(v), b.var(y));
    let ct = b.input("ct", &[3, 4]);
    let grads = b.grad((y * ct).sum_all(), &[x, v]).unwrap();
    let (tx, tv) = (b.input("tx", &[3, 4]), b.input("tv", &[4]));
    let tangent = b.jvp(&[y], &[x, v], &[tx, tv]).unwrap()[0];
    let vs = b.input("vs", &[2, 4]);
    let batched = b.vmap(&[y], &[v], &[vs], 2).unwrap()[0];
    let graph = b.finish().unwrap();

    let data = |n: usize, seed: u64| secondo_graph::check::pseudo_random(n, seed);
    let (xd, vd, ctd, txd, tvd, vsd) = (
        data(12, 1),
        data(4, 2),
        data(12, 3),
        data(12, 4),
        data(4, 5),
        data(8, 6),
    );
    let mut feeds = Feeds::new();
    for (name, shape, values) in [
        ("x", vec![3, 4], &xd),
        ("v", vec![4], &vd),
        ("ct", vec![3, 4], &ctd),
        ("tx", vec![3, 4], &txd),
        ("tv", vec![4], &tvd),
        ("vs", vec![2, 4], &vsd),
    ] {
        feeds.insert(name, Tensor::from_vec(shape, values.clone()).unwrap());
    }
    let ids = [grads[0].id(), grads[1].id(), tangent.id(), batched.id()];
    let got: Vec<Vec<f64>> = Executable::compile(&graph, &ids)
        .unwrap()
        .run(&feeds)
        .unwrap()
        .iter()
        .map(Tensor::to_f64_vec)
        .collect();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    for i in 0..12 {
        let j = i % 4;
        assert!(close(got[0][i], ctd[i] * vd[j]), "d/dx at {i}");
        assert!(
            close(got[2][i], txd[i] * vd[j] + xd[i] * tvd[j]),
            "tangent at {i}"
        );
        for n in 0..2 {
            assert!(
                close(got[3][n * 12 + i], xd[i] * vsd[n * 4 + j]),
                "vmap at {n}, {i}"
            );
        }
    }
    for j in 0..4 {
        let want: f64 = (0..3).map(|r| ctd[r * 4 + j] * xd[r * 4 + j]).sum();
        assert!(close(got[1][j], want), "d/dv at {j}");
    }
}

#[test]
fn patch_rules() {
    use secondo_tensor::Window2d;
    let odd = Window2d {
        kernel: [2, 3],
        stride: [2, 1],
        padding: [1, 1],
        dilation: [1, 2],
    };
    assert_fd("unfold", |_, x| x[0].unfold(odd, 0.0).tanh(), &[&[2, 5, 6]]);
    assert_fd(
        "unfold, padding read as -inf, then max",
        |_, x| {
            let p = x[0].unfold(Window2d::square(3, 2, 1, 1), f64::NEG_INFINITY);
            p.reshape(&[3, 3, 2, 9]).max_over(&[3]).square()
        },
        &[&[2, 5, 5]],
    );
    assert_fd(
        "fold",
        |_, x| x[0].fold(odd, [5, 6]).tanh(),
        &[&[3, 4, 2, 2, 3]],
    );
    assert_fd(
        "convolution as unfold + einsum",
        |b, x| {
            let p = x[0].unfold(Window2d::square(3, 1, 1, 2), 0.0);
            b.einsum("nijcab,ocab->noij", &[p, x[1]]).tanh()
        },
        &[&[2, 3, 4, 4], &[2, 3, 3, 3]],
    );
}
