//! Where scalar factors of contractions go: onto the smallest of the
//! operands and the result, keeping products of one tensor with itself
//! symmetric (rewrites used by [`super::fuse_einsum_reductions`]).

use secondo_tensor::{BinaryOp, EinsumSpec, Tensor};

use crate::{Graph, NodeId, Op};

/// The einsum replacing `x · scalar` in `g` when `x` is an einsum whose
/// result is larger than one of its operands, and `scalar` has no axes.
pub(super) fn scaled(g: &mut Graph, x: NodeId, scalar: NodeId) -> Option<(Op, Vec<NodeId>)> {
    let node = g.node(x);
    let Op::Einsum(spec) = &node.op else {
        return None;
    };
    if !g.node(scalar).shape.is_empty() {
        return None;
    }
    let numel: usize = node.shape.iter().product();
    let operand_numel = |&j: &NodeId| g.node(j).shape.iter().product::<usize>();
    if node.inputs.iter().map(operand_numel).min() > Some(numel) {
        return None;
    }
    let (spec, ids) = (spec.clone(), node.inputs.clone());
    Some(place_scalar(g, spec, ids, scalar, numel))
}

/// An einsum whose operands include single-use `y · scalar` nodes, rewritten
/// to contract the `y`s and apply the product of the scalars where it is
/// cheapest: e.g. `einsum(c·A, A)` becomes `c · einsum(A, A)`, whose operands
/// are then one tensor (a symmetric product).
pub(super) fn unscaled_operands(
    g: &mut Graph,
    spec: &EinsumSpec,
    inputs: &[NodeId],
    single_use: &[bool],
    numel: usize,
) -> Option<(Op, Vec<NodeId>)> {
    let mut ids = inputs.to_vec();
    let mut scalars: Vec<NodeId> = Vec::new();
    for (id, &single) in ids.iter_mut().zip(single_use) {
        let node = g.node(*id);
        if !single || !matches!(node.op, Op::Binary(BinaryOp::Mul)) {
            continue;
        }
        if let Some(k) = (0..2).find(|&k| g.node(node.inputs[k]).shape.is_empty()) {
            scalars.push(node.inputs[k]);
            *id = node.inputs[1 - k];
        }
    }
    let first = *scalars.first()?;
    let dtype = g.node(first).dtype;
    let scalar = scalars[1..].iter().fold(first, |acc, &s| {
        g.push(Op::Binary(BinaryOp::Mul), vec![acc, s], None, dtype)
            .expect("scalars multiply")
    });
    Some(place_scalar(g, spec.clone(), ids, scalar, numel))
}

/// `scalar · einsum(spec, ids)` with the scalar on the smallest of the
/// operands and the result (`numel` numbers); nodes it needs are pushed on `g`.
fn place_scalar(
    g: &mut Graph,
    spec: EinsumSpec,
    mut ids: Vec<NodeId>,
    scalar: NodeId,
    numel: usize,
) -> (Op, Vec<NodeId>) {
    let size = |g: &Graph, k: usize| g.node(ids[k]).shape.iter().product::<usize>();
    let smallest = (0..ids.len())
        .min_by_key(|&k| size(g, k))
        .expect("an einsum has operands");
    let dtype = g.node(scalar).dtype;
    let mul = |g: &mut Graph, x: NodeId, s: NodeId| {
        g.push(Op::Binary(BinaryOp::Mul), vec![x, s], None, dtype)
            .expect("a tensor times a scalar keeps its shape")
    };
    let symmetric = ids.len() == 2 && ids[0] == ids[1];
    if symmetric {
        // A symmetric product `c · AAᵀ`: scaling one side would hide the
        // symmetry, so `√c` scales the shared operand (or `c` the result).
        let root = match &g.node(scalar).op {
            Op::Constant(t) if t.item() > 0.0 => Some(t.item().sqrt()),
            _ => None,
        };
        if let Some(root) = root {
            let root = g
                .push(
                    Op::Constant(Tensor::scalar(root, dtype)),
                    Vec::new(),
                    None,
                    dtype,
                )
                .expect("a scalar constant");
            let scaled = mul(g, ids[0], root);
            return (Op::Einsum(spec), vec![scaled, scaled]);
        }
    }
    if numel < size(g, smallest) || symmetric {
        let product = g
            .push(Op::Einsum(spec), ids, None, dtype)
            .expect("the einsum's operands are unchanged in shape");
        return (Op::Binary(BinaryOp::Mul), vec![product, scalar]);
    }
    ids[smallest] = mul(g, ids[smallest], scalar);
    (Op::Einsum(spec), ids)
}
