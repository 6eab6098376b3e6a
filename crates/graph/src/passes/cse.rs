use std::collections::HashMap;

use crate::graph::Decision;
use crate::{Graph, NodeId};

/// Merges nodes that apply the same operation to the same operands (and equal
/// scalar constants); returns the new graph and the outputs' new ids.
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
/// ```
pub fn eliminate_common_subexpressions(graph: &Graph, outputs: &[NodeId]) -> (Graph, Vec<NodeId>) {
    let mut seen: HashMap<(String, Vec<NodeId>, Vec<usize>), NodeId> = HashMap::new();
    graph.rebuild(
        |_, node, next| {
            let Some(key) = node.op.cse_key() else {
                return Decision::Keep;
            };
            let full = (key, node.inputs.clone(), node.shape.clone());
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
