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
