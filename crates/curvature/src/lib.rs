//! Objectives (a network, a loss and an element type) and matrix-free
//! curvature operators over a dataset: Hessian, generalized Gauss-Newton,
//! Monte-Carlo Fisher, empirical Fisher and the Jacobian, following
//! curvlinops' convention (the matrix of the loss as reduced over the whole
//! dataset). Every product is built from the graph transformations `jvp` and
//! `vjp` of `secondo-graph`.
//!
//! ```
//! use secondo_curvature::{Curvature, CurvatureOperator, Objective, ObjectiveConfig};
//! use secondo_nn::ParamStore;
//! use secondo_tensor::DType;
//! let obj = Objective::from_config(&ObjectiveConfig {
//!     spec: "linear(64,3),tanh,linear(3,10)".into(),
//!     input_shape: vec![64],
//!     dtype: DType::F64,
//!     ..ObjectiveConfig::default()
//! })
//! .unwrap();
//! let params = ParamStore::init(obj.network.spec(), 0, DType::F64);
//! let data = secondo_data::digits().select(&(0..20).collect::<Vec<_>>()).unwrap();
//! let h = CurvatureOperator::new(&obj, &params, &data, 8, Curvature::Hessian, None).unwrap();
//! let v = vec![1.0; h.dim()];
//! assert_eq!(h.apply(&v).unwrap().len(), h.dim());
//! ```

mod error;
mod objective;
mod operator;
mod program;
mod quantities;
mod sampling;

pub use error::CurvatureError;
pub use objective::{
    batch_feeds, BatchStatistics, GradientProgram, Objective, ObjectiveConfig, StepOutput, INPUT,
    TARGET,
};
pub use operator::{Curvature, CurvatureOperator};
pub use program::{directional_terms, TANGENT};
pub use quantities::{compute_quantities, sample_mc_targets, Quantity, QuantityProgram};
pub use sampling::draw_targets;
