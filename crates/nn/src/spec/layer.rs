use std::fmt;

use super::{LayerSpec, ParamKind, SpecError};

/// Kinds and shapes of a layer's state tensors, in state_dict order.
pub(super) type StateShapes = Vec<(ParamKind, Vec<usize>)>;

/// One layer of a sequential model, with the hyperparameters its spec gives.
///
/// The variants mirror PyTorch modules of the same (lower-case) name. Sizes
/// are at least 1 in a parsed spec; pooling strides default to the kernel
/// size as in PyTorch. [`Display`](fmt::Display) writes the canonical spec
/// text, which leaves out arguments equal to their defaults. A residual
/// block holds its branches' layers, so layers are cloned, not copied.
///
/// ```
/// use secondo_nn::spec::Layer;
/// let conv = Layer::Conv2d {
///     in_channels: 1,
///     out_channels: 32,
///     kernel: 5,
///     stride: 1,
///     padding: 2,
///     dilation: 1,
///     groups: 1,
///     bias: true,
/// };
/// assert_eq!(conv.to_string(), "conv2d(1,32,k=5,p=2)");
/// assert_eq!(conv.name(), "conv2d");
/// assert!(conv.has_parameters());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// `linear(in,out[,bias=false])`: `y = x Wᵀ + b` over the last axis, with
    /// `W` of shape `[out, in]`.
    Linear {
        /// Size of the input's last axis.
        in_features: usize,
        /// Size of the output's last axis.
        out_features: usize,
        /// Whether the layer adds a bias.
        bias: bool,
    },
    /// `conv2d(in,out,k=K[,s=S][,p=P][,d=D][,groups=G][,bias=false])`: a
    /// square-kernel 2-d convolution (zero padding) with weight
    /// `[out, in / G, K, K]`.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel height and width.
        kernel: usize,
        /// Stride (default 1).
        stride: usize,
        /// Zero padding on each side (default 0).
        padding: usize,
        /// Dilation (default 1).
        dilation: usize,
        /// Channel groups (default 1): each output channel sees `in / G`
        /// input channels; `G` divides both channel counts.
        groups: usize,
        /// Whether the layer adds a bias.
        bias: bool,
    },
    /// `maxpool2d(K[,s=S][,p=P])`: 2-d max pooling (floor mode).
    MaxPool2d {
        /// Window height and width.
        kernel: usize,
        /// Stride (defaults to the kernel size).
        stride: usize,
        /// Implicit padding on each side, at most half the kernel size.
        padding: usize,
    },
    /// `avgpool2d(K[,s=S][,p=P])`: 2-d average pooling (floor mode, padding
    /// counted in the average as PyTorch does by default).
    AvgPool2d {
        /// Window height and width.
        kernel: usize,
        /// Stride (defaults to the kernel size).
        stride: usize,
        /// Zero padding on each side, at most half the kernel size.
        padding: usize,
    },
    /// `adaptiveavgpool2d(S)`: 2-d average pooling to an `S x S` output,
    /// whatever the input's height and width, with PyTorch's windows.
    AdaptiveAvgPool2d {
        /// Output height and width.
        size: usize,
    },
    /// `flatten`: all per-sample axes into one (`nn.Flatten()`).
    Flatten,
    /// `relu`: `max(x, 0)`.
    Relu,
    /// `sigmoid`: `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh`.
    Tanh,
    /// `leakyrelu(slope)` (bare `leakyrelu`: slope 0.01): `x` for `x >= 0`,
    /// `slope * x` otherwise.
    LeakyRelu {
        /// The negative slope; finite.
        slope: f64,
    },
    /// `elu` or `elu(alpha)`: `x` for `x > 0`, `alpha * (e^x - 1)` otherwise.
    Elu {
        /// Scale of the negative part (default 1); finite.
        alpha: f64,
    },
    /// `selu`: scaled ELU with PyTorch's fixed constants.
    Selu,
    /// `softplus`: `ln(1 + e^x)` (PyTorch's defaults: beta 1, threshold 20).
    Softplus,
    /// `gelu`: the exact (erf) form.
    Gelu,
    /// `identity`.
    Identity,
    /// `dropout(p)` (bare `dropout`: p 0.5); the identity when evaluating
    /// curvature.
    Dropout {
        /// Drop probability, `0 <= p < 1`.
        p: f64,
    },
    /// `batchnorm1d(n)` in evaluation mode: per-channel affine map with the
    /// running statistics, over a `[n]` or `[n, L]` sample.
    BatchNorm1d {
        /// Number of channels.
        features: usize,
    },
    /// `batchnorm2d(n)` in evaluation mode, over a `[n, H, W]` sample.
    BatchNorm2d {
        /// Number of channels.
        features: usize,
    },
    /// `layernorm(n)`: normalization over the last axis (of size `n`) with an
    /// elementwise affine map.
    LayerNorm {
        /// Size of the normalized (last) axis.
        features: usize,
    },
    /// `residual(BODY)`: `x + body(x)`; `residual(BODY | SHORTCUT)`:
    /// `body(x) + shortcut(x)`. Named like a PyTorch module with two
    /// `nn.Sequential` children, `body` and `shortcut` (see
    /// `scripts/reference/residual.py`), so that its state is
    /// `"<i>.body.<j>.weight"`, `"<i>.shortcut.<j>.running_var"`, ...
    Residual {
        /// The layers applied in turn to the block's input (non-empty in a
        /// parsed spec).
        body: Vec<LayerSpec>,
        /// The layers whose output is added to the body's instead of the
        /// input itself, if any (non-empty in a parsed spec).
        shortcut: Option<Vec<LayerSpec>>,
    },
}

/// Why a layer cannot take the shape it receives.
pub(super) enum ShapeError {
    /// What is wrong with the layer's own input, in words; the caller names
    /// the layer.
    Input(String),
    /// A layer inside the block cannot take its input: the whole error, its
    /// layer path relative to the block (`"body.2"`).
    Inside(SpecError),
}

impl From<String> for ShapeError {
    fn from(message: String) -> Self {
        Self::Input(message)
    }
}

impl From<&str> for ShapeError {
    fn from(message: &str) -> Self {
        Self::Input(message.to_owned())
    }
}

impl Layer {
    /// The layer names the spec language knows, in the order error messages
    /// list them.
    ///
    /// ```
    /// use secondo_nn::spec::Layer;
    /// assert_eq!(&Layer::NAMES[..2], &["linear", "conv2d"]);
    /// assert_eq!(Layer::NAMES.len(), 20);
    /// ```
    pub const NAMES: &'static [&'static str] = &[
        "linear",
        "conv2d",
        "maxpool2d",
        "avgpool2d",
        "adaptiveavgpool2d",
        "flatten",
        "relu",
        "sigmoid",
        "tanh",
        "leakyrelu",
        "elu",
        "selu",
        "softplus",
        "gelu",
        "identity",
        "dropout",
        "batchnorm1d",
        "batchnorm2d",
        "layernorm",
        "residual",
    ];

    /// The layer's name in the spec language (one of [`Layer::NAMES`]).
    ///
    /// ```
    /// use secondo_nn::spec::Layer;
    /// assert_eq!(Layer::LeakyRelu { slope: 0.1 }.name(), "leakyrelu");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Self::Linear { .. } => "linear",
            Self::Conv2d { .. } => "conv2d",
            Self::MaxPool2d { .. } => "maxpool2d",
            Self::AvgPool2d { .. } => "avgpool2d",
            Self::AdaptiveAvgPool2d { .. } => "adaptiveavgpool2d",
            Self::Flatten => "flatten",
            Self::Relu => "relu",
            Self::Sigmoid => "sigmoid",
            Self::Tanh => "tanh",
            Self::LeakyRelu { .. } => "leakyrelu",
            Self::Elu { .. } => "elu",
            Self::Selu => "selu",
            Self::Softplus => "softplus",
            Self::Gelu => "gelu",
            Self::Identity => "identity",
            Self::Dropout { .. } => "dropout",
            Self::BatchNorm1d { .. } => "batchnorm1d",
            Self::BatchNorm2d { .. } => "batchnorm2d",
            Self::LayerNorm { .. } => "layernorm",
            Self::Residual { .. } => "residual",
        }
    }

    /// Whether the layer has trainable parameters (a weight, perhaps a bias).
    ///
    /// ```
    /// use secondo_nn::spec::Layer;
    /// assert!(Layer::LayerNorm { features: 8 }.has_parameters());
    /// assert!(!Layer::Relu.has_parameters());
    /// ```
    pub fn has_parameters(&self) -> bool {
        !self.parameter_shapes().is_empty()
            || self.children().any(|child| child.layer.has_parameters())
    }

    /// Whether the layer is piecewise linear in its input and in each of its
    /// own parameters (in evaluation mode), so that a network of such layers
    /// has a Hessian whose diagonal equals the GGN's: each parameter enters
    /// one layer linearly and everything after it is piecewise linear.
    ///
    /// ```
    /// use secondo_nn::spec::Layer;
    /// assert!(Layer::MaxPool2d { kernel: 2, stride: 2, padding: 0 }.is_piecewise_linear());
    /// assert!(!Layer::Tanh.is_piecewise_linear());
    /// ```
    pub fn is_piecewise_linear(&self) -> bool {
        match self {
            Self::Sigmoid
            | Self::Tanh
            | Self::Elu { .. }
            | Self::Selu
            | Self::Softplus
            | Self::Gelu
            | Self::LayerNorm { .. } => false,
            Self::Residual { .. } => self.children().all(|c| c.layer.is_piecewise_linear()),
            Self::Linear { .. }
            | Self::Conv2d { .. }
            | Self::MaxPool2d { .. }
            | Self::AvgPool2d { .. }
            | Self::AdaptiveAvgPool2d { .. }
            | Self::Flatten
            | Self::Relu
            | Self::LeakyRelu { .. }
            | Self::Identity
            | Self::Dropout { .. }
            | Self::BatchNorm1d { .. }
            | Self::BatchNorm2d { .. } => true,
        }
    }

    /// Whether the layer is a dense layer or acts elementwise on a flat
    /// sample: what the layer-by-layer recursions of KFRA and of the
    /// Hessian diagonal's residual terms walk through.
    ///
    /// ```
    /// use secondo_nn::spec::Layer;
    /// assert!(Layer::Tanh.is_dense_chain_link());
    /// assert!(!Layer::LayerNorm { features: 3 }.is_dense_chain_link());
    /// ```
    pub fn is_dense_chain_link(&self) -> bool {
        matches!(
            self,
            Self::Linear { .. }
                | Self::Flatten
                | Self::Relu
                | Self::Sigmoid
                | Self::Tanh
                | Self::LeakyRelu { .. }
                | Self::Elu { .. }
                | Self::Selu
                | Self::Softplus
                | Self::Gelu
                | Self::Identity
                | Self::Dropout { .. }
        )
    }

    /// The branches of a residual block, named as PyTorch's module names
    /// its children, in registration order (body first); none for other
    /// layers.
    pub(super) fn branches(&self) -> Vec<(&'static str, &[LayerSpec])> {
        match self {
            Self::Residual { body, shortcut } => {
                let mut branches = vec![("body", body.as_slice())];
                branches.extend(shortcut.as_deref().map(|s| ("shortcut", s)));
                branches
            }
            _ => Vec::new(),
        }
    }

    /// The layers of every branch, in order.
    fn children(&self) -> impl Iterator<Item = &LayerSpec> {
        self.branches().into_iter().flat_map(|(_, layers)| layers)
    }

    /// The layer's own trainable parameters' kinds and shapes, in state_dict
    /// order (a residual block has none of its own: its layers have them).
    pub(super) fn parameter_shapes(&self) -> StateShapes {
        let with_bias = |weight: Vec<usize>, bias: bool, out: usize| {
            let mut params = vec![(ParamKind::Weight, weight)];
            if bias {
                params.push((ParamKind::Bias, vec![out]));
            }
            params
        };
        match *self {
            Self::Linear {
                in_features,
                out_features,
                bias,
            } => with_bias(vec![out_features, in_features], bias, out_features),
            Self::Conv2d {
                in_channels,
                out_channels,
                kernel,
                groups,
                bias,
                ..
            } => with_bias(
                vec![out_channels, in_channels / groups.max(1), kernel, kernel],
                bias,
                out_channels,
            ),
            Self::BatchNorm1d { features }
            | Self::BatchNorm2d { features }
            | Self::LayerNorm { features } => with_bias(vec![features], true, features),
            _ => Vec::new(),
        }
    }

    /// How many inputs each output of a linear or convolution layer sums
    /// over (`None` for other layers): PyTorch's default initialisation
    /// draws their weights and biases from `±1/√fan_in`.
    pub(super) fn fan_in(&self) -> Option<usize> {
        match *self {
            Self::Linear { in_features, .. } => Some(in_features),
            Self::Conv2d {
                in_channels,
                kernel,
                groups,
                ..
            } => Some((in_channels / groups.max(1)).saturating_mul(kernel.saturating_mul(kernel))),
            _ => None,
        }
    }

    /// The layer's own non-trainable state (running statistics), in
    /// state_dict order.
    pub(super) fn buffer_shapes(&self) -> StateShapes {
        match *self {
            Self::BatchNorm1d { features } | Self::BatchNorm2d { features } => vec![
                (ParamKind::RunningMean, vec![features]),
                (ParamKind::RunningVar, vec![features]),
            ],
            _ => Vec::new(),
        }
    }

    /// Whether the layer keeps PyTorch's `num_batches_tracked` counter.
    pub(super) fn tracks_batches(&self) -> bool {
        matches!(self, Self::BatchNorm1d { .. } | Self::BatchNorm2d { .. })
    }

    /// The number of trainable scalars, its branches' included, or `None` if
    /// it overflows `usize`.
    pub(super) fn parameter_count(&self) -> Option<usize> {
        let own = self
            .parameter_shapes()
            .iter()
            .try_fold(0usize, |total, (_, shape)| {
                let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
                total.checked_add(numel)
            })?;
        self.children().try_fold(own, |total, child| {
            total.checked_add(child.layer.parameter_count()?)
        })
    }

    /// The per-sample output shape for a per-sample input shape, or why the
    /// layer cannot take it.
    pub(super) fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError> {
        const OVERFLOW: &str = "gives an output size that overflows";
        match *self {
            Self::Linear {
                in_features,
                out_features,
                ..
            } => match input.split_last() {
                None => Err("expects at least one input axis, got shape []".into()),
                Some((&last, _)) if last != in_features => {
                    Err(format!("expects {in_features} input features, got {last}").into())
                }
                Some((_, rest)) => Ok([rest, &[out_features]].concat()),
            },
            Self::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                ..
            } => {
                let &[channels, height, width] = input else {
                    return Err(format!("expects a [C, H, W] input, got shape {input:?}").into());
                };
                if channels != in_channels {
                    return Err(
                        format!("expects {in_channels} input channels, got {channels}").into(),
                    );
                }
                let reach = if kernel == 0 || dilation == 0 {
                    0
                } else {
                    (kernel - 1)
                        .checked_mul(dilation)
                        .and_then(|r| r.checked_add(1))
                        .ok_or(OVERFLOW)?
                };
                let out_h = window_count(height, reach, stride, padding)?;
                let out_w = window_count(width, reach, stride, padding)?;
                Ok(vec![out_channels, out_h, out_w])
            }
            Self::MaxPool2d {
                kernel,
                stride,
                padding,
            }
            | Self::AvgPool2d {
                kernel,
                stride,
                padding,
            } => {
                let &[channels, height, width] = input else {
                    return Err(format!("expects a [C, H, W] input, got shape {input:?}").into());
                };
                let out_h = window_count(height, kernel, stride, padding)?;
                let out_w = window_count(width, kernel, stride, padding)?;
                Ok(vec![channels, out_h, out_w])
            }
            Self::AdaptiveAvgPool2d { size } => match *input {
                [channels, height, width] if height > 0 && width > 0 => {
                    Ok(vec![channels, size, size])
                }
                _ => Err(format!(
                    "expects a [C, H, W] input with H and W at least 1, got shape {input:?}"
                )
                .into()),
            },
            Self::Flatten => {
                if input.is_empty() {
                    return Err("expects at least one input axis, got shape []".into());
                }
                let numel = input
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))
                    .ok_or(OVERFLOW)?;
                Ok(vec![numel])
            }
            Self::BatchNorm1d { features } => match input {
                [c] | [c, _] if *c == features => Ok(input.to_vec()),
                _ => Err(format!(
                    "expects a [C] or [C, L] input with C = {features}, got shape {input:?}"
                )
                .into()),
            },
            Self::BatchNorm2d { features } => match input {
                [c, _, _] if *c == features => Ok(input.to_vec()),
                _ => Err(format!(
                    "expects a [C, H, W] input with C = {features}, got shape {input:?}"
                )
                .into()),
            },
            Self::LayerNorm { features } => match input.last() {
                Some(&last) if last == features => Ok(input.to_vec()),
                _ => Err(
                    format!("expects a last axis of size {features}, got shape {input:?}").into(),
                ),
            },
            Self::Residual { .. } => self.residual_output_shape(input),
            Self::Relu
            | Self::Sigmoid
            | Self::Tanh
            | Self::LeakyRelu { .. }
            | Self::Elu { .. }
            | Self::Selu
            | Self::Softplus
            | Self::Gelu
            | Self::Identity
            | Self::Dropout { .. } => Ok(input.to_vec()),
        }
    }

    /// A residual block's output shape: its body's, which must equal the
    /// shortcut's or, without one, the block's input shape, so that the two
    /// can be added.
    fn residual_output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let mut outputs = self.branches().into_iter().map(|(name, layers)| {
            super::final_shape(layers, input).map_err(|e| ShapeError::Inside(e.within(name)))
        });
        let body = outputs
            .next()
            .transpose()?
            .unwrap_or_else(|| input.to_vec());
        let (other, what) = match outputs.next().transpose()? {
            Some(shortcut) => (shortcut, "its shortcut's output"),
            None => (input.to_vec(), "its input"),
        };
        if body == other {
            return Ok(body);
        }
        Err(format!(
            "gives a body output of shape {body:?}, which cannot be added to {what} of shape {other:?}"
        )
        .into())
    }
}

/// How many windows of extent `reach` fit along an axis of `size` padded by
/// `padding` on both sides, moving by `stride` (PyTorch's floor mode).
fn window_count(size: usize, reach: usize, stride: usize, padding: usize) -> Result<usize, String> {
    let padded = padding
        .checked_mul(2)
        .and_then(|p| p.checked_add(size))
        .ok_or("gives an output size that overflows")?;
    if reach == 0 || stride == 0 {
        return Err("has a zero kernel size, stride or dilation".to_owned());
    }
    if padded < reach {
        return Err(format!(
            "has a window of {reach} that does not fit the input axis of size {size} \
             (padded to {padded})"
        ));
    }
    Ok((padded - reach) / stride + 1)
}

impl fmt::Display for Layer {
    /// The canonical spec text: no spaces, defaults left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match *self {
            Self::Linear {
                in_features,
                out_features,
                bias,
            } => {
                write!(f, "{name}({in_features},{out_features}")?;
                if !bias {
                    f.write_str(",bias=false")?;
                }
                f.write_str(")")
            }
            Self::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                bias,
            } => {
                write!(f, "{name}({in_channels},{out_channels},k={kernel}")?;
                if stride != 1 {
                    write!(f, ",s={stride}")?;
                }
                if padding != 0 {
                    write!(f, ",p={padding}")?;
                }
                if dilation != 1 {
                    write!(f, ",d={dilation}")?;
                }
                if groups != 1 {
                    write!(f, ",groups={groups}")?;
                }
                if !bias {
                    f.write_str(",bias=false")?;
                }
                f.write_str(")")
            }
            Self::MaxPool2d {
                kernel,
                stride,
                padding,
            }
            | Self::AvgPool2d {
                kernel,
                stride,
                padding,
            } => {
                write!(f, "{name}({kernel}")?;
                if stride != kernel {
                    write!(f, ",s={stride}")?;
                }
                if padding != 0 {
                    write!(f, ",p={padding}")?;
                }
                f.write_str(")")
            }
            Self::LeakyRelu { slope } => write!(f, "{name}({})", Real(slope)),
            Self::Elu { alpha: 1.0 } => f.write_str(name),
            Self::Elu { alpha } => write!(f, "{name}({})", Real(alpha)),
            Self::Dropout { p } => write!(f, "{name}({})", Real(p)),
            Self::BatchNorm1d { features }
            | Self::BatchNorm2d { features }
            | Self::LayerNorm { features }
            | Self::AdaptiveAvgPool2d { size: features } => write!(f, "{name}({features})"),
            Self::Residual { .. } => {
                write!(f, "{name}(")?;
                for (index, (_, layers)) in self.branches().into_iter().enumerate() {
                    if index > 0 {
                        f.write_str("|")?;
                    }
                    write_layers(f, layers)?;
                }
                f.write_str(")")
            }
            Self::Flatten
            | Self::Relu
            | Self::Sigmoid
            | Self::Tanh
            | Self::Selu
            | Self::Softplus
            | Self::Gelu
            | Self::Identity => f.write_str(name),
        }
    }
}

/// `layers` in canonical spec text, separated by commas.
pub(super) fn write_layers(f: &mut fmt::Formatter<'_>, layers: &[LayerSpec]) -> fmt::Result {
    for (index, spec) in layers.iter().enumerate() {
        if index > 0 {
            f.write_str(",")?;
        }
        write!(f, "{}", spec.layer)?;
    }
    Ok(())
}

/// A real number written so that it parses back to the same value: plainly
/// for moderate magnitudes, with an exponent for very large or small ones.
struct Real(f64);

impl fmt::Display for Real {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.0.abs();
        if magnitude != 0.0 && !(1e-5..1e16).contains(&magnitude) {
            write!(f, "{:e}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}
