use std::ops::Range;

use crate::{Graph, NodeId, Op};

/// Contractions with fewer multiply-adds than this (product of all letter
/// sizes) run alone: running them beside another costs more than it saves.
const SIDE_BY_SIDE_WORK: usize = 1 << 20;

/// At most this many contractions run side by side in one step.
const MAX_GROUP: usize = 8;

/// How many later large contractions are considered for each group.
const LOOKAHEAD: usize = 16;

/// Orders `graph` so that independent large contractions sit next to each
/// other, and returns the reordered graph, the outputs' new ids and the steps:
/// ranges of consecutive nodes that may run at the same time (every other node
/// is a step of its own).
///
/// Products such as the gradient `Σ_n g_n x_nᵀ` and the sum of squares
/// `Σ_n g_n² (x_n²)ᵀ` of one layer read the same values but not each other;
/// run side by side, each on part of the thread pool, they keep both cores
/// busy where one product of this size alone loses time to splitting and
/// synchronisation (docs/PERFORMANCE.md).
///
/// ```
/// use secondo_graph::{passes::group_independent_contractions, Builder};
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F32);
/// let g = b.input("g", &[128, 256]);
/// let x = b.input("x", &[128, 784]);
/// let grad = b.einsum("no,ni->oi", &[g, x]);
/// let squares = b.einsum("no,ni->oi", &[g.square(), x.square()]);
/// let (graph, out, steps) =
///     group_independent_contractions(&b.finish().unwrap(), &[grad.id(), squares.id()]);
/// assert_eq!(graph.len(), 6);
/// assert!(steps.iter().any(|s| s.len() == 2));
/// assert_eq!(out.len(), 2);
/// ```
pub fn group_independent_contractions(
    graph: &Graph,
    outputs: &[NodeId],
) -> (Graph, Vec<NodeId>, Vec<Range<usize>>) {
    let n = graph.len();
    let large = |i: NodeId| {
        let node = graph.node(i);
        let shapes: Vec<&[usize]> = node
            .inputs
            .iter()
            .map(|&j| graph.node(j).shape.as_slice())
            .collect();
        let work = match &node.op {
            Op::Einsum(spec) => spec
                .sizes(&shapes)
                .map_or(0, |letters| letters.iter().map(|l| l.1).product::<usize>()),
            Op::Conv(c) => c.multiply_adds(&shapes, &node.shape) as usize,
            _ => 0,
        };
        work >= SIDE_BY_SIDE_WORK
    };
    let mut placed = vec![false; n];
    let mut order: Vec<NodeId> = Vec::with_capacity(n);
    let mut groups: Vec<Range<usize>> = Vec::new();
    for i in 0..n {
        if placed[i] {
            continue;
        }
        let mut members = vec![i];
        let mut before: Vec<NodeId> = Vec::new();
        if large(i) {
            // Later contractions that do not depend on the group: each moves up
            // with the nodes it needs that have not run yet.
            let candidates = (i + 1..n).filter(|&j| !placed[j] && large(j));
            for j in candidates.take(LOOKAHEAD) {
                if members.len() == MAX_GROUP {
                    break;
                }
                let needs = pending_ancestors(graph, j, &placed);
                if !needs.iter().any(|k| members.contains(k)) {
                    before.extend(needs);
                    members.push(j);
                }
            }
        }
        before.sort_unstable();
        before.dedup();
        for k in before {
            placed[k] = true;
            groups.push(order.len()..order.len() + 1);
            order.push(k);
        }
        groups.push(order.len()..order.len() + members.len());
        for k in members {
            placed[k] = true;
            order.push(k);
        }
    }
    let mut position = vec![0; n];
    order.iter().enumerate().for_each(|(p, &i)| position[i] = p);
    let mut out = Graph::new();
    for &i in &order {
        let node = graph.node(i);
        let inputs = node.inputs.iter().map(|&j| position[j]).collect();
        out.push(
            node.op.clone(),
            inputs,
            Some(node.shape.clone()),
            node.dtype,
        )
        .expect("a reordering keeps shapes and dtypes");
    }
    let steps = groups.into_iter().filter(|g| g.len() > 1).collect();
    (out, outputs.iter().map(|&o| position[o]).collect(), steps)
}

/// The nodes `j` depends on (directly or not) that are not placed yet.
fn pending_ancestors(graph: &Graph, j: NodeId, placed: &[bool]) -> Vec<NodeId> {
    let mut found: Vec<NodeId> = Vec::new();
    let mut seen = vec![false; j];
    let mut stack: Vec<NodeId> = graph.node(j).inputs.clone();
    while let Some(k) = stack.pop() {
        if !placed[k] && !seen[k] {
            seen[k] = true;
            found.push(k);
            stack.extend(&graph.node(k).inputs);
        }
    }
    found
}
