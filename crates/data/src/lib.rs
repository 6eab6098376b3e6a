//! Datasets for secondo, independent of models and tensors: inputs as
//! row-major `f64` with a per-sample shape, targets as class indices or
//! regression values.
//!
//! Sources: the embedded scikit-learn [`digits`], IDX files (MNIST format,
//! [`load_idx_pair`]), CIFAR-10 / CIFAR-100 binary batches ([`load_cifar`])
//! and safetensors files ([`load_safetensors`],
//! [`save_safetensors`]; [`SafetensorsFile`] reads any tensors, e.g.
//! weights). Every reader checks the sizes a header declares against the
//! file and the memory available before it reads the data. Operations: seeded [`Dataset::shuffled`] and
//! [`Dataset::split`], [`Dataset::select`], [`Dataset::batches`] and a
//! [`Standardizer`] fitted on training data.
//!
//! ```
//! use secondo_data::{digits, Standardizer};
//! let (mut train, mut test) = digits().split(0.2, 42).unwrap();
//! let scaler = Standardizer::fit(&train).unwrap();
//! scaler.apply(&mut train).unwrap();
//! scaler.apply(&mut test).unwrap();
//! for batch in train.batches(128).unwrap() {
//!     assert_eq!(batch.x.len(), batch.len() * 64);
//! }
//! ```
#![warn(missing_docs)]

mod cifar;
mod dataset;
mod digits;
mod error;
mod finite;
mod idx;
mod input;
#[cfg(test)]
mod proptests;
mod safetensors_file;
mod safetensors_io;
mod standardize;
mod wave;

pub use cifar::{cifar_files, load_cifar};
pub use dataset::{Batch, BatchTargets, Batches, Dataset, Targets};
pub use digits::digits;
pub use error::{DataError, Result};
pub use finite::check_finite;
pub use idx::load_idx_pair;
pub use safetensors_file::{SafetensorsFile, MAX_HEADER_LEN};
pub use safetensors_io::{load_safetensors, save_safetensors};
pub use standardize::Standardizer;
pub use wave::wave;
