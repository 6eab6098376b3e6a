//! Forward-mode differentiation as a graph-to-graph transformation.
//!
//! Like [`Builder::vjp`], the rules are written with the builder's primitives,
//! so `jvp` and `vjp` compose in either order (Hessian-vector products are
//! `jvp` of `vjp`).

use secondo_tensor::{BinaryOp, ReduceOp, UnaryOp};

use crate::prims::patches;
use crate::vjp::{accumulate, check_pairs};
use crate::{Builder, GraphError, Node, NodeId, Op, Var};

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
            tan[i] = self.jvp_rule(&node, i, &ts).map(|t| {
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

    /// The tangent of node `id` given its operands' tangents (`None` = zero).
    fn jvp_rule<'a>(&'a self, node: &Node, id: NodeId, ts: &[Option<Var<'a>>]) -> Option<Var<'a>> {
        let x = |j: usize| self.var(node.inputs[j]);
        let y = self.var(id);
        let sum = |terms: Vec<Option<Var<'a>>>| terms.into_iter().flatten().reduce(|a, b| a + b);
        match &node.op {
            Op::Input(_) | Op::Param(_) | Op::Constant(_) | Op::OneHot(_) => None,
            Op::Unary(u) => {
                let t = ts[0]?;
                Some(match *u {
                    UnaryOp::Neg => -t,
                    UnaryOp::Exp => t * y,
                    UnaryOp::Log => t / x(0),
                    UnaryOp::Tanh => t * (1.0 - y.square()),
                    UnaryOp::Erf => t * ((-x(0).square()).exp() * std::f64::consts::FRAC_2_SQRT_PI),
                    UnaryOp::Powf(0.0) => return None,
                    UnaryOp::Powf(1.0) => t,
                    UnaryOp::Powf(2.0) => t * (x(0) * 2.0),
                    UnaryOp::Powf(p) => t * (x(0).powf(p - 1.0) * p),
                })
            }
            Op::Binary(b) => {
                let (a, c) = (x(0), x(1));
                let (ta, tc) = (ts[0], ts[1]);
                match b {
                    BinaryOp::Add => sum(vec![ta, tc]),
                    BinaryOp::Sub => sum(vec![ta, tc.map(|t| -t)]),
                    BinaryOp::Mul => sum(vec![ta.map(|t| t * c), tc.map(|t| a * t)]),
                    BinaryOp::Div => sum(vec![ta.map(|t| t / c), tc.map(|t| -(t * y) / c)]),
                    BinaryOp::Max => sum(vec![
                        ta.map(|t| t * a.binary(BinaryOp::Ge, c)),
                        tc.map(|t| t * a.binary(BinaryOp::Lt, c)),
                    ]),
                    BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Eq => None,
                }
            }
            Op::Where => {
                let zero = self.scalar(0.0);
                if ts[1].is_none() && ts[2].is_none() {
                    return None;
                }
                Some(self.select(x(0), ts[1].unwrap_or(zero), ts[2].unwrap_or(zero)))
            }
            Op::Reduce(r, axes) => {
                let t = ts[0]?;
                Some(match r {
                    ReduceOp::Sum => t.sum(axes),
                    ReduceOp::Max => {
                        let in_shape = x(0).shape();
                        let keep: Vec<usize> = in_shape
                            .iter()
                            .enumerate()
                            .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                            .collect();
                        let at_max = x(0).eq(y.reshape(&keep).broadcast_to(&in_shape));
                        (t * at_max).sum(axes)
                    }
                })
            }
            Op::Patches(p) => Some(patches::jvp(p, ts[0]?)),
            Op::Reshape => Some(ts[0]?.reshape(&node.shape)),
            Op::Permute(perm) => Some(ts[0]?.permute(perm)),
            Op::Broadcast => Some(ts[0]?.broadcast_to(&node.shape)),
            Op::Einsum(spec) => {
                let spec = spec.to_string();
                let terms = ts.iter().enumerate().map(|(k, t)| {
                    t.map(|t| {
                        let operands: Vec<Var<'a>> = (0..ts.len())
                            .map(|j| if j == k { t } else { x(j) })
                            .collect();
                        self.einsum(&spec, &operands)
                    })
                });
                sum(terms.collect())
            }
        }
    }
}
