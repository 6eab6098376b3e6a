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
//! the operands and the result. With unit strides there are no patches at
//! all: the image is padded once and each kernel tap is one product of its
//! weight slice with a shifted view of the padded image ([`Padded`]). The graph keeps the unfused form (its
//! derivatives, per-sample gradients and Kronecker factors read the
//! patches); the executor's `fuse_convolutions` pass swaps these kernels in
//! where nothing else reads the patches.

use std::borrow::Cow;
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

/// The fewest channels a unit-stride convolution runs tap by tap with
/// ([`Padded`]): each tap's product sums over the channels only, which on
/// fewer (a first layer's 1 or 3) is slower than unfolding.
const DIRECT_CHANNELS: usize = 16;

/// The most kernel taps a convolution runs tap by tap with: 3×3 kernels
/// gain 2–2.5× over unfolding (16 to 64 channels), 5×5 ones lose in the
/// weight gradient (25 small products per image, measured on 2C2D).
const DIRECT_TAPS: usize = 9;

/// The geometry of one convolution: image `[C, H, W]`, `O` output channels.
struct Geometry {
    e: Extent,
    cols: Columns,
    window: Window2d,
    images: usize,
    outputs: usize,
    /// The layout of the tap-by-tap products, for unit strides.
    direct: Option<Padded>,
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
        let patches = w.unfolded_shape(image)?;
        let out = [patches[1], patches[2]];
        let e = Extent {
            channels,
            image: [h, wd],
            out,
            kernel: w.kernel,
        };
        Ok(Geometry {
            cols: Columns::of(w, &e),
            direct: Padded::suits(w, channels).then(|| Padded::of(w, &e)),
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

    /// The geometry with the unfolding path whatever the channels: for one
    /// image's own weight gradient, one product with its patches (in
    /// cache) is faster than a product per tap.
    fn unfolding(self) -> Geometry {
        Geometry {
            direct: None,
            ..self
        }
    }

    /// The weight `[O, C, KH·KW]` as the kernels read it: taps first,
    /// `[KH·KW, O, C]`, for the tap-by-tap products (each tap's slice a
    /// contiguous matrix), else as it is.
    fn weight_in<'w, T: Element>(&self, w: &'w [T]) -> Cow<'w, [T]> {
        if self.direct.is_none() {
            return Cow::Borrowed(w);
        }
        let (o, c, taps) = self.weight_axes();
        let mut out = Vec::with_capacity(w.len());
        for t in 0..taps {
            out.extend((0..o * c).map(|k| w[k * taps + t]));
        }
        Cow::Owned(out)
    }

    /// Output channels, input channels and taps of the weight.
    fn weight_axes(&self) -> (usize, usize, usize) {
        let taps = self.e.kernel[0] * self.e.kernel[1];
        (self.outputs, self.e.channels, taps)
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

    /// Calls `f(first position, positions, their patches [positions, I])`
    /// for each block of output rows of `image`, unfolded into `buffer`.
    fn each_block<T: Element>(
        &self,
        image: &[T],
        buffer: &mut [MaybeUninit<T>],
        mut f: impl FnMut(usize, usize, &[T]),
    ) {
        for rows in self.blocks() {
            let start = rows.start * self.e.out[1];
            let cols = rows.len() * self.e.out[1];
            f(start, cols, self.unfold(image, rows, buffer));
        }
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

/// The tap-by-tap form of a unit-stride convolution. Each channel of the
/// image is padded into a row-major grid `wp` columns wide (`channel`
/// values apart, so that the last rows' shifted reads stay in the channel);
/// the outputs are computed on the same grid width, `rows × wp` positions
/// of which the first `OW` columns of each row are the convolution's (the
/// others are discarded, and zero in an output gradient). Kernel tap
/// `(a, b)` then reads the image at the fixed offset `a·d·wp + b·d` of
/// each position, so `out += W[:, :, a, b] · padded[:, offset..]` is one
/// product with unit column stride, `K = C`, for each tap.
struct Padded {
    /// Width of the padded grid.
    wp: usize,
    /// Distance between channels in the padded image.
    channel: usize,
    /// The offset of each tap, in `[KH, KW]` order.
    taps: Vec<usize>,
    padding: [usize; 2],
}

impl Padded {
    /// Whether a convolution with window `w` over `channels` runs tap by tap.
    fn suits(w: &Window2d, channels: usize) -> bool {
        w.stride == [1, 1]
            && channels >= DIRECT_CHANNELS
            && w.kernel[0] * w.kernel[1] <= DIRECT_TAPS
    }

    fn of(w: &Window2d, e: &Extent) -> Padded {
        let [ph, pw] = w.padding;
        let [dh, dw] = w.dilation;
        let hp = e.image[0] + 2 * ph;
        let wp = e.image[1] + 2 * pw;
        let taps = (0..e.kernel[0])
            .flat_map(|a| (0..e.kernel[1]).map(move |b| a * dh * wp + b * dw))
            .collect();
        Padded {
            wp,
            channel: hp * wp + (e.kernel[1] - 1) * dw,
            taps,
            padding: w.padding,
        }
    }

    /// Positions on the grid: the output rows, `wp` wide.
    fn grid(&self, e: &Extent) -> usize {
        e.out[0] * self.wp
    }

    /// `image` `[C, H, W]` into `buf` (every value outside it zero).
    fn pad<T: Element>(&self, e: &Extent, image: &[T], buf: &mut [T]) {
        buf.fill(T::zero());
        let [h, w] = e.image;
        for c in 0..e.channels {
            for y in 0..h {
                let at = c * self.channel + (y + self.padding[0]) * self.wp + self.padding[1];
                buf[at..at + w].copy_from_slice(&image[(c * h + y) * w..][..w]);
            }
        }
    }

    /// The padded image's gradient `buf` cropped into `image` `[C, H, W]`.
    fn crop<T: Element>(&self, e: &Extent, buf: &[T], image: &mut [T]) {
        let [h, w] = e.image;
        for c in 0..e.channels {
            for y in 0..h {
                let at = c * self.channel + (y + self.padding[0]) * self.wp + self.padding[1];
                image[(c * h + y) * w..][..w].copy_from_slice(&buf[at..at + w]);
            }
        }
    }

    /// Rows of `OW` outputs per channel in `compact` onto rows of `wp` in
    /// `grid` (the extra columns keep their values).
    fn to_grid<T: Element>(&self, e: &Extent, compact: &[T], grid: &mut [T]) {
        for (k, row) in compact.chunks(e.out[1]).enumerate() {
            grid[k * self.wp..][..row.len()].copy_from_slice(row);
        }
    }

    /// The first `OW` columns of each row of `grid` into `compact`.
    fn off_grid<T: Element>(&self, e: &Extent, grid: &[T], compact: &mut [T]) {
        for (k, row) in compact.chunks_mut(e.out[1]).enumerate() {
            row.copy_from_slice(&grid[k * self.wp..][..row.len()]);
        }
    }
}

/// Per-task buffers: a padded image and its outputs on the grid (unit
/// strides), or a block of rows' patches and their gradients.
struct Scratch<T> {
    patches: Vec<MaybeUninit<T>>,
    padded: Vec<T>,
    /// Outputs on the padded grid, or one block's patch gradients.
    grid: Vec<T>,
}

impl<T: Element> Scratch<T> {
    fn for_geometry(geo: &Geometry) -> Scratch<T> {
        let (padded, grid) = geo.direct.as_ref().map_or((0, geo.block_len()), |d| {
            (geo.e.channels * d.channel, geo.outputs * d.grid(&geo.e))
        });
        let patches = if geo.direct.is_none() {
            geo.block_len()
        } else {
            0
        };
        Scratch {
            patches: crate::buffer::for_writing(patches),
            padded: vec![T::zero(); padded],
            grid: vec![T::zero(); grid],
        }
    }
}

/// A strided matrix view with unit column stride.
fn rows_of(rs: usize) -> Strided {
    Strided {
        rs: rs as isize,
        cs: 1,
    }
}

/// One image's output `out` `[O, L]` from `image` `[C, H, W]` and `w`.
fn forward_image<T: Element>(
    geo: &Geometry,
    image: &[T],
    w: &[T],
    out: &mut [T],
    s: &mut Scratch<T>,
) {
    let (o, l, i) = (geo.outputs, geo.positions(), geo.e.patch_len());
    if let Some(d) = &geo.direct {
        d.pad(&geo.e, image, &mut s.padded);
        let (n, c) = (d.grid(&geo.e), geo.e.channels);
        for (t, &offset) in d.taps.iter().enumerate() {
            // SAFETY: grid [O, n] (+)= W[:, :, tap] [O, C] · padded[:, offset..] [C, n];
            // the padded channels are `channel` apart and hold offset + n values.
            unsafe {
                product(
                    o,
                    n,
                    c,
                    s.grid.as_mut_ptr(),
                    rows_of(n),
                    w.as_ptr().add(t * o * c),
                    rows_of(c),
                    s.padded.as_ptr().add(offset),
                    rows_of(d.channel),
                    t > 0,
                )
            }
        }
        d.off_grid(&geo.e, &s.grid, out);
        return;
    }
    geo.each_block(image, &mut s.patches, |start, cols, patches| {
        // SAFETY: out[:, start..start + cols] (row stride L) = w [O, I] ·
        // patchesᵀ [I, cols], all within the slices.
        unsafe {
            product(
                o,
                cols,
                i,
                out.as_mut_ptr().add(start),
                rows_of(l),
                w.as_ptr(),
                rows_of(i),
                patches.as_ptr(),
                Strided {
                    rs: 1,
                    cs: i as isize,
                },
                false,
            )
        }
    });
}

/// One image's input gradient `image` `[C, H, W]` (zeros on entry) from its
/// output gradient `g` `[O, L]` and `w`.
fn input_grad_image<T: Element>(
    geo: &Geometry,
    g: &[T],
    w: &[T],
    image: &mut [T],
    s: &mut Scratch<T>,
) {
    let (o, l, i) = (geo.outputs, geo.positions(), geo.e.patch_len());
    if let Some(d) = &geo.direct {
        d.to_grid(&geo.e, g, &mut s.grid);
        s.padded.fill(T::zero());
        let (n, c) = (d.grid(&geo.e), geo.e.channels);
        for (t, &offset) in d.taps.iter().enumerate() {
            // SAFETY: padded[:, offset..] [C, n] += W[:, :, tap]ᵀ [C, O] · grid [O, n];
            // each channel's window lies inside its `channel` values.
            unsafe {
                product(
                    c,
                    n,
                    o,
                    s.padded.as_mut_ptr().add(offset),
                    rows_of(d.channel),
                    w.as_ptr().add(t * o * c),
                    Strided {
                        rs: 1,
                        cs: c as isize,
                    },
                    s.grid.as_ptr(),
                    rows_of(n),
                    true,
                )
            }
        }
        d.crop(&geo.e, &s.padded, image);
        return;
    }
    for rows in geo.blocks() {
        let start = rows.start * geo.e.out[1];
        let cols = rows.len() * geo.e.out[1];
        let buffer = &mut s.grid;
        // SAFETY: buffer [cols, I] = g[:, start..]ᵀ [cols, O] · w [O, I].
        unsafe {
            product(
                cols,
                i,
                o,
                buffer.as_mut_ptr(),
                rows_of(i),
                g.as_ptr().add(start),
                Strided {
                    rs: 1,
                    cs: l as isize,
                },
                w.as_ptr(),
                rows_of(i),
                false,
            )
        }
        fold_image(&geo.e, &geo.window, &geo.cols, buffer, image, rows);
    }
}

/// One image's weight gradient added to `acc` `[O, I]`, from its output
/// gradient `g` `[O, L]` and `image`.
fn weight_grad_image<T: Element>(
    geo: &Geometry,
    g: &[T],
    image: &[T],
    acc: WeightGrad<T>,
    s: &mut Scratch<T>,
) {
    let (o, l, i) = (geo.outputs, geo.positions(), geo.e.patch_len());
    if let Some(d) = &geo.direct {
        d.pad(&geo.e, image, &mut s.padded);
        d.to_grid(&geo.e, g, &mut s.grid);
        let (n, c, taps) = (d.grid(&geo.e), geo.e.channels, d.taps.len());
        for (t, &offset) in d.taps.iter().enumerate() {
            // SAFETY: W[:, :, tap] [O, C] (+)= grid [O, n] · padded[:, offset..]ᵀ [n, C];
            // the taps' entries are disjoint and within the O·I of `acc`.
            unsafe {
                product(
                    o,
                    c,
                    n,
                    acc.dst.add(t),
                    Strided {
                        rs: (c * taps) as isize,
                        cs: taps as isize,
                    },
                    s.grid.as_ptr(),
                    rows_of(n),
                    s.padded.as_ptr().add(offset),
                    Strided {
                        rs: 1,
                        cs: d.channel as isize,
                    },
                    acc.add,
                )
            }
        }
        return;
    }
    let mut add = acc.add;
    geo.each_block(image, &mut s.patches, |start, cols, patches| {
        // SAFETY: acc [O, I] (+)= g[:, start..] [O, cols] · patches [cols, I].
        unsafe {
            product(
                o,
                i,
                cols,
                acc.dst,
                rows_of(i),
                g.as_ptr().add(start),
                rows_of(l),
                patches.as_ptr(),
                rows_of(i),
                add,
            )
        }
        add = true;
    });
}

/// Where [`weight_grad_image`] writes an image's weight gradient `[O,
/// C·KH·KW]`: `dst` points to that many elements, initialized if `add`
/// (the gradient is then added to them, else it overwrites them).
struct WeightGrad<T> {
    dst: *mut T,
    add: bool,
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
    let geo = Geometry::of(window, x.shape(), w.shape().first().copied().unwrap_or(0))?;
    geo.check_weight(w.shape())?;
    let out_len = geo.outputs * geo.positions();
    crate::dispatch!(x, xv, T => {
        let wv = geo.weight_in(w.typed::<T>("conv_forward")?);
        let wv = &wv[..];
        let mut out = vec![T::zero(); geo.images * out_len];
        if !out.is_empty() {
            out.par_chunks_mut(out_len)
                .zip(xv.par_chunks(geo.e.image_len().max(1)))
                .for_each_init(
                    || Scratch::for_geometry(&geo),
                    |s, (out, image)| forward_image(&geo, image, wv, out, s),
                );
        }
        Ok(Tensor::from_typed(vec![geo.images, geo.outputs, geo.positions()], out))
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
    let g_len = geo.outputs * geo.positions();
    crate::dispatch!(g, gv, T => {
        let wv = geo.weight_in(w.typed::<T>("conv_input_grad")?);
        let wv = &wv[..];
        let mut out = vec![T::zero(); geo.images * geo.e.image_len()];
        if !out.is_empty() {
            out.par_chunks_mut(geo.e.image_len().max(1))
                .zip(gv.par_chunks(g_len.max(1)))
                .for_each_init(
                    || Scratch::for_geometry(&geo),
                    |s, (image, gn)| input_grad_image(&geo, gn, wv, image, s),
                );
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
    let (g_len, w_len, x_len) = (
        outputs * geo.positions(),
        outputs * geo.e.patch_len(),
        geo.e.image_len(),
    );
    let parts = 1 << geo.images.clamp(1, WEIGHT_PARTS).ilog2();
    let per_part = geo.images.div_ceil(parts).max(1);
    crate::dispatch!(x, xv, T => {
        let gv = g.typed::<T>("conv_weight_grad")?;
        let mut partial = vec![T::zero(); parts * w_len];
        if !partial.is_empty() {
            partial.par_chunks_mut(w_len).enumerate().for_each(|(p, acc)| {
                let mut s = Scratch::for_geometry(&geo);
                for n in p * per_part..((p + 1) * per_part).min(geo.images) {
                    let (gn, image) = (&gv[n * g_len..][..g_len], &xv[n * x_len..][..x_len]);
                    let acc = WeightGrad { dst: acc.as_mut_ptr(), add: true };
                    weight_grad_image(&geo, gn, image, acc, &mut s);
                }
            });
        }
        let (first, rest) = partial.split_at_mut(w_len);
        for part in rest.chunks(w_len) {
            first.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
        }
        partial.truncate(w_len);
        Ok(Tensor::from_typed(vec![outputs, geo.e.patch_len()], partial))
    })
}

/// `einsum("nol,nli->noi", g, unfold(x) as [N, L, C·KH·KW])`: each image's
/// own gradient of [`conv_forward`] in its weight, `[N, O, C·KH·KW]` (the
/// per-sample gradients), computed as [`conv_weight_grad`] computes one
/// image's share, so without a patch matrix per sample.
///
/// ```
/// use secondo_tensor::{conv_sample_weight_grads, Tensor, Window2d};
/// let x = Tensor::from_vec(vec![2, 1, 1, 3], vec![1.0f64, 2.0, 3.0, 0.0, 1.0, 0.0]).unwrap();
/// let g = Tensor::from_vec(vec![2, 1, 2], vec![1.0f64, 10.0, 1.0, 1.0]).unwrap();
/// let window = Window2d { kernel: [1, 2], stride: [1, 1], padding: [0, 0], dilation: [1, 1] };
/// let grads = conv_sample_weight_grads(&g, &x, &window).unwrap();
/// assert_eq!(grads.to_f64_vec(), vec![21.0, 32.0, 1.0, 1.0]);
/// ```
pub fn conv_sample_weight_grads(
    g: &Tensor,
    x: &Tensor,
    window: &Window2d,
) -> Result<Tensor, TensorError> {
    let outputs = g.shape().get(1).copied().unwrap_or(0);
    let geo = Geometry::of(window, x.shape(), outputs)?.unfolding();
    geo.check_output(g.shape())?;
    let (g_len, w_len, x_len) = (
        outputs * geo.positions(),
        outputs * geo.e.patch_len(),
        geo.e.image_len(),
    );
    crate::dispatch!(x, xv, T => {
        let gv = g.typed::<T>("conv_sample_weight_grads")?;
        let mut out = crate::buffer::for_writing::<T>(geo.images * w_len);
        if w_len > 0 {
            out.par_chunks_mut(w_len).enumerate().for_each_init(
                || Scratch::for_geometry(&geo),
                |s, (n, dst)| {
                    let (gn, image) = (&gv[n * g_len..][..g_len], &xv[n * x_len..][..x_len]);
                    let acc = WeightGrad { dst: dst.as_mut_ptr().cast(), add: false };
                    weight_grad_image(&geo, gn, image, acc, s);
                },
            );
        }
        // SAFETY: each image's products wrote all of its O·I entries.
        let out = unsafe { crate::buffer::assume_init(out) };
        Ok(Tensor::from_typed(vec![geo.images, outputs, geo.e.patch_len()], out))
    })
}
