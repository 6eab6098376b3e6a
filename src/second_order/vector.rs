//! Flat `f64` vectors over all parameters (in the network's order, each
//! row-major), what every preconditioner and solver works on.

use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use crate::Error;

/// The tensors one after another as one `f64` vector.
pub(crate) fn flatten(tensors: &[Tensor]) -> Vec<f64> {
    let mut out = Vec::with_capacity(tensors.iter().map(Tensor::numel).sum());
    for t in tensors {
        out.extend(t.to_f64_vec());
    }
    out
}

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

/// The parameters moved by `delta` (`θ + Δ`), rounded to their element type;
/// buffers are kept.
pub(crate) fn moved(params: &ParamStore, delta: &[f64]) -> Result<ParamStore, Error> {
    let mut out = params.clone();
    add_in_place(&mut out, delta)?;
    Ok(out)
}

/// `θ ← θ + Δ` in place.
pub(crate) fn add_in_place(params: &mut ParamStore, delta: &[f64]) -> Result<(), Error> {
    if delta.len() != params.numel() {
        return Err(Error::Invalid(format!(
            "a step of {} values for {} parameters",
            delta.len(),
            params.numel()
        )));
    }
    let mut at = 0;
    for t in params.tensors_mut() {
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
