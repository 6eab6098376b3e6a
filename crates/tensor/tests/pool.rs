//! Max pooling and its companions against a window-by-window reading of the
//! definition: the first maximum in row-major tap order, NaN winning,
//! padding never.

mod common;

use common::values;
use secondo_tensor::{max_pool, max_pool_scatter, max_pool_select, Tensor, Window2d};

fn window(k: [usize; 2], s: [usize; 2], p: [usize; 2], d: [usize; 2]) -> Window2d {
    Window2d {
        kernel: k,
        stride: s,
        padding: p,
        dilation: d,
    }
}

/// The input position each window's maximum lies at (row-major over the
/// plane), for a plane `h×w`; `None` for a window wholly in the padding.
fn argmax(plane: &[f64], [h, w]: [usize; 2], win: &Window2d) -> Vec<Option<usize>> {
    let out = win.output_size([h, w]).unwrap();
    let mut found = Vec::new();
    for i in 0..out[0] {
        for j in 0..out[1] {
            let mut best: Option<(usize, f64)> = None;
            for a in 0..win.kernel[0] {
                for b in 0..win.kernel[1] {
                    let r = (i * win.stride[0] + a * win.dilation[0]) as isize
                        - win.padding[0] as isize;
                    let c = (j * win.stride[1] + b * win.dilation[1]) as isize
                        - win.padding[1] as isize;
                    if r < 0 || c < 0 || r >= h as isize || c >= w as isize {
                        continue;
                    }
                    let at = r as usize * w + c as usize;
                    let v = plane[at];
                    let wins = match best {
                        None => true,
                        Some((_, b)) => v > b || (v.is_nan() && !b.is_nan()),
                    };
                    if wins {
                        best = Some((at, v));
                    }
                }
            }
            found.push(best.map(|b| b.0));
        }
    }
    found
}

/// Values with many ties and a −∞ in every plane, and a NaN in the first
/// (planes with and without NaN take different paths).
fn plane_values(planes: usize, len: usize, seed: u64) -> Vec<f64> {
    let mut v: Vec<f64> = values(planes * len, seed)
        .iter()
        .map(|x| (x * 3.0).round())
        .collect();
    v[len / 3] = f64::NAN;
    (0..planes).for_each(|p| v[p * len + len / 2] = f64::NEG_INFINITY);
    v
}

#[test]
fn pooling_takes_the_first_maximum_of_each_window() {
    let geometries = [
        window([3, 3], [2, 2], [1, 1], [1, 1]),
        window([2, 2], [2, 2], [0, 0], [1, 1]),
        window([3, 2], [1, 3], [1, 1], [2, 1]),
        window([2, 3], [3, 1], [1, 0], [1, 2]),
        window([3, 3], [1, 1], [1, 1], [1, 1]),
    ];
    let (planes, h, w) = (3, 7, 9);
    for (k, win) in geometries.iter().enumerate() {
        let x = plane_values(planes, h * w, k as u64);
        let xt = Tensor::from_vec(vec![planes, h, w], x.clone()).unwrap();
        let tangent: Vec<f64> = (0..x.len()).map(|i| i as f64).collect();
        let tt = Tensor::from_vec(vec![planes, h, w], tangent).unwrap();
        let pooled = max_pool(&xt, win).unwrap().to_f64_vec();
        let selected = max_pool_select(&xt, &tt, win).unwrap().to_f64_vec();
        let ones = Tensor::full(
            max_pool(&xt, win).unwrap().shape().to_vec(),
            1.0,
            xt.dtype(),
        );
        let counts = max_pool_scatter(&xt, &ones, win).unwrap().to_f64_vec();
        let mut want_counts = vec![0.0; x.len()];
        let per_plane = pooled.len() / planes;
        for p in 0..planes {
            let plane = &x[p * h * w..(p + 1) * h * w];
            for (o, at) in argmax(plane, [h, w], win).into_iter().enumerate() {
                let got = (pooled[p * per_plane + o], selected[p * per_plane + o]);
                match at {
                    Some(at) => {
                        let v = plane[at];
                        assert!(
                            got.0 == v || (got.0.is_nan() && v.is_nan()),
                            "{win:?} value"
                        );
                        assert_eq!(got.1, (p * h * w + at) as f64, "{win:?} position");
                        want_counts[p * h * w + at] += 1.0;
                    }
                    None => assert_eq!(got, (f64::NEG_INFINITY, 0.0), "{win:?} padding"),
                }
            }
        }
        assert_eq!(counts, want_counts, "{win:?} scatter");
    }
}
