//! Targets drawn from the model's predictive distribution (Monte-Carlo Fisher).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use secondo_nn::LossKind;
use secondo_tensor::Tensor;

/// Draws targets for network outputs `output` `[N, C]`: a class from the
/// softmax for cross-entropy, `f + N(0, ½)` for the squared error (whose
/// Fisher is then its GGN, 2I per output), a Bernoulli draw of `σ(f)` for
/// BCE-with-logits.
pub(crate) fn sample_targets(kind: LossKind, output: &Tensor, rng: &mut ChaCha8Rng) -> Tensor {
    let (n, c) = (output.shape()[0], output.shape()[1]);
    let f = output.to_f64_vec();
    let dtype = output.dtype();
    match kind {
        LossKind::CrossEntropy => {
            let labels: Vec<f64> = f
                .chunks(c)
                .map(|row| {
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    let mut u = rng.random::<f64>() * total;
                    for (k, w) in weights.iter().enumerate() {
                        if u < *w {
                            return k as f64;
                        }
                        u -= w;
                    }
                    (c - 1) as f64
                })
                .collect();
            Tensor::from_f64(vec![n], &labels, dtype).expect("n labels")
        }
        LossKind::Mse => {
            let noise = Normal::new(0.0, std::f64::consts::FRAC_1_SQRT_2).expect("valid normal");
            let v: Vec<f64> = f.iter().map(|m| m + noise.sample(rng)).collect();
            Tensor::from_f64(vec![n, c], &v, dtype).expect("n·c values")
        }
        LossKind::BceWithLogits => {
            let v: Vec<f64> = f
                .iter()
                .map(|z| {
                    let p = 1.0 / (1.0 + (-z).exp());
                    if rng.random::<f64>() < p {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            Tensor::from_f64(vec![n, c], &v, dtype).expect("n·c values")
        }
    }
}

/// `m` draws of targets for network outputs `output` `[N, C]` (see
/// [`sample_targets`]), seeded by `seed` and stacked as `[m, target...]`
/// for targets of shape `target`: what [`crate::sample_mc_targets`] draws,
/// from outputs the caller already has.
///
/// ```
/// use secondo_curvature::draw_targets;
/// use secondo_nn::LossKind;
/// use secondo_tensor::{DType, Tensor};
/// let f = Tensor::from_f64(vec![2, 3], &[0.0, 9.0, 0.0, 9.0, 0.0, 0.0], DType::F64).unwrap();
/// let t = draw_targets(LossKind::CrossEntropy, &f, 4, 0, &[2]);
/// assert_eq!(t.shape(), &[4, 2]);
/// ```
pub fn draw_targets(
    kind: LossKind,
    output: &Tensor,
    m: usize,
    seed: u64,
    target: &[usize],
) -> Tensor {
    use rand::SeedableRng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::new();
    for _ in 0..m {
        values.extend(sample_targets(kind, output, &mut rng).to_f64_vec());
    }
    let mut shape = vec![m];
    shape.extend_from_slice(target);
    Tensor::from_f64(shape, &values, output.dtype()).expect("m draws of the target shape")
}
