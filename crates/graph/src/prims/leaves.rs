//! Leaves (`Input`, `Param`, `Constant`) and `OneHot`: the primitives nothing
//! is differentiated through.
//!
//! Leaves have no operands; the transformations seed them (a tangent, a
//! batched replacement) and never reach their rules from an operand. One-hot
//! encodes class indices, data that is piecewise constant: its derivative is
//! zero, so its jvp and transpose are `None`, and it batches like an
//! elementwise map (the new axis is last).

use secondo_tensor::{one_hot, Tensor};

use super::{arity, target, Batched, Primal};
use crate::exec::EvalError;
use crate::vmap::lift;
use crate::{Builder, Feeds, GraphError, Node, Op, Var};

/// A member of the family.
#[derive(Clone, Copy)]
pub(crate) enum Leaf<'a> {
    /// [`Op::Input`].
    Input(&'a str),
    /// [`Op::Param`].
    Param(&'a str),
    /// [`Op::Constant`].
    Constant(&'a Tensor),
    /// [`Op::OneHot`] with this many classes.
    OneHot(usize),
}

/// The result shape: the target of a fed leaf, the constant's, or the index
/// shape with a new last axis of one entry per class.
pub(crate) fn shape(
    op: Leaf<'_>,
    operands: &[&[usize]],
    shape: Option<Vec<usize>>,
) -> Result<Vec<usize>, String> {
    match op {
        Leaf::Input(_) | Leaf::Param(_) => {
            arity(0, operands)?;
            target(shape)
        }
        Leaf::Constant(t) => {
            arity(0, operands)?;
            Ok(t.shape().to_vec())
        }
        Leaf::OneHot(classes) => {
            arity(1, operands)?;
            let mut s = operands[0].to_vec();
            s.push(classes);
            Ok(s)
        }
    }
}

/// The value of `node`: a fed leaf's tensor (checked against the node's shape
/// and dtype), the constant, or the one-hot encoding of the operand.
pub(crate) fn eval(
    op: Leaf<'_>,
    args: &[Tensor],
    node: &Node,
    feeds: &Feeds,
) -> Result<Tensor, EvalError> {
    let feed_err = |name: &str, reason: String| {
        EvalError::Graph(GraphError::Feed {
            name: name.to_string(),
            reason,
        })
    };
    Ok(match op {
        Leaf::Input(name) | Leaf::Param(name) => {
            let t = feeds
                .get(name)
                .ok_or_else(|| feed_err(name, "not fed".into()))?;
            if t.shape() != node.shape.as_slice() {
                return Err(feed_err(
                    name,
                    format!("expected shape {:?}, got {:?}", node.shape, t.shape()),
                ));
            }
            if t.dtype() != node.dtype {
                return Err(feed_err(
                    name,
                    format!("expected dtype {}, got {}", node.dtype, t.dtype()),
                ));
            }
            t.clone()
        }
        Leaf::Constant(t) => t.clone(),
        Leaf::OneHot(classes) => one_hot(&args[0], classes)?,
    })
}

/// No tangent: leaves are seeded by `jvp`, one-hot is piecewise constant.
/// (The `match` makes a new member of the family decide.)
pub(crate) fn jvp<'a>(op: Leaf<'_>, _p: &Primal<'a>, _ts: &[Option<Var<'a>>]) -> Option<Var<'a>> {
    match op {
        Leaf::Input(_) | Leaf::Param(_) | Leaf::Constant(_) | Leaf::OneHot(_) => None,
    }
}

/// No cotangent reaches an operand: leaves have none, one-hot's indices get
/// none.
pub(crate) fn transpose<'a>(
    op: Leaf<'_>,
    _p: &Primal<'a>,
    _k: usize,
    _g: Var<'a>,
) -> Option<Var<'a>> {
    match op {
        Leaf::Input(_) | Leaf::Param(_) | Leaf::Constant(_) | Leaf::OneHot(_) => None,
    }
}

/// A leaf is shared by all samples (repeated); one-hot encodes the batched
/// indices.
pub(crate) fn batch<'a>(op: Leaf<'_>, site: &Batched<'a>) -> Var<'a> {
    match op {
        Leaf::Input(_) | Leaf::Param(_) | Leaf::Constant(_) => lift(site.primal.result, site.size),
        Leaf::OneHot(classes) => site.operand(0).one_hot(classes),
    }
}

impl Builder {
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
        self.push(Op::Constant(t.to_dtype(self.dtype())), vec![], None)
    }

    /// A rank-0 constant.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// assert!(Builder::new(DType::F32).scalar(2.0).shape().is_empty());
    /// ```
    pub fn scalar(&self, v: f64) -> Var<'_> {
        self.constant(Tensor::scalar(v, self.dtype()))
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
}

impl<'b> Var<'b> {
    /// One-hot encoding of class indices into a new last axis.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(b.input("y", &[8]).one_hot(10).shape(), vec![8, 10]);
    /// ```
    pub fn one_hot(self, classes: usize) -> Var<'b> {
        self.builder()
            .push(Op::OneHot(classes), vec![self.id()], None)
    }
}
