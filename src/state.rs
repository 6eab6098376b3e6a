//! Training state as tensors keyed by typed names (`second_order/control/damping`,
//! `first_order/exp_avg/0.weight`): the one format every optimizer saves
//! its state in and restores it from, written as one safetensors file of a
//! checkpoint (`secondo train --checkpoint-every`). Each optimizer writes
//! and reads its own entries beside its state's definition, under a
//! [`Scope`] naming where it sits in the run; reading takes entries out,
//! so that [`State::finish`] can refuse any left over, as strict weight
//! loading refuses unexpected tensors.
//!
//! ```
//! use secondo::state::State;
//! let mut state = State::new();
//! state.scope("sgd").put_values("momentum", &[0.5, -1.0]);
//! state.scope("sgd").put_count("steps", 3);
//! let path = std::env::temp_dir().join("secondo-doc-state-module.safetensors");
//! state.write(&path).unwrap();
//! let mut back = State::read(&path).unwrap();
//! let mut sgd = back.scope("sgd");
//! assert_eq!(sgd.take_values("momentum", 2).unwrap(), [0.5, -1.0]);
//! assert_eq!(sgd.take_count("steps").unwrap(), 3);
//! back.finish().unwrap();
//! # std::fs::remove_file(path).unwrap();
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use secondo_tensor::{DType, Tensor};

use crate::Error;

/// Named tensors and counters of a run's state, and where they were read from.
#[derive(Debug, Clone, Default)]
pub struct State {
    tensors: BTreeMap<String, Tensor>,
    counters: BTreeMap<String, i64>,
    /// The file read, for messages (empty for a state built in memory).
    source: String,
}

impl State {
    /// An empty state.
    pub fn new() -> State {
        State::default()
    }

    /// The state in the safetensors file `path`; errors name the file.
    pub fn read(path: &Path) -> Result<State, Error> {
        Ok(State {
            tensors: secondo_nn::read_safetensors(path)?.into_iter().collect(),
            counters: BTreeMap::new(),
            source: path.display().to_string(),
        })
    }

    /// Writes the state to the safetensors file `path`, the same state
    /// giving the same bytes (counters as `I64`).
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let counters: Vec<(&str, i64)> = self
            .counters
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        secondo_nn::write_state(
            path,
            self.tensors.iter().map(|(k, t)| (k.as_str(), t)),
            &counters,
            &HashMap::new(),
        )?;
        Ok(())
    }

    /// The entries under `prefix`.
    pub fn scope(&mut self, prefix: &str) -> Scope<'_> {
        Scope {
            state: self,
            prefix: prefix.to_string(),
        }
    }

    /// Refuses entries nobody read: a state saved by another configuration.
    pub fn finish(self) -> Result<(), Error> {
        let left: Vec<&String> = self.tensors.keys().chain(self.counters.keys()).collect();
        match left.first() {
            None => Ok(()),
            Some(first) => Err(self.invalid(&format!(
                "unexpected tensor '{first}' ({} left unread): saved by another configuration",
                left.len()
            ))),
        }
    }

    fn invalid(&self, why: &str) -> Error {
        let source = if self.source.is_empty() {
            "training state"
        } else {
            &self.source
        };
        Error::Invalid(format!("{source}: {why}"))
    }
}

/// The entries of a [`State`] under one prefix, for one part of a run.
pub struct Scope<'s> {
    state: &'s mut State,
    prefix: String,
}

impl Scope<'_> {
    /// The entries under `name` inside this scope.
    pub fn scope(&mut self, name: &str) -> Scope<'_> {
        Scope {
            prefix: self.key(name),
            state: self.state,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// Stores a tensor as it is (its dtype kept).
    pub fn put(&mut self, name: &str, tensor: Tensor) {
        let key = self.key(name);
        self.state.tensors.insert(key, tensor);
    }

    /// Stores values as a vector of `f64`.
    pub fn put_values(&mut self, name: &str, values: &[f64]) {
        let t = Tensor::from_vec(vec![values.len()], values.to_vec()).expect("a vector");
        self.put(name, t);
    }

    /// Stores values where there are some; nothing for `None`.
    pub fn put_optional(&mut self, name: &str, values: Option<&[f64]>) {
        if let Some(v) = values {
            self.put_values(name, v);
        }
    }

    /// Stores one `f64`.
    pub fn put_scalar(&mut self, name: &str, value: f64) {
        self.put(name, Tensor::scalar(value, DType::F64));
    }

    /// Stores a count (an `I64` scalar).
    pub fn put_count(&mut self, name: &str, count: usize) {
        let key = self.key(name);
        self.state.counters.insert(key, count as i64);
    }

    /// Whether the entry `name` is there.
    pub fn has(&self, name: &str) -> bool {
        let key = self.key(name);
        self.state.tensors.contains_key(&key) || self.state.counters.contains_key(&key)
    }

    /// Takes the tensor `name` out; errors naming it when it is missing.
    pub fn take(&mut self, name: &str) -> Result<Tensor, Error> {
        let key = self.key(name);
        if let Some(count) = self.state.counters.remove(&key) {
            return Ok(Tensor::scalar(count as f64, DType::F64));
        }
        self.state
            .tensors
            .remove(&key)
            .ok_or_else(|| self.state.invalid(&format!("no tensor '{key}'")))
    }

    /// Takes out `len` values stored by [`Scope::put_values`].
    pub fn take_values(&mut self, name: &str, len: usize) -> Result<Vec<f64>, Error> {
        let t = self.take(name)?;
        if t.numel() != len || t.dtype() != DType::F64 {
            let why = format!(
                "tensor '{}' holds {} {:?} values, expected {len} F64",
                self.key(name),
                t.numel(),
                t.dtype()
            );
            return Err(self.state.invalid(&why));
        }
        Ok(t.to_f64_vec())
    }

    /// Takes out what [`Scope::put_optional`] stored: `None` where nothing was.
    pub fn take_optional(&mut self, name: &str, len: usize) -> Result<Option<Vec<f64>>, Error> {
        match self.has(name) {
            true => self.take_values(name, len).map(Some),
            false => Ok(None),
        }
    }

    /// Takes out one `f64` stored by [`Scope::put_scalar`].
    pub fn take_scalar(&mut self, name: &str) -> Result<f64, Error> {
        Ok(self.take_values(name, 1)?[0])
    }

    /// Takes out a count stored by [`Scope::put_count`].
    pub fn take_count(&mut self, name: &str) -> Result<usize, Error> {
        let key = self.key(name);
        let t = self.take(name)?;
        let value = (t.numel() == 1).then(|| t.to_f64_vec()[0]);
        match value {
            Some(v) if v >= 0.0 && v.fract() == 0.0 => Ok(v as usize),
            _ => Err(self
                .state
                .invalid(&format!("tensor '{key}' is not a count"))),
        }
    }

    /// Refuses, naming the entry, a restored value that does not fit.
    pub fn invalid(&self, name: &str, why: &str) -> Error {
        self.state.invalid(&format!("'{}' {why}", self.key(name)))
    }

    /// Refuses the entries of this scope as a whole.
    pub fn refuse(&self, why: &str) -> Error {
        self.state.invalid(&format!("{}: {why}", self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_mismatched_and_unread_entries_are_refused_by_name() {
        let mut state = State::new();
        let mut s = state.scope("opt");
        s.put_values("v", &[1.0, 2.0]);
        s.put_count("steps", 2);
        s.put_scalar("extra", 1.0);
        assert!(s.has("v") && !s.has("w"));
        let err = s.take_values("v", 3).unwrap_err().to_string();
        assert_eq!(
            err,
            "training state: tensor 'opt/v' holds 2 F64 values, expected 3 F64"
        );
        let err = s.take("w").unwrap_err().to_string();
        assert_eq!(err, "training state: no tensor 'opt/w'");
        assert_eq!(s.take_optional("w", 1).unwrap(), None);
        assert_eq!(s.take_count("steps").unwrap(), 2);
        let err = state.finish().unwrap_err().to_string();
        assert!(err.contains("unexpected tensor 'opt/extra'"), "{err}");
    }
}
