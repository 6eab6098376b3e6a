//! Sliding-window patches: `unfold` (im2col) and its adjoint `fold`.
//!
//! Both are linear, so each one's jvp is itself applied to the tangent and
//! each one's transpose is the other. They act on the last axes, so the
//! batching rule is the same primitive on an operand with one more leading
//! axis. A convolution is `unfold` + `einsum` (per-sample gradients and
//! KFAC's patch matrices then come from the existing transformations);
//! pooling is `unfold` + a reduction.

use std::fmt;

use secondo_tensor::{fold, unfold, Tensor, TensorError, Window2d};

use super::{arity, Batched, Primal};
use crate::{Builder, Var};

/// A patch primitive.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOp {
    /// `[..., C, H, W]` to `[..., OH, OW, C, KH, KW]`; taps in the padding
    /// read `pad`.
    Unfold {
        /// The window.
        window: Window2d,
        /// The value the padding reads (0, or −∞ for max pooling).
        pad: f64,
    },
    /// `[..., OH, OW, C, KH, KW]` summed back onto `[..., C, H, W]` (zero
    /// padding).
    Fold {
        /// The window.
        window: Window2d,
        /// `[H, W]` of the image.
        image: [usize; 2],
    },
}

impl fmt::Display for PatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let geometry = |f: &mut fmt::Formatter<'_>, w: &Window2d| {
            write!(
                f,
                "k={:?} s={:?} p={:?} d={:?}",
                w.kernel, w.stride, w.padding, w.dilation
            )
        };
        match self {
            PatchOp::Unfold { window, pad } => {
                write!(f, "unfold ")?;
                geometry(f, window)?;
                write!(f, " pad={pad}")
            }
            PatchOp::Fold { window, image } => {
                write!(f, "fold ")?;
                geometry(f, window)?;
                write!(f, " image={image:?}")
            }
        }
    }
}

/// The result shape for the operand's shape.
pub(crate) fn shape(op: &PatchOp, operands: &[&[usize]]) -> Result<Vec<usize>, String> {
    arity(1, operands)?;
    match op {
        PatchOp::Unfold { window, .. } => window.unfolded_shape(operands[0]),
        PatchOp::Fold { window, image } => window.folded_shape(operands[0], *image),
    }
    .map_err(|e| e.to_string())
}

/// Evaluates on the operand.
pub(crate) fn eval(op: &PatchOp, args: &[Tensor]) -> Result<Tensor, TensorError> {
    match op {
        PatchOp::Unfold { window, pad } => unfold(&args[0], window, *pad),
        PatchOp::Fold { window, image } => fold(&args[0], window, *image),
    }
}

/// The linear part: the same primitive with zero padding (the padding is a
/// constant, so tangents and cotangents there are zero).
fn linear(op: &PatchOp) -> PatchOp {
    match op {
        PatchOp::Unfold { window, .. } => PatchOp::Unfold {
            window: *window,
            pad: 0.0,
        },
        fold => fold.clone(),
    }
}

/// The tangent of the result given the operand's tangent.
pub(crate) fn jvp<'a>(op: &PatchOp, _p: &Primal<'a>, ts: &[Option<Var<'a>>]) -> Option<Var<'a>> {
    Some(ts[0]?.patches(linear(op)))
}

/// The operand's cotangent given the result's cotangent `g`.
pub(crate) fn transpose<'a>(op: &PatchOp, p: &Primal<'a>, g: Var<'a>) -> Option<Var<'a>> {
    Some(match op {
        PatchOp::Unfold { window, .. } => {
            let operand = p.operands[0].shape();
            let r = operand.len();
            g.patches(PatchOp::Fold {
                window: *window,
                image: [operand[r - 2], operand[r - 1]],
            })
        }
        PatchOp::Fold { window, .. } => g.patches(PatchOp::Unfold {
            window: *window,
            pad: 0.0,
        }),
    })
}

/// The batched result given the operand with a leading batch axis.
pub(crate) fn batch<'a>(op: &PatchOp, site: &Batched<'a>) -> Var<'a> {
    site.operand(0).patches(op.clone())
}

impl Builder {
    /// The patch primitive on node `x` (see [`Var::unfold`]).
    pub(crate) fn patches<'a>(&'a self, op: PatchOp, x: Var<'a>) -> Var<'a> {
        self.push(crate::Op::Patches(op), vec![x.id()], None)
    }
}

impl<'b> Var<'b> {
    /// Patches of the last three axes: `[..., C, H, W]` becomes `[..., OH,
    /// OW, C, KH, KW]` (one contiguous row per output position); taps in the
    /// padding read `pad`.
    ///
    /// ```
    /// use secondo_graph::Builder;
    /// use secondo_tensor::{DType, Window2d};
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[2, 3, 5, 5]);
    /// let p = x.unfold(Window2d::square(3, 2, 1, 1), 0.0);
    /// assert_eq!(p.shape(), vec![2, 3, 3, 3, 3, 3]); // [N, OH, OW, C, KH, KW]
    /// ```
    pub fn unfold(self, window: Window2d, pad: f64) -> Var<'b> {
        self.patches(PatchOp::Unfold { window, pad })
    }

    /// The adjoint of [`Var::unfold`]: patches summed back onto an `image`
    /// `[H, W]`.
    ///
    /// ```
    /// use secondo_graph::Builder;
    /// use secondo_tensor::{DType, Window2d};
    /// let b = Builder::new(DType::F64);
    /// let p = b.input("p", &[2, 2, 4, 2, 2]);
    /// assert_eq!(p.fold(Window2d::square(2, 2, 0, 1), [4, 4]).shape(), vec![4, 4, 4]);
    /// ```
    pub fn fold(self, window: Window2d, image: [usize; 2]) -> Var<'b> {
        self.patches(PatchOp::Fold { window, image })
    }

    fn patches(self, op: PatchOp) -> Var<'b> {
        self.builder().patches(op, self)
    }
}
