use rayon::prelude::*;

use num_traits::Zero;

use crate::{Element, Tensor, TensorError};

/// Elementwise maps of one operand.
///
/// ```
/// use secondo_tensor::{Tensor, UnaryOp};
/// let t = Tensor::from_vec(vec![2], vec![0.0f64, 1.0]).unwrap();
/// assert_eq!(UnaryOp::Exp.apply(t).to_f64_vec(), vec![1.0, std::f64::consts::E]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural logarithm
    Log,
    /// hyperbolic tangent
    Tanh,
    /// error function
    Erf,
    /// `x^p` for a constant exponent `p`
    Powf(f64),
}

/// Elementwise maps of two operands of equal shape (or one operand with a single element).
///
/// Comparisons return a 0/1 mask of the operands' dtype.
///
/// ```
/// use secondo_tensor::{BinaryOp, Tensor};
/// let a = Tensor::from_vec(vec![2], vec![1.0f32, 4.0]).unwrap();
/// let b = Tensor::from_vec(vec![], vec![2.0f32]).unwrap();
/// assert_eq!(BinaryOp::Mul.apply(a.clone(), b.clone()).unwrap().to_f64_vec(), vec![2.0, 8.0]);
/// assert_eq!(BinaryOp::Gt.apply(a, b).unwrap().to_f64_vec(), vec![0.0, 1.0]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`
    Max,
    /// `a > b` as 0/1
    Gt,
    /// `a >= b` as 0/1
    Ge,
    /// `a < b` as 0/1
    Lt,
    /// `a == b` as 0/1
    Eq,
}

const PAR_MIN: usize = 1 << 16;
const CHUNK: usize = 1 << 13;

/// Runs `f` on chunks of `v`, in parallel when `v` is long.
fn in_chunks<T: Element>(v: &mut [T], f: impl Fn(&mut [T]) + Sync + Send) {
    if v.len() >= PAR_MIN {
        v.par_chunks_mut(CHUNK).for_each(f);
    } else {
        f(v);
    }
}

fn map_inplace<T: Element>(v: &mut [T], f: impl Fn(T) -> T + Sync) {
    in_chunks(v, |c| c.iter_mut().for_each(|x| *x = f(*x)));
}

crate::avx2_kernel! {
    /// `tanh` of every element, 8 `f32` at a time with AVX2.
    fn tanh_in_place<T: Element>(v: &mut [T]) {
        v.iter_mut().for_each(|x| *x = x.tanh_vectorized());
    }
}

fn zip_into<T: Element>(out: &mut [T], other: &[T], f: impl Fn(T, T) -> T + Sync) {
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(CHUNK)
            .zip(other.par_chunks(CHUNK))
            .for_each(|(o, b)| o.iter_mut().zip(b).for_each(|(x, &y)| *x = f(*x, y)));
    } else {
        out.iter_mut().zip(other).for_each(|(x, &y)| *x = f(*x, y));
    }
}

/// `out[i] = f(out[i], other[i mod n])` (or `f(other[i mod n], out[i])`
/// when `other_first`), `other` repeating over `out`'s leading axes.
fn zip_repeating<T: Element>(
    out: &mut [T],
    other: &[T],
    f: impl Fn(T, T) -> T + Sync,
    other_first: bool,
) {
    let run = |o: &mut [T]| {
        if other_first {
            o.iter_mut().zip(other).for_each(|(x, &y)| *x = f(y, *x));
        } else {
            o.iter_mut().zip(other).for_each(|(x, &y)| *x = f(*x, y));
        }
    };
    let width = other.len().max(1);
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(width).for_each(run);
    } else {
        out.chunks_mut(width).for_each(run);
    }
}

/// `v[i] = f(v[i], s)`, or `f(s, v[i])` when `scalar_first`; generic in `f`
/// so that each operation compiles to its own vectorized loop.
fn with_scalar<T: Element>(v: &mut [T], s: T, f: impl Fn(T, T) -> T + Sync, scalar_first: bool) {
    if scalar_first {
        map_inplace(v, |x| f(s, x))
    } else {
        map_inplace(v, |x| f(x, s))
    }
}

/// Applies a unary op with the operation chosen outside the loop, so each
/// arm compiles to its own (vectorizable) loop.
fn unary_loop<T: Element>(op: UnaryOp, v: &mut [T]) {
    match op {
        UnaryOp::Neg => map_inplace(v, |x| -x),
        UnaryOp::Exp => map_inplace(v, |x| x.exp()),
        UnaryOp::Log => map_inplace(v, |x| x.ln()),
        UnaryOp::Tanh => in_chunks(v, tanh_in_place),
        UnaryOp::Erf => map_inplace(v, |x| x.erf()),
        UnaryOp::Powf(2.0) => map_inplace(v, |x| x * x),
        UnaryOp::Powf(0.5) => map_inplace(v, |x| x.sqrt()),
        UnaryOp::Powf(-1.0) => map_inplace(v, |x| x.recip()),
        UnaryOp::Powf(p) => {
            let p = T::from_f64(p);
            map_inplace(v, move |x| x.powf(p))
        }
    }
}

fn mask<T: Element>(c: bool) -> T {
    if c {
        T::one()
    } else {
        T::zero()
    }
}

fn max_nan<T: Element>(a: T, b: T) -> T {
    if a >= b || b.is_nan() {
        a
    } else {
        b
    }
}

/// Calls `$apply` with the binary operation as a closure, one arm per op.
macro_rules! with_binary_fn {
    ($op:expr, $T:ty, $apply:expr) => {
        match $op {
            BinaryOp::Add => $apply(|a: $T, b: $T| a + b),
            BinaryOp::Sub => $apply(|a: $T, b: $T| a - b),
            BinaryOp::Mul => $apply(|a: $T, b: $T| a * b),
            BinaryOp::Div => $apply(|a: $T, b: $T| a / b),
            BinaryOp::Max => $apply(|a: $T, b: $T| max_nan(a, b)),
            BinaryOp::Gt => $apply(|a: $T, b: $T| mask::<$T>(a > b)),
            BinaryOp::Ge => $apply(|a: $T, b: $T| mask::<$T>(a >= b)),
            BinaryOp::Lt => $apply(|a: $T, b: $T| mask::<$T>(a < b)),
            BinaryOp::Eq => $apply(|a: $T, b: $T| mask::<$T>(a == b)),
        }
    };
}

impl UnaryOp {
    /// Applies the map, reusing the operand's buffer when it is not shared.
    ///
    /// ```
    /// # use secondo_tensor::{Tensor, UnaryOp};
    /// let t = Tensor::from_vec(vec![1], vec![3.0f64]).unwrap();
    /// assert_eq!(UnaryOp::Powf(2.0).apply(t).to_f64_vec(), vec![9.0]);
    /// ```
    pub fn apply(self, a: Tensor) -> Tensor {
        let shape = a.shape().to_vec();
        crate::dispatch!(a, _v, T => {
            let mut data: Vec<T> = a.into_typed_vec().expect("dtype matches dispatch");
            unary_loop(self, &mut data);
            Tensor::from_typed(shape, data)
        })
    }
}

impl BinaryOp {
    /// Applies the map; operands must have equal shapes, or one of them a
    /// single element, or the shape of the other's trailing axes (repeated over
    /// the leading ones, e.g. a bias added to a batch).
    ///
    /// ```
    /// # use secondo_tensor::{BinaryOp, Tensor};
    /// let a = Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap();
    /// let b = Tensor::from_vec(vec![3], vec![1.0f64, 2.0, 3.0]).unwrap();
    /// assert!(BinaryOp::Add.apply(a.clone(), b).is_err());
    /// let batch = Tensor::from_vec(vec![2, 2], vec![10.0f64, 20.0, 30.0, 40.0]).unwrap();
    /// let sum = BinaryOp::Sub.apply(batch, a).unwrap();
    /// assert_eq!(sum.to_f64_vec(), vec![9.0, 18.0, 29.0, 38.0]);
    /// ```
    pub fn apply(self, a: Tensor, b: Tensor) -> Result<Tensor, TensorError> {
        if a.dtype() != b.dtype() {
            return Err(TensorError::DTypeMismatch {
                op: format!("{self:?}"),
                a: a.dtype(),
                b: b.dtype(),
            });
        }
        let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
        crate::dispatch!(a, _v, T => {
            if sa == sb {
                let bv = b.typed::<T>("binary")?;
                let mut out: Vec<T> = a.into_typed_vec().expect("dtype matches dispatch");
                with_binary_fn!(self, T, |f| zip_into(&mut out, bv, f));
                Ok(Tensor::from_typed(sa, out))
            } else if b.numel() == 1 {
                // Two single elements: the result has the more axes.
                let shape = if a.numel() == 1 && sb.len() > sa.len() { sb } else { sa };
                let s = b.typed::<T>("binary")?[0];
                let mut out: Vec<T> = a.into_typed_vec().expect("dtype");
                with_binary_fn!(self, T, |f| with_scalar(&mut out, s, f, false));
                Ok(Tensor::from_typed(shape, out))
            } else if a.numel() == 1 {
                let s = a.typed::<T>("binary")?[0];
                let mut out: Vec<T> = b.into_typed_vec().expect("dtype");
                with_binary_fn!(self, T, |f| with_scalar(&mut out, s, f, true));
                Ok(Tensor::from_typed(sb, out))
            } else if sa.ends_with(&sb) {
                let bv = b.typed::<T>("binary")?;
                let mut out: Vec<T> = a.into_typed_vec().expect("dtype");
                with_binary_fn!(self, T, |f| zip_repeating(&mut out, bv, f, false));
                Ok(Tensor::from_typed(sa, out))
            } else if sb.ends_with(&sa) {
                let av = a.typed::<T>("binary")?;
                let mut out: Vec<T> = b.into_typed_vec().expect("dtype");
                with_binary_fn!(self, T, |f| zip_repeating(&mut out, av, f, true));
                Ok(Tensor::from_typed(sb, out))
            } else {
                Err(TensorError::ShapeMismatch { op: format!("{self:?}"), a: sa, b: sb })
            }
        })
    }
}

impl Tensor {
    /// `where(cond, a, b)`: `a` where `cond` is nonzero, else `b`; `a` and `b` of
    /// the result's shape or single elements, `cond` of the result's shape or of
    /// its trailing axes (repeated over the leading ones).
    ///
    /// ```
    /// use secondo_tensor::Tensor;
    /// let c = Tensor::from_vec(vec![2], vec![1.0f64, 0.0]).unwrap();
    /// let a = Tensor::from_vec(vec![2], vec![5.0f64, 6.0]).unwrap();
    /// let b = Tensor::from_vec(vec![], vec![0.0f64]).unwrap();
    /// assert_eq!(Tensor::select(&c, &a, &b).unwrap().to_f64_vec(), vec![5.0, 0.0]);
    /// let rows = Tensor::from_vec(vec![2, 2], vec![5.0f64, 6.0, 7.0, 8.0]).unwrap();
    /// let picked = Tensor::select(&c, &rows, &b).unwrap();
    /// assert_eq!(picked.to_f64_vec(), vec![5.0, 0.0, 7.0, 0.0]);
    /// ```
    pub fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor, TensorError> {
        // The branches' shape, or with single-element branches the most axes
        // among all three (the condition's on a tie).
        let shape = [a, b]
            .iter()
            .find(|t| t.numel() != 1)
            .map(|t| t.shape())
            .unwrap_or_else(|| {
                [a.shape(), b.shape(), cond.shape()]
                    .into_iter()
                    .max_by_key(|s| s.len())
                    .expect("three candidates")
            })
            .to_vec();
        let mismatch = |t: &Tensor| TensorError::ShapeMismatch {
            op: "where".into(),
            a: shape.clone(),
            b: t.shape().to_vec(),
        };
        if let Some(t) = [a, b]
            .into_iter()
            .find(|t| t.numel() != 1 && t.shape() != shape.as_slice())
        {
            return Err(mismatch(t));
        }
        if !shape.ends_with(cond.shape()) {
            return Err(mismatch(cond));
        }
        let numel: usize = shape.iter().product();
        crate::dispatch!(cond, c, T => {
            let c: &[T] = c;
            let av = a.typed::<T>("where")?;
            let bv = b.typed::<T>("where")?;
            let z = T::zero();
            let mut out = vec![z; numel];
            // The condition repeats over the leading axes it lacks.
            let pick = |o: &mut [T], c: &[T], x: Option<&[T]>, y: Option<&[T]>| match (x, y) {
                (Some(x), Some(y)) => select_slices(o, c, x, y),
                (Some(x), None) => select_else_scalar(o, c, x, bv[0]),
                (None, Some(y)) => o
                    .iter_mut()
                    .zip(c.iter().zip(y))
                    .for_each(|(o, (&m, &y))| *o = if m != z { av[0] } else { y }),
                (None, None) => o
                    .iter_mut()
                    .zip(c)
                    .for_each(|(o, &m)| *o = if m != z { av[0] } else { bv[0] }),
            };
            let width = c.len().max(1);
            let run = |(k, o): (usize, &mut [T])| {
                let (x, y) = (repeat_part(av, k, width, numel), repeat_part(bv, k, width, numel));
                if o.len() >= PAR_MIN {
                    o.par_chunks_mut(CHUNK).enumerate().for_each(|(j, piece)| {
                        let r = j * CHUNK..j * CHUNK + piece.len();
                        pick(piece, &c[r.clone()], x.map(|x| &x[r.clone()]), y.map(|y| &y[r]))
                    })
                } else {
                    pick(o, c, x, y)
                }
            };
            if numel >= PAR_MIN {
                out.par_chunks_mut(width).enumerate().for_each(run);
            } else {
                out.chunks_mut(width).enumerate().for_each(run);
            }
            Ok(Tensor::from_typed(shape, out))
        })
    }
}

/// Part `k` of `v` in parts of `width`, or `None` for a single element
/// standing for all `numel`.
fn repeat_part<T>(v: &[T], k: usize, width: usize, numel: usize) -> Option<&[T]> {
    (v.len() == numel).then(|| &v[k * width..(k + 1) * width])
}

crate::avx2_kernel! {
    /// `out[i] = if c[i] ≠ 0 { a[i] } else { b[i] }`, as one vectorizable loop.
    fn select_slices<T: Element>(out: &mut [T], c: &[T], a: &[T], b: &[T]) {
        let z = T::zero();
        for (((o, &m), &x), &y) in out.iter_mut().zip(c).zip(a).zip(b) {
            *o = if m != z { x } else { y };
        }
    }
}

crate::avx2_kernel! {
    /// `out[i] = if c[i] ≠ 0 { a[i] } else { b }` (a ReLU), as one vectorizable loop.
    fn select_else_scalar<T: Element>(out: &mut [T], c: &[T], a: &[T], b: T) {
        let z = T::zero();
        for ((o, &m), &x) in out.iter_mut().zip(c).zip(a) {
            *o = if m != z { x } else { b };
        }
    }
}
