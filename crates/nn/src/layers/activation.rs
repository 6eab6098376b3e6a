//! Parameter-free elementwise layers as graph builders, with PyTorch semantics.

use secondo_graph::Var;

use crate::spec::Layer;

/// SELU's α and scale (PyTorch's constants).
const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;
/// PyTorch's softplus switches to the identity above this input.
const SOFTPLUS_THRESHOLD: f64 = 20.0;

/// Builds the elementwise layer `layer` on `x`; `None` when `layer` is not an
/// elementwise activation.
///
/// ```
/// use secondo_graph::Builder;
/// use secondo_nn::{activation, spec::Layer};
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F64);
/// let x = b.input("x", &[4]);
/// assert!(activation(&Layer::Relu, x).is_some());
/// assert!(activation(&Layer::Flatten, x).is_none());
/// ```
pub fn activation<'b>(layer: &Layer, x: Var<'b>) -> Option<Var<'b>> {
    let b = x.builder();
    let zero = b.scalar(0.0);
    let positive = || x.gt(zero);
    // exp(x) on the non-positive part only, so the unused branch never overflows.
    let exp_neg_part = || b.select(positive(), zero, x).exp();
    Some(match layer {
        Layer::Relu => b.select(positive(), x, zero),
        Layer::Sigmoid => ((x * 0.5).tanh() + 1.0) * 0.5,
        Layer::Tanh => x.tanh(),
        Layer::LeakyRelu { slope } => b.select(positive(), x, x * *slope),
        Layer::Elu { alpha } => b.select(positive(), x, (exp_neg_part() - 1.0) * *alpha),
        Layer::Selu => b.select(positive(), x, (exp_neg_part() - 1.0) * SELU_ALPHA) * SELU_SCALE,
        Layer::Softplus => {
            let big = x.gt(b.scalar(SOFTPLUS_THRESHOLD));
            let small = b.select(big, zero, x);
            b.select(big, x, (small.exp() + 1.0).log())
        }
        Layer::Gelu => x * ((x * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5,
        Layer::Identity | Layer::Dropout { .. } => x,
        _ => return None,
    })
}
