//! An optimizer's state as named buffers and counters, what a checkpoint
//! saves so that a resumed run continues step for step.

use crate::error::OptimError;
use crate::layout::Layout;

/// The state an optimizer keeps between steps: named buffers (one vector
/// per parameter slice, empty before the first step) and named counters.
/// The names are PyTorch's (`momentum_buffer`, `exp_avg`, `step`), so a
/// checkpoint reads like an optimizer's `state_dict`.
///
/// ```
/// use secondo_optim::{Optimizer, Sgd, SgdConfig};
/// let config = SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() };
/// let (mut a, mut b) = (Sgd::new(config).unwrap(), Sgd::new(config).unwrap());
/// let (mut wa, mut wb) = (vec![1.0f64], vec![1.0f64]);
/// a.step(&mut [&mut wa], &[&[1.0]]).unwrap();
/// b.restore(a.state()).unwrap();
/// wb.copy_from_slice(&wa);
/// a.step(&mut [&mut wa], &[&[0.5]]).unwrap();
/// b.step(&mut [&mut wb], &[&[0.5]]).unwrap();
/// assert_eq!(wa, wb);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OptimizerState<T> {
    /// Buffers by name, each one vector per parameter slice.
    pub buffers: Vec<(&'static str, Vec<Vec<T>>)>,
    /// Counters by name.
    pub counters: Vec<(&'static str, u64)>,
}

impl<T> OptimizerState<T> {
    /// Removes the buffers called `name`; errors when there are none.
    pub(crate) fn take_buffers(&mut self, name: &str) -> Result<Vec<Vec<T>>, OptimError> {
        let at = self.buffers.iter().position(|(n, _)| *n == name);
        at.map(|i| self.buffers.swap_remove(i).1)
            .ok_or_else(|| OptimError::InvalidState(format!("no buffers '{name}'")))
    }

    /// The counter called `name`; errors when there is none.
    pub(crate) fn counter(&self, name: &str) -> Result<u64, OptimError> {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map(|c| c.1)
            .ok_or_else(|| OptimError::InvalidState(format!("no counter '{name}'")))
    }
}

/// The layout the buffers were created for: the slice lengths of every
/// group that has buffers, which must agree (a group the configuration
/// does not use, such as AMSGrad's maximum, stays empty); no layout yet
/// where every group is empty (no step).
pub(crate) fn restored_layout<T>(groups: &[(&str, &[Vec<T>])]) -> Result<Layout, OptimError> {
    let lengths = |g: &[Vec<T>]| g.iter().map(Vec::len).collect::<Vec<_>>();
    let Some((first, reference)) = groups.iter().find(|(_, g)| !g.is_empty()) else {
        return Ok(Layout::default());
    };
    let expected = lengths(reference);
    for (name, group) in groups.iter().filter(|(_, g)| !g.is_empty()) {
        if lengths(group) != expected {
            return Err(OptimError::InvalidState(format!(
                "buffers '{name}' do not match the slices of '{first}'"
            )));
        }
    }
    Ok(Layout::of(expected))
}
