use secondo_tensor::{EinsumSpec, Window2d};

use crate::{ConvOp, Graph, Node, NodeId, Op, PatchOp};

/// Runs convolutions as [`ConvOp`]s: a contraction of a convolution's
/// patches `reshape(unfold(x))` with a weight (the forward pass) or with an
/// output gradient (the weight gradient), and the `fold` of a contraction of
/// an output gradient with a weight (the input gradient), become one
/// primitive each, whose kernels never write the patch matrix. Patches that
/// something else still reads (a Kronecker factor, per-sample gradients)
/// stay; the fused kernels unfold again, in cache. Only the unbatched forms
/// the layers and their gradients produce are matched, letter for letter up
/// to renaming.
/// Returns the rewritten graph (with the unread patches still in it, for
/// [`prune`](crate::passes::prune)) and the outputs' new ids.
///
/// ```
/// use secondo_graph::{passes::fuse_convolutions, Builder, Op};
/// use secondo_tensor::{DType, Window2d};
/// let b = Builder::new(DType::F32);
/// let x = b.input("x", &[2, 3, 8, 8]);
/// let w = b.param("w", &[4, 27]);
/// let rows = x.unfold(Window2d::square(3, 1, 1, 1), 0.0).reshape(&[2, 64, 27]);
/// let y = b.einsum("nli,oi->nol", &[rows, w]);
/// let (graph, out) = fuse_convolutions(&b.finish().unwrap(), &[y.id()]);
/// assert!(matches!(graph.node(out[0]).op, Op::Conv(_)));
/// ```
pub fn fuse_convolutions(graph: &Graph, outputs: &[NodeId]) -> (Graph, Vec<NodeId>) {
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
        let fused = match &node.op {
            Op::Einsum(spec) => contraction(graph, node, spec),
            Op::Patches(PatchOp::Fold { window, image }) => {
                input_grad(graph, node, &uses, window, *image)
            }
            _ => None,
        };
        let (op, inputs) = match fused {
            Some((op, operands)) => (op, operands.iter().map(|&j| map[j]).collect()),
            None => (
                node.op.clone(),
                node.inputs.iter().map(|&j| map[j]).collect(),
            ),
        };
        let shape = matches!(
            op,
            Op::Input(_) | Op::Param(_) | Op::Reshape | Op::Broadcast
        )
        .then(|| node.shape.clone());
        map[i] = out
            .push(op, inputs, shape, node.dtype)
            .expect("a fused convolution keeps its shape and dtype");
    }
    (out, outputs.iter().map(|&o| map[o]).collect())
}

/// The image `x` and window of `reshape(unfold(x))` as `[N, L, C·KH·KW]`
/// patches of a convolution (zero padding, `x` `[N, C, H, W]`).
fn patches_of(graph: &Graph, id: NodeId) -> Option<(NodeId, Window2d)> {
    let rows = graph.node(id);
    let (Op::Reshape, &[p]) = (&rows.op, rows.inputs.as_slice()) else {
        return None;
    };
    let unfold = graph.node(p);
    let Op::Patches(PatchOp::Unfold { window, pad }) = &unfold.op else {
        return None;
    };
    let s = &unfold.shape;
    let x = unfold.inputs[0];
    let fits = *pad == 0.0
        && graph.node(x).shape.len() == 4
        && rows.shape == [s[0], s[1] * s[2], s[3] * s[4] * s[5]];
    fits.then_some((x, *window))
}

/// A convolution's forward pass or weight gradient as a contraction of its
/// patches, as the primitive and its operands.
fn contraction(graph: &Graph, node: &Node, spec: &EinsumSpec) -> Option<(Op, Vec<NodeId>)> {
    let &[a, b] = node.inputs.as_slice() else {
        return None;
    };
    for (k, rows, other) in [(0, a, b), (1, b, a)] {
        let Some((x, window)) = patches_of(graph, rows) else {
            continue;
        };
        let (forward, weight_grad) = if k == 0 {
            ("nli,oi->nol", "nli,nol->oi")
        } else {
            ("oi,nli->nol", "nol,nli->oi")
        };
        if same_letters(spec, forward) {
            return Some((Op::Conv(ConvOp::Forward(window)), vec![x, other]));
        }
        if same_letters(spec, weight_grad) {
            return Some((Op::Conv(ConvOp::WeightGrad(window)), vec![other, x]));
        }
    }
    None
}

/// A convolution's input gradient as the `fold` of a contraction of the
/// output gradient with the weight that nothing else reads.
fn input_grad(
    graph: &Graph,
    fold: &Node,
    uses: &[usize],
    window: &Window2d,
    image: [usize; 2],
) -> Option<(Op, Vec<NodeId>)> {
    let patches = fold.inputs[0];
    let reshape = graph.node(patches);
    let (Op::Reshape, &[e]) = (&reshape.op, reshape.inputs.as_slice()) else {
        return None;
    };
    let (Op::Einsum(spec), &[a, b]) = (&graph.node(e).op, graph.node(e).inputs.as_slice()) else {
        return None;
    };
    if uses[patches] != 1 || uses[e] != 1 || fold.shape.len() != 4 {
        return None;
    }
    let (g, w) = if same_letters(spec, "nol,oi->nli") {
        (a, b)
    } else if same_letters(spec, "oi,nol->nli") {
        (b, a)
    } else {
        return None;
    };
    let op = ConvOp::InputGrad {
        window: *window,
        image,
    };
    Some((Op::Conv(op), vec![g, w]))
}

/// Whether `spec` is `pattern` with its letters renamed one to one.
fn same_letters(spec: &EinsumSpec, pattern: &str) -> bool {
    let Ok(pattern) = pattern.parse::<EinsumSpec>() else {
        return false;
    };
    let terms = |s: &EinsumSpec| -> Vec<Vec<char>> {
        s.inputs.iter().chain([&s.output]).cloned().collect()
    };
    let (ours, theirs) = (terms(spec), terms(&pattern));
    if ours.len() != theirs.len() || ours.iter().zip(&theirs).any(|(a, b)| a.len() != b.len()) {
        return false;
    }
    let mut pairs: Vec<(char, char)> = Vec::new();
    ours.iter()
        .flatten()
        .zip(theirs.iter().flatten())
        .all(
            |(&a, &b)| match pairs.iter().find(|(x, y)| *x == a || *y == b) {
                Some(&(x, y)) => x == a && y == b,
                None => {
                    pairs.push((a, b));
                    true
                }
            },
        )
}
