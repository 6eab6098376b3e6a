//! Gaussian smoothing of quadrature nodes into a density on a grid, with
//! Papyan's kernel-width rule.

/// Papyan's κ: the Gaussian has relative height `1/κ` at half the node spacing.
const KAPPA: f64 = 3.0;
/// Relative margin added on both sides of `[λ_min, λ_max]`.
pub(super) const MARGIN: f64 = 0.05;

/// The width of `[lo, hi]`, made positive when the spectrum is a single point.
pub(super) fn spread(lo: f64, hi: f64) -> f64 {
    let spread = (hi - lo).max(1e-6 * lo.abs().max(hi.abs()));
    if spread > 0.0 {
        spread
    } else {
        1.0
    }
}

/// Papyan's (2020, Algorithm `LanczosApproxSpec`) kernel width: with the
/// padded interval mapped to `[−1, 1]`, `σ = 2 / (M − 1) / √(8 ln κ)` with
/// `κ = 3`, i.e. `σ = 1.1 (λ_max − λ_min) / ((M − 1) √(8 ln 3))` in the
/// original units for `M` Lanczos steps.
pub(super) fn papyan_width(spread: f64, steps: usize) -> f64 {
    let padded = spread * (1.0 + 2.0 * MARGIN);
    padded / (steps.max(2) - 1) as f64 / (8.0 * KAPPA.ln()).sqrt()
}

/// `points` equispaced values covering `[lo, hi]` padded by `max(MARGIN·spread, 4σ)`.
pub(super) fn grid(lo: f64, hi: f64, sigma: f64, points: usize) -> Vec<f64> {
    let pad = (MARGIN * spread(lo, hi)).max(4.0 * sigma);
    let (start, end) = (lo - pad, hi + pad);
    let step = (end - start) / (points - 1) as f64;
    (0..points).map(|i| start + step * i as f64).collect()
}

/// `Σ wᵢ N(x; θᵢ, σ²)` at each grid point, scaled so its trapezoidal integral
/// over the grid is one; `None` when the kernel is too narrow to be seen on the grid.
pub(super) fn smooth(nodes: &[f64], weights: &[f64], sigma: f64, grid: &[f64]) -> Option<Vec<f64>> {
    let coeff = 1.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt());
    let values: Vec<f64> = grid
        .iter()
        .map(|x| {
            nodes
                .iter()
                .zip(weights)
                .map(|(theta, w)| w * coeff * (-0.5 * ((x - theta) / sigma).powi(2)).exp())
                .sum()
        })
        .collect();
    let mass = trapezoid(grid, &values);
    (mass > 0.0 && mass.is_finite()).then(|| values.iter().map(|v| v / mass).collect())
}

/// The trapezoidal integral of `values` over `grid`.
pub(super) fn trapezoid(grid: &[f64], values: &[f64]) -> f64 {
    grid.windows(2)
        .zip(values.windows(2))
        .map(|(x, y)| 0.5 * (x[1] - x[0]) * (y[0] + y[1]))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn papyan_width_matches_the_normalized_rule() {
        // Spread 2 padded to 2.2 maps to [-1, 1] with d = 1.1.
        let sigma = papyan_width(2.0, 11);
        let normalized = 2.0 / 10.0 / (8.0 * 3.0_f64.ln()).sqrt();
        assert!((sigma - 1.1 * normalized).abs() < 1e-15);
    }

    #[test]
    fn smoothed_density_integrates_to_one() {
        let g = grid(-1.0, 1.0, 0.1, 501);
        let values = smooth(&[-1.0, 1.0], &[0.25, 0.75], 0.1, &g).unwrap();
        assert!((trapezoid(&g, &values) - 1.0).abs() < 1e-12);
        let left: f64 = trapezoid(&g[..251], &values[..251]);
        assert!((left - 0.25).abs() < 1e-3);
    }

    #[test]
    fn degenerate_spectra_get_a_positive_spread() {
        assert_eq!(spread(0.0, 0.0), 1.0);
        assert!((spread(2.0, 2.0) - 2e-6).abs() < 1e-18);
    }

    #[test]
    fn invisible_kernels_are_reported() {
        let g = grid(0.0, 1.0, 1e-300, 3);
        assert!(smooth(&[0.3], &[1.0], 1e-300, &g).is_none());
    }
}
