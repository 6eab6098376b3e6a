//! secondo computes what lies beyond the gradient of a neural network's loss.
//!
//! This crate ties the layers together (see docs/ARCHITECTURE.md): a network
//! and loss form an [`Objective`]; [`train`] fits it with an optimizer; the
//! `secondo` binary drives both from the command line.
//!
//! ```
//! use secondo::{Objective, ObjectiveConfig};
//! let objective = Objective::from_config(&ObjectiveConfig {
//!     spec: "linear(64,32),relu,linear(32,10)".into(),
//!     input_shape: vec![64],
//!     ..ObjectiveConfig::default()
//! })
//! .unwrap();
//! assert_eq!(objective.network.output_shape(), &[10]);
//! ```

pub mod allocator;
pub mod bench;
mod error;
pub mod interrupt;
pub mod laplace;
pub mod monitor;
pub mod output;
pub mod plot;
pub mod report;
pub mod second_order;
pub mod spectrum;
pub mod state;
pub mod train;

pub use error::Error;
pub use secondo_curvature as curvature;
pub use secondo_curvature::{
    BatchStatistics, GradientProgram, Objective, ObjectiveConfig, StepOutput,
};
pub use secondo_data as data;
pub use secondo_graph as graph;
pub use secondo_linalg as linalg;
pub use secondo_nn as nn;
pub use secondo_optim as optim;
pub use secondo_tensor as tensor;
