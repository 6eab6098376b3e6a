//! Stochastic trace and diagonal estimators from Rademacher probes.

mod diagonal;
mod hutchinson;
mod hutchpp;
mod stats;
mod xtrace;

pub use diagonal::{diag_estimate, DiagonalEstimate};
pub use hutchinson::hutchinson;
pub use hutchpp::hutch_plus_plus;
pub use xtrace::xtrace;

use rand_chacha::ChaCha8Rng;

use crate::metered::Metered;
use crate::random::fill_rademacher;
use crate::{LinalgError, SymmetricOperator};

/// Options shared by the trace and diagonal estimators.
///
/// # Example
///
/// ```
/// use secondo_linalg::TraceOptions;
///
/// let opts = TraceOptions { products: 60, seed: 7, ..TraceOptions::default() };
/// assert_eq!(opts.block_size, 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceOptions {
    /// Budget of matrix–vector products (an estimator may use slightly fewer).
    pub products: usize,
    /// Seed of the Rademacher probes (`ChaCha8Rng::seed_from_u64`).
    pub seed: u64,
    /// Probes applied per call of [`SymmetricOperator::apply_block`].
    pub block_size: usize,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            products: 100,
            seed: 0,
            block_size: 10,
        }
    }
}

/// A stochastic estimate with its standard error.
///
/// # Example
///
/// ```
/// use secondo_linalg::{hutchinson, DenseSymmetric, Progress, TraceOptions};
///
/// // Rademacher probes are exact on diagonal matrices.
/// let a = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, 2.0])?;
/// let est = hutchinson(&a, &TraceOptions::default(), Progress::none())?;
/// assert!((est.estimate - 3.0).abs() < 1e-12 && est.stderr < 1e-12);
/// assert_eq!(est.products, 100);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The estimate.
    pub estimate: f64,
    /// Its estimated standard error.
    pub stderr: f64,
    /// Matrix–vector products spent.
    pub products: usize,
}

/// Checks the operator and options; `minimum` is the smallest budget the estimator accepts.
fn validate(dim: usize, opts: &TraceOptions, minimum: usize) -> Result<(), LinalgError> {
    if dim == 0 {
        return Err(LinalgError::EmptyOperator);
    }
    if opts.products < minimum {
        return Err(LinalgError::InvalidOption {
            name: "products",
            reason: format!(
                "{} is fewer than the {minimum} this estimator needs",
                opts.products
            ),
        });
    }
    if opts.block_size == 0 {
        return Err(LinalgError::InvalidOption {
            name: "block_size",
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

/// Draws `count` Rademacher probes in blocks of `block`, lets `prepare` modify
/// each block of probes, applies the operator and passes `(z, A z, k)` to `visit`.
fn probe_blocks<O: SymmetricOperator + ?Sized>(
    metered: &mut Metered<'_, '_, O>,
    rng: &mut ChaCha8Rng,
    count: usize,
    block: usize,
    mut prepare: impl FnMut(&mut [f64], usize),
    mut visit: impl FnMut(&[f64], &[f64], usize),
) -> Result<(), LinalgError> {
    let n = metered.dim();
    let mut done = 0;
    while done < count {
        let k = block.min(count - done);
        let mut z = vec![0.0; n * k];
        fill_rademacher(rng, &mut z);
        prepare(&mut z, k);
        let mut az = vec![0.0; n * k];
        metered.apply(&z, k, &mut az)?;
        visit(&z, &az, k);
        done += k;
    }
    Ok(())
}

/// Hutchinson's probing: `opts.products` (at least 2) Rademacher probes `z`
/// through `op`, each block passed to `visit` as `(z, A z)`. Returns the
/// products spent.
fn rademacher_probes<O: SymmetricOperator + ?Sized>(
    op: &O,
    opts: &TraceOptions,
    progress: crate::Progress<'_>,
    mut visit: impl FnMut(&[f64], &[f64]),
) -> Result<usize, LinalgError> {
    validate(op.dim(), opts, 2)?;
    let mut metered = Metered::new(op, progress, opts.products);
    let mut rng = crate::random::generator(opts.seed);
    probe_blocks(
        &mut metered,
        &mut rng,
        opts.products,
        opts.block_size,
        |_, _| {},
        |z, az, _| visit(z, az),
    )?;
    Ok(metered.finish())
}

/// The quadratic forms `zⱼᵀ (A z)ⱼ` of the columns of `z` (of length `n`)
/// with the matching columns of `az`.
fn quadratic_forms<'a>(z: &'a [f64], az: &'a [f64], n: usize) -> impl Iterator<Item = f64> + 'a {
    z.chunks_exact(n)
        .zip(az.chunks_exact(n))
        .map(|(z, az)| crate::blas::dot(z, az))
}

/// Applies the operator to the `k` columns of `v` in blocks of `block`.
fn apply_in_blocks<O: SymmetricOperator + ?Sized>(
    metered: &mut Metered<'_, '_, O>,
    v: &[f64],
    k: usize,
    block: usize,
) -> Result<Vec<f64>, LinalgError> {
    let n = metered.dim();
    let mut out = vec![0.0; n * k];
    for (input, output) in v.chunks(n * block).zip(out.chunks_mut(n * block)) {
        metered.apply(input, input.len() / n, output)?;
    }
    Ok(out)
}
