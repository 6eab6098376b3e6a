use std::fmt;

use secondo_tensor::DType;

use crate::prims::{conv, einsum, elementwise, leaves, movement, patches, pool, reduce, Family};
use crate::{GraphError, Op};

/// Index of a node in its graph. Nodes only refer to earlier nodes, so ids are
/// a topological order.
pub type NodeId = usize;

/// One operation with its operands and result type.
///
/// ```
/// use secondo_graph::Builder;
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F32);
/// let x = b.input("x", &[2]);
/// let g = b.finish().unwrap();
/// assert_eq!(g.node(x.id()).shape, vec![2]);
/// ```
#[derive(Debug, Clone)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Operand node ids.
    pub inputs: Vec<NodeId>,
    /// Result shape.
    pub shape: Vec<usize>,
    /// Result element type.
    pub dtype: DType,
}

/// An append-only graph of primitive operations.
///
/// ```
/// use secondo_graph::Builder;
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F64);
/// let x = b.input("x", &[2]);
/// let _y = x.exp();
/// assert_eq!(b.finish().unwrap().len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Graph {
    nodes: Vec<Node>,
}

fn build_err(op: &Op, reason: String) -> GraphError {
    GraphError::Build {
        op: op.to_string(),
        reason,
    }
}

impl Graph {
    /// An empty graph.
    ///
    /// ```
    /// assert!(secondo_graph::Graph::new().is_empty());
    /// ```
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Number of nodes.
    ///
    /// ```
    /// assert_eq!(secondo_graph::Graph::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    ///
    /// ```
    /// assert!(secondo_graph::Graph::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node with this id (panics on an id from another graph; see [`Graph::get`]).
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// let p = b.param("w", &[3]);
    /// assert_eq!(b.finish().unwrap().node(p.id()).shape, vec![3]);
    /// ```
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The node with this id, or an error.
    ///
    /// ```
    /// assert!(secondo_graph::Graph::new().get(0).is_err());
    /// ```
    pub fn get(&self, id: NodeId) -> Result<&Node, GraphError> {
        self.nodes.get(id).ok_or(GraphError::UnknownNode(id))
    }

    /// All nodes in topological order.
    ///
    /// ```
    /// assert_eq!(secondo_graph::Graph::new().nodes().len(), 0);
    /// ```
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The id of the input or parameter node with this name.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// let w = b.param("w", &[3]);
    /// assert_eq!(b.finish().unwrap().find_leaf("w"), Some(w.id()));
    /// ```
    pub fn find_leaf(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| match &n.op {
            Op::Input(x) | Op::Param(x) => x == name,
            _ => false,
        })
    }

    /// Floating-point operations of the graph's contractions
    /// ([`secondo_tensor::EinsumSpec::flops`]; operands that are one node are
    /// one tensor). Elementwise operations and reductions are memory-bound and
    /// not counted: the figure to set against a GEMM rate.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// let x = b.input("x", &[8, 3]);
    /// let w = b.param("w", &[5, 3]);
    /// let y = b.einsum("ni,oi->no", &[x, w]).square();
    /// let gram = b.einsum("ni,mi->nm", &[x, x]);
    /// let g = b.finish().unwrap();
    /// assert_eq!(g.flops(), 2 * 8 * 5 * 3 + 2 * (8 * 9 / 2) * 3);
    /// # let _ = (y, gram);
    /// ```
    pub fn flops(&self) -> u64 {
        self.nodes
            .iter()
            .map(|node| match &node.op {
                Op::Einsum(spec) => spec
                    .flops(&self.operand_shapes(node), &node.inputs)
                    .expect("a graph's einsums fit their operands"),
                Op::Conv(c) => 2 * c.multiply_adds(&self.operand_shapes(node), &node.shape),
                _ => 0,
            })
            .sum()
    }

    /// The shapes of `node`'s operands.
    fn operand_shapes(&self, node: &Node) -> Vec<&[usize]> {
        node.inputs
            .iter()
            .map(|&j| self.nodes[j].shape.as_slice())
            .collect()
    }

    /// Appends an operation after checking its operands; returns the new id.
    ///
    /// `shape` is required for leaves, `Reshape` and `Broadcast` (the target) and
    /// ignored otherwise.
    ///
    /// ```
    /// use secondo_graph::{Graph, Op};
    /// use secondo_tensor::{DType, UnaryOp};
    /// let mut g = Graph::new();
    /// let x = g.push(Op::Input("x".into()), vec![], Some(vec![2]), DType::F32).unwrap();
    /// let y = g.push(Op::Unary(UnaryOp::Exp), vec![x], None, DType::F32).unwrap();
    /// assert_eq!(g.node(y).shape, vec![2]);
    /// ```
    pub fn push(
        &mut self,
        op: Op,
        inputs: Vec<NodeId>,
        shape: Option<Vec<usize>>,
        dtype: DType,
    ) -> Result<NodeId, GraphError> {
        if let Some(&bad) = inputs.iter().find(|&&i| i >= self.nodes.len()) {
            return Err(GraphError::UnknownNode(bad));
        }
        if let Some(&i) = inputs.iter().find(|&&i| self.nodes[i].dtype != dtype) {
            return Err(build_err(
                &op,
                format!(
                    "operand {i} is {} but the graph is {dtype}",
                    self.nodes[i].dtype
                ),
            ));
        }
        let shape = self.infer_shape(&op, &inputs, shape)?;
        self.nodes.push(Node {
            op,
            inputs,
            shape,
            dtype,
        });
        Ok(self.nodes.len() - 1)
    }

    /// The shape of `op` on the nodes `inputs`, by its family's shape rule.
    fn infer_shape(
        &self,
        op: &Op,
        inputs: &[NodeId],
        shape: Option<Vec<usize>>,
    ) -> Result<Vec<usize>, GraphError> {
        let operands: Vec<&[usize]> = inputs
            .iter()
            .map(|&i| self.nodes[i].shape.as_slice())
            .collect();
        match op.family() {
            Family::Leaf(leaf) => leaves::shape(leaf, &operands, shape),
            Family::Elementwise(e) => elementwise::shape(e, &operands),
            Family::Reduce(_, axes) => reduce::shape(axes, &operands),
            Family::Movement(m) => movement::shape(m, &operands, shape),
            Family::Einsum(spec) => einsum::shape(spec, &operands),
            Family::Patches(p) => patches::shape(p, &operands),
            Family::Pool(p) => pool::shape(p, &operands),
            Family::Conv(c) => conv::shape(c, &operands),
        }
        .map_err(|reason| build_err(op, reason))
    }
}

/// What [`Graph::rebuild`] does with one node.
pub(crate) enum Decision {
    /// Copy it.
    Keep,
    /// Leave it out (nothing kept may use it).
    Drop,
    /// Use this node of the new graph instead.
    Replace(NodeId),
}

impl Graph {
    /// Copies the graph node by node, letting `decide` keep, drop or replace each
    /// one (it sees the node with operands already renumbered and the id a kept
    /// node would get); returns the new graph and the outputs' new ids.
    pub(crate) fn rebuild(
        &self,
        mut decide: impl FnMut(NodeId, &Node, NodeId) -> Decision,
        outputs: &[NodeId],
    ) -> (Graph, Vec<NodeId>) {
        let mut map = vec![usize::MAX; self.nodes.len()];
        let mut out = Graph::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let mut node = node.clone();
            node.inputs.iter_mut().for_each(|j| *j = map[*j]);
            match decide(i, &node, out.nodes.len()) {
                Decision::Keep => {
                    map[i] = out.nodes.len();
                    out.nodes.push(node);
                }
                Decision::Drop => {}
                Decision::Replace(j) => map[i] = j,
            }
        }
        (out, outputs.iter().map(|&o| map[o]).collect())
    }
}

impl fmt::Display for Graph {
    /// One line per node: `%id = op(%inputs) : shape`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nodes.iter().enumerate() {
            let args: Vec<String> = n.inputs.iter().map(|a| format!("%{a}")).collect();
            writeln!(
                f,
                "%{i} = {}({}) : {:?} {}",
                n.op,
                args.join(", "),
                n.shape,
                n.dtype
            )?;
        }
        Ok(())
    }
}
