use std::fmt;

/// What a named tensor of a layer's state is.
///
/// [`Display`](fmt::Display) gives the suffix after the layer index in the
/// tensor's name.
///
/// ```
/// use secondo_nn::spec::ParamKind;
/// assert_eq!(ParamKind::RunningVar.to_string(), "running_var");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A trainable weight (`weight`).
    Weight,
    /// A trainable bias (`bias`).
    Bias,
    /// A batch-norm running mean (`running_mean`), a buffer.
    RunningMean,
    /// A batch-norm running variance (`running_var`), a buffer.
    RunningVar,
}

impl ParamKind {
    /// The suffix after the layer index in PyTorch's state_dict name.
    ///
    /// ```
    /// use secondo_nn::spec::ParamKind;
    /// assert_eq!(ParamKind::Weight.as_str(), "weight");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weight => "weight",
            Self::Bias => "bias",
            Self::RunningMean => "running_mean",
            Self::RunningVar => "running_var",
        }
    }
}

impl fmt::Display for ParamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named tensor of the model's state: a parameter or a buffer, named and
/// shaped as in the state_dict of the equivalent PyTorch `nn.Sequential`.
///
/// ```
/// use secondo_nn::spec::{ModelSpec, ParamKind};
/// let spec = ModelSpec::parse("relu,linear(3,2)").unwrap();
/// let weight = &spec.parameters()[0];
/// assert_eq!(weight.name, "1.weight");
/// assert_eq!(weight.shape, vec![2, 3]);
/// assert_eq!((weight.layer, weight.kind), (1, ParamKind::Weight));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParamInfo {
    /// `"<layer path>.<kind>"`, e.g. `"0.weight"`, or inside a residual
    /// block `"3.body.0.weight"`.
    pub name: String,
    /// The tensor's shape in PyTorch's layout (Linear weight `[out, in]`,
    /// Conv2d weight `[out, in / groups, k, k]`).
    pub shape: Vec<usize>,
    /// Index of the top-level layer the tensor belongs to (for a tensor
    /// inside a residual block, the block's).
    pub layer: usize,
    /// What the tensor is.
    pub kind: ParamKind,
    /// For the weight and bias of a linear or convolution layer, the number
    /// of inputs each output sums over, from which PyTorch's default
    /// initialisation takes its bound; `None` for the other tensors, which
    /// PyTorch initialises to constants.
    pub fan_in: Option<usize>,
}

impl ParamInfo {
    /// The tensor of `kind` of the layer at state_dict `path` (`"3"`,
    /// `"3.body.0"`), which is or is inside top-level layer `layer`.
    pub(super) fn new(
        layer: usize,
        path: &str,
        kind: ParamKind,
        shape: Vec<usize>,
        fan_in: Option<usize>,
    ) -> Self {
        Self {
            name: format!("{path}.{kind}"),
            shape,
            layer,
            kind,
            fan_in,
        }
    }

    /// The number of scalars in the tensor: the product of its shape
    /// (saturating at `usize::MAX`, which tensors of a parsed spec never
    /// reach).
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// let spec = ModelSpec::parse("conv2d(3,8,k=5)").unwrap();
    /// assert_eq!(spec.parameters()[0].numel(), 8 * 3 * 5 * 5);
    /// ```
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1, |n, &d| n.saturating_mul(d))
    }
}
