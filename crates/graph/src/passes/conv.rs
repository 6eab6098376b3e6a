use secondo_tensor::{EinsumSpec, Window2d};

use crate::{ConvOp, Graph, Node, NodeId, Op, PatchOp};

/// Runs convolutions as [`ConvOp`]s: a contraction of a convolution's
/// patches `reshape(unfold(x))` with a weight (the forward pass) or with an
/// output gradient (the weight gradient, summed or per image), and the
/// `fold` of a contraction of an output gradient with a weight (the input
/// gradient), become one primitive each, whose kernels never write the
/// patch matrix. Patches that something else still reads (a Kronecker
/// factor) stay; the fused kernels unfold again, in cache. The images may
/// carry more leading axes (`vmap`ped tangents or factor columns, over which
/// the weight is shared): they are merged into the images' axis.
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
    let uses = super::use_counts(graph, outputs);
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
        map[i] = match fused {
            Some(f) => f.push(&mut out, &map, node),
            None => {
                let inputs = node.inputs.iter().map(|&j| map[j]).collect();
                let shape = matches!(
                    node.op,
                    Op::Input(_) | Op::Param(_) | Op::Reshape | Op::Broadcast
                )
                .then(|| node.shape.clone());
                out.push(node.op.clone(), inputs, shape, node.dtype)
                    .expect("a copied node keeps its shape and dtype")
            }
        };
    }
    (out, outputs.iter().map(|&o| map[o]).collect())
}

/// A convolution found in the graph: the primitive and its two operands
/// (old ids), each with its leading axes to merge into the images' axis
/// (`vmap`ped columns or samples, e.g. `[C, N]` or `[N, 1]`).
struct Fused {
    op: ConvOp,
    operands: [(NodeId, Option<Vec<usize>>); 2],
}

impl Fused {
    /// Pushes the primitive onto `out`, reshaping merged operands to their
    /// `[N', ...]` forms and the result back to `node`'s shape.
    fn push(self, out: &mut Graph, map: &[NodeId], node: &Node) -> NodeId {
        let dtype = node.dtype;
        let mut reshaped = |(id, merged): (NodeId, Option<Vec<usize>>)| match merged {
            Some(shape) => out
                .push(Op::Reshape, vec![map[id]], Some(shape), dtype)
                .expect("merging leading axes keeps the size"),
            None => map[id],
        };
        let [a, b] = self.operands;
        let inputs = vec![reshaped(a), reshaped(b)];
        let conv = out
            .push(Op::Conv(self.op), inputs, None, dtype)
            .expect("a fused convolution fits its operands");
        if out.node(conv).shape == node.shape {
            return conv;
        }
        out.push(Op::Reshape, vec![conv], Some(node.shape.clone()), dtype)
            .expect("a fused convolution keeps its size")
    }
}

/// `shape` with all but its last `keep` axes merged into one (`None` when
/// there is exactly one of them already).
fn merged(shape: &[usize], keep: usize) -> Option<Vec<usize>> {
    let lead = shape.len().checked_sub(keep)?;
    if lead == 1 {
        return None;
    }
    let mut s = vec![shape[..lead].iter().product()];
    s.extend_from_slice(&shape[lead..]);
    Some(s)
}

/// The image `x` and window of `reshape(unfold(x))` as `[..., L,
/// C·KH·KW]` patches of a convolution (zero padding, `x` `[..., C, H, W]`
/// with at least one leading axis).
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
    let lead = s.len().checked_sub(5).filter(|&l| l >= 1)?;
    let mut want = s[..lead].to_vec();
    want.extend([s[lead] * s[lead + 1], s[lead + 2..].iter().product()]);
    (*pad == 0.0 && rows.shape == want).then_some((unfold.inputs[0], *window))
}

/// Splits a term into its leading letters and its last two.
fn last_two(term: &[char]) -> Option<(&[char], char, char)> {
    let (lead, two) = term.split_at(term.len().checked_sub(2)?);
    Some((lead, two[0], two[1]))
}

/// `out == lead ++ tail`.
fn is(out: &[char], lead: &[char], tail: [char; 2]) -> bool {
    out.len() == lead.len() + 2 && out[..lead.len()] == *lead && out[lead.len()..] == tail
}

/// A convolution's forward pass (`...li,oi->...ol`) or weight gradient
/// (`...ol,...li->oi`) as a contraction of its patches.
fn contraction(graph: &Graph, node: &Node, spec: &EinsumSpec) -> Option<Fused> {
    let &[a, b] = node.inputs.as_slice() else {
        return None;
    };
    let out = &spec.output;
    for (k, rows, other) in [(0, a, b), (1, b, a)] {
        let Some((x, window)) = patches_of(graph, rows) else {
            continue;
        };
        let (tp, to) = (&spec.inputs[k], &spec.inputs[1 - k]);
        let (lead, l, i) = last_two(tp)?;
        let x_shape = &graph.node(x).shape;
        if let &[o, wi] = to.as_slice() {
            if wi == i && !tp.contains(&o) && is(out, lead, [o, l]) {
                let x = (x, merged(x_shape, 3));
                return Some(Fused {
                    op: ConvOp::Forward(window),
                    operands: [x, (other, None)],
                });
            }
        }
        let (g_lead, o, gl) = last_two(to)?;
        if g_lead != lead || gl != l {
            continue;
        }
        let sizes = &graph.node(rows).shape;
        let op = if out.as_slice() == [o, i] {
            ConvOp::WeightGrad(window)
        } else if per_image(out, lead, [o, i], sizes) {
            ConvOp::SampleWeightGrad(window)
        } else {
            continue;
        };
        let g = (other, merged(&graph.node(other).shape, 2));
        return Some(Fused {
            op,
            operands: [g, (x, merged(x_shape, 3))],
        });
    }
    None
}

/// Whether `out` keeps a prefix of the leading letters `lead` (of sizes
/// `sizes`) before `tail` and every other leading letter has size 1: a
/// weight gradient per image (per sample, over any `vmap`ped axes of size
/// 1).
fn per_image(out: &[char], lead: &[char], tail: [char; 2], sizes: &[usize]) -> bool {
    let Some(keep) = out.len().checked_sub(2).filter(|&k| k >= 1) else {
        return false;
    };
    keep <= lead.len()
        && is(out, &lead[..keep], tail)
        && sizes[keep..lead.len()].iter().all(|&d| d == 1)
}

/// A convolution's input gradient as the `fold` of a contraction of the
/// output gradient with the weight (`...ol,oi->...li`) that nothing else
/// reads.
fn input_grad(
    graph: &Graph,
    fold: &Node,
    uses: &[usize],
    window: &Window2d,
    image: [usize; 2],
) -> Option<Fused> {
    let patches = fold.inputs[0];
    let reshape = graph.node(patches);
    let (Op::Reshape, &[e]) = (&reshape.op, reshape.inputs.as_slice()) else {
        return None;
    };
    let (Op::Einsum(spec), &[a, b]) = (&graph.node(e).op, graph.node(e).inputs.as_slice()) else {
        return None;
    };
    if uses[patches] != 1 || uses[e] != 1 || fold.shape.len() < 4 {
        return None;
    }
    for (k, g, w) in [(0, a, b), (1, b, a)] {
        let (lead, o, l) = last_two(&spec.inputs[k])?;
        let &[wo, i] = spec.inputs[1 - k].as_slice() else {
            continue;
        };
        let keeps_lead = reshape.shape.get(..lead.len()) == graph.node(e).shape.get(..lead.len());
        if wo == o
            && keeps_lead
            && lead.len() + 3 == fold.shape.len()
            && is(&spec.output, lead, [l, i])
        {
            let op = ConvOp::InputGrad {
                window: *window,
                image,
            };
            let g = (g, merged(&graph.node(g).shape, 2));
            return Some(Fused {
                op,
                operands: [g, (w, None)],
            });
        }
    }
    None
}
