//! Vectorization (`vmap`) as a graph-to-graph transformation.
//!
//! Every node that depends on the batched nodes is re-emitted with a leading
//! batch axis. Like [`Builder::vjp`] and [`Builder::jvp`], the rules are written
//! with the graph's primitives, so the three transformations compose in any
//! order (per-sample gradients are `vmap` of `grad`).

use secondo_tensor::EinsumSpec;

use crate::prims::patches;
use crate::{Builder, GraphError, Node, NodeId, Op, Var};

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
            map[i] = Some(self.vmap_rule(&node, i, &args, size));
        }
        let result = outputs
            .iter()
            .map(|o| map[o.id()].unwrap_or_else(|| lift(*o, size)))
            .collect();
        self.check()?;
        Ok(result)
    }

    /// The batched version of node `id` given its operands' batched versions
    /// (`None` = not batched: the original operand is shared).
    fn vmap_rule<'a>(
        &'a self,
        node: &Node,
        id: NodeId,
        args: &[Option<Var<'a>>],
        size: usize,
    ) -> Var<'a> {
        let x = |k: usize| self.var(node.inputs[k]);
        let batched = |k: usize| args[k].unwrap_or_else(|| lift(x(k), size));
        let out = batched_shape(size, &node.shape);
        let unary = |op: Op| self.push(op, vec![batched(0).id()], None);
        match &node.op {
            Op::Input(_) | Op::Param(_) | Op::Constant(_) => lift(self.var(id), size),
            Op::Unary(_) | Op::OneHot(_) => unary(node.op.clone()),
            Op::Binary(_) | Op::Where => {
                let operands = (0..node.inputs.len())
                    .map(|k| {
                        // The where kernel takes its result's shape from the condition.
                        let may_stay_scalar = !matches!(node.op, Op::Where) || k > 0;
                        match args[k] {
                            Some(v) if v.shape() == out => v,
                            // A rank-0 operand (or a condition over trailing axes)
                            // next to a full-shape one: its batch axis must line up
                            // with the result's, not with the result's last axes.
                            Some(v) => {
                                let rest = &v.shape()[1..];
                                let mut column = vec![1; out.len()];
                                column[0] = size;
                                column[out.len() - rest.len()..].copy_from_slice(rest);
                                v.reshape(&column).broadcast_to(&out)
                            }
                            None if may_stay_scalar && x(k).shape().is_empty() => x(k),
                            None => x(k).broadcast_to(&out),
                        }
                        .id()
                    })
                    .collect();
                self.push(node.op.clone(), operands, None)
            }
            Op::Reduce(r, axes) => unary(Op::Reduce(*r, axes.iter().map(|a| a + 1).collect())),
            Op::Patches(p) => patches::batch(p, batched(0)),
            Op::Reshape => batched(0).reshape(&out),
            Op::Permute(perm) => {
                let perm: Vec<usize> = std::iter::once(0)
                    .chain(perm.iter().map(|p| p + 1))
                    .collect();
                batched(0).permute(&perm)
            }
            Op::Broadcast => {
                // NumPy aligns trailing axes: pad ones after the batch axis.
                let operand = x(0).shape();
                let mut padded = vec![size];
                padded.resize(out.len().saturating_sub(operand.len()), 1);
                padded.extend(operand);
                batched(0).reshape(&padded).broadcast_to(&out)
            }
            Op::Einsum(spec) => {
                let letter = ('a'..='z')
                    .chain('A'..='Z')
                    .find(|c| !spec.inputs.iter().any(|t| t.contains(c)));
                let Some(letter) = letter else {
                    self.fail(GraphError::Build {
                        op: format!("vmap of einsum {spec}"),
                        reason: "no axis letter is left for the batch axis".into(),
                    });
                    return self.var(id);
                };
                let with_batch = |term: &[char]| {
                    std::iter::once(letter)
                        .chain(term.iter().copied())
                        .collect()
                };
                let inputs = spec
                    .inputs
                    .iter()
                    .zip(args)
                    .map(|(t, a)| match a {
                        Some(_) => with_batch(t),
                        None => t.clone(),
                    })
                    .collect();
                let spec = EinsumSpec {
                    inputs,
                    output: with_batch(&spec.output),
                };
                let operands = args
                    .iter()
                    .zip(&node.inputs)
                    .map(|(a, &j)| a.map_or(j, |v| v.id()))
                    .collect();
                self.push(Op::Einsum(spec), operands, None)
            }
        }
    }
}

/// `[size]` followed by `shape`.
fn batched_shape(size: usize, shape: &[usize]) -> Vec<usize> {
    std::iter::once(size).chain(shape.iter().copied()).collect()
}

/// An unbatched node repeated along a new leading axis.
fn lift(v: Var<'_>, size: usize) -> Var<'_> {
    v.broadcast_to(&batched_shape(size, &v.shape()))
}
