//! Losses as graph builders, with PyTorch semantics.

use std::fmt;
use std::str::FromStr;

use secondo_graph::Var;

use crate::NnError;

/// Which loss.
///
/// ```
/// use secondo_nn::LossKind;
/// assert_eq!("mse".parse::<LossKind>().unwrap(), LossKind::Mse);
/// assert!("hinge".parse::<LossKind>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossKind {
    /// `nn.CrossEntropyLoss`: log-softmax over the last axis; targets are class indices.
    CrossEntropy,
    /// `nn.MSELoss`: squared error averaged over every element.
    Mse,
    /// `nn.BCEWithLogitsLoss`: sigmoid plus binary cross-entropy, per element.
    BceWithLogits,
}

impl FromStr for LossKind {
    type Err = NnError;
    fn from_str(s: &str) -> Result<Self, NnError> {
        match s {
            "cross_entropy" | "ce" => Ok(LossKind::CrossEntropy),
            "mse" => Ok(LossKind::Mse),
            "bce_with_logits" | "bce" => Ok(LossKind::BceWithLogits),
            other => Err(NnError::UnknownLoss(other.to_string())),
        }
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossKind::CrossEntropy => "cross_entropy",
            LossKind::Mse => "mse",
            LossKind::BceWithLogits => "bce_with_logits",
        })
    }
}

/// How per-sample terms are combined.
///
/// ```
/// use secondo_nn::Reduction;
/// assert_eq!("sum".parse::<Reduction>().unwrap(), Reduction::Sum);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Reduction {
    /// Average (PyTorch's default): over samples for cross-entropy, over all elements otherwise.
    #[default]
    Mean,
    /// Sum.
    Sum,
}

impl FromStr for Reduction {
    type Err = NnError;
    fn from_str(s: &str) -> Result<Self, NnError> {
        match s {
            "mean" => Ok(Reduction::Mean),
            "sum" => Ok(Reduction::Sum),
            other => Err(NnError::Targets(format!(
                "unknown reduction '{other}' (expected mean or sum)"
            ))),
        }
    }
}

/// A loss with its reduction.
///
/// ```
/// use secondo_graph::Builder;
/// use secondo_nn::{Loss, LossKind, Reduction};
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F64);
/// let logits = b.input("z", &[4, 3]);
/// let y = b.input("y", &[4]);
/// let loss = Loss::new(LossKind::CrossEntropy, Reduction::Mean);
/// assert!(loss.build(logits, y).unwrap().shape().is_empty());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Loss {
    /// Which loss.
    pub kind: LossKind,
    /// How terms are combined.
    pub reduction: Reduction,
}

impl Loss {
    /// A loss of `kind` with `reduction`.
    ///
    /// ```
    /// use secondo_nn::{Loss, LossKind, Reduction};
    /// let l = Loss::new(LossKind::Mse, Reduction::Sum);
    /// assert_eq!(l.kind, LossKind::Mse);
    /// ```
    pub fn new(kind: LossKind, reduction: Reduction) -> Loss {
        Loss { kind, reduction }
    }

    /// The shape targets must have for network outputs of `output_shape`
    /// (`[N]` class indices for cross-entropy, the output's shape otherwise).
    ///
    /// ```
    /// use secondo_nn::{Loss, LossKind, Reduction};
    /// let l = Loss::new(LossKind::CrossEntropy, Reduction::Mean);
    /// assert_eq!(l.target_shape(&[8, 10]), vec![8]);
    /// ```
    pub fn target_shape(&self, output_shape: &[usize]) -> Vec<usize> {
        match self.kind {
            LossKind::CrossEntropy => output_shape[..output_shape.len().saturating_sub(1)].to_vec(),
            LossKind::Mse | LossKind::BceWithLogits => output_shape.to_vec(),
        }
    }

    /// The per-sample loss terms `ℓ_n` (shape `[N]`) whose reduction is the loss.
    ///
    /// ```
    /// use secondo_graph::Builder;
    /// use secondo_nn::{Loss, LossKind, Reduction};
    /// use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let z = b.input("z", &[4, 3]);
    /// let l = Loss::new(LossKind::Mse, Reduction::Mean);
    /// assert_eq!(l.per_sample(z, b.input("y", &[4, 3])).unwrap().shape(), vec![4]);
    /// ```
    pub fn per_sample<'b>(&self, output: Var<'b>, target: Var<'b>) -> Result<Var<'b>, NnError> {
        let shape = output.shape();
        if shape.len() != 2 {
            return Err(NnError::Targets(format!(
                "the network output must be [N, C] for the loss, got {shape:?}"
            )));
        }
        if target.shape() != self.target_shape(&shape) {
            return Err(NnError::Targets(format!(
                "{} expects targets of shape {:?} for outputs {shape:?}, got {:?}",
                self.kind,
                self.target_shape(&shape),
                target.shape()
            )));
        }
        let b = output.builder();
        Ok(match self.kind {
            LossKind::CrossEntropy => {
                let max = output.max_over(&[1]);
                let shifted = output - max.reshape(&[shape[0], 1]);
                let lse = shifted.exp().sum(&[1]).log();
                let picked = (target.one_hot(shape[1]) * shifted).sum(&[1]);
                lse - picked
            }
            LossKind::Mse => (output - target).square().sum(&[1]),
            LossKind::BceWithLogits => {
                let zero = b.scalar(0.0);
                let terms =
                    output.max(zero) - output * target + ((-output.abs()).exp() + 1.0).log();
                terms.sum(&[1])
            }
        })
    }

    /// The factor that turns the sum of per-sample terms into the loss
    /// (`1/N` or `1/(N·C)` for the mean, 1 for the sum).
    ///
    /// ```
    /// use secondo_nn::{Loss, LossKind, Reduction};
    /// let l = Loss::new(LossKind::Mse, Reduction::Mean);
    /// assert_eq!(l.scale(&[4, 5]), 1.0 / 20.0);
    /// ```
    pub fn scale(&self, output_shape: &[usize]) -> f64 {
        match (self.reduction, self.kind) {
            (Reduction::Sum, _) => 1.0,
            (Reduction::Mean, LossKind::CrossEntropy) => 1.0 / output_shape[0].max(1) as f64,
            (Reduction::Mean, _) => 1.0 / output_shape.iter().product::<usize>().max(1) as f64,
        }
    }

    /// The reduced loss (a scalar).
    ///
    /// ```
    /// use secondo_graph::Builder;
    /// use secondo_nn::{Loss, LossKind, Reduction};
    /// use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let z = b.input("z", &[4, 1]);
    /// let l = Loss::new(LossKind::BceWithLogits, Reduction::Mean);
    /// assert!(l.build(z, b.input("y", &[4, 1])).unwrap().shape().is_empty());
    /// ```
    pub fn build<'b>(&self, output: Var<'b>, target: Var<'b>) -> Result<Var<'b>, NnError> {
        let scale = self.scale(&output.shape());
        let terms = self.per_sample(output, target)?;
        Ok(terms.sum_all() * scale)
    }
}
