//! Graph-to-graph optimisation passes.

mod cse;
mod dce;

pub use cse::eliminate_common_subexpressions;
pub use dce::{live_nodes, prune};
