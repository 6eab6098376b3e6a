//! Flat `f64` vectors over a group of parameters (in the network's order,
//! each row-major), what every preconditioner and solver works on.

use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use super::ParamGroup;
use crate::Error;

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(crate) fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

pub(crate) fn scaled(a: &[f64], s: f64) -> Vec<f64> {
    a.iter().map(|x| s * x).collect()
}

/// Whether every entry is finite.
pub(crate) fn all_finite(a: &[f64]) -> bool {
    a.iter().all(|x| x.is_finite())
}

/// The parameters with the group's moved by `delta` (`θ + Δ`), rounded to
/// their element type; buffers are kept.
pub(crate) fn moved(
    params: &ParamStore,
    group: &ParamGroup,
    delta: &[f64],
) -> Result<ParamStore, Error> {
    let mut out = params.clone();
    add_in_place(&mut out, group, delta)?;
    Ok(out)
}

/// `θ ← θ + Δ` in place for the group's parameters.
pub(crate) fn add_in_place(
    params: &mut ParamStore,
    group: &ParamGroup,
    delta: &[f64],
) -> Result<(), Error> {
    let size: usize = params
        .iter()
        .enumerate()
        .filter(|(i, _)| group.contains(*i))
        .map(|(_, (_, t))| t.numel())
        .sum();
    if delta.len() != size {
        return Err(Error::Invalid(format!(
            "a step of {} values for {size} parameters",
            delta.len()
        )));
    }
    let mut at = 0;
    let owned = params
        .tensors_mut()
        .enumerate()
        .filter(|(i, _)| group.contains(*i));
    for (_, t) in owned {
        let n = t.numel();
        let v: Vec<f64> = t
            .to_f64_vec()
            .iter()
            .zip(&delta[at..at + n])
            .map(|(p, d)| p + d)
            .collect();
        *t = Tensor::from_f64(t.shape().to_vec(), &v, t.dtype()).expect("same shape");
        at += n;
    }
    Ok(())
}
