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

fn map_inplace<T: Element>(v: &mut [T], f: impl Fn(T) -> T + Sync) {
    if v.len() >= PAR_MIN {
        v.par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|x| *x = f(*x)));
    } else {
        v.iter_mut().for_each(|x| *x = f(*x));
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

fn unary_fn<T: Element>(op: UnaryOp) -> impl Fn(T) -> T + Sync {
    move |x: T| match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Erf => x.erf(),
        UnaryOp::Powf(p) => {
            if p == 2.0 {
                x * x
            } else if p == 0.5 {
                x.sqrt()
            } else if p == -1.0 {
                x.recip()
            } else {
                x.powf(T::from_f64(p))
            }
        }
    }
}

fn binary_fn<T: Element>(op: BinaryOp) -> impl Fn(T, T) -> T + Sync {
    let mask = |c: bool| if c { T::one() } else { T::zero() };
    move |a: T, b: T| match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => {
            if a >= b || b.is_nan() {
                a
            } else {
                b
            }
        }
        BinaryOp::Gt => mask(a > b),
        BinaryOp::Ge => mask(a >= b),
        BinaryOp::Lt => mask(a < b),
        BinaryOp::Eq => mask(a == b),
    }
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
            map_inplace(&mut data, unary_fn::<T>(self));
            Tensor::from_typed(shape, data)
        })
    }
}

impl BinaryOp {
    /// Applies the map; operands must have equal shapes, or one of them a single element.
    ///
    /// ```
    /// # use secondo_tensor::{BinaryOp, Tensor};
    /// let a = Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap();
    /// let b = Tensor::from_vec(vec![3], vec![1.0f64, 2.0, 3.0]).unwrap();
    /// assert!(BinaryOp::Add.apply(a, b).is_err());
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
            let f = binary_fn::<T>(self);
            if sa == sb {
                let bv = b.typed::<T>("binary")?;
                let mut out: Vec<T> = a.into_typed_vec().expect("dtype matches dispatch");
                zip_into(&mut out, bv, f);
                Ok(Tensor::from_typed(sa, out))
            } else if b.numel() == 1 {
                let s = b.typed::<T>("binary")?[0];
                let mut out: Vec<T> = a.into_typed_vec().expect("dtype");
                map_inplace(&mut out, move |x| f(x, s));
                Ok(Tensor::from_typed(sa, out))
            } else if a.numel() == 1 {
                let s = a.typed::<T>("binary")?[0];
                let mut out: Vec<T> = b.into_typed_vec().expect("dtype");
                map_inplace(&mut out, move |x| f(s, x));
                Ok(Tensor::from_typed(sb, out))
            } else {
                Err(TensorError::ShapeMismatch { op: format!("{self:?}"), a: sa, b: sb })
            }
        })
    }
}

impl Tensor {
    /// `where(cond, a, b)`: `a` where `cond` is nonzero, else `b`; all of equal shape
    /// (or single-element `a`/`b`).
    ///
    /// ```
    /// use secondo_tensor::Tensor;
    /// let c = Tensor::from_vec(vec![2], vec![1.0f64, 0.0]).unwrap();
    /// let a = Tensor::from_vec(vec![2], vec![5.0f64, 6.0]).unwrap();
    /// let b = Tensor::from_vec(vec![], vec![0.0f64]).unwrap();
    /// assert_eq!(Tensor::select(&c, &a, &b).unwrap().to_f64_vec(), vec![5.0, 0.0]);
    /// ```
    pub fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor, TensorError> {
        let shape = cond.shape().to_vec();
        for t in [a, b] {
            if t.numel() != 1 && t.shape() != shape.as_slice() {
                return Err(TensorError::ShapeMismatch {
                    op: "where".into(),
                    a: shape,
                    b: t.shape().to_vec(),
                });
            }
        }
        crate::dispatch!(cond, c, T => {
            let av = a.typed::<T>("where")?;
            let bv = b.typed::<T>("where")?;
            let pick = |v: &[T], i: usize| if v.len() == 1 { v[0] } else { v[i] };
            let out: Vec<T> = c
                .iter()
                .enumerate()
                .map(|(i, &m)| if m != T::zero() { pick(av, i) } else { pick(bv, i) })
                .collect();
            Ok(Tensor::from_typed(shape, out))
        })
    }
}
