//! Model spec strings: a sequential model written as comma-separated layers
//! named like PyTorch modules in lower case.
//!
//! ```text
//! linear(784,256),relu,linear(256,10)
//! conv2d(1,32,k=5,p=2),relu,maxpool2d(2),flatten,linear(1568,10)
//! ```
//!
//! The layers and their arguments:
//!
//! | spec | PyTorch |
//! |------|---------|
//! | `linear(in,out[,bias=false])` | `nn.Linear` |
//! | `conv2d(in,out,k=K[,s=S][,p=P][,d=D][,groups=G][,bias=false])` | `nn.Conv2d` (square kernel; `G` divides `in` and `out`) |
//! | `maxpool2d(K[,s=S][,p=P])`, `avgpool2d(K[,s=S][,p=P])` | `nn.MaxPool2d`, `nn.AvgPool2d` (stride defaults to `K`) |
//! | `adaptiveavgpool2d(S)` | `nn.AdaptiveAvgPool2d(S)` |
//! | `flatten` | `nn.Flatten()` |
//! | `relu`, `sigmoid`, `tanh`, `selu`, `softplus`, `gelu`, `identity` | the module of that name |
//! | `leakyrelu(slope)` (bare: 0.01), `elu` / `elu(alpha)` | `nn.LeakyReLU`, `nn.ELU` |
//! | `dropout(p)` (bare: 0.5, `0 <= p < 1`) | `nn.Dropout` |
//! | `batchnorm1d(n)`, `batchnorm2d(n)` (evaluation mode), `layernorm(n)` | `nn.BatchNorm1d`, `nn.BatchNorm2d`, `nn.LayerNorm` |
//! | `residual(BODY)`, `residual(BODY \| SHORTCUT)` (layer lists) | `x + body(x)`, `body(x) + shortcut(x)` |
//!
//! Whitespace may surround any token. Positional arguments come in PyTorch's
//! order (so `conv2d(1,32,5)` also works); keyword arguments follow them, each
//! at most once, and may also use PyTorch's names (`kernel_size=`, `stride=`,
//! `padding=`, `dilation=`). `bias=true` is accepted, and names and `true` /
//! `false` ignore ASCII case. Parameters are named like the state_dict of
//! the equivalent `nn.Sequential`: the layer's index, a dot, then `weight` or
//! `bias` (see [`ModelSpec::parameters`]). Inside a residual block at index
//! `i`, they are named like the module in `scripts/reference/residual.py`,
//! whose two `nn.Sequential` children are `body` and `shortcut`:
//! `"3.body.0.weight"`, `"3.shortcut.1.running_var"`.
//!
//! Errors name the 0-based character offset into the string and what was
//! expected there:
//!
//! ```
//! use secondo_nn::spec::ModelSpec;
//! let err = ModelSpec::parse("lineer(784,10)").unwrap_err();
//! assert!(err.to_string().starts_with(
//!     "model spec: unknown layer 'lineer' at position 0 (expected one of: linear, conv2d,"
//! ));
//! ```

mod error;
mod layer;
mod lexer;
mod params;
mod parser;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

pub use error::SpecError;
pub use layer::Layer;

use layer::ShapeError;
pub use params::{ParamInfo, ParamKind};

/// One layer of a parsed spec, with where it came from in the spec string.
///
/// ```
/// use secondo_nn::spec::{Layer, ModelSpec};
/// let spec = ModelSpec::parse("relu, dropout( 0.1 )").unwrap();
/// let dropout = &spec.layers()[1];
/// assert_eq!(dropout.layer, Layer::Dropout { p: 0.1 });
/// assert_eq!((dropout.position, dropout.text.as_str()), (6, "dropout( 0.1 )"));
/// ```
///
/// Two layer specs are equal when their layers are, wherever those were
/// written, so that a residual block compares its layers the same way.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// The layer and its hyperparameters.
    pub layer: Layer,
    /// 0-based character offset of the layer's name in the spec string.
    pub position: usize,
    /// The layer's source text, from its name to its closing parenthesis.
    pub text: String,
}

impl PartialEq for LayerSpec {
    fn eq(&self, other: &Self) -> bool {
        self.layer == other.layer
    }
}

/// A layer that may hold state of its own, with the state_dict path that
/// names it (`"3"`, `"3.body.0"`).
struct Module<'a> {
    /// Index of the top-level layer it is or is inside.
    top: usize,
    path: String,
    layer: &'a Layer,
}

/// `layer` at `path` and every layer inside it, in state_dict order
/// (PyTorch lists a module's own state, then its children's in turn).
fn collect_modules<'a>(top: usize, path: String, layer: &'a Layer, out: &mut Vec<Module<'a>>) {
    out.push(Module {
        top,
        path: path.clone(),
        layer,
    });
    for (branch, layers) in layer.branches() {
        for (index, spec) in layers.iter().enumerate() {
            let child = format!("{path}.{branch}.{index}");
            collect_modules(top, child, &spec.layer, out);
        }
    }
}

/// The shape after each of `layers` for an input of `input`; errors name
/// a layer by its path below this list (`"2"`, `"2.body.0"`).
fn output_shapes(layers: &[LayerSpec], input: &[usize]) -> Result<Vec<Vec<usize>>, SpecError> {
    let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(layers.len());
    for (index, spec) in layers.iter().enumerate() {
        let input = shapes.last().map_or(input, Vec::as_slice);
        let output = spec.layer.output_shape(input).map_err(|e| match e {
            ShapeError::Input(message) => SpecError::Shape {
                layer: index.to_string(),
                text: one_line(&spec.text),
                position: spec.position,
                message,
            },
            ShapeError::Inside(inner) => inner.within(&index.to_string()),
        })?;
        shapes.push(output);
    }
    Ok(shapes)
}

/// The shape after the last of `layers` (`input` if there are none).
fn final_shape(layers: &[LayerSpec], input: &[usize]) -> Result<Vec<usize>, SpecError> {
    Ok(output_shapes(layers, input)?
        .pop()
        .unwrap_or_else(|| input.to_vec()))
}

/// What the first of `layers` that constrains its input says of it:
/// `Some(Some(shape))` for a flat `shape`, `Some(None)` for an image whose
/// height and width are open, `None` when no layer constrains it. A
/// residual block constrains its input where its body or shortcut does.
fn first_constraint(layers: &[LayerSpec]) -> Option<Option<Vec<usize>>> {
    layers.iter().find_map(|spec| match &spec.layer {
        Layer::Linear {
            in_features: size, ..
        }
        | Layer::BatchNorm1d { features: size }
        | Layer::LayerNorm { features: size } => Some(Some(vec![*size])),
        Layer::Conv2d { .. }
        | Layer::MaxPool2d { .. }
        | Layer::AvgPool2d { .. }
        | Layer::AdaptiveAvgPool2d { .. }
        | Layer::BatchNorm2d { .. } => Some(None),
        Layer::Residual { .. } => spec
            .layer
            .branches()
            .into_iter()
            .find_map(|(_, branch)| first_constraint(branch)),
        Layer::Flatten
        | Layer::Relu
        | Layer::Sigmoid
        | Layer::Tanh
        | Layer::LeakyRelu { .. }
        | Layer::Elu { .. }
        | Layer::Selu
        | Layer::Softplus
        | Layer::Gelu
        | Layer::Identity
        | Layer::Dropout { .. } => None,
    })
}

/// A parsed model spec: a non-empty sequence of layers.
///
/// Parse it with [`ModelSpec::parse`] or [`str::parse`]; [`Display`](fmt::Display)
/// writes the canonical spec string (no spaces, default arguments left out),
/// which parses back to an equal spec. Two specs are equal when their layers
/// are, wherever those were written in the source text.
///
/// ```
/// use secondo_nn::spec::ModelSpec;
/// let spec: ModelSpec = "conv2d(1, 32, k=5, s=1, p=2, bias=true), relu, maxpool2d(2, s=2)"
///     .parse()
///     .unwrap();
/// assert_eq!(spec.to_string(), "conv2d(1,32,k=5,p=2),relu,maxpool2d(2)");
/// assert_eq!(spec.to_string().parse::<ModelSpec>().unwrap(), spec);
/// ```
#[derive(Debug, Clone)]
pub struct ModelSpec {
    layers: Vec<LayerSpec>,
    num_parameters: usize,
}

impl ModelSpec {
    /// Parses a spec string.
    ///
    /// # Errors
    /// [`SpecError`] naming the character position of the first problem: a
    /// syntax error (including an empty spec or a trailing comma), an unknown
    /// layer, or an argument that is missing, unknown, repeated or out of
    /// range (zero or non-integer sizes, `p` outside `[0, 1)`, ...).
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// let spec = ModelSpec::parse("linear(784,256),relu,linear(256,10)").unwrap();
    /// assert_eq!(spec.layers().len(), 3);
    /// let err = ModelSpec::parse("linear(784,256),").unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "model spec: at position 16: expected a layer name after ',', found end of input"
    /// );
    /// ```
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let layers = parser::parse(spec)?;
        let mut num_parameters = 0usize;
        for layer in &layers {
            num_parameters = layer
                .layer
                .parameter_count()
                .and_then(|n| num_parameters.checked_add(n))
                .ok_or_else(|| SpecError::InvalidArgument {
                    position: layer.position,
                    message: "the model has too many parameters to count".to_owned(),
                })?;
        }
        Ok(Self {
            layers,
            num_parameters,
        })
    }

    /// The layers, in order.
    ///
    /// ```
    /// use secondo_nn::spec::{Layer, ModelSpec};
    /// let spec = ModelSpec::parse("flatten,tanh").unwrap();
    /// let layers: Vec<Layer> = spec.layers().iter().map(|l| l.layer.clone()).collect();
    /// assert_eq!(layers, [Layer::Flatten, Layer::Tanh]);
    /// ```
    pub fn layers(&self) -> &[LayerSpec] {
        &self.layers
    }

    /// The trainable parameters in state_dict order: for each layer that has
    /// any, `"<i>.weight"` then `"<i>.bias"`. Shapes follow PyTorch: Linear
    /// weight `[out, in]`, Conv2d weight `[out, in / groups, k, k]`, biases `[out]`,
    /// batch-norm and layer-norm weight and bias `[n]`.
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// let spec = ModelSpec::parse("linear(4,3),relu,linear(3,2,bias=false)").unwrap();
    /// let params: Vec<(String, Vec<usize>)> =
    ///     spec.parameters().into_iter().map(|p| (p.name, p.shape)).collect();
    /// assert_eq!(
    ///     params,
    ///     [
    ///         ("0.weight".to_owned(), vec![3, 4]),
    ///         ("0.bias".to_owned(), vec![3]),
    ///         ("2.weight".to_owned(), vec![2, 3]),
    ///     ]
    /// );
    /// ```
    pub fn parameters(&self) -> Vec<ParamInfo> {
        self.state(Layer::parameter_shapes)
    }

    /// The non-trainable buffers in state_dict order: `"<i>.running_mean"`
    /// and `"<i>.running_var"` (shape `[n]`) of each batch-norm layer.
    ///
    /// PyTorch's state_dict also holds `"<i>.num_batches_tracked"` (an int64
    /// scalar) for each batch-norm layer; it plays no part in evaluation
    /// mode, is not listed here, and loaders should skip it (see
    /// [`ModelSpec::is_ignored_state_entry`]).
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// let spec = ModelSpec::parse("linear(4,3),batchnorm1d(3)").unwrap();
    /// let names: Vec<String> = spec.buffers().into_iter().map(|b| b.name).collect();
    /// assert_eq!(names, ["1.running_mean", "1.running_var"]);
    /// ```
    pub fn buffers(&self) -> Vec<ParamInfo> {
        self.state(Layer::buffer_shapes)
    }

    fn state(&self, shapes: fn(&Layer) -> layer::StateShapes) -> Vec<ParamInfo> {
        self.modules()
            .into_iter()
            .flat_map(|m| {
                shapes(m.layer).into_iter().map(move |(kind, shape)| {
                    ParamInfo::new(m.top, &m.path, kind, shape, m.layer.fan_in())
                })
            })
            .collect()
    }

    /// Every layer, those inside residual blocks included, in state_dict
    /// order.
    fn modules(&self) -> Vec<Module<'_>> {
        let mut modules = Vec::new();
        for (index, spec) in self.layers.iter().enumerate() {
            collect_modules(index, index.to_string(), &spec.layer, &mut modules);
        }
        modules
    }

    /// The names of PyTorch's `num_batches_tracked` counters, one per batch
    /// norm, in state_dict order.
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// let spec = ModelSpec::parse("linear(4,3),batchnorm1d(3)").unwrap();
    /// assert_eq!(spec.batch_counters(), ["1.num_batches_tracked"]);
    /// ```
    pub fn batch_counters(&self) -> Vec<String> {
        self.modules()
            .iter()
            .filter(|m| m.layer.tracks_batches())
            .map(|m| format!("{}.num_batches_tracked", m.path))
            .collect()
    }

    /// Whether any layer is a dropout (training then masks each sample).
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// assert!(ModelSpec::parse("linear(4,3),dropout(0.5)").unwrap().has_dropout());
    /// assert!(!ModelSpec::parse("linear(4,3)").unwrap().has_dropout());
    /// ```
    pub fn has_dropout(&self) -> bool {
        self.modules()
            .iter()
            .any(|m| matches!(m.layer, Layer::Dropout { .. }))
    }

    /// Whether a state_dict entry of this name is one that loaders should
    /// skip: `"<path>.num_batches_tracked"` where the layer at `path` (`"1"`,
    /// `"3.body.1"`) is a batch norm.
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// let spec = ModelSpec::parse("linear(4,3),batchnorm1d(3)").unwrap();
    /// assert!(spec.is_ignored_state_entry("1.num_batches_tracked"));
    /// assert!(!spec.is_ignored_state_entry("0.num_batches_tracked"));
    /// assert!(!spec.is_ignored_state_entry("1.running_mean"));
    /// ```
    pub fn is_ignored_state_entry(&self, name: &str) -> bool {
        name.strip_suffix(".num_batches_tracked")
            .is_some_and(|path| {
                self.modules()
                    .iter()
                    .any(|m| m.layer.tracks_batches() && m.path == path)
            })
    }

    /// The total number of trainable scalars.
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// let spec = ModelSpec::parse("linear(784,256),relu,linear(256,10)").unwrap();
    /// assert_eq!(spec.num_parameters(), 203_530);
    /// ```
    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// The per-sample shape (without the batch axis) after each layer, for a
    /// per-sample input of `input_shape`.
    ///
    /// Linear layers act on the last axis (`[.., in]` to `[.., out]`),
    /// convolutions and pooling need `[C, H, W]` (`adaptiveavgpool2d(S)` turns
    /// any `H, W >= 1` into `S, S`), `batchnorm1d(n)` takes `[n]`
    /// or `[n, L]`, `batchnorm2d(n)` `[n, H, W]`, `layernorm(n)` a last axis
    /// of `n`, and `flatten` joins all axes into one. A residual block gives
    /// its body's output, which must have the shape of its shortcut's
    /// output or, without a shortcut, of its input.
    ///
    /// # Errors
    /// [`SpecError::Shape`] for the first layer that cannot take the shape it
    /// receives, naming its path (its index, or inside a residual block its
    /// state_dict prefix such as `3.body.0`), text and position.
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// let spec = ModelSpec::parse("conv2d(1,32,k=5,p=2),relu,maxpool2d(2),flatten,linear(6272,10)")
    ///     .unwrap();
    /// let shapes = spec.output_shapes(&[1, 28, 28]).unwrap();
    /// assert_eq!(shapes[2], [32, 14, 14]);
    /// assert_eq!(shapes[3], [6272]);
    /// assert_eq!(shapes[4], [10]);
    ///
    /// let spec = ModelSpec::parse("linear(784,256),relu,linear(100,10)").unwrap();
    /// assert_eq!(
    ///     spec.output_shapes(&[784]).unwrap_err().to_string(),
    ///     "model spec: layer 2 `linear(100,10)` at position 21 expects 100 input features, got 256"
    /// );
    /// ```
    pub fn output_shapes(&self, input_shape: &[usize]) -> Result<Vec<Vec<usize>>, SpecError> {
        output_shapes(&self.layers, input_shape)
    }

    /// The simplest per-sample input shape the spec implies, if it implies
    /// one: `[in]` when the first layer that constrains its input is
    /// `linear(in, ..)`, `batchnorm1d(in)` or `layernorm(in)` (elementwise
    /// layers, dropout and flatten before it do not change that). `None` when
    /// it is a convolution, pooling or `batchnorm2d` (whose height and width
    /// the spec leaves open), or when no layer constrains the input.
    ///
    /// The hint only reads the first constraining layer; if later layers
    /// disagree with each other, [`ModelSpec::output_shapes`] still reports
    /// it. A residual block's first constraining layer is its body's, or
    /// else its shortcut's.
    ///
    /// ```
    /// use secondo_nn::spec::ModelSpec;
    /// let mlp = ModelSpec::parse("flatten,linear(784,10)").unwrap();
    /// assert_eq!(mlp.input_shape_hint(), Some(vec![784]));
    /// let cnn = ModelSpec::parse("conv2d(1,8,k=3),flatten").unwrap();
    /// assert_eq!(cnn.input_shape_hint(), None);
    /// ```
    pub fn input_shape_hint(&self) -> Option<Vec<usize>> {
        first_constraint(&self.layers).flatten()
    }
}

/// `text` with every whitespace or control character replaced by a space.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect()
}

impl PartialEq for ModelSpec {
    fn eq(&self, other: &Self) -> bool {
        self.layers == other.layers
    }
}

impl FromStr for ModelSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        Self::parse(spec)
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        layer::write_layers(f, &self.layers)
    }
}
