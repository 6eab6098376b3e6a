//! Spectra of curvature matrices: top eigenvalues (Lanczos), trace estimates
//! (Hutch++) and spectral densities (stochastic Lanczos quadrature), written as
//! JSON with an SVG plot.

use std::path::Path;

use secondo_curvature::CurvatureOperator;
use secondo_linalg::{
    hutch_plus_plus, lanczos_top_k_from, slq_density, BasisPrecision, Eigen, LanczosOptions,
    LinalgError, Progress, SlqOptions, SymmetricOperator, TraceOptions, Which,
};

use secondo_tensor::memory::{bytes_of, ensure_fits};

use crate::plot::{Plot, Series};
use crate::Error;

/// What to compute.
///
/// ```
/// let o = secondo::spectrum::SpectrumOptions::default();
/// assert_eq!(o.top, Some(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpectrumOptions {
    /// How many of the largest eigenvalues (`None`: none).
    pub top: Option<usize>,
    /// Whether to estimate the trace.
    pub trace: bool,
    /// Whether to estimate the spectral density.
    pub density: bool,
    /// Seed of every random probe.
    pub seed: u64,
    /// Matrix-vector products for the trace estimate.
    pub trace_products: usize,
    /// Random probes (Lanczos runs) for the density.
    pub density_probes: usize,
    /// Lanczos steps per density probe.
    pub lanczos_steps: usize,
}

impl Default for SpectrumOptions {
    fn default() -> Self {
        SpectrumOptions {
            top: Some(10),
            trace: false,
            density: false,
            seed: 0,
            trace_products: 99,
            density_probes: 3,
            lanczos_steps: 90,
        }
    }
}

/// Results; absent parts were not requested.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    /// Largest eigenvalues, descending.
    pub top_eigenvalues: Option<Vec<f64>>,
    /// Trace estimate and its standard error.
    pub trace: Option<(f64, f64)>,
    /// Density on a grid: `(grid, values)`.
    pub density: Option<(Vec<f64>, Vec<f64>)>,
    /// Matrix-vector products used in total.
    pub products: usize,
}

/// A curvature operator as the linear-algebra crate's symmetric operator.
pub(crate) struct AsSymmetric<'a>(pub(crate) &'a CurvatureOperator);

impl SymmetricOperator for AsSymmetric<'_> {
    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn apply_block(&self, v: &[f64], k: usize, out: &mut [f64]) -> Result<(), LinalgError> {
        let r = self
            .0
            .apply_block(v, k)
            .map_err(|e| LinalgError::Operator(Box::new(e)))?;
        out.copy_from_slice(&r);
        Ok(())
    }
}

/// The `k` largest eigenpairs of `op` (residuals below `tol` relative to
/// the largest), by Lanczos warm-started from `start` (`dim × m` column-major,
/// e.g. the eigenvectors of a previous, nearby operator; empty for a random
/// start seeded by `seed`).
pub fn top_eigen(
    op: &CurvatureOperator,
    k: usize,
    tol: f64,
    seed: u64,
    start: &[f64],
) -> Result<Eigen, Error> {
    top_eigen_with(op, k, tol, seed, start, Progress::none())
}

fn top_eigen_with(
    op: &CurvatureOperator,
    k: usize,
    tol: f64,
    seed: u64,
    start: &[f64],
    progress: Progress<'_>,
) -> Result<Eigen, Error> {
    let dim = op.dim();
    // One vector per step and a basis of max(2k + 5, 20): ~100 products for
    // the top 10 of an MLP Hessian (blocks of 4 took ~390), and a smaller
    // basis to reorthogonalize against than the default (30 took 1.5x longer).
    let options = LanczosOptions {
        seed,
        tol,
        block_size: Some(1),
        // Products computed in f32 are accurate to f32 precision: a basis
        // stored in f32 loses nothing more and halves the passes over it.
        basis: match op.dtype() {
            secondo_tensor::DType::F32 => BasisPrecision::F32,
            secondo_tensor::DType::F64 => BasisPrecision::F64,
        },
        max_basis: Some(top_basis(k, dim)),
        // Enough steps for any k up to the dimension (the Krylov space is
        // then the whole space and the result exact).
        max_iter: LanczosOptions::default().max_iter.max(dim),
    };
    let matrix = AsSymmetric(op);
    Ok(lanczos_top_k_from(
        &matrix,
        k,
        Which::Largest,
        &options,
        start,
        progress,
    )?)
}

/// Number of matrix-vector products `opts` plans on a matrix of dimension `dim`
/// (an upper bound: Lanczos may converge early).
pub fn planned_products(opts: &SpectrumOptions, dim: usize) -> usize {
    let top = opts.top.map_or(0, |k| {
        LanczosOptions::default()
            .max_iter
            .min(dim.max(3 * k))
            .max(k)
    });
    let trace = if opts.trace { opts.trace_products } else { 0 };
    let density = if opts.density {
        opts.density_probes * opts.lanczos_steps.min(dim)
    } else {
        0
    };
    top + trace + density
}

/// The Lanczos basis for the top `k` of `dim`: max(2k + 5, 20) vectors.
fn top_basis(k: usize, dim: usize) -> usize {
    (2 * k + 5).max(20).min(dim)
}

/// Bytes of the vectors the largest of the requested parts keeps at once
/// (they run one after another): the top-k basis, the Hutch++ sketch and
/// probes, the density's Lanczos basis.
fn vectors_bytes(opts: &SpectrumOptions, dim: usize, dtype: secondo_tensor::DType) -> u64 {
    // The top-k basis is stored in the operator's dtype.
    let top = opts.top.map_or(0, |k| {
        bytes_of(top_basis(k, dim).saturating_mul(dim), dtype.size_bytes())
    });
    let trace = if opts.trace {
        bytes_of(opts.trace_products.saturating_mul(dim), 8)
    } else {
        0
    };
    let density = if opts.density {
        bytes_of(opts.lanczos_steps.min(dim).saturating_mul(dim), 8)
    } else {
        0
    };
    top.max(trace).max(density)
}

/// Computes what `opts` asks for; `progress` is told `(done, planned)` products.
pub fn compute(
    op: &CurvatureOperator,
    opts: &SpectrumOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Spectrum, Error> {
    let matrix = AsSymmetric(op);
    let dim = op.dim();
    if let Some(k) = opts.top {
        if k == 0 || k > dim {
            return Err(Error::Invalid(format!(
                "--top {k}: must be between 1 and the number of parameters, {dim}"
            )));
        }
    }
    ensure_fits(
        format!("the vectors of the spectrum of {dim} parameters"),
        vectors_bytes(opts, dim, op.dtype()),
    )?;
    let planned = planned_products(opts, dim);
    let mut done = 0;
    let mut result = Spectrum {
        top_eigenvalues: None,
        trace: None,
        density: None,
        products: 0,
    };
    if let Some(k) = opts.top {
        let mut report = |d: usize, _: usize| progress(done + d, planned);
        let eig = top_eigen_with(op, k, 1e-6, opts.seed, &[], Progress::new(&mut report))?;
        done += eig.products;
        result.top_eigenvalues = Some(eig.values);
    }
    if opts.trace {
        let options = TraceOptions {
            products: opts.trace_products.max(3),
            seed: opts.seed,
            ..TraceOptions::default()
        };
        let mut report = |d: usize, _: usize| progress(done + d, planned);
        let est = hutch_plus_plus(&matrix, &options, Progress::new(&mut report))?;
        done += est.products;
        result.trace = Some((est.estimate, est.stderr));
    }
    if opts.density {
        let options = SlqOptions {
            num_probes: opts.density_probes,
            lanczos_steps: opts.lanczos_steps.min(dim),
            seed: opts.seed,
            ..SlqOptions::default()
        };
        let mut report = |d: usize, _: usize| progress(done + d, planned);
        let density = slq_density(&matrix, &options, Progress::new(&mut report))?;
        done += density.products;
        result.density = Some((density.grid, density.values));
    }
    progress(done, done);
    result.products = done;
    Ok(result)
}

impl Spectrum {
    /// The JSON document of INTERFACES.md (`top_eigenvalues`, `trace`,
    /// `density`), plus the curvature name, dimension and products used.
    pub fn to_json(&self, curvature: &str, dim: usize) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "curvature": curvature,
            "dimension": dim,
            "matrix_vector_products": self.products,
        });
        if let Some(v) = &self.top_eigenvalues {
            doc["top_eigenvalues"] = serde_json::json!(v);
        }
        if let Some((estimate, stderr)) = self.trace {
            doc["trace"] = serde_json::json!({ "estimate": estimate, "stderr": stderr });
        }
        if let Some((grid, values)) = &self.density {
            doc["density"] = serde_json::json!({ "grid": grid, "values": values });
        }
        doc
    }

    /// Writes the JSON document to `json` and its plot to `svg`.
    pub fn write(&self, json: &Path, svg: &Path, curvature: &str, dim: usize) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(&self.to_json(curvature, dim))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let empty: &[f64] = &[];
        let (grid, values) = self
            .density
            .as_ref()
            .map_or((empty, empty), |(g, v)| (g.as_slice(), v.as_slice()));
        let markers = self.top_eigenvalues.as_deref().unwrap_or(&[]);
        let title = format!("{curvature} spectrum (dimension {dim})");
        let plot = Plot {
            title: &title,
            x_label: "eigenvalue",
            y_label: if self.density.is_some() {
                "density"
            } else {
                ""
            },
            series: if grid.is_empty() {
                vec![]
            } else {
                vec![Series {
                    x: grid,
                    y: values,
                    color: "#1f77b4",
                }]
            },
            markers,
            log_y: self.density.is_some(),
        }
        .to_svg();
        for (path, text) in [(json, text), (svg, plot)] {
            std::fs::write(path, text)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }
}
