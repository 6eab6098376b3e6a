//! Block Lanczos with reorthogonalization against the whole basis and thick
//! restart for a few extreme eigenpairs of a symmetric operator.

mod function;
mod krylov;
mod recurrence;
mod ritz;

pub use function::{lanczos_function, MatrixFunction};
use krylov::Krylov;
pub(crate) use recurrence::Recurrence;
use ritz::Ritz;

use crate::blas::Stored;
use crate::metered::Metered;
use crate::{LinalgError, Progress, SymmetricOperator};

/// Which end of the spectrum [`lanczos_top_k`] computes.
///
/// # Example
///
/// ```
/// use secondo_linalg::{lanczos_top_k, DenseSymmetric, LanczosOptions, Progress, Which};
///
/// let a = DenseSymmetric::new(3, vec![1.0, 0.0, 0.0, 0.0, -4.0, 0.0, 0.0, 0.0, 3.0])?;
/// let opts = LanczosOptions::default();
/// let top = lanczos_top_k(&a, 1, Which::LargestMagnitude, &opts, Progress::none())?;
/// assert!((top.values[0] + 4.0).abs() < 1e-12);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The algebraically largest eigenvalues, returned in descending order.
    Largest,
    /// The algebraically smallest eigenvalues, returned in ascending order.
    Smallest,
    /// The eigenvalues of largest absolute value, returned by descending magnitude.
    LargestMagnitude,
}

/// Options of [`lanczos_top_k`].
///
/// # Example
///
/// ```
/// use secondo_linalg::LanczosOptions;
///
/// let opts = LanczosOptions { tol: 1e-8, seed: 3, ..LanczosOptions::default() };
/// assert_eq!(opts.max_iter, 1000);
/// assert_eq!(opts.block_size, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LanczosOptions {
    /// Maximum number of block steps (each multiplies one block of vectors by the operator).
    pub max_iter: usize,
    /// A Ritz pair `(θ, x)` is converged when `‖A x − θ x‖ ≤ tol · max|θ|`.
    pub tol: f64,
    /// Seed of the random starting block.
    pub seed: u64,
    /// Vectors per block; a block of `b` vectors finds eigenvalues of
    /// multiplicity up to `b`. `None` uses `min(k, 4)`.
    pub block_size: Option<usize>,
    /// Largest Krylov basis kept before a thick restart. `None` uses
    /// `min(n, max(3k + 2b, 10b, 30))` for block size `b`; values of `n` or
    /// more never restart. Memory is `dim · max_basis` floats.
    pub max_basis: Option<usize>,
    /// The element type the Krylov basis is stored in (arithmetic is in f64
    /// either way).
    pub basis: BasisPrecision,
}

/// How [`lanczos_top_k`] stores its Krylov basis.
///
/// # Example
///
/// ```
/// use secondo_linalg::{lanczos_top_k, BasisPrecision, DenseSymmetric, LanczosOptions, Progress, Which};
///
/// let a = DenseSymmetric::new(2, vec![2.0, 1.0, 1.0, 2.0])?;
/// let opts = LanczosOptions { tol: 1e-6, basis: BasisPrecision::F32, ..LanczosOptions::default() };
/// let eig = lanczos_top_k(&a, 1, Which::Largest, &opts, Progress::none())?;
/// assert!((eig.values[0] - 3.0).abs() < 1e-6);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BasisPrecision {
    /// f64: accuracy to any tolerance.
    #[default]
    F64,
    /// f32: half the memory and half the traffic of the passes over the
    /// basis that dominate on large operators, for tolerances of about 1e-6
    /// and looser (eigenvalues come out to about f32 precision). Suits
    /// operators whose products are computed in f32 anyway.
    F32,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        Self {
            max_iter: 1000,
            tol: 1e-10,
            seed: 0,
            block_size: None,
            max_basis: None,
            basis: BasisPrecision::F64,
        }
    }
}

/// Eigenpairs computed by [`lanczos_top_k`].
///
/// # Example
///
/// ```
/// use secondo_linalg::{lanczos_top_k, DenseSymmetric, LanczosOptions, Progress, Which};
///
/// let a = DenseSymmetric::new(2, vec![2.0, 1.0, 1.0, 2.0])?;
/// let eig = lanczos_top_k(&a, 2, Which::Largest, &LanczosOptions::default(), Progress::none())?;
/// assert!(eig.converged);
/// assert!((eig.values[0] - 3.0).abs() < 1e-12 && (eig.values[1] - 1.0).abs() < 1e-12);
/// assert_eq!(eig.vector(0).map(|v| v.len()), Some(2));
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Eigen {
    /// Eigenvalues in the order given by [`Which`].
    pub values: Vec<f64>,
    /// Unit eigenvectors, column-major `dim × values.len()`.
    pub vectors: Vec<f64>,
    /// Residual norms `‖A x − θ x‖` (from the Lanczos relation, not recomputed).
    pub residuals: Vec<f64>,
    /// The dimension of the operator.
    pub dim: usize,
    /// Block steps performed.
    pub iterations: usize,
    /// Matrix–vector products performed.
    pub products: usize,
    /// Whether every returned pair met the tolerance (otherwise `max_iter` ran out).
    pub converged: bool,
}

impl Eigen {
    /// The eigenvector of `values[j]`, or `None` when `j` is out of range.
    ///
    /// # Example
    ///
    /// ```
    /// use secondo_linalg::{lanczos_top_k, DenseSymmetric, LanczosOptions, Progress, Which};
    ///
    /// let a = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, 5.0])?;
    /// let eig = lanczos_top_k(&a, 1, Which::Largest, &LanczosOptions::default(), Progress::none())?;
    /// let v = eig.vector(0).unwrap();
    /// assert!(v[0].abs() < 1e-12 && (v[1].abs() - 1.0).abs() < 1e-12);
    /// assert!(eig.vector(1).is_none());
    /// # Ok::<(), secondo_linalg::LinalgError>(())
    /// ```
    pub fn vector(&self, j: usize) -> Option<&[f64]> {
        let n = self.dim;
        let start = j.checked_mul(n).filter(|_| j < self.values.len())?;
        self.vectors.get(start..start.checked_add(n)?)
    }
}

/// Sizes of one Lanczos run, checked against the operator.
struct Plan {
    block: usize,
    cap: usize,
    keep: usize,
}

impl Plan {
    fn new(n: usize, k: usize, opts: &LanczosOptions) -> Result<Self, LinalgError> {
        let invalid = |name, reason: String| Err(LinalgError::InvalidOption { name, reason });
        if n == 0 {
            return Err(LinalgError::EmptyOperator);
        }
        if k == 0 {
            return invalid("k", "at least one eigenpair must be requested".into());
        }
        if k > n {
            return Err(LinalgError::TooManyEigenpairs { k, dim: n });
        }
        if !(opts.tol.is_finite() && opts.tol >= 0.0) {
            return invalid(
                "tol",
                format!("{} is not a finite non-negative number", opts.tol),
            );
        }
        let block = opts.block_size.unwrap_or(k.min(4));
        if block == 0 || block > n {
            return invalid("block_size", format!("{block} is not in 1..={n}"));
        }
        if opts.max_iter.saturating_mul(block) < k {
            return invalid(
                "max_iter",
                format!(
                    "{} steps of {block} vectors cannot find {k} eigenpairs",
                    opts.max_iter
                ),
            );
        }
        let double = block.saturating_mul(2);
        let minimum = k.saturating_add(double);
        let cap = opts
            .max_basis
            .unwrap_or(
                k.saturating_mul(3)
                    .saturating_add(double)
                    .max(block.saturating_mul(10))
                    .max(30),
            )
            .min(n);
        if cap < n && cap < minimum {
            return invalid(
                "max_basis",
                format!("{cap} is smaller than k + 2·block_size = {minimum}"),
            );
        }
        let room = cap.saturating_sub(double);
        let keep = room.min(k + room.saturating_sub(k) / 2);
        Ok(Self { block, cap, keep })
    }
}

/// The `k` eigenpairs of `op` at the end of the spectrum chosen by `which`.
///
/// Block Lanczos, reorthogonalized against the whole basis wherever a new
/// direction's components along it exceed semi-orthogonality (√ε; Simon
/// 1984): the Krylov basis grows a block at a time, Rayleigh–Ritz on the
/// projected matrix (a dense symmetric eigendecomposition) gives the Ritz
/// pairs, and when the basis reaches `max_basis` it is thick-restarted from
/// the best Ritz vectors. The run stops when the `k` wanted pairs satisfy
/// `‖A x − θ x‖ ≤ tol · max|θ|`, when the Krylov space is the whole space
/// (the result is then exact), or after `max_iter` steps (with
/// [`Eigen::converged`] false).
///
/// # Example
///
/// ```
/// use secondo_linalg::{lanczos_top_k, DenseSymmetric, LanczosOptions, Progress, Which};
///
/// let n = 50;
/// let mut data = vec![0.0; n * n];
/// for i in 0..n {
///     data[i * n + i] = i as f64;
/// }
/// let a = DenseSymmetric::new(n, data)?;
/// let eig = lanczos_top_k(&a, 3, Which::Largest, &LanczosOptions::default(), Progress::none())?;
/// for (value, expected) in eig.values.iter().zip([49.0, 48.0, 47.0]) {
///     assert!((value - expected).abs() < 1e-8);
/// }
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn lanczos_top_k<O: SymmetricOperator + ?Sized>(
    op: &O,
    k: usize,
    which: Which,
    opts: &LanczosOptions,
    progress: Progress<'_>,
) -> Result<Eigen, LinalgError> {
    lanczos_top_k_from(op, k, which, opts, &[], progress)
}

/// [`lanczos_top_k`] warm-started from `start` (`dim × m` column-major, e.g.
/// the eigenvectors of a previous, nearby operator): the starting block holds
/// every start direction, so eigenvectors that moved little converge in a few
/// steps. An empty `start` is a random start.
///
/// # Example
///
/// ```
/// use secondo_linalg::{lanczos_top_k, lanczos_top_k_from, DenseSymmetric, LanczosOptions, Progress, Which};
///
/// let n = 40;
/// let mut data = vec![0.0; n * n];
/// (0..n).for_each(|i| data[i * n + i] = i as f64);
/// let a = DenseSymmetric::new(n, data)?;
/// let opts = LanczosOptions { tol: 1e-8, ..LanczosOptions::default() };
/// let cold = lanczos_top_k(&a, 2, Which::Largest, &opts, Progress::none())?;
/// let warm = lanczos_top_k_from(&a, 2, Which::Largest, &opts, &cold.vectors, Progress::none())?;
/// assert!((warm.values[0] - 39.0).abs() < 1e-8);
/// assert!(warm.products < cold.products);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
pub fn lanczos_top_k_from<O: SymmetricOperator + ?Sized>(
    op: &O,
    k: usize,
    which: Which,
    opts: &LanczosOptions,
    start: &[f64],
    progress: Progress<'_>,
) -> Result<Eigen, LinalgError> {
    let plan = Plan::new(op.dim(), k, opts)?;
    if !start.len().is_multiple_of(op.dim()) {
        return Err(LinalgError::InvalidOption {
            name: "start",
            reason: format!(
                "{} values are not whole vectors of length {}",
                start.len(),
                op.dim()
            ),
        });
    }
    let metered = Metered::new(op, progress, opts.max_iter.saturating_mul(plan.block));
    match opts.basis {
        BasisPrecision::F64 => run::<f64, O>(metered, &plan, k, which, opts, start),
        BasisPrecision::F32 => run::<f32, O>(metered, &plan, k, which, opts, start),
    }
}

/// [`lanczos_top_k`] with the basis stored as `S`.
fn run<S: Stored, O: SymmetricOperator + ?Sized>(
    mut metered: Metered<'_, '_, O>,
    plan: &Plan,
    k: usize,
    which: Which,
    opts: &LanczosOptions,
    start: &[f64],
) -> Result<Eigen, LinalgError> {
    let mut krylov = Krylov::<S>::new(metered.dim(), plan.cap, plan.block, opts.seed, start);
    let mut steps = 0;
    let mut next_check = 0;
    loop {
        let exhausted = krylov.unmultiplied() == 0;
        if exhausted || steps == opts.max_iter {
            let ritz = krylov.ritz()?;
            let wanted = ritz.select(which, k);
            let converged = exhausted || (wanted.len() == k && ritz.converged(&wanted, opts.tol));
            return Ok(assemble(&krylov, &ritz, &wanted, steps, converged, metered));
        }
        if krylov.needs_restart() {
            let ritz = krylov.ritz()?;
            let wanted = ritz.select(which, k);
            if wanted.len() == k && ritz.converged(&wanted, opts.tol) {
                return Ok(assemble(&krylov, &ritz, &wanted, steps, true, metered));
            }
            krylov.restart(&ritz, &ritz.select(which, plan.keep));
            next_check = krylov.multiplied();
        }
        krylov.expand(&mut metered)?;
        steps += 1;
        if krylov.multiplied() >= next_check.max(k) {
            let ritz = krylov.ritz()?;
            let wanted = ritz.select(which, k);
            if ritz.converged(&wanted, opts.tol) {
                return Ok(assemble(&krylov, &ritz, &wanted, steps, true, metered));
            }
            next_check = krylov.multiplied() + plan.block.max(krylov.multiplied() / 8);
        }
    }
}

fn assemble<S: Stored, O: SymmetricOperator + ?Sized>(
    krylov: &Krylov<S>,
    ritz: &Ritz,
    wanted: &[usize],
    iterations: usize,
    converged: bool,
    metered: Metered<'_, '_, O>,
) -> Eigen {
    Eigen {
        values: wanted.iter().map(|&j| ritz.values[j]).collect(),
        vectors: krylov.ritz_vectors(ritz, wanted),
        residuals: wanted.iter().map(|&j| ritz.residuals[j]).collect(),
        dim: metered.dim(),
        iterations,
        products: metered.finish(),
        converged,
    }
}
