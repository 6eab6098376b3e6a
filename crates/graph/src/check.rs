//! Checks of derivative and batching graphs (f64), used by the tests of
//! every crate that builds graphs and by the table of primitive cases
//! (`prims/cases.rs`): finite differences for `vjp` and `jvp`, loops over
//! samples for `vmap`, and the adjointness of `jvp` and `vjp`.

use secondo_tensor::{DType, Tensor};

use crate::{Builder, Executable, Feeds, GraphError, Var};

/// Deterministic values in `[-1, 1)` from a seed (a small LCG; no dependency).
///
/// ```
/// let a = secondo_graph::check::pseudo_random(3, 7);
/// assert_eq!(a, secondo_graph::check::pseudo_random(3, 7));
/// assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
/// ```
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// Compares the reverse-mode derivative of `f` (contracted with a random
/// cotangent) against central finite differences at a random point, in f64.
/// Returns the largest error relative to `max(1, |value|)`.
///
/// ```
/// use secondo_graph::check::vjp_error;
/// let err = vjp_error(|_, x| x[0].tanh() * x[1], &[&[3], &[3]], 1).unwrap();
/// assert!(err < 1e-8);
/// ```
pub fn vjp_error(
    f: impl for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a>,
    shapes: &[&[usize]],
    seed: u64,
) -> Result<f64, GraphError> {
    vjp_error_on(Builder::input, f, shapes, seed)
}

/// [`vjp_error`] with the operands created by `leaf`.
pub(crate) fn vjp_error_on(
    leaf: Leaf,
    f: impl for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a>,
    shapes: &[&[usize]],
    seed: u64,
) -> Result<f64, GraphError> {
    let b = Builder::new(DType::F64);
    let names = input_names("x", shapes.len());
    let xs = leaves(&b, leaf, &names, shapes);
    let out = f(&b, &xs);
    let ct_shape = out.shape();
    let ct = b.input("cotangent", &ct_shape);
    let scalar = (out * ct).sum_all();
    let grads = b.grad(scalar, &xs)?;
    let mut ids = vec![scalar.id()];
    ids.extend(grads.iter().map(|g| g.id()));
    let graph = b.finish()?;
    let exe = Executable::compile(&graph, &ids)?;
    let value_exe = Executable::compile(&graph, &ids[..1])?;

    let mut values = point(shapes, seed * 31);
    let ct_numel: usize = ct_shape.iter().product();
    let ct_values = pseudo_random(ct_numel, seed * 31 + 1000);
    let feeds = |values: &[Vec<f64>]| -> Result<Feeds, GraphError> {
        let mut feeds = Feeds::new();
        for ((n, s), v) in names.iter().zip(shapes).zip(values) {
            feeds.insert(n, tensor(s, v));
        }
        feeds.insert("cotangent", tensor(&ct_shape, &ct_values));
        Ok(feeds)
    };
    let analytic = exe.run(&feeds(&values)?)?;
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    for i in 0..values.len() {
        let g = analytic[i + 1].to_f64_vec();
        for j in 0..values[i].len() {
            let orig = values[i][j];
            values[i][j] = orig + h;
            let plus = value_exe.run(&feeds(&values)?)?[0].item();
            values[i][j] = orig - h;
            let minus = value_exe.run(&feeds(&values)?)?[0].item();
            values[i][j] = orig;
            let numeric = (plus - minus) / (2.0 * h);
            let scale = 1f64.max(numeric.abs()).max(g[j].abs());
            worst = worst.max((numeric - g[j]).abs() / scale);
        }
    }
    Ok(worst)
}

/// Compares the forward-mode derivative of `f` along a random tangent against
/// central finite differences at a random point, in f64. Returns the largest
/// error relative to `max(1, |value|)`.
///
/// ```
/// use secondo_graph::check::jvp_error;
/// let err = jvp_error(|_, x| x[0].exp() / x[1], &[&[3], &[]], 1).unwrap();
/// assert!(err < 1e-8);
/// ```
pub fn jvp_error(
    f: impl for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a>,
    shapes: &[&[usize]],
    seed: u64,
) -> Result<f64, GraphError> {
    jvp_error_on(Builder::input, f, shapes, seed)
}

/// [`jvp_error`] with the operands created by `leaf`.
pub(crate) fn jvp_error_on(
    leaf: Leaf,
    f: impl for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a>,
    shapes: &[&[usize]],
    seed: u64,
) -> Result<f64, GraphError> {
    let b = Builder::new(DType::F64);
    let names = input_names("x", shapes.len());
    let tnames = input_names("t", shapes.len());
    let xs = leaves(&b, leaf, &names, shapes);
    let ts = inputs(&b, &tnames, shapes);
    let out = f(&b, &xs);
    let tangent = b.jvp(&[out], &xs, &ts)?[0];
    let graph = b.finish()?;
    let exe = Executable::compile(&graph, &[tangent.id()])?;
    let value_exe = Executable::compile(&graph, &[out.id()])?;
    let (point, dir) = (point(shapes, seed * 31), point(shapes, seed * 31 + 500));
    let feeds = |step: f64| -> Feeds {
        let mut feeds = Feeds::new();
        for (i, s) in shapes.iter().enumerate() {
            let moved: Vec<f64> = point[i]
                .iter()
                .zip(&dir[i])
                .map(|(p, d)| p + step * d)
                .collect();
            feeds.insert(&names[i], tensor(s, &moved));
            feeds.insert(&tnames[i], tensor(s, &dir[i]));
        }
        feeds
    };
    let analytic = exe.run(&feeds(0.0))?[0].to_f64_vec();
    let h = 1e-6;
    let plus = value_exe.run(&feeds(h))?[0].to_f64_vec();
    let minus = value_exe.run(&feeds(-h))?[0].to_f64_vec();
    Ok(analytic
        .iter()
        .zip(plus.iter().zip(&minus))
        .map(|(a, (p, m))| {
            let numeric = (p - m) / (2.0 * h);
            (numeric - a).abs() / 1f64.max(numeric.abs()).max(a.abs())
        })
        .fold(0.0, f64::max))
}

/// Compares `vmap` of `f` over [`VMAP_SIZE`] samples with `f` run on each
/// sample, for every subset of batched operands (the others shared by all
/// samples), at random values in f64. Returns the largest error relative to
/// `max(1, |value|)`.
///
/// ```
/// use secondo_graph::check::vmap_error;
/// let err = vmap_error(|b, x| b.einsum("ij,j->i", &[x[0], x[1]]), &[&[2, 3], &[3]], 1).unwrap();
/// assert!(err < 1e-12);
/// ```
pub fn vmap_error(
    f: impl for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a>,
    shapes: &[&[usize]],
    seed: u64,
) -> Result<f64, GraphError> {
    vmap_error_on(Builder::input, f, shapes, seed)
}

/// The batch size of [`vmap_error`].
pub const VMAP_SIZE: usize = 3;

/// [`vmap_error`] with the operands created by `leaf`.
pub(crate) fn vmap_error_on(
    leaf: Leaf,
    f: impl for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a>,
    shapes: &[&[usize]],
    seed: u64,
) -> Result<f64, GraphError> {
    let n = VMAP_SIZE;
    let names = input_names("x", shapes.len());
    let mut worst: f64 = 0.0;
    for mask in 0..1usize << shapes.len() {
        let batched = |i: usize| mask >> i & 1 == 1;
        let b = Builder::new(DType::F64);
        let xs = leaves(&b, leaf, &names, shapes);
        let out = f(&b, &xs);
        let (originals, stacks): (Vec<Var>, Vec<Var>) = (0..shapes.len())
            .filter(|&i| batched(i))
            .map(|i| (xs[i], b.input(&format!("stack{i}"), &stacked(n, shapes[i]))))
            .unzip();
        let vout = b.vmap(&[out], &originals, &stacks, n)?[0];
        let graph = b.finish()?;
        let data: Vec<Vec<f64>> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let copies = if batched(i) { n } else { 1 };
                pseudo_random(numel(s) * copies, seed * 31 + i as u64)
            })
            .collect();
        let mut feeds = Feeds::new();
        for (i, s) in shapes.iter().enumerate() {
            match batched(i) {
                true => feeds.insert(&format!("stack{i}"), tensor(&stacked(n, s), &data[i])),
                false => feeds.insert(&names[i], tensor(s, &data[i])),
            }
        }
        let got = Executable::compile(&graph, &[vout.id()])?.run(&feeds)?[0].to_f64_vec();
        let single = Executable::compile(&graph, &[out.id()])?;
        let len = got.len() / n;
        for k in 0..n {
            for (i, s) in shapes.iter().enumerate() {
                let m = numel(s);
                let values = if batched(i) {
                    &data[i][k * m..(k + 1) * m]
                } else {
                    &data[i]
                };
                feeds.insert(&names[i], tensor(s, values));
            }
            let want = single.run(&feeds)?[0].to_f64_vec();
            worst = got[k * len..(k + 1) * len]
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs() / 1f64.max(w.abs()))
                .fold(worst, f64::max);
        }
    }
    Ok(worst)
}

/// Compares `⟨u, J v⟩` (by `jvp`) with `⟨Jᵀ u, v⟩` (by `vjp`) for the
/// Jacobian `J` of `f` at a random point, random `u` and `v`, in f64: the
/// transposes agree with the tangent rules. Returns the difference relative
/// to `max(1, |⟨u, J v⟩|)`.
///
/// ```
/// use secondo_graph::check::transpose_error;
/// let err = transpose_error(|_, x| (x[0] * x[1]).sum(&[0]).tanh(), &[&[2, 3], &[2, 3]], 1).unwrap();
/// assert!(err < 1e-12);
/// ```
pub fn transpose_error(
    f: impl for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a>,
    shapes: &[&[usize]],
    seed: u64,
) -> Result<f64, GraphError> {
    transpose_error_on(Builder::input, f, shapes, seed)
}

/// [`transpose_error`] with the operands created by `leaf`.
pub(crate) fn transpose_error_on(
    leaf: Leaf,
    f: impl for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a>,
    shapes: &[&[usize]],
    seed: u64,
) -> Result<f64, GraphError> {
    let b = Builder::new(DType::F64);
    let names = input_names("x", shapes.len());
    let vnames = input_names("v", shapes.len());
    let xs = leaves(&b, leaf, &names, shapes);
    let vs = inputs(&b, &vnames, shapes);
    let out = f(&b, &xs);
    let u_shape = out.shape();
    let u = b.input("u", &u_shape);
    let jv = b.jvp(&[out], &xs, &vs)?[0];
    let jtu = b.vjp(&[out], &[u], &xs)?;
    let lhs = (u * jv).sum_all();
    let rhs = jtu
        .iter()
        .zip(&vs)
        .map(|(&g, &v)| (g * v).sum_all())
        .fold(b.scalar(0.0), |acc, term| acc + term);
    let graph = b.finish()?;
    let mut feeds = Feeds::new();
    let (point, dir) = (point(shapes, seed * 31), point(shapes, seed * 31 + 500));
    for (i, s) in shapes.iter().enumerate() {
        feeds.insert(&names[i], tensor(s, &point[i]));
        feeds.insert(&vnames[i], tensor(s, &dir[i]));
    }
    feeds.insert(
        "u",
        tensor(&u_shape, &pseudo_random(numel(&u_shape), seed * 31 + 1000)),
    );
    let out = Executable::compile(&graph, &[lhs.id(), rhs.id()])?.run(&feeds)?;
    let (l, r) = (out[0].item(), out[1].item());
    Ok((l - r).abs() / 1f64.max(l.abs()))
}

/// How a check creates a function's operands: [`Builder::input`], or
/// [`Builder::param`] for the case table's parameter leaf.
pub(crate) type Leaf = for<'a> fn(&'a Builder, &str, &[usize]) -> Var<'a>;

/// Random values for operands of `shapes`, from consecutive seeds.
fn point(shapes: &[&[usize]], seed: u64) -> Vec<Vec<f64>> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| pseudo_random(numel(s), seed + i as u64))
        .collect()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `[size]` followed by `shape`.
fn stacked(size: usize, shape: &[usize]) -> Vec<usize> {
    std::iter::once(size).chain(shape.iter().copied()).collect()
}

fn input_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn inputs<'a>(b: &'a Builder, names: &[String], shapes: &[&[usize]]) -> Vec<Var<'a>> {
    leaves(b, Builder::input, names, shapes)
}

fn leaves<'a>(b: &'a Builder, leaf: Leaf, names: &[String], shapes: &[&[usize]]) -> Vec<Var<'a>> {
    names
        .iter()
        .zip(shapes)
        .map(|(n, s)| leaf(b, n, s))
        .collect()
}

fn tensor(shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).expect("length matches shape")
}
