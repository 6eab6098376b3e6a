//! Finite-difference checks of derivative graphs (f64), used by the tests of
//! every crate that builds graphs.

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
    let b = Builder::new(DType::F64);
    let names = input_names("x", shapes.len());
    let xs = inputs(&b, &names, shapes);
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

    let mut values: Vec<Vec<f64>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| pseudo_random(s.iter().product(), seed * 31 + i as u64))
        .collect();
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
    let b = Builder::new(DType::F64);
    let names = input_names("x", shapes.len());
    let tnames = input_names("t", shapes.len());
    let xs = inputs(&b, &names, shapes);
    let ts = inputs(&b, &tnames, shapes);
    let out = f(&b, &xs);
    let tangent = b.jvp(&[out], &xs, &ts)?[0];
    let graph = b.finish()?;
    let exe = Executable::compile(&graph, &[tangent.id()])?;
    let value_exe = Executable::compile(&graph, &[out.id()])?;
    let point: Vec<Vec<f64>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| pseudo_random(s.iter().product(), seed * 31 + i as u64))
        .collect();
    let dir: Vec<Vec<f64>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| pseudo_random(s.iter().product(), seed * 31 + 500 + i as u64))
        .collect();
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

fn input_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn inputs<'a>(b: &'a Builder, names: &[String], shapes: &[&[usize]]) -> Vec<Var<'a>> {
    names
        .iter()
        .zip(shapes)
        .map(|(n, s)| b.input(n, s))
        .collect()
}

fn tensor(shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).expect("length matches shape")
}
