//! Graph-to-graph optimisation passes.

mod conv;
mod cse;
mod dce;
mod fuse;
mod scalars;
mod schedule;

pub use conv::fuse_convolutions;
pub use cse::eliminate_common_subexpressions;
pub use dce::{live_nodes, prune};
pub use fuse::fuse_einsum_reductions;
pub use schedule::group_independent_contractions;

/// How many times each node is read (by other nodes, or as an output).
pub(crate) fn use_counts(graph: &crate::Graph, outputs: &[crate::NodeId]) -> Vec<usize> {
    let mut uses = vec![0usize; graph.len()];
    graph
        .nodes()
        .iter()
        .flat_map(|n| &n.inputs)
        .chain(outputs)
        .for_each(|&j| uses[j] += 1);
    uses
}
