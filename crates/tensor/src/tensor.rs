use std::sync::Arc;

use crate::{DType, Element, TensorError};

/// The values of a tensor, shared copy-on-write between clones.
///
/// ```
/// use secondo_tensor::{Storage, Tensor};
/// let t = Tensor::from_vec(vec![1], vec![2.0f32]).unwrap();
/// assert!(matches!(t.storage(), Storage::F32(_)));
/// ```
#[derive(Clone, Debug)]
pub enum Storage {
    /// 32-bit values.
    F32(Arc<Vec<f32>>),
    /// 64-bit values.
    F64(Arc<Vec<f64>>),
}

/// A dense, contiguous, row-major array of `f32` or `f64`.
///
/// Clones share their values; kernels that own the only reference reuse the
/// buffer in place.
///
/// ```
/// use secondo_tensor::Tensor;
/// let t = Tensor::from_vec(vec![2, 3], (0..6).map(|v| v as f64).collect()).unwrap();
/// assert_eq!(t.shape(), &[2, 3]);
/// assert_eq!(t.numel(), 6);
/// assert_eq!(t.to_f64_vec()[4], 4.0);
/// ```
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

/// Runs `$body` with `$v` bound to the typed `Arc<Vec<T>>` of `$t` and `T` the element type.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch {
    ($t:expr, $v:ident, $T:ident => $body:expr) => {
        match $t.storage() {
            $crate::Storage::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::Storage::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
        }
    };
}

impl Tensor {
    /// Builds a tensor from row-major values; errors when the length does not match.
    ///
    /// ```
    /// use secondo_tensor::Tensor;
    /// assert!(Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).is_ok());
    /// ```
    pub fn from_vec<T: Element>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor, TensorError> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(TensorError::DataLength {
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Self::from_storage(shape, storage_of(data)))
    }

    /// Builds a tensor from `f64` values converted to `dtype`.
    ///
    /// ```
    /// use secondo_tensor::{DType, Tensor};
    /// let t = Tensor::from_f64(vec![2], &[1.5, 2.5], DType::F32).unwrap();
    /// assert_eq!(t.dtype(), DType::F32);
    /// ```
    pub fn from_f64(shape: Vec<usize>, data: &[f64], dtype: DType) -> Result<Tensor, TensorError> {
        match dtype {
            DType::F32 => Self::from_vec(shape, data.iter().map(|&v| v as f32).collect()),
            DType::F64 => Self::from_vec(shape, data.to_vec()),
        }
    }

    pub(crate) fn from_storage(shape: Vec<usize>, storage: Storage) -> Tensor {
        Tensor { shape, storage }
    }

    pub(crate) fn from_typed<T: Element>(shape: Vec<usize>, data: Vec<T>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self::from_storage(shape, storage_of(data))
    }

    /// A tensor filled with `value`.
    ///
    /// ```
    /// use secondo_tensor::{DType, Tensor};
    /// let t = Tensor::full(vec![2, 2], 3.0, DType::F64);
    /// assert_eq!(t.to_f64_vec(), vec![3.0; 4]);
    /// ```
    pub fn full(shape: Vec<usize>, value: f64, dtype: DType) -> Tensor {
        let n = shape.iter().product();
        match dtype {
            DType::F32 => Self::from_typed(shape, vec![value as f32; n]),
            DType::F64 => Self::from_typed(shape, vec![value; n]),
        }
    }

    /// A tensor of zeros.
    ///
    /// ```
    /// use secondo_tensor::{DType, Tensor};
    /// assert_eq!(Tensor::zeros(vec![3], DType::F32).to_f64_vec(), vec![0.0; 3]);
    /// ```
    pub fn zeros(shape: Vec<usize>, dtype: DType) -> Tensor {
        Self::full(shape, 0.0, dtype)
    }

    /// A rank-0 tensor holding one value.
    ///
    /// ```
    /// use secondo_tensor::{DType, Tensor};
    /// assert_eq!(Tensor::scalar(2.0, DType::F64).item(), 2.0);
    /// ```
    pub fn scalar(value: f64, dtype: DType) -> Tensor {
        Self::full(vec![], value, dtype)
    }

    /// The shape.
    ///
    /// ```
    /// # use secondo_tensor::{DType, Tensor};
    /// assert_eq!(Tensor::zeros(vec![4, 5], DType::F32).shape(), &[4, 5]);
    /// ```
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    ///
    /// ```
    /// # use secondo_tensor::{DType, Tensor};
    /// assert_eq!(Tensor::zeros(vec![4, 5], DType::F32).numel(), 20);
    /// ```
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The element type.
    ///
    /// ```
    /// # use secondo_tensor::{DType, Tensor};
    /// assert_eq!(Tensor::zeros(vec![1], DType::F64).dtype(), DType::F64);
    /// ```
    pub fn dtype(&self) -> DType {
        match self.storage {
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
        }
    }

    /// The underlying storage.
    ///
    /// ```
    /// # use secondo_tensor::{DType, Storage, Tensor};
    /// assert!(matches!(Tensor::zeros(vec![1], DType::F64).storage(), Storage::F64(_)));
    /// ```
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Typed values, or `None` when `T` is not this tensor's element type.
    ///
    /// ```
    /// # use secondo_tensor::{DType, Tensor};
    /// let t = Tensor::zeros(vec![2], DType::F32);
    /// assert_eq!(t.as_slice::<f32>().unwrap().len(), 2);
    /// assert!(t.as_slice::<f64>().is_none());
    /// ```
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        typed_ref::<T>(&self.storage).map(|v| v.as_slice())
    }

    /// Mutable typed values (copied first when shared), or `None` when `T` is not
    /// this tensor's element type.
    ///
    /// ```
    /// # use secondo_tensor::{DType, Tensor};
    /// let mut t = Tensor::zeros(vec![2], DType::F64);
    /// t.as_mut_slice::<f64>().unwrap()[1] = 5.0;
    /// assert_eq!(t.to_f64_vec(), vec![0.0, 5.0]);
    /// ```
    pub fn as_mut_slice<T: Element>(&mut self) -> Option<&mut [T]> {
        let any: &mut dyn std::any::Any = match &mut self.storage {
            Storage::F32(v) => v,
            Storage::F64(v) => v,
        };
        any.downcast_mut::<Arc<Vec<T>>>()
            .map(|arc| Arc::make_mut(arc).as_mut_slice())
    }

    /// Typed values, erroring with the operation's name on a dtype mismatch.
    pub(crate) fn typed<T: Element>(&self, op: &str) -> Result<&[T], TensorError> {
        self.as_slice::<T>()
            .ok_or_else(|| TensorError::DTypeMismatch {
                op: op.to_string(),
                a: T::DTYPE,
                b: self.dtype(),
            })
    }

    /// Takes the values out, copying only when they are shared.
    pub(crate) fn into_typed_vec<T: Element>(self) -> Option<Vec<T>> {
        typed_ref::<T>(&self.storage)?;
        let arc = typed_take::<T>(self.storage)?;
        Some(Arc::try_unwrap(arc).unwrap_or_else(|a| a.as_ref().clone()))
    }

    /// All values converted to `f64`.
    ///
    /// ```
    /// # use secondo_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![2], vec![0.5f32, 1.5]).unwrap();
    /// assert_eq!(t.to_f64_vec(), vec![0.5, 1.5]);
    /// ```
    pub fn to_f64_vec(&self) -> Vec<f64> {
        crate::dispatch!(self, v, T => v.iter().map(|&x| <T as Element>::to_f64(x)).collect())
    }

    /// `out[i] += weight · self[i]` over the values in row-major order
    /// (`out` as long as the tensor), without an intermediate `f64` copy.
    ///
    /// ```
    /// # use secondo_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
    /// let mut out = [1.0, 1.0];
    /// t.accumulate_into(&mut out, 0.5);
    /// assert_eq!(out, [1.5, 2.0]);
    /// ```
    pub fn accumulate_into(&self, out: &mut [f64], weight: f64) {
        crate::dispatch!(self, v, T => {
            for (o, &x) in out.iter_mut().zip(v.iter()) {
                *o += weight * <T as Element>::to_f64(x);
            }
        })
    }

    /// The only value of a one-element tensor, as `f64` (the first value otherwise).
    ///
    /// ```
    /// # use secondo_tensor::{DType, Tensor};
    /// assert_eq!(Tensor::scalar(4.0, DType::F32).item(), 4.0);
    /// ```
    pub fn item(&self) -> f64 {
        crate::dispatch!(self, v, T => v.first().map(|&x| <T as Element>::to_f64(x)).unwrap_or(f64::NAN))
    }

    /// Converts to another element type (a cheap clone when it already matches).
    ///
    /// ```
    /// # use secondo_tensor::{DType, Tensor};
    /// let t = Tensor::full(vec![2], 0.25, DType::F64).to_dtype(DType::F32);
    /// assert_eq!(t.dtype(), DType::F32);
    /// ```
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if self.dtype() == dtype {
            return self.clone();
        }
        Tensor::from_f64(self.shape.clone(), &self.to_f64_vec(), dtype)
            .expect("same number of elements")
    }

    /// The same values under a new shape with the same number of elements.
    ///
    /// ```
    /// # use secondo_tensor::{DType, Tensor};
    /// let t = Tensor::zeros(vec![2, 3], DType::F32).reshape(vec![3, 2]).unwrap();
    /// assert_eq!(t.shape(), &[3, 2]);
    /// ```
    pub fn reshape(&self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(TensorError::ShapeMismatch {
                op: "reshape".into(),
                a: self.shape.clone(),
                b: shape,
            });
        }
        Ok(Tensor {
            shape,
            storage: self.storage.clone(),
        })
    }

    /// Whether every value is finite; returns the flat index of the first that is not.
    ///
    /// ```
    /// # use secondo_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![3], vec![1.0f64, f64::NAN, 2.0]).unwrap();
    /// assert_eq!(t.first_non_finite(), Some(1));
    /// ```
    pub fn first_non_finite(&self) -> Option<usize> {
        crate::dispatch!(self, v, T => v.iter().position(|x| !x.is_finite()))
    }

    /// `Σ_i self_i · other_i`, accumulated in `f64` over the values in place
    /// (`NaN` when the dtypes or sizes differ).
    ///
    /// ```
    /// # use secondo_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
    /// let b = Tensor::from_vec(vec![2], vec![3.0f32, -1.0]).unwrap();
    /// assert_eq!(a.dot(&b), 1.0);
    /// assert_eq!(a.dot(&a), 5.0);
    /// ```
    pub fn dot(&self, other: &Tensor) -> f64 {
        self.fold_pairs(other, |x, y| x * y)
    }

    /// `Σ_i (self_i − other_i)²`, accumulated in `f64` over the values in
    /// place (`NaN` when the dtypes or sizes differ).
    ///
    /// ```
    /// # use secondo_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap();
    /// let b = Tensor::from_vec(vec![2], vec![3.0f64, 2.0]).unwrap();
    /// assert_eq!(a.squared_distance(&b), 4.0);
    /// ```
    pub fn squared_distance(&self, other: &Tensor) -> f64 {
        self.fold_pairs(other, |x, y| (x - y) * (x - y))
    }

    /// `Σ_i f(self_i, other_i)` in `f64`, in four independent partial sums
    /// (so the loop vectorizes; the order is fixed, so the result is the
    /// same on every run).
    fn fold_pairs(&self, other: &Tensor, f: impl Fn(f64, f64) -> f64) -> f64 {
        if self.numel() != other.numel() {
            return f64::NAN;
        }
        crate::dispatch!(self, v, T => {
            let Some(w) = other.as_slice::<T>() else {
                return f64::NAN;
            };
            let mut acc = [0.0f64; 4];
            let (a4, b4) = (v.chunks_exact(4), w.chunks_exact(4));
            let tail: f64 = a4
                .remainder()
                .iter()
                .zip(b4.remainder())
                .map(|(&x, &y)| f(<T as Element>::to_f64(x), <T as Element>::to_f64(y)))
                .sum();
            for (a, b) in a4.zip(b4) {
                for k in 0..4 {
                    acc[k] += f(<T as Element>::to_f64(a[k]), <T as Element>::to_f64(b[k]));
                }
            }
            acc.iter().sum::<f64>() + tail
        })
    }

    /// Largest absolute elementwise difference to `other` (`inf` when shapes differ).
    ///
    /// ```
    /// # use secondo_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap();
    /// let b = Tensor::from_vec(vec![2], vec![1.0f64, 2.5]).unwrap();
    /// assert_eq!(a.max_abs_diff(&b), 0.5);
    /// ```
    pub fn max_abs_diff(&self, other: &Tensor) -> f64 {
        if self.shape != other.shape {
            return f64::INFINITY;
        }
        self.to_f64_vec()
            .iter()
            .zip(other.to_f64_vec())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }
}

fn storage_of<T: Element>(data: Vec<T>) -> Storage {
    let any: Box<dyn std::any::Any> = Box::new(data);
    match any.downcast::<Vec<f32>>() {
        Ok(v) => Storage::F32(Arc::new(*v)),
        Err(any) => Storage::F64(Arc::new(
            *any.downcast::<Vec<f64>>()
                .expect("Element is implemented for f32 and f64 only"),
        )),
    }
}

fn typed_ref<T: Element>(s: &Storage) -> Option<&Arc<Vec<T>>> {
    let any: &dyn std::any::Any = match s {
        Storage::F32(v) => v,
        Storage::F64(v) => v,
    };
    any.downcast_ref::<Arc<Vec<T>>>()
}

fn typed_take<T: Element>(s: Storage) -> Option<Arc<Vec<T>>> {
    let any: Box<dyn std::any::Any> = match s {
        Storage::F32(v) => Box::new(v),
        Storage::F64(v) => Box::new(v),
    };
    any.downcast::<Arc<Vec<T>>>().ok().map(|b| *b)
}
