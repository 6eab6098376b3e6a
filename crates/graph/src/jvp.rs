//! Forward-mode differentiation as a graph-to-graph transformation.
//!
//! Like [`Builder::vjp`], the rules are written with the builder's primitives,
//! so `jvp` and `vjp` compose in either order (Hessian-vector products are
//! `jvp` of `vjp`).

use crate::prims::{
    conv, einsum, elementwise, leaves, movement, patches, pool, reduce, Family, Primal,
};
use crate::vjp::{accumulate, check_pairs};
use crate::{Builder, GraphError, Node, NodeId, Var};

impl Builder {
    /// Jacobian-vector product: appends nodes computing, for each of
    /// `outputs`, its directional derivative when each node of `wrt` moves
    /// along the matching `tangents`. Outputs that do not depend on `wrt` get
    /// zeros.
    ///
    /// ```
    /// use secondo_graph::{Builder, Executable, Feeds};
    /// use secondo_tensor::{DType, Tensor};
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[2]);
    /// let v = b.input("v", &[2]);
    /// let y = (x * x).sum_all();
    /// let dy = b.jvp(&[y], &[x], &[v]).unwrap()[0]; // 2 xᵀv
    /// let g = b.finish().unwrap();
    /// let mut f = Feeds::new();
    /// f.insert("x", Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap());
    /// f.insert("v", Tensor::from_vec(vec![2], vec![3.0f64, 4.0]).unwrap());
    /// let out = Executable::compile(&g, &[dy.id()]).unwrap().run(&f).unwrap();
    /// assert_eq!(out[0].item(), 22.0);
    /// ```
    pub fn jvp<'a>(
        &'a self,
        outputs: &[Var<'a>],
        wrt: &[Var<'a>],
        tangents: &[Var<'a>],
    ) -> Result<Vec<Var<'a>>, GraphError> {
        self.check()?;
        check_pairs(
            "jvp",
            ["wrt nodes", "tangents"],
            ["wrt", "tangent"],
            wrt,
            tangents,
        )?;
        let n = self.graph().len();
        let active = self.active_nodes(outputs, wrt, n);
        let mut tan: Vec<Option<Var<'a>>> = vec![None; n];
        for (w, t) in wrt.iter().zip(tangents) {
            accumulate(&mut tan[w.id()], *t);
        }
        let start = wrt.iter().map(|w| w.id()).min().unwrap_or(n);
        for i in start..n {
            if !active[i] || tan[i].is_some() {
                continue;
            }
            let node = self.graph().node(i).clone();
            let ts: Vec<Option<Var<'a>>> = node.inputs.iter().map(|&j| tan[j]).collect();
            if ts.iter().all(Option::is_none) {
                continue;
            }
            tan[i] = jvp_rule(self, &node, i, &ts).map(|t| {
                if t.shape() == node.shape {
                    t
                } else {
                    t.broadcast_to(&node.shape)
                }
            });
        }
        let result = outputs
            .iter()
            .map(|o| tan[o.id()].unwrap_or_else(|| self.zeros(&o.shape())))
            .collect();
        self.check()?;
        Ok(result)
    }
}

/// The tangent of node `id` given its operands' tangents (`None` = zero), by
/// its family's rule.
fn jvp_rule<'a>(
    b: &'a Builder,
    node: &Node,
    id: NodeId,
    ts: &[Option<Var<'a>>],
) -> Option<Var<'a>> {
    let p = Primal::of(b, node, id);
    match node.op.family() {
        Family::Leaf(leaf) => leaves::jvp(leaf, &p, ts),
        Family::Elementwise(e) => elementwise::jvp(e, &p, ts),
        Family::Reduce(r, axes) => reduce::jvp(r, axes, &p, ts),
        Family::Movement(m) => movement::jvp(m, &p, ts),
        Family::Einsum(spec) => einsum::jvp(spec, &p, ts),
        Family::Patches(op) => patches::jvp(op, &p, ts),
        Family::Pool(op) => pool::jvp(op, &p, ts),
        Family::Conv(op) => conv::jvp(op, &p, ts),
    }
}
