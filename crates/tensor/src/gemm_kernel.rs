use std::time::Instant;

use rayon::prelude::*;

use crate::{DType, Element, Tensor, TensorError};

/// A strided matrix operand: element `(r, c)` lives at `ptr + r * rs + c * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    pub rs: isize,
    pub cs: isize,
}

impl Strided {
    /// The same memory read as the transposed matrix.
    fn t(self) -> Strided {
        Strided {
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// Work (m·n·k) above which one product is split into blocks.
const PARALLEL_WORK: usize = 48 * 48 * 48;

/// Work per block beyond which a split product takes more than two blocks:
/// blocks of less work cost more in packing the shared operand than they
/// gain in balance (measured in docs/PERFORMANCE.md, "Determinism").
const BLOCK_WORK: usize = 1 << 22;

/// The most blocks one product is split into.
const MAX_BLOCKS: usize = 16;

/// The fewest rows or columns of a block, and the multiple that every
/// block's width is rounded up to.
const MIN_BLOCK: usize = 16;

/// How one product is split into single-threaded products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Blocks of this many output columns.
    Columns(usize),
    /// Blocks of this many output rows.
    Rows(usize),
    /// This many slices of the summed dimension, each a product of the
    /// whole output, added in slice order: for long sums into few outputs
    /// (a convolution's weight gradient sums over every sample and position),
    /// where output blocks would each pack the whole shared operand again.
    Depth(usize),
}

/// How a product of `m×n` outputs over `k` is split: along the summed
/// dimension when it is much longer than the output's, else along the larger
/// output dimension. A function of the shape alone: the `gemm` crate's
/// summation order depends on the sizes it is given, so a split by the
/// pool's size would give other bits on other thread counts
/// (docs/ARCHITECTURE.md, "Determinism"); this way every pool runs the same
/// single-threaded products.
fn split(m: usize, n: usize, k: usize) -> Option<Split> {
    let work = m * n * k;
    if work < PARALLEL_WORK {
        return None;
    }
    let wanted = (work / BLOCK_WORK).clamp(2, MAX_BLOCKS);
    // A power of two spreads evenly over pools of 2, 4, 8... threads.
    let pow2 = |count: usize| 1 << count.ilog2();
    if k >= DEPTH_RATIO * m.max(n) {
        return Some(Split::Depth(pow2(wanted.min(k / MIN_DEPTH).max(2))));
    }
    let split_n = n >= m;
    let len = if split_n { n } else { m };
    let wanted = wanted.min(len / MIN_BLOCK);
    if wanted < 2 {
        return None;
    }
    let block = len.div_ceil(pow2(wanted)).next_multiple_of(MIN_BLOCK);
    Some(if split_n {
        Split::Columns(block)
    } else {
        Split::Rows(block)
    })
}

/// A product whose sum is this many times longer than its larger output
/// dimension is split along the sum ([`Split::Depth`]).
const DEPTH_RATIO: usize = 4;

/// The shortest slice of the sum in a [`Split::Depth`].
const MIN_DEPTH: usize = 256;

/// `dst[m×n] = lhs[m×k] · rhs[k×n]` through the `gemm` crate.
///
/// # Safety
/// Every pointer with its strides must address valid, non-overlapping memory
/// for the given sizes, and `dst` must not alias the operands.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    d: Strided,
    lhs: *const T,
    l: Strided,
    rhs: *const T,
    r: Strided,
    allow_parallel: bool,
) {
    match split(m, n, k).filter(|_| allow_parallel) {
        None => single(m, n, k, dst, d, lhs, l, rhs, r),
        Some(Split::Depth(parts)) => depth_split(parts, m, n, k, dst, d, lhs, l, rhs, r),
        Some(Split::Columns(block)) => column_blocks(block, m, n, k, dst, d, lhs, l, rhs, r),
        // Blocks of rows of `dst` are blocks of columns of `dstᵀ = rhsᵀ · lhsᵀ`.
        Some(Split::Rows(block)) => {
            column_blocks(block, n, m, k, dst, d.t(), rhs, r.t(), lhs, l.t())
        }
    }
}

/// [`Split::Columns`]: blocks of `block` columns of `dst` (and `rhs`), each
/// a single-threaded product on the pool.
///
/// # Safety
/// As for [`gemm_into`].
#[allow(clippy::too_many_arguments)]
unsafe fn column_blocks<T: Element>(
    block: usize,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    d: Strided,
    lhs: *const T,
    l: Strided,
    rhs: *const T,
    r: Strided,
) {
    let (dst, lhs, rhs) = (dst as usize, lhs as usize, rhs as usize);
    blocks(n, block, |start, size| {
        // SAFETY: a block of columns of `dst` and `rhs` (caller's contract).
        unsafe {
            single(
                m,
                size,
                k,
                (dst as *mut T).offset(start * d.cs),
                d,
                lhs as *const T,
                l,
                (rhs as *const T).offset(start * r.cs),
                r,
            )
        }
    })
}

/// Runs `block(start, size)` for consecutive blocks of `len` on the pool:
/// each block is a single-threaded product, measured faster than the crate's
/// own parallel mode at the sizes of network layers (docs/PERFORMANCE.md).
fn blocks(len: usize, block: usize, run: impl Fn(isize, usize) + Sync) {
    rayon::scope(|s| {
        for start in (0..len).step_by(block) {
            let run = &run;
            s.spawn(move |_| run(start as isize, block.min(len - start)));
        }
    });
}

/// [`Split::Depth`]: `parts` slices of the sum, each into its own buffer on
/// the pool, then added into `dst` in slice order.
///
/// # Safety
/// As for [`gemm_into`].
#[allow(clippy::too_many_arguments)]
unsafe fn depth_split<T: Element>(
    parts: usize,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    d: Strided,
    lhs: *const T,
    l: Strided,
    rhs: *const T,
    r: Strided,
) {
    let slice = k.div_ceil(parts);
    let mut partial = vec![T::zero(); parts * m * n];
    let (lhs, rhs) = (lhs as usize, rhs as usize);
    let rows = Strided {
        rs: n as isize,
        cs: 1,
    };
    partial
        .par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(p, out)| {
            let start = p * slice;
            let len = slice.min(k.saturating_sub(start));
            // SAFETY: a slice of the summed dimension of both operands, into a
            // buffer of this part alone.
            unsafe {
                let off = start as isize;
                single(
                    m,
                    n,
                    len,
                    out.as_mut_ptr(),
                    rows,
                    (lhs as *const T).offset(off * l.cs),
                    l,
                    (rhs as *const T).offset(off * r.rs),
                    r,
                )
            }
        });
    let (first, rest) = partial.split_at_mut(m * n);
    for part in rest.chunks(m * n) {
        first.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
    }
    for i in 0..m {
        for j in 0..n {
            *dst.offset(i as isize * d.rs + j as isize * d.cs) = first[i * n + j];
        }
    }
}

/// One single-threaded product `dst = lhs · rhs` (`k = 0` writes zeros).
///
/// # Safety
/// As for [`gemm_into`].
#[allow(clippy::too_many_arguments)]
unsafe fn single<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    d: Strided,
    lhs: *const T,
    l: Strided,
    rhs: *const T,
    r: Strided,
) {
    product(m, n, k, dst, d, lhs, l, rhs, r, false)
}

/// One single-threaded product `dst = lhs · rhs`, or `dst += lhs · rhs`
/// when `accumulate`.
///
/// # Safety
/// As for [`gemm_into`]; with `accumulate`, `dst` must hold initialized values.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    d: Strided,
    lhs: *const T,
    l: Strided,
    rhs: *const T,
    r: Strided,
    accumulate: bool,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        d.cs,
        d.rs,
        accumulate,
        lhs,
        l.cs,
        l.rs,
        rhs,
        r.cs,
        r.rs,
        if accumulate { T::one() } else { T::zero() },
        T::one(),
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Symmetric products at most this wide are one GEMM (diagonal blocks).
const GRAM_LEAF: usize = 96;

/// `dst[m×m] = lhs[m×k] · lhs[m×k]ᵀ`, a symmetric (Gram) product at about
/// half the multiply-adds: the strictly lower block triangle by GEMMs over
/// recursive halves (`C₂₁ = A₂A₁ᵀ`, then `C₁₁` and `C₂₂` alike), mirrored
/// into the upper one, so the result is exactly symmetric.
///
/// # Safety
/// As for [`gemm_into`]: `lhs` with its strides addresses a valid `m×k`
/// matrix, `dst` a valid `m×m` one that does not alias it.
pub(crate) unsafe fn gram_into<T: Element>(
    m: usize,
    k: usize,
    dst: *mut T,
    d: Strided,
    lhs: *const T,
    l: Strided,
    allow_parallel: bool,
) {
    gram_lower::<T>(m, k, dst as usize, d, lhs as usize, l, allow_parallel);
    // Tile by tile, so that both the rows read and the columns written stay in cache.
    const TILE: usize = 32;
    for i0 in (0..m).step_by(TILE) {
        for j0 in (0..=i0).step_by(TILE) {
            for i in i0..(i0 + TILE).min(m) {
                for j in j0..(j0 + TILE).min(i) {
                    let (i, j) = (i as isize, j as isize);
                    *dst.offset(j * d.rs + i * d.cs) = *dst.offset(i * d.rs + j * d.cs);
                }
            }
        }
    }
}

/// The lower block triangle of `lhs · lhsᵀ` (pointers passed as addresses so
/// the halves can run on other threads).
unsafe fn gram_lower<T: Element>(
    m: usize,
    k: usize,
    dst: usize,
    d: Strided,
    lhs: usize,
    l: Strided,
    parallel: bool,
) {
    let transposed = l.t();
    if m <= GRAM_LEAF {
        gemm_into(
            m,
            m,
            k,
            dst as *mut T,
            d,
            lhs as *const T,
            l,
            lhs as *const T,
            transposed,
            parallel,
        );
        return;
    }
    let h = (m / 2).next_multiple_of(16);
    let (dst_p, lhs_p) = (dst as *mut T, lhs as *const T);
    let lower = dst_p.offset(h as isize * d.rs) as usize;
    let second = lhs_p.offset(h as isize * l.rs) as usize;
    let corner = dst_p.offset(h as isize * (d.rs + d.cs)) as usize;
    // SAFETY (all three): disjoint blocks of `dst`, rows of `lhs` within `m`.
    let off_diagonal = || unsafe {
        gemm_into(
            m - h,
            h,
            k,
            lower as *mut T,
            d,
            second as *const T,
            l,
            lhs as *const T,
            transposed,
            parallel,
        )
    };
    let first_half = || unsafe { gram_lower::<T>(h, k, dst, d, lhs, l, parallel) };
    let second_half = || unsafe { gram_lower::<T>(m - h, k, corner, d, second, l, parallel) };
    if parallel {
        rayon::join(off_diagonal, || rayon::join(first_half, second_half));
    } else {
        off_diagonal();
        first_half();
        second_half();
    }
}

/// Matrix product of two 2-D tensors.
///
/// ```
/// use secondo_tensor::{matmul, Tensor};
/// let a = Tensor::from_vec(vec![1, 2], vec![1.0f64, 2.0]).unwrap();
/// let b = Tensor::from_vec(vec![2, 1], vec![3.0f64, 4.0]).unwrap();
/// assert_eq!(matmul(&a, &b).unwrap().to_f64_vec(), vec![11.0]);
/// ```
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, TensorError> {
    crate::einsum("ij,jk->ik", &[a, b])
}

/// Measures the GEMM rate (GFLOP/s) of an `n×n×n` product on the whole rayon pool:
/// the best of `repeats` runs after one warm-up.
///
/// ```
/// let rate = secondo_tensor::measure_gemm_gflops(64, secondo_tensor::DType::F32, 2);
/// assert!(rate > 0.0);
/// ```
pub fn measure_gemm_gflops(n: usize, dtype: DType, repeats: usize) -> f64 {
    let a = Tensor::full(vec![n, n], 0.5, dtype);
    let b = Tensor::full(vec![n, n], 0.25, dtype);
    let mut best = f64::INFINITY;
    for i in 0..=repeats {
        let start = Instant::now();
        let c = matmul(&a, &b).expect("square operands");
        let elapsed = start.elapsed().as_secs_f64();
        std::hint::black_box(c);
        if i > 0 {
            best = best.min(elapsed);
        }
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}
