//! secondo's graph IR: a few primitive operations with static shapes, an
//! ergonomic builder, reverse-mode differentiation as a graph-to-graph
//! transformation (so derivatives can be differentiated again), passes (dead-code
//! and common-subexpression elimination) and an executor that frees buffers
//! after their last use.
//!
//! ```
//! use secondo_graph::{Builder, Executable, Feeds};
//! use secondo_tensor::{DType, Tensor};
//!
//! let b = Builder::new(DType::F64);
//! let x = b.input("x", &[3]);
//! let y = (x * x).sum_all();             // y = Σ x²
//! let dy = b.grad(y, &[x]).unwrap()[0];  // dy/dx = 2x
//! let graph = b.finish().unwrap();
//! let exe = Executable::compile(&graph, &[dy.id()]).unwrap();
//! let mut feeds = Feeds::new();
//! feeds.insert("x", Tensor::from_vec(vec![3], vec![1.0f64, 2.0, 3.0]).unwrap());
//! assert_eq!(exe.run(&feeds).unwrap()[0].to_f64_vec(), vec![2.0, 4.0, 6.0]);
//! ```

mod builder;
pub mod check;
mod error;
mod exec;
mod graph;
mod jvp;
mod op;
pub mod passes;
mod prims;
mod vjp;
mod vmap;

pub use builder::{Builder, Var};
pub use error::GraphError;
pub use exec::{Executable, Feeds};
pub use graph::{Graph, Node, NodeId};
pub use op::Op;
pub use prims::conv::ConvOp;
pub use prims::patches::PatchOp;
pub use prims::pool::PoolOp;
