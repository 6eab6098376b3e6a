//! Vectorization (`vmap`) as a graph-to-graph transformation.
//!
//! Every node that depends on the batched nodes is re-emitted with a leading
//! batch axis. Like [`Builder::vjp`] and [`Builder::jvp`], the rules are written
//! with the graph's primitives, so the three transformations compose in any
//! order (per-sample gradients are `vmap` of `grad`).

use crate::prims::{
    conv, einsum, elementwise, leaves, movement, patches, pool, reduce, Batched, Family, Primal,
};
use crate::{Builder, GraphError, Node, NodeId, Var};

impl Builder {
    /// Vectorizes the computation of `outputs` over a new leading axis of size
    /// `size`: each node of `batched` is replaced by the matching node of
    /// `replacements`, whose shape is `[size]` followed by the original shape.
    /// Every node that depends on them is re-emitted with a leading batch axis;
    /// nodes that do not are shared, unbatched. Returns the batched outputs, of
    /// shape `[size]` followed by the output's shape (an output that does not
    /// depend on `batched` is broadcast).
    ///
    /// Per-sample gradients of `(wᵀx)²`, i.e. `2 (wᵀx) x` for each row of `xs`:
    ///
    /// ```
    /// use secondo_graph::{Builder, Executable, Feeds};
    /// use secondo_tensor::{DType, Tensor};
    /// let b = Builder::new(DType::F64);
    /// let w = b.param("w", &[2]);
    /// let x = b.input("x", &[2]); // one sample
    /// let g = b.grad((w * x).sum_all().square(), &[w]).unwrap()[0];
    /// let xs = b.input("xs", &[3, 2]); // three samples
    /// let per_sample = b.vmap(&[g], &[x], &[xs], 3).unwrap()[0];
    /// assert_eq!(per_sample.shape(), vec![3, 2]);
    /// assert!(b.vmap(&[g], &[x], &[w], 3).is_err()); // w is not [3, 2]
    ///
    /// let exe = Executable::compile(&b.finish().unwrap(), &[per_sample.id()]).unwrap();
    /// let mut f = Feeds::new();
    /// f.insert("w", Tensor::from_vec(vec![2], vec![1.0f64, 1.0]).unwrap());
    /// let rows = vec![1.0f64, 0.0, 0.0, 2.0, 1.0, 1.0];
    /// f.insert("xs", Tensor::from_vec(vec![3, 2], rows).unwrap());
    /// let out = exe.run(&f).unwrap()[0].to_f64_vec();
    /// assert_eq!(out, vec![2.0, 0.0, 0.0, 8.0, 4.0, 4.0]);
    /// ```
    pub fn vmap<'a>(
        &'a self,
        outputs: &[Var<'a>],
        batched: &[Var<'a>],
        replacements: &[Var<'a>],
        size: usize,
    ) -> Result<Vec<Var<'a>>, GraphError> {
        self.check()?;
        let err = |reason: String| GraphError::Build {
            op: "vmap".into(),
            reason,
        };
        if batched.len() != replacements.len() {
            return Err(err(format!(
                "{} batched nodes but {} replacements",
                batched.len(),
                replacements.len()
            )));
        }
        if size == 0 {
            return Err(err("the batch size must be positive".into()));
        }
        let n = self.graph().len();
        for v in outputs.iter().chain(batched).chain(replacements) {
            if !std::ptr::eq(v.builder(), self) {
                return Err(err(format!("node {} belongs to another builder", v.id())));
            }
            if v.id() >= n {
                return Err(GraphError::UnknownNode(v.id()));
            }
        }
        let mut map: Vec<Option<Var<'a>>> = vec![None; n];
        for (x, r) in batched.iter().zip(replacements) {
            let want = batched_shape(size, &x.shape());
            if r.shape() != want {
                return Err(err(format!(
                    "node {} has shape {:?}, so its replacement needs shape {want:?}, got {:?}",
                    x.id(),
                    x.shape(),
                    r.shape()
                )));
            }
            if map[x.id()].is_some() {
                return Err(err(format!("node {} is batched twice", x.id())));
            }
            map[x.id()] = Some(*r);
        }
        let active = self.active_nodes(outputs, batched, n);
        let start = batched.iter().map(|v| v.id()).min().unwrap_or(n);
        for i in start..n {
            if !active[i] || map[i].is_some() {
                continue;
            }
            let node = self.graph().node(i).clone();
            let args: Vec<Option<Var<'a>>> = node.inputs.iter().map(|&j| map[j]).collect();
            map[i] = Some(batch_rule(self, &node, i, args, size));
        }
        let result = outputs
            .iter()
            .map(|o| map[o.id()].unwrap_or_else(|| lift(*o, size)))
            .collect();
        self.check()?;
        Ok(result)
    }
}

/// The batched version of node `id` given its operands' batched versions
/// (`None` = not batched: the original operand is shared), by its family's
/// rule.
fn batch_rule<'a>(
    b: &'a Builder,
    node: &Node,
    id: NodeId,
    args: Vec<Option<Var<'a>>>,
    size: usize,
) -> Var<'a> {
    let site = Batched {
        primal: Primal::of(b, node, id),
        args,
        size,
    };
    match node.op.family() {
        Family::Leaf(leaf) => leaves::batch(leaf, &site),
        Family::Elementwise(e) => elementwise::batch(e, &site),
        Family::Reduce(r, axes) => reduce::batch(r, axes, &site),
        Family::Movement(m) => movement::batch(m, &site),
        Family::Einsum(spec) => einsum::batch(spec, &site),
        Family::Patches(op) => patches::batch(op, &site),
        Family::Pool(op) => pool::batch(op, &site),
        Family::Conv(op) => conv::batch(op, &site),
    }
}

/// `[size]` followed by `shape`.
pub(crate) fn batched_shape(size: usize, shape: &[usize]) -> Vec<usize> {
    std::iter::once(size).chain(shape.iter().copied()).collect()
}

/// An unbatched node repeated along a new leading axis.
pub(crate) fn lift(v: Var<'_>, size: usize) -> Var<'_> {
    v.broadcast_to(&batched_shape(size, &v.shape()))
}
