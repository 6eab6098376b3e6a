use secondo_tensor::{BinaryOp, EinsumSpec, ReduceOp, Tensor, UnaryOp};

use crate::{Graph, NodeId, Op};

/// Pushes sums and squares into contractions:
/// `Σ_axes (einsum(...))²` becomes one einsum over two copies of the operands,
/// and `Σ_axes einsum(...)` drops the summed letters from the output. The
/// einsum executor then picks a contraction order that never builds the
/// product's full result: e.g. per-sample squared gradient norms of a linear
/// layer, `Σ_oi (g_no x_ni)²`, become `(Σ_o g_no²)(Σ_i x_ni²)`.
/// An operand of a binary op (or the condition of a `where`) broadcast over
/// leading axes is read unbroadcast: the kernels repeat it (a bias added to a
/// batch, a ReLU mask over `vmap`ped columns).
/// A contraction scaled by a scalar takes the scalar into its smallest
/// operand instead (when nothing else reads the unscaled result), so the
/// multiplication runs over e.g. a batch of layer-output gradients rather
/// than a weight-sized result.
/// Returns the rewritten graph and the outputs' new ids.
///
/// ```
/// use secondo_graph::{passes::fuse_einsum_reductions, Builder, Op};
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F32);
/// let g = b.input("g", &[128, 10]);
/// let x = b.input("x", &[128, 784]);
/// let per_sample = b.einsum("no,ni->noi", &[g, x]);
/// let l2 = per_sample.square().sum(&[1, 2]);
/// let (graph, out) = fuse_einsum_reductions(&b.finish().unwrap(), &[l2.id()]);
/// assert!(matches!(graph.node(out[0]).op, Op::Einsum(_)));
/// ```
pub fn fuse_einsum_reductions(graph: &Graph, outputs: &[NodeId]) -> (Graph, Vec<NodeId>) {
    let mut uses = vec![0usize; graph.len()];
    graph
        .nodes()
        .iter()
        .flat_map(|n| &n.inputs)
        .chain(outputs)
        .for_each(|&j| uses[j] += 1);
    let mut out = Graph::new();
    let mut map = vec![0; graph.len()];
    for (i, node) in graph.nodes().iter().enumerate() {
        let inputs: Vec<NodeId> = node.inputs.iter().map(|&j| map[j]).collect();
        let fused = match &node.op {
            Op::Reduce(ReduceOp::Sum, axes) => fused_sum(&out, inputs[0], axes),
            Op::Binary(BinaryOp::Mul) => (0..2)
                .find(|&k| uses[node.inputs[k]] == 1)
                .and_then(|k| scaled(&mut out, inputs[k], inputs[1 - k]))
                .or_else(|| unbroadcast(&out, &node.op, &inputs, &node.shape, 0..2)),
            Op::Binary(_) => unbroadcast(&out, &node.op, &inputs, &node.shape, 0..2),
            Op::Where => unbroadcast(&out, &node.op, &inputs, &node.shape, 0..1),
            Op::Einsum(spec) => {
                let single_use: Vec<bool> = node.inputs.iter().map(|&j| uses[j] == 1).collect();
                unscaled_operands(
                    &mut out,
                    spec,
                    &inputs,
                    &single_use,
                    node.shape.iter().product(),
                )
            }
            _ => None,
        };
        let (op, inputs) = fused.unwrap_or((node.op.clone(), inputs));
        let shape = matches!(
            op,
            Op::Input(_) | Op::Param(_) | Op::Reshape | Op::Broadcast
        )
        .then(|| node.shape.clone());
        map[i] = out
            .push(op, inputs, shape, node.dtype)
            .expect("a rewrite keeps shapes and dtypes");
    }
    (out, outputs.iter().map(|&o| map[o]).collect())
}

/// The einsum replacing `Σ_axes` of node `x` of `g`, when `x` is an einsum or
/// the square of one.
fn fused_sum(g: &Graph, x: NodeId, axes: &[usize]) -> Option<(Op, Vec<NodeId>)> {
    let node = g.node(x);
    let (spec, operands, squared) = match &node.op {
        Op::Einsum(spec) => (spec.clone(), node.inputs.clone(), false),
        Op::Unary(UnaryOp::Powf(p)) if *p == 2.0 => match &g.node(node.inputs[0]).op {
            Op::Einsum(spec) => (spec.clone(), g.node(node.inputs[0]).inputs.clone(), true),
            _ => return None,
        },
        _ => return None,
    };
    let output: Vec<char> = spec
        .output
        .iter()
        .enumerate()
        .filter(|(k, _)| !axes.contains(k))
        .map(|(_, &c)| c)
        .collect();
    let mut inputs = spec.inputs.clone();
    let mut ids = operands.clone();
    if squared {
        // The second copy keeps the output letters and renames the contracted ones.
        let used: Vec<char> = spec.inputs.iter().flatten().copied().collect();
        let mut fresh = ('a'..='z').chain('A'..='Z').filter(|c| !used.contains(c));
        let mut renamed: Vec<(char, char)> = Vec::new();
        for term in &spec.inputs {
            let mut copy = Vec::new();
            for &c in term {
                if spec.output.contains(&c) {
                    copy.push(c);
                } else if let Some(&(_, r)) = renamed.iter().find(|(o, _)| *o == c) {
                    copy.push(r);
                } else {
                    let r = fresh.next()?;
                    renamed.push((c, r));
                    copy.push(r);
                }
            }
            inputs.push(copy);
        }
        ids.extend(operands);
    }
    Some((Op::Einsum(EinsumSpec { inputs, output }), ids))
}

/// The einsum replacing `x · scalar` in `g` when `x` is an einsum whose
/// result is larger than one of its operands, and `scalar` has no axes.
fn scaled(g: &mut Graph, x: NodeId, scalar: NodeId) -> Option<(Op, Vec<NodeId>)> {
    let node = g.node(x);
    let Op::Einsum(spec) = &node.op else {
        return None;
    };
    if !g.node(scalar).shape.is_empty() {
        return None;
    }
    let numel: usize = node.shape.iter().product();
    let operand_numel = |&j: &NodeId| g.node(j).shape.iter().product::<usize>();
    if node.inputs.iter().map(operand_numel).min() > Some(numel) {
        return None;
    }
    let (spec, ids) = (spec.clone(), node.inputs.clone());
    Some(place_scalar(g, spec, ids, scalar, numel))
}

/// An einsum whose operands include single-use `y · scalar` nodes, rewritten
/// to contract the `y`s and apply the product of the scalars where it is
/// cheapest: e.g. `einsum(c·A, A)` becomes `c · einsum(A, A)`, whose operands
/// are then one tensor (a symmetric product).
fn unscaled_operands(
    g: &mut Graph,
    spec: &EinsumSpec,
    inputs: &[NodeId],
    single_use: &[bool],
    numel: usize,
) -> Option<(Op, Vec<NodeId>)> {
    let mut ids = inputs.to_vec();
    let mut scalars: Vec<NodeId> = Vec::new();
    for (id, &single) in ids.iter_mut().zip(single_use) {
        let node = g.node(*id);
        if !single || !matches!(node.op, Op::Binary(BinaryOp::Mul)) {
            continue;
        }
        if let Some(k) = (0..2).find(|&k| g.node(node.inputs[k]).shape.is_empty()) {
            scalars.push(node.inputs[k]);
            *id = node.inputs[1 - k];
        }
    }
    let first = *scalars.first()?;
    let dtype = g.node(first).dtype;
    let scalar = scalars[1..].iter().fold(first, |acc, &s| {
        g.push(Op::Binary(BinaryOp::Mul), vec![acc, s], None, dtype)
            .expect("scalars multiply")
    });
    Some(place_scalar(g, spec.clone(), ids, scalar, numel))
}

/// `scalar · einsum(spec, ids)` with the scalar on the smallest of the
/// operands and the result (`numel` numbers); nodes it needs are pushed on `g`.
fn place_scalar(
    g: &mut Graph,
    spec: EinsumSpec,
    mut ids: Vec<NodeId>,
    scalar: NodeId,
    numel: usize,
) -> (Op, Vec<NodeId>) {
    let size = |g: &Graph, k: usize| g.node(ids[k]).shape.iter().product::<usize>();
    let smallest = (0..ids.len())
        .min_by_key(|&k| size(g, k))
        .expect("an einsum has operands");
    let dtype = g.node(scalar).dtype;
    let mul = |g: &mut Graph, x: NodeId| {
        g.push(Op::Binary(BinaryOp::Mul), vec![x, scalar], None, dtype)
            .expect("a tensor times a scalar keeps its shape")
    };
    if ids.len() == 2 && ids[0] == ids[1] {
        // A symmetric product `c · AAᵀ`: scaling one side would hide the
        // symmetry, so `√c` scales the shared operand (or `c` the result).
        let root = match &g.node(scalar).op {
            Op::Constant(t) if t.item() > 0.0 => Some(t.item().sqrt()),
            _ => None,
        };
        if let Some(root) = root {
            let root = g
                .push(
                    Op::Constant(Tensor::scalar(root, dtype)),
                    Vec::new(),
                    None,
                    dtype,
                )
                .expect("a scalar constant");
            let scaled = g
                .push(Op::Binary(BinaryOp::Mul), vec![ids[0], root], None, dtype)
                .expect("a tensor times a scalar keeps its shape");
            return (Op::Einsum(spec), vec![scaled, scaled]);
        }
    }
    if numel < size(g, smallest) || (ids.len() == 2 && ids[0] == ids[1]) {
        let product = g
            .push(Op::Einsum(spec), ids, None, dtype)
            .expect("the einsum's operands are unchanged in shape");
        return (Op::Binary(BinaryOp::Mul), vec![product, scalar]);
    }
    ids[smallest] = mul(g, ids[smallest]);
    (Op::Einsum(spec), ids)
}

/// `op(inputs)` reading, for the first of the `candidates` operands that is a
/// broadcast over leading axes of the result (`shape`), the broadcast's input
/// instead, when another operand has the result's shape (which then stays
/// the result's shape).
fn unbroadcast(
    g: &Graph,
    op: &Op,
    inputs: &[NodeId],
    shape: &[usize],
    candidates: std::ops::Range<usize>,
) -> Option<(Op, Vec<NodeId>)> {
    let k = candidates.into_iter().find(|&k| {
        let node = g.node(inputs[k]);
        matches!(node.op, Op::Broadcast)
            && shape.ends_with(&g.node(node.inputs[0]).shape)
            && !g.node(node.inputs[0]).shape.is_empty()
            && (0..inputs.len()).any(|j| j != k && g.node(inputs[j]).shape == shape)
    })?;
    let mut ids = inputs.to_vec();
    ids[k] = g.node(inputs[k]).inputs[0];
    Some((op.clone(), ids))
}
