//! The structures of the posterior precision `P = s·H + diag(δ)` (`H` the
//! curvature of the summed negative log-likelihood, `s = 1/σ²` for a
//! Gaussian likelihood and 1 otherwise, `δ` the prior precision), each kept
//! in an eigenbasis of `H` so that `P`'s determinant, inverse and square
//! root follow from its eigenvalues (Daxberger et al. 2021, "Laplace Redux",
//! §3 and appendix A; for the Kronecker factors Ritter et al. 2018, "A
//! scalable Laplace approximation for neural networks", and Immer et al.
//! 2021, "Scalable marginal likelihood estimation for model selection in
//! deep learning", which adds the prior inside the eigenbasis exactly).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use secondo_linalg::{
    dense_spd_inverse_log_det, row_major_product, sum_ln, DenseSymmetric, RowMajor,
};

use super::dense::{contract, contract_owned, eigen_rows, identity};
use crate::Error;

/// Which structure the curvature is kept in (`--structure`).
///
/// ```
/// use secondo::laplace::Structure;
/// assert_eq!("lowrank:20".parse::<Structure>().unwrap(), Structure::LowRank(20));
/// assert!("block".parse::<Structure>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    /// The dense curvature of the selected weights (GGN or empirical Fisher).
    Full,
    /// Kronecker factors per layer (KFLR: the exact GGN's output factor).
    Kron,
    /// The diagonal.
    Diag,
    /// The top `K` eigenpairs of the dense curvature (Lanczos), the rest of
    /// the space at the prior precision alone.
    LowRank(usize),
}

impl FromStr for Structure {
    type Err = Error;
    fn from_str(s: &str) -> Result<Structure, Error> {
        match s {
            "full" => Ok(Structure::Full),
            "kron" => Ok(Structure::Kron),
            "diag" => Ok(Structure::Diag),
            _ => match s.strip_prefix("lowrank:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(Structure::LowRank(k)),
                _ => Err(Error::Invalid(format!(
                    "--structure '{s}': expected full, kron, diag or lowrank:K with K ≥ 1"
                ))),
            },
        }
    }
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Structure::Full => f.write_str("full"),
            Structure::Kron => f.write_str("kron"),
            Structure::Diag => f.write_str("diag"),
            Structure::LowRank(k) => write!(f, "lowrank:{k}"),
        }
    }
}

/// A symmetric matrix's eigendecomposition: values and eigenvectors as the
/// rows of a row-major matrix (`A = Eᵀ diag(λ) E`).
#[derive(Debug, Clone, PartialEq)]
pub struct Eigen {
    /// Eigenvalues, ascending.
    pub values: Vec<f64>,
    /// Eigenvectors, one per row.
    pub rows: Vec<f64>,
}

impl Eigen {
    /// The decomposition of the row-major symmetric `n × n` matrix `a`.
    pub fn of(a: &[f64], n: usize) -> Result<Eigen, Error> {
        let (values, rows) = eigen_rows(a, n)?;
        Ok(Eigen { values, rows })
    }

    fn dim(&self) -> usize {
        self.values.len()
    }
}

/// What the evidence needs of a posterior precision `P`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PrecisionTerms {
    /// `log det P`.
    pub(crate) log_det: f64,
    /// The marginal variances, `diag(P⁻¹)`.
    pub(crate) variances: Vec<f64>,
    /// `tr(P⁻¹ H)`.
    pub(crate) trace_covariance_curvature: f64,
}

/// A dense curvature block (row-major) and its eigendecomposition, computed
/// when first needed and then kept: a fit stores the matrix alone, as
/// laplace-torch's does, and the `n³` decomposition is paid once by
/// whichever of the evidence, the predictive or [`super::save`] asks first.
#[derive(Debug, Clone)]
pub struct DenseCurvature {
    matrix: Vec<f64>,
    dim: usize,
    eigen: OnceLock<Eigen>,
}

impl DenseCurvature {
    /// The symmetric row-major `dim × dim` `matrix`, not yet decomposed.
    pub fn new(matrix: Vec<f64>, dim: usize) -> DenseCurvature {
        debug_assert_eq!(matrix.len(), dim * dim);
        DenseCurvature {
            matrix,
            dim,
            eigen: OnceLock::new(),
        }
    }

    /// The matrix with its known decomposition (as [`super::save`] stores it).
    pub fn with_eigen(matrix: Vec<f64>, eigen: Eigen) -> DenseCurvature {
        let dim = eigen.dim();
        DenseCurvature {
            matrix,
            dim,
            eigen: OnceLock::from(eigen),
        }
    }

    /// The number of rows.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The matrix, row-major.
    pub fn matrix(&self) -> &[f64] {
        &self.matrix
    }

    /// The evidence's terms of the precision `P = s·H + diag(δ)` for a
    /// prior `δ` that varies over the block, where `H`'s eigenbasis is not
    /// `P`'s: one Cholesky factor and inverse per hyperparameter step
    /// instead of an eigendecomposition.
    pub(crate) fn precision_terms(&self, s: f64, prior: &[f64]) -> Result<PrecisionTerms, Error> {
        let n = self.dim;
        let p = DenseSymmetric::new(n, self.precision(s, prior))?;
        let (inverse, log_det) = dense_spd_inverse_log_det(&p)?;
        Ok(PrecisionTerms {
            log_det,
            variances: (0..n).map(|i| inverse[i * n + i]).collect(),
            trace_covariance_curvature: inverse.iter().zip(&self.matrix).map(|(a, h)| a * h).sum(),
        })
    }

    /// The posterior precision `s·H + diag(δ)` for the prior `δ`, row-major.
    fn precision(&self, s: f64, prior: &[f64]) -> Vec<f64> {
        let n = self.dim;
        let mut p: Vec<f64> = self.matrix.iter().map(|h| s * h).collect();
        prior
            .iter()
            .enumerate()
            .for_each(|(i, d)| p[i * n + i] += d);
        p
    }

    /// The matrix's eigendecomposition, computed on the first call.
    pub fn eigen(&self) -> Result<&Eigen, Error> {
        if let Some(e) = self.eigen.get() {
            return Ok(e);
        }
        let e = Eigen::of(&self.matrix, self.dim)?;
        Ok(self.eigen.get_or_init(|| e))
    }
}

/// Equal matrices are equal blocks, decomposed yet or not.
impl PartialEq for DenseCurvature {
    fn eq(&self, other: &DenseCurvature) -> bool {
        self.dim == other.dim && self.matrix == other.matrix
    }
}

impl Structure {
    /// Whether the structure takes one prior precision per weight: a
    /// Kronecker-factored or low-rank posterior does not, as its eigenbasis
    /// diagonalizes `s·H + δ` only for one `δ` per block.
    pub fn takes_diagonal_prior(self) -> bool {
        matches!(self, Structure::Full | Structure::Diag)
    }
}

/// The refusal of a diagonal prior (`shape_flag`) over a structure
/// (`structure_flag`) that takes none ([`Structure::takes_diagonal_prior`]).
pub(crate) fn diagonal_prior_refused(shape_flag: &str, structure_flag: &str) -> Error {
    Error::Invalid(format!(
        "{shape_flag} diagonal: a Kronecker-factored or low-rank posterior needs one prior \
         precision per layer ({shape_flag} scalar or layer, or {structure_flag} diag or full)"
    ))
}

/// One diagonal block of the curvature `H` over a contiguous range of the
/// selected weights.
#[derive(Debug, Clone, PartialEq)]
pub enum CurvatureBlock {
    /// `H = diag(h)`.
    Diag(Vec<f64>),
    /// `H` dense, decomposed when first needed.
    Dense(DenseCurvature),
    /// `H = B ⊗ A` for a weight of shape `[out, in...]` flattened row-major
    /// (`B` over outputs, `A` over inputs; a bias has `A = [1]`).
    Kron {
        /// The output factor's decomposition.
        out: Eigen,
        /// The input factor's decomposition.
        input: Eigen,
    },
    /// `H ≈ Vᵀ diag(λ) V` with `K` orthonormal rows `V`.
    LowRank {
        /// The top eigenvalues.
        values: Vec<f64>,
        /// Their eigenvectors, `K × n` row-major.
        rows: Vec<f64>,
        /// The block's dimension.
        dim: usize,
    },
}

impl CurvatureBlock {
    /// The number of weights the block covers.
    pub fn dim(&self) -> usize {
        match self {
            CurvatureBlock::Diag(h) => h.len(),
            CurvatureBlock::Dense(d) => d.dim,
            CurvatureBlock::Kron { out, input } => out.dim() * input.dim(),
            CurvatureBlock::LowRank { dim, .. } => *dim,
        }
    }

    /// The posterior precision `s·H + diag(δ)` of the block in an eigenbasis,
    /// for the block's prior precisions `prior` (one per weight). The
    /// Kronecker and low-rank blocks need one precision for the whole block
    /// (their eigenbasis diagonalizes only that), the dense block is
    /// decomposed again when the precisions differ.
    pub fn posterior(&self, s: f64, prior: &[f64]) -> Result<PrecisionBlock<'_>, Error> {
        let uniform = prior.iter().all(|&d| d == prior[0]);
        let shifted =
            |values: &[f64]| -> Vec<f64> { values.iter().map(|l| s * l + prior[0]).collect() };
        Ok(match self {
            CurvatureBlock::Diag(h) => PrecisionBlock {
                basis: Basis::Standard,
                mu: h.iter().zip(prior).map(|(h, d)| s * h + d).collect(),
                eta: h.clone(),
                dim: h.len(),
            },
            CurvatureBlock::Dense(d) if uniform => {
                let eigen = d.eigen()?;
                PrecisionBlock {
                    mu: shifted(&eigen.values),
                    eta: eigen.values.clone(),
                    basis: Basis::Dense(Cow::Borrowed(&eigen.rows)),
                    dim: d.dim,
                }
            }
            CurvatureBlock::Dense(d) => {
                let n = d.dim;
                let e = Eigen::of(&d.precision(s, prior), n)?;
                // η_k = e_kᵀ H e_k: the curvature's share of each eigenvalue.
                let he = contract("ij,kj->ki", &d.matrix, &[n, n], &e.rows, &[n, n]);
                let eta = (0..n)
                    .map(|k| (0..n).map(|i| e.rows[k * n + i] * he[k * n + i]).sum())
                    .collect();
                PrecisionBlock {
                    mu: e.values,
                    eta,
                    basis: Basis::Dense(Cow::Owned(e.rows)),
                    dim: n,
                }
            }
            _ if !uniform => return Err(diagonal_prior_refused("--prior-shape", "--structure")),
            CurvatureBlock::Kron { out, input } => {
                let eta: Vec<f64> = out
                    .values
                    .iter()
                    .flat_map(|b| input.values.iter().map(move |a| b * a))
                    .collect();
                PrecisionBlock {
                    mu: shifted(&eta),
                    eta,
                    basis: Basis::Kron {
                        out: &out.rows,
                        input: &input.rows,
                        shape: (out.dim(), input.dim()),
                    },
                    dim: out.dim() * input.dim(),
                }
            }
            CurvatureBlock::LowRank { values, rows, dim } => PrecisionBlock {
                mu: shifted(values),
                eta: values.clone(),
                basis: Basis::LowRank {
                    rows,
                    rest: prior[0],
                },
                dim: *dim,
            },
        })
    }
}

/// An orthonormal basis a precision block is diagonal in.
#[derive(Debug, Clone, PartialEq)]
enum Basis<'a> {
    /// The standard basis.
    Standard,
    /// A dense basis: one vector per row, `n × n`.
    Dense(Cow<'a, [f64]>),
    /// The Kronecker product of the output factor's and input factor's bases.
    Kron {
        out: &'a [f64],
        input: &'a [f64],
        shape: (usize, usize),
    },
    /// `K` vectors (rows); their orthogonal complement has precision `rest`.
    LowRank { rows: &'a [f64], rest: f64 },
}

/// One block of the posterior precision, diagonal in its basis: `P =
/// Qᵀ diag(μ) Q` (plus, for a low-rank block, `rest` on the complement).
#[derive(Debug, Clone, PartialEq)]
pub struct PrecisionBlock<'a> {
    basis: Basis<'a>,
    /// The precision's eigenvalues.
    mu: Vec<f64>,
    /// `qₖᵀ H qₖ` per basis vector (the derivative of `μₖ` in `s`).
    eta: Vec<f64>,
    dim: usize,
}

impl PrecisionBlock<'_> {
    /// The coordinates of `r` rows (each of the block's dimension) in the basis.
    fn coordinates(&self, rows: &[f64], r: usize) -> Vec<f64> {
        self.change_basis(rows, r, true)
    }

    /// The rows whose coordinates are `coords` (the transpose of [`Self::coordinates`]).
    fn combine(&self, coords: &[f64], r: usize) -> Vec<f64> {
        self.change_basis(coords, r, false)
    }

    /// `r` row vectors times the basis matrix `Q` (one basis vector per
    /// row): into coordinates `v Qᵀ` when `into`, else back, `v Q`.
    fn change_basis(&self, v: &[f64], r: usize, into: bool) -> Vec<f64> {
        let n = self.dim;
        let (left, right) = match into {
            true => ("ab,rbc->rac", "rac,dc->rad"),
            false => ("ba,rbc->rac", "rac,cd->rad"),
        };
        // `v Qᵀ` or `v Q` for `Q` of `k` rows.
        let product = |q: &[f64], k: usize| {
            let q = RowMajor::new(q, k, n);
            match into {
                true => row_major_product(RowMajor::new(v, r, n), q.t()),
                false => row_major_product(RowMajor::new(v, r, k), q),
            }
        };
        match &self.basis {
            Basis::Standard => v.to_vec(),
            Basis::Dense(q) => product(q, n),
            Basis::Kron { out, input, shape } => {
                let (o, i) = *shape;
                let half = contract(left, out, &[o, o], v, &[r, o, i]);
                contract_owned(right, half, &[r, o, i], input.to_vec(), &[i, i])
            }
            Basis::LowRank { rows: q, .. } => product(q, self.mu.len()),
        }
    }

    /// `μᵏ^power` per basis vector.
    fn powers(&self, power: f64) -> Vec<f64> {
        self.mu.iter().map(|m| m.powf(power)).collect()
    }

    /// `P^power` applied to `r` rows (row-major `r × dim`): `power = 1`
    /// the precision, `-1` the covariance, `-½` its symmetric square root.
    pub fn apply_power(&self, rows: &[f64], r: usize, power: f64) -> Vec<f64> {
        let coords = self.coordinates(rows, r);
        let factors = self.powers(power);
        let k = factors.len();
        let scaled: Vec<f64> = coords
            .iter()
            .enumerate()
            .map(|(j, c)| c * factors[j % k])
            .collect();
        let mut out = self.combine(&scaled, r);
        if let Basis::LowRank { rest, .. } = &self.basis {
            let factor = rest.powf(power);
            for (o, x) in out.iter_mut().zip(self.complement(rows, &coords, r)) {
                *o += factor * x;
            }
        }
        out
    }

    /// The rows minus their projection on a low-rank block's top space.
    fn complement(&self, rows: &[f64], coords: &[f64], r: usize) -> Vec<f64> {
        let projected = self.combine(coords, r);
        rows.iter().zip(projected).map(|(x, p)| x - p).collect()
    }

    /// `W` with `W Wᵀ = R P⁻¹ Rᵀ` for `r` rows `R`, row-major `r × width`:
    /// the rows' coordinates scaled by `μ^{-½}` (one basis change, where
    /// `R P^{-½}` takes two), for a low-rank block followed by the
    /// complement scaled by `rest^{-½}`. Returns `W` and its width.
    pub fn whiten(&self, rows: &[f64], r: usize) -> (Vec<f64>, usize) {
        let coords = self.coordinates(rows, r);
        let factors = self.powers(-0.5);
        let k = factors.len();
        let scaled = coords.iter().enumerate().map(|(j, c)| c * factors[j % k]);
        match &self.basis {
            Basis::LowRank { rest, .. } => {
                let scaled: Vec<f64> = scaled.collect();
                let rest = rest.powf(-0.5);
                let complement = self.complement(rows, &coords, r);
                let n = self.dim;
                let w = (0..r)
                    .flat_map(|i| {
                        scaled[i * k..(i + 1) * k]
                            .iter()
                            .copied()
                            .chain(complement[i * n..(i + 1) * n].iter().map(|x| x * rest))
                            .collect::<Vec<f64>>()
                    })
                    .collect();
                (w, k + n)
            }
            _ => (scaled.collect(), self.dim),
        }
    }

    /// `M` (`dim × width`, row-major) with `M Mᵀ = P⁻¹`: [`Self::whiten`]
    /// of the identity, which for a dense basis is its transpose scaled by
    /// `μ^{-½}` (no product needed).
    pub fn whitening(&self) -> (Vec<f64>, usize) {
        match &self.basis {
            Basis::Dense(q) => {
                let n = self.dim;
                let factors = self.powers(-0.5);
                // In tiles, so that neither side is read or written a whole
                // row apart.
                const TILE: usize = 32;
                let mut m = vec![0.0; n * n];
                for k0 in (0..n).step_by(TILE) {
                    for j0 in (0..n).step_by(TILE) {
                        for k in k0..(k0 + TILE).min(n) {
                            for j in j0..(j0 + TILE).min(n) {
                                m[j * n + k] = q[k * n + j] * factors[k];
                            }
                        }
                    }
                }
                (m, n)
            }
            _ => self.whiten(&identity(self.dim), self.dim),
        }
    }

    /// `Jₙ P⁻¹ Jₙᵀ` (`[n, C, C]`) for per-sample rows `Jₙ = Gₙ ⊗ aₙᵀ` over
    /// the block's weights `offset..offset + O·I` (a tensor of shape `[O,
    /// I]`; a bias has `I = 1`, `a = 1`), from `g` (`[C, n, O]`) and `a`
    /// (`[n, I]`), without forming the rows (`super::factored`): `Σₖ
    /// Hₙ[:,k] Hₙ[:,k]ᵀ tₙₖ` with `H = G Q_Bᵀ`, `tₙₖ = Σₗ (Q_A aₙ)ₗ² / μₖₗ`.
    /// Only the standard basis (any offset) and a Kronecker block (the
    /// whole block) keep the rows' product form.
    pub fn kronecker_rows_covariance(
        &self,
        offset: usize,
        (o, i): (usize, usize),
        g: &[f64],
        a: &[f64],
        n: usize,
        c: usize,
    ) -> Result<Vec<f64>, Error> {
        let inverse: Vec<f64> = self.mu[offset..offset + o * i]
            .iter()
            .map(|m| 1.0 / m)
            .collect();
        let (h, qa) = match &self.basis {
            Basis::Standard => (g.to_vec(), a.to_vec()),
            Basis::Kron { out, input, shape } if offset == 0 && *shape == (o, i) => (
                contract("cno,ko->cnk", g, &[c, n, o], out, &[o, o]),
                contract("ni,li->nl", a, &[n, i], input, &[i, i]),
            ),
            _ => {
                return Err(Error::Invalid(
                    "factored Jacobians need a diagonal or Kronecker block per tensor".into(),
                ))
            }
        };
        let squares: Vec<f64> = qa.iter().map(|x| x * x).collect();
        let t = contract_owned("nl,kl->nk", squares, &[n, i], inverse, &[o, i]);
        let scaled: Vec<f64> = h
            .iter()
            .enumerate()
            .map(|(idx, v)| v * t[idx % (n * o)])
            .collect();
        Ok(contract_owned(
            "cnk,dnk->ncd",
            scaled,
            &[c, n, o],
            h,
            &[c, n, o],
        ))
    }

    /// `log det P` of the block.
    pub fn log_det(&self) -> f64 {
        let top = sum_ln(&self.mu);
        match &self.basis {
            Basis::LowRank { rest, .. } => top + (self.dim - self.mu.len()) as f64 * rest.ln(),
            _ => top,
        }
    }

    /// The diagonal of the covariance `P⁻¹` (the marginal variances).
    pub fn covariance_diagonal(&self) -> Vec<f64> {
        let n = self.dim;
        let inv: Vec<f64> = self.mu.iter().map(|m| 1.0 / m).collect();
        match &self.basis {
            Basis::Standard => inv,
            Basis::Dense(q) => {
                let sq: Vec<f64> = q.iter().map(|x| x * x).collect();
                contract("k,kj->j", &inv, &[n], &sq, &[n, n])
            }
            Basis::Kron { out, input, shape } => {
                let (o, i) = *shape;
                let so: Vec<f64> = out.iter().map(|x| x * x).collect();
                let si: Vec<f64> = input.iter().map(|x| x * x).collect();
                let left = contract("ac,ab->bc", &inv, &[o, i], &so, &[o, o]);
                contract("bc,cd->bd", &left, &[o, i], &si, &[i, i])
            }
            Basis::LowRank { rows, rest } => {
                let k = self.mu.len();
                let sq: Vec<f64> = rows.iter().map(|x| x * x).collect();
                let top = contract("k,kj->j", &inv, &[k], &sq, &[k, n]);
                let covered = contract("k,kj->j", &vec![1.0; k], &[k], &sq, &[k, n]);
                top.iter()
                    .zip(covered)
                    .map(|(t, c)| t + (1.0 - c) / rest)
                    .collect()
            }
        }
    }

    /// `tr P⁻¹`, the sum of [`Self::covariance_diagonal`] from the
    /// eigenvalues alone.
    pub fn covariance_trace(&self) -> f64 {
        let top: f64 = self.mu.iter().map(|m| 1.0 / m).sum();
        match &self.basis {
            Basis::LowRank { rest, .. } => top + (self.dim - self.mu.len()) as f64 / rest,
            _ => top,
        }
    }

    /// `tr(P⁻¹ H)`: the derivative of `log det P` in `s`.
    pub fn trace_covariance_curvature(&self) -> f64 {
        self.mu.iter().zip(&self.eta).map(|(m, e)| e / m).sum()
    }

    /// The number of weights the block covers.
    pub fn dim(&self) -> usize {
        self.dim
    }
}
