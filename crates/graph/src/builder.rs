use std::cell::{Ref, RefCell};
use std::ops;

use secondo_tensor::{broadcast_shapes, BinaryOp, DType, EinsumSpec, ReduceOp, Tensor, UnaryOp};

use crate::{Graph, GraphError, NodeId, Op};

/// Builds a graph with operator overloading and NumPy-style broadcasting.
///
/// Shape errors do not panic: the first one is kept and returned by
/// [`Builder::finish`] (or [`Builder::check`]).
///
/// ```
/// use secondo_graph::Builder;
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F32);
/// let x = b.input("x", &[4, 3]);
/// let w = b.param("w", &[2, 3]);
/// let bias = b.param("b", &[2]);
/// let y = b.einsum("ni,oi->no", &[x, w]) + bias;
/// assert_eq!(y.shape(), vec![4, 2]);
/// assert!(b.finish().is_ok());
/// ```
#[derive(Debug)]
pub struct Builder {
    graph: RefCell<Graph>,
    error: RefCell<Option<GraphError>>,
    dtype: DType,
}

/// A node of the graph under construction; cheap to copy.
///
/// ```
/// use secondo_graph::Builder;
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F64);
/// let x = b.input("x", &[2]);
/// let y = (x * 2.0 + 1.0).tanh();
/// assert_eq!(y.shape(), vec![2]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Var<'b> {
    b: &'b Builder,
    id: NodeId,
}

impl Builder {
    /// An empty builder for graphs of element type `dtype`.
    ///
    /// ```
    /// let b = secondo_graph::Builder::new(secondo_tensor::DType::F32);
    /// assert!(b.finish().unwrap().is_empty());
    /// ```
    pub fn new(dtype: DType) -> Builder {
        Builder::from_graph(Graph::new(), dtype)
    }

    /// Continues building on an existing graph (e.g. to differentiate it).
    ///
    /// ```
    /// use secondo_graph::Builder;
    /// use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[1]);
    /// let g = b.finish().unwrap();
    /// let b2 = Builder::from_graph(g, DType::F64);
    /// let y = b2.var(x.id()).exp();
    /// assert_eq!(y.id(), 1);
    /// ```
    pub fn from_graph(graph: Graph, dtype: DType) -> Builder {
        Builder {
            graph: RefCell::new(graph),
            error: RefCell::new(None),
            dtype,
        }
    }

    /// The element type of the graph.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// assert_eq!(Builder::new(DType::F64).dtype(), DType::F64);
    /// ```
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Wraps an existing node id.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[1]);
    /// assert_eq!(b.var(x.id()).shape(), vec![1]);
    /// ```
    pub fn var(&self, id: NodeId) -> Var<'_> {
        Var { b: self, id }
    }

    /// A read view of the graph built so far.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// b.input("x", &[1]);
    /// assert_eq!(b.graph().len(), 1);
    /// ```
    pub fn graph(&self) -> Ref<'_, Graph> {
        self.graph.borrow()
    }

    /// The first error recorded, if any.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// assert!(Builder::new(DType::F64).check().is_ok());
    /// ```
    pub fn check(&self) -> Result<(), GraphError> {
        match self.error.borrow().as_ref() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// A copy of the graph built so far, or the first error recorded while
    /// building it. The builder stays usable (node handles keep working).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// assert!(Builder::new(DType::F64).finish().is_ok());
    /// ```
    pub fn finish(&self) -> Result<Graph, GraphError> {
        self.check()?;
        Ok(self.graph.borrow().clone())
    }

    /// Records an error as if an operation had failed (first error wins).
    pub(crate) fn fail(&self, e: GraphError) {
        self.error.borrow_mut().get_or_insert(e);
    }

    /// Appends an operation; on error records it and returns a stand-in node.
    pub(crate) fn push(&self, op: Op, inputs: Vec<NodeId>, shape: Option<Vec<usize>>) -> Var<'_> {
        let fallback = inputs.first().copied();
        let pushed = self.graph.borrow_mut().push(op, inputs, shape, self.dtype);
        match pushed {
            Ok(id) => self.var(id),
            Err(e) => {
                self.fail(e);
                self.var(fallback.unwrap_or(0))
            }
        }
    }

    /// A named data input.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// assert_eq!(b.input("x", &[8, 784]).shape(), vec![8, 784]);
    /// ```
    pub fn input(&self, name: &str, shape: &[usize]) -> Var<'_> {
        self.push(Op::Input(name.into()), vec![], Some(shape.to_vec()))
    }

    /// A named parameter.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// assert_eq!(b.param("0.weight", &[10, 784]).shape(), vec![10, 784]);
    /// ```
    pub fn param(&self, name: &str, shape: &[usize]) -> Var<'_> {
        self.push(Op::Param(name.into()), vec![], Some(shape.to_vec()))
    }

    /// A constant tensor (converted to the graph's dtype).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::{DType, Tensor};
    /// let b = Builder::new(DType::F32);
    /// let c = b.constant(Tensor::full(vec![2], 1.0, DType::F64));
    /// assert_eq!(c.shape(), vec![2]);
    /// ```
    pub fn constant(&self, t: Tensor) -> Var<'_> {
        self.push(Op::Constant(t.to_dtype(self.dtype)), vec![], None)
    }

    /// A rank-0 constant.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// assert!(Builder::new(DType::F32).scalar(2.0).shape().is_empty());
    /// ```
    pub fn scalar(&self, v: f64) -> Var<'_> {
        self.constant(Tensor::scalar(v, self.dtype))
    }

    /// A constant filled with zeros.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// assert_eq!(Builder::new(DType::F32).zeros(&[3]).shape(), vec![3]);
    /// ```
    pub fn zeros(&self, shape: &[usize]) -> Var<'_> {
        self.scalar(0.0).broadcast_to(shape)
    }

    /// Tensor contraction; see [`secondo_tensor::einsum`] for the notation.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// let g = b.input("g", &[8, 3]);
    /// let x = b.input("x", &[8, 5]);
    /// assert_eq!(b.einsum("no,ni->oi", &[g, x]).shape(), vec![3, 5]);
    /// ```
    pub fn einsum<'a>(&'a self, spec: &str, operands: &[Var<'a>]) -> Var<'a> {
        let ids: Vec<NodeId> = operands.iter().map(|v| v.id).collect();
        match spec.parse::<EinsumSpec>() {
            Ok(s) => self.push(Op::Einsum(s), ids, None),
            Err(e) => {
                self.fail(GraphError::Build {
                    op: "einsum".into(),
                    reason: e.to_string(),
                });
                self.var(ids.first().copied().unwrap_or(0))
            }
        }
    }

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
        self.push(Op::Where, vec![c.id, fit(a).id, fit(b).id], None)
    }
}

impl<'b> Var<'b> {
    /// The node id.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[1]).id(), 0);
    /// ```
    pub fn id(self) -> NodeId {
        self.id
    }

    /// The builder this node belongs to.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[1]);
    /// assert_eq!(x.builder().dtype(), DType::F64);
    /// ```
    pub fn builder(self) -> &'b Builder {
        self.b
    }

    /// The node's shape.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 5]).shape(), vec![2, 5]);
    /// ```
    pub fn shape(self) -> Vec<usize> {
        self.b.graph.borrow().node(self.id).shape.clone()
    }

    /// Number of elements.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 5]).numel(), 10);
    /// ```
    pub fn numel(self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the node is zero by construction: a constant of zeros, or a
    /// reshape, permutation or broadcast of one (what `jvp` returns for an
    /// output that does not depend on the inputs).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[3]);
    /// assert!(b.zeros(&[3]).is_zero());
    /// assert!(!(x * 0.0).is_zero());
    /// ```
    pub fn is_zero(self) -> bool {
        let g = self.b.graph.borrow();
        let mut id = self.id;
        loop {
            let node = g.node(id);
            match &node.op {
                Op::Constant(t) => return t.to_f64_vec().iter().all(|&v| v == 0.0),
                Op::Reshape | Op::Permute(_) | Op::Broadcast => id = node.inputs[0],
                _ => return false,
            }
        }
    }

    fn unary(self, op: UnaryOp) -> Var<'b> {
        self.b.push(Op::Unary(op), vec![self.id], None)
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
        let (sa, sb) = (self.shape(), other.shape());
        if sa == sb || sa.is_empty() || sb.is_empty() {
            return self.b.push(Op::Binary(op), vec![self.id, other.id], None);
        }
        match broadcast_shapes(&sa, &sb) {
            Some(s) => {
                let a = self.broadcast_to(&s);
                let c = other.broadcast_to(&s);
                self.b.push(Op::Binary(op), vec![a.id, c.id], None)
            }
            None => {
                self.b.fail(GraphError::Build {
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

    /// Sum over `axes` (removed from the shape).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 3]).sum(&[1]).shape(), vec![2]);
    /// ```
    pub fn sum(self, axes: &[usize]) -> Var<'b> {
        if axes.is_empty() {
            return self;
        }
        self.b.push(
            Op::Reduce(ReduceOp::Sum, axes.to_vec()),
            vec![self.id],
            None,
        )
    }

    /// Sum of all elements (rank 0).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert!(b.input("x", &[2, 3]).sum_all().shape().is_empty());
    /// ```
    pub fn sum_all(self) -> Var<'b> {
        let axes: Vec<usize> = (0..self.shape().len()).collect();
        self.sum(&axes)
    }

    /// Mean over `axes`.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 3]).mean(&[0]).shape(), vec![3]);
    /// ```
    pub fn mean(self, axes: &[usize]) -> Var<'b> {
        let shape = self.shape();
        let count: usize = axes.iter().filter_map(|&a| shape.get(a)).product();
        self.sum(axes) * (1.0 / count.max(1) as f64)
    }

    /// Maximum over `axes` (removed from the shape).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 3]).max_over(&[1]).shape(), vec![2]);
    /// ```
    pub fn max_over(self, axes: &[usize]) -> Var<'b> {
        self.b.push(
            Op::Reduce(ReduceOp::Max, axes.to_vec()),
            vec![self.id],
            None,
        )
    }

    /// Same values under a new shape.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 3]).reshape(&[6]).shape(), vec![6]);
    /// ```
    pub fn reshape(self, shape: &[usize]) -> Var<'b> {
        if self.shape() == shape {
            return self;
        }
        self.b
            .push(Op::Reshape, vec![self.id], Some(shape.to_vec()))
    }

    /// Axis permutation.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[2, 3]).permute(&[1, 0]).shape(), vec![3, 2]);
    /// ```
    pub fn permute(self, perm: &[usize]) -> Var<'b> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == self.shape().len() {
            return self;
        }
        self.b.push(Op::Permute(perm.to_vec()), vec![self.id], None)
    }

    /// Broadcast to `shape` (NumPy rules).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("x", &[3]).broadcast_to(&[2, 3]).shape(), vec![2, 3]);
    /// ```
    pub fn broadcast_to(self, shape: &[usize]) -> Var<'b> {
        if self.shape() == shape {
            return self;
        }
        self.b
            .push(Op::Broadcast, vec![self.id], Some(shape.to_vec()))
    }

    /// One-hot encoding of class indices into a new last axis.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("y", &[8]).one_hot(10).shape(), vec![8, 10]);
    /// ```
    pub fn one_hot(self, classes: usize) -> Var<'b> {
        self.b.push(Op::OneHot(classes), vec![self.id], None)
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
                self.binary($op, self.b.scalar(rhs))
            }
        }
        impl<'b> ops::$Trait<Var<'b>> for f64 {
            type Output = Var<'b>;
            fn $method(self, rhs: Var<'b>) -> Var<'b> {
                rhs.b.scalar(self).binary($op, rhs)
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
