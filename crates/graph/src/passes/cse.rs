use std::collections::HashMap;

use secondo_tensor::BinaryOp;

use crate::graph::Decision;
use crate::{Graph, NodeId, Op};

/// Merges nodes that apply the same operation to the same operands (and equal
/// scalar constants), in either order for sums and products (IEEE addition
/// and multiplication commute exactly); returns the new graph and the
/// outputs' new ids.
///
/// The order matters to derivatives: `jvp` and `vjp` write every product
/// tangent first (`t · ∂f`), so the product rule applied twice (a jvp of a
/// jvp) builds `t₁ · t₂` on one side and `t₂ · t₁` on the other.
///
/// ```
/// use secondo_graph::{passes::eliminate_common_subexpressions, Builder};
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F64);
/// let x = b.input("x", &[2]);
/// let y = x.exp() + x.exp();
/// let (g, out) = eliminate_common_subexpressions(&b.finish().unwrap(), &[y.id()]);
/// assert_eq!(g.len(), 3);
/// assert_eq!(out, vec![2]);
///
/// let w = b.input("w", &[2]);
/// let z = x * w + w * x;
/// let (g, _) = eliminate_common_subexpressions(&b.finish().unwrap(), &[z.id()]);
/// assert_eq!(g.nodes().iter().filter(|n| n.op.to_string() == "mul").count(), 1);
/// ```
pub fn eliminate_common_subexpressions(graph: &Graph, outputs: &[NodeId]) -> (Graph, Vec<NodeId>) {
    let mut seen: HashMap<(String, Vec<NodeId>, Vec<usize>), NodeId> = HashMap::new();
    graph.rebuild(
        |_, node, next| {
            let Some(key) = node.op.cse_key() else {
                return Decision::Keep;
            };
            let mut inputs = node.inputs.clone();
            if matches!(node.op, Op::Binary(BinaryOp::Add | BinaryOp::Mul)) {
                inputs.sort_unstable();
            }
            let full = (key, inputs, node.shape.clone());
            match seen.get(&full) {
                Some(&existing) => Decision::Replace(existing),
                None => {
                    seen.insert(full, next);
                    Decision::Keep
                }
            }
        },
        outputs,
    )
}
