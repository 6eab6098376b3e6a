use rayon::prelude::*;

use crate::{Element, Tensor, TensorError};

/// Row-major strides (in elements) of a contiguous array of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<isize> {
    let mut strides = vec![1isize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1] as isize;
    }
    strides
}

/// Gathers `src` viewed with `strides` (one per output axis, 0 to repeat) into a
/// contiguous array of `shape`.
pub(crate) fn strided_copy<T: Element>(src: &[T], shape: &[usize], strides: &[isize]) -> Vec<T> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Vec::new();
    }
    if shape.is_empty() {
        return vec![src[0]];
    }
    let inner = shape[shape.len() - 1];
    let inner_stride = strides[strides.len() - 1];
    let outer_shape = &shape[..shape.len() - 1];
    let outer_strides = &strides[..strides.len() - 1];
    let row_offset = |mut r: usize| -> isize {
        let mut off = 0isize;
        for (d, &s) in outer_shape.iter().zip(outer_strides).rev() {
            off += (r % d) as isize * s;
            r /= d;
        }
        off
    };
    let mut out = vec![T::zero(); n];
    let fill = |(r, row): (usize, &mut [T])| {
        let base = row_offset(r);
        if inner_stride == 1 {
            row.copy_from_slice(&src[base as usize..base as usize + inner]);
        } else {
            for (j, o) in row.iter_mut().enumerate() {
                *o = src[(base + j as isize * inner_stride) as usize];
            }
        }
    };
    if n >= 1 << 16 {
        out.par_chunks_mut(inner).enumerate().for_each(fill);
    } else {
        out.chunks_mut(inner).enumerate().for_each(fill);
    }
    out
}

/// The broadcast of two shapes under NumPy's rules, or `None` when incompatible.
///
/// ```
/// assert_eq!(secondo_tensor::broadcast_shapes(&[3, 1], &[4]), Some(vec![3, 4]));
/// assert_eq!(secondo_tensor::broadcast_shapes(&[3], &[4]), None);
/// ```
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        if i + s.len() < n {
            1
        } else {
            s[i + s.len() - n]
        }
    };
    (0..n)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

impl Tensor {
    /// Reorders the axes: output axis `i` is input axis `perm[i]`.
    ///
    /// ```
    /// use secondo_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![2, 3], (0..6).map(|v| v as f32).collect()).unwrap();
    /// let p = t.permute(&[1, 0]).unwrap();
    /// assert_eq!(p.shape(), &[3, 2]);
    /// assert_eq!(p.to_f64_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    /// ```
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor, TensorError> {
        let rank = self.shape().len();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(TensorError::Invalid(format!(
                "permute: {perm:?} is not a permutation of the {rank} axes of {:?}",
                self.shape()
            )));
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let src_strides = contiguous_strides(self.shape());
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let strides: Vec<isize> = perm.iter().map(|&p| src_strides[p]).collect();
        Ok(
            crate::dispatch!(self, v, T => Tensor::from_typed(shape.clone(), strided_copy::<T>(v, &shape, &strides))),
        )
    }

    /// Repeats values along new leading axes and along axes of size 1 (NumPy rules).
    ///
    /// ```
    /// use secondo_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap();
    /// assert_eq!(t.broadcast_to(&[2, 2]).unwrap().to_f64_vec(), vec![1.0, 2.0, 1.0, 2.0]);
    /// ```
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor, TensorError> {
        let src = self.shape();
        if broadcast_shapes(src, shape).as_deref() != Some(shape) {
            return Err(TensorError::ShapeMismatch {
                op: "broadcast".into(),
                a: src.to_vec(),
                b: shape.to_vec(),
            });
        }
        if src == shape {
            return Ok(self.clone());
        }
        let lead = shape.len() - src.len();
        let src_strides = contiguous_strides(src);
        let strides: Vec<isize> = (0..shape.len())
            .map(|i| {
                if i < lead || src[i - lead] == 1 {
                    0
                } else {
                    src_strides[i - lead]
                }
            })
            .collect();
        Ok(
            crate::dispatch!(self, v, T => Tensor::from_typed(shape.to_vec(), strided_copy::<T>(v, shape, &strides))),
        )
    }
}
