use secondo_tensor::{BinaryOp, EinsumSpec, ReduceOp, UnaryOp};

use super::scalars::{scaled, unscaled_operands};
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
    let uses = super::use_counts(graph, outputs);
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
            Op::Einsum(spec) => inline_expansions(&out, spec, &inputs).or_else(|| {
                let single_use: Vec<bool> = node.inputs.iter().map(|&j| uses[j] == 1).collect();
                unscaled_operands(
                    &mut out,
                    spec,
                    &inputs,
                    &single_use,
                    node.shape.iter().product(),
                )
            }),
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

/// A contraction whose operands include an outer product (an einsum that
/// sums over no letter, such as the per-sample gradients `"no,ni->noi"`) as
/// one einsum over that product's operands (letters of extent 1 count as
/// no sum): `Σ_oi (g_no x_ni) v_oi` runs as
/// `Σ_o g_no (v x_n)_o`, never forming the products, however many other
/// readers they have. An outer product costs what its result holds, so
/// reading its factors instead never repeats work.
///
/// ```
/// use secondo_graph::{passes::fuse_einsum_reductions, Builder, Op};
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F32);
/// let (g, x, v) = (b.input("g", &[128, 10]), b.input("x", &[128, 784]), b.input("v", &[10, 784]));
/// let per_sample = b.einsum("no,ni->noi", &[g, x]);
/// let dots = b.einsum("zab,ab->z", &[per_sample, v]);
/// let (graph, out) = fuse_einsum_reductions(&b.finish().unwrap(), &[dots.id()]);
/// assert_eq!(graph.node(out[0]).inputs.len(), 3);
/// ```
fn inline_expansions(g: &Graph, spec: &EinsumSpec, inputs: &[NodeId]) -> Option<(Op, Vec<NodeId>)> {
    // Letters of extent 1 (the unit axes `vmap` leaves) sum nothing.
    let expands = |id: NodeId| match &g.node(id).op {
        Op::Einsum(inner) => inner
            .inputs
            .iter()
            .zip(&g.node(id).inputs)
            .all(|(term, &op)| {
                let shape = &g.node(op).shape;
                term.iter()
                    .zip(shape)
                    .all(|(c, &extent)| extent == 1 || inner.output.contains(c))
            }),
        _ => false,
    };
    let k = (0..inputs.len()).find(|&k| expands(inputs[k]))?;
    let Op::Einsum(inner) = &g.node(inputs[k]).op else {
        return None;
    };
    let distinct = |t: &[char]| t.iter().enumerate().all(|(i, c)| !t[..i].contains(c));
    if !distinct(&spec.inputs[k]) || !distinct(&inner.output) {
        return None;
    }
    // The inner result's letters become the outer term's; its contracted
    // letters get letters unused by either.
    let used: Vec<char> = spec
        .inputs
        .iter()
        .chain(&inner.inputs)
        .flatten()
        .copied()
        .collect();
    let mut fresh = ('a'..='z').chain('A'..='Z').filter(|c| !used.contains(c));
    let mut renamed: Vec<(char, char)> = inner
        .output
        .iter()
        .copied()
        .zip(spec.inputs[k].iter().copied())
        .collect();
    let mut terms: Vec<Vec<char>> = Vec::new();
    for term in &inner.inputs {
        let mut t = Vec::new();
        for &c in term {
            let r = match renamed.iter().find(|(o, _)| *o == c) {
                Some(&(_, r)) => r,
                None => {
                    let r = fresh.next()?;
                    renamed.push((c, r));
                    r
                }
            };
            t.push(r);
        }
        terms.push(t);
    }
    let mut merged = spec.inputs[..k].to_vec();
    merged.extend(terms);
    merged.extend(spec.inputs[k + 1..].iter().cloned());
    let mut ids = inputs[..k].to_vec();
    ids.extend(g.node(inputs[k]).inputs.iter().copied());
    ids.extend(inputs[k + 1..].iter().copied());
    let spec = EinsumSpec {
        inputs: merged,
        output: spec.output.clone(),
    };
    Some((Op::Einsum(spec), ids))
}

/// The einsum replacing `Σ_axes` of node `x` of `g`, when `x` is an einsum or
/// the square of one.
fn fused_sum(g: &Graph, x: NodeId, axes: &[usize]) -> Option<(Op, Vec<NodeId>)> {
    let node = g.node(x);
    let (spec, operands, squared) = match &node.op {
        Op::Einsum(spec) => (spec.clone(), node.inputs.clone(), false),
        Op::Unary(UnaryOp::Powf(p)) if *p == 2.0 => match &g.node(node.inputs[0]).op {
            Op::Einsum(spec) => (spec.clone(), g.node(node.inputs[0]).inputs.clone(), true),
            _ => return sum_of_squares(g, node.inputs[0], axes),
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

/// `Σ_axes y²` as one einsum of `y` with itself (`"cnh,cnh->nh"`, or
/// `"nabc,nabc->n"` for per-sample squared norms), which the executor runs
/// as one pass that multiplies and accumulates, instead of squaring into a
/// copy and summing that.
fn sum_of_squares(g: &Graph, y: NodeId, axes: &[usize]) -> Option<(Op, Vec<NodeId>)> {
    let rank = g.node(y).shape.len();
    if axes.is_empty() || rank > 26 {
        return None;
    }
    let term: Vec<char> = ('a'..='z').take(rank).collect();
    let output = (0..rank)
        .filter(|k| !axes.contains(k))
        .map(|k| term[k])
        .collect();
    let spec = EinsumSpec {
        inputs: vec![term.clone(), term.clone()],
        output,
    };
    Some((Op::Einsum(spec), vec![y, y]))
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
