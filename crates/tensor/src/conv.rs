//! Convolutions without their patch matrices: the forward pass, the input
//! gradient and the weight gradient of `unfold` + a contraction, computed
//! image by image on patches that stay in cache.
//!
//! As `unfold` and one product over all samples and positions, a 3×3
//! convolution writes nine copies of its input to memory, reads them back
//! twice and writes (then folds) nine copies of its input gradient: on the
//! 16-channel layers of a CIFAR ResNet, 150 MB of traffic per layer against
//! 0.3 GFLOP. Here each image's patches are unfolded a block of output rows
//! at a time into a buffer that fits the L2 cache, multiplied there, and
//! (for the input gradient) folded straight back, so the only traffic is
//! the operands and the result. The graph keeps the unfused form (its
//! derivatives, per-sample gradients and Kronecker factors read the
//! patches); the executor's `fuse_convolutions` pass swaps these kernels in
//! where nothing else reads the patches.

use std::mem::MaybeUninit;
use std::ops::Range;

use num_traits::Zero;
use rayon::prelude::*;

use crate::gemm_kernel::{product, Strided};
use crate::patches::{fold_image, unfold_image, Columns, Extent};
use crate::{Element, Tensor, TensorError, Window2d};

/// Patch values per block: a block of output rows' patches fits the L2
/// cache with room for the operands (1 MB in f32).
const BLOCK_ELEMENTS: usize = 1 << 18;

/// The geometry of one convolution: image `[C, H, W]`, `O` output channels.
struct Geometry {
    e: Extent,
    cols: Columns,
    window: Window2d,
    images: usize,
    outputs: usize,
}

impl Geometry {
    /// From an image batch `[N, C, H, W]` (or, for the input gradient, its
    /// shape) and the output channels.
    fn of(w: &Window2d, image: &[usize], outputs: usize) -> Result<Geometry, TensorError> {
        let &[images, channels, h, wd] = image else {
            return Err(TensorError::Invalid(format!(
                "a convolution's images are [N, C, H, W], got {image:?}"
            )));
        };
        let out = w.output_size([h, wd]).ok_or_else(|| {
            TensorError::Invalid(format!(
                "a {:?} window does not fit a {h}x{wd} input padded by {:?}",
                w.kernel, w.padding
            ))
        })?;
        let e = Extent {
            channels,
            image: [h, wd],
            out,
            kernel: w.kernel,
        };
        Ok(Geometry {
            cols: Columns::of(w, &e),
            e,
            window: *w,
            images,
            outputs,
        })
    }

    fn positions(&self) -> usize {
        self.e.out[0] * self.e.out[1]
    }

    /// The blocks of output rows each image is processed in: as few as
    /// keep a block within [`BLOCK_ELEMENTS`], of equal size (but the last).
    fn blocks(&self) -> impl Iterator<Item = Range<usize>> {
        let row = (self.e.out[1] * self.e.patch_len()).max(1);
        let rows = self.e.out[0];
        let count = rows.div_ceil((BLOCK_ELEMENTS / row).max(1)).max(1);
        let step = rows.div_ceil(count).max(1);
        (0..rows)
            .step_by(step)
            .map(move |start| start..(start + step).min(rows))
    }

    fn block_len(&self) -> usize {
        self.blocks().next().map_or(0, |r| r.len()) * self.e.out[1] * self.e.patch_len()
    }

    /// Checks a weight `[O, C·KH·KW]`.
    fn check_weight(&self, w: &[usize]) -> Result<(), TensorError> {
        if w != [self.outputs, self.e.patch_len()] {
            return Err(TensorError::Invalid(format!(
                "a convolution's weight is [{}, {}], got {w:?}",
                self.outputs,
                self.e.patch_len()
            )));
        }
        Ok(())
    }

    /// Checks an output gradient `[N, O, OH·OW]`.
    fn check_output(&self, g: &[usize]) -> Result<(), TensorError> {
        if g != [self.images, self.outputs, self.positions()] {
            return Err(TensorError::Invalid(format!(
                "a convolution's output is [{}, {}, {}], got {g:?}",
                self.images,
                self.outputs,
                self.positions()
            )));
        }
        Ok(())
    }

    /// The patches of `rows` of `image` in `buffer`, as initialized values.
    fn unfold<'s, T: Element>(
        &self,
        image: &[T],
        rows: Range<usize>,
        buffer: &'s mut [MaybeUninit<T>],
    ) -> &'s [T] {
        let len = rows.len() * self.e.out[1] * self.e.patch_len();
        let buffer = &mut buffer[..len];
        unfold_image(
            &self.e,
            &self.window,
            &self.cols,
            image,
            buffer,
            T::zero(),
            rows,
        );
        // SAFETY: `unfold_image` wrote every element of the rows' patches.
        unsafe { &*(buffer as *const [MaybeUninit<T>] as *const [T]) }
    }
}

/// A scratch buffer of `n` elements per task.
fn scratch<T: Element>(n: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit` elements need no initialisation; the capacity is `n`.
    unsafe { v.set_len(n) };
    v
}

/// `einsum("nli,oi->nol", unfold(x) as [N, L, C·KH·KW], w)`: the
/// convolution of `x` `[N, C, H, W]` with `w` `[O, C·KH·KW]`, giving
/// `[N, O, OH·OW]`.
///
/// ```
/// use secondo_tensor::{conv_forward, einsum, unfold, Tensor, Window2d};
/// let x = Tensor::from_vec(vec![1, 1, 2, 3], vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
/// let w = Tensor::from_vec(vec![1, 2], vec![1.0f64, -1.0]).unwrap();
/// let window = Window2d { kernel: [1, 2], stride: [1, 1], padding: [0, 0], dilation: [1, 1] };
/// assert_eq!(conv_forward(&x, &w, &window).unwrap().to_f64_vec(), vec![-1.0; 4]);
/// ```
pub fn conv_forward(x: &Tensor, w: &Tensor, window: &Window2d) -> Result<Tensor, TensorError> {
    let g = Geometry::of(window, x.shape(), w.shape().first().copied().unwrap_or(0))?;
    g.check_weight(w.shape())?;
    let (o, l, i) = (g.outputs, g.positions(), g.e.patch_len());
    crate::dispatch!(x, xv, T => {
        let wv = w.typed::<T>("conv_forward")?;
        let mut out = vec![T::zero(); g.images * o * l];
        if !out.is_empty() {
            out.par_chunks_mut(o * l)
                .zip(xv.par_chunks(g.e.image_len().max(1)))
                .for_each_init(|| scratch::<T>(g.block_len()), |buffer, (out, image)| {
                    for rows in g.blocks() {
                        let start = rows.start * g.e.out[1];
                        let cols = rows.len() * g.e.out[1];
                        let patches = g.unfold(image, rows, buffer);
                        // SAFETY: out[:, start..start + cols] (row stride L) =
                        // w [O, I] · patchesᵀ [I, cols], all within the slices.
                        unsafe {
                            product(
                                o, cols, i,
                                out.as_mut_ptr().add(start), Strided { rs: l as isize, cs: 1 },
                                wv.as_ptr(), Strided { rs: i as isize, cs: 1 },
                                patches.as_ptr(), Strided { rs: 1, cs: i as isize },
                                false,
                            )
                        }
                    }
                });
        }
        Ok(Tensor::from_typed(vec![g.images, o, l], out))
    })
}

/// `fold(einsum("nol,oi->nli", g, w) as [N, OH, OW, C, KH, KW])`: the
/// gradient of [`conv_forward`] in its input, for an output gradient `g`
/// `[N, O, OH·OW]`, onto images of `image` `[N, C, H, W]`.
///
/// ```
/// use secondo_tensor::{conv_input_grad, Tensor, Window2d};
/// let g = Tensor::from_vec(vec![1, 1, 2], vec![1.0f64, 10.0]).unwrap();
/// let w = Tensor::from_vec(vec![1, 2], vec![1.0f64, -1.0]).unwrap();
/// let window = Window2d { kernel: [1, 2], stride: [1, 1], padding: [0, 0], dilation: [1, 1] };
/// let dx = conv_input_grad(&g, &w, &window, &[1, 1, 1, 3]).unwrap();
/// assert_eq!(dx.to_f64_vec(), vec![1.0, 9.0, -10.0]);
/// ```
pub fn conv_input_grad(
    g: &Tensor,
    w: &Tensor,
    window: &Window2d,
    image: &[usize],
) -> Result<Tensor, TensorError> {
    let geo = Geometry::of(window, image, w.shape().first().copied().unwrap_or(0))?;
    geo.check_weight(w.shape())?;
    geo.check_output(g.shape())?;
    let (o, l, i) = (geo.outputs, geo.positions(), geo.e.patch_len());
    crate::dispatch!(g, gv, T => {
        let wv = w.typed::<T>("conv_input_grad")?;
        let mut out = vec![T::zero(); geo.images * geo.e.image_len()];
        if !out.is_empty() {
            out.par_chunks_mut(geo.e.image_len().max(1))
                .zip(gv.par_chunks((o * l).max(1)))
                .for_each_init(|| vec![T::zero(); geo.block_len()], |buffer, (image, gn)| {
                    for rows in geo.blocks() {
                        let start = rows.start * geo.e.out[1];
                        let cols = rows.len() * geo.e.out[1];
                        // SAFETY: buffer [cols, I] = gn[:, start..]ᵀ [cols, O] · w [O, I].
                        unsafe {
                            product(
                                cols, i, o,
                                buffer.as_mut_ptr(), Strided { rs: i as isize, cs: 1 },
                                gn.as_ptr().add(start), Strided { rs: 1, cs: l as isize },
                                wv.as_ptr(), Strided { rs: i as isize, cs: 1 },
                                false,
                            )
                        }
                        fold_image(&geo.e, &geo.window, &geo.cols, buffer, image, rows);
                    }
                });
        }
        Ok(Tensor::from_typed(image.to_vec(), out))
    })
}

/// The most partial sums [`conv_weight_grad`] splits its images into.
const WEIGHT_PARTS: usize = 8;

/// `einsum("nol,nli->oi", g, unfold(x) as [N, L, C·KH·KW])`: the gradient of
/// [`conv_forward`] in its weight, `[O, C·KH·KW]`. The images are split
/// into a number of runs fixed by the batch size (each run's products
/// accumulate in image order, the runs are added in order), so the sum
/// rounds the same on any number of threads.
///
/// ```
/// use secondo_tensor::{conv_weight_grad, Tensor, Window2d};
/// let x = Tensor::from_vec(vec![1, 1, 1, 3], vec![1.0f64, 2.0, 3.0]).unwrap();
/// let g = Tensor::from_vec(vec![1, 1, 2], vec![1.0f64, 10.0]).unwrap();
/// let window = Window2d { kernel: [1, 2], stride: [1, 1], padding: [0, 0], dilation: [1, 1] };
/// assert_eq!(conv_weight_grad(&g, &x, &window).unwrap().to_f64_vec(), vec![21.0, 32.0]);
/// ```
pub fn conv_weight_grad(g: &Tensor, x: &Tensor, window: &Window2d) -> Result<Tensor, TensorError> {
    let outputs = g.shape().get(1).copied().unwrap_or(0);
    let geo = Geometry::of(window, x.shape(), outputs)?;
    geo.check_output(g.shape())?;
    let (o, l, i) = (geo.outputs, geo.positions(), geo.e.patch_len());
    let parts = 1 << geo.images.clamp(1, WEIGHT_PARTS).ilog2();
    let per_part = geo.images.div_ceil(parts).max(1);
    crate::dispatch!(x, xv, T => {
        let gv = g.typed::<T>("conv_weight_grad")?;
        let mut partial = vec![T::zero(); parts * o * i];
        if !partial.is_empty() {
            partial.par_chunks_mut(o * i).enumerate().for_each(|(p, acc)| {
                let mut buffer = scratch::<T>(geo.block_len());
                let images = p * per_part..((p + 1) * per_part).min(geo.images);
                for n in images {
                    let image = &xv[n * geo.e.image_len()..][..geo.e.image_len()];
                    let gn = &gv[n * o * l..][..o * l];
                    for rows in geo.blocks() {
                        let start = rows.start * geo.e.out[1];
                        let cols = rows.len() * geo.e.out[1];
                        let patches = geo.unfold(image, rows, &mut buffer);
                        // SAFETY: acc [O, I] += gn[:, start..] [O, cols] · patches [cols, I].
                        unsafe {
                            product(
                                o, i, cols,
                                acc.as_mut_ptr(), Strided { rs: i as isize, cs: 1 },
                                gn.as_ptr().add(start), Strided { rs: l as isize, cs: 1 },
                                patches.as_ptr(), Strided { rs: i as isize, cs: 1 },
                                true,
                            )
                        }
                    }
                }
            });
        }
        let (first, rest) = partial.split_at_mut(o * i);
        for part in rest.chunks(o * i) {
            first.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
        }
        partial.truncate(o * i);
        Ok(Tensor::from_typed(vec![o, i], partial))
    })
}
