use rayon::prelude::*;

use crate::{Element, Tensor, TensorError};

/// Reductions over axes.
///
/// ```
/// use secondo_tensor::{ReduceOp, Tensor};
/// let t = Tensor::from_vec(vec![2, 3], vec![1.0f64, 5.0, 3.0, 4.0, 2.0, 6.0]).unwrap();
/// assert_eq!(ReduceOp::Sum.apply(&t, &[0]).unwrap().to_f64_vec(), vec![5.0, 7.0, 9.0]);
/// assert_eq!(ReduceOp::Max.apply(&t, &[1]).unwrap().to_f64_vec(), vec![5.0, 6.0]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum of the values.
    Sum,
    /// Largest value.
    Max,
}

impl ReduceOp {
    /// Reduces over `axes` (distinct, any order); they are removed from the shape.
    ///
    /// ```
    /// use secondo_tensor::{ReduceOp, Tensor};
    /// let t = Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    /// assert_eq!(ReduceOp::Sum.apply(&t, &[0, 1]).unwrap().item(), 10.0);
    /// ```
    pub fn apply(self, a: &Tensor, axes: &[usize]) -> Result<Tensor, TensorError> {
        let rank = a.shape().len();
        let mut sorted = axes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != axes.len() || sorted.last().is_some_and(|&x| x >= rank) {
            return Err(TensorError::Invalid(format!(
                "reduce: axes {axes:?} invalid for shape {:?}",
                a.shape()
            )));
        }
        // Each run of adjacent axes is one pass over the values in place,
        // the last run first so that the earlier runs' axes keep their
        // indices (a permutation to make them adjacent copied the operand).
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &axis in &sorted {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == axis => *len += 1,
                _ => runs.push((axis, 1)),
            }
        }
        let mut t = a.clone();
        for &(start, len) in runs.iter().rev() {
            t = self.reduce_adjacent(&t, start, start + len);
        }
        Ok(t)
    }

    /// Reduces over the adjacent axes `start..end`.
    fn reduce_adjacent(self, src: &Tensor, start: usize, end: usize) -> Tensor {
        let shape = src.shape();
        let pre: usize = shape[..start].iter().product();
        let red: usize = shape[start..end].iter().product();
        let post: usize = shape[end..].iter().product();
        let out_shape: Vec<usize> = shape[..start]
            .iter()
            .chain(&shape[end..])
            .copied()
            .collect();
        crate::dispatch!(src, v, T => Tensor::from_typed(out_shape, reduce_block::<T>(self, v, pre, red, post)))
    }
}

fn reduce_block<T: Element>(op: ReduceOp, v: &[T], pre: usize, red: usize, post: usize) -> Vec<T> {
    let init = match op {
        ReduceOp::Sum => T::zero(),
        ReduceOp::Max => T::neg_infinity(),
    };
    let mut out = vec![init; pre * post];
    let one = |(p, o): (usize, &mut [T])| {
        let block = &v[p * red * post..(p + 1) * red * post];
        if post == 1 {
            o[0] = match op {
                ReduceOp::Sum => block.iter().copied().sum(),
                ReduceOp::Max => block.iter().copied().fold(init, max_nan),
            };
            return;
        }
        for row in block.chunks_exact(post) {
            match op {
                ReduceOp::Sum => o.iter_mut().zip(row).for_each(|(x, &y)| *x += y),
                ReduceOp::Max => o
                    .iter_mut()
                    .zip(row)
                    .for_each(|(x, &y)| *x = max_nan(*x, y)),
            }
        }
    };
    if pre * red * post >= 1 << 16 && pre > 1 {
        out.par_chunks_mut(post).enumerate().for_each(one);
    } else {
        out.chunks_mut(post.max(1)).enumerate().for_each(one);
    }
    out
}

fn max_nan<T: Element>(a: T, b: T) -> T {
    if a.is_nan() || a >= b {
        a
    } else {
        b
    }
}
