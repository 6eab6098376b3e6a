//! Gauss quadrature of the spectral measure seen from random probes, by
//! Lanczos with full reorthogonalization run on several probes at once.

use rand_chacha::ChaCha8Rng;

use crate::lanczos::Recurrence;
use crate::metered::Metered;
use crate::random::fill_rademacher;
use crate::{LinalgError, SymmetricOperator};

/// Nodes (Ritz values) and weights (squared first components of the Ritz
/// vectors) of one probe; the weights sum to one.
pub(super) struct Quadrature {
    pub(super) nodes: Vec<f64>,
    pub(super) weights: Vec<f64>,
}

impl Quadrature {
    /// Gauss quadrature of the spectral measure the recurrence's start
    /// vector sees: the Ritz values, weighted by the squared first
    /// components of the Ritz vectors.
    fn of(recurrence: &Recurrence) -> Result<Quadrature, LinalgError> {
        let eig = recurrence.ritz()?;
        let m = eig.values.len();
        let weights = eig.vectors.chunks_exact(m).map(|v| v[0] * v[0]).collect();
        Ok(Quadrature {
            nodes: eig.values,
            weights,
        })
    }
}

/// Runs `steps` Lanczos steps from each of `count` normalized Rademacher
/// probes, `block` probes at a time (one block product per step).
pub(super) fn quadratures<O: SymmetricOperator + ?Sized>(
    metered: &mut Metered<'_, '_, O>,
    rng: &mut ChaCha8Rng,
    count: usize,
    steps: usize,
    block: usize,
) -> Result<Vec<Quadrature>, LinalgError> {
    let n = metered.dim();
    let mut result = Vec::with_capacity(count);
    let mut remaining = count;
    while remaining > 0 {
        let batch = block.min(remaining);
        let mut start = vec![0.0; n * batch];
        fill_rademacher(rng, &mut start);
        let mut probes: Vec<Recurrence> = start
            .chunks_exact(n)
            .map(|s| Recurrence::new(s, steps))
            .collect();
        loop {
            let active: Vec<usize> = (0..batch).filter(|&p| !probes[p].done()).collect();
            if active.is_empty() {
                break;
            }
            let v: Vec<f64> = active
                .iter()
                .flat_map(|&p| probes[p].current(n).iter().copied())
                .collect();
            let mut w = vec![0.0; v.len()];
            metered.apply(&v, active.len(), &mut w)?;
            for (&p, column) in active.iter().zip(w.chunks_exact(n)) {
                probes[p].advance(column.to_vec(), steps);
            }
        }
        for probe in &probes {
            result.push(Quadrature::of(probe)?);
        }
        remaining -= batch;
    }
    Ok(result)
}
