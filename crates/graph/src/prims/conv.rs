//! Convolutions as single primitives: the forward pass, the input gradient
//! and the weight gradient of `unfold` + a contraction.
//!
//! The layers build convolutions from `unfold` and `einsum`, so that their
//! derivatives, per-sample gradients and Kronecker factors come from the
//! transformations and read the patches. These three primitives are what
//! the executor runs instead where nothing else reads the patches (the
//! `fuse_convolutions` pass): their kernels never write the patch matrix
//! to memory (secondo_tensor's `conv` module). Each is bilinear, and each
//! one's transposes are the other two, as in JAX's convolution rules
//! (jax/_src/lax/convolution.py); batching expands a primitive into its
//! definition with a batch letter.

use std::fmt;

use secondo_tensor::{conv_forward, conv_input_grad, conv_sample_weight_grads, conv_weight_grad};
use secondo_tensor::{Tensor, TensorError, Window2d};

use super::{arity, Batched, Primal};
use crate::{Op, Var};

/// A convolution primitive over images `[N, C, H, W]`, weights `[O,
/// C·KH·KW]` and outputs `[N, O, OH·OW]`.
#[derive(Debug, Clone, PartialEq)]
pub enum ConvOp {
    /// `(x, w)` to the output: `einsum("nli,oi->nol", unfold(x), w)`.
    Forward(Window2d),
    /// `(g, w)` to the gradient in the images `[N, C, H, W]` of `image`
    /// `[H, W]`: `fold(einsum("nol,oi->nli", g, w))`.
    InputGrad {
        /// The window.
        window: Window2d,
        /// `[H, W]` of the images.
        image: [usize; 2],
    },
    /// `(g, x)` to the gradient in the weight: `einsum("nol,nli->oi", g,
    /// unfold(x))`.
    WeightGrad(Window2d),
    /// `(g, x)` to each image's own gradient in the weight, `[N, O,
    /// C·KH·KW]`: `einsum("nol,nli->noi", g, unfold(x))` (per-sample
    /// gradients).
    SampleWeightGrad(Window2d),
}

impl ConvOp {
    fn window(&self) -> &Window2d {
        match self {
            ConvOp::Forward(w) | ConvOp::WeightGrad(w) | ConvOp::SampleWeightGrad(w) => w,
            ConvOp::InputGrad { window, .. } => window,
        }
    }

    /// Multiply-adds, `N·O·L·I` for each of them, from the shapes of the
    /// operands and the result.
    pub(crate) fn multiply_adds(&self, operands: &[&[usize]], result: &[usize]) -> u64 {
        let (output, patch) = match self {
            ConvOp::Forward(_) => (result, &operands[1][1..]),
            ConvOp::InputGrad { .. } => (operands[0], &operands[1][1..]),
            ConvOp::WeightGrad(_) => (operands[0], &result[1..]),
            ConvOp::SampleWeightGrad(_) => (operands[0], &result[2..]),
        };
        output.iter().chain(patch).map(|&d| d as u64).product()
    }
}

impl fmt::Display for ConvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ConvOp::Forward(_) => "conv",
            ConvOp::InputGrad { .. } => "conv_input_grad",
            ConvOp::WeightGrad(_) => "conv_weight_grad",
            ConvOp::SampleWeightGrad(_) => "conv_sample_weight_grad",
        };
        let w = self.window();
        write!(
            f,
            "{name} k={:?} s={:?} p={:?} d={:?}",
            w.kernel, w.stride, w.padding, w.dilation
        )
    }
}

/// The result shape for the operands' shapes.
pub(crate) fn shape(op: &ConvOp, operands: &[&[usize]]) -> Result<Vec<usize>, String> {
    arity(2, operands)?;
    let (a, b) = (operands[0], operands[1]);
    let patches = |x: &[usize], w: &Window2d| -> Result<(usize, usize), String> {
        let s = w.unfolded_shape(x).map_err(|e| e.to_string())?;
        if x.len() != 4 {
            return Err(format!("images are [N, C, H, W], got {x:?}"));
        }
        Ok((s[1] * s[2], s[3] * s[4] * s[5]))
    };
    let weight = |w: &[usize], i: usize| -> Result<usize, String> {
        match w {
            &[o, wi] if wi == i => Ok(o),
            _ => Err(format!("the weight {w:?} is not [O, {i}]")),
        }
    };
    match op {
        ConvOp::Forward(w) => {
            let (l, i) = patches(a, w)?;
            Ok(vec![a[0], weight(b, i)?, l])
        }
        ConvOp::InputGrad { window, image } => {
            let taps = window.kernel[0] * window.kernel[1];
            let c = b.get(1).copied().unwrap_or(0) / taps.max(1);
            let x = [a.first().copied().unwrap_or(0), c, image[0], image[1]];
            let (l, i) = patches(&x, window)?;
            let o = weight(b, i)?;
            if a != [x[0], o, l] {
                return Err(format!("the output gradient {a:?} is not [N, {o}, {l}]"));
            }
            Ok(x.to_vec())
        }
        ConvOp::WeightGrad(w) | ConvOp::SampleWeightGrad(w) => {
            let (l, i) = patches(b, w)?;
            match a {
                &[n, o, gl] if n == b[0] && gl == l => Ok(match op {
                    ConvOp::WeightGrad(_) => vec![o, i],
                    _ => vec![n, o, i],
                }),
                _ => Err(format!(
                    "the output gradient {a:?} is not [{}, O, {l}]",
                    b[0]
                )),
            }
        }
    }
}

/// Evaluates on the operands.
pub(crate) fn eval(op: &ConvOp, args: &[Tensor]) -> Result<Tensor, TensorError> {
    match op {
        ConvOp::Forward(w) => conv_forward(&args[0], &args[1], w),
        ConvOp::InputGrad { window, image } => {
            let n = args[0].shape()[0];
            let c = args[1].shape()[1] / (window.kernel[0] * window.kernel[1]);
            conv_input_grad(&args[0], &args[1], window, &[n, c, image[0], image[1]])
        }
        ConvOp::WeightGrad(w) => conv_weight_grad(&args[0], &args[1], w),
        ConvOp::SampleWeightGrad(w) => conv_sample_weight_grads(&args[0], &args[1], w),
    }
}

fn conv<'a>(op: ConvOp, a: Var<'a>, b: Var<'a>) -> Var<'a> {
    a.builder().push(Op::Conv(op), vec![a.id(), b.id()], None)
}

/// The tangent of the result given the operands' tangents: the op is
/// bilinear.
pub(crate) fn jvp<'a>(op: &ConvOp, p: &Primal<'a>, ts: &[Option<Var<'a>>]) -> Option<Var<'a>> {
    let [a, b] = [p.operands[0], p.operands[1]];
    let first = ts[0].map(|t| conv(op.clone(), t, b));
    let second = ts[1].map(|t| conv(op.clone(), a, t));
    match (first, second) {
        (Some(f), Some(s)) => Some(f + s),
        (f, s) => f.or(s),
    }
}

/// Operand `k`'s cotangent given the result's cotangent `g`: each of the
/// first three primitives' transposes are the other two; the per-sample
/// weight gradient's are their per-sample forms, written as definitions.
pub(crate) fn transpose<'a>(op: &ConvOp, p: &Primal<'a>, k: usize, g: Var<'a>) -> Option<Var<'a>> {
    let [a, b] = [p.operands[0], p.operands[1]];
    let image = |x: Var| {
        let s = x.shape();
        [s[2], s[3]]
    };
    let builder = a.builder();
    Some(match (op, k) {
        (ConvOp::Forward(window), 0) => conv(
            ConvOp::InputGrad {
                window: *window,
                image: image(a),
            },
            g,
            b,
        ),
        (ConvOp::Forward(w), _) => conv(ConvOp::WeightGrad(*w), g, a),
        (ConvOp::InputGrad { window, .. }, 0) => conv(ConvOp::Forward(*window), g, b),
        (ConvOp::InputGrad { window, .. }, _) => conv(ConvOp::WeightGrad(*window), a, g),
        (ConvOp::WeightGrad(w), 0) => conv(ConvOp::Forward(*w), b, g),
        (ConvOp::WeightGrad(window), _) => conv(
            ConvOp::InputGrad {
                window: *window,
                image: image(b),
            },
            a,
            g,
        ),
        (ConvOp::SampleWeightGrad(w), 0) => builder.einsum("noi,nli->nol", &[g, rows(b, w)]),
        (ConvOp::SampleWeightGrad(w), _) => {
            let patches = builder.einsum("nol,noi->nli", &[a, g]);
            folded(patches, w, image(b))
        }
    })
}

/// The patches of `x` `[..., N, C, H, W]` as rows `[..., N, L, C·KH·KW]`.
fn rows<'a>(x: Var<'a>, w: &Window2d) -> Var<'a> {
    let p = x.unfold(*w, 0.0);
    let s = p.shape();
    let lead = s.len() - 5;
    let mut shape = s[..lead].to_vec();
    shape.extend([s[lead] * s[lead + 1], s[lead + 2..].iter().product()]);
    p.reshape(&shape)
}

/// The images `[..., N, C, H, W]` of `image` whose patch rows `[..., N, L,
/// C·KH·KW]` are `patches`, overlapping windows added.
fn folded<'a>(patches: Var<'a>, window: &Window2d, image: [usize; 2]) -> Var<'a> {
    let s = patches.shape();
    let lead = s.len() - 2;
    let [oh, ow] = window.output_size(image).expect("a valid convolution");
    let [kh, kw] = window.kernel;
    debug_assert_eq!(s[lead], oh * ow);
    let mut shape = s[..lead].to_vec();
    shape.extend([oh, ow, s[lead + 1] / (kh * kw), kh, kw]);
    patches.reshape(&shape).fold(*window, image)
}

/// The batched result: the primitive's definition on the batched operands,
/// with a batch letter on each batched one.
pub(crate) fn batch<'a>(op: &ConvOp, site: &Batched<'a>) -> Var<'a> {
    let b = site.builder();
    let operand = |k: usize| site.args[k].unwrap_or(site.primal.operands[k]);
    let letter = |k: usize| if site.args[k].is_some() { "b" } else { "" };
    let (x, y) = (operand(0), operand(1));
    let spec = |a: &str, c: &str, out: &str| format!("{}{a},{}{c}->b{out}", letter(0), letter(1));
    match op {
        ConvOp::Forward(w) => b.einsum(&spec("nli", "oi", "nol"), &[rows(x, w), y]),
        ConvOp::WeightGrad(w) => b.einsum(&spec("nol", "nli", "oi"), &[x, rows(y, w)]),
        ConvOp::SampleWeightGrad(w) => b.einsum(&spec("nol", "nli", "noi"), &[x, rows(y, w)]),
        ConvOp::InputGrad { window, image } => {
            let patches = b.einsum(&spec("nol", "oi", "nli"), &[x, y]);
            folded(patches, window, *image)
        }
    }
}
