//! Contraction (`Einsum`) over any number of operands.
//!
//! An einsum is linear in each operand: its jvp is a sum of einsums with one
//! operand replaced by its tangent, and operand `k`'s transpose is the einsum
//! of the cotangent with the other operands that yields `k`'s letters
//! (repeated over letters no other term has). Batching adds a letter.

use secondo_tensor::{einsum_parsed, EinsumSpec, Tensor, TensorError};

use super::{arity, Batched, Primal};
use crate::{Builder, GraphError, NodeId, Op, Var};

/// The result shape, from the letters' sizes.
pub(crate) fn shape(spec: &EinsumSpec, operands: &[&[usize]]) -> Result<Vec<usize>, String> {
    arity(spec.inputs.len(), operands)?;
    spec.output_shape(operands).map_err(|e| e.to_string())
}

/// Evaluates on the operands.
pub(crate) fn eval(spec: &EinsumSpec, args: &[Tensor]) -> Result<Tensor, TensorError> {
    let refs: Vec<&Tensor> = args.iter().collect();
    einsum_parsed(spec, &refs)
}

/// The tangent of the result: one einsum per operand with a tangent.
pub(crate) fn jvp<'a>(
    spec: &EinsumSpec,
    p: &Primal<'a>,
    ts: &[Option<Var<'a>>],
) -> Option<Var<'a>> {
    let b = p.builder();
    let spec = spec.to_string();
    let terms = ts.iter().enumerate().map(|(k, t)| {
        t.map(|t| {
            let operands: Vec<Var<'a>> = (0..ts.len())
                .map(|j| if j == k { t } else { p.operands[j] })
                .collect();
            b.einsum(&spec, &operands)
        })
    });
    // All terms first, then their sum (the order the nodes are appended in).
    let terms: Vec<Var<'a>> = terms.flatten().collect();
    terms.into_iter().reduce(|a, b| a + b)
}

/// Operand `k`'s cotangent given the result's cotangent `g`.
pub(crate) fn transpose<'a>(
    spec: &EinsumSpec,
    p: &Primal<'a>,
    k: usize,
    g: Var<'a>,
) -> Option<Var<'a>> {
    let operand_shape = p.operands[k].shape();
    let term = &spec.inputs[k];
    let mut terms = vec![spec.output.clone()];
    let mut operands = vec![g];
    for (j, t) in spec.inputs.iter().enumerate() {
        if j != k {
            terms.push(t.clone());
            operands.push(p.operands[j]);
        }
    }
    let reached: Vec<char> = term
        .iter()
        .copied()
        .filter(|c| terms.iter().any(|t| t.contains(c)))
        .collect();
    let lhs: Vec<String> = terms.iter().map(|t| t.iter().collect()).collect();
    let spec = format!("{}->{}", lhs.join(","), reached.iter().collect::<String>());
    let r = p.builder().einsum(&spec, &operands);
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

/// The einsum with a fresh letter for the batch axis on the batched operands
/// and the result; shared operands keep their terms (no copies). Records an
/// error when all 52 letters are taken.
pub(crate) fn batch<'a>(spec: &EinsumSpec, site: &Batched<'a>) -> Var<'a> {
    let b = site.builder();
    let letter = ('a'..='z')
        .chain('A'..='Z')
        .find(|c| !spec.inputs.iter().any(|t| t.contains(c)));
    let Some(letter) = letter else {
        b.fail(GraphError::Build {
            op: format!("vmap of einsum {spec}"),
            reason: "no axis letter is left for the batch axis".into(),
        });
        return site.primal.result;
    };
    let with_batch = |term: &[char]| {
        std::iter::once(letter)
            .chain(term.iter().copied())
            .collect()
    };
    let inputs = spec
        .inputs
        .iter()
        .zip(&site.args)
        .map(|(t, a)| match a {
            Some(_) => with_batch(t),
            None => t.clone(),
        })
        .collect();
    let spec = EinsumSpec {
        inputs,
        output: with_batch(&spec.output),
    };
    let operands: Vec<NodeId> = site
        .args
        .iter()
        .zip(&site.primal.operands)
        .map(|(a, x)| a.unwrap_or(*x).id())
        .collect();
    b.push(Op::Einsum(spec), operands, None)
}

impl Builder {
    /// Tensor contraction; see [`secondo_tensor::einsum`] for the notation.
    ///
    /// ```
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// let g = b.input("g", &[8, 3]);
    /// let x = b.input("x", &[8, 5]);
    /// assert_eq!(b.einsum("no,ni->oi", &[g, x]).shape(), vec![3, 5]);
    /// ```
    pub fn einsum<'a>(&'a self, spec: &str, operands: &[Var<'a>]) -> Var<'a> {
        let ids: Vec<NodeId> = operands.iter().map(|v| v.id()).collect();
        match spec.parse::<EinsumSpec>() {
            Ok(s) => self.push(Op::Einsum(s), ids, None),
            Err(e) => {
                self.fail(GraphError::Build {
                    op: "einsum".into(),
                    reason: e.to_string(),
                });
                self.var(ids.first().copied().unwrap_or(0))
            }
        }
    }
}
