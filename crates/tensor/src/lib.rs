//! Dense row-major `f32`/`f64` arrays and the CPU kernels secondo's executor runs:
//! elementwise maps, reductions over axes, shape operations, GEMM-backed einsum
//! and one-hot encoding.
//!
//! ```
//! use secondo_tensor::Tensor;
//! let a = Tensor::from_vec(vec![2, 2], vec![1.0f64, 2.0, 3.0, 4.0]).unwrap();
//! let b = Tensor::from_vec(vec![2], vec![1.0f64, 1.0]).unwrap();
//! let c = secondo_tensor::einsum("ij,j->i", &[&a, &b]).unwrap();
//! assert_eq!(c.to_f64_vec(), vec![3.0, 7.0]);
//! ```

mod buffer;
mod conv;
mod dtype;
mod einsum;
mod elementwise;
mod error;
mod gemm_kernel;
mod math;
mod maxpool;
pub mod memory;
mod onehot;
mod patches;
mod pools;
mod reduce;
mod shape;
mod simd;
mod tensor;

pub use conv::{conv_forward, conv_input_grad, conv_sample_weight_grads, conv_weight_grad};
pub use dtype::{DType, Element};
pub use einsum::{einsum, einsum_parsed, EinsumSpec};
pub use elementwise::{BinaryOp, UnaryOp};
pub use error::TensorError;
pub use gemm_kernel::{matmul, measure_gemm_gflops};
pub use math::tanh_f32;
pub use maxpool::{max_pool, max_pool_scatter, max_pool_select, max_pool_shape};
pub use onehot::one_hot;
pub use patches::{fold, unfold, Window2d};
pub use pools::in_thread_pools;
pub use reduce::ReduceOp;
pub use shape::broadcast_shapes;
pub use tensor::{Storage, Tensor};
