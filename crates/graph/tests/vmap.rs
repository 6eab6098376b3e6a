//! `vmap` against explicit loops over samples: per-sample gradients, the
//! compositions with `grad`, `jvp` and `vmap` itself, and argument errors.
//! Each primitive's batching rule is checked, for every choice of batched
//! operands, by the table of cases (`src/prims/cases.rs`).

use secondo_graph::check::pseudo_random;
use secondo_graph::{Builder, Executable, Feeds, Graph, Var};
use secondo_tensor::{DType, Tensor};

const B: usize = 3;
const TOL: f64 = 1e-12;

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn stacked(size: usize, shape: &[usize]) -> Vec<usize> {
    std::iter::once(size).chain(shape.iter().copied()).collect()
}

fn tensor(shape: &[usize], values: &[f64]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), values.to_vec()).unwrap()
}

/// Sample `n` of a stack of samples of `len` values each.
fn sample(values: &[f64], n: usize, len: usize) -> &[f64] {
    &values[n * len..(n + 1) * len]
}

fn run(graph: &Graph, outputs: &[Var<'_>], feeds: &Feeds) -> Vec<Vec<f64>> {
    let ids: Vec<usize> = outputs.iter().map(|v| v.id()).collect();
    let exe = Executable::compile(graph, &ids).unwrap();
    exe.run(feeds)
        .unwrap()
        .iter()
        .map(Tensor::to_f64_vec)
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (g, w) in got.iter().zip(want) {
        let err = (g - w).abs() / 1f64.max(w.abs());
        assert!(err < TOL, "{what}: {got:?} vs {want:?}");
    }
}

/// Per-sample loss of a small MLP: softmax cross-entropy of `W2 tanh(W1 x + b1)`
/// against the class index `y`.
fn mlp_loss<'a>(b: &'a Builder, params: &[Var<'a>], x: Var<'a>, y: Var<'a>) -> Var<'a> {
    let h = (b.einsum("oi,i->o", &[params[0], x]) + params[1]).tanh();
    let logits = b.einsum("co,o->c", &[params[2], h]);
    let m = logits.max_over(&[0]);
    let log_sum_exp = (logits - m).exp().sum_all().log() + m;
    log_sum_exp - (logits * y.one_hot(3)).sum_all()
}

#[test]
fn per_sample_gradients_of_an_mlp() {
    let shapes: [&[usize]; 3] = [&[5, 4], &[5], &[3, 5]];
    let b = Builder::new(DType::F64);
    let params: Vec<Var> = ["w1", "b1", "w2"]
        .iter()
        .zip(shapes)
        .map(|(n, s)| b.param(n, s))
        .collect();
    let x = b.input("x", &[4]);
    let y = b.input("y", &[]);
    let loss = mlp_loss(&b, &params, x, y);
    let mut wrt = params.clone();
    wrt.push(x); // the input gradient too: x is batched below
    let grads = b.grad(loss, &wrt).unwrap();

    let xs = b.input("xs", &[B, 4]);
    let ys = b.input("ys", &[B]);
    let per_sample = b.vmap(&grads, &[x, y], &[xs, ys], B).unwrap();
    // grad of vmap: the gradient of the summed batched loss.
    let losses = b.vmap(&[loss], &[x, y], &[xs, ys], B).unwrap()[0];
    let total = b.grad(losses.sum_all(), &params).unwrap();
    let summed: Vec<Var> = per_sample[..3].iter().map(|g| g.sum(&[0])).collect();
    let graph = b.finish().unwrap();

    let mut feeds = Feeds::new();
    for (k, (n, s)) in ["w1", "b1", "w2"].iter().zip(shapes).enumerate() {
        feeds.insert(n, tensor(s, &pseudo_random(numel(s), 3 + k as u64)));
    }
    let x_data = pseudo_random(B * 4, 11);
    let y_data = [2.0, 0.0, 1.0];
    feeds.insert("xs", tensor(&[B, 4], &x_data));
    feeds.insert("ys", tensor(&[B], &y_data));
    let mut outputs = per_sample.clone();
    outputs.extend(&total);
    outputs.extend(&summed);
    let got = run(&graph, &outputs, &feeds);
    for (g, s) in per_sample
        .iter()
        .zip(shapes.iter().copied().chain([&[4usize][..]]))
    {
        assert_eq!(g.shape(), stacked(B, s));
    }

    let single =
        Executable::compile(&graph, &grads.iter().map(|g| g.id()).collect::<Vec<_>>()).unwrap();
    for (n, &label) in y_data.iter().enumerate() {
        feeds.insert("x", tensor(&[4], sample(&x_data, n, 4)));
        feeds.insert("y", Tensor::scalar(label, DType::F64));
        let want = single.run(&feeds).unwrap();
        for (k, w) in want.iter().enumerate() {
            let what = format!("gradient {k}, sample {n}");
            assert_close(&what, sample(&got[k], n, w.numel()), &w.to_f64_vec());
        }
    }
    for k in 0..3 {
        assert_close(&format!("grad of vmap {k}"), &got[4 + k], &got[7 + k]);
        assert!(got[4 + k].iter().any(|v| v.abs() > 1e-3));
    }
}

/// f(x; w) = tanh(W x)² (a vector), with its tangent along t.
fn tanh_square<'a>(b: &'a Builder, x: Var<'a>, w: Var<'a>) -> Var<'a> {
    b.einsum("oi,i->o", &[w, x]).tanh().square()
}

#[test]
fn vmap_of_jvp_and_jvp_of_vmap() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[4]);
    let w = b.input("w", &[3, 4]);
    let t = b.input("t", &[4]);
    let y = tanh_square(&b, x, w);
    let jv = b.jvp(&[y], &[x], &[t]).unwrap()[0];
    let xs = b.input("xs", &[B, 4]);
    let ts = b.input("ts", &[B, 4]);
    // vmap of jvp, batching both the point and the tangent, or only the tangent.
    let vmap_jvp = b.vmap(&[jv], &[x, t], &[xs, ts], B).unwrap()[0];
    let columns = b.vmap(&[jv], &[t], &[ts], B).unwrap()[0];
    // jvp of vmap along the stacked tangents.
    let ys = b.vmap(&[y], &[x], &[xs], B).unwrap()[0];
    let jvp_vmap = b.jvp(&[ys], &[xs], &[ts]).unwrap()[0];
    let graph = b.finish().unwrap();

    let w_data = pseudo_random(12, 5);
    let x_data = pseudo_random(B * 4, 6);
    let t_data = pseudo_random(B * 4, 7);
    let mut feeds = Feeds::new();
    feeds.insert("w", tensor(&[3, 4], &w_data));
    feeds.insert("xs", tensor(&[B, 4], &x_data));
    feeds.insert("ts", tensor(&[B, 4], &t_data));
    feeds.insert("x", tensor(&[4], sample(&x_data, 0, 4)));
    let got = run(&graph, &[vmap_jvp, jvp_vmap, columns], &feeds);
    assert_close("jvp of vmap", &got[1], &got[0]);

    let single = Executable::compile(&graph, &[jv.id()]).unwrap();
    for n in 0..B {
        feeds.insert("t", tensor(&[4], sample(&t_data, n, 4)));
        let at_x0 = single.run(&feeds).unwrap()[0].to_f64_vec();
        assert_close("vmap over tangents", sample(&got[2], n, 3), &at_x0);
        feeds.insert("x", tensor(&[4], sample(&x_data, n, 4)));
        let want = single.run(&feeds).unwrap()[0].to_f64_vec();
        assert_close("vmap of jvp", sample(&got[0], n, 3), &want);
        feeds.insert("x", tensor(&[4], sample(&x_data, 0, 4)));
    }
}

/// vmap over the identity of forward-over-reverse Hessian-vector products gives
/// the whole Hessian, which is symmetric.
#[test]
fn vmap_of_hessian_vector_products_is_the_symmetric_hessian() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[4]);
    let w = b.input("w", &[3, 4]);
    let v = b.input("v", &[4]);
    let f = tanh_square(&b, x, w).sum_all() + x.powf(3.0).sum_all();
    let g = b.grad(f, &[x]).unwrap()[0];
    let hv = b.jvp(&[g], &[x], &[v]).unwrap()[0];
    let eye = b.constant(tensor(
        &[4, 4],
        &(0..16).map(|i| f64::from(i % 5 == 0)).collect::<Vec<_>>(),
    ));
    let hessian = b.vmap(&[hv], &[v], &[eye], 4).unwrap()[0];
    let graph = b.finish().unwrap();
    let mut feeds = Feeds::new();
    feeds.insert("x", tensor(&[4], &pseudo_random(4, 1)));
    feeds.insert("w", tensor(&[3, 4], &pseudo_random(12, 2)));
    let h = run(&graph, &[hessian], &feeds).remove(0);
    for i in 0..4 {
        for j in 0..4 {
            assert!((h[i * 4 + j] - h[j * 4 + i]).abs() < TOL, "{h:?}");
        }
    }
    assert!(h.iter().any(|v| v.abs() > 0.1));
}

#[test]
fn vmap_of_vmap_equals_the_double_loop() {
    const OUTER: usize = 2;
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[4]);
    let w = b.param("w", &[3, 4]);
    let y = tanh_square(&b, x, w);
    let gw = b.grad(y.sum_all(), &[w]).unwrap()[0];
    // Inner: over samples x; outer: over stacks of samples and over weights.
    let xs = b.input("xs", &[B, 4]);
    let inner = b.vmap(&[y, gw], &[x], &[xs], B).unwrap();
    let xss = b.input("xss", &[OUTER, B, 4]);
    let ws = b.input("ws", &[OUTER, 3, 4]);
    let outer = b.vmap(&inner, &[xs, w], &[xss, ws], OUTER).unwrap();
    assert_eq!(outer[0].shape(), vec![OUTER, B, 3]);
    assert_eq!(outer[1].shape(), vec![OUTER, B, 3, 4]);
    let graph = b.finish().unwrap();

    let x_data = pseudo_random(OUTER * B * 4, 8);
    let w_data = pseudo_random(OUTER * 12, 9);
    let mut feeds = Feeds::new();
    feeds.insert("xss", tensor(&[OUTER, B, 4], &x_data));
    feeds.insert("ws", tensor(&[OUTER, 3, 4], &w_data));
    let got = run(&graph, &outer, &feeds);
    let single = Executable::compile(&graph, &[y.id(), gw.id()]).unwrap();
    for i in 0..OUTER {
        for j in 0..B {
            feeds.insert("x", tensor(&[4], sample(&x_data, i * B + j, 4)));
            feeds.insert("w", tensor(&[3, 4], sample(&w_data, i, 12)));
            let want = single.run(&feeds).unwrap();
            let what = format!("sample ({i}, {j})");
            assert_close(&what, sample(&got[0], i * B + j, 3), &want[0].to_f64_vec());
            assert_close(&what, sample(&got[1], i * B + j, 12), &want[1].to_f64_vec());
        }
    }
}

#[test]
fn unbatched_outputs_are_broadcast() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[2]);
    let w = b.input("w", &[2]);
    let xs = b.input("xs", &[B, 2]);
    let out = b.vmap(&[w.exp(), x], &[x], &[xs], B).unwrap();
    assert_eq!(out[0].shape(), vec![B, 2]);
    assert_eq!(out[1].id(), xs.id());
    let graph = b.finish().unwrap();
    let mut feeds = Feeds::new();
    feeds.insert("w", tensor(&[2], &[0.0, 1.0]));
    let got = run(&graph, &out[..1], &feeds).remove(0);
    let e = 1f64.exp();
    assert_close("broadcast", &got, &[1.0, e, 1.0, e, 1.0, e]);
}

fn one_line_error(result: Result<Vec<Var<'_>>, secondo_graph::GraphError>) -> String {
    let err = result.unwrap_err().to_string();
    assert!(!err.contains('\n'), "{err}");
    err
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[3, 2]);
    let y = x.exp().sum_all();
    let wrong = b.input("wrong", &[B, 2, 3]);
    let err = one_line_error(b.vmap(&[y], &[x], &[wrong], B));
    assert_eq!(
        err,
        "building vmap: node 0 has shape [3, 2], so its replacement needs shape [3, 3, 2], got [3, 2, 3]"
    );
    let right = b.input("right", &[B, 3, 2]);
    let err = one_line_error(b.vmap(&[y], &[x], &[], B));
    assert!(err.contains("1 batched nodes but 0 replacements"), "{err}");
    let err = one_line_error(b.vmap(&[y], &[x], &[right], 0));
    assert!(err.contains("positive"), "{err}");
    let err = one_line_error(b.vmap(&[y], &[x, x], &[right, right], B));
    assert!(err.contains("twice"), "{err}");
    let other = Builder::new(DType::F64);
    let stranger = other.input("s", &[B, 3, 2]);
    let err = one_line_error(b.vmap(&[y], &[x], &[stranger], B));
    assert!(err.contains("another builder"), "{err}");
    // Argument errors leave the builder usable.
    assert!(b.check().is_ok());
    assert_eq!(b.vmap(&[y], &[x], &[right], B).unwrap()[0].shape(), vec![B]);
}

#[test]
fn an_einsum_with_every_letter_taken_cannot_be_batched() {
    let letters: String = ('a'..='z').chain('A'..='Z').collect();
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[1; 52]);
    let y = b.einsum(&format!("{letters}->{letters}"), &[x]);
    let xs = b.input("xs", &stacked(2, &[1; 52]));
    let err = one_line_error(b.vmap(&[y], &[x], &[xs], 2));
    assert!(err.contains("no axis letter is left"), "{err}");
}

/// A `where` whose condition covers only trailing axes (as the compiler's
/// passes leave it) batches with the condition's batch axis in front, whether
/// the condition, the branch or both are batched; compiled, the `where` after
/// `vmap` reads an unbatched condition without a broadcast copy.
#[test]
fn where_with_a_condition_over_trailing_axes() {
    use secondo_graph::Op;
    for (batch_c, batch_a) in [(true, false), (false, true), (true, true)] {
        let mut g = Graph::new();
        let input = |g: &mut Graph, name: &str, shape: &[usize]| {
            g.push(
                Op::Input(name.into()),
                vec![],
                Some(shape.to_vec()),
                DType::F64,
            )
            .unwrap()
        };
        let c = input(&mut g, "c", &[2]);
        let a = input(&mut g, "a", &[3, 2]);
        let zero = g
            .push(
                Op::Constant(Tensor::scalar(0.0, DType::F64)),
                vec![],
                None,
                DType::F64,
            )
            .unwrap();
        let w = g
            .push(Op::Where, vec![c, a, zero], None, DType::F64)
            .unwrap();
        let b = Builder::from_graph(g, DType::F64);
        let (mut batched, mut stacks) = (Vec::new(), Vec::new());
        if batch_c {
            batched.push(b.var(c));
            stacks.push(b.input("cs", &[B, 2]));
        }
        if batch_a {
            batched.push(b.var(a));
            stacks.push(b.input("as", &[B, 3, 2]));
        }
        let out = b.vmap(&[b.var(w)], &batched, &stacks, B).unwrap()[0];
        let graph = b.finish().unwrap();

        let cs: Vec<f64> = (0..2 * B).map(|i| f64::from(i % 3 == 0)).collect();
        let avals = pseudo_random(6 * B, 5);
        let mut feeds = Feeds::new();
        feeds.insert("c", tensor(&[2], &cs[..2]));
        feeds.insert("cs", tensor(&[B, 2], &cs));
        feeds.insert("a", tensor(&[3, 2], &avals[..6]));
        feeds.insert("as", tensor(&[B, 3, 2], &avals));
        let exe = Executable::compile(&graph, &[out.id()]).unwrap();
        let got = exe.run(&feeds).unwrap()[0].to_f64_vec();
        for n in 0..B {
            let cn = if batch_c { sample(&cs, n, 2) } else { &cs[..2] };
            let an = if batch_a {
                sample(&avals, n, 6)
            } else {
                &avals[..6]
            };
            let want: Vec<f64> = (0..6)
                .map(|i| if cn[i % 2] != 0.0 { an[i] } else { 0.0 })
                .collect();
            assert_close(
                &format!("c {batch_c}, a {batch_a}, sample {n}"),
                sample(&got, n, 6),
                &want,
            );
        }
        if !batch_c {
            let copies = exe
                .graph()
                .nodes()
                .iter()
                .filter(|n| matches!(n.op, Op::Broadcast))
                .count();
            assert_eq!(copies, 0, "{}", exe.graph());
        }
    }
}
