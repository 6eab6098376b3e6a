//! Seeded random test vectors.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator every algorithm draws from, seeded by the caller.
pub(crate) fn generator(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Fills `out` with independent random signs ±1 (Rademacher entries).
pub(crate) fn fill_rademacher(rng: &mut ChaCha8Rng, out: &mut [f64]) {
    for chunk in out.chunks_mut(64) {
        let mut bits = rng.next_u64();
        for x in chunk {
            *x = if bits & 1 == 1 { 1.0 } else { -1.0 };
            bits >>= 1;
        }
    }
}

/// `len` random signs ±1 from `seed`'s generator on its stream `stream`
/// (stream 0 is the one this crate's algorithms draw from, so that a caller
/// probing beside them draws independent signs from the same seed).
///
/// ```
/// let a = secondo_linalg::rademacher(100, 5, 1);
/// assert_eq!(a, secondo_linalg::rademacher(100, 5, 1));
/// assert_ne!(a, secondo_linalg::rademacher(100, 5, 0));
/// assert!(a.iter().all(|x| x.abs() == 1.0));
/// ```
pub fn rademacher(len: usize, seed: u64, stream: u64) -> Vec<f64> {
    let mut rng = generator(seed);
    rng.set_stream(stream);
    let mut out = vec![0.0; len];
    fill_rademacher(&mut rng, &mut out);
    out
}

/// Fills `out` with independent entries uniform on `[-1, 1)`.
pub(crate) fn fill_uniform(rng: &mut ChaCha8Rng, out: &mut [f64]) {
    for x in out {
        *x = 2.0 * rng.random::<f64>() - 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rademacher_is_balanced_and_seeded() {
        let mut a = vec![0.0; 10_000];
        let mut b = vec![0.0; 10_000];
        fill_rademacher(&mut generator(7), &mut a);
        fill_rademacher(&mut generator(7), &mut b);
        assert_eq!(a, b);
        assert!(a.iter().all(|x| x.abs() == 1.0));
        let sum: f64 = a.iter().sum();
        assert!(sum.abs() < 400.0, "sum of signs {sum}");
    }

    #[test]
    fn uniform_stays_in_range() {
        let mut a = vec![0.0; 1000];
        fill_uniform(&mut generator(1), &mut a);
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
    }
}
