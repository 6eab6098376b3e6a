//! Elementwise primitives: `Unary` maps, `Binary` maps and `where`.
//!
//! Operands have the result's shape or are single elements; a binary operand
//! or a condition may also cover only the result's trailing axes (the kernels
//! repeat it). The Builder broadcasts explicitly, so the transformations see
//! one canonical form, but the rules accept the shorter operands the passes
//! leave: a cotangent is summed over the axes its operand lacks, and a batched
//! operand's batch axis is lined up with the result's.

use std::ops;

use secondo_tensor::{broadcast_shapes, BinaryOp, Tensor, TensorError, UnaryOp};

use super::{arity, Batched, Primal};
use crate::{Builder, GraphError, Op, Var};

/// A member of the family.
#[derive(Clone, Copy)]
pub(crate) enum Elementwise {
    /// [`Op::Unary`].
    Unary(UnaryOp),
    /// [`Op::Binary`].
    Binary(BinaryOp),
    /// [`Op::Where`]: condition, then the values where it holds and where not.
    Where,
}

impl Elementwise {
    fn op(self) -> Op {
        match self {
            Elementwise::Unary(u) => Op::Unary(u),
            Elementwise::Binary(b) => Op::Binary(b),
            Elementwise::Where => Op::Where,
        }
    }
}

/// The result shape: the largest operand's, when every operand has it, is a
/// single element, or (a binary operand, a condition) covers its trailing axes.
pub(crate) fn shape(op: Elementwise, operands: &[&[usize]]) -> Result<Vec<usize>, String> {
    let n = match op {
        Elementwise::Unary(_) => 1,
        Elementwise::Binary(_) => 2,
        Elementwise::Where => 3,
    };
    arity(n, operands)?;
    if n == 1 {
        return Ok(operands[0].to_vec());
    }
    let full = operands
        .iter()
        .max_by_key(|x| x.len())
        .map(|x| x.to_vec())
        .unwrap_or_default();
    let fits = |k: usize| {
        let x = operands[k];
        x.is_empty() || *x == full || ((k == 0 || n == 2) && full.ends_with(x))
    };
    if (0..n).all(fits) {
        Ok(full)
    } else {
        Err(format!("operand shapes {operands:?} differ"))
    }
}

/// Evaluates on the operands (consumed, so a kernel may reuse a buffer).
pub(crate) fn eval(op: Elementwise, args: Vec<Tensor>) -> Result<Tensor, TensorError> {
    match op {
        Elementwise::Unary(u) => {
            let [x]: [Tensor; 1] = args.try_into().expect("the shape rule checked the arity");
            Ok(u.apply(x))
        }
        Elementwise::Binary(b) => {
            let [a, c]: [Tensor; 2] = args.try_into().expect("the shape rule checked the arity");
            b.apply(a, c)
        }
        Elementwise::Where => Tensor::select(&args[0], &args[1], &args[2]),
    }
}

/// `∂op/∂x · t` for a unary op at `x` (with `y = op(x)`), or `None` where
/// the derivative is zero.
///
/// The derivative of an elementwise map is diagonal, hence its own
/// transpose: the same product is the jvp (`t` a tangent) and the transpose
/// (`t` a cotangent), so each formula is stated here once. It is stated as
/// the product rather than as the derivative `d` itself so that `−t` and
/// `t / x` stay one node each (`t · d` would need `d = −1` or `1 / x` first).
pub(crate) fn derivative<'a>(op: UnaryOp, x: Var<'a>, y: Var<'a>, t: Var<'a>) -> Option<Var<'a>> {
    Some(match op {
        UnaryOp::Neg => -t,
        UnaryOp::Exp => t * y,
        UnaryOp::Log => t / x,
        UnaryOp::Tanh => t * (1.0 - y.square()),
        UnaryOp::Erf => t * ((-x.square()).exp() * std::f64::consts::FRAC_2_SQRT_PI),
        UnaryOp::Powf(0.0) => return None,
        UnaryOp::Powf(1.0) => t,
        UnaryOp::Powf(2.0) => t * (x * 2.0),
        UnaryOp::Powf(p) => t * (x.powf(p - 1.0) * p),
    })
}

/// `∂op/∂(operand k) · t` for a binary op at `(a, c)` (with `y = op(a, c)`),
/// or `None` where it is zero (comparisons); diagonal, and so used by the jvp
/// and the transpose alike, like [`derivative`].
pub(crate) fn partial<'a>(
    op: BinaryOp,
    k: usize,
    [a, c]: [Var<'a>; 2],
    y: Var<'a>,
    t: Var<'a>,
) -> Option<Var<'a>> {
    Some(match (op, k) {
        (BinaryOp::Add, _) | (BinaryOp::Sub, 0) => t,
        (BinaryOp::Sub, _) => -t,
        (BinaryOp::Mul, 0) => t * c,
        (BinaryOp::Mul, _) => t * a,
        (BinaryOp::Div, 0) => t / c,
        (BinaryOp::Div, _) => -(t * y) / c,
        // Ties send the derivative to the first operand.
        (BinaryOp::Max, 0) => t * a.binary(BinaryOp::Ge, c),
        (BinaryOp::Max, _) => t * a.binary(BinaryOp::Lt, c),
        (BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Eq, _) => return None,
    })
}

/// The tangent of the result given the operands' tangents (`None` = zero):
/// the derivatives applied to the tangents, or, for `where` (linear in its
/// branches), `where` of the branch tangents.
pub(crate) fn jvp<'a>(op: Elementwise, p: &Primal<'a>, ts: &[Option<Var<'a>>]) -> Option<Var<'a>> {
    let x = |j: usize| p.operands[j];
    let y = p.result;
    match op {
        Elementwise::Unary(u) => derivative(u, x(0), y, ts[0]?),
        Elementwise::Binary(b) => {
            let terms: Vec<Var<'a>> = (0..2)
                .filter_map(|k| ts[k].and_then(|t| partial(b, k, [x(0), x(1)], y, t)))
                .collect();
            terms.into_iter().reduce(|a, b| a + b)
        }
        Elementwise::Where => {
            if ts[1].is_none() && ts[2].is_none() {
                return None;
            }
            let b = p.builder();
            let zero = || b.scalar(0.0);
            Some(b.select(x(0), ts[1].unwrap_or_else(zero), ts[2].unwrap_or_else(zero)))
        }
    }
}

/// Operand `k`'s cotangent given the result's cotangent `g`: the same
/// derivatives applied to `g`, or `g` selected into a branch of `where`;
/// summed over the axes a shorter operand lacks.
pub(crate) fn transpose<'a>(
    op: Elementwise,
    p: &Primal<'a>,
    k: usize,
    g: Var<'a>,
) -> Option<Var<'a>> {
    let x = |j: usize| p.operands[j];
    let y = p.result;
    let result_rank = y.shape().len();
    let operand_rank = x(k).shape().len();
    let fit = |v: Var<'a>| {
        if operand_rank < result_rank {
            let lacking: Vec<usize> = (0..result_rank - operand_rank).collect();
            v.sum(&lacking)
        } else {
            v
        }
    };
    match op {
        Elementwise::Unary(u) => derivative(u, x(0), y, g),
        Elementwise::Binary(b) => partial(b, k, [x(0), x(1)], y, g).map(fit),
        Elementwise::Where => {
            let b = p.builder();
            match k {
                0 => None,
                1 => Some(fit(b.select(x(0), g, b.scalar(0.0)))),
                _ => Some(fit(b.select(x(0), b.scalar(0.0), g))),
            }
        }
    }
}

/// The same op on the operands with a batch axis. A single-element operand
/// stays one where the kernel allows it; a batched single element (or a
/// condition over trailing axes) is laid out as `[size, 1, …, 1, rest]`
/// before broadcasting, since NumPy's rules would align its batch axis with
/// the result's last axes instead.
pub(crate) fn batch<'a>(op: Elementwise, site: &Batched<'a>) -> Var<'a> {
    let b = site.builder();
    let out = site.shape();
    let x = |k: usize| site.primal.operands[k];
    match op {
        Elementwise::Unary(_) => b.push(op.op(), vec![site.operand(0).id()], None),
        Elementwise::Binary(_) | Elementwise::Where => {
            let operands = (0..site.args.len())
                .map(|k| {
                    // The where kernel takes its result's shape from the condition.
                    let may_stay_scalar = !matches!(op, Elementwise::Where) || k > 0;
                    match site.args[k] {
                        Some(v) if v.shape() == out => v,
                        Some(v) => {
                            let rest = &v.shape()[1..];
                            let mut column = vec![1; out.len()];
                            column[0] = site.size;
                            column[out.len() - rest.len()..].copy_from_slice(rest);
                            v.reshape(&column).broadcast_to(&out)
                        }
                        None if may_stay_scalar && x(k).shape().is_empty() => x(k),
                        None => x(k).broadcast_to(&out),
                    }
                    .id()
                })
                .collect();
            b.push(op.op(), operands, None)
        }
    }
}

impl Builder {
    /// Elementwise `where(cond, a, b)` with broadcasting.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[3]);
    /// let relu = b.select(x.gt(b.scalar(0.0)), x, b.scalar(0.0));
    /// assert_eq!(relu.shape(), vec![3]);
    /// ```
    pub fn select<'a>(&'a self, cond: Var<'a>, a: Var<'a>, b: Var<'a>) -> Var<'a> {
        let shape = [cond, a, b]
            .iter()
            .try_fold(Vec::new(), |acc, v| broadcast_shapes(&acc, &v.shape()));
        let Some(shape) = shape else {
            self.fail(GraphError::Build {
                op: "where".into(),
                reason: format!(
                    "shapes {:?}, {:?} and {:?} do not broadcast",
                    cond.shape(),
                    a.shape(),
                    b.shape()
                ),
            });
            return a;
        };
        let fit = |v: Var<'a>| {
            if v.shape().is_empty() {
                v
            } else {
                v.broadcast_to(&shape)
            }
        };
        let c = cond.broadcast_to(&shape);
        self.push(Op::Where, vec![c.id(), fit(a).id(), fit(b).id()], None)
    }
}

impl<'b> Var<'b> {
    fn unary(self, op: UnaryOp) -> Var<'b> {
        self.builder().push(Op::Unary(op), vec![self.id()], None)
    }

    /// Elementwise binary operation with NumPy broadcasting (rank-0 operands stay scalars).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::{BinaryOp, DType};
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[4, 3]);
    /// let v = b.input("v", &[3]);
    /// assert_eq!(x.binary(BinaryOp::Max, v).shape(), vec![4, 3]);
    /// ```
    pub fn binary(self, op: BinaryOp, other: Var<'b>) -> Var<'b> {
        let b = self.builder();
        let (sa, sb) = (self.shape(), other.shape());
        if sa == sb || sa.is_empty() || sb.is_empty() {
            return b.push(Op::Binary(op), vec![self.id(), other.id()], None);
        }
        match broadcast_shapes(&sa, &sb) {
            Some(s) => {
                let a = self.broadcast_to(&s);
                let c = other.broadcast_to(&s);
                b.push(Op::Binary(op), vec![a.id(), c.id()], None)
            }
            None => {
                b.fail(GraphError::Build {
                    op: format!("{op:?}").to_lowercase(),
                    reason: format!("shapes {sa:?} and {sb:?} do not broadcast"),
                });
                self
            }
        }
    }

    /// `e^x`.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let _ = b.input("x", &[2]).exp();
    /// ```
    pub fn exp(self) -> Var<'b> {
        self.unary(UnaryOp::Exp)
    }

    /// Natural logarithm.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let _ = b.input("x", &[2]).log();
    /// ```
    pub fn log(self) -> Var<'b> {
        self.unary(UnaryOp::Log)
    }

    /// Hyperbolic tangent.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let _ = b.input("x", &[2]).tanh();
    /// ```
    pub fn tanh(self) -> Var<'b> {
        self.unary(UnaryOp::Tanh)
    }

    /// Error function.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let _ = b.input("x", &[2]).erf();
    /// ```
    pub fn erf(self) -> Var<'b> {
        self.unary(UnaryOp::Erf)
    }

    /// `x^p` for a constant `p`.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let _ = b.input("x", &[2]).powf(3.0);
    /// ```
    pub fn powf(self, p: f64) -> Var<'b> {
        self.unary(UnaryOp::Powf(p))
    }

    /// `x²`.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let _ = b.input("x", &[2]).square();
    /// ```
    pub fn square(self) -> Var<'b> {
        self.powf(2.0)
    }

    /// `√x`.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let _ = b.input("x", &[2]).sqrt();
    /// ```
    pub fn sqrt(self) -> Var<'b> {
        self.powf(0.5)
    }

    /// `|x|` as `max(x, -x)`.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let _ = b.input("x", &[2]).abs();
    /// ```
    pub fn abs(self) -> Var<'b> {
        self.max(-self)
    }

    /// Elementwise maximum.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[2]);
    /// let _ = x.max(b.scalar(0.0));
    /// ```
    pub fn max(self, other: Var<'b>) -> Var<'b> {
        self.binary(BinaryOp::Max, other)
    }

    /// `x > y` as a 0/1 mask (no gradient flows through it).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[2]);
    /// let _ = x.gt(b.scalar(0.0));
    /// ```
    pub fn gt(self, other: Var<'b>) -> Var<'b> {
        self.binary(BinaryOp::Gt, other)
    }

    /// `x == y` as a 0/1 mask.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[2]);
    /// let _ = x.eq(x);
    /// ```
    pub fn eq(self, other: Var<'b>) -> Var<'b> {
        self.binary(BinaryOp::Eq, other)
    }
}

macro_rules! overload {
    ($Trait:ident, $method:ident, $op:expr) => {
        impl<'b> ops::$Trait<Var<'b>> for Var<'b> {
            type Output = Var<'b>;
            fn $method(self, rhs: Var<'b>) -> Var<'b> {
                self.binary($op, rhs)
            }
        }
        impl<'b> ops::$Trait<f64> for Var<'b> {
            type Output = Var<'b>;
            fn $method(self, rhs: f64) -> Var<'b> {
                self.binary($op, self.builder().scalar(rhs))
            }
        }
        impl<'b> ops::$Trait<Var<'b>> for f64 {
            type Output = Var<'b>;
            fn $method(self, rhs: Var<'b>) -> Var<'b> {
                rhs.builder().scalar(self).binary($op, rhs)
            }
        }
    };
}

overload!(Add, add, BinaryOp::Add);
overload!(Sub, sub, BinaryOp::Sub);
overload!(Mul, mul, BinaryOp::Mul);
overload!(Div, div, BinaryOp::Div);

impl<'b> ops::Neg for Var<'b> {
    type Output = Var<'b>;
    fn neg(self) -> Var<'b> {
        self.unary(UnaryOp::Neg)
    }
}
