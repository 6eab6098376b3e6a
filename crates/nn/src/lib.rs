//! Neural-network building blocks for secondo: model spec strings such as
//! `linear(784,256),relu,linear(256,10)`, their parameters (named and laid out
//! like PyTorch's `nn.Sequential` state_dict) and per-sample shapes.
//!
//! ```
//! use secondo_nn::spec::ModelSpec;
//! let spec: ModelSpec = "linear(784,256),relu,linear(256,10)".parse().unwrap();
//! assert_eq!(spec.num_parameters(), 784 * 256 + 256 + 256 * 10 + 10);
//! ```

pub mod spec;

mod error;
mod layers;
mod loss;
mod network;
mod params;
#[cfg(test)]
mod proptests;
mod write;

pub use error::NnError;
pub use layers::activation::activation;
pub use layers::{BatchStats, DropoutMask, Forward, LayerTap, Mode};
pub use loss::{Loss, LossKind, Reduction};
pub use network::Network;
pub use params::{read_safetensors, read_safetensors_with_metadata, Metadata, ParamStore};
pub use write::{write_safetensors, write_state};
