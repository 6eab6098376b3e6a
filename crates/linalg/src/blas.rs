//! Dense kernels on column-major blocks: products through `faer`, and vector helpers.

use faer::linalg::matmul::matmul as faer_matmul;
use faer::{get_global_parallelism, Accum, MatMut, MatRef, Par};
use secondo_tensor::avx2_kernel;

/// How a product is written into its output.
#[derive(Clone, Copy)]
enum Write {
    Replace,
    Subtract,
}

/// faer's parallelism for a product with `m×n` outputs. None for a
/// matrix-vector product: faer splits its inner dimension into one part per
/// thread and sums the parts, so other pools would round otherwise
/// (docs/ARCHITECTURE.md, "Determinism"). Its other products split only the
/// output among threads, each element summed in the same order, and keep
/// the pool.
fn parallelism(m: usize, n: usize) -> Par {
    if m == 1 || n == 1 {
        Par::Seq
    } else {
        get_global_parallelism()
    }
}

fn product(out: &mut [f64], a: MatRef<'_, f64>, b: MatRef<'_, f64>, write: Write) {
    let (m, n) = (a.nrows(), b.ncols());
    if m == 0 || n == 0 {
        return;
    }
    let dst = MatMut::from_column_major_slice_mut(out, m, n);
    let (accum, alpha) = match write {
        Write::Replace => (Accum::Replace, 1.0),
        Write::Subtract => (Accum::Add, -1.0),
    };
    faer_matmul(dst, accum, a, b, alpha, parallelism(m, n));
}

/// `out (m×n) = A (m×k) · B (k×n)`.
pub(crate) fn matmul(out: &mut [f64], a: &[f64], b: &[f64], m: usize, k: usize, n: usize) {
    let a = MatRef::from_column_major_slice(a, m, k);
    let b = MatRef::from_column_major_slice(b, k, n);
    product(out, a, b, Write::Replace);
}

/// An element type a tall block (a Krylov basis) is stored in: `f64`, or
/// `f32` for half the memory traffic of the passes over it. Arithmetic is
/// in `f64` either way.
pub(crate) trait Stored: Copy + Default + Send + Sync + 'static {
    /// The orthogonality kept between a basis' vectors stored in this type
    /// (see `ortho::Basis::reorthogonalize`): √ε for f64; for f32, 1e-6,
    /// well above its rounding (6e-8) yet far below its √ε (3e-4), at which
    /// residuals stalled near 1e-4 on clustered spectra.
    const SEMI_ORTHOGONAL: f64;
    /// The value rounded to this type.
    fn from_f64(x: f64) -> Self;
    /// The value as `f64`.
    fn to_f64(self) -> f64;
    /// The slice itself when the type is `f64`.
    fn as_f64(s: &[Self]) -> Option<&[f64]>;
    /// `out (m×n) = A (m×k) · B (k×n)`, rounded to this type.
    fn combine(out: &mut [Self], a: &[Self], b: &[f64], m: usize, k: usize, n: usize);
}

impl Stored for f64 {
    const SEMI_ORTHOGONAL: f64 = 1.4901161193847656e-8;
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn as_f64(s: &[Self]) -> Option<&[f64]> {
        Some(s)
    }
    fn combine(out: &mut [Self], a: &[Self], b: &[f64], m: usize, k: usize, n: usize) {
        matmul(out, a, b, m, k, n);
    }
}

impl Stored for f32 {
    const SEMI_ORTHOGONAL: f64 = 1e-6;
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn as_f64(_: &[Self]) -> Option<&[f64]> {
        None
    }
    fn combine(out: &mut [Self], a: &[Self], b: &[f64], m: usize, k: usize, n: usize) {
        if m == 0 || n == 0 {
            return;
        }
        let b: Vec<f32> = b.iter().map(|&x| x as f32).collect();
        let dst = MatMut::from_column_major_slice_mut(out, m, n);
        let a = MatRef::from_column_major_slice(a, m, k);
        let b = MatRef::from_column_major_slice(&b, k, n);
        faer_matmul(dst, Accum::Replace, a, b, 1.0, parallelism(m, n));
    }
}

/// Rows per parallel task in the single-vector kernels.
const ROW_BLOCK: usize = 1 << 15;

/// `out (m×n) −= A (m×k) · B (k×n)`.
pub(crate) fn matmul_sub<S: Stored>(
    out: &mut [f64],
    a: &[S],
    b: &[f64],
    m: usize,
    k: usize,
    n: usize,
) {
    match S::as_f64(a) {
        Some(a) if n > 1 => {
            let a = MatRef::from_column_major_slice(a, m, k);
            let b = MatRef::from_column_major_slice(b, k, n);
            product(out, a, b, Write::Subtract);
        }
        _ => {
            let columns = out.chunks_exact_mut(m.max(1)).zip(b.chunks_exact(k.max(1)));
            for (column, coef) in columns.take(n) {
                subtract_from_vector(column, a, coef, m);
            }
        }
    }
}

/// `out (m) −= A (m×k) · b (k)`: axpys over the columns of the tall, thin A
/// stream it once, without a general product's overhead, skipping columns
/// with a zero coefficient; row blocks run on the rayon pool.
fn subtract_from_vector<S: Stored>(out: &mut [f64], a: &[S], b: &[f64], m: usize) {
    use rayon::prelude::*;
    let rows = ROW_BLOCK.min(m.max(1));
    let used: Vec<usize> = (0..b.len()).filter(|&j| b[j] != 0.0).collect();
    let coef: Vec<f64> = used.iter().map(|&j| b[j]).collect();
    out[..m]
        .par_chunks_mut(rows)
        .enumerate()
        .for_each(|(blk, part)| {
            let range = blk * rows..blk * rows + part.len();
            let cols: Vec<&[S]> = used
                .iter()
                .map(|&j| &a[j * m..(j + 1) * m][range.clone()])
                .collect();
            subtract_combination(part, &cols, &coef);
        });
}

/// `out (p×q) = Aᵀ · B` for `A` of shape `n×p` and `B` of shape `n×q`.
pub(crate) fn matmul_tn<S: Stored>(
    out: &mut [f64],
    a: &[S],
    b: &[f64],
    n: usize,
    p: usize,
    q: usize,
) {
    match S::as_f64(a) {
        Some(a) if q > 1 => {
            let a = MatRef::from_column_major_slice(a, n, p);
            let b = MatRef::from_column_major_slice(b, n, q);
            product(out, a.transpose(), b, Write::Replace);
        }
        _ => {
            let columns = out.chunks_exact_mut(p.max(1)).zip(b.chunks_exact(n.max(1)));
            for (o, column) in columns.take(q) {
                project_vector(o, a, column, n, p);
            }
        }
    }
}

/// `out (p) = Aᵀ b` for `A` of shape `n×p`: row blocks on the rayon pool,
/// each taking the partial dot products of every column of A with its block
/// of b, so that b is read once (a dot product per column re-read it p times).
/// The blocks' partial sums are added in block order, not in a reduction tree
/// shaped by the pool's work splitting: the same bits on any thread count
/// (docs/ARCHITECTURE.md, "Determinism").
fn project_vector<S: Stored>(out: &mut [f64], a: &[S], b: &[f64], n: usize, p: usize) {
    use rayon::prelude::*;
    let rows = ROW_BLOCK.min(n.max(1));
    let partial = |blk: usize| -> Vec<f64> {
        let range = blk * rows..((blk + 1) * rows).min(n);
        let cols: Vec<&[S]> = a
            .chunks_exact(n.max(1))
            .take(p)
            .map(|col| &col[range.clone()])
            .collect();
        let mut sums = vec![0.0; p];
        dots(&cols, &b[range], &mut sums);
        sums
    };
    let partials: Vec<Vec<f64>> = (0..n.div_ceil(rows)).into_par_iter().map(partial).collect();
    let out = &mut out[..p];
    out.fill(0.0);
    for sums in partials {
        out.iter_mut().zip(&sums).for_each(|(s, t)| *s += t);
    }
}

/// The dot product `xᵀy` (over the shorter length): [`dots`] with one column.
pub(crate) fn dot(x: &[f64], y: &[f64]) -> f64 {
    let len = x.len().min(y.len());
    let mut out = [0.0];
    dots(&[&x[..len]], &y[..len], &mut out);
    out[0]
}

/// Columns handled together by [`subtract_combination`]: each pass over `y`
/// then serves four columns.
const GROUP: usize = 4;

avx2_kernel! {
    /// `out[j] = cols[j]ᵀ y` for columns of `y`'s length (a block of `y`
    /// small enough to stay in cache while the columns stream past).
    fn dots<S: Stored>(cols: &[&[S]], y: &[f64], out: &mut [f64]) {
        // Eight independent partial sums per column let the loop vectorize;
        // one running sum is a serial chain of additions (measured 16 vs 3.5
        // GB/s here).
        const LANES: usize = 8;
        let len = y.len();
        let lanes = len / LANES * LANES;
        for (o, col) in out.iter_mut().zip(cols) {
            let mut acc = [0.0; LANES];
            let zipped = y[..lanes]
                .chunks_exact(LANES)
                .zip(col[..lanes].chunks_exact(LANES));
            for (yc, x) in zipped {
                for l in 0..LANES {
                    acc[l] += x[l].to_f64() * yc[l];
                }
            }
            let tail: f64 = (lanes..len).map(|i| col[i].to_f64() * y[i]).sum();
            *o = acc.iter().sum::<f64>() + tail;
        }
    }
}

avx2_kernel! {
    /// `y −= Σ_j coef[j] · cols[j]`.
    fn subtract_combination<S: Stored>(y: &mut [f64], cols: &[&[S]], coef: &[f64]) {
        let len = y.len();
        let mut groups = cols.chunks_exact(GROUP).zip(coef.chunks_exact(GROUP));
        for (g, c) in groups.by_ref() {
            let (c0, c1, c2, c3) = (&g[0][..len], &g[1][..len], &g[2][..len], &g[3][..len]);
            for (i, yi) in y.iter_mut().enumerate() {
                *yi -= c[0] * c0[i].to_f64()
                    + c[1] * c1[i].to_f64()
                    + c[2] * c2[i].to_f64()
                    + c[3] * c3[i].to_f64();
            }
        }
        let done = cols.len() / GROUP * GROUP;
        for (col, &c) in cols[done..].iter().zip(&coef[done..]) {
            for (yi, x) in y.iter_mut().zip(&col[..len]) {
                *yi -= c * x.to_f64();
            }
        }
    }
}

/// The Euclidean norm `‖x‖`.
pub(crate) fn norm(x: &[f64]) -> f64 {
    dot(x, x).sqrt()
}

/// `y += alpha · x`.
pub(crate) fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `x *= alpha`.
pub(crate) fn scale(alpha: f64, x: &mut [f64]) {
    for xi in x {
        *xi *= alpha;
    }
}

/// `Σᵢ ln xᵢ` of positive numbers with one logarithm per 64 of them: each
/// normal `x = m·2ᵉ` (`m ∈ [1, 2)`) adds `e` to an exponent sum and
/// multiplies `m` into a product below `2⁶⁴`, so that the logarithm of a
/// diagonal or eigenvalue determinant costs a multiplication per value (a
/// marginal-likelihood step is otherwise mostly logarithms). The product's
/// rounding, at most 64 half-ulps, bounds the error at `64·ε` per 64
/// values, as summing their logarithms does. Values that are not positive
/// normal numbers take their own logarithm (`NaN`, `-∞` as `ln` gives).
///
/// ```
/// let x: [f64; 4] = [0.5, 3.0, 1e-300, 7.25];
/// let direct: f64 = x.iter().map(|v| v.ln()).sum();
/// assert!((secondo_linalg::sum_ln(&x) - direct).abs() < 1e-12);
/// ```
pub fn sum_ln(x: &[f64]) -> f64 {
    const MANTISSA: u64 = (1 << 52) - 1;
    const ONE: u64 = 1023 << 52;
    let mut total = 0.0;
    for chunk in x.chunks(64) {
        let (mut product, mut exponent) = (1.0f64, 0i64);
        for &v in chunk {
            if v.is_normal() && v > 0.0 {
                let bits = v.to_bits();
                exponent += (bits >> 52) as i64 - 1023;
                product *= f64::from_bits((bits & MANTISSA) | ONE);
            } else {
                total += v.ln();
            }
        }
        total += product.ln() + exponent as f64 * std::f64::consts::LN_2;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_ln_is_the_sum_of_logarithms() {
        let x: Vec<f64> = (0..1000)
            .map(|i| (i as f64 * 0.37).sin().abs() * 10f64.powi(i % 40 - 20) + 1e-310)
            .collect();
        let direct: f64 = x.iter().map(|v| v.ln()).sum();
        assert!(
            (sum_ln(&x) - direct).abs() < 1e-10 * direct.abs(),
            "{} {direct}",
            sum_ln(&x)
        );
        assert!(sum_ln(&[1.0, 0.0]).is_infinite());
        assert!(sum_ln(&[-1.0]).is_nan());
        assert_eq!(sum_ln(&[]), 0.0);
    }

    #[test]
    fn products_match_hand_computation() {
        // A = [[1, 3], [2, 4]] column-major, B = [[1], [1]].
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [1.0, 1.0];
        let mut out = [0.0; 2];
        matmul(&mut out, &a, &b, 2, 2, 1);
        assert_eq!(out, [4.0, 6.0]);
        matmul_sub(&mut out, &a, &b, 2, 2, 1);
        assert_eq!(out, [0.0, 0.0]);
        matmul_tn(&mut out, &a, &b, 2, 2, 1);
        assert_eq!(out, [3.0, 7.0]);
    }

    #[test]
    fn vector_helpers() {
        let mut y = [1.0, 2.0];
        axpy(2.0, &[1.0, -1.0], &mut y);
        assert_eq!(y, [3.0, 0.0]);
        scale(0.5, &mut y);
        assert_eq!(y, [1.5, 0.0]);
        assert_eq!(norm(&[3.0, 4.0]), 5.0);
    }
}

/// A row-major matrix as stored, read as it is or transposed.
#[derive(Clone, Copy, Debug)]
pub struct RowMajor<'a> {
    values: &'a [f64],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<'a> RowMajor<'a> {
    /// The `rows × cols` row-major matrix `values`.
    pub fn new(values: &'a [f64], rows: usize, cols: usize) -> RowMajor<'a> {
        assert_eq!(values.len(), rows * cols, "a {rows}×{cols} matrix");
        RowMajor {
            values,
            rows,
            cols,
            transposed: false,
        }
    }

    /// The same matrix read transposed.
    pub fn t(self) -> RowMajor<'a> {
        RowMajor {
            transposed: !self.transposed,
            ..self
        }
    }

    fn view(&self) -> MatRef<'a, f64> {
        let m = MatRef::from_row_major_slice(self.values, self.rows, self.cols);
        match self.transposed {
            true => m.transpose(),
            false => m,
        }
    }
}

/// The row-major product `A B` of two row-major matrices (either read
/// transposed), straight from their slices: the small `f64` products of
/// the second-order preconditioners, where copying the operands into
/// tensors for an einsum took as long as the product.
///
/// ```
/// use secondo_linalg::{row_major_product, RowMajor};
/// let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 × 3
/// let b = [1.0, 0.0, 1.0]; // 3 × 1
/// assert_eq!(row_major_product(RowMajor::new(&a, 2, 3), RowMajor::new(&b, 3, 1)), vec![4.0, 10.0]);
/// assert_eq!(row_major_product(RowMajor::new(&a, 2, 3).t(), RowMajor::new(&[1.0, 1.0], 2, 1)), vec![5.0, 7.0, 9.0]);
/// ```
pub fn row_major_product(a: RowMajor<'_>, b: RowMajor<'_>) -> Vec<f64> {
    let mut out = vec![0.0; a.view().nrows() * b.view().ncols()];
    product_into(&mut out, a, b, Accum::Replace);
    out
}

/// `out += A B` into the row-major `out`, as [`row_major_product`]
/// computes `A B`: sums of products over batches without a temporary per
/// batch.
///
/// ```
/// use secondo_linalg::{row_major_product_add, RowMajor};
/// let mut out = vec![1.0];
/// row_major_product_add(&mut out, RowMajor::new(&[1.0, 2.0], 1, 2), RowMajor::new(&[3.0, 4.0], 2, 1));
/// assert_eq!(out, vec![12.0]);
/// ```
pub fn row_major_product_add(out: &mut [f64], a: RowMajor<'_>, b: RowMajor<'_>) {
    product_into(out, a, b, Accum::Add);
}

fn product_into(out: &mut [f64], a: RowMajor<'_>, b: RowMajor<'_>, accum: Accum) {
    let (a, b) = (a.view(), b.view());
    assert_eq!(a.ncols(), b.nrows(), "the inner dimensions of a product");
    let (m, n) = (a.nrows(), b.ncols());
    assert_eq!(out.len(), m * n, "a {m}×{n} product");
    if m == 0 || n == 0 {
        return;
    }
    let dst = MatMut::from_row_major_slice_mut(out, m, n);
    faer_matmul(dst, accum, a, b, 1.0, parallelism(m, n));
}
