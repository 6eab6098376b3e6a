//! Sliding 2-d windows: patch extraction (`unfold`, im2col) and its adjoint
//! (`fold`, col2im). A convolution is `unfold` followed by a contraction, and
//! pooling is `unfold` followed by a reduction, so these two kernels are all
//! the image layers need beyond what the tensor already has.

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
    fn source(&self, i: usize, out: usize, tap: usize, size: usize) -> Option<usize> {
        (out * self.stride[i] + tap * self.dilation[i])
            .checked_sub(self.padding[i])
            .filter(|&s| s < size)
    }

    /// Shape of [`unfold`]'s result for an operand of `shape`.
    ///
    /// ```
    /// let w = secondo_tensor::Window2d::square(3, 1, 1, 1);
    /// assert_eq!(w.unfolded_shape(&[2, 4, 5, 5]).unwrap(), vec![2, 4, 3, 3, 5, 5]);
    /// assert!(w.unfolded_shape(&[5]).is_err());
    /// ```
    pub fn unfolded_shape(&self, shape: &[usize]) -> Result<Vec<usize>, TensorError> {
        let (lead, image) = split_image(shape, 2)?;
        let out = self.output_size([image[0], image[1]]).ok_or_else(|| {
            TensorError::Invalid(format!(
                "a {}x{} window (dilation {}x{}) does not fit a {}x{} input padded by {}x{}",
                self.kernel[0],
                self.kernel[1],
                self.dilation[0],
                self.dilation[1],
                image[0],
                image[1],
                self.padding[0],
                self.padding[1]
            ))
        })?;
        Ok(lead.iter().copied().chain(self.kernel).chain(out).collect())
    }

    /// Shape of [`fold`]'s result: an operand of `shape` `[..., KH, KW, OH,
    /// OW]` folded back onto an `image` `[H, W]`.
    ///
    /// ```
    /// let w = secondo_tensor::Window2d::square(2, 2, 0, 1);
    /// assert_eq!(w.folded_shape(&[3, 2, 2, 2, 2], [4, 4]).unwrap(), vec![3, 4, 4]);
    /// assert!(w.folded_shape(&[3, 2, 2, 2, 2], [5, 6]).is_err());
    /// ```
    pub fn folded_shape(
        &self,
        shape: &[usize],
        image: [usize; 2],
    ) -> Result<Vec<usize>, TensorError> {
        let (lead, patches) = split_image(shape, 4)?;
        let expect = self
            .output_size(image)
            .map(|o| [self.kernel[0], self.kernel[1], o[0], o[1]]);
        if expect.as_ref().map(|e| e.as_slice()) != Some(patches) {
            return Err(TensorError::Invalid(format!(
                "patches {patches:?} do not come from a {image:?} input with window {self:?}"
            )));
        }
        Ok(lead.iter().copied().chain(image).collect())
    }
}

/// Splits `shape` into leading axes and its last `k` axes.
fn split_image(shape: &[usize], k: usize) -> Result<(&[usize], &[usize]), TensorError> {
    if shape.len() < k {
        return Err(TensorError::Invalid(format!(
            "a sliding window needs at least {k} axes, got shape {shape:?}"
        )));
    }
    Ok(shape.split_at(shape.len() - k))
}

/// Patches of the last two axes: `x` of shape `[..., H, W]` becomes
/// `[..., KH, KW, OH, OW]` with entry `[..., a, b, i, j]` the input at row
/// `i·s + a·d − p` and column `j·s + b·d − p`, or `pad` where that lies in
/// the padding (0 for a convolution, −∞ for max pooling).
///
/// ```
/// use secondo_tensor::{unfold, Tensor, Window2d};
/// let x = Tensor::from_vec(vec![1, 3], vec![1.0f64, 2.0, 3.0]).unwrap();
/// let p = unfold(&x, &Window2d { kernel: [1, 2], stride: [1, 1], padding: [0, 0], dilation: [1, 1] }, 0.0).unwrap();
/// assert_eq!(p.shape(), &[1, 2, 1, 2]);
/// assert_eq!(p.to_f64_vec(), vec![1.0, 2.0, 2.0, 3.0]);
/// ```
pub fn unfold(x: &Tensor, w: &Window2d, pad: f64) -> Result<Tensor, TensorError> {
    let shape = w.unfolded_shape(x.shape())?;
    let r = shape.len();
    let (h, wd) = (x.shape()[r - 4], x.shape()[r - 3]);
    let [kh, kw, oh, ow] = [shape[r - 4], shape[r - 3], shape[r - 2], shape[r - 1]];
    crate::dispatch!(x, v, T => {
        let mut out = vec![T::from_f64(pad); shape.iter().product()];
        if !out.is_empty() {
            out.par_chunks_mut(kh * kw * oh * ow)
                .zip(v.par_chunks(h * wd))
                .for_each(|(o, image)| {
                    for a in 0..kh {
                        for b in 0..kw {
                            for i in 0..oh {
                                let Some(row) = w.source(0, i, a, h) else { continue };
                                let dst = &mut o[((a * kw + b) * oh + i) * ow..][..ow];
                                for (j, d) in dst.iter_mut().enumerate() {
                                    if let Some(col) = w.source(1, j, b, wd) {
                                        *d = image[row * wd + col];
                                    }
                                }
                            }
                        }
                    }
                });
        }
        Ok(Tensor::from_typed(shape, out))
    })
}

/// The adjoint of [`unfold`] with zero padding: patches `[..., KH, KW, OH,
/// OW]` are summed back onto an `image` `[H, W]` (entries in the padding are
/// dropped), giving `[..., H, W]`.
///
/// ```
/// use secondo_tensor::{fold, Tensor, Window2d};
/// let p = Tensor::from_vec(vec![1, 2, 1, 2], vec![1.0f64, 2.0, 2.0, 3.0]).unwrap();
/// let w = Window2d { kernel: [1, 2], stride: [1, 1], padding: [0, 0], dilation: [1, 1] };
/// assert_eq!(fold(&p, &w, [1, 3]).unwrap().to_f64_vec(), vec![1.0, 4.0, 3.0]);
/// ```
pub fn fold(x: &Tensor, w: &Window2d, image: [usize; 2]) -> Result<Tensor, TensorError> {
    let shape = w.folded_shape(x.shape(), image)?;
    let r = x.shape().len();
    let [kh, kw, oh, ow] = [
        x.shape()[r - 4],
        x.shape()[r - 3],
        x.shape()[r - 2],
        x.shape()[r - 1],
    ];
    let [h, wd] = image;
    crate::dispatch!(x, v, T => {
        let mut out = vec![T::from_f64(0.0); shape.iter().product()];
        if !out.is_empty() {
            out.par_chunks_mut(h * wd)
                .zip(v.par_chunks(kh * kw * oh * ow))
                .for_each(|(o, patches)| fold_one::<T>(o, patches, w, [kh, kw, oh, ow], image));
        }
        Ok(Tensor::from_typed(shape, out))
    })
}

/// [`fold`] of one image's patches, in a fixed order (deterministic sums).
fn fold_one<T: Element>(
    o: &mut [T],
    patches: &[T],
    w: &Window2d,
    [kh, kw, oh, ow]: [usize; 4],
    [h, wd]: [usize; 2],
) {
    for a in 0..kh {
        for b in 0..kw {
            for i in 0..oh {
                let Some(row) = w.source(0, i, a, h) else {
                    continue;
                };
                let src = &patches[((a * kw + b) * oh + i) * ow..][..ow];
                for (j, &s) in src.iter().enumerate() {
                    if let Some(col) = w.source(1, j, b, wd) {
                        o[row * wd + col] += s;
                    }
                }
            }
        }
    }
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
        let x = ramp(vec![1, 5, 4]);
        let u = unfold(&x, &w, -9.0).unwrap();
        assert_eq!(u.shape(), &[1, 2, 2, 3, 2]);
        let (xv, uv) = (x.to_f64_vec(), u.to_f64_vec());
        for a in 0..2 {
            for b in 0..2 {
                for i in 0..3 {
                    for j in 0..2 {
                        let row = (i * 2 + a) as isize - 1;
                        let col = j + b * 2;
                        let want = if (0..5).contains(&row) {
                            xv[row as usize * 4 + col]
                        } else {
                            -9.0
                        };
                        assert_eq!(uv[((a * 2 + b) * 3 + i) * 2 + j], want);
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
        assert!(fold(&ramp(vec![1, 3, 3, 1, 1]), &w, [4, 4]).is_err());
    }
}
