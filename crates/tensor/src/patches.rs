//! Sliding 2-d windows: patch extraction (`unfold`, im2col) and its adjoint
//! (`fold`, col2im). A convolution is `unfold` followed by a contraction, and
//! pooling is `unfold` followed by a reduction, so these two kernels are all
//! the image layers need beyond what the tensor already has.
//!
//! Patches are laid out positions first, `[..., OH, OW, C, KH, KW]`: each
//! output position's patch is one contiguous row, so that a convolution's
//! forward pass, its input gradient and its weight gradient are each a
//! single matrix product over all samples and positions (rows `N·OH·OW`,
//! columns `C·KH·KW`), with no copy of the patches in between.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::{Element, Tensor, TensorError};

/// Geometry of a sliding window over the last two axes, `[height, width]`
/// per field, as PyTorch's `nn.Unfold` (floor mode).
///
/// ```
/// use secondo_tensor::Window2d;
/// let w = Window2d::square(3, 2, 1, 1);
/// assert_eq!(w.output_size([8, 7]), Some([4, 4]));
/// assert_eq!(Window2d::square(5, 1, 0, 1).output_size([3, 3]), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window2d {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Implicit padding on each side.
    pub padding: [usize; 2],
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
}

impl Window2d {
    /// The same kernel, stride, padding and dilation on both axes.
    ///
    /// ```
    /// let w = secondo_tensor::Window2d::square(2, 2, 0, 1);
    /// assert_eq!(w.kernel, [2, 2]);
    /// ```
    pub fn square(kernel: usize, stride: usize, padding: usize, dilation: usize) -> Window2d {
        Window2d {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 2],
            dilation: [dilation; 2],
        }
    }

    /// Output height and width for an input of `input` `[height, width]`, or
    /// `None` when the (dilated) kernel is larger than the padded input or a
    /// size is zero.
    ///
    /// ```
    /// let w = secondo_tensor::Window2d::square(2, 2, 0, 1);
    /// assert_eq!(w.output_size([5, 4]), Some([2, 2]));
    /// ```
    pub fn output_size(&self, input: [usize; 2]) -> Option<[usize; 2]> {
        let axis = |i: usize| {
            let span = self.dilation[i] * (self.kernel[i].checked_sub(1)?) + 1;
            let padded = input[i] + 2 * self.padding[i];
            if self.stride[i] == 0 || padded < span {
                return None;
            }
            Some((padded - span) / self.stride[i] + 1)
        };
        Some([axis(0)?, axis(1)?])
    }

    /// The input row (or column) that kernel tap `tap` of window `out` reads
    /// on axis `i`, or `None` when it falls in the padding.
    pub(crate) fn source(&self, i: usize, out: usize, tap: usize, size: usize) -> Option<usize> {
        (out * self.stride[i] + tap * self.dilation[i])
            .checked_sub(self.padding[i])
            .filter(|&s| s < size)
    }

    /// Shape of [`unfold`]'s result for an operand of `shape` `[..., C, H, W]`.
    ///
    /// ```
    /// let w = secondo_tensor::Window2d::square(3, 2, 1, 1);
    /// assert_eq!(w.unfolded_shape(&[2, 4, 5, 5]).unwrap(), vec![2, 3, 3, 4, 3, 3]);
    /// assert!(w.unfolded_shape(&[5, 5]).is_err());
    /// ```
    pub fn unfolded_shape(&self, shape: &[usize]) -> Result<Vec<usize>, TensorError> {
        let (lead, image) = split_image(shape, 3)?;
        let out = self.output_size([image[1], image[2]]).ok_or_else(|| {
            TensorError::Invalid(format!(
                "a {}x{} window (dilation {}x{}) does not fit a {}x{} input padded by {}x{}",
                self.kernel[0],
                self.kernel[1],
                self.dilation[0],
                self.dilation[1],
                image[1],
                image[2],
                self.padding[0],
                self.padding[1]
            ))
        })?;
        Ok(lead
            .iter()
            .copied()
            .chain(out)
            .chain([image[0]])
            .chain(self.kernel)
            .collect())
    }

    /// Shape of [`fold`]'s result: an operand of `shape` `[..., OH, OW, C,
    /// KH, KW]` folded back onto an `image` `[H, W]`, giving `[..., C, H, W]`.
    ///
    /// ```
    /// let w = secondo_tensor::Window2d::square(2, 2, 0, 1);
    /// assert_eq!(w.folded_shape(&[3, 2, 2, 5, 2, 2], [4, 4]).unwrap(), vec![3, 5, 4, 4]);
    /// assert!(w.folded_shape(&[3, 2, 2, 5, 2, 2], [5, 6]).is_err());
    /// ```
    pub fn folded_shape(
        &self,
        shape: &[usize],
        image: [usize; 2],
    ) -> Result<Vec<usize>, TensorError> {
        let (lead, patches) = split_image(shape, 5)?;
        let fits = self
            .output_size(image)
            .is_some_and(|o| patches[..2] == o && patches[3..] == self.kernel);
        if !fits {
            return Err(TensorError::Invalid(format!(
                "patches {patches:?} do not come from a {image:?} input with window {self:?}"
            )));
        }
        Ok(lead
            .iter()
            .copied()
            .chain([patches[2]])
            .chain(image)
            .collect())
    }
}

/// Splits `shape` into leading axes and its last `k` axes.
pub(crate) fn split_image(shape: &[usize], k: usize) -> Result<(&[usize], &[usize]), TensorError> {
    if shape.len() < k {
        return Err(TensorError::Invalid(format!(
            "a sliding window needs at least {k} axes, got shape {shape:?}"
        )));
    }
    Ok(shape.split_at(shape.len() - k))
}

/// The sizes one image and its patches are indexed with.
#[derive(Clone, Copy)]
pub(crate) struct Extent {
    pub(crate) channels: usize,
    pub(crate) image: [usize; 2],
    pub(crate) out: [usize; 2],
    pub(crate) kernel: [usize; 2],
}

impl Extent {
    pub(crate) fn image_len(&self) -> usize {
        self.channels * self.image[0] * self.image[1]
    }

    fn patches_len(&self) -> usize {
        self.out[0] * self.out[1] * self.patch_len()
    }

    /// One position's patch: `C·KH·KW` values.
    pub(crate) fn patch_len(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// Calls `line(patches offset, image row)` for every kernel row of the
    /// output rows `rows` and every channel: the `KW` taps of output column
    /// `j` lie at `offset + j·C·KH·KW` in those rows' patches and at
    /// [`Columns`] in that image row (`None`: the row lies in the padding).
    /// In this order the patches of one output row stay in cache while each
    /// image row is read (or written) along its length.
    fn for_each_line(
        &self,
        w: &Window2d,
        rows: Range<usize>,
        mut line: impl FnMut(usize, Option<usize>),
    ) {
        let [kh, kw] = self.kernel;
        let [h, wd] = self.image;
        for i in rows.clone() {
            let block = (i - rows.start) * self.out[1] * self.patch_len();
            for a in 0..kh {
                let row = w.source(0, i, a, h);
                for c in 0..self.channels {
                    line(block + (c * kh + a) * kw, row.map(|r| (c * h + r) * wd));
                }
            }
        }
    }
}

/// Where each output column's taps read one image row: contiguous from one
/// start for the windows inside the image (undilated), else tap by tap.
pub(crate) struct Columns {
    /// Per output column, the first tap's column when all taps are
    /// contiguous and inside the image.
    start: Vec<Option<usize>>,
    /// Per output column and tap, its column (`None` in the padding).
    taps: Vec<Option<usize>>,
    kw: usize,
    /// Distance between consecutive output columns' patches.
    patch: usize,
}

impl Columns {
    pub(crate) fn of(w: &Window2d, e: &Extent) -> Columns {
        let kw = e.kernel[1];
        let taps: Vec<Option<usize>> = (0..e.out[1] * kw)
            .map(|t| w.source(1, t / kw, t % kw, e.image[1]))
            .collect();
        let start = taps
            .chunks(kw)
            .map(|t| {
                let first = t.first().copied().flatten()?;
                let contiguous = t.iter().enumerate().all(|(b, &c)| c == Some(first + b));
                contiguous.then_some(first)
            })
            .collect();
        Columns {
            start,
            taps,
            kw,
            patch: e.patch_len(),
        }
    }

    /// `visit(patches index, image column, length)` for every run of taps
    /// of one line (see [`Extent::for_each_line`]) that read consecutive
    /// image columns: a whole window inside the image at once, the windows
    /// at the edges tap by tap (the column is `None` in the padding). Always
    /// inlined, so that the calls with a literal `kw` below copy the whole
    /// windows of the common kernel widths in a few vector moves.
    #[inline(always)]
    fn each_run(
        &self,
        kw: usize,
        offset: usize,
        mut visit: impl FnMut(usize, Option<usize>, usize),
    ) {
        for (j, start) in self.start.iter().enumerate() {
            let at = offset + j * self.patch;
            match start {
                Some(s) => visit(at, Some(*s), kw),
                None => {
                    let taps = &self.taps[j * kw..(j + 1) * kw];
                    taps.iter()
                        .enumerate()
                        .for_each(|(b, &c)| visit(at + b, c, 1));
                }
            }
        }
    }

    /// [`Columns::each_run`] with the kernel width as a literal for 1, 2, 3,
    /// 5 and 7.
    #[inline(always)]
    fn each_run_unrolled(&self, offset: usize, visit: impl FnMut(usize, Option<usize>, usize)) {
        match self.kw {
            1 => self.each_run(1, offset, visit),
            2 => self.each_run(2, offset, visit),
            3 => self.each_run(3, offset, visit),
            5 => self.each_run(5, offset, visit),
            7 => self.each_run(7, offset, visit),
            kw => self.each_run(kw, offset, visit),
        }
    }
}

/// The patches of output rows `rows` of one image: every element of `out`
/// (those rows' patches) written.
pub(crate) fn unfold_image<T: Element>(
    e: &Extent,
    w: &Window2d,
    cols: &Columns,
    image: &[T],
    out: &mut [MaybeUninit<T>],
    pad: T,
    rows: Range<usize>,
) {
    let wd = e.image[1];
    e.for_each_line(w, rows, |offset, row| {
        let line = row.map(|r| &image[r..r + wd]);
        cols.each_run_unrolled(offset, |p, c, len| {
            let out = &mut out[p..p + len];
            match (line, c) {
                (Some(line), Some(c)) => {
                    out.write_copy_of_slice(&line[c..c + len]);
                }
                _ => out.iter_mut().for_each(|o| {
                    o.write(pad);
                }),
            }
        })
    });
}

/// The patches of output rows `rows` of one image summed onto it.
pub(crate) fn fold_image<T: Element>(
    e: &Extent,
    w: &Window2d,
    cols: &Columns,
    patches: &[T],
    image: &mut [T],
    rows: Range<usize>,
) {
    let wd = e.image[1];
    e.for_each_line(w, rows, |offset, row| {
        if let Some(r) = row {
            let line = &mut image[r..r + wd];
            cols.each_run_unrolled(offset, |p, c, len| {
                if let Some(c) = c {
                    let sums = line[c..c + len].iter_mut();
                    sums.zip(&patches[p..p + len]).for_each(|(s, &v)| *s += v);
                }
            });
        }
    });
}

/// Patches of the last three axes: `x` of shape `[..., C, H, W]` becomes
/// `[..., OH, OW, C, KH, KW]` with entry `[..., i, j, c, a, b]` the input at
/// channel `c`, row `i·s + a·d − p` and column `j·s + b·d − p`, or `pad`
/// where that lies in the padding (0 for a convolution, −∞ for max pooling).
///
/// ```
/// use secondo_tensor::{unfold, Tensor, Window2d};
/// let x = Tensor::from_vec(vec![1, 1, 3], vec![1.0f64, 2.0, 3.0]).unwrap();
/// let p = unfold(&x, &Window2d { kernel: [1, 2], stride: [1, 1], padding: [0, 0], dilation: [1, 1] }, 0.0).unwrap();
/// assert_eq!(p.shape(), &[1, 2, 1, 1, 2]);
/// assert_eq!(p.to_f64_vec(), vec![1.0, 2.0, 2.0, 3.0]);
/// ```
pub fn unfold(x: &Tensor, w: &Window2d, pad: f64) -> Result<Tensor, TensorError> {
    let shape = w.unfolded_shape(x.shape())?;
    let r = x.shape().len();
    let e = Extent {
        channels: x.shape()[r - 3],
        image: [x.shape()[r - 2], x.shape()[r - 1]],
        out: [shape[r - 3], shape[r - 2]],
        kernel: w.kernel,
    };
    let cols = Columns::of(w, &e);
    crate::dispatch!(x, v, T => {
        let mut out = crate::buffer::for_writing::<T>(shape.iter().product());
        if !out.is_empty() {
            let pad = T::from_f64(pad);
            out.par_chunks_mut(e.patches_len())
                .zip(v.par_chunks(e.image_len()))
                .for_each(|(o, image)| unfold_image(&e, w, &cols, image, o, pad, 0..e.out[0]));
        }
        // SAFETY: `unfold_image` writes every element of each image's patches.
        let out = unsafe { crate::buffer::assume_init(out) };
        Ok(Tensor::from_typed(shape, out))
    })
}

/// The adjoint of [`unfold`] with zero padding: patches `[..., OH, OW, C,
/// KH, KW]` are summed back onto an `image` `[H, W]` (entries in the padding
/// are dropped), giving `[..., C, H, W]`.
///
/// ```
/// use secondo_tensor::{fold, Tensor, Window2d};
/// let p = Tensor::from_vec(vec![1, 2, 1, 1, 2], vec![1.0f64, 2.0, 2.0, 3.0]).unwrap();
/// let w = Window2d { kernel: [1, 2], stride: [1, 1], padding: [0, 0], dilation: [1, 1] };
/// assert_eq!(fold(&p, &w, [1, 3]).unwrap().to_f64_vec(), vec![1.0, 4.0, 3.0]);
/// ```
pub fn fold(x: &Tensor, w: &Window2d, image: [usize; 2]) -> Result<Tensor, TensorError> {
    let shape = w.folded_shape(x.shape(), image)?;
    let r = x.shape().len();
    let e = Extent {
        channels: x.shape()[r - 3],
        image,
        out: [x.shape()[r - 5], x.shape()[r - 4]],
        kernel: w.kernel,
    };
    let cols = Columns::of(w, &e);
    crate::dispatch!(x, v, T => {
        let mut out = vec![T::from_f64(0.0); shape.iter().product()];
        if !out.is_empty() {
            out.par_chunks_mut(e.image_len())
                .zip(v.par_chunks(e.patches_len()))
                .for_each(|(o, patches)| fold_image(&e, w, &cols, patches, o, 0..e.out[0]));
        }
        Ok(Tensor::from_typed(shape, out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(k: [usize; 2], s: [usize; 2], p: [usize; 2], d: [usize; 2]) -> Window2d {
        Window2d {
            kernel: k,
            stride: s,
            padding: p,
            dilation: d,
        }
    }

    fn ramp(shape: Vec<usize>) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| ((i * 7919) % 101) as f64 / 10.0 - 5.0)
            .collect();
        Tensor::from_vec(shape, v).unwrap()
    }

    /// `<unfold x, p> = <x, fold p>` for every geometry: fold is the adjoint.
    #[test]
    fn fold_is_the_adjoint_of_unfold() {
        for w in [
            window([3, 3], [1, 1], [1, 1], [1, 1]),
            window([2, 3], [2, 1], [0, 1], [1, 2]),
            window([3, 2], [2, 3], [1, 0], [2, 1]),
            window([1, 1], [2, 2], [0, 0], [1, 1]),
        ] {
            let x = ramp(vec![2, 3, 7, 6]);
            let u = unfold(&x, &w, 0.0).unwrap();
            let p = ramp(u.shape().to_vec());
            let back = fold(&p, &w, [7, 6]).unwrap();
            let dot = |a: &Tensor, b: &Tensor| -> f64 {
                a.to_f64_vec()
                    .iter()
                    .zip(b.to_f64_vec())
                    .map(|(x, y)| x * y)
                    .sum()
            };
            let (lhs, rhs) = (dot(&u, &p), dot(&x, &back));
            assert!(
                (lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0),
                "{w:?}: {lhs} vs {rhs}"
            );
        }
    }

    /// Entries against the definition, written out by index.
    #[test]
    fn unfold_reads_the_strided_dilated_padded_input() {
        let w = window([2, 2], [2, 1], [1, 0], [1, 2]);
        let x = ramp(vec![2, 5, 4]);
        let u = unfold(&x, &w, -9.0).unwrap();
        assert_eq!(u.shape(), &[3, 2, 2, 2, 2]);
        let (xv, uv) = (x.to_f64_vec(), u.to_f64_vec());
        for i in 0..3 {
            for j in 0..2 {
                for c in 0..2 {
                    for a in 0..2 {
                        for b in 0..2 {
                            let row = (i * 2 + a) as isize - 1;
                            let col = j + b * 2;
                            let want = if (0..5).contains(&row) {
                                xv[(c * 5 + row as usize) * 4 + col]
                            } else {
                                -9.0
                            };
                            assert_eq!(uv[(((i * 2 + j) * 2 + c) * 2 + a) * 2 + b], want);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn windows_that_do_not_fit_are_refused() {
        let w = window([3, 3], [1, 1], [0, 0], [2, 2]);
        let e = unfold(&ramp(vec![1, 4, 4]), &w, 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit a 4x4 input"), "{e}");
        assert!(fold(&ramp(vec![1, 1, 1, 3, 3]), &w, [4, 4]).is_err());
    }
}
