//! Max pooling and its two linear companions: the selection of a tangent at
//! each window's maximum, and its adjoint, the scatter of a cotangent back
//! to those positions.
//!
//! As `unfold` + a maximum, pooling would write `K²` copies of its input and
//! its derivatives would broadcast, compare and fold them again; here each
//! window's maximum is found where it lies (the first one in row-major tap
//! order, as PyTorch picks it; padding never wins), and the companions find
//! it again from the input instead of storing indices.

use rayon::prelude::*;

use crate::patches::split_image;
use crate::{Element, Tensor, TensorError, Window2d};

/// One image plane's geometry, with each output row's and column's source
/// rows and columns inside the image (worked out once per call, not per
/// plane or element).
struct Plane {
    image: [usize; 2],
    out: [usize; 2],
    /// Source rows of output row `i`: `rows[row_at[i]..row_at[i + 1]]`.
    rows: Vec<usize>,
    row_at: Vec<usize>,
    cols: Vec<usize>,
    col_at: Vec<usize>,
}

impl Plane {
    fn of(w: &Window2d, shape: &[usize]) -> Result<Plane, TensorError> {
        let (_, image) = split_image(shape, 3)?;
        let image = [image[1], image[2]];
        let out = w.output_size(image).ok_or_else(|| {
            TensorError::Invalid(format!(
                "a {:?} pooling window does not fit a {image:?} input padded by {:?}",
                w.kernel, w.padding
            ))
        })?;
        let sources = |axis: usize| {
            let mut at = vec![0];
            let mut list = Vec::new();
            for o in 0..out[axis] {
                list.extend((0..w.kernel[axis]).filter_map(|t| w.source(axis, o, t, image[axis])));
                at.push(list.len());
            }
            (list, at)
        };
        let ((rows, row_at), (cols, col_at)) = (sources(0), sources(1));
        Ok(Plane {
            image,
            out,
            rows,
            row_at,
            cols,
            col_at,
        })
    }

    /// A result of `shape` (filled with `fill`), written plane by plane in
    /// parallel by `f(out plane, v's plane, x's plane)`: `v` has as many
    /// planes as the result, `x` as many or fewer (repeated over `v`'s
    /// leading ones).
    fn map<T: Element>(
        &self,
        x: &[T],
        v: &[T],
        shape: &[usize],
        fill: f64,
        f: impl Fn(&mut [T], &[T], &[T]) + Sync,
    ) -> Vec<T> {
        let mut out = vec![T::from_f64(fill); shape.iter().product()];
        let planes = x.len() / self.image_len().max(1);
        if out.is_empty() || planes == 0 {
            return out;
        }
        let out_plane = shape[shape.len() - 2..].iter().product::<usize>().max(1);
        let v_plane = v.len() / (out.len() / out_plane);
        out.par_chunks_mut(out_plane)
            .zip(v.par_chunks(v_plane.max(1)))
            .enumerate()
            .for_each(|(p, (o, vp))| {
                let image = &x[(p % planes) * self.image_len()..][..self.image_len()];
                f(o, vp, image)
            });
        out
    }

    fn image_len(&self) -> usize {
        self.image[0] * self.image[1]
    }

    /// Calls `visit(output position, input position of its maximum)` for
    /// every window of `plane` that reaches into the image, in order. NaN
    /// wins a window, as it does in PyTorch.
    fn for_each_max<T: Element>(&self, plane: &[T], mut visit: impl FnMut(usize, usize)) {
        for i in 0..self.out[0] {
            let rows = &self.rows[self.row_at[i]..self.row_at[i + 1]];
            for j in 0..self.out[1] {
                let cols = &self.cols[self.col_at[j]..self.col_at[j + 1]];
                let (Some(&r0), Some(&c0)) = (rows.first(), cols.first()) else {
                    continue;
                };
                let mut at = r0 * self.image[1] + c0;
                let mut best = plane[at];
                for &r in rows {
                    let line = &plane[r * self.image[1]..(r + 1) * self.image[1]];
                    for &c in cols {
                        let v = line[c];
                        if v > best || (v.is_nan() && !best.is_nan()) {
                            (at, best) = (r * self.image[1] + c, v);
                        }
                    }
                }
                visit(i * self.out[1] + j, at);
            }
        }
    }
}

/// The number of leading planes `x` repeats over in `other` (`other`'s
/// leading axes end with `x`'s), or an error naming `op`.
fn repeats(op: &str, x: &[usize], other_lead: &[usize]) -> Result<usize, TensorError> {
    let lead = &x[..x.len() - 2];
    if other_lead.len() < lead.len() || !other_lead.ends_with(lead) {
        return Err(TensorError::Invalid(format!(
            "{op}: leading axes {other_lead:?} do not end with the input's {lead:?}"
        )));
    }
    Ok(other_lead[..other_lead.len() - lead.len()].iter().product())
}

/// Shape of [`max_pool`]'s result: `[..., C, OH, OW]` for `[..., C, H, W]`.
///
/// ```
/// let w = secondo_tensor::Window2d::square(3, 2, 1, 1);
/// assert_eq!(secondo_tensor::max_pool_shape(&w, &[2, 4, 28, 28]).unwrap(), vec![2, 4, 14, 14]);
/// ```
pub fn max_pool_shape(w: &Window2d, shape: &[usize]) -> Result<Vec<usize>, TensorError> {
    let plane = Plane::of(w, shape)?;
    let mut out = shape[..shape.len() - 2].to_vec();
    out.extend(plane.out);
    Ok(out)
}

/// Max pooling of the last two axes: `[..., C, H, W]` to `[..., C, OH, OW]`,
/// each output the maximum of its window (padding excluded).
///
/// ```
/// use secondo_tensor::{max_pool, Tensor, Window2d};
/// let x = Tensor::from_vec(vec![1, 2, 2], vec![1.0f64, 4.0, 3.0, 2.0]).unwrap();
/// let y = max_pool(&x, &Window2d::square(2, 2, 0, 1)).unwrap();
/// assert_eq!((y.shape(), y.to_f64_vec()), (&[1usize, 1, 1][..], vec![4.0]));
/// ```
pub fn max_pool(x: &Tensor, w: &Window2d) -> Result<Tensor, TensorError> {
    let plane = Plane::of(w, x.shape())?;
    let shape = max_pool_shape(w, x.shape())?;
    crate::dispatch!(x, v, T => {
        let out = plane.map(v, v, &shape, f64::NEG_INFINITY, |o, _, image| {
            plane.for_each_max(image, |k, at| o[k] = image[at])
        });
        Ok(Tensor::from_typed(shape, out))
    })
}

/// `t` at each window's maximum of `x`: the derivative of [`max_pool`] at
/// `x` applied to a tangent `t` shaped like `x`, or with more leading axes
/// (`x` is then the same for each of them). Result shaped like
/// `max_pool(t)`.
///
/// ```
/// use secondo_tensor::{max_pool_select, Tensor, Window2d};
/// let x = Tensor::from_vec(vec![1, 2, 2], vec![1.0f64, 4.0, 3.0, 2.0]).unwrap();
/// let t = Tensor::from_vec(vec![2, 1, 2, 2], vec![10.0f64, 20.0, 30.0, 40.0, 1.0, 2.0, 3.0, 4.0]).unwrap();
/// let s = max_pool_select(&x, &t, &Window2d::square(2, 2, 0, 1)).unwrap();
/// assert_eq!(s.to_f64_vec(), vec![20.0, 2.0]);
/// ```
pub fn max_pool_select(x: &Tensor, t: &Tensor, w: &Window2d) -> Result<Tensor, TensorError> {
    let plane = Plane::of(w, x.shape())?;
    let ts = t.shape();
    repeats(
        "max_pool_select",
        x.shape(),
        &ts[..ts.len().saturating_sub(2)],
    )?;
    if ts[ts.len() - 2..] != x.shape()[x.shape().len() - 2..] {
        return Err(TensorError::Invalid(format!(
            "max_pool_select: tangent {ts:?} does not match the input {:?}",
            x.shape()
        )));
    }
    let shape = max_pool_shape(w, ts)?;
    crate::dispatch!(x, xv, T => {
        let tv = t.typed::<T>("max_pool_select")?;
        let out = plane.map(xv, tv, &shape, 0.0, |o, tangent, image| {
            plane.for_each_max(image, |k, at| o[k] = tangent[at])
        });
        Ok(Tensor::from_typed(shape, out))
    })
}

/// The adjoint of [`max_pool_select`]: each value of `g` (shaped like
/// `max_pool(x)`, or with more leading axes) added at its window's maximum
/// of `x`, onto zeros shaped like `x` (with `g`'s leading axes).
///
/// ```
/// use secondo_tensor::{max_pool_scatter, Tensor, Window2d};
/// let x = Tensor::from_vec(vec![1, 2, 2], vec![1.0f64, 4.0, 3.0, 2.0]).unwrap();
/// let g = Tensor::from_vec(vec![1, 1, 1], vec![5.0f64]).unwrap();
/// let s = max_pool_scatter(&x, &g, &Window2d::square(2, 2, 0, 1)).unwrap();
/// assert_eq!(s.to_f64_vec(), vec![0.0, 5.0, 0.0, 0.0]);
/// ```
pub fn max_pool_scatter(x: &Tensor, g: &Tensor, w: &Window2d) -> Result<Tensor, TensorError> {
    let plane = Plane::of(w, x.shape())?;
    let gs = g.shape();
    let lead = &gs[..gs.len().saturating_sub(2)];
    repeats("max_pool_scatter", x.shape(), lead)?;
    if gs[gs.len() - 2..] != plane.out {
        return Err(TensorError::Invalid(format!(
            "max_pool_scatter: cotangent {gs:?} is not pooled from the input {:?}",
            x.shape()
        )));
    }
    let mut shape = lead.to_vec();
    shape.extend(plane.image);
    crate::dispatch!(x, xv, T => {
        let gv = g.typed::<T>("max_pool_scatter")?;
        let out = plane.map(xv, gv, &shape, 0.0, |o, cotangent, image| {
            plane.for_each_max(image, |k, at| o[at] += cotangent[k])
        });
        Ok(Tensor::from_typed(shape, out))
    })
}
