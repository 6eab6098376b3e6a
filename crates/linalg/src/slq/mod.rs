//! Spectral density by stochastic Lanczos quadrature (SLQ).

mod kernel;
mod quadrature;

use crate::metered::Metered;
use crate::random::generator;
use crate::{LinalgError, Progress, SymmetricOperator};

/// Options of [`slq_density`].
///
/// # Example
///
/// ```
/// use secondo_linalg::SlqOptions;
///
/// let opts = SlqOptions { num_probes: 4, lanczos_steps: 30, ..SlqOptions::default() };
/// assert_eq!(opts.grid_points, 1024);
/// assert_eq!(opts.kernel_width, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlqOptions {
    /// Number of random probes `n_v` whose quadratures are averaged.
    pub num_probes: usize,
    /// Lanczos steps `M` per probe (capped at the dimension).
    pub lanczos_steps: usize,
    /// Points of the output grid (at least 2).
    pub grid_points: usize,
    /// Seed of the Rademacher probes.
    pub seed: u64,
    /// Standard deviation of the Gaussian kernel; `None` uses Papyan's rule
    /// (see [`slq_density`]).
    pub kernel_width: Option<f64>,
    /// Probes run together, one block product per Lanczos step. Memory is
    /// `block_size · lanczos_steps · dim` floats.
    pub block_size: usize,
}

impl Default for SlqOptions {
    fn default() -> Self {
        Self {
            num_probes: 10,
            lanczos_steps: 90,
            grid_points: 1024,
            seed: 0,
            kernel_width: None,
            block_size: 10,
        }
    }
}

/// A smoothed spectral density and the quadrature it was built from.
///
/// # Example
///
/// ```
/// use secondo_linalg::{slq_density, DenseSymmetric, Progress, SlqOptions};
///
/// let a = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, 3.0])?;
/// let density = slq_density(&a, &SlqOptions::default(), Progress::none())?;
/// assert_eq!(density.grid.len(), density.values.len());
/// assert!((density.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Density {
    /// Equispaced eigenvalue grid.
    pub grid: Vec<f64>,
    /// Density at each grid point; its trapezoidal integral over the grid is one.
    pub values: Vec<f64>,
    /// Quadrature nodes (Ritz values) of all probes.
    pub nodes: Vec<f64>,
    /// Quadrature weights, divided by the number of probes so they sum to one.
    pub weights: Vec<f64>,
    /// Standard deviation of the Gaussian kernel that was used.
    pub kernel_width: f64,
    /// Matrix–vector products spent.
    pub products: usize,
}

fn check(n: usize, opts: &SlqOptions) -> Result<(), LinalgError> {
    let invalid = |name, reason: &str| {
        Err(LinalgError::InvalidOption {
            name,
            reason: reason.into(),
        })
    };
    if n == 0 {
        return Err(LinalgError::EmptyOperator);
    }
    if opts.num_probes == 0 {
        return invalid("num_probes", "must be at least 1");
    }
    if opts.lanczos_steps == 0 {
        return invalid("lanczos_steps", "must be at least 1");
    }
    if opts.grid_points < 2 {
        return invalid("grid_points", "must be at least 2");
    }
    if opts.block_size == 0 {
        return invalid("block_size", "must be at least 1");
    }
    if opts
        .kernel_width
        .is_some_and(|w| !(w.is_finite() && w > 0.0))
    {
        return invalid("kernel_width", "must be a finite positive number");
    }
    Ok(())
}

/// The spectral density `φ(t) = (1/n) Σ δ(t − λᵢ)` of `op` by stochastic
/// Lanczos quadrature (Ubaru, Chen, Saad 2017; Ghorbani, Krishnan, Xiao 2019;
/// Papyan 2019, 2020).
///
/// Each of `num_probes` normalized Rademacher probes `v` runs `M =
/// lanczos_steps` Lanczos steps with full reorthogonalization; the
/// eigenvalues `θⱼ` of the tridiagonal matrix and the squared first
/// components `τⱼ` of its eigenvectors are a Gauss quadrature of the measure
/// `vᵀ δ(t − A) v`. The density is `φ(t) = (1/n_v) Σ_probes Σⱼ τⱼ g_σ(t − θⱼ)`
/// with a Gaussian `g_σ`, evaluated on `grid_points` points covering
/// `[λ_min, λ_max]` (the extreme nodes) padded by 5% of its width on each
/// side (at least 4σ), and scaled to integrate to one over the grid.
///
/// Kernel width: unless `kernel_width` is given, Papyan's rule from
/// *Traces of class/cross-class structure pervade deep learning spectra*
/// (JMLR 2020, Algorithm `LanczosApproxSpec`): on the padded interval mapped to
/// `[−1, 1]`, `σ = 2 / (M − 1) / √(8 ln κ)` with `κ = 3`, so that a kernel has
/// fallen to `1/κ` of its peak half a Chebyshev node spacing away. In
/// eigenvalue units `σ = 1.1 (λ_max − λ_min) / ((M − 1) √(8 ln 3))`.
///
/// # Example
///
/// ```
/// use secondo_linalg::{slq_density, DenseSymmetric, Progress, SlqOptions};
///
/// // Eigenvalues 0, 1, …, 19: the density is spread evenly over [0, 19].
/// let n = 20;
/// let mut data = vec![0.0; n * n];
/// for i in 0..n {
///     data[i * n + i] = i as f64;
/// }
/// let a = DenseSymmetric::new(n, data)?;
/// let density = slq_density(&a, &SlqOptions::default(), Progress::none())?;
/// let h = density.grid[1] - density.grid[0];
/// let below: f64 = density.grid.iter().zip(&density.values)
///     .filter(|(t, _)| **t < 9.5).map(|(_, v)| v * h).sum();
/// assert!((below - 0.5).abs() < 0.1);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn slq_density<O: SymmetricOperator + ?Sized>(
    op: &O,
    opts: &SlqOptions,
    progress: Progress<'_>,
) -> Result<Density, LinalgError> {
    let n = op.dim();
    check(n, opts)?;
    let steps = opts.lanczos_steps.min(n);
    let mut metered = Metered::new(op, progress, opts.num_probes.saturating_mul(steps));
    let mut rng = generator(opts.seed);
    let quadratures = quadrature::quadratures(
        &mut metered,
        &mut rng,
        opts.num_probes,
        steps,
        opts.block_size,
    )?;
    let scale = 1.0 / opts.num_probes as f64;
    let nodes: Vec<f64> = quadratures
        .iter()
        .flat_map(|q| q.nodes.iter().copied())
        .collect();
    let weights: Vec<f64> = quadratures
        .iter()
        .flat_map(|q| q.weights.iter().map(|w| w * scale))
        .collect();
    let lo = nodes.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = nodes.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sigma = opts
        .kernel_width
        .unwrap_or_else(|| kernel::papyan_width(kernel::spread(lo, hi), steps));
    let grid = kernel::grid(lo, hi, sigma, opts.grid_points);
    let values = kernel::smooth(&nodes, &weights, sigma, &grid).ok_or_else(|| {
        LinalgError::InvalidOption {
            name: "kernel_width",
            reason: format!(
                "{sigma:e} is too narrow for the grid spacing {:e}",
                grid[1] - grid[0]
            ),
        }
    })?;
    Ok(Density {
        grid,
        values,
        nodes,
        weights,
        kernel_width: sigma,
        products: metered.finish(),
    })
}
