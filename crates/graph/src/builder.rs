use std::cell::{Ref, RefCell};

use secondo_tensor::DType;

use crate::{Graph, GraphError, NodeId, Op};

/// Builds a graph with operator overloading and NumPy-style broadcasting.
///
/// The methods that add a primitive live with its family (`prims/`).
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
}
