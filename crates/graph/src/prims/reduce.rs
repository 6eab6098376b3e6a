//! Reductions (`Reduce`): sum and maximum over axes, which leave the shape.

use secondo_tensor::{ReduceOp, Tensor, TensorError};

use super::{arity, Batched, Primal};
use crate::{Op, Var};

/// The operand's shape without the reduced axes (distinct and in range).
pub(crate) fn shape(axes: &[usize], operands: &[&[usize]]) -> Result<Vec<usize>, String> {
    arity(1, operands)?;
    let a = operands[0];
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != axes.len() || axes.iter().any(|&x| x >= a.len()) {
        return Err(format!("axes {axes:?} invalid for shape {a:?}"));
    }
    Ok((0..a.len())
        .filter(|i| !axes.contains(i))
        .map(|i| a[i])
        .collect())
}

/// Evaluates on the operand.
pub(crate) fn eval(op: ReduceOp, axes: &[usize], args: &[Tensor]) -> Result<Tensor, TensorError> {
    op.apply(&args[0], axes)
}

/// `v`, shaped like the result, repeated over the reduced axes to the
/// operand's shape: the transpose of a sum.
fn spread<'a>(v: Var<'a>, axes: &[usize], operand: &[usize]) -> Var<'a> {
    let keep: Vec<usize> = operand
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    v.reshape(&keep).broadcast_to(operand)
}

/// The derivative of a maximum: 1 where the operand attains it, else 0 (a
/// tie passes the derivative to every maximal element). The jvp sums the
/// tangent under this mask, the transpose spreads the cotangent over it.
fn at_max<'a>(axes: &[usize], p: &Primal<'a>) -> Var<'a> {
    let x = p.operands[0];
    x.eq(spread(p.result, axes, &x.shape()))
}

/// The tangent of the result given the operand's tangent.
pub(crate) fn jvp<'a>(
    op: ReduceOp,
    axes: &[usize],
    p: &Primal<'a>,
    ts: &[Option<Var<'a>>],
) -> Option<Var<'a>> {
    let t = ts[0]?;
    Some(match op {
        ReduceOp::Sum => t.sum(axes),
        ReduceOp::Max => (t * at_max(axes, p)).sum(axes),
    })
}

/// The operand's cotangent given the result's cotangent `g`.
pub(crate) fn transpose<'a>(
    op: ReduceOp,
    axes: &[usize],
    p: &Primal<'a>,
    g: Var<'a>,
) -> Option<Var<'a>> {
    let spread_g = spread(g, axes, &p.operands[0].shape());
    Some(match op {
        ReduceOp::Sum => spread_g,
        ReduceOp::Max => spread_g * at_max(axes, p),
    })
}

/// The same reduction over the axes shifted past the batch axis.
pub(crate) fn batch<'a>(op: ReduceOp, axes: &[usize], site: &Batched<'a>) -> Var<'a> {
    let axes = axes.iter().map(|a| a + 1).collect();
    site.builder()
        .push(Op::Reduce(op, axes), vec![site.operand(0).id()], None)
}

impl<'b> Var<'b> {
    /// Sum over `axes` (removed from the shape).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 3]).sum(&[1]).shape(), vec![2]);
    /// ```
    pub fn sum(self, axes: &[usize]) -> Var<'b> {
        if axes.is_empty() {
            return self;
        }
        self.builder().push(
            Op::Reduce(ReduceOp::Sum, axes.to_vec()),
            vec![self.id()],
            None,
        )
    }

    /// Sum of all elements (rank 0).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert!(b.input("x", &[2, 3]).sum_all().shape().is_empty());
    /// ```
    pub fn sum_all(self) -> Var<'b> {
        let axes: Vec<usize> = (0..self.shape().len()).collect();
        self.sum(&axes)
    }

    /// Mean over `axes`.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 3]).mean(&[0]).shape(), vec![3]);
    /// ```
    pub fn mean(self, axes: &[usize]) -> Var<'b> {
        let shape = self.shape();
        let count: usize = axes.iter().filter_map(|&a| shape.get(a)).product();
        self.sum(axes) * (1.0 / count.max(1) as f64)
    }

    /// Maximum over `axes` (removed from the shape).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 3]).max_over(&[1]).shape(), vec![2]);
    /// ```
    pub fn max_over(self, axes: &[usize]) -> Var<'b> {
        self.builder().push(
            Op::Reduce(ReduceOp::Max, axes.to_vec()),
            vec![self.id()],
            None,
        )
    }
}
