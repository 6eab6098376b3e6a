//! Reverse-mode differentiation as a graph-to-graph transformation.
//!
//! The rules below are written with the builder's primitives, so the derivative
//! graph can itself be differentiated.

use crate::prims::{
    conv, einsum, elementwise, leaves, movement, patches, pool, reduce, Family, Primal,
};
use crate::{Builder, GraphError, Op, Var};

impl Builder {
    /// Vector-Jacobian product: appends nodes computing
    /// `Σ_k J_k(wrt)ᵀ cotangents[k]` for each node in `wrt`, where `J_k` is the
    /// Jacobian of `outputs[k]`. Unreached `wrt` nodes get zeros.
    ///
    /// ```
    /// use secondo_graph::{Builder, Executable, Feeds};
    /// use secondo_tensor::{DType, Tensor};
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[2]);
    /// let v = b.input("v", &[2]);
    /// let y = x.exp();
    /// let jtv = b.vjp(&[y], &[v], &[x]).unwrap()[0];
    /// let g = b.finish().unwrap();
    /// let mut f = Feeds::new();
    /// f.insert("x", Tensor::from_vec(vec![2], vec![0.0f64, 0.0]).unwrap());
    /// f.insert("v", Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap());
    /// let out = Executable::compile(&g, &[jtv.id()]).unwrap().run(&f).unwrap();
    /// assert_eq!(out[0].to_f64_vec(), vec![1.0, 2.0]);
    /// ```
    pub fn vjp<'a>(
        &'a self,
        outputs: &[Var<'a>],
        cotangents: &[Var<'a>],
        wrt: &[Var<'a>],
    ) -> Result<Vec<Var<'a>>, GraphError> {
        self.check()?;
        check_pairs(
            "vjp",
            ["outputs", "cotangents"],
            ["output", "cotangent"],
            outputs,
            cotangents,
        )?;
        let n = self.graph().len();
        let active = self.active_nodes(outputs, wrt, n);
        let mut cot: Vec<Option<Var<'a>>> = vec![None; n];
        for (o, c) in outputs.iter().zip(cotangents) {
            accumulate(&mut cot[o.id()], *c);
        }
        for i in (0..n).rev() {
            let Some(g) = cot[i] else { continue };
            if !active[i] {
                continue;
            }
            let node = self.graph().node(i).clone();
            let primal = Primal::of(self, &node, i);
            for (k, &input) in node.inputs.iter().enumerate() {
                if !active[input] {
                    continue;
                }
                if let Some(contrib) = transpose_rule(&node.op, &primal, k, g) {
                    accumulate(&mut cot[input], contrib);
                }
            }
        }
        let result = wrt
            .iter()
            .map(|w| {
                cot.get(w.id())
                    .copied()
                    .flatten()
                    .unwrap_or_else(|| self.zeros(&w.shape()))
            })
            .collect();
        self.check()?;
        Ok(result)
    }

    /// Gradient of a scalar node with respect to `wrt`.
    ///
    /// ```
    /// use secondo_graph::Builder;
    /// use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[3]);
    /// let g = b.grad(x.square().sum_all(), &[x]).unwrap();
    /// assert_eq!(g[0].shape(), vec![3]);
    /// assert!(b.grad(x, &[x]).is_err());
    /// ```
    pub fn grad<'a>(&'a self, y: Var<'a>, wrt: &[Var<'a>]) -> Result<Vec<Var<'a>>, GraphError> {
        if !y.shape().is_empty() {
            return Err(GraphError::Build {
                op: "grad".into(),
                reason: format!("needs a scalar, got shape {:?}", y.shape()),
            });
        }
        self.vjp(&[y], &[self.scalar(1.0)], wrt)
    }

    /// Nodes that depend on some `wrt` node and that some output depends on.
    pub(crate) fn active_nodes(&self, outputs: &[Var<'_>], wrt: &[Var<'_>], n: usize) -> Vec<bool> {
        let graph = self.graph();
        let mut depends = vec![false; n];
        for w in wrt {
            depends[w.id()] = true;
        }
        for (i, node) in graph.nodes().iter().enumerate().take(n) {
            if node.inputs.iter().any(|&j| depends[j]) {
                depends[i] = true;
            }
        }
        let mut needed = vec![false; n];
        for o in outputs {
            needed[o.id()] = true;
        }
        for i in (0..n).rev() {
            if needed[i] {
                for &j in &graph.node(i).inputs {
                    needed[j] = true;
                }
            }
        }
        depends.iter().zip(&needed).map(|(&d, &u)| d && u).collect()
    }
}

/// The contribution of the cotangent `g` of a node to its operand `k`, by its
/// family's rule (`None` = zero).
fn transpose_rule<'a>(op: &Op, p: &Primal<'a>, k: usize, g: Var<'a>) -> Option<Var<'a>> {
    match op.family() {
        Family::Leaf(leaf) => leaves::transpose(leaf, p, k, g),
        Family::Elementwise(e) => elementwise::transpose(e, p, k, g),
        Family::Reduce(r, axes) => reduce::transpose(r, axes, p, g),
        Family::Movement(m) => movement::transpose(m, p, g),
        Family::Einsum(spec) => einsum::transpose(spec, p, k, g),
        Family::Patches(op) => patches::transpose(op, p, g),
        Family::Pool(op) => pool::transpose(op, p, k, g),
        Family::Conv(op) => conv::transpose(op, p, k, g),
    }
}

/// Checks that `primals` and `duals` pair up one to one with equal shapes;
/// `plural` and `single` name them in the error message.
pub(crate) fn check_pairs(
    op: &str,
    plural: [&str; 2],
    single: [&str; 2],
    primals: &[Var<'_>],
    duals: &[Var<'_>],
) -> Result<(), GraphError> {
    let err = |reason: String| GraphError::Build {
        op: op.into(),
        reason,
    };
    if primals.len() != duals.len() {
        return Err(err(format!(
            "{} {} but {} {}",
            primals.len(),
            plural[0],
            duals.len(),
            plural[1]
        )));
    }
    for (p, d) in primals.iter().zip(duals) {
        if p.shape() != d.shape() {
            return Err(err(format!(
                "{} shape {:?} but {} shape {:?}",
                single[0],
                p.shape(),
                single[1],
                d.shape()
            )));
        }
    }
    Ok(())
}

/// Adds `v` into a cotangent or tangent slot.
pub(crate) fn accumulate<'a>(slot: &mut Option<Var<'a>>, v: Var<'a>) {
    *slot = Some(match *slot {
        Some(prev) => prev + v,
        None => v,
    });
}
