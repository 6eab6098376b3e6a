//! Dense kernels on column-major blocks: products through `faer`, and vector helpers.

use faer::linalg::matmul::matmul as faer_matmul;
use faer::{get_global_parallelism, Accum, MatMut, MatRef};

/// How a product is written into its output.
#[derive(Clone, Copy)]
enum Write {
    Replace,
    Subtract,
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
    faer_matmul(dst, accum, a, b, alpha, get_global_parallelism());
}

/// `out (m×n) = A (m×k) · B (k×n)`.
pub(crate) fn matmul(out: &mut [f64], a: &[f64], b: &[f64], m: usize, k: usize, n: usize) {
    let a = MatRef::from_column_major_slice(a, m, k);
    let b = MatRef::from_column_major_slice(b, k, n);
    product(out, a, b, Write::Replace);
}

/// Rows per parallel task in the single-vector kernels.
const ROW_BLOCK: usize = 1 << 15;

/// `out (m×n) −= A (m×k) · B (k×n)`.
pub(crate) fn matmul_sub(out: &mut [f64], a: &[f64], b: &[f64], m: usize, k: usize, n: usize) {
    if n == 1 {
        // One vector (a Lanczos step): axpys over the columns of the tall,
        // thin A stream it once, without the general product's overhead;
        // row blocks run on the rayon pool.
        use rayon::prelude::*;
        let rows = ROW_BLOCK.min(m.max(1));
        out[..m]
            .par_chunks_mut(rows)
            .enumerate()
            .for_each(|(blk, part)| {
                let start = blk * rows;
                for (col, &coef) in a.chunks_exact(m.max(1)).zip(b).take(k) {
                    axpy(-coef, &col[start..start + part.len()], part);
                }
            });
        return;
    }
    let a = MatRef::from_column_major_slice(a, m, k);
    let b = MatRef::from_column_major_slice(b, k, n);
    product(out, a, b, Write::Subtract);
}

/// `out (p×q) = Aᵀ · B` for `A` of shape `n×p` and `B` of shape `n×q`.
pub(crate) fn matmul_tn(out: &mut [f64], a: &[f64], b: &[f64], n: usize, p: usize, q: usize) {
    if q == 1 {
        // One vector: a dot product per column of A (see `matmul_sub`), the
        // columns shared out over the rayon pool.
        use rayon::prelude::*;
        out[..p]
            .par_iter_mut()
            .zip(a.par_chunks_exact(n.max(1)))
            .for_each(|(o, col)| *o = dot(col, &b[..n]));
        return;
    }
    let a = MatRef::from_column_major_slice(a, n, p);
    let b = MatRef::from_column_major_slice(b, n, q);
    product(out, a.transpose(), b, Write::Replace);
}

/// The dot product `xᵀy`.
pub(crate) fn dot(x: &[f64], y: &[f64]) -> f64 {
    // Eight independent partial sums let the loop vectorize; one running sum
    // is a serial chain of additions (measured 16 vs 3.5 GB/s here).
    const LANES: usize = 8;
    let len = x.len().min(y.len());
    let (x, y) = (&x[..len], &y[..len]);
    let mut acc = [0.0; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail: f64 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += a[l] * b[l];
        }
    }
    acc.iter().sum::<f64>() + tail
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

#[cfg(test)]
mod tests {
    use super::*;

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
