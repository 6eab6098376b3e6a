//! Primitive families, one module each. A family holds, for its primitives,
//! the shape rule (`shape`), the evaluation (`eval`), the tangent rule
//! (`jvp`), the cotangent rule (`transpose`: the transpose of the derivative
//! applied to a cotangent, i.e. the vjp), the batching rule (`batch`) and the
//! builder methods that create them, as JAX keeps a primitive in one file.
//!
//! The transformations and the executor only walk the graph: `graph.rs`
//! (shapes), `exec.rs` (evaluation), `jvp.rs`, `vjp.rs` and `vmap.rs` each hand
//! a node to its family through one `match` over [`Family`], so a primitive
//! added to a family changes that family's module (and [`Op::family`]), and a
//! new family adds one arm to each of those five matches.

pub(crate) mod conv;
pub(crate) mod einsum;
pub(crate) mod elementwise;
pub(crate) mod leaves;
pub(crate) mod movement;
pub(crate) mod patches;
pub(crate) mod pool;
pub(crate) mod reduce;

#[cfg(test)]
mod cases;

use secondo_tensor::{EinsumSpec, ReduceOp};

use crate::vmap::lift;
use crate::{Builder, ConvOp, Node, NodeId, Op, PatchOp, PoolOp, Var};
use elementwise::Elementwise;
use leaves::Leaf;
use movement::Movement;

/// An [`Op`] seen as a member of its family, borrowing the op's data.
///
/// Dispatch goes through this view rather than through `Op` itself so that
/// each dispatch site has one arm per family, and each family's own `match`
/// over its members is wildcard-free: a new member is a compile error in
/// every rule of its family until it is handled.
#[derive(Clone, Copy)]
pub(crate) enum Family<'a> {
    /// `Input`, `Param`, `Constant` and `OneHot`: nothing is differentiated
    /// through them.
    Leaf(Leaf<'a>),
    /// `Unary`, `Binary` and `Where`.
    Elementwise(Elementwise),
    /// `Reduce`.
    Reduce(ReduceOp, &'a [usize]),
    /// `Reshape`, `Permute` and `Broadcast`.
    Movement(Movement<'a>),
    /// `Einsum`.
    Einsum(&'a EinsumSpec),
    /// `Patches`.
    Patches(&'a PatchOp),
    /// `Pool`.
    Pool(&'a PoolOp),
    /// `Conv`.
    Conv(&'a ConvOp),
}

impl Op {
    /// The family that holds this op's rules.
    pub(crate) fn family(&self) -> Family<'_> {
        match self {
            Op::Input(name) => Family::Leaf(Leaf::Input(name)),
            Op::Param(name) => Family::Leaf(Leaf::Param(name)),
            Op::Constant(t) => Family::Leaf(Leaf::Constant(t)),
            Op::OneHot(classes) => Family::Leaf(Leaf::OneHot(*classes)),
            Op::Unary(u) => Family::Elementwise(Elementwise::Unary(*u)),
            Op::Binary(b) => Family::Elementwise(Elementwise::Binary(*b)),
            Op::Where => Family::Elementwise(Elementwise::Where),
            Op::Reduce(r, axes) => Family::Reduce(*r, axes),
            Op::Reshape => Family::Movement(Movement::Reshape),
            Op::Permute(perm) => Family::Movement(Movement::Permute(perm)),
            Op::Broadcast => Family::Movement(Movement::Broadcast),
            Op::Einsum(spec) => Family::Einsum(spec),
            Op::Patches(p) => Family::Patches(p),
            Op::Pool(p) => Family::Pool(p),
            Op::Conv(c) => Family::Conv(c),
        }
    }
}

/// Checks that an op with `arity` operands got as many (`shapes` are the
/// operands' shapes); the reason is the shape rule's error.
pub(crate) fn arity(arity: usize, shapes: &[&[usize]]) -> Result<(), String> {
    if shapes.len() == arity {
        Ok(())
    } else {
        Err(format!("takes {arity} operands, got {}", shapes.len()))
    }
}

/// The target shape an op needs (leaves, `Reshape`, `Broadcast`).
pub(crate) fn target(shape: Option<Vec<usize>>) -> Result<Vec<usize>, String> {
    shape.ok_or_else(|| "needs a target shape".into())
}

/// A node as a derivative rule sees it: its operands and its result as
/// handles on the builder that is extending the graph.
pub(crate) struct Primal<'a> {
    /// The operands, in order.
    pub(crate) operands: Vec<Var<'a>>,
    /// The node itself.
    pub(crate) result: Var<'a>,
}

impl<'a> Primal<'a> {
    /// Node `id` (described by `node`) of the graph `b` builds on.
    pub(crate) fn of(b: &'a Builder, node: &Node, id: NodeId) -> Primal<'a> {
        Primal {
            operands: node.inputs.iter().map(|&j| b.var(j)).collect(),
            result: b.var(id),
        }
    }

    /// The builder the rule appends to.
    pub(crate) fn builder(&self) -> &'a Builder {
        self.result.builder()
    }
}

/// A node as a batching rule sees it: the original node, its operands'
/// batched versions and the batch size.
pub(crate) struct Batched<'a> {
    /// The unbatched node.
    pub(crate) primal: Primal<'a>,
    /// Each operand's batched version (leading axis of `size`), or `None`
    /// where the operand does not depend on the batched nodes (it is shared).
    pub(crate) args: Vec<Option<Var<'a>>>,
    /// The batch size.
    pub(crate) size: usize,
}

impl<'a> Batched<'a> {
    /// Operand `k` with a batch axis: its batched version, or the shared one
    /// repeated.
    pub(crate) fn operand(&self, k: usize) -> Var<'a> {
        self.args[k].unwrap_or_else(|| lift(self.primal.operands[k], self.size))
    }

    /// The batched result's shape: `[size]` followed by the node's.
    pub(crate) fn shape(&self) -> Vec<usize> {
        crate::vmap::batched_shape(self.size, &self.primal.result.shape())
    }

    /// The builder the rule appends to.
    pub(crate) fn builder(&self) -> &'a Builder {
        self.primal.builder()
    }
}
