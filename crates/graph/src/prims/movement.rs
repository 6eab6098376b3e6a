//! Movement: `Reshape`, `Permute` and `Broadcast` rearrange (or repeat)
//! values without arithmetic.
//!
//! All three are linear, so each one's jvp is itself applied to the tangent;
//! the transposes are the inverse reshape, the inverse permutation and a sum
//! over the broadcast axes.

use secondo_tensor::{broadcast_shapes, Tensor, TensorError};

use super::{arity, target, Batched, Primal};
use crate::{Op, Var};

/// A member of the family.
#[derive(Clone, Copy)]
pub(crate) enum Movement<'a> {
    /// [`Op::Reshape`] to the node's shape.
    Reshape,
    /// [`Op::Permute`]: output axis `i` is input axis `perm[i]`.
    Permute(&'a [usize]),
    /// [`Op::Broadcast`] to the node's shape.
    Broadcast,
}

/// The result shape: the target of a reshape (same size) or a broadcast
/// (NumPy rules), the permuted operand shape.
pub(crate) fn shape(
    op: Movement<'_>,
    operands: &[&[usize]],
    shape: Option<Vec<usize>>,
) -> Result<Vec<usize>, String> {
    arity(1, operands)?;
    let a = operands[0];
    match op {
        Movement::Reshape => {
            let target = target(shape)?;
            if target.iter().product::<usize>() != a.iter().product::<usize>() {
                return Err(format!("cannot reshape {a:?} to {target:?}"));
            }
            Ok(target)
        }
        Movement::Permute(perm) => {
            let mut sorted = perm.to_vec();
            sorted.sort_unstable();
            if sorted != (0..a.len()).collect::<Vec<_>>() {
                return Err(format!(
                    "{perm:?} is not a permutation of the axes of {a:?}"
                ));
            }
            Ok(perm.iter().map(|&p| a[p]).collect())
        }
        Movement::Broadcast => {
            let target = target(shape)?;
            if broadcast_shapes(a, &target).as_deref() != Some(target.as_slice()) {
                return Err(format!("cannot broadcast {a:?} to {target:?}"));
            }
            Ok(target)
        }
    }
}

/// Evaluates on the operand; `shape` is the node's.
pub(crate) fn eval(
    op: Movement<'_>,
    args: &[Tensor],
    shape: &[usize],
) -> Result<Tensor, TensorError> {
    match op {
        Movement::Reshape => args[0].reshape(shape.to_vec()),
        Movement::Permute(perm) => args[0].permute(perm),
        Movement::Broadcast => args[0].broadcast_to(shape),
    }
}

/// The tangent of the result: the same movement of the operand's tangent.
pub(crate) fn jvp<'a>(op: Movement<'_>, p: &Primal<'a>, ts: &[Option<Var<'a>>]) -> Option<Var<'a>> {
    let t = ts[0]?;
    let shape = p.result.shape();
    Some(match op {
        Movement::Reshape => t.reshape(&shape),
        Movement::Permute(perm) => t.permute(perm),
        Movement::Broadcast => t.broadcast_to(&shape),
    })
}

/// The operand's cotangent given the result's cotangent `g`.
pub(crate) fn transpose<'a>(op: Movement<'_>, p: &Primal<'a>, g: Var<'a>) -> Option<Var<'a>> {
    let operand_shape = p.operands[0].shape();
    Some(match op {
        Movement::Reshape => g.reshape(&operand_shape),
        Movement::Permute(perm) => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            g.permute(&inv)
        }
        Movement::Broadcast => {
            let shape = p.result.shape();
            let lead = shape.len() - operand_shape.len();
            let axes: Vec<usize> = (0..shape.len())
                .filter(|&i| i < lead || (operand_shape[i - lead] == 1 && shape[i] != 1))
                .collect();
            g.sum(&axes).reshape(&operand_shape)
        }
    })
}

/// The same movement behind the batch axis.
pub(crate) fn batch<'a>(op: Movement<'_>, site: &Batched<'a>) -> Var<'a> {
    let out = site.shape();
    let batched = site.operand(0);
    match op {
        Movement::Reshape => batched.reshape(&out),
        Movement::Permute(perm) => {
            let perm: Vec<usize> = std::iter::once(0)
                .chain(perm.iter().map(|p| p + 1))
                .collect();
            batched.permute(&perm)
        }
        Movement::Broadcast => {
            // NumPy aligns trailing axes: pad ones after the batch axis.
            let operand = site.primal.operands[0].shape();
            let mut padded = vec![site.size];
            padded.resize(out.len().saturating_sub(operand.len()), 1);
            padded.extend(operand);
            batched.reshape(&padded).broadcast_to(&out)
        }
    }
}

impl<'b> Var<'b> {
    /// Same values under a new shape.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 3]).reshape(&[6]).shape(), vec![6]);
    /// ```
    pub fn reshape(self, shape: &[usize]) -> Var<'b> {
        if self.shape() == shape {
            return self;
        }
        self.builder()
            .push(Op::Reshape, vec![self.id()], Some(shape.to_vec()))
    }

    /// Axis permutation.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 3]).permute(&[1, 0]).shape(), vec![3, 2]);
    /// ```
    pub fn permute(self, perm: &[usize]) -> Var<'b> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == self.shape().len() {
            return self;
        }
        self.builder()
            .push(Op::Permute(perm.to_vec()), vec![self.id()], None)
    }

    /// Broadcast to `shape` (NumPy rules).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[3]).broadcast_to(&[2, 3]).shape(), vec![2, 3]);
    /// ```
    pub fn broadcast_to(self, shape: &[usize]) -> Var<'b> {
        if self.shape() == shape {
            return self;
        }
        self.builder()
            .push(Op::Broadcast, vec![self.id()], Some(shape.to_vec()))
    }
}
