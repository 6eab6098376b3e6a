//! Instruments from the elementwise gradient noise: the mean gradient
//! signal-to-noise ratio, the CABS batch size and the evidence-based
//! early-stopping criterion. Inputs are the batch gradient `g`, the sums of
//! squared scaled per-sample gradients `s = Σ_n c_n²` (BackPACK's
//! `sum_grad_squared`, `c_n` summing to `g`) and the batch size `B`; all
//! elementwise over every parameter.

/// Cockpit's ε in the mean GSNR and the early-stopping criterion.
const EPSILON: f64 = 1e-5;

/// Mean GSNR (Liu et al. 2020, "Understanding why neural networks generalize
/// well through GSNR of parameters"): the mean over parameters of
/// `g² / (B s − g² + ε)`, the squared mean over the biased variance of the
/// per-sample gradients. Large: the samples agree on the step.
pub fn mean_gsnr<'a>(batch: usize, elements: impl Iterator<Item = (&'a f64, &'a f64)>) -> f64 {
    let b = batch as f64;
    mean(elements.map(|(g, s)| g * g / (b * s - g * g + EPSILON)))
}

/// CABS (Balles, Romero & Hennig 2017, "Coupling adaptive batch sizes with
/// learning rates"): the batch size `lr · Σ (B² s − B g²) / (B · L)` that
/// keeps the gradient noise in proportion to the loss `L` for plain SGD at
/// learning rate `lr`.
pub fn cabs<'a>(
    batch: usize,
    lr: f64,
    loss: f64,
    elements: impl Iterator<Item = (&'a f64, &'a f64)>,
) -> f64 {
    let b = batch as f64;
    let noise: f64 = elements.map(|(g, s)| b * b * s - b * g * g).sum();
    lr * noise / (b * loss)
}

/// The evidence-based criterion (Mahsereci, Balles, Lassner & Hennig 2017,
/// "Early stopping without a validation set"): `1 − B · mean(g² / (σ² + ε))`
/// with the sample variance `σ² = (B² s − B g²) / (B − 1)`. Positive: the
/// gradient is indistinguishable from noise, a sign to stop.
pub fn early_stopping<'a>(batch: usize, elements: impl Iterator<Item = (&'a f64, &'a f64)>) -> f64 {
    let b = batch as f64;
    let snr = mean(elements.map(|(g, s)| {
        let variance = (b * b * s - b * g * g) / (b - 1.0);
        g * g / (variance + EPSILON)
    }));
    1.0 - b * snr
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    sum / count.max(1) as f64
}
