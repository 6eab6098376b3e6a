//! Reverse-mode differentiation as a graph-to-graph transformation.
//!
//! The rules below are written with the builder's primitives, so the derivative
//! graph can itself be differentiated.

use secondo_tensor::{BinaryOp, ReduceOp, UnaryOp};

use crate::prims::patches;
use crate::{Builder, GraphError, Node, NodeId, Op, Var};

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
            for (k, &input) in node.inputs.iter().enumerate() {
                if !active[input] {
                    continue;
                }
                if let Some(contrib) = self.vjp_rule(&node, i, k, g) {
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

    /// The contribution of output cotangent `g` of node `id` to its operand `k`.
    fn vjp_rule<'a>(&'a self, node: &Node, id: NodeId, k: usize, g: Var<'a>) -> Option<Var<'a>> {
        let x = |j: usize| self.var(node.inputs[j]);
        let y = self.var(id);
        let operand_shape = x(k).shape();
        // An operand with fewer axes (a single element, or the trailing axes
        // of the result) gets the cotangent summed over the axes it lacks.
        let fit = |v: Var<'a>| {
            if operand_shape.len() < node.shape.len() {
                let lacking: Vec<usize> = (0..node.shape.len() - operand_shape.len()).collect();
                v.sum(&lacking)
            } else {
                v
            }
        };
        match &node.op {
            Op::Input(_) | Op::Param(_) | Op::Constant(_) | Op::OneHot(_) => None,
            Op::Unary(u) => Some(match *u {
                UnaryOp::Neg => -g,
                UnaryOp::Exp => g * y,
                UnaryOp::Log => g / x(0),
                UnaryOp::Tanh => g * (1.0 - y.square()),
                UnaryOp::Erf => g * ((-x(0).square()).exp() * std::f64::consts::FRAC_2_SQRT_PI),
                UnaryOp::Powf(0.0) => return None,
                UnaryOp::Powf(2.0) => g * (x(0) * 2.0),
                UnaryOp::Powf(1.0) => g,
                UnaryOp::Powf(p) => g * (x(0).powf(p - 1.0) * p),
            }),
            Op::Binary(b) => {
                let (a, c) = (x(0), x(1));
                let contrib = match (*b, k) {
                    (BinaryOp::Add, _) => g,
                    (BinaryOp::Sub, 0) => g,
                    (BinaryOp::Sub, _) => -g,
                    (BinaryOp::Mul, 0) => g * c,
                    (BinaryOp::Mul, _) => g * a,
                    (BinaryOp::Div, 0) => g / c,
                    (BinaryOp::Div, _) => -(g * y) / c,
                    (BinaryOp::Max, 0) => g * a.binary(BinaryOp::Ge, c),
                    (BinaryOp::Max, _) => g * a.binary(BinaryOp::Lt, c),
                    (BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Eq, _) => return None,
                };
                Some(fit(contrib))
            }
            Op::Where => {
                let zero = self.scalar(0.0);
                match k {
                    0 => None,
                    1 => Some(fit(self.select(x(0), g, zero))),
                    _ => Some(fit(self.select(x(0), zero, g))),
                }
            }
            Op::Reduce(r, axes) => {
                let keep: Vec<usize> = operand_shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                    .collect();
                let spread = |v: Var<'a>| v.reshape(&keep).broadcast_to(&operand_shape);
                Some(match r {
                    ReduceOp::Sum => spread(g),
                    ReduceOp::Max => spread(g) * x(0).eq(spread(y)),
                })
            }
            Op::Patches(p) => Some(patches::transpose(p, &operand_shape, g)),
            Op::Reshape => Some(g.reshape(&operand_shape)),
            Op::Permute(perm) => {
                let mut inv = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p] = i;
                }
                Some(g.permute(&inv))
            }
            Op::Broadcast => {
                let lead = node.shape.len() - operand_shape.len();
                let axes: Vec<usize> = (0..node.shape.len())
                    .filter(|&i| i < lead || (operand_shape[i - lead] == 1 && node.shape[i] != 1))
                    .collect();
                Some(g.sum(&axes).reshape(&operand_shape))
            }
            Op::Einsum(spec) => {
                let term = &spec.inputs[k];
                let mut terms = vec![spec.output.clone()];
                let mut operands = vec![g];
                for (j, t) in spec.inputs.iter().enumerate() {
                    if j != k {
                        terms.push(t.clone());
                        operands.push(x(j));
                    }
                }
                let reached: Vec<char> = term
                    .iter()
                    .copied()
                    .filter(|c| terms.iter().any(|t| t.contains(c)))
                    .collect();
                let lhs: Vec<String> = terms.iter().map(|t| t.iter().collect()).collect();
                let spec = format!("{}->{}", lhs.join(","), reached.iter().collect::<String>());
                let r = self.einsum(&spec, &operands);
                if reached.len() == term.len() {
                    return Some(r);
                }
                let keep: Vec<usize> = term
                    .iter()
                    .zip(&operand_shape)
                    .map(|(c, &d)| if reached.contains(c) { d } else { 1 })
                    .collect();
                Some(r.reshape(&keep).broadcast_to(&operand_shape))
            }
        }
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
