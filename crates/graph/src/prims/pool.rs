//! Max pooling (`MaxPool`) and the two linear maps its derivatives are made
//! of: `Select` (a tangent at each window's maximum) and its adjoint
//! `Scatter` (a cotangent added back at those positions).
//!
//! The position of a window's maximum is piecewise constant in the input,
//! so `Select(x, t)` and `Scatter(x, g)` have no derivative in `x`: each is
//! linear in its second operand, its jvp is itself on that operand's
//! tangent, and each one's transpose is the other. A max pool's jvp is
//! `Select(x, t)` and its transpose `Scatter(x, g)`, so Hessian products and
//! `vmap`s of them go through the same three kernels (as `unfold` + a
//! maximum they went through `K²` copies of the input, a broadcast mask and
//! a `fold`). All three act on the last three axes; the second operand of
//! `Select` and `Scatter` may have more leading axes than `x` (the same `x`
//! for each), so batching a tangent does not copy the input.

use std::fmt;

use secondo_tensor::{max_pool, max_pool_scatter, max_pool_select, max_pool_shape};
use secondo_tensor::{Tensor, TensorError, Window2d};

use super::{arity, Batched, Primal};
use crate::{Op, Var};

/// A pooling primitive.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolOp {
    /// `[..., C, H, W]` to `[..., C, OH, OW]`: each window's maximum.
    Max(Window2d),
    /// `(x, t)` to `t` at each window's maximum of `x`, shaped like
    /// `Max(t)`.
    Select(Window2d),
    /// `(x, g)` to `g`'s values added at their window's maximum of `x`,
    /// shaped like `x` (with `g`'s leading axes).
    Scatter(Window2d),
}

impl PoolOp {
    fn window(&self) -> &Window2d {
        match self {
            PoolOp::Max(w) | PoolOp::Select(w) | PoolOp::Scatter(w) => w,
        }
    }
}

impl fmt::Display for PoolOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PoolOp::Max(_) => "max_pool",
            PoolOp::Select(_) => "max_pool_select",
            PoolOp::Scatter(_) => "max_pool_scatter",
        };
        let w = self.window();
        write!(
            f,
            "{name} k={:?} s={:?} p={:?}",
            w.kernel, w.stride, w.padding
        )
    }
}

/// The result shape for the operands' shapes.
pub(crate) fn shape(op: &PoolOp, operands: &[&[usize]]) -> Result<Vec<usize>, String> {
    let fail = |e: TensorError| e.to_string();
    match op {
        PoolOp::Max(w) => {
            arity(1, operands)?;
            max_pool_shape(w, operands[0]).map_err(fail)
        }
        PoolOp::Select(w) => {
            arity(2, operands)?;
            let (x, t) = (operands[0], operands[1]);
            paired(x, t, x)?;
            max_pool_shape(w, t).map_err(fail)
        }
        PoolOp::Scatter(w) => {
            arity(2, operands)?;
            let (x, g) = (operands[0], operands[1]);
            paired(x, g, &max_pool_shape(w, x).map_err(fail)?)?;
            let mut out = g[..g.len() - 2].to_vec();
            out.extend_from_slice(&x[x.len() - 2..]);
            Ok(out)
        }
    }
}

/// Checks that `other` is `like` with possibly more leading axes (the input
/// `x` repeated over them).
fn paired(x: &[usize], other: &[usize], like: &[usize]) -> Result<(), String> {
    if x.len() < 3 || other.len() < like.len() || !other.ends_with(like) {
        return Err(format!(
            "operand {other:?} does not match the input {x:?} (expected {like:?}, maybe with more leading axes)"
        ));
    }
    Ok(())
}

/// Evaluates on the operands.
pub(crate) fn eval(op: &PoolOp, args: &[Tensor]) -> Result<Tensor, TensorError> {
    match op {
        PoolOp::Max(w) => max_pool(&args[0], w),
        PoolOp::Select(w) => max_pool_select(&args[0], &args[1], w),
        PoolOp::Scatter(w) => max_pool_scatter(&args[0], &args[1], w),
    }
}

/// The tangent of the result given the operands' tangents.
pub(crate) fn jvp<'a>(op: &PoolOp, p: &Primal<'a>, ts: &[Option<Var<'a>>]) -> Option<Var<'a>> {
    let x = p.operands[0];
    match op {
        PoolOp::Max(w) => Some(pool(PoolOp::Select(*w), x, ts[0]?)),
        PoolOp::Select(_) | PoolOp::Scatter(_) => Some(pool(op.clone(), x, ts[1]?)),
    }
}

/// Operand `k`'s cotangent given the result's cotangent `g`.
pub(crate) fn transpose<'a>(op: &PoolOp, p: &Primal<'a>, k: usize, g: Var<'a>) -> Option<Var<'a>> {
    let x = p.operands[0];
    match (op, k) {
        (PoolOp::Max(w), 0) => Some(pool(PoolOp::Scatter(*w), x, g)),
        (PoolOp::Select(w), 1) => Some(pool(PoolOp::Scatter(*w), x, g)),
        (PoolOp::Scatter(w), 1) => Some(pool(PoolOp::Select(*w), x, g)),
        _ => None,
    }
}

/// The batched result given the operands with a leading batch axis: the
/// same primitive, with the input shared when only the second operand is
/// batched. A batched input pairs with the second operand's batch axis,
/// which moves behind that operand's extra leading axes (over which the
/// input repeats) and back.
pub(crate) fn batch<'a>(op: &PoolOp, site: &Batched<'a>) -> Var<'a> {
    let b = site.builder();
    match op {
        PoolOp::Max(_) => b.push(Op::Pool(op.clone()), vec![site.operand(0).id()], None),
        PoolOp::Select(_) | PoolOp::Scatter(_) => {
            let v = site.operand(1);
            if site.args[0].is_none() {
                return pool(op.clone(), site.primal.operands[0], v);
            }
            let x = site.operand(0);
            let extra = v.shape().len() - x.shape().len();
            let rank = v.shape().len();
            let inward: Vec<usize> = (1..=extra).chain([0]).chain(extra + 1..rank).collect();
            let outward: Vec<usize> = [extra]
                .into_iter()
                .chain(0..extra)
                .chain(extra + 1..rank)
                .collect();
            pool(op.clone(), x, v.permute(&inward)).permute(&outward)
        }
    }
}

fn pool<'a>(op: PoolOp, x: Var<'a>, v: Var<'a>) -> Var<'a> {
    x.builder().push(Op::Pool(op), vec![x.id(), v.id()], None)
}

impl<'b> Var<'b> {
    /// Max pooling of the last two axes: `[..., C, H, W]` becomes `[..., C,
    /// OH, OW]`, each value the maximum of its window (the padding never
    /// wins, as PyTorch's −∞ padding).
    ///
    /// ```
    /// use secondo_graph::Builder;
    /// use secondo_tensor::{DType, Window2d};
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[2, 3, 28, 28]);
    /// assert_eq!(x.max_pool(Window2d::square(3, 2, 1, 1)).shape(), vec![2, 3, 14, 14]);
    /// ```
    pub fn max_pool(self, window: Window2d) -> Var<'b> {
        self.builder()
            .push(Op::Pool(PoolOp::Max(window)), vec![self.id()], None)
    }
}
