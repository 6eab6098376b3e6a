//! The scheduling and scalar-folding passes: same values, the intended shape.

use secondo_graph::check::pseudo_random;
use secondo_graph::{Builder, Executable, Feeds, Op};
use secondo_tensor::{einsum, BinaryOp, DType, Tensor, UnaryOp};

fn feeds(inputs: &[(&str, &[usize])]) -> Feeds {
    let mut f = Feeds::new();
    for (k, (name, shape)) in inputs.iter().enumerate() {
        let n = shape.iter().product();
        let t = Tensor::from_f64(shape.to_vec(), &pseudo_random(n, k as u64), DType::F64);
        f.insert(name, t.unwrap());
    }
    f
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_f64_vec()
        .iter()
        .zip(b.to_f64_vec())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// A layer's gradient and sum of squared per-sample gradients run side by
/// side; a product that reads another's result never joins its group.
#[test]
fn independent_contractions_run_side_by_side_with_the_values_of_one_by_one() {
    let b = Builder::new(DType::F64);
    let g = b.input("g", &[64, 128]);
    let x = b.input("x", &[64, 160]);
    let grad = b.einsum("no,ni->oi", &[g, x]);
    let squares = b.einsum("no,ni->oi", &[g.square(), x.square()]);
    // Depends on `grad`: may not run beside it.
    let chained = b.einsum("oi,ni->no", &[grad, x]);
    let graph = b.finish().unwrap();
    let outputs = [grad.id(), squares.id(), chained.id()];
    let exe = Executable::compile(&graph, &outputs).unwrap();
    let f = feeds(&[("g", &[64, 128]), ("x", &[64, 160])]);
    let got = exe.run(&f).unwrap();

    let (gt, xt) = (f.get("g").unwrap(), f.get("x").unwrap());
    let want_grad = einsum("no,ni->oi", &[gt, xt]).unwrap();
    let (g2, x2) = (
        UnaryOp::Powf(2.0).apply(gt.clone()),
        UnaryOp::Powf(2.0).apply(xt.clone()),
    );
    let want_squares = einsum("no,ni->oi", &[&g2, &x2]).unwrap();
    let want_chained = einsum("oi,ni->no", &[&want_grad, xt]).unwrap();
    assert!(max_abs_diff(&got[0], &want_grad) < 1e-12);
    assert!(max_abs_diff(&got[1], &want_squares) < 1e-12);
    assert!(max_abs_diff(&got[2], &want_chained) < 1e-12);

    let groups = exe.side_by_side();
    assert_eq!(groups.len(), 1, "{groups:?}\n{}", exe.graph());
    let members: Vec<_> = groups[0].clone().collect();
    assert_eq!(members.len(), 2);
    let ids = exe.graph();
    for &m in &members {
        assert!(matches!(ids.node(m).op, Op::Einsum(_)));
        assert_ne!(ids.node(m).shape, vec![64, 64], "the chained product");
    }
}

/// `einsum(...) · c` multiplies the smallest operand instead of the result,
/// unless the unscaled result is read elsewhere (that would contract twice).
#[test]
fn scalars_move_into_the_smallest_operand_of_a_contraction() {
    let contraction_count = |shared: bool| {
        let b = Builder::new(DType::F64);
        let g = b.input("g", &[8, 30]);
        let x = b.input("x", &[8, 40]);
        let grad = b.einsum("no,ni->oi", &[g, x]);
        let scaled = grad * 0.25;
        let mut outputs = vec![scaled.id()];
        if shared {
            outputs.push(grad.id());
        }
        let exe = Executable::compile(&b.finish().unwrap(), &outputs).unwrap();
        let f = feeds(&[("g", &[8, 30]), ("x", &[8, 40])]);
        let got = exe.run(&f).unwrap();
        let want = einsum("no,ni->oi", &[f.get("g").unwrap(), f.get("x").unwrap()]).unwrap();
        let want = BinaryOp::Mul
            .apply(want, Tensor::scalar(0.25, DType::F64))
            .unwrap();
        assert!(max_abs_diff(&got[0], &want) < 1e-12);
        let nodes = exe.graph().nodes();
        let big_muls = nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Binary(BinaryOp::Mul)) && n.shape == vec![30, 40])
            .count();
        let einsums = nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Einsum(_)))
            .count();
        (big_muls, einsums)
    };
    assert_eq!(contraction_count(false), (0, 1));
    assert_eq!(contraction_count(true), (1, 1));
}

/// `einsum(c·A, A)` and `einsum(A, A)·c` keep the two operands one tensor (a
/// symmetric product the executor computes at half cost): `√c` scales `A`
/// when `c > 0`, else `c` scales the result.
#[test]
fn symmetric_products_stay_symmetric_under_scalars() {
    for c in [0.25, -2.0] {
        let b = Builder::new(DType::F64);
        let a = b.input("a", &[6, 5]);
        let left = b.einsum("ni,nj->ij", &[a * c, a]);
        let right = b.einsum("ni,nj->ij", &[a, a]) * c;
        let exe = Executable::compile(&b.finish().unwrap(), &[left.id(), right.id()]).unwrap();
        let f = feeds(&[("a", &[6, 5])]);
        let got = exe.run(&f).unwrap();
        let want = einsum("ni,nj->ij", &[f.get("a").unwrap(), f.get("a").unwrap()]).unwrap();
        let want = BinaryOp::Mul
            .apply(want, Tensor::scalar(c, DType::F64))
            .unwrap();
        for g in &got {
            assert!(max_abs_diff(g, &want) < 1e-12, "c = {c}");
        }
        for node in exe.graph().nodes() {
            if matches!(node.op, Op::Einsum(_)) {
                assert_eq!(node.inputs[0], node.inputs[1], "c = {c}\n{}", exe.graph());
            }
        }
    }
}

/// `Σ_axes y²` over leading, trailing or middle axes becomes one
/// contraction of `y` with itself (no squared copy).
#[test]
fn sums_of_squares_are_one_contraction() {
    for axes in [vec![0], vec![0, 1], vec![1], vec![1, 2], vec![2, 0]] {
        let b = Builder::new(DType::F64);
        let y = b.input("y", &[3, 4, 5]);
        let total = (y.exp() * 0.5).square().sum(&axes);
        let exe = Executable::compile(&b.finish().unwrap(), &[total.id()]).unwrap();
        let f = feeds(&[("y", &[3, 4, 5])]);
        let got = exe.run(&f).unwrap().remove(0);
        let e = f.get("y").unwrap().to_f64_vec();
        let kept: Vec<usize> = (0..3).filter(|a| !axes.contains(a)).collect();
        let dims = [3, 4, 5];
        let mut want = vec![0.0; kept.iter().map(|&a| dims[a]).product()];
        for (i, v) in e.iter().enumerate() {
            let idx = [i / 20, i / 5 % 4, i % 5];
            let at = kept.iter().fold(0, |acc, &a| acc * dims[a] + idx[a]);
            want[at] += (v.exp() * 0.5).powi(2);
        }
        let diff = got
            .to_f64_vec()
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-12, "axes {axes:?}");
        let squares = exe
            .graph()
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::Unary(UnaryOp::Powf(_))))
            .count();
        assert_eq!(squares, 0, "axes {axes:?}\n{}", exe.graph());
    }
}

/// The peak of values alive at once: a long elementwise chain holds two
/// values at a time (each freed after its last use), while results that
/// run side by side and values read late all count together.
#[test]
fn peak_bytes_follow_the_values_lifetimes() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[1000]);
    let mut y = x;
    for _ in 0..10 {
        y = y.exp();
    }
    let exe = Executable::compile(&b.finish().unwrap(), &[y.id()]).unwrap();
    assert_eq!(exe.graph().len(), 11);
    assert_eq!(exe.peak_bytes(), 2 * 8000);

    // `x` is read again at the end: it stays alive beside the chain.
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[1000]);
    let mut y = x;
    for _ in 0..10 {
        y = y.exp();
    }
    let z = y * x;
    let exe = Executable::compile(&b.finish().unwrap(), &[z.id()]).unwrap();
    assert_eq!(exe.peak_bytes(), 3 * 8000);

    let b = Builder::new(DType::F64);
    let g = b.input("g", &[64, 128]);
    let x = b.input("x", &[64, 160]);
    let grad = b.einsum("no,ni->oi", &[g, x]);
    let squares = b.einsum("no,ni->oi", &[g.square(), x.square()]);
    let exe = Executable::compile(&b.finish().unwrap(), &[grad.id(), squares.id()]).unwrap();
    assert_eq!(exe.side_by_side().len(), 1);
    let inputs = 8 * 64 * (128 + 160);
    let results = 2 * 8 * 128 * 160;
    assert!(exe.peak_bytes() >= (inputs + results) as u64);
    let every_node: u64 = exe
        .graph()
        .nodes()
        .iter()
        .map(|n| 8 * n.shape.iter().product::<usize>() as u64)
        .sum();
    assert!(exe.peak_bytes() <= every_node);
}

/// Convolutions with leading axes beyond the images' (vmapped columns) run
/// as fused primitives and give the values of `unfold`, `einsum` and `fold`
/// evaluated kernel by kernel.
#[test]
fn convolutions_with_leading_axes_run_fused_with_the_values_of_their_definition() {
    use secondo_tensor::{fold, unfold, Window2d};
    let window = Window2d::square(3, 1, 1, 1);
    let (x_shape, g_shape, w_shape) = ([3, 2, 16, 5, 6], [3, 2, 4, 30], [4, 144]);
    let b = Builder::new(DType::F64);
    let x = b.input("x", &x_shape);
    let g = b.input("g", &g_shape);
    let w = b.input("w", &w_shape);
    let rows = x.unfold(window, 0.0).reshape(&[3, 2, 30, 144]);
    let forward = b.einsum("cnli,oi->cnol", &[rows, w]);
    let weight_grad = b.einsum("cnol,cnli->oi", &[g, rows]);
    let input_grad = b
        .einsum("cnol,oi->cnli", &[g, w])
        .reshape(&[3, 2, 5, 6, 16, 3, 3])
        .fold(window, [5, 6]);
    let outputs = [forward.id(), weight_grad.id(), input_grad.id()];
    let exe = Executable::compile(&b.finish().unwrap(), &outputs).unwrap();
    let convs = exe
        .graph()
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Conv(_)));
    assert_eq!(convs.count(), 3);
    let f = feeds(&[("x", &x_shape), ("g", &g_shape), ("w", &w_shape)]);
    let got = exe.run(&f).unwrap();
    let (xt, gt, wt) = (
        f.get("x").unwrap(),
        f.get("g").unwrap(),
        f.get("w").unwrap(),
    );
    let p = unfold(xt, &window, 0.0)
        .unwrap()
        .reshape(vec![3, 2, 30, 144])
        .unwrap();
    let patch_grads = einsum("cnol,oi->cnli", &[gt, wt]).unwrap();
    let want = [
        einsum("cnli,oi->cnol", &[&p, wt]).unwrap(),
        einsum("cnol,cnli->oi", &[gt, &p]).unwrap(),
        fold(
            &patch_grads.reshape(vec![3, 2, 5, 6, 16, 3, 3]).unwrap(),
            &window,
            [5, 6],
        )
        .unwrap(),
    ];
    for (got, want) in got.iter().zip(&want) {
        assert!(max_abs_diff(got, want) < 1e-12);
    }
}

#[test]
fn per_sample_convolution_weight_gradients_run_fused_only_over_unit_axes() {
    use secondo_tensor::{unfold, Window2d};
    let window = Window2d::square(3, 1, 1, 1);
    let fused = |x_shape: [usize; 5], spec: &str| {
        let [c, n, ch, h, w] = x_shape;
        let g_shape = [c, n, 4, h * w];
        let b = Builder::new(DType::F64);
        let x = b.input("x", &x_shape);
        let g = b.input("g", &g_shape);
        let rows = x.unfold(window, 0.0).reshape(&[c, n, h * w, ch * 9]);
        let grads = b.einsum(spec, &[g, rows]);
        let exe = Executable::compile(&b.finish().unwrap(), &[grads.id()]).unwrap();
        let convs = exe.graph().nodes().iter();
        let count = convs.filter(|n| matches!(n.op, Op::Conv(_))).count();
        let f = feeds(&[("x", &x_shape), ("g", &g_shape)]);
        let p = unfold(f.get("x").unwrap(), &window, 0.0)
            .unwrap()
            .reshape(vec![c, n, h * w, ch * 9])
            .unwrap();
        let want = einsum(spec, &[f.get("g").unwrap(), &p]).unwrap();
        let got = exe.run(&f).unwrap();
        assert!(max_abs_diff(&got[0], &want) < 1e-12, "{spec}");
        count
    };
    assert_eq!(fused([3, 1, 16, 5, 6], "anol,anli->aoi"), 1);
    assert_eq!(fused([3, 1, 2, 5, 6], "anol,anli->anoi"), 1);
    assert_eq!(fused([3, 2, 2, 5, 6], "anol,anli->aoi"), 0);
    assert_eq!(fused([1, 3, 2, 5, 6], "anol,anli->noi"), 0);
}
