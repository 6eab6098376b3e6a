use crate::graph::Decision;
use crate::{Graph, NodeId};

/// Which nodes the given outputs depend on (dead-code analysis).
///
/// ```
/// use secondo_graph::{passes::live_nodes, Builder};
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F64);
/// let x = b.input("x", &[2]);
/// let y = x.exp();
/// let _unused = x.log();
/// let g = b.finish().unwrap();
/// assert_eq!(live_nodes(&g, &[y.id()]), vec![true, true, false]);
/// ```
pub fn live_nodes(graph: &Graph, outputs: &[NodeId]) -> Vec<bool> {
    let mut live = vec![false; graph.len()];
    for &o in outputs {
        if o < live.len() {
            live[o] = true;
        }
    }
    for i in (0..graph.len()).rev() {
        if live[i] {
            for &j in &graph.node(i).inputs {
                live[j] = true;
            }
        }
    }
    live
}

/// A copy of the graph without nodes the outputs do not need, and the outputs'
/// new ids.
///
/// ```
/// use secondo_graph::{passes::prune, Builder};
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F64);
/// let x = b.input("x", &[2]);
/// let _unused = x.log();
/// let y = x.exp();
/// let (g, out) = prune(&b.finish().unwrap(), &[y.id()]);
/// assert_eq!(g.len(), 2);
/// assert_eq!(out, vec![1]);
/// ```
pub fn prune(graph: &Graph, outputs: &[NodeId]) -> (Graph, Vec<NodeId>) {
    let live = live_nodes(graph, outputs);
    graph.rebuild(
        |i, _, _| {
            if live[i] {
                Decision::Keep
            } else {
                Decision::Drop
            }
        },
        outputs,
    )
}
