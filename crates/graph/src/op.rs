use std::fmt;

use secondo_tensor::{BinaryOp, EinsumSpec, ReduceOp, Tensor, UnaryOp};

use crate::{ConvOp, PatchOp, PoolOp};

/// A primitive operation. Composite operations (softmax, cross-entropy, GELU, …)
/// are built from these by the builder. Each variant's rules (shape,
/// evaluation, jvp, transpose, batching) live in its family's module under
/// `prims/` (see docs/ARCHITECTURE.md, "Adding a primitive").
///
/// Binary operations take operands of equal shape, or one rank-0 operand.
///
/// ```
/// use secondo_graph::Op;
/// use secondo_tensor::UnaryOp;
/// assert_eq!(Op::Unary(UnaryOp::Exp).to_string(), "exp");
/// ```
#[derive(Debug, Clone)]
pub enum Op {
    /// Data fed at run time under a name.
    Input(String),
    /// A parameter fed at run time under a name (what gradients are usually taken against).
    Param(String),
    /// A fixed value.
    Constant(Tensor),
    /// Elementwise map of one operand.
    Unary(UnaryOp),
    /// Elementwise map of two operands.
    Binary(BinaryOp),
    /// `where(cond, a, b)`.
    Where,
    /// Reduction over axes (removed from the shape).
    Reduce(ReduceOp, Vec<usize>),
    /// Same values, new shape.
    Reshape,
    /// Axis permutation: output axis `i` is input axis `perm[i]`.
    Permute(Vec<usize>),
    /// Broadcast to the node's shape (NumPy rules).
    Broadcast,
    /// Tensor contraction.
    Einsum(EinsumSpec),
    /// One-hot encoding of class indices into a new last axis of this size.
    OneHot(usize),
    /// Sliding-window patches of the last two axes and their adjoint.
    Patches(PatchOp),
    /// Max pooling and the linear maps of its derivatives.
    Pool(PoolOp),
    /// A convolution, its input gradient or its weight gradient, without
    /// patch matrices (what the executor runs for `unfold` + `einsum`).
    Conv(ConvOp),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Input(n) => write!(f, "input '{n}'"),
            Op::Param(n) => write!(f, "param '{n}'"),
            Op::Constant(t) if t.numel() == 1 => write!(f, "const {}", t.item()),
            Op::Constant(t) => write!(f, "const {:?}", t.shape()),
            Op::Unary(UnaryOp::Powf(p)) => write!(f, "pow {p}"),
            Op::Unary(u) => write!(f, "{}", format!("{u:?}").to_lowercase()),
            Op::Binary(b) => write!(f, "{}", format!("{b:?}").to_lowercase()),
            Op::Where => write!(f, "where"),
            Op::Reduce(r, axes) => write!(f, "{} {axes:?}", format!("{r:?}").to_lowercase()),
            Op::Reshape => write!(f, "reshape"),
            Op::Permute(p) => write!(f, "permute {p:?}"),
            Op::Broadcast => write!(f, "broadcast"),
            Op::Einsum(s) => write!(f, "einsum {s}"),
            Op::OneHot(c) => write!(f, "one_hot {c}"),
            Op::Patches(p) => write!(f, "{p}"),
            Op::Pool(p) => write!(f, "{p}"),
            Op::Conv(c) => write!(f, "{c}"),
        }
    }
}

impl Op {
    /// A key that is equal for operations that compute the same thing from the
    /// same inputs (used by common-subexpression elimination).
    pub(crate) fn cse_key(&self) -> Option<String> {
        match self {
            Op::Constant(t) if t.numel() == 1 => {
                Some(format!("const {:?} {}", t.dtype(), t.item().to_bits()))
            }
            Op::Constant(_) => None,
            Op::Unary(UnaryOp::Powf(p)) => Some(format!("pow {}", p.to_bits())),
            other => Some(format!("{other:?}")),
        }
    }
}
